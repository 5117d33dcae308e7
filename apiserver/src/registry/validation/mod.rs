//! Kubernetes' validation of objects (as JSON, after defaulting), producing the same field paths,
//! reasons and messages a real API server returns in a 422 `Invalid` Status.
//!
//! Typed shape errors (a string where an integer belongs) are the handler's: it decodes with
//! k8s-openapi first. Here a value of an unexpected JSON type is treated as absent.

mod apps;
mod batch;
mod certificates;
mod cluster;
mod config;
mod meta;
mod network;
mod pod;
pub(crate) mod selector;
mod service;
mod storage;

use berth_api::names::NameFormat;
use serde_json::Value;

use crate::status::Cause;

/// Validates an object of `kind` for create. `namespaced` says whether the kind lives in a
/// namespace (then `metadata.namespace` is required, else forbidden).
pub fn validate(kind: &str, obj: &Value, namespaced: bool) -> Vec<Cause> {
    let mut errs = meta::validate_object_meta(
        obj.get("metadata").unwrap_or(&Value::Null),
        namespaced,
        name_format(kind),
        "metadata",
    );
    errs.extend(match kind {
        "Pod" => pod::validate_pod(obj),
        "Service" => service::validate_service(obj),
        "Namespace" | "Node" | "ServiceAccount" | "Event" => cluster::validate(kind, obj),
        "ConfigMap" => config::validate_config_map(obj),
        "Secret" => config::validate_secret(obj),
        "Endpoints" => network::validate_endpoints(obj),
        "EndpointSlice" => network::validate_endpoint_slice(obj),
        "Lease" => cluster::validate_lease(obj),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => apps::validate(kind, obj),
        "Job" => batch::validate_job(obj),
        "ControllerRevision" => apps::validate_controller_revision(obj),
        "CertificateSigningRequest" => certificates::validate_csr(obj),
        "PersistentVolumeClaim" => storage::validate_persistent_volume_claim(obj),
        "PersistentVolume" => storage::validate_persistent_volume(obj),
        _ => Vec::new(),
    });
    errs
}

/// Validates an update of `old` to `new` (both defaulted): the create rules on `new`, plus the
/// fields that may not change. The handler should carry `metadata.uid` and
/// `metadata.creationTimestamp` over from `old` when the client left them out, as Kubernetes does.
pub fn validate_update(kind: &str, new: &Value, old: &Value, namespaced: bool) -> Vec<Cause> {
    let mut errs = meta::validate_object_meta_update(
        new.get("metadata").unwrap_or(&Value::Null),
        old.get("metadata").unwrap_or(&Value::Null),
    );
    errs.extend(validate(kind, new, namespaced));
    errs.extend(match kind {
        "Pod" => pod::validate_pod_update(new, old),
        "Service" => service::validate_service_update(new, old),
        "ConfigMap" | "Secret" => config::validate_immutable_data(new, old),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            apps::validate_update(kind, new, old)
        }
        "Job" => batch::validate_job_update(new, old),
        "ControllerRevision" => apps::validate_controller_revision_update(new, old),
        "CertificateSigningRequest" => certificates::validate_csr_update(new, old),
        "PersistentVolumeClaim" => storage::validate_persistent_volume_claim_update(new, old),
        "PersistentVolume" => storage::validate_persistent_volume_update(new, old),
        "Node" => cluster::validate_node_update(new, old),
        "EndpointSlice" => network::validate_endpoint_slice_update(new, old),
        _ => Vec::new(),
    });
    errs
}

/// Which name format `metadata.name` of a kind must have.
pub fn name_format(kind: &str) -> NameFormat {
    match kind {
        "Namespace" => NameFormat::Dns1123Label,
        "Service" => NameFormat::Dns1035Label,
        _ => NameFormat::Dns1123Subdomain,
    }
}

/// `Required value: <detail>`.
pub(crate) fn required_with(field: impl Into<String>, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        message: format!("Required value: {detail}"),
        field: field.into(),
    }
}

/// `Invalid value: <rendered>: <detail>`, for values rendered the way Go's `%#v` prints them.
pub(crate) fn invalid_rendered(field: impl Into<String>, rendered: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {rendered}: {detail}"),
        field: field.into(),
    }
}

pub(crate) fn not_found(field: impl Into<String>, value: &Value) -> Cause {
    Cause {
        reason: "FieldValueNotFound",
        message: format!("Not found: {value}"),
        field: field.into(),
    }
}

pub(crate) fn too_long(field: impl Into<String>, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        message: format!("Too long: must have at most {max} bytes"),
        field: field.into(),
    }
}

/// `field is immutable` for `value` at `field`.
pub(crate) fn immutable(field: impl Into<String>, value: &Value) -> Cause {
    Cause::invalid(field, value, "field is immutable")
}

