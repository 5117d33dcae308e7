//! Kubernetes' v1 defaulting, applied to objects as JSON before validation and storage, so that
//! what kubectl reads back carries the same defaults a real API server fills in.
//!
//! Besides the scheme defaults (`pkg/apis/*/v1/defaults.go`) this sets the few values Kubernetes'
//! create strategies and default admission plugins add (a Namespace's finalizer and phase, a
//! Pod's pending phase and QoS class, a Job's generated selector): callers get one entry point.
//! Defaulting never fails: values of an unexpected JSON type are left for validation to reject.

pub mod certificates;
mod pod;
mod storage;
mod workloads;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

pub use pod::DefaultTolerationSeconds;

/// Fills in defaults for an object of `kind` in place. Call it on create and on update, after a
/// `generateName` has been expanded and (for Jobs) after `metadata.uid` has been assigned, since
/// a Job's generated selector and labels use both.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    apply_defaults_with(kind, obj, &DefaultTolerationSeconds::default());
}

/// [`apply_defaults`] with the DefaultTolerationSeconds admission plugin's settings.
pub fn apply_defaults_with(kind: &str, obj: &mut Value, tolerations: &DefaultTolerationSeconds) {
    if !obj.is_object() {
        return;
    }
    match kind {
        "Pod" => pod::default_pod(obj, tolerations),
        "Service" => default_service(obj),
        "Namespace" => default_namespace(obj),
        "Secret" => default_secret(obj),
        "Node" => default_node(obj),
        "Endpoints" => default_endpoints(obj),
        "EndpointSlice" => default_endpoint_slice(obj),
        "Deployment" => workloads::default_deployment(obj),
        "ReplicaSet" => workloads::default_replica_set(obj),
        "DaemonSet" => workloads::default_daemon_set(obj),
        "StatefulSet" => workloads::default_stateful_set(obj),
        "Job" => workloads::default_job(obj),
        "PersistentVolumeClaim" => storage::default_persistent_volume_claim(obj),
        "PersistentVolume" => storage::default_persistent_volume(obj),
        "PodTemplate" => {
            if let Some(t) = child(obj, "template") {
                pod::default_template(t, true);
            }
        }
        // ConfigMap, ServiceAccount, Event and Lease have no defaults in v1.
        _ => {}
    }
}

/// The object member `key` of `v`, created empty when absent or null; `None` when `v` is not an
/// object or the member holds a non-object (left for validation to reject).
pub(crate) fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = v.as_object_mut()?;
    let entry = map.entry(key).or_insert(Value::Null);
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.is_object().then_some(entry)
}

/// Sets `key` to `value` when it is absent or null.
pub(crate) fn set_default(v: &mut Value, key: &str, value: Value) {
    if let Some(map) = v.as_object_mut() {
        let entry = map.entry(key).or_insert(Value::Null);
        if entry.is_null() {
            *entry = value;
        }
    }
}

/// Runs `f` on each object element of the array `key` of `v`, if there is one.
pub(crate) fn each_mut(v: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = v.get_mut(key).and_then(Value::as_array_mut) {
        for item in items.iter_mut().filter(|i| i.is_object()) {
            f(item);
        }
    }
}

fn default_service(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or("").to_string();
    if spec["sessionAffinity"] == "ClientIP" {
        if let Some(cfg) = child(spec, "sessionAffinityConfig").and_then(|c| child(c, "clientIP")) {
            set_default(cfg, "timeoutSeconds", json!(10800));
        }
    }
    each_mut(spec, "ports", |port| {
        set_default(port, "protocol", json!("TCP"));
        let unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset {
            if let Some(p) = port.get("port").cloned() {
                port["targetPort"] = p;
            }
        }
    });
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        // clusterIPs mirrors clusterIP, as Kubernetes' service strategy keeps them in step.
        if let Some(ip) = spec.get("clusterIP").and_then(Value::as_str) {
            if !ip.is_empty() {
                let ip = json!([ip]);
                set_default(spec, "clusterIPs", ip);
            }
        }
    }
}

/// `stringData` is write-only: Kubernetes merges it into `data` (winning over equal keys).
fn default_secret(obj: &mut Value) {
    set_default(obj, "type", json!("Opaque"));
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert(Value::Null);
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in strings {
            let text = v.as_str().unwrap_or_default().as_bytes().to_vec();
            data.insert(k, json!(BASE64.encode(text)));
        }
    }
}

