//! Reading the hostPort map back from `nft -j list map ip berth hostports`.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::{HostPort, Protocol};

/// The map's elements, or a description of what did not look like one.
pub fn hostports(listing: &str) -> Result<Vec<HostPort>, String> {
    let root: Value = serde_json::from_str(listing).map_err(|e| e.to_string())?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array")?;
    let Some(map) = items.iter().find_map(|item| item.get("map")) else {
        return Err("no map in the listing".to_string());
    };
    // An empty map has no "elem".
    let Some(elements) = map.get("elem") else {
        return Ok(Vec::new());
    };
    elements
        .as_array()
        .ok_or("\"elem\" is not an array")?
        .iter()
        .map(element)
        .collect()
}

/// `[{"concat": ["tcp", 8080]}, {"concat": ["10.244.1.5", 80]}]`
fn element(value: &Value) -> Result<HostPort, String> {
    let bad = || format!("unexpected element {value}");
    let [key, data] = value.as_array().map(Vec::as_slice).ok_or_else(bad)? else {
        return Err(bad());
    };
    let concat = |v: &Value| -> Option<(Value, Value)> {
        match v.get("concat")?.as_array()?.as_slice() {
            [a, b] => Some((a.clone(), b.clone())),
            _ => None,
        }
    };
    let (protocol, host_port) = concat(key).ok_or_else(bad)?;
    let (pod_ip, container_port) = concat(data).ok_or_else(bad)?;
    let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    Ok(HostPort {
        protocol: protocol
            .as_str()
            .and_then(|p| p.parse::<Protocol>().ok())
            .ok_or_else(bad)?,
        host_port: port(&host_port).ok_or_else(bad)?,
        pod_ip: pod_ip
            .as_str()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .ok_or_else(bad)?,
        container_port: port(&container_port).ok_or_else(bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // As nft 1.0.6 prints it.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"map": {"family": "ip", "name": "hostports", "table": "berth", "type": ["inet_proto", "inet_service"], "handle": 1, "map": "ipv4_addr . inet_service", "elem": [[{"concat": ["udp", 53]}, {"concat": ["10.244.1.6", 5353]}], [{"concat": ["tcp", 8080]}, {"concat": ["10.244.1.5", 80]}]]}}]}"#;

    #[test]
    fn parses_elements() {
        let ports = hostports(LISTING).unwrap();
        assert_eq!(
            ports,
            vec![
                HostPort {
                    protocol: Protocol::Udp,
                    host_port: 53,
                    pod_ip: Ipv4Addr::new(10, 244, 1, 6),
                    container_port: 5353,
                },
                HostPort {
                    protocol: Protocol::Tcp,
                    host_port: 8080,
                    pod_ip: Ipv4Addr::new(10, 244, 1, 5),
                    container_port: 80,
                },
            ]
        );
    }

    #[test]
    fn empty_map_and_garbage() {
        let empty = r#"{"nftables": [{"metainfo": {}}, {"map": {"name": "hostports"}}]}"#;
        assert_eq!(hostports(empty).unwrap(), vec![]);
        assert!(hostports("not json").is_err());
        assert!(hostports(r#"{"nftables": []}"#).is_err());
        let odd = r#"{"nftables": [{"map": {"elem": [[{"concat": ["tcp", 70000]}, {"concat": ["10.0.0.1", 80]}]]}}]}"#;
        assert!(hostports(odd).unwrap_err().contains("unexpected element"));
    }
}
