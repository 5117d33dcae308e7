//! What the server itself sets on create and update: system metadata, status resets, generation.
//! Defaulting and validation proper live in `registry::{defaults, validation}`.

use serde_json::{json, Value};

use crate::object;
use crate::registry::ResourceInfo;

/// Whether a deleted object may go now: no finalizer left (for a namespace, in its metadata nor
/// its spec).
pub fn finalized(info: &ResourceInfo, obj: &Value) -> bool {
    let spec_finalizers = info.kind == "Namespace"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    object::finalizers(obj).is_empty() && !spec_finalizers
}

/// Kinds whose spec changes bump `metadata.generation` (controllers report observedGeneration).
pub fn has_generation(info: &ResourceInfo) -> bool {
    matches!(info.group, "apps" | "batch")
}

/// Metadata fields only the server sets.
const SYSTEM_FIELDS: &[&str] = &[
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "resourceVersion",
];

/// Sets what a new object gets from the server.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Value) {
    let meta = object::meta_mut(obj);
    for f in SYSTEM_FIELDS {
        meta.remove(*f);
    }
    meta.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    meta.insert(
        "creationTimestamp".into(),
        Value::String(object::now_rfc3339()),
    );
    if has_generation(info) {
        meta.insert("generation".into(), json!(1));
    }
    let map = obj.as_object_mut().expect("meta_mut made an object");
    match info.kind {
        // Defaulting fills in the pod's phase and QoS class.
        "Pod" => {
            map.insert("status".into(), json!({}));
        }
        "Namespace" => {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
        "Service" => {
            map.insert("status".into(), json!({"loadBalancer": {}}));
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" => {
            map.insert("status".into(), json!({}));
        }
        // Users may not set a claim's or volume's status; defaulting makes the phase Pending.
        "PersistentVolumeClaim" | "PersistentVolume" => {
            map.insert("status".into(), json!({}));
        }
        // Approval and the certificate come only through the approval and status subresources.
        "CertificateSigningRequest" => {
            map.remove("status");
        }
        _ => {}
    }
}

/// Carries over from `old` what an update may not change, and applies the spec/status split:
/// the main resource ignores `.status`, the status subresource ignores everything else.
pub fn prepare_update(info: &ResourceInfo, new: &mut Value, old: &Value, status_only: bool) {
    if status_only {
        let status = new.get("status").cloned();
        *new = old.clone();
        let map = new
            .as_object_mut()
            .expect("stored objects are JSON objects");
        match status {
            Some(s) => map.insert("status".into(), s),
            None => map.remove("status"),
        };
        return;
    }
    let old_meta = object::meta(old).cloned().unwrap_or_default();
    let meta = object::meta_mut(new);
    for f in SYSTEM_FIELDS {
        match old_meta.get(*f) {
            Some(v) => meta.insert(f.to_string(), v.clone()),
            None => meta.remove(*f),
        };
    }
    if info.has_status {
        let map = new.as_object_mut().expect("meta_mut made an object");
        match old.get("status") {
            Some(s) => map.insert("status".into(), s.clone()),
            None => map.remove("status"),
        };
    }
    // A namespace's spec.finalizers change only through its `finalize` subresource.
    if info.kind == "Namespace" {
        match old.pointer("/spec/finalizers") {
            Some(f) => new["spec"]["finalizers"] = f.clone(),
            None => {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            }
        }
    }
    if has_generation(info) && !object::spec_equal(old, new) {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        object::meta_mut(new).insert("generation".into(), json!(generation));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    #[test]
    fn create_sets_system_fields_and_resets_status() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let mut obj = json!({"metadata": {"name": "d", "uid": "forged", "resourceVersion": "9"},
            "spec": {"replicas": 1}, "status": {"replicas": 5}});
        prepare_create(deploy, &mut obj);
        assert_ne!(obj["metadata"]["uid"], "forged");
        assert_eq!(obj["metadata"]["generation"], 1);
        assert!(obj["metadata"].get("resourceVersion").is_none());
        assert_eq!(obj["status"], json!({}));
    }

    #[test]
    fn update_splits_spec_and_status() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u", "generation": 3}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 2}, "status": {"replicas": 9}});
        prepare_update(deploy, &mut new, &old, false);
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["metadata"]["generation"], 4);
        assert_eq!(new["status"]["replicas"], 1);
        assert_eq!(new["metadata"]["labels"]["a"], "b");
        // Only a label changed: no new generation.
        let mut relabel = old.clone();
        relabel["metadata"]["labels"] = json!({"x": "y"});
        prepare_update(deploy, &mut relabel, &old, false);
        assert_eq!(relabel["metadata"]["generation"], 3);
        // The status subresource changes status and nothing else.
        let mut status = json!({"metadata": {"labels": {"z": "z"}}, "spec": {"replicas": 7}, "status": {"replicas": 2}});
        prepare_update(deploy, &mut status, &old, true);
        assert_eq!(status["spec"]["replicas"], 1);
        assert_eq!(status["status"]["replicas"], 2);
        assert!(status["metadata"].get("labels").is_none());
    }

    #[test]
    fn namespace_finalizers_change_only_through_finalize() {
        let ns = find("", "v1", "namespaces").unwrap();
        let old = json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}});
        let mut new =
            json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"finalizers": []}});
        prepare_update(ns, &mut new, &old, false);
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        assert!(!finalized(ns, &new));
        new["spec"]["finalizers"] = json!([]);
        assert!(finalized(ns, &new));
        let cm = find("", "v1", "configmaps").unwrap();
        assert!(!finalized(
            cm,
            &json!({"metadata": {"finalizers": ["a/b"]}})
        ));
        assert!(finalized(cm, &json!({"metadata": {}})));
    }
}
