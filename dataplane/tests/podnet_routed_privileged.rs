//! Privileged: the routed pod network across two "nodes" — pod ↔ pod on a node and across
//! nodes with the nodes' global `ip_forward` off, masquerade to the outside, and hostPort.
//!
//! The test re-executes itself under `unshare --net`, so everything happens in throwaway network
//! namespaces and disappears with the process even if it is killed; the machine's own namespace
//! is never touched. Inside, the process's namespace is a "LAN": a bridge `berthlan` joining
//! three namespaces held only by file descriptors — node 1, node 2 and an outside host — each
//! by a veth whose far end is `berthup`:
//!
//! ```text
//!   pod a1, a2 ── node 1 (198.51.100.1, podCIDR 10.244.1.0/24) ─┐
//!   pod b      ── node 2 (198.51.100.2, podCIDR 10.244.2.0/24) ─┼─ berthlan
//!                 outside (198.51.100.3, no route to any pod)  ─┘
//! ```

#[path = "podnet_routed/harness.rs"]
mod harness;
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use berth_dataplane::nat::{HostPort, Nat, NatError, Protocol};
use berth_dataplane::podnet::{Ipv4Cidr, PodAddress, POD_LINK_GROUP};
use berth_dataplane::routes::{enable_forwarding, uplink_for, NodeRoutes, RoutesError};
use harness::{connect, exchange, listen, new_ns, plug, pod_to_pod, Node, IO_TIMEOUT, UPLINK};
use support::{can_run_privileged, inner_run, run_in_own_netns, run_ok, skip, Netns};

const TEST_NAME: &str = "routed_pod_network";
/// Set for the re-executed test: the file it writes when it got to the end.
const INNER_ENV: &str = "BERTH_PODNET_ROUTED_INNER_MARKER";
const NODE1_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const NODE2_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// For connections that must fail: dropped packets would otherwise wait for the full timeout.
const FAIL_TIMEOUT: Duration = Duration::from_secs(1);

#[test]
fn routed_pod_network() {
    if inner_run(INNER_ENV, scenario) {
        return;
    }
    if let Err(reason) = can_run_privileged(&["unshare", "nsenter", "ip", "nft"]) {
        skip(&reason);
        return;
    }
    run_in_own_netns(TEST_NAME, INNER_ENV);
}

fn scenario() {
    run_ok("ip", &["link", "set", "lo", "up"]);
    run_ok("ip", &["link", "add", "berthlan", "type", "bridge"]);
    run_ok("ip", &["link", "set", "berthlan", "up"]);
    let node1 = Node::new("berthl1", NODE1_IP, "10.244.1.0/24");
    let node2 = Node::new("berthl2", NODE2_IP, "10.244.2.0/24");
    let outside = new_ns();
    plug(&outside, "berthlo", OUTSIDE_IP);
    let (pod_a1, pod_a2, pod_b) = (new_ns(), new_ns(), new_ns());

    // (a)
    let a1 = node1.attach("uid-a1", &pod_a1);
    let a2 = node1.attach("uid-a2", &pod_a2);
    same_node(&node1, (&pod_a1, &a1), (&pod_a2, &a2));

    // Masquerading on both nodes from here on: pod ↔ pod traffic must still keep its source.
    let nat1 = Nat::new(CLUSTER_CIDR.parse().expect("cidr"));
    // Any berth-prefixed table works the same; node 2 uses another.
    let nat2 = Nat::new(CLUSTER_CIDR.parse().expect("cidr"))
        .with_table("berth-node2")
        .expect("table name");
    node1
        .ns
        .run(|| nat1.ensure())
        .expect("ensure nat on node 1");
    node2
        .ns
        .run(|| nat2.ensure())
        .expect("ensure nat on node 2");
    let tables = node2.ns.ok("nft", &["list", "tables"]);
    assert_eq!(tables.trim(), "table ip berth-node2");

    // (b)
    let b = node2.attach("uid-b", &pod_b);
    uplinks_forward(&node1, &node2);
    node1.sync(&[("10.244.2.0/24", NODE2_IP)]);
    node2.sync(&[("10.244.1.0/24", NODE1_IP)]);
    assert_eq!(pod_to_pod(&pod_a1, &pod_b, &b), IpAddr::V4(a1.ip));
    assert_eq!(pod_to_pod(&pod_b, &pod_a2, &a2), IpAddr::V4(b.ip));
    routes_are_incremental_and_berth_only(&node1);
    // Without the route, node 1 cannot reach node 2's pods.
    assert_eq!(node1.sync(&[]).removed, 1);
    let listener = listen(&pod_b, Ipv4Addr::UNSPECIFIED, 0);
    let target = SocketAddr::from((b.ip, listener.local_addr().expect("addr").port()));
    assert!(connect(&pod_a1, target, FAIL_TIMEOUT).is_err());
    node1.sync(&[("10.244.2.0/24", NODE2_IP)]);
    assert_eq!(exchange(&pod_a1, target, &listener), IpAddr::V4(a1.ip));

    // (c)
    masquerade(&node1, &nat1, &outside, &pod_a1);
    // (d)
    hostport(&node1, &nat1, &outside, (&pod_a1, &a1), &pod_b);

    for (node, nat) in [(&node1, &nat1), (&node2, &nat2)] {
        node.ns.run(|| nat.cleanup()).expect("nat cleanup");
        node.ns.run(|| nat.cleanup()).expect("nat cleanup again");
        assert_eq!(node.ns.ok("nft", &["list", "tables"]).trim(), "");
    }
}

