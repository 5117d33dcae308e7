//! Rows of discovery.k8s.io/v1 EndpointSlice.

use super::format::{arr_at, list_with_more, opt_int_at, since, str_at, time_at, Millis};
use super::ColumnDefinition as Col;
use serde_json::{json, Value};

const ADDRESS_TYPE_DOC: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.";
const PORTS_DOC: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.";
const ENDPOINTS_DOC: &str = "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";

pub(super) fn endpoint_slice_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("AddressType", ADDRESS_TYPE_DOC),
        Col::string("Ports", PORTS_DOC),
        Col::string("Endpoints", ENDPOINTS_DOC),
        Col::age(),
    ]
}

/// Each port's number, else its name, else "*" (all ports).
fn ports(slice: &Value) -> String {
    let ports: Vec<String> = arr_at(slice, &["ports"])
        .iter()
        .map(|p| match opt_int_at(p, &["port"]) {
            Some(n) => n.to_string(),
            None => match p.get("name").and_then(Value::as_str) {
                Some(name) => name.to_string(),
                None => "*".to_string(),
            },
        })
        .collect();
    list_with_more(&ports)
}

/// Every address of every endpoint, ready or not.
fn endpoints(slice: &Value) -> String {
    let addresses: Vec<String> = arr_at(slice, &["endpoints"])
        .iter()
        .flat_map(|e| arr_at(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    list_with_more(&addresses)
}

pub(super) fn endpoint_slice_cells(slice: &Value, now: Millis) -> Vec<Value> {
    vec![
        json!(str_at(slice, &["metadata", "name"])),
        json!(str_at(slice, &["addressType"])),
        json!(ports(slice)),
        json!(endpoints(slice)),
        json!(since(
            time_at(slice, &["metadata", "creationTimestamp"]),
            now
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::format::parse_time;
    use super::*;

    #[test]
    fn endpoint_slice() {
        let now = parse_time("2024-05-01T12:00:00Z").expect("now");
        let slice = json!({
            "metadata": {"name": "web-abcde", "creationTimestamp": "2024-05-01T11:57:30Z"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "grpc"}, {}, {"port": 9090}],
            "endpoints": [
                {"addresses": ["10.42.0.7"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.8", "10.42.0.9"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.10"]}
            ]
        });
        assert_eq!(
            endpoint_slice_cells(&slice, now),
            vec![
                json!("web-abcde"),
                json!("IPv4"),
                json!("8080,grpc,* + 1 more..."),
                json!("10.42.0.7,10.42.0.8,10.42.0.9 + 1 more..."),
                json!("2m30s"),
            ]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6", "endpoints": []});
        let c = endpoint_slice_cells(&empty, now);
        assert_eq!((&c[2], &c[3]), (&json!("<unset>"), &json!("<unset>")));
    }
}
