//! apps/v1: Deployment, ReplicaSet, DaemonSet, StatefulSet.

use serde_json::{json, Value};

use super::pod::validate_pod_template;
use super::selector::{go_selector, selector_is_empty, selector_matches, validate_label_selector};
use super::{go_string_map, invalid_rendered, items, nonnegative, required_with};
use crate::status::Cause;

const STATEFULSET_UPDATE_MESSAGE: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

pub(super) fn validate(kind: &str, obj: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let mut errs = Vec::new();
    match kind {
        "Deployment" => {
            nonnegative(&mut errs, spec, "replicas", "spec");
            selector_and_template(spec, "deployment", &mut errs);
            validate_deployment_strategy(spec.get("strategy").unwrap_or(&null), &mut errs);
            nonnegative(&mut errs, spec, "minReadySeconds", "spec");
            nonnegative(&mut errs, spec, "revisionHistoryLimit", "spec");
            nonnegative(&mut errs, spec, "progressDeadlineSeconds", "spec");
            if let Some(pds) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
                let min_ready = spec
                    .get("minReadySeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if pds <= min_ready {
                    errs.push(Cause::invalid(
                        "spec.progressDeadlineSeconds",
                        &json!(pds),
                        "must be greater than minReadySeconds",
                    ));
                }
            }
        }
        "ReplicaSet" => {
            nonnegative(&mut errs, spec, "replicas", "spec");
            nonnegative(&mut errs, spec, "minReadySeconds", "spec");
            selector_and_template(spec, "deployment", &mut errs);
        }
        "DaemonSet" => {
            selector_and_template(spec, "daemonset", &mut errs);
            nonnegative(&mut errs, spec, "minReadySeconds", "spec");
            nonnegative(&mut errs, spec, "revisionHistoryLimit", "spec");
            validate_daemon_set_strategy(spec.get("updateStrategy").unwrap_or(&null), &mut errs);
        }
        "StatefulSet" => validate_stateful_set_spec(spec, &mut errs),
        _ => {}
    }
    errs
}

