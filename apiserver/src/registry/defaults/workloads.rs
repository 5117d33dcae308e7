//! Workload defaults: apps/v1 Deployment, ReplicaSet, DaemonSet, StatefulSet and batch/v1 Job.

use serde_json::{json, Value};

use super::pod::default_template;
use super::{child, each_mut, set_default};

fn spec_with_template(obj: &mut Value, restart_policy: bool) -> Option<&mut Value> {
    let spec = child(obj, "spec")?;
    if let Some(t) = child(spec, "template") {
        default_template(t, restart_policy);
    }
    Some(spec)
}

pub(super) fn default_deployment(obj: &mut Value) {
    let Some(spec) = spec_with_template(obj, true) else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    if let Some(strategy) = child(spec, "strategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate" {
            if let Some(ru) = child(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
}

pub(super) fn default_replica_set(obj: &mut Value) {
    if let Some(spec) = spec_with_template(obj, true) {
        set_default(spec, "replicas", json!(1));
    }
}

pub(super) fn default_daemon_set(obj: &mut Value) {
    let Some(spec) = spec_with_template(obj, true) else {
        return;
    };
    if let Some(strategy) = child(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate" {
            if let Some(ru) = child(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
}

pub(super) fn default_stateful_set(obj: &mut Value) {
    let Some(spec) = spec_with_template(obj, true) else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    if let Some(strategy) = child(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate" {
            if let Some(ru) = child(strategy, "rollingUpdate") {
                set_default(ru, "partition", json!(0));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(policy) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default(policy, "whenDeleted", json!("Retain"));
        set_default(policy, "whenScaled", json!("Retain"));
    }
    each_mut(spec, "volumeClaimTemplates", |pvc| {
        if let Some(s) = child(pvc, "spec") {
            set_default(s, "volumeMode", json!("Filesystem"));
        }
    });
}

pub(super) fn default_job(obj: &mut Value) {
    // A Job without labels takes its template's labels (before the generated ones are added).
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        if let Some(meta) = child(obj, "metadata") {
            let empty = meta
                .get("labels")
                .is_none_or(|l| l.as_object().is_none_or(|m| m.is_empty()));
            if empty {
                meta["labels"] = labels;
            }
        }
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(spec) = spec_with_template(obj, false) else {
        return;
    };
    let neither = spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null);
    if neither {
        spec["completions"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    set_default(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "manualSelector", json!(false));
    let has_failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    set_default(
        spec,
        "podReplacementPolicy",
        json!(if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    if spec["manualSelector"] != true {
        if let (Some(name), Some(uid)) = (name, uid) {
            generate_job_selector(spec, &name, &uid);
        }
    }
}

/// Kubernetes' job strategy owns the selector unless `manualSelector` is set: it labels the
/// template with the job's uid and name and selects on the uid.
fn generate_job_selector(spec: &mut Value, name: &str, uid: &str) {
    if let Some(labels) = child(spec, "template")
        .and_then(|t| child(t, "metadata"))
        .and_then(|m| child(m, "labels"))
    {
        for (k, v) in [
            ("controller-uid", uid),
            ("batch.kubernetes.io/controller-uid", uid),
            ("job-name", name),
            ("batch.kubernetes.io/job-name", name),
        ] {
            set_default(labels, k, json!(v));
        }
    }
    set_default(
        spec,
        "selector",
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
}

#[cfg(test)]
mod tests {
    use super::super::apply_defaults;
    use serde_json::{json, Value};

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}})
    }

    #[test]
    fn deployment_defaults() {
        let mut v = json!({"metadata": {"name": "d"}, "spec": {"template": template()}});
        apply_defaults("Deployment", &mut v);
        let spec = &v["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(spec["template"]["spec"].get("enableServiceLinks").is_none());
        assert!(v["metadata"].get("labels").is_none());
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let mut v = json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 0}});
        apply_defaults("Deployment", &mut v);
        assert_eq!(v["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(v["spec"]["replicas"], 0);
    }

    #[test]
    fn replica_set_daemon_set_stateful_set_defaults() {
        let mut rs = json!({"spec": {"template": template()}});
        apply_defaults("ReplicaSet", &mut rs);
        assert_eq!(rs["spec"]["replicas"], 1);

        let mut ds = json!({"spec": {"template": template()}});
        apply_defaults("DaemonSet", &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);

        let mut sts = json!({"spec": {"template": template(),
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]}});
        apply_defaults("StatefulSet", &mut sts);
        let spec = &sts["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
    }

    #[test]
    fn job_defaults_and_generated_selector() {
        let mut v = json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": template()}});
        apply_defaults("Job", &mut v);
        let spec = &v["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["manualSelector"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert!(spec["template"]["spec"].get("restartPolicy").is_none());
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(v["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn job_with_parallelism_only_and_manual_selector() {
        let mut v = json!({"metadata": {"name": "j", "uid": "u", "labels": {"x": "y"}},
            "spec": {"parallelism": 3, "manualSelector": true, "backoffLimitPerIndex": 1,
                     "template": template()}});
        apply_defaults("Job", &mut v);
        assert!(v["spec"].get("completions").is_none());
        assert_eq!(v["spec"]["parallelism"], 3);
        assert_eq!(v["spec"]["backoffLimit"], i32::MAX);
        assert!(v["spec"].get("selector").is_none());
        assert_eq!(v["metadata"]["labels"], json!({"x": "y"}));
    }
}
