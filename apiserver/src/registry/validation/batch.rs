//! batch/v1 Job.

use serde_json::{json, Value};

use super::pod::{job_restart_policy, validate_pod_template};
use super::selector::{go_selector, selector_matches, validate_label_selector};
use super::{go_string_map, immutable, invalid_rendered, nonnegative, required_with};
use crate::status::Cause;

/// Template fields a suspended Job that never started may still change (scheduling directives).
const MUTABLE_WHILE_SUSPENDED: &[(&str, &str)] = &[
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("spec", "nodeSelector"),
    ("spec", "affinity"),
    ("spec", "tolerations"),
    ("spec", "schedulingGates"),
];

pub(super) fn validate_job(obj: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let mut errs = Vec::new();
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        nonnegative(&mut errs, spec, key, "spec");
    }
    match spec
        .get("completionMode")
        .and_then(Value::as_str)
        .unwrap_or("NonIndexed")
    {
        "NonIndexed" => {}
        "Indexed" => {
            if spec.get("completions").is_none_or(Value::is_null) {
                errs.push(required_with(
                    "spec.completions",
                    "when completion mode is Indexed",
                ));
            }
        }
        other => errs.push(Cause::not_supported(
            "spec.completionMode",
            &json!(other),
            &["NonIndexed", "Indexed"],
        )),
    }
    if let Some(p) = spec.get("podReplacementPolicy").and_then(Value::as_str) {
        if p != "TerminatingOrFailed" && p != "Failed" {
            errs.push(Cause::not_supported(
                "spec.podReplacementPolicy",
                &json!(p),
                &["Failed", "TerminatingOrFailed"],
            ));
        }
    }
    let template = spec.get("template").unwrap_or(&null);
    match spec.get("selector").filter(|s| s.is_object()) {
        // Without manualSelector the server generates the selector (see defaults).
        None if spec["manualSelector"] == true => errs.push(Cause::required("spec.selector")),
        None => {}
        Some(sel) => {
            errs.extend(validate_label_selector(sel, "spec.selector"));
            let labels = template.pointer("/metadata/labels");
            if !selector_matches(sel, labels) {
                errs.push(invalid_rendered(
                    "spec.template.metadata.labels",
                    &go_string_map(labels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    errs.extend(validate_pod_template(template, "spec.template", false));
    errs.extend(job_restart_policy(
        template.get("spec").unwrap_or(&null),
        "spec.template.spec",
    ));
    errs
}

pub(super) fn validate_job_update(new: &Value, old: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let new_spec = new.get("spec").unwrap_or(&null);
    let old_spec = old.get("spec").unwrap_or(&null);
    let mut errs = Vec::new();
    if new_spec.get("selector") != old_spec.get("selector") {
        errs.push(invalid_rendered(
            "spec.selector",
            &go_selector(new_spec.get("selector").unwrap_or(&null)),
            "field is immutable",
        ));
    }
    let elastic = new_spec["completionMode"] == "Indexed"
        && new_spec.get("completions") == new_spec.get("parallelism");
    for key in [
        "completions",
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
    ] {
        if key == "completions" && elastic {
            continue;
        }
        if new_spec.get(key) != old_spec.get(key) {
            errs.push(immutable(
                format!("spec.{key}"),
                new_spec.get(key).unwrap_or(&null),
            ));
        }
    }
    let suspended_unstarted =
        old_spec["suspend"] == true && old.pointer("/status/startTime").is_none_or(Value::is_null);
    let mask = |t: Option<&Value>| {
        let mut t = t.cloned().unwrap_or(Value::Null);
        if suspended_unstarted {
            for (part, key) in MUTABLE_WHILE_SUSPENDED {
                if let Some(obj) = t.get_mut(*part).and_then(Value::as_object_mut) {
                    obj.remove(*key);
                }
            }
        }
        t
    };
    if mask(new_spec.get("template")) != mask(old_spec.get("template")) {
        errs.push(immutable(
            "spec.template",
            new_spec.get("template").unwrap_or(&null),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::defaults::apply_defaults;

    fn job(spec: Value) -> Value {
        let mut v =
            json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u1"}, "spec": spec});
        apply_defaults("Job", &mut v);
        v
    }

    fn template(policy: Option<&str>) -> Value {
        let mut t = json!({"spec": {"containers": [{"name": "pi", "image": "perl"}]}});
        if let Some(p) = policy {
            t["spec"]["restartPolicy"] = json!(p);
        }
        t
    }

    fn shown(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::display).collect()
    }

    #[test]
    fn valid_job_passes() {
        assert_eq!(
            validate_job(&job(json!({"template": template(Some("Never"))}))),
            vec![]
        );
    }

    #[test]
    fn restart_policy_must_be_chosen() {
        for policy in [None, Some("Always")] {
            assert_eq!(
                shown(&validate_job(&job(json!({"template": template(policy)})))),
                vec!["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""]
            );
        }
    }

    #[test]
    fn counts_mode_and_manual_selector() {
        let v = job(
            json!({"parallelism": -1, "completionMode": "Indexed", "manualSelector": true,
            "template": template(Some("OnFailure"))}),
        );
        assert_eq!(
            shown(&validate_job(&v)),
            vec![
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.completions: Required value: when completion mode is Indexed",
                "spec.selector: Required value",
            ]
        );
        let v = job(
            json!({"manualSelector": true, "selector": {"matchLabels": {"a": "b"}},
            "template": template(Some("Never"))}),
        );
        assert_eq!(
            shown(&validate_job(&v)),
            vec!["spec.template.metadata.labels: Invalid value: map[string]string(nil): `selector` does not match template `labels`"]
        );
    }

    #[test]
    fn updates() {
        let old = job(json!({"template": template(Some("Never"))}));
        let mut new = old.clone();
        new["spec"]["parallelism"] = json!(4);
        new["spec"]["suspend"] = json!(true);
        assert_eq!(validate_job_update(&new, &old), vec![]);

        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        new["spec"]["completions"] = json!(3);
        let errs = validate_job_update(&new, &old);
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.completions", "spec.template"]);
        assert_eq!(errs[0].message, "Invalid value: 3: field is immutable");

        let mut suspended = old.clone();
        suspended["spec"]["suspend"] = json!(true);
        let mut new = suspended.clone();
        new["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
        assert_eq!(validate_job_update(&new, &suspended), vec![]);
    }
}
