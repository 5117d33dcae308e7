//! `berth bench apiserver`: starts the API server in-process on io_uring and on epoll, drives
//! both with the same small HTTPS client, and reports GET, LIST, CREATE (sequential and
//! concurrent) and watch fan-out percentiles per mode with their ratio.
//!
//! Workloads alternate between the two servers (io_uring first, then epoll, per workload) so
//! that drift over the run — page cache, thermal, other load — hits both alike.

mod client;
mod fanout;
mod report;
mod workloads;

use std::path::PathBuf;

use berth_apiserver::IoMode;

pub use client::ClientError;
pub use report::{Host, Latencies, Report, Summary, Unit, Workload};

use client::Target;
use workloads::{create_namespace, create_pods, get_one, list, pod_name};

/// Requests in flight for the concurrent create workload and for seeding.
const CONCURRENCY: usize = 64;
/// Namespaces: seeded pods for GET/LIST, pods made by the create workloads, the watched pod.
const NS_SEEDED: &str = "bench";
const NS_CREATE: &str = "bench-create";
const NS_WATCH: &str = "bench-watch";
const WATCHED_POD: &str = "fanout-target";
/// File descriptors the server process needs besides watch connections.
const SERVER_SPARE_FDS: u64 = 512;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Options {
    /// Print one JSON object with every figure instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Pod counts to seed before measuring GET and LIST [default: 1000,10000; --quick: 100].
    #[arg(long, value_delimiter = ',')]
    pub pods: Option<Vec<usize>>,
    /// Watch connections for the fan-out [default: 1000,10000; --quick: 100].
    #[arg(long, value_delimiter = ',')]
    pub watchers: Option<Vec<usize>>,
    /// Shrink every workload so the whole run takes seconds (for tests, not for figures).
    #[arg(long)]
    pub quick: bool,
    /// Internal: run as the fan-out child process with this JSON spec.
    #[arg(long, hide = true)]
    pub fanout_worker: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("starting the {mode} API server")]
    Start {
        mode: &'static str,
        #[source]
        source: berth_apiserver::StartError,
    },
    #[error("the {mode} API server runs on {driver}")]
    WrongDriver {
        mode: &'static str,
        driver: &'static str,
    },
    #[error("preparing the server's directory")]
    Setup(#[source] std::io::Error),
    #[error("starting the client runtime")]
    Runtime(#[source] std::io::Error),
    #[error("{op}")]
    Client {
        op: String,
        #[source]
        source: ClientError,
    },
    #[error("{op}: status {status}: {body}")]
    Status {
        op: String,
        status: u16,
        body: String,
    },
    #[error("{0}")]
    Unexpected(String),
    #[error("decoding JSON")]
    Json(#[source] serde_json::Error),
    #[error("a client task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("{op} the open files limit")]
    Rlimit {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{needed} open files are needed but the limit is {soft} (hard limit {hard})")]
    FdLimit { needed: u64, soft: u64, hard: u64 },
    #[error("starting the fan-out worker process")]
    Spawn(#[source] std::io::Error),
    #[error("fan-out worker: {0}")]
    Worker(String),
}

/// Sizes of one run.
#[derive(Clone, Debug, PartialEq)]
struct Plan {
    pods: Vec<usize>,
    watchers: Vec<usize>,
    get_iterations: usize,
    /// LIST iterations per pod count; big lists take longer, so fewer.
    list_items_budget: usize,
    create_sequential: usize,
    create_concurrent: usize,
    fanout_updates: usize,
    /// The fan-out alternates between the modes this many times, each round a fresh set of
    /// watchers with its share of the updates, so that load that comes and goes (other
    /// processes on the machine) is spread over both modes.
    fanout_rounds: usize,
    warmup: usize,
}

impl Plan {
    fn from_options(opts: &Options) -> Plan {
        let (pods, watchers) = if opts.quick {
            (vec![100], vec![100])
        } else {
            (vec![1000, 10_000], vec![1000, 10_000])
        };
        let base = if opts.quick {
            Plan {
                pods,
                watchers,
                get_iterations: 200,
                list_items_budget: 2_000,
                create_sequential: 50,
                create_concurrent: 256,
                fanout_updates: 5,
                fanout_rounds: 1,
                warmup: 10,
            }
        } else {
            Plan {
                pods,
                watchers,
                get_iterations: 10_000,
                list_items_budget: 500_000,
                create_sequential: 1_000,
                create_concurrent: 10_000,
                fanout_updates: 20,
                fanout_rounds: 2,
                warmup: 100,
            }
        };
        // Pods are only ever added, so the counts are measured in increasing order.
        let mut pods = opts.pods.clone().unwrap_or(base.pods.clone());
        pods.sort_unstable();
        pods.dedup();
        pods.retain(|&p| p > 0);
        Plan {
            pods,
            watchers: opts
                .watchers
                .clone()
                .unwrap_or(base.watchers.clone())
                .into_iter()
                .filter(|&w| w > 0)
                .collect(),
            ..base
        }
    }

    fn list_iterations(&self, pods: usize) -> usize {
        (self.list_items_budget / pods.max(1)).clamp(10, 1000)
    }
}

/// One started server and how to reach it.
struct Server {
    mode: &'static str,
    target: Target,
    ca_cert: PathBuf,
    seeded: usize,
    // Dropped last: the server keeps running (it has no stop), but nothing else uses the dir.
    _dir: tempfile::TempDir,
}

fn start_server(mode: &'static str, io: IoMode) -> Result<Server, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("berth-bench-{mode}-"))
        .tempdir()
        .map_err(BenchError::Setup)?;
    let token = format!("bench-{}-{}", std::process::id(), mode);
    let token_file = dir.path().join("tokens.csv");
    std::fs::write(
        &token_file,
        format!("{token},bench-admin,bench-admin,\"system:masters\"\n"),
    )
    .map_err(BenchError::Setup)?;
    let mut config = berth_apiserver::Config::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("a literal address");
    config.io = io;
    config.threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    config.token_file = Some(token_file);
    let running =
        berth_apiserver::start(config).map_err(|source| BenchError::Start { mode, source })?;
    if running.driver != mode {
        return Err(BenchError::WrongDriver {
            mode,
            driver: running.driver,
        });
    }
    let target = Target::new(running.local_addr, &running.ca_cert, token).map_err(|source| {
        BenchError::Client {
            op: "loading the server's CA".into(),
            source,
        }
    })?;
    Ok(Server {
        mode,
        target,
        ca_cert: running.ca_cert,
        seeded: 0,
        _dir: dir,
    })
}

/// Runs the benchmark and prints the table (or JSON) on stdout.
pub fn run(opts: &Options) -> Result<(), BenchError> {
    if let Some(spec) = &opts.fanout_worker {
        return fanout::worker_main(spec);
    }
    let plan = Plan::from_options(opts);
    let report = measure(&plan)?;
    if opts.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

fn progress(message: &str) {
    eprintln!("berth bench: {message}");
}

fn measure(plan: &Plan) -> Result<Report, BenchError> {
    let most_watchers = plan.watchers.iter().copied().max().unwrap_or(0) as u64;
    let fd_problem = fanout::raise_nofile(most_watchers + SERVER_SPARE_FDS).err();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let mut servers = [
        start_server("io_uring", IoMode::IoUring)?,
        start_server("epoll", IoMode::Epoll)?,
    ];
    for s in &servers {
        runtime.block_on(async {
            for ns in [NS_SEEDED, NS_CREATE, NS_WATCH] {
                create_namespace(&s.target, ns).await?;
            }
            Ok::<_, BenchError>(())
        })?;
    }
    let mut workloads = Vec::new();
    let mut skipped = Vec::new();

    progress("create, sequential");
    let n = plan.create_sequential;
    let [u, e] = each(&mut servers, |s| {
        let (lat, took) = runtime.block_on(create_pods(&s.target, NS_CREATE, 0, n, 1))?;
        Ok(lat.summary(Some(took)))
    })?;
    workloads.push(workload("create_sequential", Unit::Micros, u, e));

    progress("create, 64 concurrent");
    let m = plan.create_concurrent;
    let [u, e] = each(&mut servers, |s| {
        let (lat, took) =
            runtime.block_on(create_pods(&s.target, NS_CREATE, n, n + m, CONCURRENCY))?;
        Ok(lat.summary(Some(took)))
    })?;
    workloads.push(workload("create_concurrent", Unit::Micros, u, e));

    for &pods in &plan.pods {
        progress(&format!("seeding {pods} pods"));
        each(&mut servers, |s| {
            if s.seeded < pods {
                runtime.block_on(create_pods(
                    &s.target,
                    NS_SEEDED,
                    s.seeded,
                    pods,
                    CONCURRENCY,
                ))?;
                s.seeded = pods;
            }
            Ok(())
        })?;
        progress(&format!("GET of one pod among {pods}"));
        let name = pod_name(pods / 2);
        let [u, e] = each(&mut servers, |s| {
            let lat = runtime.block_on(get_one(
                &s.target,
                NS_SEEDED,
                &name,
                plan.warmup,
                plan.get_iterations,
            ))?;
            Ok(lat.summary(None))
        })?;
        workloads.push(workload(&format!("get_{pods}"), Unit::Micros, u, e));

        progress(&format!("LIST of {pods} pods"));
        let iterations = plan.list_iterations(pods);
        let [u, e] = each(&mut servers, |s| {
            let lat = runtime.block_on(list(
                &s.target,
                NS_SEEDED,
                s.seeded,
                plan.warmup.min(iterations),
                iterations,
            ))?;
            Ok(lat.summary(None))
        })?;
        workloads.push(workload(&format!("list_{pods}"), Unit::Micros, u, e));
    }

    for s in &servers {
        runtime.block_on(async {
            let mut conn = workloads::connect(&s.target).await?;
            let path = workloads::pods_path(NS_WATCH);
            let resp = workloads::call(&mut conn, "POST", &path, &workloads::pod_json(WATCHED_POD))
                .await?;
            workloads::expect("creating the watched pod", &resp, 201)
        })?;
    }
    for &watchers in &plan.watchers {
        if let Some(problem) = &fd_problem {
            if watchers as u64 + SERVER_SPARE_FDS > fd_soft_limit() {
                skipped.push(format!("fanout_{watchers}: {problem}"));
                continue;
            }
        }
        progress(&format!("watch fan-out to {watchers} watchers"));
        let results = fanout_rounds(plan, &mut servers, watchers);
        match results {
            Ok([(u_last, u_each), (e_last, e_each)]) => {
                workloads.push(workload(
                    &format!("fanout_{watchers}"),
                    Unit::Millis,
                    u_last.summary(None),
                    e_last.summary(None),
                ));
                workloads.push(workload(
                    &format!("fanout_{watchers}_each"),
                    Unit::Millis,
                    u_each.summary(None),
                    e_each.summary(None),
                ));
            }
            Err(e) => skipped.push(format!("fanout_{watchers}: {}", error_chain(&e))),
        }
    }

    Ok(Report {
        date: now_rfc3339(),
        host: Host::detect(),
        workloads,
        skipped,
    })
}

/// The fan-out to `watchers` on both modes, alternating per round: per mode, the time until the
/// last watcher had each update and the time until each watcher had it.
fn fanout_rounds(
    plan: &Plan,
    servers: &mut [Server; 2],
    watchers: usize,
) -> Result<[(Latencies, Latencies); 2], BenchError> {
    let rounds = plan.fanout_rounds.max(1);
    let mut merged: [(Latencies, Latencies); 2] = Default::default();
    for round in 0..rounds {
        // The updates split over the rounds, the first ones taking the remainder.
        let updates =
            plan.fanout_updates / rounds + usize::from(round < plan.fanout_updates % rounds);
        let pair = each(servers, |s| {
            let spec = fanout::WorkerSpec {
                addr: s.target.addr,
                ca_cert: s.ca_cert.clone(),
                token: s.target.token.clone(),
                namespace: NS_WATCH.into(),
                pod: WATCHED_POD.into(),
                watchers,
                updates,
            };
            fanout::run_child(&spec).map(|r| fanout::latencies(&r))
        })?;
        for (into, (last, each)) in merged.iter_mut().zip(pair) {
            into.0.merge(&last);
            into.1.merge(&each);
        }
    }
    Ok(merged)
}

/// Runs `f` on the io_uring server, then on the epoll one.
fn each<T>(
    servers: &mut [Server; 2],
    mut f: impl FnMut(&mut Server) -> Result<T, BenchError>,
) -> Result<[T; 2], BenchError> {
    let [uring, epoll] = servers;
    debug_assert_eq!((uring.mode, epoll.mode), ("io_uring", "epoll"));
    Ok([f(uring)?, f(epoll)?])
}

fn workload(name: &str, unit: Unit, io_uring: Summary, epoll: Summary) -> Workload {
    Workload {
        name: name.to_string(),
        unit,
        io_uring,
        epoll,
    }
}

fn fd_soft_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0)
}

/// The error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn now_rfc3339() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_plan_is_small_and_explicit_sizes_win() {
        let quick = Plan::from_options(&Options {
            quick: true,
            ..Options::default()
        });
        assert_eq!(quick.pods, vec![100]);
        assert_eq!(quick.watchers, vec![100]);
        let full = Plan::from_options(&Options {
            pods: Some(vec![10_000, 0, 1000, 1000]),
            watchers: Some(vec![10_000]),
            ..Options::default()
        });
        assert_eq!(full.pods, vec![1000, 10_000]);
        assert_eq!(full.watchers, vec![10_000]);
        assert_eq!(full.fanout_updates, 20);
        assert_eq!(full.fanout_rounds, 2);
    }

    #[test]
    fn list_iterations_shrink_with_size_within_bounds() {
        let plan = Plan::from_options(&Options::default());
        assert_eq!(plan.list_iterations(1000), 500);
        assert_eq!(plan.list_iterations(10_000), 50);
        assert_eq!(plan.list_iterations(1_000_000), 10);
        assert_eq!(plan.list_iterations(1), 1000);
    }

    #[test]
    fn error_chain_joins_causes() {
        let e = BenchError::Rlimit {
            op: "raising",
            source: std::io::Error::other("denied"),
        };
        assert_eq!(error_chain(&e), "raising the open files limit: denied");
    }
}
