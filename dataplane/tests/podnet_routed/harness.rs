//! The test network: namespaces held by file descriptors, nodes with a pod network, and TCP
//! exchanges between them.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use berth_dataplane::podnet::{Ipv4Cidr, PodAddress, PodNetConfig, PodNetwork};
use berth_dataplane::routes::{NodeRoutes, SyncReport};

use crate::support::{run_ok, Netns};

/// Every LAN host's end of its veth.
pub const UPLINK: &str = "berthup";
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A network namespace with its loopback up.
pub fn new_ns() -> Netns {
    let ns = Netns::new();
    ns.ok("ip", &["link", "set", "lo", "up"]);
    ns
}

/// A host on the LAN: its `berthup` holds `ip/24`, its other end is a bridge port.
pub fn plug(ns: &Netns, port: &str, ip: Ipv4Addr) {
    let netns = ns.path.display().to_string();
    run_ok(
        "ip",
        &[
            "link", "add", port, "type", "veth", "peer", "name", UPLINK, "netns", &netns,
        ],
    );
    run_ok("ip", &["link", "set", port, "master", "berthlan", "up"]);
    ns.ok("ip", &["addr", "add", &format!("{ip}/24"), "dev", UPLINK]);
    ns.ok("ip", &["link", "set", UPLINK, "up"]);
}

/// A node: its namespace and its pod network.
pub struct Node {
    pub ns: Netns,
    net: PodNetwork,
    _state: tempfile::TempDir,
}

impl Node {
    pub fn new(port: &str, ip: Ipv4Addr, pod_cidr: &str) -> Self {
        let ns = new_ns();
        plug(&ns, port, ip);
        let state = tempfile::tempdir().expect("state dir");
        let net = PodNetwork::new(PodNetConfig {
            pod_cidr: pod_cidr.parse().expect("cidr"),
            state_dir: state.path().join("ipam"),
            mtu: 1500,
        })
        .expect("podnet");
        Node {
            ns,
            net,
            _state: state,
        }
    }

    /// Attaches pod `uid`, whose namespace is `pod`, from a thread in the node's namespace.
    pub fn attach(&self, uid: &str, pod: &Netns) -> PodAddress {
        let net = self.net.clone();
        let path = pod.path.clone();
        self.ns
            .block_on(|| async move { net.attach(uid, &path).await })
            .expect("attach")
    }

    pub fn sync(&self, desired: &[(&str, Ipv4Addr)]) -> SyncReport {
        let desired: Vec<(Ipv4Cidr, Ipv4Addr)> = desired
            .iter()
            .map(|(cidr, via)| (cidr.parse().expect("cidr"), *via))
            .collect();
        self.ns.block_on(|| async move {
            let routes = NodeRoutes::new().expect("node routes");
            routes.sync(&desired).await.expect("sync")
        })
    }

    pub fn berth_routes(&self) -> String {
        self.ns
            .ok("ip", &["-4", "route", "show", "proto", "180"])
            .trim()
            .to_string()
    }
}

/// Listens on `ip:port` (0: any) inside `ns`.
pub fn listen(ns: &Netns, ip: Ipv4Addr, port: u16) -> TcpListener {
    ns.run(|| TcpListener::bind((ip, port)).expect("bind"))
}

pub fn connect(ns: &Netns, target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    ns.run(|| TcpStream::connect_timeout(&target, timeout))
}

/// Connects from `from` to `target`, which `listener` must accept; returns the source address
/// the listener saw, after one line went each way.
pub fn exchange(from: &Netns, target: SocketAddr, listener: &TcpListener) -> IpAddr {
    let mut client =
        connect(from, target, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect to {target}: {e}"));
    let (mut server, peer) = listener.accept().expect("accept");
    server.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.write_all(b"ping\n").expect("write");
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).expect("server read");
    server.write_all(&buf).expect("echo");
    let mut echoed = [0u8; 5];
    client.read_exact(&mut echoed).expect("client read");
    assert_eq!(&echoed, b"ping\n");
    peer.ip()
}

/// The source `to`'s listener sees when `from` connects to `to`'s pod address.
pub fn pod_to_pod(from: &Netns, to: &Netns, to_addr: &PodAddress) -> IpAddr {
    let listener = listen(to, Ipv4Addr::UNSPECIFIED, 0);
    let port = listener.local_addr().expect("addr").port();
    exchange(from, SocketAddr::from((to_addr.ip, port)), &listener)
}
