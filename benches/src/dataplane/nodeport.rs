//! NodePort in packets/s, on an uplink that behaves like a NIC: a UDP NodePort Service on the
//! node's address on a tap device, its backends pods on another node (behind that node's address
//! on the same link), loaded either into Berth (the services Programmer's frontend on address 0
//! with Maglev, the node address in `berth_nodeaddrs`, NodePort XDP in driver mode on the tap
//! and its tc twin beside it, as the agent attaches them) or into iptables in kube-proxy's
//! NodePort shape (`KUBE-SERVICES` → `--dst-type LOCAL` → `KUBE-NODEPORTS` → `KUBE-EXT-*`
//! (mark for masquerade) → `KUBE-SVC-*` → `KUBE-SEP-*` DNAT with statistic probabilities, then
//! `KUBE-POSTROUTING` masquerade).
//!
//! The wire is the tap's file. The generator (one thread, the "client") writes whole
//! Ethernet/IPv4/UDP frames into it; each arrives on the node as from a NIC's receive ring:
//! tun runs the XDP program on the written bytes before any socket buffer exists, so Berth's
//! DNAT + SNAT + XDP_TX never allocates one, while iptables' path builds one and takes it
//! through conntrack, NAT and forwarding. The far end (one thread, the "other node") reads what
//! the node transmits and counts the frames that are the flood, forwarded: from the node's MAC
//! to the other node's, source NATed to the node's address, to a backend's port, both checksums
//! right. Both run inline on their thread's CPU — tun hands a written frame to the node's
//! stack in the writer's system call — so with two or more CPUs the generator is pinned to
//! one (the node's CPU: its own `write` and all the node's NodePort work) and the far end to
//! another, and the node's CPU time per packet is reported beside the rate.
//!
//! UDP rather than TCP: every datagram is one packet through the NodePort and nothing else,
//! while a TCP connection rate would mostly measure both ends' TCP stacks.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use serde_json::json;

use super::frames::{Mac, UdpFrame};
use super::netns::{sysctl, CLUSTER_CIDR};
use super::plan::NAMESPACE;
use super::rules::{hash16, MARK_MASQ, NODEPORTS};
use super::{io_err, run_command, DataplaneError};

/// The node's uplink: a tap device in the router's (the node's) namespace.
pub const IF_UPLINK: &str = "berthbt0";
/// The node's address on the uplink, the NodePort's destination and the SNAT source.
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
/// The outside client's address on the uplink's subnet.
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 2);
/// The other node, whose pods (the backends) are routed through its address.
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 3);
const UPLINK_PREFIX: u8 = 24;
/// The other node's podCIDR (inside the cluster CIDR).
const PEER_POD_CIDR: &str = "10.210.4.0/24";
const NODE_MAC: Mac = [0x02, 0x62, 0x74, 0, 0, 1];
const CLIENT_MAC: Mac = [0x02, 0x62, 0x74, 0, 0, 2];
const PEER_MAC: Mac = [0x02, 0x62, 0x74, 0, 0, 3];

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
/// Flows (client source ports) the generator sends round robin.
pub const FLOWS: usize = 16;

/// Backend `i`: a pod of the other node.
pub fn backend(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 210, 4, 10 + i as u8), BACKEND_PORT)
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

/// The node's uplink: the tap device, alive as long as this value, with the node's address,
/// a route to the other node's pods through the other node and permanent neighbour entries
/// (nothing on the wire answers ARP).
pub struct Uplink {
    tap: Arc<File>,
}

