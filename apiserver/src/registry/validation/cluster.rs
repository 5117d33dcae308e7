//! Namespace, Node, ServiceAccount, Event and Lease.

use std::collections::HashSet;

use berth_api::names;
use serde_json::{json, Value};

use super::{invalid_each, items, str_of};
use crate::status::Cause;

pub(super) fn validate(kind: &str, obj: &Value) -> Vec<Cause> {
    match kind {
        "Namespace" => validate_namespace(obj),
        "Node" => validate_node(obj),
        "Event" => validate_event(obj),
        // A ServiceAccount has nothing beyond its metadata to check.
        _ => Vec::new(),
    }
}

fn validate_namespace(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let finalizers = obj.pointer("/spec/finalizers").and_then(Value::as_array);
    for f in finalizers.into_iter().flatten().filter_map(Value::as_str) {
        let msgs = names::is_qualified_name(f);
        if !msgs.is_empty() {
            invalid_each(&mut errs, "spec.finalizers", f, msgs);
        } else if !f.contains('/') && f != "kubernetes" {
            errs.push(Cause::invalid(
                "spec.finalizers",
                &json!(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

fn validate_node(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut seen = HashSet::new();
    for (i, taint) in items(spec, "taints").iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        let key = taint.get("key").and_then(Value::as_str).unwrap_or("");
        invalid_each(
            &mut errs,
            &format!("{p}.key"),
            key,
            names::is_qualified_name(key),
        );
        if let Some(v) = str_of(taint, "value") {
            invalid_each(
                &mut errs,
                &format!("{p}.value"),
                v,
                names::is_valid_label_value(v),
            );
        }
        let effect = taint.get("effect").and_then(Value::as_str).unwrap_or("");
        match effect {
            "" => errs.push(Cause::required(format!("{p}.effect"))),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.push(Cause::not_supported(
                format!("{p}.effect"),
                &json!(other),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
        if !seen.insert((key.to_string(), effect.to_string())) {
            errs.push(Cause::duplicate(p, taint));
        }
    }
    errs
}

/// Node spec fields that, once set, may only stay: podCIDR(s) and providerID.
pub(super) fn validate_node_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (key, field, what) in [
        ("podCIDR", "spec.podCIDRs", "podCIDR"),
        ("podCIDRs", "spec.podCIDRs", "podCIDR"),
        ("providerID", "spec.providerID", "providerID"),
    ] {
        let o = old
            .pointer(&format!("/spec/{key}"))
            .filter(|v| !is_blank(v));
        let n = new.pointer(&format!("/spec/{key}"));
        if let Some(o) = o {
            if n != Some(o) && !errs.iter().any(|c: &Cause| c.field == field) {
                errs.push(Cause::forbidden(
                    field,
                    format!("node updates may not change {what} except from \"\" to valid"),
                ));
            }
        }
    }
    errs
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// A core/v1 Event must live in its involved object's namespace (cluster-scoped objects' events
/// live in "default" or in no namespace).
fn validate_event(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let event_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved = obj.get("involvedObject").unwrap_or(&Value::Null);
    let involved_ns = involved
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let agree = if involved_ns.is_empty() {
        event_ns.is_empty() || event_ns == "default"
    } else {
        event_ns == involved_ns
    };
    if !agree {
        errs.push(Cause::invalid(
            "involvedObject.namespace",
            &json!(involved_ns),
            "does not match event.namespace",
        ));
    }
    if let Some(c) = str_of(obj, "reportingComponent") {
        invalid_each(
            &mut errs,
            "reportingComponent",
            c,
            names::is_qualified_name(c),
        );
    }
    errs
}

pub(super) fn validate_lease(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if let Some(d) = spec.get("leaseDurationSeconds").and_then(Value::as_i64) {
        if d <= 0 {
            errs.push(Cause::invalid(
                "spec.leaseDurationSeconds",
                &json!(d),
                "must be greater than 0",
            ));
        }
    }
    super::nonnegative(&mut errs, spec, "leaseTransitions", "spec");
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::display).collect()
    }

    #[test]
    fn namespace_finalizers() {
        assert_eq!(
            validate_namespace(&json!({"spec": {"finalizers": ["kubernetes", "x.io/y"]}})),
            vec![]
        );
        assert_eq!(
            shown(&validate_namespace(&json!({"spec": {"finalizers": ["custom"]}}))),
            vec!["spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"]
        );
    }

    #[test]
    fn node_taints_and_updates() {
        let errs = validate_node(&json!({"spec": {"taints": [
            {"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"},
            {"key": "b", "effect": "Sometimes"}, {"key": "c"}]}}));
        let fields: Vec<(&str, &str)> = errs.iter().map(|c| (c.field.as_str(), c.reason)).collect();
        assert_eq!(
            fields,
            vec![
                ("spec.taints[1]", "FieldValueDuplicate"),
                ("spec.taints[2].effect", "FieldValueNotSupported"),
                ("spec.taints[3].effect", "FieldValueRequired"),
            ]
        );
        let old = json!({"spec": {"podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.0.0/24"]}});
        assert_eq!(validate_node_update(&old.clone(), &old), vec![]);
        assert_eq!(validate_node_update(&old, &json!({"spec": {}})), vec![]);
        let new = json!({"spec": {"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.1.0/24"]}});
        assert_eq!(
            shown(&validate_node_update(&new, &old)),
            vec!["spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"]
        );
    }

    #[test]
    fn events() {
        let ok = json!({"metadata": {"namespace": "default"}, "involvedObject": {"kind": "Node", "name": "n"}});
        assert_eq!(validate_event(&ok), vec![]);
        let ok = json!({"metadata": {"namespace": "a"}, "involvedObject": {"kind": "Pod", "namespace": "a"}});
        assert_eq!(validate_event(&ok), vec![]);
        let bad = json!({"metadata": {"namespace": "a"}, "involvedObject": {"kind": "Pod", "namespace": "b"}});
        assert_eq!(
            shown(&validate_event(&bad)),
            vec!["involvedObject.namespace: Invalid value: \"b\": does not match event.namespace"]
        );
    }

    #[test]
    fn leases() {
        assert_eq!(
            validate_lease(&json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})),
            vec![]
        );
        assert_eq!(
            shown(&validate_lease(
                &json!({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}})
            )),
            vec![
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }
}
