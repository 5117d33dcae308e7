//! NodePort in packets/s: a UDP NodePort Service on the router's client-facing address, its
//! backends the bench's server addresses, loaded either into Berth (the services Programmer's
//! frontend on address 0 with Maglev, the node address in `berth_nodeaddrs`, NodePort XDP in
//! driver mode on the router's client-facing veth and its tc twin beside it, as the agent
//! attaches them) or into iptables in kube-proxy's NodePort shape (`KUBE-SERVICES` →
//! `--dst-type LOCAL` → `KUBE-NODEPORTS` → `KUBE-EXT-*` (mark for masquerade) → `KUBE-SVC-*` →
//! `KUBE-SEP-*` DNAT with statistic probabilities).
//!
//! The load is a flood of small UDP datagrams from client threads, each over a few connected
//! sockets (one flow per source port), for a fixed window after a warm-up; what counts is the
//! packets that arrive on the backends' link (`eth0` of the server namespace, its rx counter),
//! divided by the window. Client and backends share the machine's cores with the path under
//! test, so both move datagrams in batches (`sendmmsg`/`recvmmsg`, [`BATCH`] a call): the
//! less their system calls cost, the more of the cores the NodePort path gets. UDP rather than
//! TCP: every datagram is one packet through the NodePort and nothing else, while a TCP
//! connection rate would mostly measure both ends' TCP stacks, which are the same on both
//! paths.

use std::fmt::Write as _;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
use serde_json::json;

use super::netns::{Netns, CLUSTER_CIDR, ROUTER_C};
use super::plan::NAMESPACE;
use super::rules::{hash16, MARK_MASQ, NODEPORTS};
use super::{io_err, DataplaneError};

/// The Service's name (its chains' hashes and Berth's service key come from it).
pub const NAME: &str = "nodeport-udp";
pub const NODE_PORT: u16 = 30053;
const PORT: u16 = 53;
const PORT_NAME: &str = "dns";
/// Where the backends listen (UDP), on each backend address.
pub const BACKEND_PORT: u16 = 9053;
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 97, 255, 1);
/// 18 bytes of payload: 60-byte frames, Ethernet's minimum without the FCS.
const PAYLOAD: [u8; 18] = *b"berth-nodeport-pps";
/// Connected sockets (so flows, source ports) per client thread.
pub const FLOWS_PER_THREAD: usize = 4;
/// Datagrams per sendmmsg/recvmmsg call.
const BATCH: usize = 32;

/// Where the client sends: the node's (router's) address on the client's link.
pub fn target() -> SocketAddrV4 {
    SocketAddrV4::new(ROUTER_C, NODE_PORT)
}

/// The NodePort Service and its EndpointSlice, as the API would serve them.
pub fn objects(backends: &[SocketAddrV4]) -> (Service, EndpointSlice) {
    let service = serde_json::from_value(json!({
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "type": "NodePort",
            "clusterIP": CLUSTER_IP.to_string(),
            "clusterIPs": [CLUSTER_IP.to_string()],
            "externalTrafficPolicy": "Cluster",
            "ports": [{"name": PORT_NAME, "port": PORT, "protocol": "UDP",
                       "targetPort": BACKEND_PORT, "nodePort": NODE_PORT}],
        },
    }))
    .expect("a literal service");
    let endpoints: Vec<_> = backends
        .iter()
        .map(|ep| json!({"addresses": [ep.ip().to_string()], "conditions": {"ready": true}}))
        .collect();
    let slice = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{NAME}-abcde"),
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": NAME},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": PORT_NAME, "port": BACKEND_PORT, "protocol": "UDP"}],
    }))
    .expect("a literal endpoint slice");
    (service, slice)
}

fn port_name() -> String {
    format!("{NAMESPACE}/{NAME}:{PORT_NAME}")
}

fn chain(prefix: &str) -> String {
    format!("BERTH-{prefix}-{}", hash16(&format!("{}udp", port_name())))
}