/// (c) A pod reaches the outside, which sees node 1's address and has no route to any pod.
fn masquerade(node: &Node, nat: &Nat, outside: &Netns, pod: &Netns) {
    // ensure is idempotent: one table, one rule per chain.
    node.ns.run(|| nat.ensure()).expect("ensure again");
    assert_eq!(
        node.ns.ok("nft", &["list", "tables"]).trim(),
        "table ip berth"
    );
    let ruleset = node.ns.ok("nft", &["list", "table", "ip", "berth"]);
    assert_eq!(ruleset.matches("masquerade").count(), 2, "{ruleset}");
    assert_eq!(ruleset.matches("dnat ip to").count(), 2, "{ruleset}");

    let listener = listen(outside, OUTSIDE_IP, 0);
    let target = listener.local_addr().expect("addr");
    assert_eq!(exchange(pod, target, &listener), IpAddr::V4(NODE1_IP));
}

/// (d) node1:8080 reaches pod a1 from the outside, from node 1 itself and from a pod on node 2;
/// mappings change one element at a time.
fn hostport(
    node: &Node,
    nat: &Nat,
    outside: &Netns,
    (pod, a1): (&Netns, &PodAddress),
    pod_b: &Netns,
) {
    let listener = listen(pod, Ipv4Addr::UNSPECIFIED, 0);
    let container_port = listener.local_addr().expect("addr").port();
    let mapping = HostPort {
        protocol: Protocol::Tcp,
        host_port: 8080,
        pod_ip: a1.ip,
        container_port,
    };
    let other = HostPort {
        protocol: Protocol::Udp,
        host_port: 5353,
        pod_ip: a1.ip,
        container_port: 53,
    };
    node.ns
        .run(|| -> Result<(), NatError> {
            assert!(nat.add_hostport(&other)?);
            assert!(nat.add_hostport(&mapping)?);
            assert!(!nat.add_hostport(&mapping)?);
            Ok(())
        })
        .expect("add hostports");
    let target = SocketAddr::from((NODE1_IP, 8080));
    assert_eq!(exchange(outside, target, &listener), IpAddr::V4(OUTSIDE_IP));
    assert_eq!(exchange(&node.ns, target, &listener), IpAddr::V4(NODE1_IP));
    // Node 1's address is outside the cluster CIDR: node 2 masquerades its pod's connection.
    assert_eq!(exchange(pod_b, target, &listener), IpAddr::V4(NODE2_IP));
    // Hairpin: a1 reaches its own hostPort, from the gateway.
    assert_eq!(exchange(pod, target, &listener), IpAddr::V4(a1.gateway));
    // Loopback is not mapped: nothing listens on node 1's 127.0.0.1:8080.
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080));
    let err = connect(&node.ns, local, IO_TIMEOUT).expect_err("loopback is not mapped");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // Re-pointing the mapping replaces only its element; ensure keeps the elements.
    let moved = HostPort {
        container_port: container_port.wrapping_add(1),
        ..mapping.clone()
    };
    let listed = node
        .ns
        .run(|| -> Result<Vec<HostPort>, NatError> {
            assert!(nat.add_hostport(&moved)?);
            nat.ensure()?;
            nat.hostports()
        })
        .expect("replace hostport");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.contains(&moved) && listed.contains(&other),
        "{listed:?}"
    );
    node.ns
        .run(|| -> Result<(), NatError> {
            assert!(nat.add_hostport(&mapping)?);
            assert!(nat.remove_hostport(Protocol::Udp, 5353)?);
            assert!(!nat.remove_hostport(Protocol::Udp, 5353)?);
            Ok(())
        })
        .expect("restore hostport");
    assert_eq!(exchange(outside, target, &listener), IpAddr::V4(OUTSIDE_IP));

    // Unmapped: node 1 has nothing on 8080 and refuses at once.
    node.ns
        .run(|| nat.remove_hostport(Protocol::Tcp, 8080))
        .expect("remove hostport");
    assert_eq!(node.ns.run(|| nat.hostports()).expect("list"), vec![]);
    let err = connect(outside, target, IO_TIMEOUT).expect_err("unmapped port");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

