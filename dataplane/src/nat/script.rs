//! The nft scripts: pure text, so they are unit-tested without nft.

use std::fmt::Write;

use super::{HostPort, Protocol, FAMILY, HOSTPORT_MAP};
use crate::podnet::{Ipv4Cidr, POD_LINK_GROUP};

/// Creates the table, its map and chains if missing and rewrites the chains' rules, in one
/// transaction: running it again changes nothing, and the map's elements survive it.
///
/// - `prerouting`/`output`: a connection to a local address whose protocol and port are a key of
///   the hostPort map is DNATed to the pod address and port the map gives (`output` covers
///   connections from the node itself).
/// - `postrouting`: connections from pods to anything outside the cluster leave with the node's
///   address; pod ↔ pod traffic (inside the cluster CIDR) keeps its source, as does anything
///   leaving through a pod veth (device group [`POD_LINK_GROUP`]) — except a pod's connection to
///   a hostPort (hairpin), which comes from the gateway so that the reply returns through the
///   node.
pub fn ensure(table: &str, cluster_cidr: Ipv4Cidr) -> String {
    let t = format!("{FAMILY} {table}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(
        s,
        "add map {t} {HOSTPORT_MAP} {{ type inet_proto . inet_service : ipv4_addr . inet_service ; }}"
    );
    for (chain, hook, priority) in [
        ("prerouting", "prerouting", "dstnat"),
        ("output", "output", "-100"),
        ("postrouting", "postrouting", "srcnat"),
    ] {
        let _ = writeln!(
            s,
            "add chain {t} {chain} {{ type nat hook {hook} priority {priority} ; policy accept ; }}"
        );
        let _ = writeln!(s, "flush chain {t} {chain}");
    }
    // Loopback is left out: a packet from 127.0.0.1 cannot be routed to a pod, and the node's
    // own services on 127.0.0.1:<hostPort> keep working.
    for (chain, only) in [("prerouting", ""), ("output", "ip daddr != 127.0.0.0/8 ")] {
        let _ = writeln!(
            s,
            "add rule {t} {chain} {only}fib daddr type local dnat to meta l4proto . th dport map @{HOSTPORT_MAP}"
        );
    }
    let _ = writeln!(
        s,
        "add rule {t} postrouting ip saddr {cluster_cidr} ip daddr != {cluster_cidr} meta oifgroup != {POD_LINK_GROUP} masquerade"
    );
    // Hairpin: a pod reaching a hostPort (possibly its own) through the node's address would
    // otherwise see its own address as the source and drop the packet.
    let _ = writeln!(
        s,
        "add rule {t} postrouting ct status dnat ip saddr {cluster_cidr} meta oifgroup {POD_LINK_GROUP} masquerade"
    );
    s
}

/// Adds `port`'s element; `replacing` is the element already holding its key, deleted in the
/// same transaction (nft refuses to add a key with a different value).
pub fn add_hostport(table: &str, port: &HostPort, replacing: Option<&HostPort>) -> String {
    let mut s = String::new();
    if let Some(old) = replacing {
        s.push_str(&delete_hostport(table, old.protocol, old.host_port));
    }
    let _ = writeln!(
        s,
        "add element {FAMILY} {table} {HOSTPORT_MAP} {{ {} . {} : {} . {} }}",
        port.protocol, port.host_port, port.pod_ip, port.container_port
    );
    s
}

pub fn delete_hostport(table: &str, protocol: Protocol, host_port: u16) -> String {
    format!("delete element {FAMILY} {table} {HOSTPORT_MAP} {{ {protocol} . {host_port} }}\n")
}

/// Deletes the table with everything in it; adding it first makes a missing table no error.
pub fn cleanup(table: &str) -> String {
    format!("add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ensure_script() {
        let s = ensure("berth", "10.244.0.0/16".parse().unwrap());
        assert!(s.starts_with("add table ip berth\n"));
        assert!(s.contains(
            "add chain ip berth prerouting { type nat hook prerouting priority dstnat ; policy accept ; }\nflush chain ip berth prerouting\n"
        ));
        assert!(s.contains(
            "add rule ip berth prerouting fib daddr type local dnat to meta l4proto . th dport map @hostports\n"
        ));
        assert!(s.contains(
            "add rule ip berth output ip daddr != 127.0.0.0/8 fib daddr type local dnat to meta l4proto . th dport map @hostports\n"
        ));
        assert!(s.contains(
            "add rule ip berth postrouting ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 meta oifgroup != 1650815604 masquerade\n"
        ));
        assert!(s.ends_with(
            "add rule ip berth postrouting ct status dnat ip saddr 10.244.0.0/16 meta oifgroup 1650815604 masquerade\n"
        ));
        // Only table ip berth is ever named.
        for line in s.lines() {
            assert!(line.contains(" ip berth"), "{line}");
        }
    }

    #[test]
    fn element_scripts() {
        let port = HostPort {
            protocol: Protocol::Udp,
            host_port: 53,
            pod_ip: Ipv4Addr::new(10, 244, 1, 5),
            container_port: 5353,
        };
        assert_eq!(
            add_hostport("berth", &port, None),
            "add element ip berth hostports { udp . 53 : 10.244.1.5 . 5353 }\n"
        );
        let old = HostPort {
            pod_ip: Ipv4Addr::new(10, 244, 1, 6),
            ..port.clone()
        };
        assert_eq!(
            add_hostport("berth-x", &port, Some(&old)),
            "delete element ip berth-x hostports { udp . 53 }\nadd element ip berth-x hostports { udp . 53 : 10.244.1.5 . 5353 }\n"
        );
        assert_eq!(
            cleanup("berth"),
            "add table ip berth\ndelete table ip berth\n"
        );
    }
}
