//! Pods and pod templates: the pod spec, containers, ports, resources, volumes, tolerations.

use std::collections::HashSet;

use berth_api::names;
use serde_json::{json, Value};

use super::{invalid_each, items, meta, nonnegative, not_found, required_with, str_of};
use crate::status::Cause;

const POD_UPDATE_MESSAGE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

pub(super) const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Resources whose request may be below the limit; for all others the two must be equal.
const OVERCOMMITTABLE: &[&str] = &["cpu", "memory", "ephemeral-storage"];

pub(super) fn validate_pod(obj: &Value) -> Vec<Cause> {
    validate_pod_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", true)
}

/// A `PodTemplateSpec` at `path` (e.g. `spec.template`). `check_restart_policy` is false for
/// Jobs, which check it with their own message.
pub(crate) fn validate_pod_template(
    template: &Value,
    path: &str,
    check_restart_policy: bool,
) -> Vec<Cause> {
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    let mut errs = meta::validate_labels(meta.get("labels"), &format!("{path}.labels"));
    errs.extend(meta::validate_annotations(
        meta.get("annotations"),
        &format!("{path}.annotations"),
    ));
    errs.extend(validate_pod_spec(
        template.get("spec").unwrap_or(&Value::Null),
        &format!("{path}.spec"),
        check_restart_policy,
    ));
    errs
}

fn validate_pod_spec(spec: &Value, path: &str, check_restart_policy: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    let volumes = validate_volumes(items(spec, "volumes"), path, &mut errs);
    let mut names = HashSet::new();
    for (i, c) in items(spec, "initContainers").iter().enumerate() {
        validate_container(
            c,
            &format!("{path}.initContainers[{i}]"),
            &volumes,
            &mut names,
            &mut errs,
        );
    }
    let containers = items(spec, "containers");
    if containers.is_empty() {
        errs.push(Cause::required(format!("{path}.containers")));
    }
    for (i, c) in containers.iter().enumerate() {
        validate_container(
            c,
            &format!("{path}.containers[{i}]"),
            &volumes,
            &mut names,
            &mut errs,
        );
    }
    if check_restart_policy {
        match spec
            .get("restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("")
        {
            "" => errs.push(Cause::required(format!("{path}.restartPolicy"))),
            "Always" | "OnFailure" | "Never" => {}
            other => errs.push(Cause::not_supported(
                format!("{path}.restartPolicy"),
                &json!(other),
                &["Always", "OnFailure", "Never"],
            )),
        }
    }
    match spec.get("dnsPolicy").and_then(Value::as_str).unwrap_or("") {
        "" => errs.push(Cause::required(format!("{path}.dnsPolicy"))),
        "ClusterFirst" | "ClusterFirstWithHostNet" | "Default" | "None" => {}
        other => errs.push(Cause::not_supported(
            format!("{path}.dnsPolicy"),
            &json!(other),
            &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        )),
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if !(1..=i64::from(i32::MAX)).contains(&n) {
            errs.push(Cause::invalid(
                format!("{path}.activeDeadlineSeconds"),
                &json!(n),
                names::inclusive_range_error(1, i64::from(i32::MAX)),
            ));
        }
    }
    for (key, check) in [
        (
            "nodeName",
            names::is_dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("serviceAccountName", names::is_dns1123_subdomain),
        ("hostname", names::is_dns1123_label),
        ("subdomain", names::is_dns1123_label),
    ] {
        if let Some(v) = str_of(spec, key) {
            invalid_each(&mut errs, &format!("{path}.{key}"), v, check(v));
        }
    }
    errs.extend(meta::validate_labels(
        spec.get("nodeSelector"),
        &format!("{path}.nodeSelector"),
    ));
    errs.extend(validate_tolerations(
        items(spec, "tolerations"),
        &format!("{path}.tolerations"),
    ));
    errs
}

fn validate_volumes(volumes: &[Value], path: &str, errs: &mut Vec<Cause>) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = format!("{path}.volumes[{i}].name");
        match str_of(v, "name") {
            None => errs.push(Cause::required(p)),
            Some(name) => {
                invalid_each(errs, &p, name, names::is_dns1123_label(name));
                if !seen.insert(name.to_string()) {
                    errs.push(Cause::duplicate(p, &json!(name)));
                }
            }
        }
    }
    seen
}