/// The selector rules shared by the four kinds, then the pod template's.
fn selector_and_template(spec: &Value, word: &str, errs: &mut Vec<Cause>) {
    let template = spec.get("template").unwrap_or(&Value::Null);
    match spec.get("selector").filter(|s| s.is_object()) {
        None => errs.push(Cause::required("spec.selector")),
        Some(sel) => {
            errs.extend(validate_label_selector(sel, "spec.selector"));
            if selector_is_empty(sel) {
                errs.push(invalid_rendered(
                    "spec.selector",
                    &go_selector(sel),
                    &format!("empty selector is invalid for {word}"),
                ));
            } else {
                let labels = template.pointer("/metadata/labels");
                if !selector_matches(sel, labels) {
                    errs.push(invalid_rendered(
                        "spec.template.metadata.labels",
                        &go_string_map(labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    errs.extend(validate_pod_template(template, "spec.template", true));
    let pod_spec = template.get("spec").unwrap_or(&Value::Null);
    let policy = pod_spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if policy != "Always" {
        errs.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(policy),
            &["Always"],
        ));
    }
    if let Some(ads) = pod_spec
        .get("activeDeadlineSeconds")
        .filter(|v| !v.is_null())
    {
        let path = "spec.template.spec.activeDeadlineSeconds";
        errs.push(match word {
            "deployment" => {
                Cause::forbidden(path, "activeDeadlineSeconds in ReplicaSet is not Supported")
            }
            "daemonset" => Cause::invalid(
                path,
                ads,
                "activeDeadlineSeconds in DaemonSet is not Supported",
            ),
            _ => Cause::invalid(path, ads, "must not be specified"),
        });
    }
}

fn validate_deployment_strategy(strategy: &Value, errs: &mut Vec<Cause>) {
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
        "Recreate" => {
            if rolling.is_some() {
                errs.push(Cause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match rolling {
            None => errs.push(required_with(
                "spec.strategy.rollingUpdate",
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let path = "spec.strategy.rollingUpdate";
                let unavailable = ru.get("maxUnavailable");
                let surge = ru.get("maxSurge");
                int_or_percent(unavailable, &format!("{path}.maxUnavailable"), errs);
                int_or_percent(surge, &format!("{path}.maxSurge"), errs);
                if amount(unavailable) == 0 && amount(surge) == 0 {
                    errs.push(invalid_rendered(
                        format!("{path}.maxUnavailable"),
                        &render(unavailable),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                not_over_100(unavailable, &format!("{path}.maxUnavailable"), errs);
            }
        },
        other => errs.push(Cause::not_supported(
            "spec.strategy",
            &json!(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

fn validate_daemon_set_strategy(strategy: &Value, errs: &mut Vec<Cause>) {
    match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let path = "spec.updateStrategy.rollingUpdate";
            let Some(ru) = strategy.get("rollingUpdate").filter(|r| !r.is_null()) else {
                errs.push(Cause::required(path));
                return;
            };
            let unavailable = ru.get("maxUnavailable");
            let surge = ru.get("maxSurge");
            int_or_percent(unavailable, &format!("{path}.maxUnavailable"), errs);
            int_or_percent(surge, &format!("{path}.maxSurge"), errs);
            not_over_100(unavailable, &format!("{path}.maxUnavailable"), errs);
            not_over_100(surge, &format!("{path}.maxSurge"), errs);
            match (amount(unavailable) != 0, amount(surge) != 0) {
                (true, true) => errs.push(invalid_rendered(
                    format!("{path}.maxSurge"),
                    &render(surge),
                    "may not be set when maxUnavailable is non-zero",
                )),
                (false, false) => errs.push(required_with(
                    format!("{path}.maxUnavailable"),
                    "cannot be 0 when maxSurge is 0",
                )),
                _ => {}
            }
        }
        other => errs.push(Cause::not_supported(
            "spec.updateStrategy",
            &json!(other),
            &["RollingUpdate", "OnDelete"],
        )),
    }
}

fn validate_stateful_set_spec(spec: &Value, errs: &mut Vec<Cause>) {
    match spec
        .get("podManagementPolicy")
        .and_then(Value::as_str)
        .unwrap_or("")
    {
        "" => errs.push(Cause::required("spec.podManagementPolicy")),
        "OrderedReady" | "Parallel" => {}
        other => errs.push(Cause::invalid(
            "spec.podManagementPolicy",
            &json!(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
        "" => errs.push(Cause::required("spec.updateStrategy")),
        "OnDelete" => {
            if let Some(ru) = rolling {
                errs.push(Cause::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    ru,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = rolling {
                nonnegative(errs, ru, "partition", "spec.updateStrategy.rollingUpdate");
            }
        }
        other => errs.push(Cause::invalid(
            "spec.updateStrategy",
            &json!(other),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(policy) = spec.get("persistentVolumeClaimRetentionPolicy") {
        for key in ["whenDeleted", "whenScaled"] {
            let v = policy.get(key).and_then(Value::as_str).unwrap_or("");
            if v != "Retain" && v != "Delete" {
                errs.push(Cause::not_supported(
                    format!("spec.persistentVolumeClaimRetentionPolicy.{key}"),
                    &json!(v),
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    nonnegative(errs, spec, "replicas", "spec");
    nonnegative(errs, spec, "minReadySeconds", "spec");
    if let Some(ordinals) = spec.get("ordinals") {
        nonnegative(errs, ordinals, "start", "spec.ordinals");
    }
    selector_and_template(&with_claim_volumes(spec), "statefulset", errs);
}

/// The spec with a volume for each `volumeClaimTemplates` entry the template does not declare,
/// as the controller adds them to each pod, so mounts of claims validate.
fn with_claim_volumes(spec: &Value) -> std::borrow::Cow<'_, Value> {
    let claims: Vec<&str> = items(spec, "volumeClaimTemplates")
        .iter()
        .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    let Some(pod_spec) = spec.pointer("/template/spec").filter(|s| s.is_object()) else {
        return std::borrow::Cow::Borrowed(spec);
    };
    if claims.is_empty() {
        return std::borrow::Cow::Borrowed(spec);
    }
    let mut volumes = items(pod_spec, "volumes").to_vec();
    for claim in claims {
        if !volumes.iter().any(|v| v.get("name") == Some(&json!(claim))) {
            volumes.push(json!({"name": claim, "persistentVolumeClaim": {"claimName": claim}}));
        }
    }
    let mut spec = spec.clone();
    spec["template"]["spec"]["volumes"] = Value::Array(volumes);
    std::borrow::Cow::Owned(spec)
}

/// `25%` or a non-negative integer.
fn int_or_percent(v: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    match v {
        Some(Value::String(s)) => {
            for msg in berth_api::names::is_valid_percent(s) {
                errs.push(invalid_rendered(path, s, &msg));
            }
        }
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => errs.push(invalid_rendered(
            path,
            &n.to_string(),
            "must be greater than or equal to 0",
        )),
        _ => {}
    }
}

fn not_over_100(v: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    if let Some(Value::String(s)) = v {
        if s.ends_with('%') && amount(v) > 100 {
            errs.push(invalid_rendered(path, s, "must not be greater than 100%"));
        }
    }
}

/// The number in an int-or-percent (`25%` gives 25), 0 when absent or malformed.
fn amount(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.trim_end_matches('%').parse().unwrap_or(0),
        _ => 0,
    }
}

/// IntOrString prints through its `String()` method: bare, without quotes.
fn render(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "0".to_string(),
    }
}

pub(super) fn validate_update(kind: &str, new: &Value, old: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let new_spec = new.get("spec").unwrap_or(&null);
    let old_spec = old.get("spec").unwrap_or(&null);
    let mut errs = Vec::new();
    if kind == "StatefulSet" {
        let mask = |spec: &Value| {
            let mut s = spec.clone();
            if let Some(obj) = s.as_object_mut() {
                for key in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    obj.remove(key);
                }
            }
            s
        };
        if mask(new_spec) != mask(old_spec) {
            errs.push(Cause::forbidden("spec", STATEFULSET_UPDATE_MESSAGE));
        }
    } else if new_spec.get("selector") != old_spec.get("selector") {
        errs.push(invalid_rendered(
            "spec.selector",
            &go_selector(new_spec.get("selector").unwrap_or(&null)),
            "field is immutable",
        ));
    }
    errs
}

/// ControllerRevision: `data` is mandatory and `revision` non-negative.
pub(super) fn validate_controller_revision(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    if obj.get("data").is_none_or(Value::is_null) {
        errs.push(required_with("data", "data is mandatory"));
    }
    if let Some(r) = obj
        .get("revision")
        .and_then(Value::as_i64)
        .filter(|r| *r < 0)
    {
        errs.push(Cause::invalid(
            "revision",
            &json!(r),
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// A ControllerRevision's `data` never changes; only its `revision` may be renumbered.
pub(super) fn validate_controller_revision_update(new: &Value, old: &Value) -> Vec<Cause> {
    let (new_data, old_data) = (new.get("data"), old.get("data"));
    if new_data != old_data {
        return vec![Cause::invalid(
            "data",
            new_data.unwrap_or(&Value::Null),
            "field is immutable",
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::defaults::apply_defaults;
    use crate::registry::validation::validate as validate_kind;

    fn object(kind: &str, spec: Value) -> Value {
        let mut v = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        apply_defaults(kind, &mut v);
        v
    }

    fn good_spec() -> Value {
        json!({"selector": {"matchLabels": {"app": "web"}},
               "template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}})
    }

    fn shown(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::display).collect()
    }

    #[test]
    fn valid_workloads_pass() {
        for kind in ["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"] {
            assert_eq!(
                validate_kind(kind, &object(kind, good_spec()), true),
                vec![],
                "{kind}"
            );
        }
    }

    #[test]
    fn selector_must_match_template() {
        let mut spec = good_spec();
        spec["template"]["metadata"]["labels"] = json!({"app": "other", "tier": "x"});
        let errs = validate("Deployment", &object("Deployment", spec));
        assert_eq!(
            shown(&errs),
            vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\", \"tier\":\"x\"}: `selector` does not match template `labels`"]
        );
    }

    #[test]
    fn selector_required_and_non_empty() {
        let mut spec = good_spec();
        spec.as_object_mut().unwrap().remove("selector");
        assert_eq!(
            shown(&validate("ReplicaSet", &object("ReplicaSet", spec))),
            vec!["spec.selector: Required value"]
        );
        let mut spec = good_spec();
        spec["selector"] = json!({});
        assert_eq!(
            shown(&validate("DaemonSet", &object("DaemonSet", spec))),
            vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for daemonset"]
        );
    }

    #[test]
    fn replicas_restart_policy_strategy() {
        let mut spec = good_spec();
        spec["replicas"] = json!(-1);
        spec["template"]["spec"]["restartPolicy"] = json!("Never");
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
        assert_eq!(
            shown(&validate("Deployment", &object("Deployment", spec))),
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
            ]
        );
        let mut spec = good_spec();
        spec["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        spec["progressDeadlineSeconds"] = json!(5);
        spec["minReadySeconds"] = json!(10);
        assert_eq!(
            shown(&validate("Deployment", &object("Deployment", spec))),
            vec![
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
                "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds",
            ]
        );
    }

    #[test]
    fn daemon_set_strategy() {
        let mut spec = good_spec();
        spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "150%"}});
        assert_eq!(
            shown(&validate("DaemonSet", &object("DaemonSet", spec))),
            vec![
                "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 150%: must not be greater than 100%",
                "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 150%: may not be set when maxUnavailable is non-zero",
            ]
        );
    }

    #[test]
    fn stateful_set_rules() {
        let mut spec = good_spec();
        spec["podManagementPolicy"] = json!("Random");
        spec["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        assert_eq!(
            shown(&validate("StatefulSet", &object("StatefulSet", spec))),
            vec![
                "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
                "spec.template.spec.activeDeadlineSeconds: Invalid value: 5: must not be specified",
            ]
        );
    }

    #[test]
    fn stateful_set_containers_may_mount_claim_templates() {
        let mut spec = good_spec();
        spec["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        assert_eq!(
            shown(&validate(
                "StatefulSet",
                &object("StatefulSet", spec.clone())
            )),
            vec![r#"spec.template.spec.containers[0].volumeMounts[0].name: Not found: "data""#]
        );
        spec["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}]);
        assert_eq!(
            validate("StatefulSet", &object("StatefulSet", spec)),
            vec![]
        );
    }

    #[test]
    fn immutable_selectors_and_stateful_set_spec() {
        let old = object("Deployment", good_spec());
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        assert_eq!(validate_update("Deployment", &new, &old), vec![]);
        new["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
        assert_eq!(
            shown(&validate_update("Deployment", &new, &old)),
            vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"b\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"]
        );

        let old = object("StatefulSet", good_spec());
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert_eq!(validate_update("StatefulSet", &new, &old), vec![]);
        new["spec"]["serviceName"] = json!("other");
        assert_eq!(
            shown(&validate_update("StatefulSet", &new, &old)),
            vec![format!("spec: Forbidden: {STATEFULSET_UPDATE_MESSAGE}")]
        );
    }

    #[test]
    fn controller_revisions() {
        let ok = json!({"metadata": {"name": "web-5d9"}, "data": {"spec": {}}, "revision": 2});
        assert!(validate_controller_revision(&ok).is_empty());
        let bad = json!({"metadata": {"name": "web-5d9"}, "revision": -1});
        assert_eq!(
            shown(&validate_controller_revision(&bad)),
            vec![
                "data: Required value: data is mandatory",
                "revision: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        let renumbered =
            json!({"metadata": {"name": "web-5d9"}, "data": {"spec": {}}, "revision": 3});
        assert!(validate_controller_revision_update(&renumbered, &ok).is_empty());
        let changed =
            json!({"metadata": {"name": "web-5d9"}, "data": {"spec": {"x": 1}}, "revision": 2});
        assert_eq!(
            shown(&validate_controller_revision_update(&changed, &ok)),
            vec![r#"data: Invalid value: {"spec":{"x":1}}: field is immutable"#]
        );
    }
}