/// (a) Two pods on one node talk although the node's global forwarding is off: the pods' host
/// veths forward. Without that, they cannot.
fn same_node(node: &Node, (pod1, a1): (&Netns, &PodAddress), (pod2, a2): (&Netns, &PodAddress)) {
    assert_eq!(node.ns.sysctl("ip_forward"), "0");
    assert_eq!(node.ns.sysctl("conf/all/forwarding"), "0");
    for a in [a1, a2] {
        let key = format!("conf/{}/forwarding", a.host_ifname);
        assert_eq!(node.ns.sysctl(&key), "1", "{key}");
        let link = node.ns.ok("ip", &["-o", "link", "show", &a.host_ifname]);
        assert!(link.contains(&format!("group {POD_LINK_GROUP} ")), "{link}");
    }
    assert_eq!(pod_to_pod(pod1, pod2, a2), IpAddr::V4(a1.ip));
    assert_eq!(pod_to_pod(pod2, pod1, a1), IpAddr::V4(a2.ip));

    // Forwarding off on a1's veth: a1's packets are no longer routed.
    let key = format!("/proc/sys/net/ipv4/conf/{}/forwarding", a1.host_ifname);
    node.ns.ok("sh", &["-c", &format!("echo 0 > {key}")]);
    let listener = listen(pod2, Ipv4Addr::UNSPECIFIED, 0);
    let target = SocketAddr::from((a2.ip, listener.local_addr().expect("addr").port()));
    assert!(connect(pod1, target, FAIL_TIMEOUT).is_err());
    // attach repairs it.
    assert_eq!(&node.attach("uid-a1", pod1), a1);
    assert_eq!(exchange(pod1, target, &listener), IpAddr::V4(a1.ip));
    // The global switches were never touched.
    assert_eq!(node.ns.sysctl("ip_forward"), "0");
    assert_eq!(node.ns.sysctl("conf/all/forwarding"), "0");
    assert_eq!(node.ns.sysctl("conf/default/forwarding"), "0");
}

/// The agent's part: find the uplink by the node's address and let it forward.
fn uplinks_forward(node1: &Node, node2: &Node) {
    for (node, ip) in [(node1, NODE1_IP), (node2, NODE2_IP)] {
        let uplink = node
            .ns
            .block_on(|| async move { uplink_for(ip).await })
            .expect("uplink")
            .expect("an uplink holds the node ip");
        assert_eq!(uplink.name, UPLINK);
        assert_eq!(uplink.mtu, Some(1500));
        node.ns
            .run(|| enable_forwarding(&uplink.name))
            .expect("uplink forwarding");
        assert_eq!(node.ns.sysctl("conf/berthup/forwarding"), "1");
        assert_eq!(node.ns.sysctl("ip_forward"), "0");
    }
    let none = node1
        .ns
        .block_on(|| async { uplink_for(Ipv4Addr::new(192, 0, 2, 99)).await })
        .expect("uplink lookup");
    assert_eq!(none, None);
}

