//! core/v1 Service.

use std::collections::HashSet;
use std::net::IpAddr;

use berth_api::names;
use serde_json::{json, Value};

use super::pod::validate_protocol;
use super::{invalid_each, invalid_rendered, items, meta, str_of};
use crate::status::Cause;

/// The default node port range of a Kubernetes API server.
pub(crate) const NODE_PORT_RANGE: (i64, i64) = (30000, 32767);

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

pub(super) fn validate_service(obj: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let mut errs = Vec::new();
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("");
    let cluster_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
    let headless = cluster_ip == "None";
    if !TYPES.contains(&ty) {
        errs.push(Cause::not_supported("spec.type", &json!(ty), TYPES));
    }
    let ports = items(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(Cause::required("spec.ports"));
    }
    match ty {
        "ExternalName" => {
            if !cluster_ip.is_empty() {
                errs.push(Cause::forbidden(
                    "spec.clusterIP",
                    "may not be set for ExternalName services",
                ));
            }
            match str_of(spec, "externalName") {
                None => errs.push(Cause::required("spec.externalName")),
                Some(name) => {
                    let name = name.strip_suffix('.').unwrap_or(name);
                    invalid_each(
                        &mut errs,
                        "spec.externalName",
                        name,
                        names::is_dns1123_subdomain(name),
                    );
                }
            }
        }
        "LoadBalancer" | "NodePort" if headless => errs.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &json!("None"),
            format!("may not be set to 'None' for {ty} services"),
        )),
        _ => {}
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        errs.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &json!(cluster_ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    validate_ports(ports, ty, &mut errs);
    for (key, allowed) in [
        ("sessionAffinity", &["ClientIP", "None"][..]),
        ("externalTrafficPolicy", &["Cluster", "Local"][..]),
        ("internalTrafficPolicy", &["Cluster", "Local"][..]),
        (
            "ipFamilyPolicy",
            &["PreferDualStack", "RequireDualStack", "SingleStack"][..],
        ),
    ] {
        if let Some(v) = spec.get(key).and_then(Value::as_str) {
            if !allowed.contains(&v) {
                errs.push(Cause::not_supported(
                    format!("spec.{key}"),
                    &json!(v),
                    allowed,
                ));
            }
        }
    }
    errs.extend(meta::validate_labels(spec.get("selector"), "spec.selector"));
    errs
}

fn validate_ports(ports: &[Value], ty: &str, errs: &mut Vec<Cause>) {
    let mut names_seen = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        match str_of(port, "name") {
            None if ports.len() > 1 => errs.push(Cause::required(format!("{p}.name"))),
            None => {}
            Some(name) => {
                invalid_each(
                    errs,
                    &format!("{p}.name"),
                    name,
                    names::is_dns1123_label(name),
                );
                if !names_seen.insert(name.to_string()) {
                    errs.push(Cause::duplicate(format!("{p}.name"), &json!(name)));
                }
            }
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        for msg in names::is_valid_port_num(number) {
            errs.push(Cause::invalid(format!("{p}.port"), &json!(number), msg));
        }
        validate_protocol(port, &p, errs);
        match port.get("targetPort") {
            Some(Value::Number(n)) => {
                let n = n.as_i64().unwrap_or(0);
                for msg in names::is_valid_port_num(n) {
                    errs.push(Cause::invalid(format!("{p}.targetPort"), &json!(n), msg));
                }
            }
            Some(Value::String(s)) => {
                invalid_each(
                    errs,
                    &format!("{p}.targetPort"),
                    s,
                    names::is_valid_port_name(s),
                );
            }
            _ => {}
        }
        let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port == 0 {
            continue;
        }
        let field = format!("{p}.nodePort");
        if ty == "ClusterIP" || ty == "ExternalName" {
            errs.push(Cause::forbidden(
                field,
                format!("may not be used when `type` is '{ty}'"),
            ));
            continue;
        }
        let (lo, hi) = NODE_PORT_RANGE;
        if !(lo..=hi).contains(&node_port) {
            errs.push(Cause::invalid(
                field,
                &json!(node_port),
                format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
            ));
            continue;
        }
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        if !node_ports.insert((node_port, protocol.to_string())) {
            errs.push(Cause::duplicate(field, &json!(node_port)));
        }
    }
}

