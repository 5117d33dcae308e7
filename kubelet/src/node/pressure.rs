//! Memory, disk and PID pressure: sampled from procfs and statvfs, compared with the kubelet's
//! hard eviction defaults and, where the kernel has it, PSI; held for a transition period
//! once seen so the conditions (and the taints they cause) do not flap.

use std::path::Path;
use std::time::{Duration, Instant};

use super::host::{parse_meminfo, read, HostRoots};
use super::NodeError;

/// The filesystem holding the data directory (the kubelet's `nodefs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsStats {
    pub total_bytes: u64,
    /// Available to unprivileged users (`f_bavail`), as the kubelet counts it.
    pub available_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

pub fn fs_stats(path: &Path) -> Result<FsStats, NodeError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| NodeError::Statvfs {
        path: path.to_path_buf(),
        source,
    })?;
    let frsize = widen(st.fragment_size());
    Ok(FsStats {
        total_bytes: widen(st.blocks()).saturating_mul(frsize),
        available_bytes: widen(st.blocks_available()).saturating_mul(frsize),
        inodes_total: widen(st.files()),
        inodes_free: widen(st.files_free()),
    })
}

/// statvfs counts are 32-bit on some targets.
fn widen<T: Into<u64>>(n: T) -> u64 {
    n.into()
}

/// One observation of the node's resources.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Usage {
    /// `MemAvailable` of /proc/meminfo.
    pub memory_available_bytes: Option<u64>,
    pub nodefs: FsStats,
    /// Tasks in existence (from /proc/loadavg) and the most there may be (the smaller of
    /// `kernel.pid_max` and `kernel.threads-max`), as the kubelet's pid stats count them.
    pub pids: Option<(u64, u64)>,
    /// `some avg10` of /proc/pressure/memory and /proc/pressure/io, when PSI is on.
    pub psi_memory_some_avg10: Option<f64>,
    pub psi_io_some_avg10: Option<f64>,
}