/// Sync touches only what changed and only Berth's routes; cleanup removes them all.
fn routes_are_incremental_and_berth_only(node: &Node) {
    let route2 = format!("10.244.2.0/24 via {NODE2_IP} dev {UPLINK}");
    assert!(
        node.berth_routes().starts_with(&route2),
        "{}",
        node.berth_routes()
    );
    let report = node.sync(&[("10.244.2.0/24", NODE2_IP)]);
    assert_eq!(
        (report.written, report.unchanged, report.removed),
        (0, 1, 0)
    );

    // A foreign route to a podCIDR is a conflict, never replaced; nor is an unrelated one.
    node.ns.ok(
        "ip",
        &[
            "route",
            "add",
            "10.244.9.0/24",
            "via",
            &OUTSIDE_IP.to_string(),
            "proto",
            "static",
        ],
    );
    node.ns.ok(
        "ip",
        &[
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            &OUTSIDE_IP.to_string(),
        ],
    );
    let report = node.sync(&[
        ("10.244.2.0/24", NODE2_IP),
        ("10.244.9.0/24", NODE2_IP),
        // Reached through a router: needs onlink.
        ("10.244.7.0/24", Ipv4Addr::new(203, 0, 113, 7)),
        // Not reachable at all, and this node's own address: reported, the rest still synced.
        ("10.244.5.0/24", Ipv4Addr::new(192, 0, 2, 5)),
        ("10.244.6.0/24", NODE1_IP),
    ]);
    assert_eq!(
        report.conflicts,
        vec!["10.244.9.0/24".parse::<Ipv4Cidr>().unwrap()]
    );
    assert_eq!((report.written, report.unchanged), (1, 1));
    assert!(
        matches!(
            report.failed.as_slice(),
            [
                RoutesError::Unreachable { .. },
                RoutesError::OwnAddress { .. }
            ]
        ),
        "{:?}",
        report.failed
    );
    let foreign = node.ns.ok("ip", &["route", "show", "10.244.9.0/24"]);
    assert!(foreign.contains("proto static"), "{foreign}");
    let onlink = node.ns.ok("ip", &["route", "show", "10.244.7.0/24"]);
    assert!(
        onlink.contains("via 203.0.113.7 dev berthup proto 180") && onlink.contains("onlink"),
        "{onlink}"
    );

    // A node's address changes: only its route is replaced; one disappears: only it is removed.
    let report = node.sync(&[
        ("10.244.2.0/24", OUTSIDE_IP),
        ("10.244.7.0/24", Ipv4Addr::new(203, 0, 113, 7)),
    ]);
    assert_eq!((report.written, report.unchanged), (1, 1));
    assert!(node
        .berth_routes()
        .contains(&format!("10.244.2.0/24 via {OUTSIDE_IP}")));
    let listed = node.ns.block_on(|| async {
        NodeRoutes::new()
            .expect("routes")
            .list()
            .await
            .expect("list")
    });
    assert_eq!(listed.len(), 2, "{listed:?}");
    let report = node.sync(&[("10.244.2.0/24", NODE2_IP)]);
    assert_eq!((report.written, report.removed), (1, 1));
    assert!(node.berth_routes().starts_with(&route2));

    // cleanup removes only Berth's routes.
    let removed = node
        .ns
        .block_on(|| async { NodeRoutes::new().expect("routes").cleanup().await })
        .expect("cleanup");
    assert_eq!(removed, 1);
    assert_eq!(node.berth_routes(), "");
    assert!(node
        .ns
        .ok("ip", &["route", "show", "10.244.9.0/24"])
        .contains("proto static"));
    node.ns.ok("ip", &["route", "del", "10.244.9.0/24"]);
    node.ns.ok("ip", &["route", "del", "203.0.113.0/24"]);
    node.sync(&[("10.244.2.0/24", NODE2_IP)]);
}
