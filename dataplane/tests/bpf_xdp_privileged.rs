//! Privileged: NodePort through XDP on a node's uplink. Runs isolated (own network and mount
//! namespaces): the process's namespace is the node N (forwarding on, its own sysctls); an
//! outside namespace O (the client, and a backend "behind the uplink") hangs off N's uplink
//! `berthup0`, two pod namespaces off `berthp1`/`berthp2` (lb.bpf.o's tcx program on them
//! reverse-translates the pods' replies), all held only by file descriptors.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use berth_dataplane::abi::{
    CtKey, MaglevValue, NodeAddrKey, NodeAddrValue, SvcKey, CT_FORWARD, CT_F_CLOSING, CT_REVERSE,
    CT_SNAT_IN, CT_SNAT_OUT, MAGLEV_SIZE, PROTO_TCP, PROTO_UDP, SNAT_PORT_MIN, SVC_MAGLEV,
    SVC_NODEPORT,
};
use berth_dataplane::loader::{Attached, Datapath, LbMaps, XdpAttached, XdpMode};
use support::bpf::{add_service, TestBpffs};
use support::echo::{echo_tcp, echo_udp};
use support::{
    assert_isolated, can_run_privileged, inner_run, ip, kernel_at_least, run_isolated, skip, Netns,
};

const TEST_NAME: &str = "nodeport_through_xdp_reaches_pods_and_backends_behind_the_uplink";
const INNER_ENV: &str = "BERTH_XDP_INNER_MARKER";

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// A backend in the outside namespace: reached back through the uplink, so SNATed.
const FAR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 3);
const POD_GW: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 2, 1)];
const POD: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 2, 2)];
const POD_IF: [&str; 2] = ["berthp1", "berthp2"];
const UPLINK: &str = "berthup0";

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const NP_TCP: u16 = 30080;
const NP_UDP: u16 = 30053;
const NP_EMPTY: u16 = 30099;
const NP_FAR: u16 = 30081;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn nodeport_through_xdp_reaches_pods_and_backends_behind_the_uplink() {
    if inner_run(INNER_ENV, run_inner) {
        return;
    }
    if let Err(reason) = can_run_privileged(&["unshare", "ip", "nsenter", "ethtool"]) {
        skip(&reason);
        return;
    }
    if !kernel_at_least(6, 6) {
        skip("the pods' tcx program needs Linux 6.6 or later");
        return;
    }
    run_isolated(TEST_NAME, INNER_ENV);
}

/// TCP and UDP echo servers on `addr` in `ns` that answer "<name>|<peer>|<data>". The TCP one
/// closes after its first answer when asked "who".
fn serve(ns: &Netns, name: &'static str, addr: Ipv4Addr) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let tcp_ready = ready_tx.clone();
    ns.spawn(move || {
        let listener = TcpListener::bind((addr, TCP_PORT)).expect("bind tcp");
        tcp_ready.send(()).expect("ready");
        echo_tcp(
            listener,
            move |peer| format!("{name}|{peer}|"),
            Some(b"who"),
        );
    });
    ns.spawn(move || {
        let socket = UdpSocket::bind((addr, UDP_PORT)).expect("bind udp");
        ready_tx.send(()).expect("ready");
        echo_udp(socket, |from| format!("{name}|{from}|"));
    });
    ready_rx.recv().expect("tcp server ready");
    ready_rx.recv().expect("udp server ready");
}

/// One TCP exchange with `to`: (what came back, the client's own address).
fn tcp_ask(to: SocketAddr, message: &str) -> (String, SocketAddr) {
    let mut stream = TcpStream::connect_timeout(&to, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    assert_eq!(stream.peer_addr().expect("peer"), to);
    stream.write_all(message.as_bytes()).expect("write");
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).expect("read echo");
    if message == "who" {
        // The server closes after answering: wait for its FIN.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("read to the end");
        assert!(rest.is_empty(), "one answer only");
    }
    (
        String::from_utf8_lossy(&buf[..n]).into_owned(),
        stream.local_addr().expect("local"),
    )
}

fn nodeport(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(NODE, port))
}

fn maglev_of(ids: &[u32]) -> MaglevValue {
    let mut table = MaglevValue {
        backend_ids: [0; MAGLEV_SIZE],
    };
    for (index, slot) in table.backend_ids.iter_mut().enumerate() {
        *slot = ids[index % ids.len()];
    }
    table
}

fn add_nodeport(
    maps: &mut LbMaps,
    port: u16,
    proto: u8,
    svc_id: u32,
    first_backend_id: u32,
    backends: &[(Ipv4Addr, u16)],
) {
    let key = SvcKey::new(Ipv4Addr::UNSPECIFIED, port, proto);
    add_service(
        maps,
        key,
        svc_id,
        SVC_NODEPORT | SVC_MAGLEV,
        0,
        first_backend_id,
        backends,
    );
    if !backends.is_empty() {
        let ids: Vec<u32> = (0..backends.len() as u32)
            .map(|index| first_backend_id + index)
            .collect();
        maps.maglev
            .insert(&svc_id, &maglev_of(&ids))
            .expect("insert maglev table");
    }
}

fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

fn clear_ct(maps: &mut LbMaps) {
    let keys: Vec<CtKey> = maps
        .ct
        .entries()
        .expect("ct entries")
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    for key in keys {
        maps.ct.remove(&key).expect("remove ct entry");
    }
}

fn run_inner() {
    assert_isolated();
    fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("forwarding in N");
    fs::write("/proc/sys/net/ipv4/conf/all/rp_filter", "0").expect("rp_filter in N");
    ip(&["link", "set", "lo", "up"]);

    let outside = Netns::new();
    outside.wire(UPLINK, NODE, CLIENT);
    outside.ip(&["addr", "add", &format!("{FAR}/24"), "dev", "eth0"]);
    let pods = [Netns::new(), Netns::new()];
    for (index, pod) in pods.iter().enumerate() {
        pod.wire(POD_IF[index], POD_GW[index], POD[index]);
        pod.ip(&["route", "add", "default", "via", &POD_GW[index].to_string()]);
        // As the pod network leaves a pod's eth0: GRO on, so NAPI for redirected frames.
        pod.ok("ethtool", &["-K", "eth0", "gro", "on"]);
        // The pod's reply leaves the tcx program with the node's own address as source.
        fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/accept_local", POD_IF[index]),
            "1",
        )
        .expect("accept_local");
    }
    serve(&pods[0], "pod1", POD[0]);
    serve(&pods[1], "pod2", POD[1]);
    serve(&outside, "far", FAR);

    let bpffs = TestBpffs::new();
    let mut datapath = Datapath::open(&bpffs.path()).expect("open datapath");
    let maps = datapath.maps_mut();
    maps.node_addrs
        .insert(&NodeAddrKey::new(NODE), &NodeAddrValue { ifindex: 0 })
        .expect("insert node address");
    let pod_backends = [(POD[0], TCP_PORT), (POD[1], TCP_PORT)];
    add_nodeport(maps, NP_TCP, PROTO_TCP, 10, 100, &pod_backends);
    let pod_udp = [(POD[0], UDP_PORT), (POD[1], UDP_PORT)];
    add_nodeport(maps, NP_UDP, PROTO_UDP, 11, 110, &pod_udp);
    add_nodeport(maps, NP_EMPTY, PROTO_TCP, 12, 120, &[]);
    add_nodeport(maps, NP_FAR, PROTO_TCP, 13, 130, &[(FAR, TCP_PORT)]);
    for ifname in POD_IF {
        datapath
            .attach_tc(ifname)
            .expect("attach tcx to a pod veth");
    }
    // Generic XDP keeps the skb, so veth's partial checksums survive it; native XDP sends what
    // it transmits as is, so the client's veth then computes full checksums, as a wire has.
    exercise(&mut datapath, &outside, XdpMode::Generic);
    outside.ok("ethtool", &["-K", "eth0", "tx", "off"]);
    exercise(&mut datapath, &outside, XdpMode::Driver);

    // Neither program: the NodePort is just a closed port of the node.
    let error = outside
        .spawn(|| TcpStream::connect_timeout(&nodeport(NP_TCP), IO_TIMEOUT).map(drop))
        .join()
        .expect("client");
    assert_eq!(
        error.expect_err("no NodePort without the programs").kind(),
        ErrorKind::ConnectionRefused
    );
    drop(datapath);
    drop(bpffs);
}

