//! core/v1 PersistentVolumeClaim and PersistentVolume: Kubernetes' main rules, with its field
//! paths and messages (`pkg/apis/core/validation`).

use berth_api::{names, Quantity};
use serde_json::{json, Map, Value};

use super::pod::QUANTITY_FORMAT;
use super::selector::validate_label_selector;
use super::{immutable, invalid_each, items, required_with, str_of};
use crate::status::Cause;

/// Sorted, as Kubernetes lists them in `Unsupported value` messages.
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];

const CLAIM_SPEC_IMMUTABLE: &str = "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims";

/// The members of `PersistentVolumeSource`, in the order Kubernetes counts them: the second one
/// found is the one reported.
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "flocker",
    "nfs",
    "rbd",
    "quobyte",
    "cephfs",
    "iscsi",
    "cinder",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

fn spec(obj: &Value) -> &Value {
    obj.get("spec").unwrap_or(&Value::Null)
}

/// The quantity at `key` of `map` as text (a number is accepted as its JSON rendering).
fn quantity_text(map: &Value, key: &str) -> Option<String> {
    map.get(key).filter(|v| !v.is_null()).map(|q| match q {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// A storage quantity that must parse and be positive (`ValidatePositiveQuantityValue`).
fn positive_quantity(text: &str, path: &str, errs: &mut Vec<Cause>) -> Option<Quantity> {
    match Quantity::parse(text) {
        Err(_) => {
            errs.push(Cause::invalid(path, &json!(text), QUANTITY_FORMAT));
            None
        }
        Ok(q) if q.signum() <= 0 => {
            errs.push(Cause::invalid(
                path,
                &json!(q.to_string()),
                "must be greater than zero",
            ));
            None
        }
        Ok(q) => Some(q),
    }
}

/// `required_detail`: what a missing list's `Required value` says (claims explain, volumes don't).
fn access_modes(spec: &Value, path: &str, required_detail: Option<&str>, errs: &mut Vec<Cause>) {
    let modes = items(spec, "accessModes");
    if modes.is_empty() {
        let field = format!("{path}.accessModes");
        errs.push(match required_detail {
            Some(detail) => required_with(field, detail),
            None => Cause::required(field),
        });
    }
    let (mut once_pod, mut other) = (false, false);
    for mode in modes {
        let m = mode.as_str().unwrap_or_default();
        if !ACCESS_MODES.contains(&m) {
            errs.push(Cause::not_supported(
                format!("{path}.accessModes"),
                mode,
                ACCESS_MODES,
            ));
        } else if m == "ReadWriteOncePod" {
            once_pod = true;
        } else {
            other = true;
        }
    }
    if once_pod && other {
        errs.push(Cause::forbidden(
            format!("{path}.accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// `storageClassName` and `volumeMode`, checked alike for claims and volumes.
fn class_and_mode(spec: &Value, path: &str, errs: &mut Vec<Cause>) {
    if let Some(class) = str_of(spec, "storageClassName") {
        invalid_each(
            errs,
            &format!("{path}.storageClassName"),
            class,
            names::is_dns1123_subdomain(class),
        );
    }
    if let Some(mode) = spec.get("volumeMode").filter(|m| !m.is_null()) {
        if !VOLUME_MODES.contains(&mode.as_str().unwrap_or_default()) {
            errs.push(Cause::not_supported(
                format!("{path}.volumeMode"),
                mode,
                VOLUME_MODES,
            ));
        }
    }
}

/// PersistentVolumeClaim: access modes, a positive storage request, class, mode, selector.
pub(super) fn validate_persistent_volume_claim(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = spec(obj);
    access_modes(
        spec,
        "spec",
        Some("at least 1 access mode is required"),
        &mut errs,
    );
    if let Some(sel) = spec.get("selector").filter(|s| s.is_object()) {
        errs.extend(validate_label_selector(sel, "spec.selector"));
    }
    let requests = spec.pointer("/resources/requests").unwrap_or(&Value::Null);
    match quantity_text(requests, "storage") {
        None => errs.push(Cause::required("spec.resources[storage]")),
        Some(text) => {
            positive_quantity(&text, "spec.resources[storage]", &mut errs);
        }
    }
    class_and_mode(spec, "spec", &mut errs);
    if let Some(class) = str_of(spec, "volumeAttributesClassName") {
        invalid_each(
            &mut errs,
            "spec.volumeAttributesClassName",
            class,
            names::is_dns1123_subdomain(class),
        );
    }
    errs
}

fn storage_request(spec: &Value) -> Option<Quantity> {
    let requests = spec.pointer("/resources/requests")?;
    Quantity::parse(&quantity_text(requests, "storage")?).ok()
}

/// A claim's spec is fixed once created, except: `volumeName` may be set once, the storage
/// request of a bound claim may grow, and `volumeAttributesClassName` may change (not to unset).
pub(super) fn validate_persistent_volume_claim_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let (new_spec, old_spec) = (spec(new), spec(old));
    let mut new_cmp = new_spec.as_object().cloned().unwrap_or_default();
    let mut old_cmp = old_spec.as_object().cloned().unwrap_or_default();
    if str_of(old_spec, "volumeName").is_none() {
        copy_key(&new_cmp, &mut old_cmp, "volumeName");
    }
    let bound = new.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    if bound {
        let old_storage = old_spec.pointer("/resources/requests/storage").cloned();
        if let Some(requests) = new_cmp
            .get_mut("resources")
            .and_then(|r| r.get_mut("requests"))
            .and_then(Value::as_object_mut)
        {
            match old_storage {
                Some(s) => requests.insert("storage".into(), s),
                None => requests.remove("storage"),
            };
        }
    }
    copy_key(&old_cmp, &mut new_cmp, "volumeAttributesClassName");
    if new_cmp != old_cmp {
        errs.push(Cause::forbidden(
            "spec",
            format!("{CLAIM_SPEC_IMMUTABLE}\n{}", spec_diff(&old_cmp, &new_cmp)),
        ));
    }
    if let (Some(n), Some(o)) = (storage_request(new_spec), storage_request(old_spec)) {
        if n < o {
            errs.push(Cause::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            ));
        }
    }
    if new_spec.get("volumeMode") != old_spec.get("volumeMode") {
        errs.push(immutable(
            "volumeMode",
            new_spec.get("volumeMode").unwrap_or(&Value::Null),
        ));
    }
    let (new_vac, old_vac) = (
        new_spec
            .get("volumeAttributesClassName")
            .filter(|v| !v.is_null()),
        old_spec
            .get("volumeAttributesClassName")
            .filter(|v| !v.is_null()),
    );
    if old_vac.is_some() && new_vac != old_vac {
        let path = "spec.volumeAttributesClassName";
        match new_vac.and_then(Value::as_str) {
            None => errs.push(Cause::forbidden(
                path,
                "update from non-nil value to nil is forbidden",
            )),
            Some("") => errs.push(Cause::forbidden(
                path,
                "update from non-nil value to an empty string is forbidden",
            )),
            Some(_) => {}
        }
    }
    errs
}

/// Makes `to[key]` what `from[key]` is (present or absent).
fn copy_key(from: &Map<String, Value>, to: &mut Map<String, Value>, key: &str) {
    match from.get(key) {
        Some(v) => to.insert(key.into(), v.clone()),
        None => to.remove(key),
    };
}

/// The changed spec members, one `-` and one `+` line each, like the diff Kubernetes appends.
fn spec_diff(old: &Map<String, Value>, new: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        if o == n {
            continue;
        }
        if let Some(o) = o {
            out.push(format!("-\t{k}: {o}"));
        }
        if let Some(n) = n {
            out.push(format!("+\t{k}: {n}"));
        }
    }
    out.join("\n")
}

/// PersistentVolume: access modes, a positive storage capacity, reclaim policy, exactly one
/// volume source (with the basic checks of hostPath, local, nfs and csi), class and mode.
pub(super) fn validate_persistent_volume(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = spec(obj);
    access_modes(spec, "spec", None, &mut errs);
    let capacity = spec
        .get("capacity")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if capacity.is_empty() {
        errs.push(Cause::required("spec.capacity"));
    }
    if !capacity.contains_key("storage") || capacity.len() > 1 {
        let shown = if capacity.is_empty() {
            "core.ResourceList(nil)".to_string()
        } else {
            Value::Object(capacity.clone()).to_string()
        };
        errs.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: {shown}: supported values: \"storage\""),
            field: "spec.capacity".into(),
        });
    }
    let capacity = Value::Object(capacity);
    for name in capacity.as_object().into_iter().flat_map(|m| m.keys()) {
        if let Some(text) = quantity_text(&capacity, name) {
            positive_quantity(&text, &format!("spec.capacity[{name}]"), &mut errs);
        }
    }
    if let Some(policy) = spec
        .get("persistentVolumeReclaimPolicy")
        .filter(|p| p.as_str().is_some_and(|s| !s.is_empty()))
    {
        if !RECLAIM_POLICIES.contains(&policy.as_str().unwrap_or_default()) {
            errs.push(Cause::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                policy,
                RECLAIM_POLICIES,
            ));
        }
    }
    volume_source(spec, &mut errs);
    class_and_mode(spec, "spec", &mut errs);
    errs
}

fn volume_source(spec: &Value, errs: &mut Vec<Cause>) {
    let mut found = 0;
    for key in VOLUME_SOURCES {
        let Some(source) = spec.get(*key).filter(|s| !s.is_null()) else {
            continue;
        };
        // Kubernetes never counts flexVolume as a second source, only as one.
        if found > 0 && *key != "flexVolume" {
            errs.push(Cause::forbidden(
                format!("spec.{key}"),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        found += 1;
        let path = format!("spec.{key}");
        match *key {
            "hostPath" | "local" => {
                local_path(source, &path, errs);
                if *key == "local" && spec.get("nodeAffinity").is_none_or(Value::is_null) {
                    errs.push(required_with(
                        "spec.nodeAffinity",
                        "Local volume requires node affinity",
                    ));
                }
            }
            "nfs" => {
                if str_of(source, "server").is_none() {
                    errs.push(Cause::required(format!("{path}.server")));
                }
                match str_of(source, "path") {
                    None => errs.push(Cause::required(format!("{path}.path"))),
                    Some(p) if !p.starts_with('/') => errs.push(Cause::invalid(
                        format!("{path}.path"),
                        &json!(p),
                        "must be an absolute path",
                    )),
                    Some(_) => {}
                }
            }
            "csi" => {
                if str_of(source, "driver").is_none() {
                    errs.push(Cause::required(format!("{path}.driver")));
                }
                if str_of(source, "volumeHandle").is_none() {
                    errs.push(Cause::required(format!("{path}.volumeHandle")));
                }
            }
            _ => {}
        }
    }
    if found == 0 {
        errs.push(required_with("spec", "must specify a volume type"));
    }
}

/// hostPath and local: a path without `..` elements.
fn local_path(source: &Value, path: &str, errs: &mut Vec<Cause>) {
    match str_of(source, "path") {
        None => errs.push(Cause::required(format!("{path}.path"))),
        Some(p) if p.split('/').any(|part| part == "..") => errs.push(Cause::invalid(
            format!("{path}.path"),
            &json!(p),
            "must not contain '..'",
        )),
        Some(_) => {}
    }
}

/// A volume's source and its volumeMode are fixed once created.
pub(super) fn validate_persistent_volume_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let (new_spec, old_spec) = (spec(new), spec(old));
    let sources = |s: &Value| -> Map<String, Value> {
        VOLUME_SOURCES
            .iter()
            .filter_map(|k| Some((k.to_string(), s.get(*k).filter(|v| !v.is_null())?.clone())))
            .collect()
    };
    let (new_src, old_src) = (sources(new_spec), sources(old_spec));
    if new_src != old_src {
        errs.push(Cause::forbidden(
            "spec.persistentvolumesource",
            format!(
                "spec.persistentvolumesource is immutable after creation\n{}",
                spec_diff(&old_src, &new_src)
            ),
        ));
    }
    if new_spec.get("volumeMode") != old_spec.get("volumeMode") {
        errs.push(immutable(
            "volumeMode",
            new_spec.get("volumeMode").unwrap_or(&Value::Null),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::display).collect()
    }

    fn claim(spec: Value) -> Value {
        json!({"metadata": {"name": "data-web-0", "namespace": "default"}, "spec": spec})
    }

    fn good_claim() -> Value {
        claim(
            json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "1Gi"}}}),
        )
    }

    fn volume(spec: Value) -> Value {
        json!({"metadata": {"name": "pv0"}, "spec": spec})
    }

    #[test]
    fn claim_needs_access_modes() {
        assert!(validate_persistent_volume_claim(&good_claim()).is_empty());
        let none = claim(json!({"resources": {"requests": {"storage": "1Gi"}}}));
        assert_eq!(
            shown(&validate_persistent_volume_claim(&none)),
            vec!["spec.accessModes: Required value: at least 1 access mode is required"]
        );
    }

    #[test]
    fn claim_access_modes_come_from_the_supported_set() {
        let bad = claim(json!({"accessModes": ["ReadWriteSometimes"],
            "resources": {"requests": {"storage": "1Gi"}}}));
        assert_eq!(
            shown(&validate_persistent_volume_claim(&bad)),
            vec![concat!(
                r#"spec.accessModes: Unsupported value: "ReadWriteSometimes": supported values: "#,
                r#""ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod""#
            )]
        );
        let mixed = claim(json!({"accessModes": ["ReadWriteOncePod", "ReadOnlyMany"],
            "resources": {"requests": {"storage": "1Gi"}}}));
        assert_eq!(
            shown(&validate_persistent_volume_claim(&mixed)),
            vec![
                "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes"
            ]
        );
    }

    #[test]
    fn claim_needs_a_positive_storage_request() {
        let missing = claim(json!({"accessModes": ["ReadWriteOnce"]}));
        assert_eq!(
            shown(&validate_persistent_volume_claim(&missing)),
            vec!["spec.resources[storage]: Required value"]
        );
        let zero = claim(json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "0"}}}));
        assert_eq!(
            shown(&validate_persistent_volume_claim(&zero)),
            vec![r#"spec.resources[storage]: Invalid value: "0": must be greater than zero"#]
        );
        let garbage = claim(json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "lots"}}}));
        assert_eq!(
            validate_persistent_volume_claim(&garbage)[0].field,
            "spec.resources[storage]"
        );
    }

    #[test]
    fn claim_class_and_mode() {
        let bad = claim(
            json!({"accessModes": ["ReadWriteOnce"], "volumeMode": "Tape",
            "storageClassName": "Fast_SSD", "resources": {"requests": {"storage": "1Gi"}}}),
        );
        let fields: Vec<String> = validate_persistent_volume_claim(&bad)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, vec!["spec.storageClassName", "spec.volumeMode"]);
    }

    #[test]
    fn claim_spec_is_immutable() {
        let old = good_claim();
        let mut new = old.clone();
        new["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(
            shown(&validate_persistent_volume_claim_update(&new, &old)),
            vec![format!(
                "spec: Forbidden: {CLAIM_SPEC_IMMUTABLE}\n-\taccessModes: [\"ReadWriteOnce\"]\n+\taccessModes: [\"ReadWriteMany\"]"
            )]
        );
        let mut mode = old.clone();
        mode["spec"]["volumeMode"] = json!("Block");
        let errs = validate_persistent_volume_claim_update(&mode, &old);
        assert_eq!(
            errs.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
            vec!["spec", "volumeMode"]
        );
    }

    #[test]
    fn claim_volume_name_may_be_set_once() {
        let old = good_claim();
        let mut bound = old.clone();
        bound["spec"]["volumeName"] = json!("pv0");
        assert!(validate_persistent_volume_claim_update(&bound, &old).is_empty());
        let mut rebound = bound.clone();
        rebound["spec"]["volumeName"] = json!("pv1");
        assert_eq!(
            validate_persistent_volume_claim_update(&rebound, &bound)[0].field,
            "spec"
        );
    }

    #[test]
    fn bound_claim_storage_request_may_only_grow() {
        let mut old = good_claim();
        old["status"] = json!({"phase": "Bound"});
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(validate_persistent_volume_claim_update(&grown, &old).is_empty());
        let mut shrunk = old.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        assert_eq!(
            shown(&validate_persistent_volume_claim_update(&shrunk, &old)),
            vec![
                "spec.resources.requests.storage: Forbidden: field can not be less than previous value"
            ]
        );
        // Only a bound claim may be resized.
        let mut pending = good_claim();
        pending["status"] = json!({"phase": "Pending"});
        let mut resized = pending.clone();
        resized["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert_eq!(
            validate_persistent_volume_claim_update(&resized, &pending)[0].field,
            "spec"
        );
    }

    #[test]
    fn claim_volume_attributes_class_may_change_but_not_unset() {
        let mut old = good_claim();
        old["spec"]["volumeAttributesClassName"] = json!("gold");
        let mut changed = old.clone();
        changed["spec"]["volumeAttributesClassName"] = json!("silver");
        assert!(validate_persistent_volume_claim_update(&changed, &old).is_empty());
        let mut unset = old.clone();
        unset["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("volumeAttributesClassName");
        assert_eq!(
            shown(&validate_persistent_volume_claim_update(&unset, &old)),
            vec!["spec.volumeAttributesClassName: Forbidden: update from non-nil value to nil is forbidden"]
        );
    }

    #[test]
    fn volume_needs_capacity_and_access_modes() {
        let ok = volume(json!({"accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "10Gi"}, "hostPath": {"path": "/srv/pv0"}}));
        assert!(validate_persistent_volume(&ok).is_empty());
        let bare = volume(json!({"hostPath": {"path": "/srv/pv0"}}));
        assert_eq!(
            shown(&validate_persistent_volume(&bare)),
            vec![
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                r#"spec.capacity: Unsupported value: core.ResourceList(nil): supported values: "storage""#,
            ]
        );
        let zero = volume(json!({"accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "0"}, "hostPath": {"path": "/srv/pv0"}}));
        assert_eq!(
            shown(&validate_persistent_volume(&zero)),
            vec![r#"spec.capacity[storage]: Invalid value: "0": must be greater than zero"#]
        );
    }

    #[test]
    fn volume_needs_exactly_one_source() {
        let base = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}});
        let none = volume(base.clone());
        assert_eq!(
            shown(&validate_persistent_volume(&none)),
            vec!["spec: Required value: must specify a volume type"]
        );
        let mut two = base.clone();
        two["hostPath"] = json!({"path": "/a"});
        two["nfs"] = json!({"server": "nas", "path": "/export"});
        assert_eq!(
            shown(&validate_persistent_volume(&volume(two))),
            vec!["spec.nfs: Forbidden: may not specify more than 1 volume type"]
        );
    }

    #[test]
    fn volume_source_rules() {
        let base = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}});
        let with = |key: &str, source: Value| {
            let mut s = base.clone();
            s[key] = source;
            shown(&validate_persistent_volume(&volume(s)))
        };
        assert_eq!(
            with("hostPath", json!({"path": "/a/../b"})),
            vec![r#"spec.hostPath.path: Invalid value: "/a/../b": must not contain '..'"#]
        );
        assert_eq!(
            with("local", json!({"path": "/mnt/disk"})),
            vec!["spec.nodeAffinity: Required value: Local volume requires node affinity"]
        );
        assert_eq!(
            with("nfs", json!({"path": "export"})),
            vec![
                "spec.nfs.server: Required value",
                r#"spec.nfs.path: Invalid value: "export": must be an absolute path"#,
            ]
        );
        assert_eq!(
            with("csi", json!({"driver": "hostpath.csi.k8s.io"})),
            vec!["spec.csi.volumeHandle: Required value"]
        );
    }

    #[test]
    fn volume_reclaim_policy() {
        let pv = volume(
            json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/a"}, "persistentVolumeReclaimPolicy": "Keep"}),
        );
        assert_eq!(
            shown(&validate_persistent_volume(&pv)),
            vec![
                r#"spec.persistentVolumeReclaimPolicy: Unsupported value: "Keep": supported values: "Delete", "Recycle", "Retain""#
            ]
        );
    }

    #[test]
    fn volume_source_is_immutable() {
        let old = volume(
            json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/a"}}),
        );
        let mut grown = old.clone();
        grown["spec"]["capacity"]["storage"] = json!("2Gi");
        assert!(validate_persistent_volume_update(&grown, &old).is_empty());
        let mut moved = old.clone();
        moved["spec"]["hostPath"]["path"] = json!("/b");
        assert_eq!(
            shown(&validate_persistent_volume_update(&moved, &old)),
            vec![concat!(
                "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation\n",
                "-\thostPath: {\"path\":\"/a\"}\n+\thostPath: {\"path\":\"/b\"}"
            )]
        );
    }
}
