//! `berth bench dataplane`: one service's requests through five forwarding mechanisms side by
//! side — the backend's pod IP directly, Berth's socket LB (ClusterIP translated at connect),
//! Berth's tcx per-packet path, iptables rules in kube-proxy's shape and nftables in kube-proxy's
//! nft shape — with 1, 1,000 and 10,000 services loaded into each; then the control plane: the
//! time to program all services and to add one more, Berth's maps against iptables-restore and
//! nft; and NodePort in packets/s, Berth's XDP against kube-proxy's iptables NodePort, on a tap
//! device that stands for the node's NIC ([`nodeport`]).
//!
//! Nothing runs in the host's network namespace. `berth bench dataplane` (the outer process)
//! creates a `berth-bench-dataplane-*` cgroup2 directory and scratch directory, then runs itself
//! again under `unshare --net --mount` (the inner process). The inner process's namespace is the
//! router (forwarding on, its own sysctls); it makes a client and a server namespace joined to it
//! by `berth*` veths, mounts a bpffs of its own and starts the echo servers on threads inside the
//! server namespace. Each measurement is a client process (this binary again, under `nsenter`
//! into the client namespace, and moved into the cgroup for the socket LB path) that prints its
//! figures as one JSON line. Links (the NodePort's tap too), namespaces, rules and the bpffs die
//! with the inner process; the outer one removes the cgroup (killing what is left in it) and the
//! scratch directory, also when the inner one fails or is interrupted.

mod berth;
mod client;
mod frames;
mod inner;
mod netns;
mod nodeport;
mod nodeport_path;
mod plan;
mod report;
mod rules;
mod server;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use report::{ControlPlane, Measurement, Mode, PathKind, Report};

/// Set (to the inner context, JSON) for the process under `unshare`.
const INNER_ENV: &str = "BERTH_BENCH_DATAPLANE_INNER";
/// Set (to the client's config, JSON) for a client process.
const CLIENT_ENV: &str = "BERTH_BENCH_DATAPLANE_CLIENT";

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    /// Services loaded into each mechanism, comma-separated; the measured one is among them.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    pub sizes: Vec<usize>,
    /// Length of each measurement window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub duration_ms: u64,
    /// Requests before each window that are not counted (connections, caches, conntrack warm).
    #[arg(long, default_value_t = 200)]
    pub warmup_ms: u64,
    /// Rounds over all paths at each size (paths interleaved); the median round is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Extra back-to-back windows of the direct path and the socket LB (new connection per
    /// request, the order swapped every other pair) at the headline size, for
    /// `ratio_vs_direct`: the two differ by less than one window's noise on a shared machine,
    /// so the ratio needs more pairs than the rounds give.
    #[arg(long, default_value_t = 20)]
    pub direct_pairs: usize,
    /// Concurrent connections of the closed-loop client.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Requests per second of the fixed-rate (open-loop) measurement.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Backend servers of the measured service (addresses in the server namespace).
    #[arg(long, default_value_t = 4)]
    pub backends: usize,
    /// How many times each "add one service" is timed (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// How NodePort's XDP program attaches to the node's uplink (a tap device): `driver`
    /// (native, on the written frame) or `generic` (on the socket buffer built for it).
    #[arg(long, value_enum, default_value_t = XdpAttach::Driver)]
    pub xdp_mode: XdpAttach,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The XDP attach mode `--xdp-mode` picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttach {
    Driver,
    Generic,
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("berth bench dataplane cannot run here: {reason}")]
    Unsupported { reason: String },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    #[error("berth's data path")]
    Datapath(#[from] berth_dataplane::loader::DatapathError),
    #[error("programming berth's service maps")]
    Program(#[from] berth_dataplane::services::ProgramError),
    #[error("{what}: {message}")]
    Bad { what: &'static str, message: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DataplaneError {
    let path = path.to_path_buf();
    move |source| DataplaneError::Io { op, path, source }
}

fn progress(message: &str) {
    eprintln!("berth bench dataplane: {message}");
}

/// What the outer process hands the inner one.
#[derive(Debug, Serialize, Deserialize)]
struct InnerContext {
    opts: Options,
    /// The benchmark's cgroup2 directory (socket LB attached there).
    cgroup: PathBuf,
    /// Scratch directory (the bpffs mount point, rule files).
    scratch: PathBuf,
    /// The outer process's network namespace inode: the inner one must not be in it.
    outer_netns: u64,
}

/// Runs the benchmark and prints the table (or JSON) on stdout. The same entry point serves the
/// inner and the client processes, told apart by their environment.
pub fn run(opts: &Options) -> Result<(), DataplaneError> {
    if let Ok(config) = std::env::var(CLIENT_ENV) {
        return client::run_client(&config);
    }
    if let Ok(context) = std::env::var(INNER_ENV) {
        // The outer process blocked interrupts for itself and children inherit the mask: the
        // inner process (and its clients) must die of them.
        interrupts(nix::sys::signal::SigmaskHow::SIG_UNBLOCK)?;
        let context: InnerContext =
            serde_json::from_str(&context).map_err(|e| DataplaneError::Bad {
                what: "the inner process's context",
                message: e.to_string(),
            })?;
        let report = inner::measure(&context)?;
        if context.opts.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_table());
        }
        return Ok(());
    }
    outer(opts)
}

