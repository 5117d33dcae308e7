//! Field selectors: which fields of each kind may be selected on (`--field-selector`), and their
//! values as strings, as Kubernetes' `*ToSelectableFields` functions compute them.

use serde_json::Value;

use super::RESOURCES;

const NAMESPACED: &[&str] = &["metadata.name", "metadata.namespace"];
const CLUSTER: &[&str] = &["metadata.name"];

const POD: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const EVENT: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const NODE: &[&str] = &["metadata.name", "spec.unschedulable"];
const NAMESPACE: &[&str] = &["metadata.name", "status.phase"];
const SECRET: &[&str] = &["metadata.name", "metadata.namespace", "type"];
const REPLICA_SET: &[&str] = &["metadata.name", "metadata.namespace", "status.replicas"];
const JOB: &[&str] = &["metadata.name", "metadata.namespace", "status.successful"];
const SERVICE: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.clusterIP",
    "spec.type",
];

/// The fields a field selector may name for `kind` (empty for an unknown kind).
pub fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => POD,
        "Event" => EVENT,
        "Node" => NODE,
        "Namespace" => NAMESPACE,
        "Secret" => SECRET,
        "ReplicaSet" => REPLICA_SET,
        "Job" => JOB,
        "Service" => SERVICE,
        _ => match RESOURCES.iter().find(|r| r.kind == kind) {
            Some(r) if r.namespaced => NAMESPACED,
            Some(_) => CLUSTER,
            None => &[],
        },
    }
}

/// The value of selectable `field` of `obj`, `None` when `kind` does not support the field.
/// A missing value is "" (so `spec.nodeName=` selects unscheduled pods); booleans are
/// "true"/"false" and counts decimal, defaulting to false and 0.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> Option<String> {
    if !supported_fields(kind).contains(&field) {
        return None;
    }
    let text = |pointer: &str| {
        obj.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let flag = |pointer: &str| {
        obj.pointer(pointer)
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()
    };
    let count = |pointer: &str| {
        obj.pointer(pointer)
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string()
    };
    Some(match (kind, field) {
        ("Pod", "spec.hostNetwork") => flag("/spec/hostNetwork"),
        ("Pod", "status.podIP") => obj
            .pointer("/status/podIPs/0/ip")
            .and_then(Value::as_str)
            .map_or_else(|| text("/status/podIP"), str::to_string),
        ("Node", "spec.unschedulable") => flag("/spec/unschedulable"),
        ("ReplicaSet", "status.replicas") => count("/status/replicas"),
        ("Job", "status.successful") => count("/status/succeeded"),
        ("Event", "source") => text("/source/component"),
        ("Event", "reportingComponent") => text("/reportingComponent"),
        _ => text(&format!("/{}", field.replace('.', "/"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"restartPolicy": "Always", "hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.7"}], "podIP": "10.1.0.7"}});
        assert_eq!(
            field_value("Pod", &pod, "metadata.name").as_deref(),
            Some("p")
        );
        assert_eq!(
            field_value("Pod", &pod, "metadata.namespace").as_deref(),
            Some("ns")
        );
        assert_eq!(
            field_value("Pod", &pod, "spec.nodeName").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value("Pod", &pod, "spec.restartPolicy").as_deref(),
            Some("Always")
        );
        assert_eq!(
            field_value("Pod", &pod, "spec.hostNetwork").as_deref(),
            Some("true")
        );
        assert_eq!(
            field_value("Pod", &pod, "status.phase").as_deref(),
            Some("Running")
        );
        assert_eq!(
            field_value("Pod", &pod, "status.podIP").as_deref(),
            Some("10.1.0.7")
        );
        assert_eq!(
            field_value("Pod", &json!({}), "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(field_value("Pod", &pod, "spec.containers"), None);
    }

    #[test]
    fn events() {
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p", "uid": "u", "fieldPath": "spec.containers{c}"},
            "reason": "Pulled", "type": "Normal", "source": {"component": "kubelet"},
            "reportingComponent": "kubelet"});
        assert_eq!(
            field_value("Event", &ev, "involvedObject.kind").as_deref(),
            Some("Pod")
        );
        assert_eq!(
            field_value("Event", &ev, "involvedObject.fieldPath").as_deref(),
            Some("spec.containers{c}")
        );
        assert_eq!(
            field_value("Event", &ev, "involvedObject.namespace").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value("Event", &ev, "reason").as_deref(),
            Some("Pulled")
        );
        assert_eq!(
            field_value("Event", &ev, "source").as_deref(),
            Some("kubelet")
        );
        assert_eq!(
            field_value("Event", &ev, "reportingComponent").as_deref(),
            Some("kubelet")
        );
        assert_eq!(field_value("Event", &ev, "type").as_deref(), Some("Normal"));
    }

    #[test]
    fn other_kinds() {
        assert_eq!(
            field_value(
                "Node",
                &json!({"spec": {"unschedulable": true}}),
                "spec.unschedulable"
            )
            .as_deref(),
            Some("true")
        );
        assert_eq!(
            field_value("Node", &json!({}), "spec.unschedulable").as_deref(),
            Some("false")
        );
        assert_eq!(field_value("Node", &json!({}), "metadata.namespace"), None);
        assert_eq!(
            field_value(
                "Namespace",
                &json!({"status": {"phase": "Active"}}),
                "status.phase"
            )
            .as_deref(),
            Some("Active")
        );
        assert_eq!(
            field_value("Secret", &json!({"type": "Opaque"}), "type").as_deref(),
            Some("Opaque")
        );
        assert_eq!(
            field_value(
                "ReplicaSet",
                &json!({"status": {"replicas": 3}}),
                "status.replicas"
            )
            .as_deref(),
            Some("3")
        );
        assert_eq!(
            field_value("ReplicaSet", &json!({}), "status.replicas").as_deref(),
            Some("0")
        );
        assert_eq!(
            field_value(
                "Job",
                &json!({"status": {"succeeded": 2}}),
                "status.successful"
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            field_value(
                "Service",
                &json!({"spec": {"type": "NodePort"}}),
                "spec.type"
            )
            .as_deref(),
            Some("NodePort")
        );
        assert_eq!(
            field_value(
                "ConfigMap",
                &json!({"metadata": {"name": "c"}}),
                "metadata.name"
            )
            .as_deref(),
            Some("c")
        );
        assert_eq!(field_value("ConfigMap", &json!({}), "data"), None);
        assert_eq!(
            supported_fields("Lease"),
            &["metadata.name", "metadata.namespace"]
        );
        assert_eq!(supported_fields("Unknown"), &[] as &[&str]);
    }
}
