//! Unknown-field detection for `fieldValidation`: which fields of a request body the schema of
//! its kind does not know, named the way Kubernetes' strict decoder names them
//! (`spec.template.spec.containers[0].imagee`).
//!
//! The schemas are compiled once into a flat table of shapes, so a check is one walk over the
//! object with a hash lookup per field; no JSON Schema is interpreted per request.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::schemas::{catalog, COMPONENTS};

/// What a schema says about the fields under it.
#[derive(Debug)]
enum Shape {
    /// Anything goes: free-form objects (RawExtension, FieldsV1), preserve-unknown-fields.
    Any,
    /// A scalar (or a scalar-or-string union); has no fields.
    Leaf,
    /// A struct (named fields) and/or a map (`values` for every other key).
    Object {
        fields: HashMap<String, usize>,
        values: Option<usize>,
    },
    Array(usize),
}

struct Index {
    by_name: HashMap<String, usize>,
    shapes: Vec<Shape>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let definitions = &catalog().definitions;
        let mut index = Index {
            by_name: HashMap::new(),
            shapes: Vec::new(),
        };
        // Reserve a slot per definition first so references (and cycles, e.g. JSONSchemaProps)
        // resolve to a slot that is filled in below.
        for name in definitions.keys() {
            index.by_name.insert(name.clone(), index.shapes.len());
            index.shapes.push(Shape::Any);
        }
        for (name, schema) in definitions {
            let shape = index.compile(schema);
            let slot = index.by_name[name];
            index.shapes[slot] = shape;
        }
        index
    })
}

impl Index {
    /// The slot of a (sub)schema: a referenced definition's, or a new one for an inline schema.
    fn slot(&mut self, schema: &Value) -> usize {
        if let Some(name) = reference(schema) {
            if let Some(slot) = self.by_name.get(name) {
                return *slot;
            }
        }
        let shape = self.compile(schema);
        self.shapes.push(shape);
        self.shapes.len() - 1
    }

    fn compile(&mut self, schema: &Value) -> Shape {
        if schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Shape::Any;
        }
        let values = match schema.get("additionalProperties") {
            Some(Value::Bool(true)) => return Shape::Any,
            Some(v @ Value::Object(_)) => Some(self.slot(v)),
            _ => None,
        };
        if let Some(Value::Object(props)) = schema.get("properties") {
            let fields = props
                .iter()
                .map(|(k, v)| (k.clone(), self.slot(v)))
                .collect();
            return Shape::Object { fields, values };
        }
        if values.is_some() {
            return Shape::Object {
                fields: HashMap::new(),
                values,
            };
        }
        if let Some(items) = schema.get("items") {
            return Shape::Array(self.slot(items));
        }
        if reference(schema).is_some() {
            // A reference to a definition that does not exist: nothing to check against.
            return Shape::Any;
        }
        if is_union(schema) {
            return Shape::Leaf;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") | None => Shape::Any,
            Some(_) => Shape::Leaf,
        }
    }
}

fn is_union(schema: &Value) -> bool {
    schema.get("oneOf").is_some() || schema.get("anyOf").is_some()
}

/// The definition name a schema points to: `{"$ref"}` or Kubernetes' `{"allOf": [{"$ref"}]}`.
fn reference(schema: &Value) -> Option<&str> {
    let target = schema.get("$ref").or_else(|| {
        let all = schema.get("allOf")?.as_array()?;
        match all.as_slice() {
            [only] => only.get("$ref"),
            _ => None,
        }
    })?;
    target.as_str()?.strip_prefix(COMPONENTS)
}

/// The fields of `obj` that the schema of `definition` does not know, as field paths
/// ("spec.replica", "spec.template.spec.containers[0].foo"). An unknown definition checks
/// nothing and returns no paths.
pub fn find_unknown_fields(definition: &str, obj: &Value) -> Vec<String> {
    let index = index();
    let mut out = Vec::new();
    if let Some(slot) = index.by_name.get(definition) {
        let mut path = String::new();
        index.find(*slot, obj, &mut path, &mut out);
    }
    out
}

/// Drops the fields [`find_unknown_fields`] would report (what `Ignore` and `Warn` persist).
pub fn prune_unknown_fields(definition: &str, obj: &mut Value) {
    let index = index();
    if let Some(slot) = index.by_name.get(definition) {
        index.prune(*slot, obj);
    }
}

/// `unknown field "spec.foo"`: one warning (Warn) or one part of the Strict error.
pub fn unknown_field_message(path: &str) -> String {
    format!("unknown field \"{path}\"")
}

/// `strict decoding error: unknown field "spec.foo", unknown field "spec.bar"`, the message of
/// the BadRequest Kubernetes returns under `fieldValidation=Strict`.
pub fn strict_decoding_error(paths: &[String]) -> String {
    let parts: Vec<String> = paths.iter().map(|p| unknown_field_message(p)).collect();
    format!("strict decoding error: {}", parts.join(", "))
}