fn sep_chain(ep: &SocketAddrV4) -> String {
    format!("BERTH-SEP-{}", hash16(&format!("{}udp{ep}", port_name())))
}

/// The Service's rules in kube-proxy's shape, for `iptables-restore --noflush` on top of
/// [`super::rules::iptables_full`] (which holds the `KUBE-SERVICES` → `KUBE-NODEPORTS` jump).
pub fn iptables_rules(backends: &[SocketAddrV4]) -> String {
    let (name, svc, ext) = (port_name(), chain("SVC"), chain("EXT"));
    let mut out = String::from("*nat\n");
    for c in [&svc, &ext] {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for ep in backends {
        let _ = writeln!(out, ":{} - [0:0]", sep_chain(ep));
    }
    let _ = writeln!(
        out,
        "-I BERTH-KUBE-SERVICES 1 -m comment --comment \"{name} cluster IP\" -m udp -p udp -d \
         {CLUSTER_IP}/32 --dport {PORT} -j {svc}"
    );
    let _ = writeln!(
        out,
        "-A {NODEPORTS} -m comment --comment \"{name}\" -m udp -p udp --dport {NODE_PORT} -j {ext}"
    );
    let _ = writeln!(
        out,
        "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" \
         -j {MARK_MASQ}"
    );
    let _ = writeln!(out, "-A {ext} -j {svc}");
    let _ = writeln!(
        out,
        "-A {svc} -m comment --comment \"{name} cluster IP\" -m udp -p udp -d {CLUSTER_IP}/32 \
         --dport {PORT} ! -s {CLUSTER_CIDR} -j {MARK_MASQ}"
    );
    let endpoints: Vec<_> = backends.iter().map(|ep| (sep_chain(ep), *ep)).collect();
    super::rules::endpoint_rules(&mut out, &svc, &name, "udp", &endpoints);
    out.push_str("COMMIT\n");
    out
}

/// Empties `KUBE-NODEPORTS` and removes the Service's own chains (before the rest go).
pub fn iptables_remove(backends: &[SocketAddrV4]) -> String {
    let mut chains = vec![chain("EXT"), chain("SVC")];
    chains.extend(backends.iter().map(sep_chain));
    let mut out = String::from("*nat\n");
    let _ = writeln!(out, ":BERTH-KUBE-SERVICES - [0:0]\n:{NODEPORTS} - [0:0]");
    for c in &chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for c in &chains {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Binds a UDP socket on each of `backends` in `ns`, each drained by a thread of its own with
/// `recvmmsg` (as a backend would, so the socket never refuses); they run until the process
/// exits.
pub fn start_sinks(
    ns: &Netns,
    backends: &[SocketAddrV4],
) -> Result<Arc<AtomicU64>, DataplaneError> {
    let received = Arc::new(AtomicU64::new(0));
    for addr in backends {
        let addr = *addr;
        let socket = ns
            .run("binding a UDP backend", move || UdpSocket::bind(addr))?
            .map_err(io_err(
                "bind UDP backend",
                std::path::Path::new(&addr.to_string()),
            ))?;
        let received = received.clone();
        std::thread::spawn(move || {
            let mut buffers = [[0u8; 64]; BATCH];
            let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
            loop {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                    .iter_mut()
                    .map(|buffer| [IoSliceMut::new(buffer)])
                    .collect();
                if let Ok(results) = recvmmsg(
                    socket.as_raw_fd(),
                    &mut headers,
                    slices.iter_mut(),
                    MsgFlags::empty(),
                    None,
                ) {
                    received.fetch_add(results.count() as u64, Ordering::Relaxed);
                }
            }
        });
    }
    Ok(received)
}

/// Packets received so far on `ifname` of `ns` (`/proc/net/dev`'s rx packets).
pub fn rx_packets(ns: &Netns, ifname: &'static str) -> Result<u64, DataplaneError> {
    let text = ns.run("reading /proc/net/dev", || {
        let path = std::path::Path::new("/proc/thread-self/net/dev");
        std::fs::read_to_string(path).map_err(io_err("read", path))
    })??;
    parse_rx_packets(&text, ifname).ok_or_else(|| DataplaneError::Bad {
        what: "/proc/net/dev",
        message: format!("no rx packets for {ifname}"),
    })
}

/// `/proc/stat`'s clock ticks (`USER_HZ`, 100 on Linux's ABI).
const USER_HZ: f64 = 100.0;

/// Softirq time of every CPU so far, in clock ticks (`/proc/stat`'s `cpu` line, 7th value).
fn softirq_ticks() -> Result<u64, DataplaneError> {
    let path = std::path::Path::new("/proc/stat");
    let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
    parse_softirq_ticks(&text).ok_or_else(|| DataplaneError::Bad {
        what: "/proc/stat",
        message: "no softirq time on its cpu line".into(),
    })
}

fn parse_softirq_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq …
    line.split_whitespace().nth(7)?.parse().ok()
}

fn parse_rx_packets(dev: &str, ifname: &str) -> Option<u64> {
    dev.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        // rx: bytes packets errs drop …
        counters.split_whitespace().nth(1)?.parse().ok()
    })
}