/// A non-empty string member, or `None`.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// An object member's entries, empty when absent or not an object.
pub(crate) fn entries<'a>(
    v: &'a Value,
    key: &str,
) -> impl Iterator<Item = (&'a String, &'a Value)> {
    v.get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.iter())
}

/// An array member's elements, empty when absent or not an array.
pub(crate) fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Appends `must be greater than or equal to 0` when the integer at `key` is negative.
pub(crate) fn nonnegative(errs: &mut Vec<Cause>, v: &Value, key: &str, path: &str) {
    if let Some(n) = v.get(key).and_then(Value::as_i64) {
        if n < 0 {
            errs.push(Cause::invalid(
                format!("{path}.{key}"),
                &Value::from(n),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// Each message as an `Invalid value` cause for `value` at `field`.
pub(crate) fn invalid_each(errs: &mut Vec<Cause>, field: &str, value: &str, msgs: Vec<String>) {
    let v = Value::from(value);
    errs.extend(msgs.into_iter().map(|m| Cause::invalid(field, &v, m)));
}

/// Go's `%#v` of a `map[string]string`, which Kubernetes prints in some messages.
pub(crate) fn go_string_map(v: Option<&Value>) -> String {
    let Some(map) = v.and_then(Value::as_object) else {
        return "map[string]string(nil)".to_string();
    };
    let mut pairs: Vec<(&String, String)> = map
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect();
    pairs.sort();
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), Value::from(v.as_str())))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::defaults::apply_defaults;
    use serde_json::json;

    /// A minimal valid object of each served kind, defaulted.
    fn sample(kind: &str) -> Value {
        let template = json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let mut v = match kind {
            "Pod" => json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
            "Service" => json!({"spec": {"ports": [{"port": 80}]}}),
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
                json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template}})
            }
            "Job" => {
                let mut t = template;
                t["spec"]["restartPolicy"] = json!("Never");
                json!({"spec": {"template": t}})
            }
            "EndpointSlice" => json!({"addressType": "IPv4"}),
            "ControllerRevision" => json!({"data": {}, "revision": 1}),
            "CertificateSigningRequest" => certificates::sample(),
            "PersistentVolumeClaim" => json!({"spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}),
            "PersistentVolume" => json!({"spec": {"accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data"}}}),
            "Event" => {
                json!({"involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"}})
            }
            _ => json!({}),
        };
        v["metadata"] = json!({"name": "a", "uid": "u"});
        apply_defaults(kind, &mut v);
        v
    }

    #[test]
    fn every_served_kind_validates_its_minimal_object() {
        for r in crate::registry::RESOURCES {
            let mut v = sample(r.kind);
            if r.namespaced {
                v["metadata"]["namespace"] = json!("default");
            }
            assert_eq!(validate(r.kind, &v, r.namespaced), vec![], "{}", r.kind);
            assert_eq!(
                validate_update(r.kind, &v, &v, r.namespaced),
                vec![],
                "{}",
                r.kind
            );
        }
    }

    #[test]
    fn name_formats_per_kind() {
        let mut ns = sample("Namespace");
        ns["metadata"]["name"] = json!("a.b");
        let errs = validate("Namespace", &ns, false);
        assert_eq!(
            errs[0].display(),
            "metadata.name: Invalid value: \"a.b\": must not contain dots"
        );
        let mut svc = sample("Service");
        svc["metadata"]["namespace"] = json!("default");
        svc["metadata"]["name"] = json!("1web");
        assert_eq!(validate("Service", &svc, true)[0].field, "metadata.name");
        let mut cm = sample("ConfigMap");
        cm["metadata"]["namespace"] = json!("default");
        cm["metadata"]["name"] = json!("a.b");
        assert_eq!(validate("ConfigMap", &cm, true), vec![]);
    }

    #[test]
    fn update_checks_metadata_and_kind_rules() {
        let mut old = sample("Deployment");
        old["metadata"]["namespace"] = json!("default");
        let mut new = old.clone();
        new["metadata"]["name"] = json!("b");
        new["spec"]["selector"]["matchLabels"]["x"] = json!("y");
        let fields: Vec<String> = validate_update("Deployment", &new, &old, true)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "metadata.name",
                "spec.template.metadata.labels",
                "spec.selector"
            ]
        );
    }

    #[test]
    fn go_map_rendering() {
        assert_eq!(go_string_map(None), "map[string]string(nil)");
        assert_eq!(
            go_string_map(Some(&json!({"b": "2", "a": "1"}))),
            "map[string]string{\"a\":\"1\", \"b\":\"2\"}"
        );
    }
}
