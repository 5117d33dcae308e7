//! Helpers over objects as JSON: metadata access, storage keys, timestamps.

use serde_json::{Map, Value};

use crate::registry::ResourceInfo;

/// The storage key of one object.
pub fn key(info: &ResourceInfo, namespace: &str, name: &str) -> String {
    if info.namespaced {
        format!("{}{}/{}", info.key_prefix(), namespace, name)
    } else {
        format!("{}{}", info.key_prefix(), name)
    }
}

/// The key prefix that scopes a list: the whole resource, or one namespace of it.
pub fn scope_prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if info.namespaced => format!("{}{}/", info.key_prefix(), ns),
        _ => info.key_prefix(),
    }
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// `metadata`, created if missing (and replaced if it is not an object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_resource_version(obj: &mut Value, revision: i64) {
    meta_mut(obj).insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
}

/// The current time as Kubernetes writes it: RFC 3339, UTC, whole seconds.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    berth_api::time::format_time(t)
}

/// Everything but `metadata` and `status`: what a spec change means for `generation`.
pub fn spec_equal(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m.remove("kind");
        m.remove("apiVersion");
        m
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;
    use serde_json::json;

    #[test]
    fn keys_and_scopes() {
        let pods = find("", "v1", "pods").unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(key(pods, "default", "p"), "/registry/core/pods/default/p");
        assert_eq!(key(nodes, "", "n1"), "/registry/core/nodes/n1");
        assert_eq!(scope_prefix(pods, Some("a")), "/registry/core/pods/a/");
        assert_eq!(scope_prefix(pods, None), "/registry/core/pods/");
        assert_eq!(scope_prefix(nodes, Some("a")), "/registry/core/nodes/");
    }

    #[test]
    fn spec_equality_ignores_metadata_and_status() {
        let a = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let b = json!({"metadata": {}, "spec": {"x": 1}, "status": {"y": 2}});
        let c = json!({"metadata": {}, "spec": {"x": 2}});
        assert!(spec_equal(&a, &b));
        assert!(!spec_equal(&a, &c));
    }

    #[test]
    fn timestamps_have_kubernetes_shape() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && t.len() == 20, "{t}");
    }
}
