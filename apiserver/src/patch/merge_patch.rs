//! JSON merge patch (RFC 7386, `application/merge-patch+json`).
//!
//! Semantics are Kubernetes' (evanphx/json-patch v4 `MergePatch`), which differ from the RFC in
//! two corners: a patch that is `null` or a scalar is rejected (400) rather than replacing the
//! document, and a value that is put in place (nothing to merge with) has `null` members removed
//! at every depth, also inside arrays.

use serde_json::{Map, Value};

use super::PatchError;

/// Applies the merge patch `patch` to `original`.
pub fn apply_merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    match (original, patch) {
        (Value::Object(doc), Value::Object(changes)) => {
            let mut doc = doc.clone();
            merge_into(&mut doc, changes);
            Ok(Value::Object(doc))
        }
        (_, Value::Object(_) | Value::Array(_)) => Ok(pruned(patch)),
        _ => Err(PatchError::InvalidMergePatch),
    }
}

fn merge_into(doc: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, change) in patch {
        if change.is_null() {
            doc.remove(key);
            continue;
        }
        match doc.get_mut(key) {
            Some(Value::Object(current)) => match change {
                Value::Object(change) => merge_into(current, change),
                // An object replaced by a non-object: taken verbatim, nulls and all.
                other => {
                    doc.insert(key.clone(), other.clone());
                }
            },
            _ => {
                doc.insert(key.clone(), pruned(change));
            }
        }
    }
}

/// `value` without `null` object members, recursively (array elements that are `null` stay).
fn pruned(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), pruned(v)))
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.iter().map(pruned).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merge(original: Value, patch: Value) -> Value {
        apply_merge_patch(&original, &patch).expect("merge patch applies")
    }

    #[test]
    fn rfc7386_appendix_a() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (original, patch, expected) in cases {
            assert_eq!(
                merge(original.clone(), patch.clone()),
                expected,
                "{original} + {patch}"
            );
        }
    }

    #[test]
    fn scalar_and_null_patches_are_rejected_as_kubernetes_does() {
        for patch in [json!(null), json!("x"), json!(3), json!(true)] {
            assert_eq!(
                apply_merge_patch(&json!({"a": 1}), &patch),
                Err(PatchError::InvalidMergePatch)
            );
        }
    }

    #[test]
    fn nulls_inside_new_arrays_are_pruned_like_kubernetes() {
        let got = merge(
            json!({"spec": {"replicas": 1}}),
            json!({"spec": {"containers": [{"name": "a", "image": null}, null]}}),
        );
        assert_eq!(
            got,
            json!({"spec": {"replicas": 1, "containers": [{"name": "a"}, null]}})
        );
    }

    #[test]
    fn labels_merge_and_delete() {
        let got = merge(
            json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        );
        assert_eq!(
            got,
            json!({"metadata": {"name": "x", "labels": {"b": "2", "c": "3"}}})
        );
    }
}
