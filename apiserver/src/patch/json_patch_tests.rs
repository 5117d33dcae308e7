use super::*;
use serde_json::json;

fn apply(doc: Value, patch: Value) -> Value {
    apply_json_patch(&doc, &patch).expect("patch applies")
}

fn error(doc: Value, patch: Value) -> PatchError {
    apply_json_patch(&doc, &patch).expect_err("patch must fail")
}

#[test]
fn rfc6902_appendix_a_successes() {
    let cases = [
        // A.1 add an object member
        (
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz", "value": "qux"}]),
            json!({"baz": "qux", "foo": "bar"}),
        ),
        // A.2 add an array element
        (
            json!({"foo": ["bar", "baz"]}),
            json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
            json!({"foo": ["bar", "qux", "baz"]}),
        ),
        // A.3 remove an object member
        (
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "remove", "path": "/baz"}]),
            json!({"foo": "bar"}),
        ),
        // A.4 remove an array element
        (
            json!({"foo": ["bar", "qux", "baz"]}),
            json!([{"op": "remove", "path": "/foo/1"}]),
            json!({"foo": ["bar", "baz"]}),
        ),
        // A.5 replace a value
        (
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
            json!({"baz": "boo", "foo": "bar"}),
        ),
        // A.6 move a value
        (
            json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
            json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
        ),
        // A.7 move an array element
        (
            json!({"foo": ["all", "grass", "cows", "eat"]}),
            json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
            json!({"foo": ["all", "cows", "eat", "grass"]}),
        ),
        // A.10 add a nested member object
        (
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
            json!({"foo": "bar", "child": {"grandchild": {}}}),
        ),
        // A.14 ~ escape ordering
        (
            json!({"/": 9, "~1": 10}),
            json!([{"op": "test", "path": "/~01", "value": 10}]),
            json!({"/": 9, "~1": 10}),
        ),
        // A.16 add an array value
        (
            json!({"foo": ["bar"]}),
            json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
            json!({"foo": ["bar", ["abc", "def"]]}),
        ),
    ];
    for (doc, patch, expected) in cases {
        assert_eq!(apply(doc, patch.clone()), expected, "{patch}");
    }
}

#[test]
fn test_operation_compares_structurally() {
    // A.8
    let doc = json!({"baz": "qux", "foo": ["a", 2, "c"]});
    let patch = json!([
        {"op": "test", "path": "/baz", "value": "qux"},
        {"op": "test", "path": "/foo/1", "value": 2.0}
    ]);
    assert_eq!(apply(doc.clone(), patch), doc);
    // A.9
    let err = error(
        json!({"baz": "qux"}),
        json!([{"op": "test", "path": "/baz", "value": "bar"}]),
    );
    assert_eq!(
        err,
        PatchError::JsonPatchTestFailed {
            index: 0,
            path: "/baz".into()
        }
    );
    assert_eq!(err.to_string(), "testing value /baz failed: test failed");
    assert_eq!(err.status_code(), 422);
}

#[test]
fn missing_paths_fail_with_422() {
    // A.12 adding to a nonexistent target
    let err = error(
        json!({"foo": "bar"}),
        json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
    );
    assert_eq!(
        err.to_string(),
        r#"add operation does not apply: doc is missing path: "/baz/bat""#
    );
    assert_eq!(err.status_code(), 422);
    let err = error(json!({"a": 1}), json!([{"op": "remove", "path": "/b"}]));
    assert_eq!(
        err.to_string(),
        r#"remove operation does not apply: doc is missing key "b" at "/b""#
    );
    let err = error(
        json!({"a": [1]}),
        json!([{"op": "replace", "path": "/a/5", "value": 2}]),
    );
    assert_eq!(
        err.to_string(),
        "error in replace for path: '/a/5': unable to access invalid index: 5"
    );
}

#[test]
fn failure_leaves_nothing_half_applied() {
    let doc = json!({"a": 1});
    let patch = json!([
        {"op": "add", "path": "/b", "value": 2},
        {"op": "test", "path": "/a", "value": 2}
    ]);
    assert!(apply_json_patch(&doc, &patch).is_err());
    assert_eq!(doc, json!({"a": 1}));
}

#[test]
fn array_indices() {
    let doc = json!({"l": [1, 2, 3]});
    assert_eq!(
        apply(
            doc.clone(),
            json!([{"op": "add", "path": "/l/3", "value": 4}])
        ),
        json!({"l": [1, 2, 3, 4]})
    );
    assert_eq!(
        apply(doc.clone(), json!([{"op": "remove", "path": "/l/-1"}])),
        json!({"l": [1, 2]})
    );
    for bad in ["/l/4", "/l/01x", "/l/+1", "/l/"] {
        let err = error(doc.clone(), json!([{"op": "add", "path": bad, "value": 0}]));
        assert_eq!(err.status_code(), 422, "{bad}");
    }
    let err = error(doc, json!([{"op": "remove", "path": "/l/-"}]));
    assert_eq!(err.status_code(), 422);
}

#[test]
fn whole_document_and_copy() {
    assert_eq!(
        apply(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "", "value": {"b": 2}}])
        ),
        json!({"b": 2})
    );
    assert_eq!(
        apply(
            json!({"a": {"x": 1}}),
            json!([{"op": "copy", "from": "/a", "path": "/b"}])
        ),
        json!({"a": {"x": 1}, "b": {"x": 1}})
    );
    let err = error(
        json!({"a": {"x": 1}}),
        json!([{"op": "move", "from": "/a", "path": "/a/x/y"}]),
    );
    assert_eq!(err.status_code(), 422);
    let err = error(json!({"a": 1}), json!([{"op": "remove", "path": ""}]));
    assert_eq!(err.status_code(), 422);
}

#[test]
fn malformed_patches() {
    assert_eq!(
        error(json!({}), json!({"op": "add"})).status_code(),
        400,
        "not an array"
    );
    assert_eq!(error(json!({}), json!([1])).status_code(), 400);
    let err = error(json!({}), json!([{"op": "frob", "path": "/a"}]));
    assert_eq!(err.to_string(), "unexpected kind: frob");
    assert_eq!(err.status_code(), 422);
    let err = error(json!({}), json!([{"op": "add", "path": "/a"}]));
    assert_eq!(err.to_string(), "add operation missing value field");
    let err = error(json!({}), json!([{"op": "add", "path": "a", "value": 1}]));
    assert_eq!(err.status_code(), 422);
    let err = error(json!({"a~b": 1}), json!([{"op": "remove", "path": "/a~b"}]));
    assert!(err.to_string().contains("bad ~ escape"), "{err}");
    let too_many = Value::Array(vec![
        json!({"op": "test", "path": "", "value": {}});
        MAX_JSON_PATCH_OPERATIONS + 1
    ]);
    assert_eq!(error(json!({}), too_many).status_code(), 413);
}
