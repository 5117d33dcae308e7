//! Endpoints and discovery.k8s.io/v1 EndpointSlice.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_api::names;
use serde_json::{json, Value};

use super::pod::validate_protocol;
use super::{immutable, invalid_each, items, str_of};
use crate::status::Cause;

const IP_MESSAGE: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

pub(super) fn validate_endpoints(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, subset) in items(obj, "subsets").iter().enumerate() {
        let sp = format!("subsets[{i}]");
        for list in ["addresses", "notReadyAddresses"] {
            for (j, addr) in items(subset, list).iter().enumerate() {
                let ip = addr.get("ip").and_then(Value::as_str).unwrap_or("");
                if ip.parse::<IpAddr>().is_err() {
                    errs.push(Cause::invalid(
                        format!("{sp}.{list}[{j}].ip"),
                        &json!(ip),
                        IP_MESSAGE,
                    ));
                }
            }
        }
        let ports = items(subset, "ports");
        for (k, port) in ports.iter().enumerate() {
            let p = format!("{sp}.ports[{k}]");
            validate_port(port, &p, ports.len() > 1, &mut errs);
        }
    }
    errs
}

fn validate_port(port: &Value, p: &str, name_required: bool, errs: &mut Vec<Cause>) {
    match str_of(port, "name") {
        None if name_required => errs.push(Cause::required(format!("{p}.name"))),
        None => {}
        Some(name) => invalid_each(
            errs,
            &format!("{p}.name"),
            name,
            names::is_dns1123_label(name),
        ),
    }
    if let Some(n) = port.get("port").and_then(Value::as_i64) {
        for msg in names::is_valid_port_num(n) {
            errs.push(Cause::invalid(format!("{p}.port"), &json!(n), msg));
        }
    }
    validate_protocol(port, p, errs);
}

pub(super) fn validate_endpoint_slice(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let address_type = obj.get("addressType").and_then(Value::as_str).unwrap_or("");
    let supported = ["FQDN", "IPv4", "IPv6"];
    if !supported.contains(&address_type) {
        errs.push(Cause::not_supported(
            "addressType",
            &json!(address_type),
            &supported,
        ));
    }
    for (i, ep) in items(obj, "endpoints").iter().enumerate() {
        let p = format!("endpoints[{i}].addresses");
        let addresses = items(ep, "addresses");
        if addresses.is_empty() {
            errs.push(super::required_with(&p, "must contain at least 1 address"));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let field = format!("{p}[{j}]");
            match address_type {
                "IPv4" if a.parse::<Ipv4Addr>().is_err() => errs.push(Cause::invalid(
                    field,
                    &json!(a),
                    "must be a valid IPv4 address",
                )),
                "IPv6" if a.parse::<Ipv6Addr>().is_err() => errs.push(Cause::invalid(
                    field,
                    &json!(a),
                    "must be a valid IPv6 address",
                )),
                "FQDN" => invalid_each(&mut errs, &field, a, names::is_dns1123_subdomain(a)),
                _ => {}
            }
        }
        if let Some(h) = str_of(ep, "hostname") {
            invalid_each(
                &mut errs,
                &format!("endpoints[{i}].hostname"),
                h,
                names::is_dns1123_label(h),
            );
        }
    }
    for (k, port) in items(obj, "ports").iter().enumerate() {
        validate_port(port, &format!("ports[{k}]"), false, &mut errs);
    }
    errs
}

pub(super) fn validate_endpoint_slice_update(new: &Value, old: &Value) -> Vec<Cause> {
    let (n, o) = (new.get("addressType"), old.get("addressType"));
    if n != o {
        vec![immutable("addressType", n.unwrap_or(&Value::Null))]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(errs: &[Cause]) -> Vec<String> {
        errs.iter().map(Cause::display).collect()
    }

    #[test]
    fn endpoints() {
        let ok = json!({"subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 80, "protocol": "TCP"}]}]});
        assert_eq!(validate_endpoints(&ok), vec![]);
        let bad = json!({"subsets": [{"addresses": [{"ip": "nope"}],
            "ports": [{"port": 80, "protocol": "TCP"}, {"name": "b", "port": 0, "protocol": "TCP"}]}]});
        assert_eq!(
            shown(&validate_endpoints(&bad)),
            vec![
                "subsets[0].addresses[0].ip: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                "subsets[0].ports[0].name: Required value",
                "subsets[0].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ]
        );
    }

    #[test]
    fn endpoint_slices() {
        let ok = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"]}],
            "ports": [{"name": "", "port": 80, "protocol": "TCP"}]});
        assert_eq!(validate_endpoint_slice(&ok), vec![]);
        let bad = json!({"addressType": "IPv5", "endpoints": [{"addresses": []}]});
        assert_eq!(
            shown(&validate_endpoint_slice(&bad)),
            vec![
                "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
                "endpoints[0].addresses: Required value: must contain at least 1 address",
            ]
        );
        let bad = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["::1"]}]});
        assert_eq!(
            shown(&validate_endpoint_slice(&bad)),
            vec!["endpoints[0].addresses[0]: Invalid value: \"::1\": must be a valid IPv4 address"]
        );
        assert_eq!(
            shown(&validate_endpoint_slice_update(
                &json!({"addressType": "IPv6"}),
                &json!({"addressType": "IPv4"})
            )),
            vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
        );
    }
}