/// A Service's cluster IP may not change once allocated. An empty `clusterIP` in the update
/// means "keep": the handler copies allocated values over, as Kubernetes does.
pub(super) fn validate_service_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let ty = |v: &Value| {
        v.pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if ty(new) == "ExternalName" || ty(old) == "ExternalName" {
        return errs;
    }
    let ip = |v: &Value| {
        v.pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (new_ip, old_ip) = (ip(new), ip(old));
    if !old_ip.is_empty() && !new_ip.is_empty() && new_ip != old_ip {
        errs.push(invalid_rendered(
            "spec.clusterIPs[0]",
            &format!("[]string{{{}}}", json!(new_ip)),
            "may not change once set",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::defaults::apply_defaults;

    fn svc(spec: Value) -> Value {
        let mut v = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        apply_defaults("Service", &mut v);
        v
    }

    fn shown(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::display).collect()
    }

    #[test]
    fn valid_services_pass() {
        assert_eq!(
            validate_service(&svc(
                json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})
            )),
            vec![]
        );
        assert_eq!(validate_service(&svc(json!({"clusterIP": "None"}))), vec![]);
        assert_eq!(
            validate_service(&svc(
                json!({"type": "ExternalName", "externalName": "db.example.com."})
            )),
            vec![]
        );
        assert_eq!(
            validate_service(&svc(
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})
            )),
            vec![]
        );
    }

    #[test]
    fn ports_required_and_checked() {
        assert_eq!(
            shown(&validate_service(&svc(json!({})))),
            vec!["spec.ports: Required value"]
        );
        let v = svc(
            json!({"ports": [{"port": 0, "targetPort": "Not_A_Name"}, {"name": "b", "port": 81, "nodePort": 30001}]}),
        );
        let errs = validate_service(&v);
        let fields: Vec<(&str, &str)> = errs.iter().map(|c| (c.field.as_str(), c.reason)).collect();
        assert_eq!(
            fields,
            vec![
                ("spec.ports[0].name", "FieldValueRequired"),
                ("spec.ports[0].port", "FieldValueInvalid"),
                ("spec.ports[0].targetPort", "FieldValueInvalid"),
                ("spec.ports[1].nodePort", "FieldValueForbidden"),
            ]
        );
        assert_eq!(
            errs[3].message,
            "Forbidden: may not be used when `type` is 'ClusterIP'"
        );
    }

    #[test]
    fn types_and_cluster_ips() {
        assert_eq!(
            shown(&validate_service(&svc(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80, "nodePort": 80}]})))),
            vec![
                "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ]
        );
        assert_eq!(
            shown(&validate_service(&svc(json!({"type": "Magic", "ports": [{"port": 80}]})))),
            vec!["spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""]
        );
        assert_eq!(
            shown(&validate_service(&svc(
                json!({"type": "ExternalName", "clusterIP": "10.0.0.1"})
            ))),
            vec![
                "spec.clusterIP: Forbidden: may not be set for ExternalName services",
                "spec.externalName: Required value"
            ]
        );
        assert_eq!(
            shown(&validate_service(&svc(json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]})))),
            vec!["spec.clusterIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
        );
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let old = svc(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("");
        assert_eq!(validate_service_update(&new, &old), vec![]);
        new["spec"]["clusterIP"] = json!("None");
        assert_eq!(
            shown(&validate_service_update(&new, &old)),
            vec!["spec.clusterIPs[0]: Invalid value: []string{\"None\"}: may not change once set"]
        );
    }
}
