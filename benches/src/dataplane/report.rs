//! The figures of one run against issue 5's targets, as a table or one JSON object.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Targets (issue 5).
pub const TARGET_VS_DIRECT: f64 = 0.95;
pub const TARGET_VS_IPTABLES_10K: f64 = 1.3;
pub const TARGET_ADD_ONE_MS: f64 = 1.0;
pub const TARGET_NODEPORT_XDP_VS_IPTABLES: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Closed loop, connect + request + response + reset per request.
    NewConnection,
    /// Closed loop over long-lived connections.
    Persistent,
    /// New connection per request at a fixed rate (open loop).
    FixedRate,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::NewConnection, Mode::Persistent, Mode::FixedRate];

    pub fn name(self) -> &'static str {
        match self {
            Mode::NewConnection => "new_connection",
            Mode::Persistent => "persistent",
            Mode::FixedRate => "fixed_rate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathKind {
    /// Straight to the backends' pod IPs (no service mechanism).
    Direct,
    /// Berth ClusterIP, translated at connect() by the socket LB on the client's cgroup.
    SocketLb,
    /// Berth ClusterIP, DNAT per packet by tcx on the router's veths.
    Tc,
    /// kube-proxy's iptables rules.
    Iptables,
    /// kube-proxy's nftables rules.
    Nftables,
}

impl PathKind {
    pub const ALL: [PathKind; 5] = [
        PathKind::Direct,
        PathKind::SocketLb,
        PathKind::Tc,
        PathKind::Iptables,
        PathKind::Nftables,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::SocketLb => "berth_socket_lb",
            PathKind::Tc => "berth_tc",
            PathKind::Iptables => "iptables",
            PathKind::Nftables => "nftables",
        }
    }
}

/// One client run: one path, one number of services, one mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measurement {
    pub path: &'static str,
    pub services: usize,
    pub mode: &'static str,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// (client process CPU + server process CPU) ÷ requests, over the client's whole life.
    pub cpu_us_per_request: f64,
}

/// Control-plane timings in milliseconds, each "add one" repeated (`services` loaded first).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ControlPlane {
    pub services: usize,
    /// desired_frontends + Programmer::apply for every service into empty maps.
    pub berth_program_all_ms: f64,
    /// One new Service and its EndpointSlice → map writes.
    pub berth_add_one_ms: Vec<f64>,
    /// One endpoint added to an existing service's EndpointSlice → map writes.
    pub berth_endpoints_change_ms: Vec<f64>,
    /// `iptables-restore --noflush` of every service's rules into an empty nat table.
    pub iptables_load_all_ms: f64,
    /// kube-proxy's partial restore: KUBE-SERVICES rewritten whole plus the new chains.
    pub iptables_add_one_ms: Vec<f64>,
    /// Only the new chains and one inserted KUBE-SERVICES rule.
    pub iptables_add_one_minimal_ms: Vec<f64>,
    /// `nft -f` of the whole table.
    pub nft_load_all_ms: f64,
    /// `nft -f` of kube-proxy's incremental transaction for one service.
    pub nft_add_one_ms: Vec<f64>,
}

/// One NodePort flood: Berth's XDP or kube-proxy's iptables NodePort.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodePortRun {
    /// `berth_xdp` or `iptables`.
    pub path: &'static str,
    /// Forwarded frames the far end read, per second of the window.
    pub pps: f64,
    pub packets: u64,
    pub window_s: f64,
    /// Frames the generator wrote and forwarded frames the far end read, over the whole run
    /// (warm-up included).
    pub sent: u64,
    pub received: u64,
    /// Other frames the far end read (none are expected).
    pub stray: u64,
    pub send_errors: u64,
    pub first_error: Option<String>,
    pub flows: usize,
    /// Busy time of the node's CPU in the window over the packets counted: the generator's
    /// `write` and the node's whole NodePort path (the machine's CPUs when nothing is pinned).
    pub node_cpu_us_per_packet: f64,
}

