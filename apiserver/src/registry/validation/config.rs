//! ConfigMap and Secret: keys, sizes, typed secrets, the `immutable` flag.

use base64::Engine;
use berth_api::names;
use serde_json::{json, Value};

use super::{entries, immutable, str_of, too_long};
use crate::status::Cause;

/// The most bytes a ConfigMap's or Secret's data may hold.
pub(crate) const MAX_DATA_SIZE: usize = 1024 * 1024;

const IMMUTABLE_MESSAGE: &str = "field is immutable when `immutable` is set";

pub(super) fn validate_config_map(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut total = 0;
    for (section, other, duplicate_msg) in [
        (
            "data",
            "binaryData",
            "duplicate of key present in binaryData",
        ),
        ("binaryData", "data", "duplicate of key present in data"),
    ] {
        for (key, value) in entries(obj, section) {
            let path = format!("{section}[{key}]");
            let k = json!(key);
            errs.extend(
                names::is_config_map_key(key)
                    .into_iter()
                    .map(|m| Cause::invalid(&path, &k, m)),
            );
            if obj.get(other).and_then(|o| o.get(key)).is_some() {
                errs.push(Cause::invalid(&path, &k, duplicate_msg));
            }
            total += value.as_str().map_or(0, str::len);
        }
    }
    if total > MAX_DATA_SIZE {
        errs.push(too_long("", MAX_DATA_SIZE));
    }
    errs
}

pub(super) fn validate_secret(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut total = 0;
    for (key, value) in entries(obj, "data") {
        let path = format!("data[{key}]");
        let k = json!(key);
        errs.extend(
            names::is_config_map_key(key)
                .into_iter()
                .map(|m| Cause::invalid(&path, &k, m)),
        );
        total += value.as_str().map_or(0, decoded_len);
    }
    if total > MAX_DATA_SIZE {
        errs.push(too_long("data", MAX_DATA_SIZE));
    }
    let has = |key: &str| obj.get("data").and_then(|d| d.get(key)).is_some();
    let mut require = |key: &str| {
        if !has(key) {
            errs.push(Cause::required(format!("data[{key}]")));
        }
    };
    match obj.get("type").and_then(Value::as_str).unwrap_or("") {
        "kubernetes.io/dockercfg" => require(".dockercfg"),
        "kubernetes.io/dockerconfigjson" => require(".dockerconfigjson"),
        "kubernetes.io/ssh-auth" => require("ssh-privatekey"),
        "kubernetes.io/tls" => {
            require("tls.key");
            require("tls.crt");
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            require("username");
            require("password");
        }
        "kubernetes.io/service-account-token" => {
            let annotations = obj.pointer("/metadata/annotations").unwrap_or(&Value::Null);
            if str_of(annotations, "kubernetes.io/service-account.name").is_none() {
                errs.push(Cause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        _ => {}
    }
    errs
}

/// Bytes a base64 value decodes to (its length when it is not base64: the handler rejects it).
fn decoded_len(s: &str) -> usize {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_or(s.len(), |b| b.len())
}

/// With `immutable: true` set, neither the flag nor the data may change; a Secret's type never.
pub(super) fn validate_immutable_data(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    if new.get("type").is_some() || old.get("type").is_some() {
        let (n, o) = (new.get("type"), old.get("type"));
        if n != o {
            errs.push(immutable("type", n.unwrap_or(&Value::Null)));
        }
    }
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return errs;
    }
    if new.get("immutable") != Some(&Value::Bool(true)) {
        errs.push(Cause::forbidden("immutable", IMMUTABLE_MESSAGE));
    }
    let empty = json!({});
    for section in ["data", "binaryData"] {
        let n = new.get(section).filter(|v| !v.is_null()).unwrap_or(&empty);
        let o = old.get(section).filter(|v| !v.is_null()).unwrap_or(&empty);
        if n != o {
            errs.push(Cause::forbidden(section, IMMUTABLE_MESSAGE));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::display).collect()
    }

    #[test]
    fn config_map_keys_and_size() {
        assert_eq!(
            validate_config_map(&json!({"data": {"app.conf": "x"}})),
            vec![]
        );
        let errs = validate_config_map(
            &json!({"data": {"a b": "x", "k": "v"}, "binaryData": {"k": "AA=="}}),
        );
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["data[a b]", "data[k]", "binaryData[k]"]);
        assert_eq!(
            errs[1].message,
            "Invalid value: \"k\": duplicate of key present in binaryData"
        );
        let big = "x".repeat(MAX_DATA_SIZE + 1);
        assert_eq!(
            shown(&validate_config_map(&json!({"data": {"k": big}}))),
            vec!["Too long: must have at most 1048576 bytes"]
        );
    }

    #[test]
    fn secret_types() {
        assert_eq!(
            validate_secret(&json!({"type": "Opaque", "data": {"a": "YQ=="}})),
            vec![]
        );
        assert_eq!(
            shown(&validate_secret(
                &json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}})
            )),
            vec!["data[tls.key]: Required value"]
        );
        assert_eq!(
            shown(&validate_secret(
                &json!({"type": "kubernetes.io/service-account-token"})
            )),
            vec!["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        assert_eq!(
            shown(&validate_secret(&json!({"data": {"..x": "YQ=="}}))),
            vec!["data[..x]: Invalid value: \"..x\": must not start with '..'"]
        );
    }

    #[test]
    fn immutable_flag() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        assert_eq!(validate_immutable_data(&old.clone(), &old), vec![]);
        let new = json!({"immutable": false, "data": {"a": "2"}});
        assert_eq!(
            shown(&validate_immutable_data(&new, &old)),
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        let mutable = json!({"data": {"a": "1"}});
        assert_eq!(
            validate_immutable_data(&json!({"data": {"a": "2"}}), &mutable),
            vec![]
        );
        assert_eq!(
            shown(&validate_immutable_data(
                &json!({"type": "kubernetes.io/tls"}),
                &json!({"type": "Opaque"})
            )),
            vec!["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]
        );
    }
}