fn push_field(path: &mut String, field: &str) -> usize {
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(field);
    len
}

impl Index {
    fn find(&self, slot: usize, value: &Value, path: &mut String, out: &mut Vec<String>) {
        match (&self.shapes[slot], value) {
            (Shape::Object { fields, values }, Value::Object(map)) => {
                for (key, child) in map {
                    let len = push_field(path, key);
                    match fields.get(key).or(values.as_ref()) {
                        Some(next) => self.find(*next, child, path, out),
                        None => out.push(path.clone()),
                    }
                    path.truncate(len);
                }
            }
            (Shape::Array(item), Value::Array(list)) => {
                for (i, child) in list.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.find(*item, child, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn prune(&self, slot: usize, value: &mut Value) {
        match (&self.shapes[slot], value) {
            (Shape::Object { fields, values }, Value::Object(map)) => {
                let known = |key: &String| fields.contains_key(key) || values.is_some();
                map.retain(|key, _| known(key));
                for (key, child) in map.iter_mut() {
                    if let Some(next) = fields.get(key).or(values.as_ref()) {
                        self.prune(*next, child);
                    }
                }
            }
            (Shape::Array(item), Value::Array(list)) => {
                list.iter_mut().for_each(|child| self.prune(*item, child));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {
                "replica": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "a", "image": "nginx"},
                            {
                                "name": "b",
                                "imagee": "nginx",
                                "resources": {"limits": {"cpu": "500m", "memory": 1024}},
                                "ports": [{"containerPort": 80, "protocl": "TCP"}],
                            },
                        ],
                    },
                },
            },
        })
    }

    #[test]
    fn deployment_unknown_fields_have_kubernetes_paths() {
        assert_eq!(
            sorted(find_unknown_fields(DEPLOYMENT, &deployment())),
            vec![
                "spec.replica",
                "spec.template.spec.containers[1].imagee",
                "spec.template.spec.containers[1].ports[0].protocl",
            ]
        );
    }

    #[test]
    fn known_objects_have_no_unknown_fields() {
        let mut d = deployment();
        d["spec"].as_object_mut().unwrap().remove("replica");
        let c = &mut d["spec"]["template"]["spec"]["containers"][1];
        c.as_object_mut().unwrap().remove("imagee");
        c["ports"][0].as_object_mut().unwrap().remove("protocl");
        assert!(find_unknown_fields(DEPLOYMENT, &d).is_empty());
    }

    #[test]
    fn configmap_data_is_a_map() {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "annotations": {"x": "y"}},
            "data": {"anything": "goes", "spec.foo": "bar"},
            "binaryData": {"k": "aGk="},
        });
        assert!(find_unknown_fields("io.k8s.api.core.v1.ConfigMap", &cm).is_empty());
        let bad = json!({"kind": "ConfigMap", "datta": {}});
        assert_eq!(
            find_unknown_fields("io.k8s.api.core.v1.ConfigMap", &bad),
            vec!["datta"]
        );
    }

    #[test]
    fn pod_unknown_fields_in_lists_and_metadata() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "p", "nmespace": "x",
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:x": {}}}}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "n", "uid": "u", "bogus": 1}],
            },
            "spec": {
                "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "valu": "1"}]}],
                "volumes": [{"name": "v", "emptyDir": {"medium": "", "size": "1Gi"}}],
                "nodeSelector": {"disk": "ssd"},
            },
            "status": {"phase": "Running", "hostIPs": [{"ip": "10.0.0.1", "x": 1}]},
        });
        assert_eq!(
            sorted(find_unknown_fields("io.k8s.api.core.v1.Pod", &pod)),
            vec![
                "metadata.nmespace",
                "metadata.ownerReferences[0].bogus",
                "spec.containers[0].env[0].valu",
                "spec.volumes[0].emptyDir.size",
                "status.hostIPs[0].x",
            ]
        );
    }

    #[test]
    fn prune_drops_exactly_the_unknown_fields() {
        let mut d = deployment();
        prune_unknown_fields(DEPLOYMENT, &mut d);
        assert!(find_unknown_fields(DEPLOYMENT, &d).is_empty());
        assert!(d["spec"].get("replica").is_none());
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
        let b = &d["spec"]["template"]["spec"]["containers"][1];
        assert_eq!(b["name"], "b");
        assert_eq!(b["resources"]["limits"]["memory"], 1024);
        assert_eq!(b["ports"][0], json!({"containerPort": 80}));
    }

    #[test]
    fn unknown_definition_checks_nothing() {
        assert!(find_unknown_fields("io.example.Nope", &json!({"a": 1})).is_empty());
    }

    #[test]
    fn messages_match_kubernetes() {
        assert_eq!(
            unknown_field_message("spec.foo"),
            "unknown field \"spec.foo\""
        );
        assert_eq!(
            strict_decoding_error(&["spec.foo".into(), "spec.bar".into()]),
            "strict decoding error: unknown field \"spec.foo\", unknown field \"spec.bar\""
        );
    }
}