fn validate(opts: &Options) -> Result<(), DataplaneError> {
    let bad = |message: &str| {
        Err(DataplaneError::Bad {
            what: "options",
            message: message.to_string(),
        })
    };
    if opts.sizes.is_empty() || opts.sizes.contains(&0) {
        return bad("--sizes must list at least one size, each at least 1");
    }
    if opts.sizes.iter().any(|s| *s > plan::MAX_SERVICES) {
        return bad("--sizes above 60000 do not fit the address plan");
    }
    if opts.connections == 0
        || opts.backends == 0
        || opts.backends > 200
        || opts.rounds == 0
        || opts.repeats == 0
        || opts.repeats > 1000
    {
        return bad(
            "--connections, --rounds, --repeats (≤ 1000) and --backends (≤ 200) must be at least 1",
        );
    }
    if opts.duration_ms == 0 || opts.rate == 0 {
        return bad("--duration-ms and --rate must be at least 1");
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// What the host must have; the reason when it lacks it.
fn check_host() -> Result<PathBuf, DataplaneError> {
    let unsupported = |reason: String| DataplaneError::Unsupported { reason };
    if !nix::unistd::geteuid().is_root() {
        return Err(unsupported(
            "it needs root (namespaces, bpf, cgroups)".into(),
        ));
    }
    for tool in ["unshare", "nsenter", "ip", "iptables-restore", "nft"] {
        if !on_path(tool) {
            return Err(unsupported(format!("{tool} is not installed")));
        }
    }
    cgroup2_mount().ok_or_else(|| unsupported("no cgroup2 mount in /proc/self/mountinfo".into()))
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next() != Some("cgroup2") {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

fn netns_inode() -> Result<u64, DataplaneError> {
    let path = Path::new("/proc/self/ns/net");
    Ok(std::fs::metadata(path).map_err(io_err("stat", path))?.ino())
}

/// The benchmark's cgroup2 directory; removed on drop after killing anything left in it.
struct BenchCgroup(PathBuf);

impl BenchCgroup {
    fn create(root: &Path, tag: &str) -> Result<Self, DataplaneError> {
        let dir = root.join(format!("berth-bench-dataplane-{tag}"));
        std::fs::create_dir(&dir).map_err(io_err("create cgroup", &dir))?;
        Ok(Self(dir))
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let populated = |dir: &Path| {
            std::fs::read_to_string(dir.join("cgroup.events"))
                .map(|e| e.lines().any(|l| l == "populated 1"))
                .unwrap_or(false)
        };
        if populated(&self.0) {
            // Clients of an inner process that died; cgroup.kill exists since Linux 5.14.
            let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
            let deadline = Instant::now() + Duration::from_secs(5);
            while populated(&self.0) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Err(error) = std::fs::remove_dir(&self.0) {
            eprintln!(
                "berth bench dataplane: removing {}: {error}",
                self.0.display()
            );
        }
    }
}

fn outer(opts: &Options) -> Result<(), DataplaneError> {
    validate(opts)?;
    let cgroup_root = check_host()?;
    let exe = std::env::current_exe().map_err(io_err("locate", Path::new("the berth binary")))?;
    let tag = crate::tag();
    let scratch = tempfile::Builder::new()
        .prefix("berth-bench-dataplane-")
        .tempdir()
        .map_err(io_err("create a directory in", &std::env::temp_dir()))?;
    let cgroup = BenchCgroup::create(&cgroup_root, &tag)?;
    let context = InnerContext {
        opts: opts.clone(),
        cgroup: cgroup.0.clone(),
        scratch: scratch.path().to_path_buf(),
        outer_netns: netns_inode()?,
    };
    let context = serde_json::to_string(&context).map_err(|e| DataplaneError::Bad {
        what: "the inner process's context",
        message: e.to_string(),
    })?;
    // Interrupts end the inner process (it gets them from the terminal too, and unblocks them)
    // while this one stays to clean up after it.
    interrupts(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(&exe)
        .args(["bench", "dataplane"])
        .env(INNER_ENV, context)
        .env_remove(CLIENT_ENV)
        .stdin(Stdio::null())
        .status()
        .map_err(io_err("run", Path::new("unshare")))?;
    drop(cgroup);
    drop(scratch);
    if !status.success() {
        return Err(DataplaneError::Command {
            command: "the benchmark's namespaces (unshare)".into(),
            message: format!("exited with {status}"),
        });
    }
    Ok(())
}

/// Blocks or unblocks SIGINT and SIGTERM for the calling thread (and so for children spawned
/// after it: the mask is inherited across exec).
fn interrupts(how: nix::sys::signal::SigmaskHow) -> Result<(), DataplaneError> {
    use nix::sys::signal::{sigprocmask, SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    sigprocmask(how, Some(&set), None).map_err(|source| DataplaneError::Sys {
        op: "change the mask of SIGINT and SIGTERM",
        source,
    })
}

/// Runs `program args`, feeding `stdin`; its wall time, or its stderr as the error.
fn run_command(
    program: &str,
    args: &[&str],
    stdin: Option<&Path>,
) -> Result<Duration, DataplaneError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(path) = stdin {
        let file = std::fs::File::open(path).map_err(io_err("open", path))?;
        command.stdin(file);
    } else {
        command.stdin(Stdio::null());
    }
    let started = Instant::now();
    let output = command
        .output()
        .map_err(io_err("run", Path::new(program)))?;
    let took = started.elapsed();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(DataplaneError::Command {
            command: format!("{program} {}", args.join(" ")),
            message: stderr.lines().take(5).collect::<Vec<_>>().join("; "),
        });
    }
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            sizes: vec![1, 10],
            duration_ms: 100,
            warmup_ms: 10,
            rounds: 1,
            direct_pairs: 1,
            connections: 2,
            rate: 100,
            backends: 2,
            repeats: 1,
            xdp_mode: XdpAttach::Driver,
            json: true,
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(validate(&opts()).is_ok());
        for broken in [
            Options {
                sizes: vec![],
                ..opts()
            },
            Options {
                sizes: vec![0],
                ..opts()
            },
            Options {
                sizes: vec![70_000],
                ..opts()
            },
            Options {
                connections: 0,
                ..opts()
            },
            Options {
                backends: 0,
                ..opts()
            },
            Options { rate: 0, ..opts() },
        ] {
            assert!(validate(&broken).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let error = run_command("sh", &["-c", "echo boom >&2; exit 3"], None).expect_err("fails");
        assert!(error.to_string().contains("boom"), "{error}");
        assert!(run_command("true", &[], None).is_ok());
    }
}