fn default_namespace(obj: &mut Value) {
    if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
        let name = json!(name);
        if let Some(labels) = child(obj, "metadata").and_then(|m| child(m, "labels")) {
            set_default(labels, "kubernetes.io/metadata.name", name);
        }
    }
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

fn default_node(obj: &mut Value) {
    let Some(status) = obj.get_mut("status").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(capacity) = status.get("capacity").cloned() {
        set_default(status, "allocatable", capacity);
    }
}

fn default_endpoints(obj: &mut Value) {
    each_mut(obj, "subsets", |subset| {
        each_mut(subset, "ports", |port| {
            set_default(port, "protocol", json!("TCP"));
        });
    });
}

fn default_endpoint_slice(obj: &mut Value) {
    each_mut(obj, "ports", |port| {
        set_default(port, "name", json!(""));
        set_default(port, "protocol", json!("TCP"));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(kind: &str, mut v: Value) -> Value {
        apply_defaults(kind, &mut v);
        v
    }

    #[test]
    fn service_defaults() {
        let v = defaulted(
            "Service",
            json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.0.0.5",
                "ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "UDP"}]}}),
        );
        let spec = &v["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["clusterIPs"], json!(["10.0.0.5"]));
        assert_eq!(
            spec["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(spec["ports"][1]["targetPort"], "https");
        assert_eq!(spec["ports"][1]["protocol"], "UDP");
        assert!(spec.get("externalTrafficPolicy").is_none());
    }

    #[test]
    fn service_type_specific_defaults() {
        let v = defaulted(
            "Service",
            json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP",
                "ports": [{"port": 80, "targetPort": 0}]}}),
        );
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(v["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(
            v["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 80);
        let v = defaulted(
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
        );
        assert!(v["spec"].get("ipFamilies").is_none());
        assert!(v["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn namespace_defaults() {
        let v = defaulted("Namespace", json!({"metadata": {"name": "dev"}}));
        assert_eq!(v["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(v["status"]["phase"], "Active");
        assert_eq!(
            v["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "dev"
        );
        let v = defaulted(
            "Namespace",
            json!({"metadata": {"name": "dev"}, "status": {"phase": "Terminating"}}),
        );
        assert_eq!(v["status"]["phase"], "Terminating");
    }

    #[test]
    fn secret_node_endpoint_defaults() {
        assert_eq!(defaulted("Secret", json!({}))["type"], "Opaque");
        assert_eq!(
            defaulted("Secret", json!({"type": "kubernetes.io/tls"}))["type"],
            "kubernetes.io/tls"
        );
        let s = defaulted(
            "Secret",
            json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "hi"}}),
        );
        assert_eq!(s["data"], json!({"a": "eA==", "b": "aGk="}));
        assert!(s.get("stringData").is_none());
        let n = defaulted("Node", json!({"status": {"capacity": {"cpu": "4"}}}));
        assert_eq!(n["status"]["allocatable"], json!({"cpu": "4"}));
        let e = defaulted("Endpoints", json!({"subsets": [{"ports": [{"port": 80}]}]}));
        assert_eq!(e["subsets"][0]["ports"][0]["protocol"], "TCP");
        let s = defaulted(
            "EndpointSlice",
            json!({"addressType": "IPv4", "ports": [{"port": 80}]}),
        );
        assert_eq!(
            s["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
    }

    #[test]
    fn kinds_without_defaults_are_untouched() {
        for kind in ["ConfigMap", "ServiceAccount", "Event", "Lease"] {
            let v = json!({"metadata": {"name": "x"}, "data": {"a": "b"}});
            assert_eq!(defaulted(kind, v.clone()), v, "{kind}");
        }
        let mut not_object = json!("x");
        apply_defaults("Pod", &mut not_object);
        assert_eq!(not_object, json!("x"));
    }

    #[test]
    fn every_served_kind_is_handled_without_panicking() {
        for r in crate::registry::RESOURCES {
            let mut v = json!({"metadata": {"name": "x"}, "spec": {"template": {"spec": {}}}});
            apply_defaults(r.kind, &mut v);
            let mut odd = json!({"spec": 5, "status": [1], "ports": "x"});
            apply_defaults(r.kind, &mut odd);
        }
    }
}
