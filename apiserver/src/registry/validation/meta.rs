//! ObjectMeta: name, generateName, namespace, labels, annotations, finalizers, owner references.

use berth_api::names::{self, NameFormat};
use serde_json::Value;

use super::{immutable, invalid_each, items, required_with, str_of, too_long};
use crate::status::Cause;

/// The most bytes all annotations of one object may hold together (keys plus values).
pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Validates `metadata` (at `path`) of an object whose name has `format`.
pub(crate) fn validate_object_meta(
    meta: &Value,
    namespaced: bool,
    format: NameFormat,
    path: &str,
) -> Vec<Cause> {
    let mut errs = Vec::new();
    let generate_name = str_of(meta, "generateName");
    if let Some(g) = generate_name {
        invalid_each(
            &mut errs,
            &format!("{path}.generateName"),
            g,
            names::validate_generate_name(format, g),
        );
    }
    match str_of(meta, "name") {
        Some(name) => invalid_each(
            &mut errs,
            &format!("{path}.name"),
            name,
            names::validate_name(format, name, false),
        ),
        None => errs.push(required_with(
            format!("{path}.name"),
            "name or generateName is required",
        )),
    }
    let namespace = str_of(meta, "namespace");
    if namespaced {
        match namespace {
            Some(ns) => invalid_each(
                &mut errs,
                &format!("{path}.namespace"),
                ns,
                names::is_dns1123_label(ns),
            ),
            None => errs.push(Cause::required(format!("{path}.namespace"))),
        }
    } else if namespace.is_some() {
        errs.push(Cause::forbidden(
            format!("{path}.namespace"),
            "not allowed on this type",
        ));
    }
    super::nonnegative(&mut errs, meta, "generation", path);
    errs.extend(validate_labels(
        meta.get("labels"),
        &format!("{path}.labels"),
    ));
    errs.extend(validate_annotations(
        meta.get("annotations"),
        &format!("{path}.annotations"),
    ));
    errs.extend(validate_owner_references(
        items(meta, "ownerReferences"),
        &format!("{path}.ownerReferences"),
    ));
    for f in items(meta, "finalizers").iter().filter_map(Value::as_str) {
        invalid_each(
            &mut errs,
            &format!("{path}.finalizers"),
            f,
            names::is_qualified_name(f),
        );
    }
    errs
}

/// Label keys must be qualified names and values valid label values; the field is the map's.
pub(crate) fn validate_labels(labels: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    let Some(map) = labels.and_then(Value::as_object) else {
        return errs;
    };
    for (k, v) in map {
        invalid_each(&mut errs, path, k, names::is_qualified_name(k));
        let v = v.as_str().unwrap_or_default();
        invalid_each(&mut errs, path, v, names::is_valid_label_value(v));
    }
    errs
}