/// Samples the node under `roots`, the data directory's filesystem as nodefs.
pub fn sample(roots: &HostRoots, data_dir: &Path) -> Result<Usage, NodeError> {
    let meminfo = parse_meminfo(&read(&roots.proc.join("meminfo"))?);
    let pids = running_tasks(&roots.proc).zip(max_tasks(&roots.proc));
    Ok(Usage {
        memory_available_bytes: meminfo.get("MemAvailable").map(|kib| kib * 1024),
        nodefs: fs_stats(data_dir)?,
        pids,
        psi_memory_some_avg10: psi_some_avg10(&roots.proc.join("pressure/memory")),
        psi_io_some_avg10: psi_some_avg10(&roots.proc.join("pressure/io")),
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The `total` of `running/total` in /proc/loadavg: every task, threads included.
fn running_tasks(proc_root: &Path) -> Option<u64> {
    let loadavg = std::fs::read_to_string(proc_root.join("loadavg")).ok()?;
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

fn max_tasks(proc_root: &Path) -> Option<u64> {
    let pid_max = read_u64(&proc_root.join("sys/kernel/pid_max"));
    let threads_max = read_u64(&proc_root.join("sys/kernel/threads-max"));
    match (pid_max, threads_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `avg10` of the `some` line of a PSI file (`some avg10=1.23 avg60=… total=…`).
pub(super) fn psi_some_avg10(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// When a resource counts as under pressure.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// The kubelet's hard eviction default `memory.available<100Mi`.
    pub memory_available_bytes: u64,
    /// `nodefs.available<10%`.
    pub nodefs_available_percent: f64,
    /// `nodefs.inodesFree<5%`.
    pub nodefs_inodes_free_percent: f64,
    /// `pid.available<10%` of the task limit. The kubelet has no default for PIDs; this keeps
    /// a fork bomb's node from taking new pods well before `fork` starts failing.
    pub pid_available_percent: f64,
    /// PSI memory `some avg10` at or over this percentage is memory pressure: for most of the
    /// last 10 s some task was stalled on memory (reclaim, refaults) even if `MemAvailable`
    /// still looks fine. 60 is systemd-oomd's default pressure limit.
    pub psi_memory_some_avg10: f64,
    /// PSI io `some avg10` at or over this is disk pressure. Off by default: I/O stalls are
    /// contention, routine on a busy disk, not a shortage of space — which is what the kubelet's
    /// DiskPressure means — and disk pressure stops scheduling on the node.
    pub psi_io_some_avg10: Option<f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_available_bytes: 100 << 20,
            nodefs_available_percent: 10.0,
            nodefs_inodes_free_percent: 5.0,
            pid_available_percent: 10.0,
            psi_memory_some_avg10: 60.0,
            psi_io_some_avg10: None,
        }
    }
}

/// Which pressures hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pressures {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

fn below_percent(part: u64, whole: u64, percent: f64) -> bool {
    whole > 0 && (part as f64) < (whole as f64) * percent / 100.0
}

impl Thresholds {
    /// The pressures this one sample shows.
    pub fn observe(&self, u: &Usage) -> Pressures {
        let over = |v: Option<f64>, limit: f64| v.is_some_and(|v| v >= limit);
        let memory = u
            .memory_available_bytes
            .is_some_and(|a| a < self.memory_available_bytes)
            || over(u.psi_memory_some_avg10, self.psi_memory_some_avg10);
        let disk = below_percent(
            u.nodefs.available_bytes,
            u.nodefs.total_bytes,
            self.nodefs_available_percent,
        ) || below_percent(
            u.nodefs.inodes_free,
            u.nodefs.inodes_total,
            self.nodefs_inodes_free_percent,
        ) || self
            .psi_io_some_avg10
            .is_some_and(|limit| over(u.psi_io_some_avg10, limit));
        let pid = u.pids.is_some_and(|(running, max)| {
            below_percent(max.saturating_sub(running), max, self.pid_available_percent)
        });
        Pressures { memory, disk, pid }
    }
}

/// Keeps a pressure on until `period` has passed since it was last observed (the kubelet's
/// `evictionPressureTransitionPeriod`, 5 minutes by default).
#[derive(Debug, Clone)]
pub struct PressureTracker {
    period: Duration,
    last_seen: [Option<Instant>; 3],
}

impl PressureTracker {
    pub fn new(period: Duration) -> PressureTracker {
        PressureTracker {
            period,
            last_seen: [None; 3],
        }
    }

    /// Records `observed` at `now`; returns the pressures to report.
    pub fn update(&mut self, observed: Pressures, now: Instant) -> Pressures {
        let flags = [observed.memory, observed.disk, observed.pid];
        let mut held = [false; 3];
        for i in 0..3 {
            if flags[i] {
                self.last_seen[i] = Some(now);
            }
            held[i] = self.last_seen[i]
                .is_some_and(|at| flags[i] || now.saturating_duration_since(at) < self.period);
        }
        Pressures {
            memory: held[0],
            disk: held[1],
            pid: held[2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::host::tests::{fake_host, write_tree};
    use super::*;

    #[test]
    fn samples_a_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        let roots = fake_host(dir.path());
        write_tree(
            dir.path(),
            &[
                ("proc/loadavg", "0.05 0.51 1.20 1/92 29354\n"),
                ("proc/sys/kernel/pid_max", "32768\n"),
                ("proc/sys/kernel/threads-max", "192730\n"),
                (
                    "proc/pressure/memory",
                    "some avg10=12.50 avg60=0.00 avg300=0.00 total=17828668\n\
                     full avg10=70.00 avg60=0.00 avg300=0.00 total=9689843\n",
                ),
            ],
        );
        let u = sample(&roots, dir.path()).unwrap();
        assert_eq!(u.memory_available_bytes, Some(4_000_000 * 1024));
        assert_eq!(u.pids, Some((92, 32768)));
        assert_eq!(u.psi_memory_some_avg10, Some(12.5));
        assert_eq!(u.psi_io_some_avg10, None, "no io pressure file");
        assert!(u.nodefs.total_bytes >= u.nodefs.available_bytes);
    }

    fn healthy() -> Usage {
        Usage {
            memory_available_bytes: Some(1 << 30),
            nodefs: FsStats {
                total_bytes: 1000,
                available_bytes: 500,
                inodes_total: 100,
                inodes_free: 50,
            },
            pids: Some((100, 1000)),
            psi_memory_some_avg10: Some(1.0),
            psi_io_some_avg10: Some(1.0),
        }
    }

    #[test]
    fn thresholds_are_the_eviction_defaults() {
        let t = Thresholds::default();
        assert_eq!(t.observe(&healthy()), Pressures::default());

        let mut u = healthy();
        u.memory_available_bytes = Some((100 << 20) - 1);
        assert!(t.observe(&u).memory);
        u.memory_available_bytes = Some(100 << 20);
        assert!(!t.observe(&u).memory);
        u.psi_memory_some_avg10 = Some(60.0);
        assert!(t.observe(&u).memory);

        let mut u = healthy();
        u.nodefs.available_bytes = 99;
        assert_eq!(
            t.observe(&u),
            Pressures {
                disk: true,
                ..Default::default()
            }
        );
        u.nodefs.available_bytes = 100;
        assert!(!t.observe(&u).disk);
        u.nodefs.inodes_free = 4;
        assert!(t.observe(&u).disk);
        u.nodefs.inodes_free = 50;
        u.psi_io_some_avg10 = Some(95.0);
        assert!(
            !t.observe(&u).disk,
            "io stalls alone are not disk pressure by default"
        );
        let with_io = Thresholds {
            psi_io_some_avg10: Some(80.0),
            ..Thresholds::default()
        };
        assert!(with_io.observe(&u).disk);

        let mut u = healthy();
        u.pids = Some((901, 1000));
        assert_eq!(
            t.observe(&u),
            Pressures {
                pid: true,
                ..Default::default()
            }
        );
        u.pids = Some((900, 1000));
        assert!(!t.observe(&u).pid);

        // Nothing known is no pressure.
        let unknown = Usage::default();
        assert_eq!(t.observe(&unknown), Pressures::default());
    }

    #[test]
    fn pressure_is_held_for_the_transition_period() {
        let mut tracker = PressureTracker::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let on = Pressures {
            memory: true,
            ..Default::default()
        };
        assert_eq!(
            tracker.update(Pressures::default(), t0),
            Pressures::default()
        );
        assert_eq!(tracker.update(on, t0), on);
        assert_eq!(
            tracker.update(Pressures::default(), t0 + Duration::from_secs(299)),
            on
        );
        assert_eq!(
            tracker.update(Pressures::default(), t0 + Duration::from_secs(300)),
            Pressures::default()
        );
        let mut immediate = PressureTracker::new(Duration::ZERO);
        assert_eq!(immediate.update(on, t0), on);
        assert_eq!(
            immediate.update(Pressures::default(), t0),
            Pressures::default()
        );
    }
}