/// Every NodePort path with XDP attached in `mode` (beside the tc twin), then with the tc twin
/// alone; leaves neither attached.
fn exercise(datapath: &mut Datapath, outside: &Netns, mode: XdpMode) {
    clear_ct(datapath.maps_mut());
    if mode == XdpMode::Driver {
        // Native XDP_TX back into the uplink needs NAPI on its peer.
        with_pass_in(datapath, outside, true);
    }
    assert_eq!(
        datapath.attach_xdp(UPLINK, mode).expect("attach xdp"),
        XdpAttached::New(mode)
    );
    assert_eq!(
        datapath.attach_xdp(UPLINK, mode).expect("attach again"),
        XdpAttached::Kept
    );
    // TCP to the pods: replies come back as nodeIP:nodePort, the pod sees the client, the
    // flow stays on its backend, and different client ports spread over both pods.
    let (seen_pods, flows) = outside
        .spawn(|| {
            let mut pods = BTreeSet::new();
            let mut flows = Vec::new();
            for _ in 0..16 {
                let to = nodeport(NP_TCP);
                let mut stream = TcpStream::connect_timeout(&to, IO_TIMEOUT).expect("connect");
                stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                assert_eq!(stream.peer_addr().expect("peer"), to);
                let local = stream.local_addr().expect("local");
                let mut answers = Vec::new();
                for message in ["one", "two"] {
                    stream.write_all(message.as_bytes()).expect("write");
                    let mut buf = [0u8; 256];
                    let n = stream.read(&mut buf).expect("read echo");
                    answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                let pod = answers[0].split('|').next().expect("name").to_string();
                assert_eq!(
                    answers,
                    [format!("{pod}|{local}|one"), format!("{pod}|{local}|two")],
                    "one flow, one backend, the client's own address"
                );
                pods.insert(pod);
                flows.push(local);
            }
            (pods, flows)
        })
        .join()
        .expect("tcp client");
    assert_eq!(
        seen_pods,
        BTreeSet::from(["pod1".to_string(), "pod2".to_string()]),
        "Maglev spreads client ports over both pods"
    );
    let entries = datapath.maps().ct.entries().expect("ct entries");
    for local in &flows {
        let SocketAddr::V4(local) = local else {
            panic!("ipv4")
        };
        let forward = entries.iter().find(|(key, _)| {
            key.dir == CT_FORWARD
                && key.saddr == be(*local.ip())
                && key.sport == local.port().to_be()
                && key.daddr == be(NODE)
                && key.dport == NP_TCP.to_be()
        });
        let (_, forward) = forward.expect("a forward entry per flow");
        assert!(forward.nat_addr == be(POD[0]) || forward.nat_addr == be(POD[1]));
        let reverse = entries.iter().find(|(key, _)| {
            key.dir == CT_REVERSE
                && key.saddr == forward.nat_addr
                && key.daddr == be(*local.ip())
                && key.dport == local.port().to_be()
        });
        let (_, reverse) = reverse.expect("a reverse entry per flow");
        assert_eq!(
            (reverse.nat_addr, reverse.nat_port),
            (be(NODE), NP_TCP.to_be())
        );
    }

    // UDP: the same 5-tuple picks the same pod even with conntrack forgotten (Maglev alone);
    // different source ports reach both.
    let ask_udp = || {
        outside
            .spawn(|| {
                let mut answers = Vec::new();
                for port in 42000..42012u16 {
                    let socket = UdpSocket::bind((CLIENT, port)).expect("bind udp");
                    socket.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                    socket.send_to(b"ping", nodeport(NP_UDP)).expect("send");
                    let mut buf = [0u8; 256];
                    let (n, from) = socket.recv_from(&mut buf).expect("udp reply");
                    assert_eq!(from, nodeport(NP_UDP));
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    assert!(text.ends_with(&format!("|{CLIENT}:{port}|ping")), "{text}");
                    answers.push(text.split('|').next().expect("name").to_string());
                }
                answers
            })
            .join()
            .expect("udp client")
    };
    // Not allowed to redirect into the pods' veths, XDP leaves the rewritten requests to the
    // kernel's forwarding path; the replies take it anyway (pod -> tcx -> uplink).
    let forwarded = forwarded_datagrams();
    let first = ask_udp();
    let exchanges = first.len() as u64;
    assert_eq!(forwarded_datagrams() - forwarded, 2 * exchanges);
    clear_ct(datapath.maps_mut());
    assert_eq!(ask_udp(), first, "the same 5-tuples hit the same pods");
    let udp_pods: BTreeSet<&String> = first.iter().collect();
    assert_eq!(udp_pods.len(), 2, "{first:?}");
    // Allowed (the pods' ends have GRO, so NAPI), XDP redirects the requests into the pods'
    // veths itself: only the replies cross the kernel's forwarding path.
    for ifname in POD_IF {
        datapath.allow_xdp_redirect(ifname).expect("allow redirect");
    }
    clear_ct(datapath.maps_mut());
    let forwarded = forwarded_datagrams();
    assert_eq!(ask_udp(), first, "redirected to the same pods");
    assert_eq!(forwarded_datagrams() - forwarded, exchanges);
    for ifname in POD_IF {
        assert!(datapath
            .forbid_xdp_redirect(ifname)
            .expect("forbid redirect"));
    }
    assert!(datapath
        .maps()
        .xdp_devs
        .ifindexes()
        .expect("list")
        .is_empty());

    // No ready backends: the kernel refuses at once (RST), XDP leaves the packet alone.
    refused_fast(outside);

    // The tc twin beside XDP takes what XDP cannot forward yet: in the first (generic) run the
    // node has no neighbour entry for the far backend, so the first packet goes through tc;
    // in the native run the entry is there and the far path is XDP's alone.
    if mode == XdpMode::Generic {
        attach_nodeport_tc(datapath);
    }
    // A backend behind the uplink: SNATed to the node, sent back out by XDP, and its reply
    // reverse-translated on the way in.
    let (answer, _) = outside
        .spawn(|| tcp_ask(nodeport(NP_FAR), "far away"))
        .join()
        .expect("far client");
    assert!(answer.starts_with(&format!("far|{NODE}:")), "{answer}");
    // "who": the backend answers and closes, so its FIN has passed XDP when the client reads
    // the end of the stream.
    let (answer, local) = outside
        .spawn(|| tcp_ask(nodeport(NP_FAR), "who"))
        .join()
        .expect("far client");
    let (name, rest) = answer.split_once('|').expect("name");
    assert_eq!(name, "far");
    let (peer, data) = rest.split_once('|').expect("peer");
    assert_eq!(data, "who");
    let peer: SocketAddrV4 = peer.parse().expect("peer address");
    assert_eq!(*peer.ip(), NODE, "the far backend sees the node");
    assert!(peer.port() >= SNAT_PORT_MIN, "{peer}");
    let entries = datapath.maps().ct.entries().expect("ct entries");
    let SocketAddr::V4(local) = local else {
        panic!("ipv4")
    };
    assert!(entries.iter().any(|(key, value)| key.dir == CT_SNAT_OUT
        && key.sport == local.port().to_be()
        && value.nat_port == peer.port().to_be()));
    assert!(
        entries.iter().any(|(key, value)| key.dir == CT_SNAT_IN
            && key.dport == peer.port().to_be()
            && value.nat_addr == be(CLIENT)
            && value.nat_port == local.port().to_be()
            && value.flags & CT_F_CLOSING != 0),
        "the closed flow's SNAT port is marked for reuse"
    );

    if mode == XdpMode::Driver {
        attach_nodeport_tc(datapath);
    }

    // The tc twin alone does the same.
    assert!(datapath.detach_xdp(UPLINK).expect("detach xdp"));
    assert!(!datapath.detach_xdp(UPLINK).expect("detach again"));
    clear_ct(datapath.maps_mut());
    let (answer, local) = outside
        .spawn(|| tcp_ask(nodeport(NP_TCP), "via tc"))
        .join()
        .expect("tc client");
    assert!(answer.ends_with(&format!("|{local}|via tc")), "{answer}");
    let (answer, _) = outside
        .spawn(|| tcp_ask(nodeport(NP_FAR), "far via tc"))
        .join()
        .expect("tc far client");
    assert!(answer.starts_with(&format!("far|{NODE}:")), "{answer}");
    refused_fast(outside);
    assert!(datapath.detach_nodeport_tc(UPLINK).expect("detach tc"));
    if mode == XdpMode::Driver {
        with_pass_in(datapath, outside, false);
    }
}

fn attach_nodeport_tc(datapath: &mut Datapath) {
    assert_eq!(
        datapath.attach_nodeport_tc(UPLINK).expect("attach tc"),
        Attached { new: 1, kept: 0 }
    );
    assert_eq!(
        datapath
            .attach_nodeport_tc(UPLINK)
            .expect("attach tc again"),
        Attached { new: 0, kept: 1 }
    );
}

/// IPv4 datagrams this (the node's) namespace has forwarded: `Ip: ForwDatagrams` in
/// /proc/net/snmp.
fn forwarded_datagrams() -> u64 {
    let snmp = fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
    let mut ip = snmp.lines().filter(|line| line.starts_with("Ip:"));
    let (names, values) = (ip.next().expect("Ip header"), ip.next().expect("Ip values"));
    let column = names
        .split_whitespace()
        .position(|name| name == "ForwDatagrams")
        .expect("ForwDatagrams column");
    values
        .split_whitespace()
        .nth(column)
        .and_then(|value| value.parse().ok())
        .expect("ForwDatagrams value")
}

fn refused_fast(outside: &Netns) {
    let (result, took) = outside
        .spawn(|| {
            let start = Instant::now();
            let result = TcpStream::connect_timeout(&nodeport(NP_EMPTY), IO_TIMEOUT).map(drop);
            (result, start.elapsed())
        })
        .join()
        .expect("client");
    assert_eq!(
        result.expect_err("nothing to connect to").kind(),
        ErrorKind::ConnectionRefused
    );
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
}

/// Attaches (or detaches) the pass program on the outside end of the uplink, from inside that
/// namespace.
fn with_pass_in(datapath: &mut Datapath, outside: &Netns, attach: bool) {
    outside.run(|| {
        if attach {
            let attached = datapath
                .attach_xdp_pass("eth0", XdpMode::Driver)
                .expect("attach the pass program");
            assert_eq!(attached, XdpAttached::New(XdpMode::Driver));
        } else {
            assert!(datapath.detach_xdp_pass("eth0").expect("detach pass"));
        }
    });
}
