//! Property tests over all three engines: no panics on arbitrary (bounded) input, merge patch
//! is key-wise, and strategic merge patch never stores a directive.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{apply_json_patch, apply_merge_patch, apply_strategic_merge_patch};

/// Keys that make patches collide with documents and exercise every directive.
const KEYS: &[&str] = &[
    "metadata",
    "spec",
    "template",
    "containers",
    "finalizers",
    "env",
    "name",
    "image",
    "type",
    "labels",
    "strategy",
    "volumes",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$setElementOrder/finalizers",
    "$deleteFromPrimitiveList/finalizers",
    "$setElementOrder",
];

/// Strings that are also directive values and key values.
const WORDS: &[&str] = &["a", "b", "replace", "delete", "merge", "name", "-", "0"];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        Just(Value::from(1.5)),
        prop::sample::select(WORDS).prop_map(Value::from),
    ]
}

fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(keys), inner), 0..4).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<String, Value>>(),
                )
            }),
        ]
    })
}

/// Keys without directives, for documents as storage would hold them.
fn plain_keys() -> &'static [&'static str] {
    &KEYS[..12]
}

fn object(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(keys), json_value(keys)), 0..5).prop_map(
        |entries| {
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        },
    )
}

/// Whether any object key anywhere starts with `$`.
fn has_directive(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_directive(v)),
        Value::Array(list) => list.iter().any(has_directive),
        _ => false,
    }
}

const ROOTS: &[&str] = &[
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.PodSpec",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn merge_patch_never_panics(doc in json_value(KEYS), patch in json_value(KEYS)) {
        let _ = apply_merge_patch(&doc, &patch);
    }

    #[test]
    fn merge_patch_applies_key_by_key(doc in json_value(plain_keys()), patch in object(KEYS)) {
        let whole = apply_merge_patch(&doc, &patch).expect("object patches always apply");
        let mut stepwise = doc.clone();
        if let Value::Object(entries) = &patch {
            if entries.is_empty() {
                // An empty patch still turns a non-object document into an object.
                stepwise = apply_merge_patch(&stepwise, &patch).expect("applies");
            }
            for (key, value) in entries {
                let mut single = Map::new();
                single.insert(key.clone(), value.clone());
                stepwise = apply_merge_patch(&stepwise, &Value::Object(single)).expect("applies");
            }
        }
        prop_assert_eq!(whole, stepwise);
    }

    #[test]
    fn json_patch_never_panics(
        doc in json_value(KEYS),
        ops in prop::collection::vec(
            (
                prop::sample::select(&["add", "remove", "replace", "move", "copy", "test", "x"][..]),
                prop::collection::vec(
                    prop::sample::select(&["metadata", "name", "0", "1", "-", "-1", "~0", "~1", "a~"][..]),
                    0..4,
                ),
                prop::collection::vec(prop::sample::select(&["metadata", "0", "-"][..]), 0..3),
                json_value(KEYS),
            ),
            0..6,
        ),
    ) {
        let patch: Vec<Value> = ops
            .into_iter()
            .map(|(op, path, from, value)| {
                let pointer = |tokens: Vec<&str>| tokens.iter().map(|t| format!("/{t}")).collect::<String>();
                serde_json::json!({"op": op, "path": pointer(path), "from": pointer(from), "value": value})
            })
            .collect();
        let _ = apply_json_patch(&doc, &Value::Array(patch));
    }

    #[test]
    fn json_patch_never_panics_on_garbage(doc in json_value(KEYS), patch in json_value(KEYS)) {
        let _ = apply_json_patch(&doc, &patch);
    }

    #[test]
    fn strategic_never_panics_and_never_stores_directives(
        doc in object(plain_keys()),
        patch in object(KEYS),
        root in prop::sample::select(ROOTS),
    ) {
        if let Ok(result) = apply_strategic_merge_patch(&doc, &patch, root) {
            prop_assert!(!has_directive(&result), "directive leaked: {}", result);
        }
    }

    #[test]
    fn strategic_never_panics_on_any_json(
        doc in json_value(KEYS),
        patch in json_value(KEYS),
        root in prop::sample::select(ROOTS),
    ) {
        let _ = apply_strategic_merge_patch(&doc, &patch, root);
    }
}
