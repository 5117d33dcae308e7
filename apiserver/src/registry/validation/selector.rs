//! `metav1.LabelSelector`: validation, matching, and its Go rendering in messages.

use serde_json::Value;

use super::{entries, items, meta::validate_labels, required_with};
use crate::status::Cause;

/// Validates a label selector at `path` (e.g. `spec.selector`).
pub(crate) fn validate_label_selector(sel: &Value, path: &str) -> Vec<Cause> {
    let mut errs = validate_labels(sel.get("matchLabels"), &format!("{path}.matchLabels"));
    for (i, expr) in items(sel, "matchExpressions").iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let op = expr.get("operator").and_then(Value::as_str).unwrap_or("");
        let values = items(expr, "values");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(required_with(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(Cause::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(Cause::invalid(
                format!("{p}.operator"),
                &Value::from(op),
                "not a valid selector operator",
            )),
        }
        let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
        super::invalid_each(
            &mut errs,
            &format!("{p}.key"),
            key,
            berth_api::names::is_qualified_name(key),
        );
    }
    errs
}

/// Whether the selector selects nothing in particular (no labels, no expressions).
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    entries(sel, "matchLabels").next().is_none() && items(sel, "matchExpressions").is_empty()
}

/// Whether `labels` (a JSON object, or absent) satisfy the selector.
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let by_labels = entries(sel, "matchLabels").all(|(k, v)| get(k) == v.as_str());
    let by_exprs = items(sel, "matchExpressions").iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = items(e, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let have = get(key);
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    by_labels && by_exprs
}

/// Go's `%#v` of a `v1.LabelSelector`, as Kubernetes prints it in `Invalid value` messages.
pub(crate) fn go_selector(sel: &Value) -> String {
    let labels = go_labels(sel.get("matchLabels"));
    let exprs = items(sel, "matchExpressions");
    let exprs = if exprs.is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let rendered: Vec<String> = exprs
            .iter()
            .map(|e| {
                let values = items(e, "values");
                let values = if values.is_empty() {
                    "[]string(nil)".to_string()
                } else {
                    let v: Vec<String> = values.iter().map(Value::to_string).collect();
                    format!("[]string{{{}}}", v.join(", "))
                };
                format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                    e.get("key").cloned().unwrap_or(Value::from("")),
                    e.get("operator").cloned().unwrap_or(Value::from("")),
                    values
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", rendered.join(", "))
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

fn go_labels(v: Option<&Value>) -> String {
    super::go_string_map(v.filter(|m| m.as_object().is_some_and(|m| !m.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matching() {
        let labels = json!({"app": "web", "tier": "fe"});
        assert!(selector_matches(
            &json!({"matchLabels": {"app": "web"}}),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"app": "db"}}),
            Some(&labels)
        ));
        let sel = json!({"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "x", "operator": "DoesNotExist"}]});
        assert!(selector_matches(&sel, Some(&labels)));
        assert!(!selector_matches(&sel, None));
        assert!(selector_is_empty(&json!({})));
        assert!(!selector_is_empty(&json!({"matchLabels": {"a": "b"}})));
    }

    #[test]
    fn validation_paths() {
        let errs = validate_label_selector(
            &json!({"matchLabels": {"a": "-bad"}, "matchExpressions": [
                {"key": "k", "operator": "In"},
                {"key": "k", "operator": "Exists", "values": ["x"]},
                {"key": "k", "operator": "Near"}]}),
            "spec.selector",
        );
        let fields: Vec<(&str, &str)> = errs.iter().map(|c| (c.field.as_str(), c.reason)).collect();
        assert_eq!(
            fields,
            vec![
                ("spec.selector.matchLabels", "FieldValueInvalid"),
                (
                    "spec.selector.matchExpressions[0].values",
                    "FieldValueRequired"
                ),
                (
                    "spec.selector.matchExpressions[1].values",
                    "FieldValueForbidden"
                ),
                (
                    "spec.selector.matchExpressions[2].operator",
                    "FieldValueInvalid"
                ),
            ]
        );
    }

    #[test]
    fn go_rendering() {
        assert_eq!(
            go_selector(&json!({"matchLabels": {"b": "2", "a": "1"}})),
            "v1.LabelSelector{MatchLabels:map[string]string{\"a\":\"1\", \"b\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
        );
        assert_eq!(
            go_selector(&json!({"matchExpressions": [{"key": "k", "operator": "In", "values": ["x"]}]})),
            "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"k\", Operator:\"In\", Values:[]string{\"x\"}}}}"
        );
    }
}