fn validate_container(
    c: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names_seen: &mut HashSet<String>,
    errs: &mut Vec<Cause>,
) {
    match str_of(c, "name") {
        None => errs.push(Cause::required(format!("{path}.name"))),
        Some(name) => {
            invalid_each(
                errs,
                &format!("{path}.name"),
                name,
                names::is_dns1123_label(name),
            );
            if !names_seen.insert(name.to_string()) {
                errs.push(Cause::duplicate(format!("{path}.name"), &json!(name)));
            }
        }
    }
    if str_of(c, "image").is_none() {
        errs.push(Cause::required(format!("{path}.image")));
    }
    if let Some(p) = str_of(c, "imagePullPolicy") {
        if !["Always", "IfNotPresent", "Never"].contains(&p) {
            errs.push(Cause::not_supported(
                format!("{path}.imagePullPolicy"),
                &json!(p),
                &["Always", "IfNotPresent", "Never"],
            ));
        }
    }
    if let Some(p) = str_of(c, "terminationMessagePolicy") {
        if !["File", "FallbackToLogsOnError"].contains(&p) {
            errs.push(Cause::not_supported(
                format!("{path}.terminationMessagePolicy"),
                &json!(p),
                &["File", "FallbackToLogsOnError"],
            ));
        }
    }
    validate_ports(items(c, "ports"), &format!("{path}.ports"), errs);
    for (i, e) in items(c, "env").iter().enumerate() {
        let p = format!("{path}.env[{i}].name");
        match e.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(Cause::required(p)),
            n => invalid_each(errs, &p, n, names::is_relaxed_env_var_name(n)),
        }
    }
    for (i, m) in items(c, "volumeMounts").iter().enumerate() {
        let p = format!("{path}.volumeMounts[{i}]");
        match str_of(m, "name") {
            None => errs.push(Cause::required(format!("{p}.name"))),
            Some(n) if !volumes.contains(n) => errs.push(not_found(format!("{p}.name"), &json!(n))),
            Some(_) => {}
        }
        if str_of(m, "mountPath").is_none() {
            errs.push(Cause::required(format!("{p}.mountPath")));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe).filter(|p| p.is_object()) {
            let pp = format!("{path}.{probe}");
            for f in [
                "initialDelaySeconds",
                "timeoutSeconds",
                "periodSeconds",
                "successThreshold",
                "failureThreshold",
            ] {
                nonnegative(errs, p, f, &pp);
            }
        }
    }
    validate_resources(
        c.get("resources").unwrap_or(&Value::Null),
        &format!("{path}.resources"),
        errs,
    );
}

fn validate_ports(ports: &[Value], path: &str, errs: &mut Vec<Cause>) {
    let mut names_seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(name) = str_of(port, "name") {
            let msgs = names::is_valid_port_name(name);
            if !msgs.is_empty() {
                invalid_each(errs, &format!("{p}.name"), name, msgs);
            } else if !names_seen.insert(name.to_string()) {
                errs.push(Cause::duplicate(format!("{p}.name"), &json!(name)));
            }
        }
        match port
            .get("containerPort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
        {
            0 => errs.push(Cause::required(format!("{p}.containerPort"))),
            n => errs.extend(
                names::is_valid_port_num(n)
                    .into_iter()
                    .map(|m| Cause::invalid(format!("{p}.containerPort"), &json!(n), m)),
            ),
        }
        if let Some(n) = port
            .get("hostPort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            errs.extend(
                names::is_valid_port_num(n)
                    .into_iter()
                    .map(|m| Cause::invalid(format!("{p}.hostPort"), &json!(n), m)),
            );
        }
        validate_protocol(port, &p, errs);
    }
}

/// `protocol` of a port: required (it is defaulted), one of SCTP, TCP, UDP.
pub(crate) fn validate_protocol(port: &Value, path: &str, errs: &mut Vec<Cause>) {
    match port.get("protocol").and_then(Value::as_str).unwrap_or("") {
        "" => errs.push(Cause::required(format!("{path}.protocol"))),
        "TCP" | "UDP" | "SCTP" => {}
        other => errs.push(Cause::not_supported(
            format!("{path}.protocol"),
            &json!(other),
            &["SCTP", "TCP", "UDP"],
        )),
    }
}

