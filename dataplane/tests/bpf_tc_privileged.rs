//! Privileged: the per-packet Service path as tcx ingress on a router's veths. Runs isolated
//! (own network and mount namespaces): the process's namespace is the router R (forwarding on,
//! its own sysctl), a client namespace C and a server namespace S hang off it by `berth*`
//! veths, all held only by file descriptors.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use aya::programs::{SchedClassifier, TcAttachType};
use berth_dataplane::abi::{
    MaglevValue, SvcKey, CT_FORWARD, CT_REVERSE, MAGLEV_SIZE, PROTO_TCP, PROTO_UDP, SVC_MAGLEV,
};
use berth_dataplane::loader::{Attached, Datapath};
use support::bpf::{add_service, TestBpffs};
use support::echo::{echo_tcp, echo_udp};
use support::{
    assert_isolated, can_run_privileged, inner_run, ip, kernel_at_least, run_isolated, skip, Netns,
};

const TEST_NAME: &str = "tc_path_dnats_to_a_backend_and_reverses_replies";
const INNER_ENV: &str = "BERTH_TC_INNER_MARKER";

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 88, 1);
const ROUTER_C: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const ROUTER_S: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const IF_C: &str = "berthc0";
const IF_S: &str = "berths0";
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn tc_path_dnats_to_a_backend_and_reverses_replies() {
    if inner_run(INNER_ENV, run_inner) {
        return;
    }
    if let Err(reason) = can_run_privileged(&["unshare", "ip", "nsenter"]) {
        skip(&reason);
        return;
    }
    if !kernel_at_least(6, 6) {
        skip("tcx needs Linux 6.6 or later");
        return;
    }
    run_isolated(TEST_NAME, INNER_ENV);
}

/// Joins `ns` to the router (this namespace): `host_if` here with `router_addr`/24, `eth0`
/// there with `addr`/24 and a default route back through the router. (Replies carry the VIP
/// as source after reverse NAT; strict reverse-path filtering on the backend's veth would drop
/// them, so `wire` turns it off.)
fn wire(ns: &Netns, host_if: &str, router_addr: Ipv4Addr, addr: Ipv4Addr) {
    ns.wire(host_if, router_addr, addr);
    ns.ip(&["route", "add", "default", "via", &router_addr.to_string()]);
}

