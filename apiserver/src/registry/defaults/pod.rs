//! Pod and pod-template defaults: the pod spec, its containers, probes and volumes.

use serde_json::{json, Value};

use super::{child, each_mut, set_default};

/// The DefaultTolerationSeconds admission plugin's settings (kube-apiserver's
/// `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultTolerationSeconds {
    pub not_ready: i64,
    pub unreachable: i64,
}

impl Default for DefaultTolerationSeconds {
    fn default() -> Self {
        DefaultTolerationSeconds {
            not_ready: berth_api::well_known::taints::DEFAULT_TOLERATION_SECONDS,
            unreachable: berth_api::well_known::taints::DEFAULT_TOLERATION_SECONDS,
        }
    }
}

/// The pod kind itself: spec defaults plus what only a Pod (not a template) receives.
pub(super) fn default_pod(obj: &mut Value, tolerations: &DefaultTolerationSeconds) {
    if let Some(spec) = child(obj, "spec") {
        default_pod_spec(spec, true);
        set_default(spec, "enableServiceLinks", json!(true));
        each_mut(spec, "containers", default_requests_from_limits);
        each_mut(spec, "initContainers", default_requests_from_limits);
        if spec["hostNetwork"] == true {
            each_mut(spec, "containers", default_host_ports);
            each_mut(spec, "initContainers", default_host_ports);
        }
        admission_defaults(spec);
        default_toleration_seconds(spec, tolerations);
    }
    let qos = obj.get("spec").map(pod_qos_class);
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Pending"));
        if let Some(qos) = qos {
            set_default(status, "qosClass", json!(qos));
        }
    }
}

/// Defaults a `PodTemplateSpec` (`spec.template` of workloads). Jobs pass `restart_policy`
/// false: their template's restart policy has no default and must be chosen.
pub(crate) fn default_template(template: &mut Value, restart_policy: bool) {
    if let Some(spec) = child(template, "spec") {
        default_pod_spec(spec, restart_policy);
    }
}

fn default_pod_spec(spec: &mut Value, restart_policy: bool) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    if restart_policy {
        set_default(spec, "restartPolicy", json!("Always"));
    }
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    each_mut(spec, "containers", default_container);
    each_mut(spec, "initContainers", default_container);
    each_mut(spec, "ephemeralContainers", default_container);
    each_mut(spec, "volumes", default_volume);
}

/// What Kubernetes' default admission plugins ServiceAccount and Priority add to every pod;
/// Berth applies them here.
fn admission_defaults(spec: &mut Value) {
    set_default(spec, "serviceAccountName", json!("default"));
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        set_default(spec, "serviceAccount", sa);
    }
    if spec.get("priorityClassName").is_none_or(Value::is_null) {
        set_default(spec, "priority", json!(0));
    }
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
}

/// Kubernetes' DefaultTolerationSeconds admission plugin (on create and update of pods): a pod
/// that does not already tolerate `not-ready` / `unreachable` NoExecute taints — a toleration
/// with that key or no key, and effect NoExecute or none — gets an `Exists` toleration for each
/// with the configured `tolerationSeconds`.
fn default_toleration_seconds(spec: &mut Value, seconds: &DefaultTolerationSeconds) {
    let Some(map) = spec.as_object_mut() else {
        return;
    };
    let tolerations = map.entry("tolerations").or_insert(json!([]));
    if tolerations.is_null() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    let blank = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").is_empty();
    for (key, seconds) in [
        (berth_api::well_known::taints::NOT_READY, seconds.not_ready),
        (
            berth_api::well_known::taints::UNREACHABLE,
            seconds.unreachable,
        ),
    ] {
        let tolerated = list.iter().any(|t| {
            (blank(t.get("key")) || t["key"] == key)
                && (blank(t.get("effect")) || t["effect"] == "NoExecute")
        });
        if !tolerated {
            list.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": seconds}),
            );
        }
    }
}

fn default_container(c: &mut Value) {
    if c.get("imagePullPolicy").is_none_or(Value::is_null) {
        if let Some(image) = c.get("image").and_then(Value::as_str) {
            if !image.is_empty() {
                let policy = pull_policy_for(image);
                c["imagePullPolicy"] = json!(policy);
            }
        }
    }
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    each_mut(c, "ports", |p| set_default(p, "protocol", json!("TCP")));
    each_mut(c, "env", |e| {
        if let Some(field_ref) = e
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .filter(|f| f.is_object())
        {
            set_default(field_ref, "apiVersion", json!("v1"));
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            default_probe(p);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle").filter(|l| l.is_object()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lifecycle.get_mut(hook).filter(|h| h.is_object()) {
                default_handler(h);
            }
        }
    }
}

/// `Always` for `:latest` or an untagged image, `IfNotPresent` otherwise (a digest counts as
/// pinned).
pub(crate) fn pull_policy_for(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}

fn default_probe(p: &mut Value) {
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    default_handler(p);
}

fn default_handler(h: &mut Value) {
    if let Some(get) = h.get_mut("httpGet").filter(|g| g.is_object()) {
        set_default(get, "path", json!("/"));
        set_default(get, "scheme", json!("HTTP"));
    }
}

fn default_volume(v: &mut Value) {
    // Any member besides the name is a volume source; with none, Kubernetes uses emptyDir.
    let has_source = v
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, val)| k != "name" && !val.is_null()));
    if !has_source {
        v["emptyDir"] = json!({});
        return;
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
            set_default(s, "defaultMode", json!(420));
        }
    }
    if let Some(hp) = v.get_mut("hostPath").filter(|h| h.is_object()) {
        set_default(hp, "type", json!(""));
    }
}