fn validate_resources(res: &Value, path: &str, errs: &mut Vec<Cause>) {
    for kind in ["limits", "requests"] {
        for (name, q) in super::entries(res, kind) {
            let p = format!("{path}.{kind}[{name}]");
            let text = q
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| q.to_string());
            match berth_api::Quantity::parse(&text).ok() {
                None => errs.push(Cause::invalid(p, &json!(text), QUANTITY_FORMAT)),
                Some(v) if v.signum() < 0 => errs.push(Cause::invalid(
                    p,
                    &json!(text),
                    "must be greater than or equal to 0",
                )),
                Some(_) => {}
            }
        }
    }
    for (name, req) in super::entries(res, "requests") {
        let Some(lim) = res.get("limits").and_then(|l| l.get(name)) else {
            continue;
        };
        let req_text = req
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| req.to_string());
        let lim_text = lim
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| lim.to_string());
        let (Ok(r), Ok(l)) = (
            berth_api::Quantity::parse(&req_text),
            berth_api::Quantity::parse(&lim_text),
        ) else {
            continue;
        };
        if OVERCOMMITTABLE.contains(&name.as_str()) {
            if r > l {
                errs.push(Cause::invalid(
                    format!("{path}.requests"),
                    &json!(req_text),
                    format!("must be less than or equal to {name} limit of {lim_text}"),
                ));
            }
        } else if r != l {
            errs.push(Cause::invalid(
                format!("{path}.requests"),
                &json!(req_text),
                format!("must be equal to {name} limit of {lim_text}"),
            ));
        }
    }
}