impl Uplink {
    /// Creates it in the calling thread's namespace (the router's).
    pub fn create() -> Result<Self, DataplaneError> {
        // Forwarding out of the link a packet came in on would send the client (whose address
        // is on the link) ICMP redirects, and IPv6 (router solicitations, duplicate address
        // detection) would send the far end frames of its own: both off.
        for key in ["all", "default"] {
            sysctl(&format!("net.ipv4.conf.{key}.send_redirects"), "0")?;
        }
        let ipv6 = Path::new("/proc/sys/net/ipv6/conf/default/disable_ipv6");
        if ipv6.exists() {
            std::fs::write(ipv6, "1").map_err(io_err("write", ipv6))?;
        }
        let tap = crate::sys::tap::open(IF_UPLINK)
            .map_err(io_err("create the tap device", Path::new(IF_UPLINK)))?;
        let uplink = Self { tap: Arc::new(tap) };
        sysctl(&format!("net.ipv4.conf.{IF_UPLINK}.send_redirects"), "0")?;
        sysctl(&format!("net.ipv4.conf.{IF_UPLINK}.rp_filter"), "0")?;
        let ip = |args: &[&str]| run_command("ip", args, None).map(drop);
        ip(&["link", "set", IF_UPLINK, "address", &mac(&NODE_MAC)])?;
        let addr = format!("{NODE_ADDR}/{UPLINK_PREFIX}");
        ip(&["addr", "add", &addr, "dev", IF_UPLINK])?;
        ip(&["link", "set", IF_UPLINK, "up"])?;
        for (neighbour, lladdr) in [(PEER_ADDR, PEER_MAC), (CLIENT_ADDR, CLIENT_MAC)] {
            ip(&[
                "neigh",
                "replace",
                &neighbour.to_string(),
                "lladdr",
                &mac(&lladdr),
                "nud",
                "permanent",
                "dev",
                IF_UPLINK,
            ])?;
        }
        let via = PEER_ADDR.to_string();
        ip(&["route", "add", PEER_POD_CIDR, "via", &via, "dev", IF_UPLINK])?;
        Ok(uplink)
    }
}

fn mac(bytes: &Mac) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The CPUs the generator (the node's CPU) and the far end run on: the last and the first this
/// process may use, or none when it may use only one.
pub fn cpus() -> Result<Option<(usize, usize)>, DataplaneError> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|source| DataplaneError::Sys {
        op: "read the CPU affinity",
        source,
    })?;
    let allowed: Vec<usize> = (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect();
    Ok(match (allowed.first(), allowed.last()) {
        (Some(&far), Some(&node)) if far != node => Some((node, far)),
        _ => None,
    })
}

/// Moves the calling thread onto `cpu`.
fn pin(cpu: usize) -> Result<(), DataplaneError> {
    let mut set = CpuSet::new();
    let sys = |source| DataplaneError::Sys {
        op: "pin a NodePort thread to its CPU",
        source,
    };
    set.set(cpu).map_err(sys)?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(sys)
}

/// What the far end has read so far.
#[derive(Default)]
struct FarEndCounts {
    /// Frames of the flood, forwarded as the NodePort must.
    forwarded: AtomicU64,
    /// Anything else the node transmitted.
    stray: AtomicU64,
    /// Why the far end stopped reading, if it did.
    failure: std::sync::OnceLock<String>,
}