fn serve(server: &Netns) {
    server.spawn(|| {
        let listener = TcpListener::bind((SERVER, TCP_PORT)).expect("bind tcp");
        // Tells the client who it saw: DNAT keeps the client's own address.
        echo_tcp(listener, |peer| format!("{peer}|"), None);
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    server.spawn(move || {
        let socket = UdpSocket::bind((SERVER, UDP_PORT)).expect("bind udp");
        ready_tx.send(()).expect("ready");
        echo_udp(socket, |_| String::new());
    });
    ready_rx.recv().expect("udp server ready");
}

fn run_inner() {
    // Forwarding and rp_filter here are this namespace's own settings.
    assert_isolated();
    fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("forwarding in R");
    fs::write("/proc/sys/net/ipv4/conf/all/rp_filter", "0").expect("rp_filter in R");
    ip(&["link", "set", "lo", "up"]);

    let client = Netns::new();
    let server = Netns::new();
    wire(&client, IF_C, ROUTER_C, CLIENT);
    wire(&server, IF_S, ROUTER_S, SERVER);
    serve(&server);

    let bpffs = TestBpffs::new();
    let mut datapath = Datapath::open(&bpffs.path()).expect("open datapath");
    let maps = datapath.maps_mut();
    add_service(
        maps,
        SvcKey::new(VIP, 80, PROTO_TCP),
        1,
        0,
        0,
        1,
        &[(SERVER, TCP_PORT)],
    );
    add_service(
        maps,
        SvcKey::new(VIP, 53, PROTO_UDP),
        2,
        0,
        0,
        2,
        &[(SERVER, UDP_PORT)],
    );
    // Maglev: every table entry is the one backend.
    add_service(
        maps,
        SvcKey::new(VIP, 81, PROTO_TCP),
        3,
        SVC_MAGLEV,
        0,
        3,
        &[(SERVER, TCP_PORT)],
    );
    maps.maglev
        .insert(
            &3,
            &MaglevValue {
                backend_ids: [3; MAGLEV_SIZE],
            },
        )
        .expect("insert maglev table");
    for ifname in [IF_C, IF_S] {
        let attached = datapath.attach_tc(ifname).expect("attach tcx");
        assert_eq!(attached, Attached { new: 1, kept: 0 }, "{ifname}");
    }
    assert_eq!(
        datapath.attach_tc(IF_C).expect("attach again"),
        Attached { new: 0, kept: 1 }
    );

    let seen = client
        .spawn(|| {
            let vip = SocketAddr::V4(SocketAddrV4::new(VIP, 80));
            let mut stream =
                TcpStream::connect_timeout(&vip, IO_TIMEOUT).expect("connect to the VIP");
            stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            assert_eq!(stream.peer_addr().expect("peer"), vip);
            let mut replies = Vec::new();
            for message in ["one", "two"] {
                stream.write_all(message.as_bytes()).expect("write");
                let mut buf = [0u8; 256];
                let n = stream.read(&mut buf).expect("read echo");
                replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }

            let maglev_vip = SocketAddr::V4(SocketAddrV4::new(VIP, 81));
            let mut maglev = TcpStream::connect_timeout(&maglev_vip, IO_TIMEOUT)
                .expect("connect to the Maglev VIP");
            maglev.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            maglev.write_all(b"m").expect("write");
            let mut buf = [0u8; 256];
            let n = maglev.read(&mut buf).expect("read echo");
            replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());

            let udp_vip = SocketAddr::V4(SocketAddrV4::new(VIP, 53));
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
            socket.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            socket.send_to(b"ping", udp_vip).expect("send to the VIP");
            let mut buf = [0u8; 64];
            let (n, from) = socket.recv_from(&mut buf).expect("udp reply");
            assert_eq!((&buf[..n], from), (&b"ping"[..], udp_vip));
            (replies, stream.local_addr().expect("local"))
        })
        .join()
        .expect("client");
    let (replies, local) = seen;
    assert_eq!(
        &replies[..2],
        [format!("{local}|one"), format!("{local}|two")]
    );
    assert!(replies[2].ends_with("|m"), "{replies:?}");

    let entries = datapath.maps().ct.entries().expect("ct entries");
    let tcp_forward = entries.iter().find(|(key, _)| {
        key.dir == CT_FORWARD
            && key.proto == PROTO_TCP
            && key.daddr == u32::from_ne_bytes(VIP.octets())
    });
    let (_, forward) = tcp_forward.expect("a forward entry for the TCP flow");
    assert_eq!(forward.nat_addr, u32::from_ne_bytes(SERVER.octets()));
    assert_eq!(forward.nat_port, TCP_PORT.to_be());
    let reverse = entries.iter().find(|(key, _)| {
        key.dir == CT_REVERSE
            && key.proto == PROTO_TCP
            && key.saddr == u32::from_ne_bytes(SERVER.octets())
    });
    let (_, reverse) = reverse.expect("a reverse entry for the TCP flow");
    assert_eq!(reverse.nat_addr, u32::from_ne_bytes(VIP.octets()));
    assert!(entries
        .iter()
        .any(|(key, _)| key.proto == PROTO_UDP && key.dir == CT_REVERSE));

    // A veth made again under the same name: the stale pin is replaced, not kept.
    ip(&["link", "del", IF_C]);
    wire(&client, IF_C, ROUTER_C, CLIENT);
    assert_eq!(
        datapath.attach_tc(IF_C).expect("attach to the new veth"),
        Attached { new: 1, kept: 0 }
    );

    for ifname in [IF_C, IF_S] {
        assert!(datapath.detach_tc(ifname).expect("detach"), "{ifname}");
        let (_, programs) =
            SchedClassifier::query_tcx(ifname, TcAttachType::Ingress).expect("query tcx");
        assert!(
            programs.is_empty(),
            "{ifname} still has {} programs",
            programs.len()
        );
    }
    assert!(!datapath.detach_tc(IF_C).expect("detach again"));
    drop(datapath);
    drop(bpffs);
}
