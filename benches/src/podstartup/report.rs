//! The figures of one run against issue 4's targets, as a table or one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use super::rss::Rss;
use super::stats::Percentiles;

/// Targets (issue 4): single pod p99, burst all Ready, container start / crun, shim RSS,
/// kubelet RSS.
pub const TARGET_SINGLE_P99_MS: f64 = 150.0;
pub const TARGET_BURST_ALL_READY_MS: f64 = 3000.0;
pub const TARGET_VS_CRUN: f64 = 1.5;
pub const TARGET_SHIM_RSS_KIB: f64 = 1024.0;
pub const TARGET_KUBELET_RSS_KIB: f64 = 50.0 * 1024.0;

/// Where a pod's time went, each stage measured from the previous one as the watches saw it:
/// create sent → bound (scheduler) → the kubelet's `Pulled` event (pod noticed, sandbox up:
/// shim, network, cgroups; image resolved) → its `Started` event (container spawned through the
/// shim) → Ready in the pod's status (the kubelet's status write).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stages {
    pub bound: Percentiles,
    pub sandbox: Percentiles,
    pub started: Percentiles,
    pub ready: Percentiles,
}

impl Stages {
    fn to_json(self) -> Value {
        json!({
            "create_to_bound": self.bound.to_json(),
            "bound_to_pulled_event": self.sandbox.to_json(),
            "pulled_to_started_event": self.started.to_json(),
            "started_to_ready": self.ready.to_json(),
        })
    }