/// The other node: reads every frame the node transmits on the uplink, until dropped.
pub struct FarEnd {
    counts: Arc<FarEndCounts>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FarEnd {
    /// Starts reading `uplink` on a thread of its own (on `cpu` if given), which never sleeps:
    /// an empty queue makes it yield, so no frame waits for a wake-up.
    pub fn start(
        uplink: &Uplink,
        backends: &[SocketAddrV4],
        cpu: Option<usize>,
    ) -> Result<Self, DataplaneError> {
        let counts = Arc::new(FarEndCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tap, backends) = (uplink.tap.clone(), backends.to_vec());
        let (thread_counts, thread_stop) = (counts.clone(), stop.clone());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nodeport-far-end".into())
            .spawn(move || {
                let pinned = cpu.map_or(Ok(()), pin);
                let failed = pinned.is_err();
                let _ = ready_tx.send(pinned);
                if failed {
                    return;
                }
                let mut buffer = [0u8; 2048];
                while !thread_stop.load(Ordering::Relaxed) {
                    match (&*tap).read(&mut buffer) {
                        Ok(n) => {
                            let counter = if is_forwarded(&buffer[..n], &backends) {
                                &thread_counts.forwarded
                            } else {
                                &thread_counts.stray
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                        Err(e) => {
                            let _ = thread_counts.failure.set(e.to_string());
                            break;
                        }
                    }
                }
            })
            .map_err(io_err("spawn the far end for", Path::new(IF_UPLINK)))?;
        let far_end = Self {
            counts,
            stop,
            thread: Some(thread),
        };
        ready.recv().map_err(|_| DataplaneError::Bad {
            what: "the NodePort far end",
            message: "it ended before it started reading".into(),
        })??;
        Ok(far_end)
    }

    fn forwarded(&self) -> u64 {
        self.counts.forwarded.load(Ordering::Relaxed)
    }

    fn stray(&self) -> u64 {
        self.counts.stray.load(Ordering::Relaxed)
    }
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A frame the NodePort forwarded: from the node to the other node, from the node's address
/// (masqueraded) to a backend, whole and with right checksums.
fn is_forwarded(frame: &[u8], backends: &[SocketAddrV4]) -> bool {
    UdpFrame::parse(frame).is_some_and(|f| {
        f.src_mac == NODE_MAC
            && f.dst_mac == PEER_MAC
            && *f.src.ip() == NODE_ADDR
            && backends.contains(&f.dst)
    })
}

/// `/proc/stat`'s clock ticks (`USER_HZ`, 100 on Linux's ABI).
const USER_HZ: f64 = 100.0;

/// Busy time so far, in clock ticks, of `cpu` (or of all CPUs): user, nice, system, irq and
/// softirq (not idle, iowait, or steal, when the hypervisor ran something else).
fn busy_ticks(cpu: Option<usize>) -> Result<u64, DataplaneError> {
    let path = Path::new("/proc/stat");
    let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
    parse_busy_ticks(&text, cpu).ok_or_else(|| DataplaneError::Bad {
        what: "/proc/stat",
        message: format!(
            "no busy time of {}",
            cpu.map_or("all CPUs".to_string(), |n| format!("cpu{n}"))
        ),
    })
}

fn parse_busy_ticks(stat: &str, cpu: Option<usize>) -> Option<u64> {
    let name = cpu.map_or("cpu".to_string(), |n| format!("cpu{n}"));
    let line = stat
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name.as_str()))?;
    // cpu user nice system idle iowait irq softirq steal …
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (ticks.len() == 8).then(|| ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6])
}

/// One flood through the NodePort.
#[derive(Debug, Clone, Default)]
pub struct Flood {
    /// Forwarded frames the far end read inside the window.
    pub packets: u64,
    pub window_s: f64,
    /// Frames the generator wrote over its whole run (warm-up included).
    pub sent: u64,
    pub send_errors: u64,
    pub first_error: Option<String>,
    /// Forwarded frames the far end read over the whole run.
    pub received: u64,
    /// Frames the far end read that were not the flood forwarded (over the whole run).
    pub stray: u64,
    pub flows: usize,
    /// Busy CPU time inside the window of the node's CPU (of all CPUs when unpinned).
    pub node_cpu_s: f64,
}

/// Floods the NodePort through `uplink` from one generator thread (on `cpus`' node CPU) over
/// [`FLOWS`] flows, and counts what `far_end` reads in the window after `warmup`.
pub fn flood(
    uplink: &Uplink,
    far_end: &FarEnd,
    cpus: Option<(usize, usize)>,
    warmup: Duration,
    duration: Duration,
) -> Result<Flood, DataplaneError> {
    let node_cpu = cpus.map(|(node, _)| node);
    let stop = Arc::new(AtomicBool::new(false));
    let counts_before = (far_end.forwarded(), far_end.stray());
    let generator = {
        let (tap, stop) = (uplink.tap.clone(), stop.clone());
        std::thread::Builder::new()
            .name("nodeport-generator".into())
            .spawn(move || generate(&tap, node_cpu, &stop))
            .map_err(io_err("spawn the generator for", Path::new(IF_UPLINK)))?
    };
    let measured = (|| {
        std::thread::sleep(warmup);
        let before = far_end.forwarded();
        let busy_before = busy_ticks(node_cpu)?;
        let started = Instant::now();
        std::thread::sleep(duration);
        let after = far_end.forwarded();
        let busy = busy_ticks(node_cpu)?.saturating_sub(busy_before);
        Ok::<_, DataplaneError>((after - before, started.elapsed(), busy))
    })();
    stop.store(true, Ordering::Relaxed);
    let (sent, send_errors, first_error) =
        generator.join().map_err(|_| DataplaneError::Bad {
            what: "the NodePort generator",
            message: "it panicked".into(),
        })??;
    let (packets, window, busy) = measured?;
    if let Some(failure) = far_end.counts.failure.get() {
        return Err(DataplaneError::Bad {
            what: "the NodePort far end's read",
            message: failure.clone(),
        });
    }
    Ok(Flood {
        packets,
        window_s: window.as_secs_f64(),
        sent,
        send_errors,
        first_error,
        received: far_end.forwarded() - counts_before.0,
        stray: far_end.stray() - counts_before.1,
        flows: FLOWS,
        node_cpu_s: busy as f64 / USER_HZ,
    })
}

/// The generator: writes the flows' frames round robin until `stop`; (sent, errors, first
/// error). A refused write (the node had no room for the frame) counts as an error and goes on.
fn generate(
    tap: &File,
    cpu: Option<usize>,
    stop: &AtomicBool,
) -> Result<(u64, u64, Option<String>), DataplaneError> {
    if let Some(cpu) = cpu {
        pin(cpu)?;
    }
    let frames: Vec<Vec<u8>> = (0..FLOWS)
        .map(|flow| {
            UdpFrame {
                dst_mac: NODE_MAC,
                src_mac: CLIENT_MAC,
                src: SocketAddrV4::new(CLIENT_ADDR, 20_000 + flow as u16),
                dst: SocketAddrV4::new(NODE_ADDR, NODE_PORT),
            }
            .build(&PAYLOAD)
        })
        .collect();
    let (mut sent, mut errors, mut first) = (0u64, 0u64, None);
    while !stop.load(Ordering::Relaxed) {
        for frame in &frames {
            // tun takes a frame whole or not at all.
            match (&*tap).write(frame) {
                Ok(n) if n == frame.len() => sent += 1,
                Ok(n) => {
                    errors += 1;
                    first.get_or_insert_with(|| format!("wrote {n} of {} bytes", frame.len()));
                }
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
        (0..3).map(backend).collect()
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
        assert!(text.contains("-m udp -p udp -j DNAT --to-destination 10.210.4.12:9053"));
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
    fn busy_ticks_leave_out_idle_iowait_and_steal() {
        let stat = "cpu  100 2 300 4000 5 6 789 1 0 0\ncpu0 50 1 150 2000 2 3 400 1 0 0\n\
                    cpu1 50 1 150 2000 3 3 389 0 0 0\n";
        assert_eq!(parse_busy_ticks(stat, None), Some(100 + 2 + 300 + 6 + 789));
        assert_eq!(
            parse_busy_ticks(stat, Some(0)),
            Some(50 + 1 + 150 + 3 + 400)
        );
        assert_eq!(
            parse_busy_ticks(stat, Some(1)),
            Some(50 + 1 + 150 + 3 + 389)
        );
        assert_eq!(parse_busy_ticks(stat, Some(2)), None);
        assert_eq!(parse_busy_ticks("cpu 1 2 3\n", None), None);
    }

    #[test]
    fn only_the_flood_forwarded_and_masqueraded_counts() {
        let backends = backends();
        let forwarded = UdpFrame {
            dst_mac: PEER_MAC,
            src_mac: NODE_MAC,
            src: SocketAddrV4::new(NODE_ADDR, 61_000),
            dst: backends[1],
        };
        assert!(is_forwarded(&forwarded.build(&PAYLOAD), &backends));
        let unmasqueraded = UdpFrame {
            src: SocketAddrV4::new(CLIENT_ADDR, 20_000),
            ..forwarded
        };
        let back_to_the_client = UdpFrame {
            dst_mac: CLIENT_MAC,
            ..forwarded
        };
        let not_a_backend = UdpFrame {
            dst: SocketAddrV4::new(*backends[0].ip(), NODE_PORT),
            ..forwarded
        };
        for frame in [unmasqueraded, back_to_the_client, not_a_backend] {
            assert!(
                !is_forwarded(&frame.build(&PAYLOAD), &backends),
                "{frame:?}"
            );
        }
        let mut corrupt = forwarded.build(&PAYLOAD);
        corrupt[59] ^= 0xff;
        assert!(!is_forwarded(&corrupt, &backends));
    }

    #[test]
    fn addresses_are_inside_the_right_networks() {
        assert!(IF_UPLINK.starts_with("berth") && IF_UPLINK.len() < 16);
        assert_eq!(mac(&NODE_MAC), "02:62:74:00:00:01");
        assert_eq!(backend(0).ip(), &Ipv4Addr::new(10, 210, 4, 10));
        assert!(PEER_POD_CIDR.starts_with("10.210.4.") && CLUSTER_CIDR == "10.210.0.0/16");
    }
}