pub const NODEPORT_XDP: &str = "berth_xdp";
pub const NODEPORT_IPTABLES: &str = "iptables";

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub iptables: String,
    pub nft: String,
    pub ipvs: String,
    pub nodeport: String,
    pub kernel: String,
    /// The benchmark's cgroup2 directory and scratch directory (both gone after the run).
    pub cgroup: String,
    pub scratch: String,
    pub sizes: Vec<usize>,
    pub connections: usize,
    pub backends: usize,
    pub duration_ms: u64,
    pub rate: u64,
    pub rounds: usize,
    /// Every client run, every round.
    pub measurements: Vec<Measurement>,
    /// The extra direct and socket-LB windows at the headline size (new connection per
    /// request), in measuring order, which [`Report::ratio_vs_direct`] pairs as it does rounds.
    pub direct_pairs: Vec<Measurement>,
    pub control: ControlPlane,
    /// Every NodePort flood, every round.
    pub nodeport_runs: Vec<NodePortRun>,
    /// The services loaded beside the NodePort Service while it was measured.
    pub nodeport_services: usize,
}

/// The median of `a[i] / b[i]` over the rounds both have (in measuring order); None without
/// one.
fn paired_ratio(a: &[f64], b: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, b)| **b > 0.0)
        .map(|(a, b)| a / b)
        .collect();
    (!ratios.is_empty()).then(|| median(&ratios))
}

fn mark(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "not measured",
    }
}

