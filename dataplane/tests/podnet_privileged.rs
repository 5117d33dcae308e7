//! Privileged: `podnet` against real network namespaces, veths, routes and traffic.
//!
//! The test re-executes itself under `unshare --net`, so its "host" is a throwaway network
//! namespace: it never sees or touches the machine's own links and routes, may run
//! `cleanup_all`, and everything it creates (links, routes, pod namespaces held only by file
//! descriptors) disappears with the process even if it is killed. Its loopback carries
//! 192.0.2.10 as a stand-in for the node's InternalIP.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use berth_dataplane::podnet::{host_ifname, PodAddress, PodNetConfig, PodNetError, PodNetwork};
use support::{can_run_privileged, inner_run, run_in_own_netns, run_ok, skip, Netns};

const TEST_NAME: &str = "podnet_in_isolated_host_namespace";
/// Set for the re-executed test: the file it writes when it got to the end.
const INNER_ENV: &str = "BERTH_PODNET_INNER_MARKER";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn podnet_in_isolated_host_namespace() {
    if inner_run(INNER_ENV, run_inner) {
        return;
    }
    if let Err(reason) = can_run_privileged(&["unshare", "nsenter", "ip", "busybox", "ethtool"]) {
        skip(&reason);
        return;
    }
    run_in_own_netns(TEST_NAME, INNER_ENV);
}

fn run_inner() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario());
}

fn ping_from_host(ip: Ipv4Addr) {
    run_ok("busybox", &["ping", "-c", "1", "-W", "2", &ip.to_string()]);
}

fn ping_from_pod(ns: &Netns, ip: Ipv4Addr) {
    ns.ok("busybox", &["ping", "-c", "1", "-W", "2", &ip.to_string()]);
}

fn ifindex(ifname: &str) -> String {
    fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex")).unwrap_or_default()
}

fn host_links() -> String {
    run_ok("ip", &["-o", "link"])
}

/// Sends a line over an accepted connection and checks the peer's address.
fn exchange(listener: &TcpListener, client: &mut TcpStream, expected_peer: Ipv4Addr) {
    let (mut server, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), IpAddr::V4(expected_peer));
    client.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    server.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    server.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"hello");
}