    fn line(self) -> String {
        format!(
            "bound {:.1} → sandbox+image (Pulled) {:.1} → container (Started) {:.1} → Ready \
             status {:.1} (p50 ms each)",
            self.bound.p50, self.sandbox.p50, self.started.p50, self.ready.p50
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The node's first pod (one-time costs), create sent → Ready seen.
    pub first_pod: Duration,
    /// Single pods: create sent → Ready seen.
    pub single: Percentiles,
    pub single_stages: Stages,
    pub burst_pods: usize,
    /// First create sent → last Ready seen.
    pub burst_all_ready: Duration,
    /// Each burst pod: its create sent → its Ready seen.
    pub burst: Percentiles,
    pub burst_stages: Stages,
    /// Berth's runtime starting /bin/true, and crun doing the same.
    pub ours_start: Percentiles,
    pub crun_start: Percentiles,
    pub crun_note: String,
    /// With the burst's pods running.
    pub rss: Rss,
    /// The kubelet's --cgroup-base (removed by the cleanup at the end).
    pub cgroup_base: String,
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

impl Report {
    /// Berth's p50 over crun's p50.
    pub fn vs_crun_ratio(&self) -> f64 {
        if self.crun_start.p50 > 0.0 {
            self.ours_start.p50 / self.crun_start.p50
        } else {
            0.0
        }
    }

    fn burst_all_ready_ms(&self) -> f64 {
        self.burst_all_ready.as_secs_f64() * 1000.0
    }

    /// Which targets were met.
    fn met(&self) -> [(&'static str, bool); 5] {
        [
            ("single_p99", self.single.p99 <= TARGET_SINGLE_P99_MS),
            (
                "burst_all_ready",
                self.burst_all_ready_ms() <= TARGET_BURST_ALL_READY_MS,
            ),
            ("vs_crun", self.vs_crun_ratio() <= TARGET_VS_CRUN),
            (
                "shim_rss",
                self.rss.shim_max_kib as f64 <= TARGET_SHIM_RSS_KIB,
            ),
            (
                "kubelet_rss",
                self.rss.kubelet_kib as f64 <= TARGET_KUBELET_RSS_KIB,
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        let met: serde_json::Map<String, Value> = self
            .met()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::Bool(v)))
            .collect();
        json!({
            "benchmark": "podstartup",
            "first_pod_ms": self.first_pod.as_secs_f64() * 1000.0,
            "single_pods": self.single.count,
            "single_p50_ms": self.single.p50,
            "single_p90_ms": self.single.p90,
            "single_p99_ms": self.single.p99,
            "single_max_ms": self.single.max,
            "burst_pods": self.burst_pods,
            // The headline name of the default burst of 100; it is the burst of `burst_pods`.
            "burst100_all_ready_ms": self.burst_all_ready_ms(),
            "burst_p50_ms": self.burst.p50,
            "burst_p99_ms": self.burst.p99,
            "burst_max_ms": self.burst.max,
            "container_start_p50_ms": self.ours_start.p50,
            "container_start_p99_ms": self.ours_start.p99,
            "crun_start_p50_ms": self.crun_start.p50,
            "crun_start_p99_ms": self.crun_start.p99,
            "crun_iterations": self.ours_start.count,
            "vs_crun_ratio": self.vs_crun_ratio(),
            "crun_setup": self.crun_note,
            "kubelet_rss_kib": self.rss.kubelet_kib,
            "kubelet_rss_mib": self.rss.kubelet_kib as f64 / 1024.0,
            "kubelet_rss_anon_kib": self.rss.kubelet_anon_kib,
            "server_rss_kib": self.rss.server_kib,
            "shims": self.rss.shims,
            "shim_rss_max_kib": self.rss.shim_max_kib,
            "shim_rss_mean_kib": self.rss.shim_mean_kib,
            "shim_rss_anon_max_kib": self.rss.shim_anon_max_kib,
            "shim_pss_mean_kib": self.rss.shim_pss_mean_kib,
            "single_stages": self.single_stages.to_json(),
            "burst_stages": self.burst_stages.to_json(),
            "targets": {
                "single_p99_ms": TARGET_SINGLE_P99_MS,
                "burst100_all_ready_ms": TARGET_BURST_ALL_READY_MS,
                "vs_crun_ratio": TARGET_VS_CRUN,
                "shim_rss_kib": TARGET_SHIM_RSS_KIB,
                "kubelet_rss_kib": TARGET_KUBELET_RSS_KIB,
            },
            "met": met,
            "cgroup_base": self.cgroup_base,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        })
    }

    pub fn to_table(&self) -> String {
        let met = self.met();
        let mib = |kib: f64| kib / 1024.0;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "pod startup (one node, image cached, create → Ready on a watch)"
        );
        let _ = writeln!(
            t,
            "  single pods ({})  {}  [target p99 ≤ {TARGET_SINGLE_P99_MS} ms: {}]",
            self.single.count,
            self.single.line(),
            mark(met[0].1)
        );
        let _ = writeln!(t, "    where: {}", self.single_stages.line());
        let _ = writeln!(
            t,
            "    the node's first pod (not counted above): {:.1} ms",
            self.first_pod.as_secs_f64() * 1000.0
        );
        let _ = writeln!(
            t,
            "  burst of {}  all Ready in {:.0} ms  [target ≤ {TARGET_BURST_ALL_READY_MS} ms: {}]",
            self.burst_pods,
            self.burst_all_ready_ms(),
            mark(met[1].1)
        );
        let _ = writeln!(t, "    per pod: {}", self.burst.line());
        let _ = writeln!(t, "    where: {}", self.burst_stages.line());
        let _ = writeln!(
            t,
            "  container start (/bin/true, {} each, interleaved)  berth p50 {:.2} ms  crun p50 \
             {:.2} ms  ratio {:.2}  [target ≤ {TARGET_VS_CRUN}×: {}]",
            self.ours_start.count,
            self.ours_start.p50,
            self.crun_start.p50,
            self.vs_crun_ratio(),
            mark(met[2].1)
        );
        let _ = writeln!(t, "    crun: {}", self.crun_note);
        let _ = writeln!(
            t,
            "  VmRSS with {} pods  kubelet {:.1} MiB (anon {:.1}) [target ≤ 50 MiB: {}]  server \
             {:.1} MiB",
            self.burst_pods,
            mib(self.rss.kubelet_kib as f64),
            mib(self.rss.kubelet_anon_kib as f64),
            mark(met[4].1),
            mib(self.rss.server_kib as f64),
        );
        let _ = writeln!(
            t,
            "    shims ({})  VmRSS max {} KiB  mean {:.0} KiB  (anon max {} KiB, Pss mean {:.0} \
             KiB)  [target VmRSS ≤ 1 MiB: {}]",
            self.rss.shims,
            self.rss.shim_max_kib,
            self.rss.shim_mean_kib,
            self.rss.shim_anon_max_kib,
            self.rss.shim_pss_mean_kib,
            mark(met[3].1),
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(p50: f64, p99: f64) -> Percentiles {
        Percentiles {
            count: 3,
            p50,
            p90: p50,
            p99,
            max: p99,
        }
    }

    #[test]
    fn json_has_the_headline_fields_and_judges_the_targets() {
        let r = Report {
            single: p(40.0, 120.0),
            burst_pods: 100,
            burst_all_ready: Duration::from_millis(3500),
            burst: p(900.0, 3000.0),
            ours_start: p(6.0, 8.0),
            crun_start: p(4.0, 5.0),
            rss: Rss {
                kubelet_kib: 30_000,
                server_kib: 60_000,
                shims: 100,
                shim_max_kib: 900,
                shim_mean_kib: 800.0,
                ..Rss::default()
            },
            ..Report::default()
        };
        let j = r.to_json();
        for key in [
            "single_p99_ms",
            "burst100_all_ready_ms",
            "vs_crun_ratio",
            "kubelet_rss_kib",
        ] {
            assert!(j[key].is_number(), "{key}");
        }
        assert_eq!(j["vs_crun_ratio"], 1.5);
        assert_eq!(j["met"]["single_p99"], true);
        assert_eq!(j["met"]["burst_all_ready"], false);
        assert_eq!(j["met"]["vs_crun"], true);
        assert!(r.to_table().contains("all Ready in 3500 ms"));
        assert_eq!(Report::default().vs_crun_ratio(), 0.0);
    }
}