impl Report {
    /// The round with the median requests/s of `path` at `services` in `mode`.
    pub fn find(&self, path: PathKind, services: usize, mode: Mode) -> Option<&Measurement> {
        let mut runs: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.path == path.name() && m.services == services && m.mode == mode.name())
            .collect();
        runs.sort_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s));
        runs.get(runs.len() / 2).copied()
    }

    /// The median round of every path, size and mode.
    fn medians(&self) -> Vec<&Measurement> {
        let mut out = Vec::new();
        for n in &self.sizes {
            for path in PathKind::ALL {
                for mode in Mode::ALL {
                    out.extend(self.find(path, *n, mode));
                }
            }
        }
        out
    }

    /// `a`'s requests/s over `b`'s at `services`, new connection per request: the median over
    /// rounds (then over the extra direct/socket-LB pairs) of the ratio within each. Each round
    /// measures every path back to back, so a pair shares the machine's load of the moment,
    /// which drifts between rounds.
    fn rps_ratio(&self, a: PathKind, b: PathKind, services: usize) -> Option<f64> {
        let rounds = |path: PathKind| -> Vec<f64> {
            self.measurements
                .iter()
                .chain(&self.direct_pairs)
                .filter(|m| {
                    m.path == path.name()
                        && m.services == services
                        && m.mode == Mode::NewConnection.name()
                })
                .map(|m| m.requests_per_s)
                .collect()
        };
        paired_ratio(&rounds(a), &rounds(b))
    }

    /// The size the headline ratios are taken at: 10,000 when measured, else the largest.
    pub fn headline_size(&self) -> usize {
        if self.sizes.contains(&10_000) {
            10_000
        } else {
            self.sizes.iter().copied().max().unwrap_or(0)
        }
    }

    /// Berth ClusterIP (socket LB) requests/s over iptables', new connection per request.
    pub fn ratio_vs_iptables(&self) -> Option<f64> {
        self.rps_ratio(PathKind::SocketLb, PathKind::Iptables, self.headline_size())
    }

    /// Berth ClusterIP (socket LB) requests/s over the direct path's, same size.
    pub fn ratio_vs_direct(&self) -> Option<f64> {
        self.rps_ratio(PathKind::SocketLb, PathKind::Direct, self.headline_size())
    }

    /// The median round's packets/s of NodePort `path`.
    pub fn nodeport_pps(&self, path: &str) -> Option<f64> {
        let runs: Vec<f64> = self
            .nodeport_runs
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.pps)
            .collect();
        (!runs.is_empty()).then(|| median(&runs))
    }

    /// The median round's node CPU µs per packet of NodePort `path`.
    pub fn nodeport_cpu_us(&self, path: &str) -> Option<f64> {
        let runs: Vec<f64> = self
            .nodeport_runs
            .iter()
            .filter(|r| r.path == path && r.packets > 0)
            .map(|r| r.node_cpu_us_per_packet)
            .collect();
        (!runs.is_empty()).then(|| median(&runs))
    }

    /// NodePort packets/s through Berth's XDP over iptables', paired by round as
    /// [`Report::rps_ratio`] does.
    pub fn nodeport_ratio(&self) -> Option<f64> {
        let rounds = |path: &str| -> Vec<f64> {
            self.nodeport_runs
                .iter()
                .filter(|r| r.path == path)
                .map(|r| r.pps)
                .collect()
        };
        paired_ratio(&rounds(NODEPORT_XDP), &rounds(NODEPORT_IPTABLES))
    }

    pub fn add_one_ms(&self) -> f64 {
        median(&self.control.berth_add_one_ms)
    }

    fn ratios(&self, services: usize) -> Value {
        let r = |a, b| self.rps_ratio(a, b, services);
        json!({
            "services": services,
            "socket_lb_vs_direct": r(PathKind::SocketLb, PathKind::Direct),
            "socket_lb_vs_iptables": r(PathKind::SocketLb, PathKind::Iptables),
            "socket_lb_vs_nftables": r(PathKind::SocketLb, PathKind::Nftables),
            "tc_vs_direct": r(PathKind::Tc, PathKind::Direct),
            "tc_vs_iptables": r(PathKind::Tc, PathKind::Iptables),
            "tc_vs_nftables": r(PathKind::Tc, PathKind::Nftables),
        })
    }

    pub fn to_json(&self) -> Value {
        let c = &self.control;
        let vs_iptables = self.ratio_vs_iptables();
        let vs_direct = self.ratio_vs_direct();
        let nodeport = self.nodeport_ratio();
        let mut out = json!({
            "benchmark": "dataplane",
            "ratio_vs_iptables_10k": vs_iptables,
            "ratio_vs_direct": vs_direct,
            "ratios_at_services": self.headline_size(),
            "ratio_method": "median over rounds of the ratio within each round (every round \
                             measures all paths back to back); ratio_vs_direct also over the \
                             direct_pairs",
            "direct_pairs": self.direct_pairs.len() / 2,
            "add_one_service_at_10k_ms": self.add_one_ms(),
            "add_one_service_at_services": c.services,
            "nodeport_xdp_vs_iptables_pps_ratio": nodeport,
            "ipvs": self.ipvs,
            "iptables": self.iptables,
            "nft": self.nft,
            "kernel": self.kernel,
            "cgroup": self.cgroup,
            "scratch": self.scratch,
            "sizes": self.sizes,
            "connections": self.connections,
            "backends": self.backends,
            "duration_ms": self.duration_ms,
            "fixed_rate_rps": self.rate,
            "throughput_mode": "new connection per request (closed loop); also persistent \
                                connections and a fixed rate of new connections",
            "cpu_method": "getrusage utime+stime of the client process and of the server \
                           process (backend threads), over the client's life, divided by its \
                           requests; softirq work is charged to whichever of them the kernel \
                           ran it in",
            "ratios": self.sizes.iter().map(|n| self.ratios(*n)).collect::<Vec<_>>(),
            "rounds": self.rounds,
            "results": self.medians(),
            "measurements_all_rounds": self.measurements,
            "direct_pair_runs": self.direct_pairs,
            "control_plane": {
                "services": c.services,
                "berth_program_all_ms": c.berth_program_all_ms,
                "berth_add_one_ms": median(&c.berth_add_one_ms),
                "berth_add_one_samples_ms": c.berth_add_one_ms,
                "berth_endpoints_change_ms": median(&c.berth_endpoints_change_ms),
                "berth_endpoints_change_samples_ms": c.berth_endpoints_change_ms,
                "iptables_load_all_ms": c.iptables_load_all_ms,
                "iptables_add_one_ms": median(&c.iptables_add_one_ms),
                "iptables_add_one_samples_ms": c.iptables_add_one_ms,
                "iptables_add_one_minimal_ms": median(&c.iptables_add_one_minimal_ms),
                "nft_load_all_ms": c.nft_load_all_ms,
                "nft_add_one_ms": median(&c.nft_add_one_ms),
                "nft_add_one_samples_ms": c.nft_add_one_ms,
            },
            "targets": {
                "ratio_vs_direct": TARGET_VS_DIRECT,
                "ratio_vs_iptables_10k": TARGET_VS_IPTABLES_10K,
                "add_one_service_at_10k_ms": TARGET_ADD_ONE_MS,
                "nodeport_xdp_vs_iptables_pps_ratio": TARGET_NODEPORT_XDP_VS_IPTABLES,
            },
            "met": {
                "ratio_vs_direct": vs_direct.map(|r| r >= TARGET_VS_DIRECT),
                "ratio_vs_iptables_10k": vs_iptables.map(|r| r >= TARGET_VS_IPTABLES_10K),
                "add_one_service_at_10k_ms": self.add_one_ms() <= TARGET_ADD_ONE_MS,
                "nodeport_xdp_vs_iptables_pps_ratio":
                    nodeport.map(|r| r >= TARGET_NODEPORT_XDP_VS_IPTABLES),
            },
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        });
        // Beside the headline ratio (json! alone would recurse too deep for one object).
        out["nodeport_xdp_pps"] = json!(self.nodeport_pps(NODEPORT_XDP));
        out["nodeport_iptables_pps"] = json!(self.nodeport_pps(NODEPORT_IPTABLES));
        out["nodeport"] = json!(self.nodeport);
        out["nodeport_services"] = json!(self.nodeport_services);
        out["nodeport_runs"] = json!(self.nodeport_runs);
        out["nodeport_xdp_node_cpu_us_per_packet"] = json!(self.nodeport_cpu_us(NODEPORT_XDP));
        out["nodeport_iptables_node_cpu_us_per_packet"] =
            json!(self.nodeport_cpu_us(NODEPORT_IPTABLES));
        out
    }

    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "data plane: client ns → router ns → server ns ({} backends), {} connections, {} ms \
             windows, median of {} rounds, kernel {}",
            self.backends, self.connections, self.duration_ms, self.rounds, self.kernel
        );
        let _ = writeln!(t, "  {}; {}; IPVS: {}", self.iptables, self.nft, self.ipvs);
        let _ = writeln!(
            t,
            "  {:>8}  {:<16}{:>30} {:>27} {:>22}",
            "services",
            "path",
            "new conn/request: req/s p50 p99 ms, cpu µs/req",
            "persistent: req/s p50 p99",
            format!("{}/s fixed: p50 p99", self.rate)
        );
        for n in &self.sizes {
            for path in PathKind::ALL {
                let cell = |mode| self.find(path, *n, mode);
                let mut line = format!("  {n:>8}  {:<16}", path.name());
                match cell(Mode::NewConnection) {
                    Some(m) => {
                        let _ = write!(
                            line,
                            "{:>10.0} {:>6.3} {:>6.3} {:>7.1}",
                            m.requests_per_s, m.p50_ms, m.p99_ms, m.cpu_us_per_request
                        );
                    }
                    None => line.push_str(&format!("{:>32}", "-")),
                }
                match cell(Mode::Persistent) {
                    Some(m) => {
                        let _ = write!(
                            line,
                            "      {:>10.0} {:>6.3} {:>6.3}",
                            m.requests_per_s, m.p50_ms, m.p99_ms
                        );
                    }
                    None => line.push_str(&format!("{:>30}", "-")),
                }
                if let Some(m) = cell(Mode::FixedRate) {
                    let _ = write!(line, "      {:>6.3} {:>6.3}", m.p50_ms, m.p99_ms);
                }
                let errors: u64 = Mode::ALL
                    .iter()
                    .filter_map(|mode| cell(*mode))
                    .map(|m| m.errors)
                    .sum();
                if errors > 0 {
                    let _ = write!(line, "  ({errors} errors)");
                }
                let _ = writeln!(t, "{line}");
            }
            let r = self.ratios(*n);
            let f = |k: &str| r[k].as_f64().map_or("-".to_string(), |v| format!("{v:.2}"));
            let _ = writeln!(
                t,
                "  {:>8}  ratios (new conn req/s): socket LB ÷ direct {}, ÷ iptables {}, ÷ \
                 nftables {}; tc ÷ iptables {}, ÷ nftables {}",
                "",
                f("socket_lb_vs_direct"),
                f("socket_lb_vs_iptables"),
                f("socket_lb_vs_nftables"),
                f("tc_vs_iptables"),
                f("tc_vs_nftables"),
            );
        }
        let c = &self.control;
        let _ = writeln!(t, "control plane at {} services (ms)", c.services);
        let _ = writeln!(
            t,
            "  program all: berth maps {:.1}  iptables-restore {:.1}  nft -f {:.1}",
            c.berth_program_all_ms, c.iptables_load_all_ms, c.nft_load_all_ms
        );
        let _ = writeln!(
            t,
            "  add one service (median of {}): berth maps {:.3}  iptables (kube-proxy's partial \
             restore) {:.1}  iptables (chains + one rule) {:.1}  nft {:.1}",
            c.berth_add_one_ms.len(),
            median(&c.berth_add_one_ms),
            median(&c.iptables_add_one_ms),
            median(&c.iptables_add_one_minimal_ms),
            median(&c.nft_add_one_ms)
        );
        let _ = writeln!(
            t,
            "  endpoints change (one endpoint added): berth maps {:.3}",
            median(&c.berth_endpoints_change_ms)
        );
        let n = self.headline_size();
        let show = |r: Option<f64>| r.map_or("-".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(t, "headline ({n} services, new connection per request)");
        let vs_direct = self.ratio_vs_direct();
        let vs_iptables = self.ratio_vs_iptables();
        let _ = writeln!(
            t,
            "  Berth ClusterIP ÷ direct {} ({} rounds and {} extra pairs)  [target ≥ \
             {TARGET_VS_DIRECT}: {}]",
            show(vs_direct),
            self.rounds,
            self.direct_pairs.len() / 2,
            mark(vs_direct.map(|r| r >= TARGET_VS_DIRECT))
        );
        let _ = writeln!(
            t,
            "  Berth ClusterIP ÷ iptables {}  [target ≥ {TARGET_VS_IPTABLES_10K}: {}]",
            show(vs_iptables),
            mark(vs_iptables.map(|r| r >= TARGET_VS_IPTABLES_10K))
        );
        let _ = writeln!(
            t,
            "  add one service at {}: {:.3} ms  [target ≤ {TARGET_ADD_ONE_MS} ms: {}]",
            c.services,
            self.add_one_ms(),
            mark(Some(self.add_one_ms() <= TARGET_ADD_ONE_MS))
        );
        let nodeport = self.nodeport_ratio();
        if nodeport.is_some() {
            let pps = |path| {
                self.nodeport_pps(path)
                    .map_or("-".to_string(), |v| format!("{v:.0}"))
            };
            let _ = writeln!(
                t,
                "  NodePort pps (UDP, {} services loaded): berth XDP {}  iptables {}",
                self.nodeport_services,
                pps(NODEPORT_XDP),
                pps(NODEPORT_IPTABLES)
            );
            let _ = writeln!(t, "    ({})", self.nodeport);
            let us = |path| {
                self.nodeport_cpu_us(path)
                    .map_or("-".to_string(), |v| format!("{v:.2}"))
            };
            let _ = writeln!(
                t,
                "  NodePort node CPU per packet: berth XDP {} µs  iptables {} µs",
                us(NODEPORT_XDP),
                us(NODEPORT_IPTABLES)
            );
        }
        let _ = writeln!(
            t,
            "  NodePort XDP ÷ iptables pps {}  [target ≥ {TARGET_NODEPORT_XDP_VS_IPTABLES}: {}]",
            nodeport.map_or_else(|| self.nodeport.clone(), |r| format!("{r:.2}")),
            mark(nodeport.map(|r| r >= TARGET_NODEPORT_XDP_VS_IPTABLES))
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: PathKind, services: usize, rps: f64) -> Measurement {
        Measurement {
            path: path.name(),
            services,
            mode: Mode::NewConnection.name(),
            requests_per_s: rps,
            ..Measurement::default()
        }
    }

    #[test]
    fn headline_ratios_come_from_the_10k_new_connection_runs() {
        let r = Report {
            sizes: vec![1, 10_000],
            measurements: vec![
                m(PathKind::Direct, 10_000, 1000.0),
                m(PathKind::SocketLb, 10_000, 960.0),
                m(PathKind::Iptables, 10_000, 600.0),
                m(PathKind::Iptables, 1, 900.0),
            ],
            control: ControlPlane {
                services: 10_000,
                berth_add_one_ms: vec![0.3, 0.1, 0.2],
                ..ControlPlane::default()
            },
            nodeport: "not measured".into(),
            ..Report::default()
        };
        let j = r.to_json();
        assert_eq!(j["ratio_vs_iptables_10k"], 1.6);
        assert_eq!(j["ratio_vs_direct"], 0.96);
        assert_eq!(j["add_one_service_at_10k_ms"], 0.2);
        assert!(j["nodeport_xdp_vs_iptables_pps_ratio"].is_null());
        assert_eq!(j["met"]["ratio_vs_direct"], true);
        assert_eq!(j["results"].as_array().map(Vec::len), Some(4));
        assert_eq!(
            j["measurements_all_rounds"].as_array().map(Vec::len),
            Some(4)
        );
        let table = r.to_table();
        assert!(table.contains("Berth ClusterIP ÷ iptables 1.60"), "{table}");
    }

    #[test]
    fn ratios_pair_the_paths_within_each_round() {
        let r = Report {
            sizes: vec![1],
            measurements: vec![
                m(PathKind::Direct, 1, 1000.0),
                m(PathKind::SocketLb, 1, 940.0),
                m(PathKind::Direct, 1, 900.0),
                m(PathKind::SocketLb, 1, 891.0),
                m(PathKind::Direct, 1, 800.0),
                m(PathKind::SocketLb, 1, 784.0),
            ],
            ..Report::default()
        };
        // Round by round 0.94, 0.99 and 0.98: 0.98 (the medians, 891 ÷ 900, would say 0.99).
        let ratio = r.ratio_vs_direct().expect("ratio");
        assert!((ratio - 0.98).abs() < 1e-9, "{ratio}");
        assert_eq!(paired_ratio(&[2.0, 3.0], &[1.0]), Some(2.0));
        assert_eq!(paired_ratio(&[2.0], &[0.0]), None);
        assert_eq!(paired_ratio(&[], &[]), None);
    }

    #[test]
    fn the_extra_pairs_count_towards_ratio_vs_direct_only() {
        let r = Report {
            sizes: vec![1],
            rounds: 1,
            measurements: vec![
                m(PathKind::Direct, 1, 1000.0),
                m(PathKind::SocketLb, 1, 900.0),
                m(PathKind::Tc, 1, 800.0),
            ],
            // Pairs in either order: 0.99, 1.01 (socket LB first), 0.97.
            direct_pairs: vec![
                m(PathKind::Direct, 1, 1000.0),
                m(PathKind::SocketLb, 1, 990.0),
                m(PathKind::SocketLb, 1, 1010.0),
                m(PathKind::Direct, 1, 1000.0),
                m(PathKind::Direct, 1, 1000.0),
                m(PathKind::SocketLb, 1, 970.0),
            ],
            ..Report::default()
        };
        // 0.90 from the round and the three pairs: the median of four is the upper middle.
        let ratio = r.ratio_vs_direct().expect("ratio");
        assert!((ratio - 0.99).abs() < 1e-9, "{ratio}");
        // The tc path has no pairs: its ratio is the round's alone.
        let tc = r.rps_ratio(PathKind::Tc, PathKind::Direct, 1).expect("tc");
        assert!((tc - 0.8).abs() < 1e-9, "{tc}");
        let j = r.to_json();
        assert_eq!(j["direct_pairs"], 3);
        assert_eq!(j["direct_pair_runs"].as_array().map(Vec::len), Some(6));
        let table = r.to_table();
        assert!(
            table.contains("÷ direct 0.99 (1 rounds and 3 extra pairs)"),
            "{table}"
        );
        // The per-path medians stay the rounds' own.
        assert_eq!(r.to_json()["results"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn nodeport_ratio_is_the_median_of_xdp_over_iptables_within_rounds() {
        let run = |path, pps| NodePortRun {
            path,
            pps,
            packets: 1,
            node_cpu_us_per_packet: if path == NODEPORT_XDP { 1.5 } else { 4.0 },
            ..NodePortRun::default()
        };
        let r = Report {
            sizes: vec![1],
            nodeport_runs: vec![
                run(NODEPORT_XDP, 300_000.0),
                run(NODEPORT_IPTABLES, 100_000.0),
                run(NODEPORT_XDP, 900_000.0),
                run(NODEPORT_IPTABLES, 200_000.0),
                run(NODEPORT_XDP, 400_000.0),
                run(NODEPORT_IPTABLES, 150_000.0),
            ],
            nodeport: "udp".into(),
            ..Report::default()
        };
        let j = r.to_json();
        assert_eq!(j["nodeport_xdp_pps"], 400_000.0);
        assert_eq!(j["nodeport_iptables_pps"], 150_000.0);
        let ratio = j["nodeport_xdp_vs_iptables_pps_ratio"]
            .as_f64()
            .expect("ratio");
        // Rounds: 3.0, 4.5 and 2.67; not 400k ÷ 150k, the ratio of the medians.
        assert!((ratio - 3.0).abs() < 1e-9, "{ratio}");
        assert_eq!(j["met"]["nodeport_xdp_vs_iptables_pps_ratio"], true);
        let table = r.to_table();
        assert!(
            table.contains("NodePort XDP ÷ iptables pps 3.00"),
            "{table}"
        );
        assert!(
            table.contains("berth XDP 400000  iptables 150000"),
            "{table}"
        );
        assert_eq!(j["nodeport_xdp_node_cpu_us_per_packet"], 1.5);
        assert!(
            table.contains("per packet: berth XDP 1.50 µs  iptables 4.00 µs"),
            "{table}"
        );
    }

    #[test]
    fn the_median_round_is_reported() {
        let r = Report {
            sizes: vec![1],
            measurements: vec![
                m(PathKind::Direct, 1, 300.0),
                m(PathKind::Direct, 1, 100.0),
                m(PathKind::Direct, 1, 200.0),
            ],
            ..Report::default()
        };
        let found = r
            .find(PathKind::Direct, 1, Mode::NewConnection)
            .expect("found");
        assert_eq!(found.requests_per_s, 200.0);
    }

    #[test]
    fn missing_runs_give_no_ratio() {
        let r = Report {
            sizes: vec![5],
            ..Report::default()
        };
        assert_eq!(r.headline_size(), 5);
        assert!(r.to_json()["ratio_vs_direct"].is_null());
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0, 4.0]), 3.0);
    }
}
