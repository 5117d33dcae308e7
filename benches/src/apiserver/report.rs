//! Latency recording and the report: a table per workload with both I/O modes side by side and
//! their ratio, or one JSON object with every figure.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Highest latency recorded, in microseconds (10 minutes); longer ones saturate.
const MAX_US: u64 = 600_000_000;

/// A latency distribution in microseconds.
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            hist: Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid"),
        }
    }
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(MAX_US)) as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        // Anything under a microsecond counts as one: ratios need non-zero figures.
        self.hist.saturating_record(us.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Percentiles, and the rate when `elapsed` is the wall time the samples took.
    pub fn summary(&self, elapsed: Option<Duration>) -> Summary {
        let us = |q: f64| self.hist.value_at_quantile(q) as f64;
        Summary {
            count: self.hist.len(),
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: self.hist.max() as f64,
            per_sec: elapsed
                .filter(|e| !e.is_zero())
                .map(|e| self.hist.len() as f64 / e.as_secs_f64()),
        }
    }
}

/// The figures of one workload on one I/O mode.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Operations per second, for throughput workloads.
    pub per_sec: Option<f64>,
}

/// How a workload's latencies are printed and named in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Millis,
}

/// One workload measured on both modes.
pub struct Workload {
    /// e.g. `get_1000`, `create_concurrent`, `fanout_10000`.
    pub name: String,
    pub unit: Unit,
    pub io_uring: Summary,
    pub epoll: Summary,
}

impl Workload {
    /// epoll p99 / io_uring p99: above 1 means io_uring is faster.
    pub fn p99_ratio(&self) -> f64 {
        self.epoll.p99_us / self.io_uring.p99_us
    }

    /// io_uring rate / epoll rate: above 1 means io_uring is faster.
    pub fn rate_ratio(&self) -> Option<f64> {
        Some(self.io_uring.per_sec? / self.epoll.per_sec?)
    }
}

/// The machine the run was on.
pub struct Host {
    pub hostname: String,
    pub nproc: usize,
    pub kernel: String,
}