/// With limits but no request for a resource, the request defaults to the limit (Pods only).
fn default_requests_from_limits(c: &mut Value) {
    let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let Some(requests) = child(c, "resources").and_then(|r| child(r, "requests")) else {
        return;
    };
    for (name, q) in limits {
        set_default(requests, &name, q);
    }
}

fn default_host_ports(c: &mut Value) {
    each_mut(c, "ports", |p| {
        if p.get("hostPort").is_none_or(|h| h.is_null() || *h == 0) {
            if let Some(cp) = p.get("containerPort").cloned() {
                p["hostPort"] = cp;
            }
        }
    });
}

/// The QoS class Kubernetes derives from a pod spec's cpu and memory requests and limits.
fn pod_qos_class(spec: &Value) -> &'static str {
    let mut any_set = false;
    let mut guaranteed = true;
    let containers = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let requests = c.pointer("/resources/requests");
        let limits = c.pointer("/resources/limits");
        for res in ["cpu", "memory"] {
            let req = requests.and_then(|r| r.get(res)).and_then(quantity_of);
            let lim = limits.and_then(|l| l.get(res)).and_then(quantity_of);
            if req.as_ref().is_some_and(|q| !q.is_zero())
                || lim.as_ref().is_some_and(|q| !q.is_zero())
            {
                any_set = true;
            }
            match (req, lim) {
                (Some(r), Some(l)) if r == l => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn quantity_of(v: &Value) -> Option<berth_api::Quantity> {
    match v {
        Value::String(s) => berth_api::Quantity::parse(s).ok(),
        Value::Number(n) => berth_api::Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::apply_defaults;
    use super::*;

    #[test]
    fn pull_policies() {
        assert_eq!(pull_policy_for("nginx"), "Always");
        assert_eq!(pull_policy_for("nginx:latest"), "Always");
        assert_eq!(pull_policy_for("nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy_for("reg:5000/app"), "Always");
        assert_eq!(pull_policy_for("reg:5000/app:v2"), "IfNotPresent");
        assert_eq!(pull_policy_for("app@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn pod_defaults() {
        let mut v = json!({"metadata": {"name": "p"}, "spec": {"containers": [{
            "name": "c", "image": "nginx",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "livenessProbe": {"httpGet": {"port": 80}},
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}
        }], "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}});
        apply_defaults("Pod", &mut v);
        let spec = &v["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(spec["tolerations"][0]["tolerationSeconds"], 300);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
        assert_eq!(v["status"]["phase"], "Pending");
        assert_eq!(v["status"]["qosClass"], "Guaranteed");
    }

    #[test]
    fn given_values_are_kept() {
        let mut v = json!({"spec": {"restartPolicy": "Never", "schedulerName": "mine",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "nginx:1", "imagePullPolicy": "Never"}]}});
        apply_defaults("Pod", &mut v);
        assert_eq!(v["spec"]["restartPolicy"], "Never");
        assert_eq!(v["spec"]["schedulerName"], "mine");
        assert_eq!(v["spec"]["tolerations"].as_array().unwrap().len(), 1);
        assert_eq!(v["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(v["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn default_toleration_seconds_are_configurable_and_respect_existing_ones() {
        let seconds = DefaultTolerationSeconds {
            not_ready: 7,
            unreachable: 9,
        };
        let mut v = json!({"spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        default_pod(&mut v, &seconds);
        assert_eq!(
            v["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 7},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 9},
            ])
        );
        // Idempotent: an update of the defaulted pod adds nothing.
        let before = v.clone();
        default_pod(&mut v, &seconds);
        assert_eq!(v, before);
        // A toleration of the key (any effect), or of every key for NoExecute, counts.
        let mut v = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
        ]}});
        default_pod(&mut v, &seconds);
        assert_eq!(v["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["spec"]["tolerations"][1]["key"],
            "node.kubernetes.io/not-ready"
        );
        let mut v = json!({"spec": {"tolerations": [
            {"key": "", "operator": "Exists", "effect": "NoExecute"},
        ]}});
        default_pod(&mut v, &seconds);
        assert_eq!(v["spec"]["tolerations"].as_array().unwrap().len(), 1);
        // A NoSchedule toleration of the key does not.
        let mut v = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"},
        ]}});
        default_pod(&mut v, &seconds);
        assert_eq!(v["spec"]["tolerations"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn host_network_ports_and_qos() {
        let mut v = json!({"spec": {"hostNetwork": true, "containers": [{"name": "c",
            "image": "x:1", "ports": [{"containerPort": 53}],
            "resources": {"requests": {"cpu": "100m"}}}]}});
        apply_defaults("Pod", &mut v);
        assert_eq!(v["spec"]["containers"][0]["ports"][0]["hostPort"], 53);
        assert_eq!(v["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn template_defaults_leave_job_restart_policy() {
        let mut t = json!({"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}});
        default_template(&mut t, false);
        assert!(t["spec"].get("restartPolicy").is_none());
        assert!(t["spec"].get("enableServiceLinks").is_none());
        assert_eq!(
            t["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        default_template(&mut t, true);
        assert_eq!(t["spec"]["restartPolicy"], "Always");
    }
}