fn validate_tolerations(tolerations: &[Value], path: &str) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        if !key.is_empty() {
            invalid_each(
                &mut errs,
                &format!("{p}.key"),
                key,
                names::is_qualified_name(key),
            );
        }
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("");
        if key.is_empty() && op != "Exists" {
            errs.push(Cause::invalid(
                format!("{p}.operator"),
                &json!(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        match op {
            "" | "Equal" => {
                let v = t.get("value").and_then(Value::as_str).unwrap_or("");
                invalid_each(
                    &mut errs,
                    &format!("{p}.value"),
                    v,
                    names::is_valid_label_value(v),
                );
            }
            "Exists" => {
                if str_of(t, "value").is_some() {
                    errs.push(Cause::invalid(
                        format!("{p}.operator"),
                        t,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(Cause::not_supported(
                format!("{p}.operator"),
                &json!(other),
                &["Equal", "Exists"],
            )),
        }
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            errs.push(Cause::not_supported(
                format!("{p}.effect"),
                &json!(effect),
                &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            ));
        }
        if t.get("tolerationSeconds").is_some_and(|s| !s.is_null()) && effect != "NoExecute" {
            errs.push(Cause::invalid(
                format!("{p}.effect"),
                &json!(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
    }
    errs
}

/// Only images, a shortened `activeDeadlineSeconds`, added tolerations and a grace period
/// fixed from negative to 1 may change in a pod's spec.
pub(super) fn validate_pod_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let null = Value::Null;
    let new_spec = new.get("spec").unwrap_or(&null);
    let old_spec = old.get("spec").unwrap_or(&null);

    let new_ads = new_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64);
    let old_ads = old_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64);
    match (new_ads, old_ads) {
        (Some(n), Some(o)) if n > o => errs.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &json!(n),
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => errs.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }

    let new_tol = items(new_spec, "tolerations");
    for old_t in items(old_spec, "tolerations") {
        let kept = new_tol
            .iter()
            .any(|n| without_seconds(n) == without_seconds(old_t));
        if !kept {
            errs.push(Cause::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }

    // Put back into a copy of the new spec everything that may change, then compare.
    let mut masked = new_spec.clone();
    for list in ["containers", "initContainers"] {
        if let Some(cs) = masked.get_mut(list).and_then(Value::as_array_mut) {
            for (i, c) in cs.iter_mut().enumerate() {
                if let (Some(obj), Some(old_c)) = (c.as_object_mut(), items(old_spec, list).get(i))
                {
                    match old_c.get("image") {
                        Some(img) => obj.insert("image".into(), img.clone()),
                        None => obj.remove("image"),
                    };
                }
            }
        }
    }
    if let Some(obj) = masked.as_object_mut() {
        for key in ["activeDeadlineSeconds", "tolerations"] {
            match old_spec.get(key) {
                Some(v) => obj.insert(key.into(), v.clone()),
                None => obj.remove(key),
            };
        }
        let old_grace = old_spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        let new_grace = obj
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        if old_grace.is_some_and(|g| g < 0) && new_grace == Some(1) {
            obj.insert("terminationGracePeriodSeconds".into(), json!(old_grace));
        }
    }
    if masked != *old_spec {
        errs.push(Cause::forbidden("spec", POD_UPDATE_MESSAGE));
    }
    errs
}

fn without_seconds(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(obj) = t.as_object_mut() {
        obj.remove("tolerationSeconds");
    }
    t
}

/// Used by the Job validation: the same restart-policy message Kubernetes gives.
pub(crate) fn job_restart_policy(spec: &Value, path: &str) -> Option<Cause> {
    let policy = spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    (policy != "OnFailure" && policy != "Never").then(|| {
        required_with(
            format!("{path}.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::defaults::apply_defaults;

    fn pod(spec: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        apply_defaults("Pod", &mut p);
        p
    }

    fn shown(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::display).collect()
    }

    #[test]
    fn valid_pod_passes() {
        let p = pod(json!({"containers": [{"name": "c", "image": "nginx",
            "ports": [{"name": "http", "containerPort": 80}],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}]}));
        assert_eq!(validate_pod(&p), vec![]);
    }

    #[test]
    fn containers_required() {
        let p = pod(json!({}));
        assert_eq!(
            shown(&validate_pod(&p)),
            vec!["spec.containers: Required value"]
        );
    }

    #[test]
    fn container_rules() {
        let p = pod(json!({"containers": [
            {"name": "Web", "image": "x"},
            {"name": "b"},
            {"name": "b", "image": "x", "ports": [{"containerPort": 70000, "protocol": "ICMP"}],
             "volumeMounts": [{"name": "missing", "mountPath": "/m"}]}]}));
        let errs = validate_pod(&p);
        let fields: Vec<(&str, &str)> = errs.iter().map(|c| (c.field.as_str(), c.reason)).collect();
        assert_eq!(
            fields,
            vec![
                ("spec.containers[0].name", "FieldValueInvalid"),
                ("spec.containers[1].image", "FieldValueRequired"),
                ("spec.containers[2].name", "FieldValueDuplicate"),
                (
                    "spec.containers[2].ports[0].containerPort",
                    "FieldValueInvalid"
                ),
                (
                    "spec.containers[2].ports[0].protocol",
                    "FieldValueNotSupported"
                ),
                (
                    "spec.containers[2].volumeMounts[0].name",
                    "FieldValueNotFound"
                ),
            ]
        );
        assert_eq!(
            errs[3].display(),
            "spec.containers[2].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            errs[4].display(),
            "spec.containers[2].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
    }

    #[test]
    fn restart_policy_and_resources() {
        let p = pod(
            json!({"restartPolicy": "Sometimes", "containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "2", "memory": "-1"}, "limits": {"cpu": "1"}}}]}),
        );
        assert_eq!(
            shown(&validate_pod(&p)),
            vec![
                "spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ]
        );
    }

    #[test]
    fn tolerations() {
        let p = pod(json!({"containers": [{"name": "c", "image": "x"}],
            "tolerations": [{"operator": "Equal", "value": "v"},
                            {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]}));
        let errs = validate_pod(&p);
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.tolerations[0].operator", "spec.tolerations[1].effect"]
        );
    }

    #[test]
    fn pod_updates() {
        let old = pod(
            json!({"containers": [{"name": "c", "image": "nginx:1"}], "activeDeadlineSeconds": 100}),
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(50);
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "a", "operator": "Exists"}));
        assert_eq!(validate_pod_update(&new, &old), vec![]);

        let mut bad = old.clone();
        bad["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
        let errs = validate_pod_update(&bad, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert_eq!(errs[0].reason, "FieldValueForbidden");
        assert_eq!(errs[0].message, format!("Forbidden: {POD_UPDATE_MESSAGE}"));

        let mut node = old.clone();
        node["spec"]["nodeName"] = json!("n1");
        assert_eq!(validate_pod_update(&node, &old)[0].field, "spec");

        let mut longer = old.clone();
        longer["spec"]["activeDeadlineSeconds"] = json!(200);
        assert_eq!(
            shown(&validate_pod_update(&longer, &old)),
            vec!["spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"]
        );

        let mut dropped = old.clone();
        dropped["spec"]["tolerations"] = json!([]);
        assert_eq!(
            shown(&validate_pod_update(&dropped, &old)),
            vec!["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
        );
    }
}