fn check_pod_side(ns: &Netns, addr: &PodAddress) {
    let inet = ns.ok("ip", &["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(inet.contains(&format!("inet {}/32", addr.ip)), "{inet}");
    let eth0 = ns.ok("ip", &["-o", "link", "show", "eth0"]);
    assert!(eth0.contains(",UP,") && eth0.contains("mtu 1400"), "{eth0}");
    let lo = ns.ok("ip", &["-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    // GRO gives the pod's end NAPI, which NodePort XDP's redirects into the pod need.
    let features = ns.ok("ethtool", &["-k", "eth0"]);
    assert!(
        features.contains("generic-receive-offload: on"),
        "{features}"
    );
    let routes = ns.ok("ip", &["-4", "route", "show", "default"]);
    let default = format!("default via {GATEWAY} dev eth0 ");
    assert!(
        routes.starts_with(&default) && routes.contains(" onlink"),
        "{routes}"
    );
}

fn check_traffic(ns: &Netns, addr: &PodAddress) {
    ping_from_host(addr.ip);
    ping_from_pod(ns, GATEWAY);
    ping_from_pod(ns, NODE_IP);

    // Host → pod: the host reaches the pod from the gateway address.
    let listener = ns.run(|| TcpListener::bind("0.0.0.0:0").expect("bind in pod"));
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect_timeout(&SocketAddr::from((addr.ip, port)), IO_TIMEOUT)
        .expect("host connects to pod");
    exchange(&listener, &mut client, GATEWAY);

    // Pod → host, at the node's address and at the gateway.
    for host_ip in [NODE_IP, GATEWAY] {
        let listener = TcpListener::bind((host_ip, 0)).expect("bind on host");
        let target = listener.local_addr().expect("addr");
        let mut client = ns
            .run(|| TcpStream::connect_timeout(&target, IO_TIMEOUT).expect("pod connects to host"));
        exchange(&listener, &mut client, addr.ip);
    }
}

async fn scenario() {
    run_ok("ip", &["link", "set", "lo", "up"]);
    run_ok(
        "ip",
        &["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"],
    );
    let state = tempfile::tempdir().expect("state dir");
    let config = PodNetConfig {
        pod_cidr: "10.244.0.0/24".parse().expect("cidr"),
        state_dir: state.path().join("ipam"),
        mtu: 1400,
    };
    let net = PodNetwork::new(config.clone()).expect("podnet");

    // Attach: the pod's side and both directions of traffic.
    let ns_a = Netns::new();
    let started = std::time::Instant::now();
    let a = net.attach("uid-a", &ns_a.path).await.expect("attach a");
    eprintln!("first attach took {:?}", started.elapsed());
    assert_eq!(a.prefix, 32);
    assert_eq!(a.gateway, GATEWAY);
    assert_eq!(a.host_ifname, host_ifname("uid-a"));
    assert!(config.pod_cidr.contains(a.ip) && a.ip != GATEWAY);
    check_pod_side(&ns_a, &a);
    let veth = run_ok("ip", &["-o", "link", "show", &a.host_ifname]);
    assert!(
        veth.contains("mtu 1400") && veth.contains("alias uid-a"),
        "{veth}"
    );
    let route = run_ok("ip", &["route", "show", "exact", &a.ip.to_string()]);
    let dev = format!("{} dev {} ", a.ip, a.host_ifname);
    assert!(
        route.starts_with(&dev) && route.contains(&format!("scope link src {GATEWAY}")),
        "{route}"
    );
    check_traffic(&ns_a, &a);

    // Attach again: same address, same links.
    let index = ifindex(&a.host_ifname);
    assert_eq!(
        net.attach("uid-a", &ns_a.path).await.expect("re-attach a"),
        a
    );
    assert_eq!(ifindex(&a.host_ifname), index);

    // A restarted kubelet re-adopts the address, and attach repairs a missing route.
    ns_a.ok("ip", &["route", "del", "default"]);
    let restarted = PodNetwork::new(config.clone()).expect("podnet after restart");
    assert_eq!(restarted.address_of("uid-a"), Some(a.ip));
    assert_eq!(
        restarted
            .attach("uid-a", &ns_a.path)
            .await
            .expect("repair a"),
        a
    );
    check_pod_side(&ns_a, &a);
    drop(restarted);

    // A second pod gets another address and its own veth.
    let ns_b = Netns::new();
    let b = net.attach("uid-b", &ns_b.path).await.expect("attach b");
    assert_ne!(b.ip, a.ip);
    assert_ne!(b.host_ifname, a.host_ifname);
    check_traffic(&ns_b, &b);

    // A deleted host veth (its peer goes with it) is recreated with the same address.
    run_ok("ip", &["link", "del", &b.host_ifname]);
    assert_eq!(net.attach("uid-b", &ns_b.path).await.expect("repair b"), b);
    check_pod_side(&ns_b, &b);
    ping_from_host(b.ip);

    // A new sandbox for pod a: the veth moves to the new namespace, the old one loses eth0.
    let ns_a2 = Netns::new();
    assert_eq!(
        net.attach("uid-a", &ns_a2.path)
            .await
            .expect("attach a's new sandbox"),
        a
    );
    check_pod_side(&ns_a2, &a);
    assert!(!ns_a.ok("ip", &["-o", "link"]).contains("eth0"));
    ping_from_host(a.ip);

    // An eth0 that is not ours is refused, and nothing is created for it on the host.
    let ns_foreign = Netns::new();
    ns_foreign.ok(
        "ip",
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    );
    let err = net
        .attach("uid-c", &ns_foreign.path)
        .await
        .expect_err("foreign eth0");
    assert!(matches!(err, PodNetError::ForeignInterface { .. }), "{err}");
    assert!(!host_links().contains(&host_ifname("uid-c")));
    net.detach("uid-c").await.expect("detach c");

    // Detach: no link, no route, address free; twice is fine.
    net.detach("uid-a").await.expect("detach a");
    net.detach("uid-a").await.expect("detach a again");
    assert!(!host_links().contains(&a.host_ifname));
    assert!(!ns_a2.ok("ip", &["-o", "link"]).contains("eth0"));
    assert_eq!(run_ok("ip", &["route", "show", &a.ip.to_string()]), "");
    assert_eq!(net.address_of("uid-a"), None);
    assert!(!config.state_dir.join(a.ip.to_string()).exists());

    // Cleanup removes every berth link and all allocations.
    assert_eq!(net.cleanup_all().await.expect("cleanup"), 1);
    assert!(!host_links().contains("berth"), "{}", host_links());
    assert_eq!(net.address_of("uid-b"), None);
    let left: Vec<_> = fs::read_dir(&config.state_dir)
        .expect("state dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