/// Annotation keys must be qualified names (checked lower-cased); all together at most 256 KiB.
pub(crate) fn validate_annotations(annotations: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    let Some(map) = annotations.and_then(Value::as_object) else {
        return errs;
    };
    let mut total = 0;
    for (k, v) in map {
        invalid_each(
            &mut errs,
            path,
            k,
            names::is_qualified_name(&k.to_lowercase()),
        );
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn validate_owner_references(refs: &[Value], path: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut controllers = Vec::new();
    for r in refs {
        let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let version = api_version.rsplit('/').next().unwrap_or("");
        let checks = [
            (
                "apiVersion",
                version.is_empty(),
                api_version,
                "version must not be empty",
            ),
            (
                "kind",
                str_of(r, "kind").is_none(),
                "",
                "kind must not be empty",
            ),
            (
                "name",
                str_of(r, "name").is_none(),
                "",
                "name must not be empty",
            ),
            (
                "uid",
                str_of(r, "uid").is_none(),
                "",
                "uid must not be empty",
            ),
        ];
        for (field, bad, value, msg) in checks {
            if bad {
                errs.push(Cause::invalid(
                    format!("{path}.{field}"),
                    &Value::from(value),
                    msg,
                ));
            }
        }
        if r.get("controller") == Some(&Value::Bool(true)) {
            controllers.push(str_of(r, "name").unwrap_or("").to_string());
        }
    }
    if controllers.len() > 1 {
        errs.push(Cause::invalid(
            path,
            &Value::from(refs.to_vec()),
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
    errs
}

/// Fields of metadata that may not change on update. An absent `uid` or `creationTimestamp`
/// in `new` means "unchanged" (Kubernetes copies them from the old object).
pub(crate) fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for field in ["name", "namespace"] {
        let n = new.get(field).and_then(Value::as_str).unwrap_or("");
        let o = old.get(field).and_then(Value::as_str).unwrap_or("");
        if n != o {
            errs.push(immutable(format!("metadata.{field}"), &Value::from(n)));
        }
    }
    for field in ["uid", "creationTimestamp"] {
        if let (Some(n), Some(o)) = (str_of(new, field), str_of(old, field)) {
            if n != o {
                errs.push(immutable(format!("metadata.{field}"), &Value::from(n)));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errs: &[Cause]) -> Vec<(&str, &str)> {
        errs.iter().map(|c| (c.field.as_str(), c.reason)).collect()
    }

    #[test]
    fn name_required_and_formats() {
        let errs = validate_object_meta(
            &json!({"namespace": "default"}),
            true,
            NameFormat::Dns1123Subdomain,
            "metadata",
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].display(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert!(validate_object_meta(
            &json!({"generateName": "web-", "name": "web-x1", "namespace": "d"}),
            true,
            NameFormat::Dns1123Subdomain,
            "metadata"
        )
        .is_empty());
        let errs = validate_object_meta(
            &json!({"name": "Web"}),
            false,
            NameFormat::Dns1123Subdomain,
            "metadata",
        );
        assert_eq!(fields(&errs), vec![("metadata.name", "FieldValueInvalid")]);
        assert!(errs[0]
            .message
            .starts_with("Invalid value: \"Web\": a lowercase RFC 1123 subdomain"));
        let errs = validate_object_meta(
            &json!({"name": "a.b", "namespace": "x"}),
            true,
            NameFormat::Dns1035Label,
            "metadata",
        );
        assert_eq!(fields(&errs), vec![("metadata.name", "FieldValueInvalid")]);
    }

    #[test]
    fn namespace_rules() {
        let errs = validate_object_meta(
            &json!({"name": "a"}),
            true,
            NameFormat::Dns1123Subdomain,
            "metadata",
        );
        assert_eq!(errs, vec![Cause::required("metadata.namespace")]);
        let errs = validate_object_meta(
            &json!({"name": "a", "namespace": "x"}),
            false,
            NameFormat::Dns1123Label,
            "metadata",
        );
        assert_eq!(
            errs[0].display(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        let errs = validate_object_meta(
            &json!({"name": "a", "namespace": "Bad"}),
            true,
            NameFormat::Dns1123Label,
            "metadata",
        );
        assert_eq!(
            fields(&errs),
            vec![("metadata.namespace", "FieldValueInvalid")]
        );
    }

    #[test]
    fn labels_annotations_owners() {
        let meta = json!({"name": "a", "namespace": "d",
            "labels": {"app": "ok", "bad key!": "v", "k": "bad value!"},
            "annotations": {"x/y/z": "v", "big": "a".repeat(TOTAL_ANNOTATION_SIZE_LIMIT)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r"}],
            "finalizers": ["example.com/f", "bad/f/x"]});
        let errs = validate_object_meta(&meta, true, NameFormat::Dns1123Subdomain, "metadata");
        assert_eq!(
            fields(&errs),
            vec![
                ("metadata.labels", "FieldValueInvalid"),
                ("metadata.labels", "FieldValueInvalid"),
                ("metadata.annotations", "FieldValueInvalid"),
                ("metadata.annotations", "FieldValueTooLong"),
                ("metadata.ownerReferences.uid", "FieldValueInvalid"),
                ("metadata.finalizers", "FieldValueInvalid"),
            ]
        );
        assert_eq!(errs[3].message, "Too long: must have at most 262144 bytes");
        assert_eq!(
            errs[4].message,
            "Invalid value: \"\": uid must not be empty"
        );
    }

    #[test]
    fn immutable_meta() {
        let old = json!({"name": "a", "namespace": "d", "uid": "1", "creationTimestamp": "t"});
        assert!(
            validate_object_meta_update(&json!({"name": "a", "namespace": "d"}), &old).is_empty()
        );
        let errs =
            validate_object_meta_update(&json!({"name": "b", "namespace": "e", "uid": "2"}), &old);
        assert_eq!(
            errs.iter().map(Cause::display).collect::<Vec<_>>(),
            vec![
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.namespace: Invalid value: \"e\": field is immutable",
                "metadata.uid: Invalid value: \"2\": field is immutable",
            ]
        );
    }
}