impl Host {
    pub fn detect() -> Host {
        Host {
            hostname: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

pub struct Report {
    pub date: String,
    pub host: Host,
    pub workloads: Vec<Workload>,
    /// Workloads that could not run, with the reason.
    pub skipped: Vec<String>,
}

fn scaled(us: f64, unit: Unit) -> f64 {
    match unit {
        Unit::Micros => us,
        Unit::Millis => us / 1000.0,
    }
}

fn suffix(unit: Unit) -> &'static str {
    match unit {
        Unit::Micros => "us",
        Unit::Millis => "ms",
    }
}

fn mode_figures(map: &mut Map<String, Value>, w: &Workload, s: &Summary) {
    let u = suffix(w.unit);
    for (q, v) in [
        ("p50", s.p50_us),
        ("p99", s.p99_us),
        ("p999", s.p999_us),
        ("max", s.max_us),
    ] {
        map.insert(format!("{}_{q}_{u}", w.name), json!(scaled(v, w.unit)));
    }
    if let Some(rate) = s.per_sec {
        map.insert(format!("{}_per_sec", w.name), json!(rate));
    }
}

impl Report {
    /// One object: `io_uring` and `epoll` with every figure, `ratios` (above 1 means io_uring is
    /// faster), `date`, `host` and `skipped`.
    pub fn to_json(&self) -> Value {
        let (mut uring, mut epoll, mut ratios) = (Map::new(), Map::new(), Map::new());
        for w in &self.workloads {
            mode_figures(&mut uring, w, &w.io_uring);
            mode_figures(&mut epoll, w, &w.epoll);
            for (q, e, i) in [
                ("p50", w.epoll.p50_us, w.io_uring.p50_us),
                ("p99", w.epoll.p99_us, w.io_uring.p99_us),
                ("p999", w.epoll.p999_us, w.io_uring.p999_us),
            ] {
                ratios.insert(format!("{}_{q}", w.name), json!(e / i));
            }
            if let Some(r) = w.rate_ratio() {
                ratios.insert(format!("{}_per_sec", w.name), json!(r));
            }
        }
        json!({
            "date": self.date,
            "host": {"hostname": self.host.hostname, "nproc": self.host.nproc, "kernel": self.host.kernel},
            "io_uring": uring,
            "epoll": epoll,
            "ratios": ratios,
            "skipped": self.skipped,
        })
    }

    /// A fixed-width table, both modes per workload.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "berth bench apiserver — {} — {} ({} cores, kernel {})",
            self.date, self.host.hostname, self.host.nproc, self.host.kernel
        );
        let _ = writeln!(
            out,
            "p99 x = epoll p99 / io_uring p99; rate x = io_uring ops/s / epoll ops/s; \
             above 1 means io_uring is faster\n"
        );
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:>7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6} {:>6}",
            "workload", "io", "n", "p50", "p99", "p99.9", "max", "ops/s", "p99 x", "rate x"
        );
        for w in &self.workloads {
            for (mode, s) in [("io_uring", &w.io_uring), ("epoll", &w.epoll)] {
                let f = |v: f64| match w.unit {
                    Unit::Micros => format!("{v:.0}us"),
                    Unit::Millis => format!("{:.2}ms", v / 1000.0),
                };
                let rate = s.per_sec.map(|r| format!("{r:.0}")).unwrap_or_default();
                let (p99_x, rate_x) = if mode == "io_uring" {
                    (
                        format!("{:.2}", w.p99_ratio()),
                        w.rate_ratio()
                            .map(|r| format!("{r:.2}"))
                            .unwrap_or_default(),
                    )
                } else {
                    (String::new(), String::new())
                };
                let _ = writeln!(
                    out,
                    "{:<20} {:<8} {:>7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6} {:>6}",
                    if mode == "io_uring" { &w.name } else { "" },
                    mode,
                    s.count,
                    f(s.p50_us),
                    f(s.p99_us),
                    f(s.p999_us),
                    f(s.max_us),
                    rate,
                    p99_x,
                    rate_x
                );
            }
        }
        for s in &self.skipped {
            let _ = writeln!(out, "skipped: {s}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p99: f64, rate: Option<f64>) -> Summary {
        Summary {
            count: 10,
            p50_us: p99 / 2.0,
            p99_us: p99,
            p999_us: p99,
            max_us: p99,
            per_sec: rate,
        }
    }

    #[test]
    fn summary_has_percentiles_and_rate() {
        let mut l = Latencies::default();
        for us in 1..=1000 {
            l.record_us(us);
        }
        let s = l.summary(Some(Duration::from_secs(2)));
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(s.per_sec, Some(500.0));
        assert_eq!(l.summary(None).per_sec, None);
    }

    #[test]
    fn zero_latency_records_as_one_microsecond() {
        let mut l = Latencies::default();
        l.record(Duration::from_nanos(10));
        assert_eq!(l.summary(None).p50_us, 1.0);
    }

    #[test]
    fn json_names_figures_by_workload_and_unit_and_ratios_favour_io_uring_above_one() {
        let report = Report {
            date: "2025-01-01T00:00:00Z".into(),
            host: Host {
                hostname: "h".into(),
                nproc: 2,
                kernel: "6.1".into(),
            },
            workloads: vec![
                Workload {
                    name: "create_concurrent".into(),
                    unit: Unit::Micros,
                    io_uring: summary(100.0, Some(6000.0)),
                    epoll: summary(200.0, Some(3000.0)),
                },
                Workload {
                    name: "fanout_100".into(),
                    unit: Unit::Millis,
                    io_uring: summary(4000.0, None),
                    epoll: summary(2000.0, None),
                },
            ],
            skipped: vec![],
        };
        let v = report.to_json();
        assert_eq!(v["io_uring"]["create_concurrent_p99_us"], 100.0);
        assert_eq!(v["epoll"]["create_concurrent_per_sec"], 3000.0);
        assert_eq!(v["io_uring"]["fanout_100_p99_ms"], 4.0);
        assert_eq!(v["ratios"]["create_concurrent_p99"], 2.0);
        assert_eq!(v["ratios"]["create_concurrent_per_sec"], 2.0);
        assert_eq!(v["ratios"]["fanout_100_p99"], 0.5);
        assert_eq!(v["host"]["nproc"], 2);
        let table = report.to_table();
        assert!(table.contains("fanout_100"), "{table}");
        assert!(table.contains("4.00ms"), "{table}");
        assert!(table.contains("0.50"), "{table}");
    }
}