/// One flood through the NodePort.
#[derive(Debug, Clone, Default)]
pub struct Flood {
    /// Packets that arrived on the backends' link inside the window.
    pub packets: u64,
    pub window_s: f64,
    /// Datagrams the client threads sent over their whole run (warm-up included).
    pub sent: u64,
    pub send_errors: u64,
    pub first_error: Option<String>,
    /// Datagrams the backends' sockets read over the whole run.
    pub received: u64,
    pub flows: usize,
    /// CPU time the whole machine spent in softirq inside the window: the kernel's packet
    /// processing, where both the router's forwarding and the backends' receive path run.
    pub softirq_s: f64,
}

/// Floods `target` from `threads` threads in `client`, each over [`FLOWS_PER_THREAD`]
/// connected sockets, and counts what reaches `server`'s `eth0` in the window after `warmup`.
pub fn flood(
    client: &Netns,
    server: &Netns,
    received: &AtomicU64,
    target: SocketAddrV4,
    threads: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Flood, DataplaneError> {
    let stop = Arc::new(AtomicBool::new(false));
    let received_before = received.load(Ordering::Relaxed);
    let mut handles = Vec::new();
    for _ in 0..threads {
        let stop = stop.clone();
        handles.push(client.spawn(move || sender(target, &stop))?);
    }
    let measured = (|| {
        std::thread::sleep(warmup);
        let before = rx_packets(server, "eth0")?;
        let softirq_before = softirq_ticks()?;
        let started = Instant::now();
        std::thread::sleep(duration);
        let after = rx_packets(server, "eth0")?;
        let softirq = softirq_ticks()?.saturating_sub(softirq_before);
        Ok::<_, DataplaneError>((after.saturating_sub(before), started.elapsed(), softirq))
    })();
    stop.store(true, Ordering::Relaxed);
    let mut out = Flood {
        flows: threads * FLOWS_PER_THREAD,
        ..Flood::default()
    };
    for handle in handles {
        let (sent, errors, first) = handle.join().map_err(|_| DataplaneError::Bad {
            what: "a NodePort client thread",
            message: "it panicked".into(),
        })???;
        out.sent += sent;
        out.send_errors += errors;
        if out.first_error.is_none() {
            out.first_error = first;
        }
    }
    let (packets, window, softirq) = measured?;
    out.packets = packets;
    out.window_s = window.as_secs_f64();
    out.softirq_s = softirq as f64 / USER_HZ;
    out.received = received.load(Ordering::Relaxed) - received_before;
    Ok(out)
}

/// One client thread: sends [`BATCH`] datagrams at a time (one `sendmmsg`) round robin over its
/// sockets until `stop`; (sent, errors, first error). A refused call (an ICMP unreachable came
/// back) counts as an error and goes on.
fn sender(
    target: SocketAddrV4,
    stop: &AtomicBool,
) -> Result<(u64, u64, Option<String>), DataplaneError> {
    let mut sockets = Vec::new();
    for _ in 0..FLOWS_PER_THREAD {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.connect(target).map(|_| s))
            .map_err(io_err(
                "connect a UDP client to",
                std::path::Path::new(&target.to_string()),
            ))?;
        sockets.push(socket);
    }
    let (mut sent, mut errors, mut first) = (0u64, 0u64, None);
    let slices = [[IoSlice::new(&PAYLOAD)]; BATCH];
    let addresses: [Option<SockaddrIn>; BATCH] = [None; BATCH];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    while !stop.load(Ordering::Relaxed) {
        for socket in &sockets {
            match sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                addresses,
                [] as [ControlMessage<'_>; 0],
                MsgFlags::empty(),
            ) {
                Ok(results) => sent += results.count() as u64,
                Err(e) => {
                    errors += 1;
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    Ok((sent, errors, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<SocketAddrV4> {
        (0..3)
            .map(|i| SocketAddrV4::new(super::super::netns::backend_addr(i), BACKEND_PORT))
            .collect()
    }

    #[test]
    fn iptables_has_kube_proxys_nodeport_shape() {
        let text = iptables_rules(&backends());
        assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
        let ext = chain("EXT");
        let svc = chain("SVC");
        assert!(text.contains(&format!(
            "-A BERTH-KUBE-NODEPORTS -m comment --comment \"bench/nodeport-udp:dns\" -m udp -p \
             udp --dport 30053 -j {ext}"
        )));
        let ext_rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {ext} ")))
            .collect();
        assert_eq!(ext_rules.len(), 2);
        assert!(ext_rules[0].ends_with("-j BERTH-KUBE-MARK-MASQ"));
        assert!(ext_rules[1].ends_with(&format!("-j {svc}")));
        assert!(text.contains("--probability 0.3333333333"));
        assert!(text.contains("--probability 0.5000000000"));
        assert!(text.contains("-m udp -p udp -j DNAT --to-destination 10.210.2.12:9053"));
        for name in text.lines().filter_map(|l| l.strip_prefix(':')) {
            let name = name.split(' ').next().unwrap_or_default();
            assert!(name.starts_with("BERTH-") && name.len() <= 28, "{name}");
        }
        let remove = iptables_remove(&backends());
        assert_eq!(remove.matches("-X ").count(), 5);
    }

    #[test]
    fn the_service_is_a_udp_node_port_with_every_backend() {
        let (service, slice) = objects(&backends());
        let spec = service.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        let ports = spec.ports.expect("ports");
        assert_eq!(ports[0].node_port, Some(i32::from(NODE_PORT)));
        assert_eq!(ports[0].protocol.as_deref(), Some("UDP"));
        assert_eq!(slice.endpoints.len(), 3);
    }

    #[test]
    fn softirq_ticks_come_from_the_all_cpus_line() {
        let stat = "cpu  100 2 300 4000 5 6 789 0 0 0\ncpu0 50 1 150 2000 2 3 400 0 0 0\n";
        assert_eq!(parse_softirq_ticks(stat), Some(789));
        assert_eq!(parse_softirq_ticks("cpu0 1 2 3 4 5 6 7\n"), None);
    }

    #[test]
    fn rx_packets_come_from_the_named_device() {
        let dev = "Inter-|   Receive                            |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
                   lo:       0       0    0    0    0     0          0         0        0\n  \
                   eth0: 6000000  100000    0    0    0     0          0         0     1234\n";
        assert_eq!(parse_rx_packets(dev, "eth0"), Some(100_000));
        assert_eq!(parse_rx_packets(dev, "lo"), Some(0));
        assert_eq!(parse_rx_packets(dev, "eth1"), None);
    }
}
