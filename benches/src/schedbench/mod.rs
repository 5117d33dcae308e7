//! `berth bench scheduler`: kube-scheduler's SchedulingBasic workload against Berth's scheduler.
//! An API server runs in-process on a temporary data directory; N simulated nodes register
//! (4 CPU, 32 Gi, 110 pods, as kube-scheduler's `node-default.yaml`); `--existing` pods are
//! created and scheduled first; then M pods (100m / 500Mi, as `pod-default.yaml`) are created
//! through the API, many at a time, while the scheduler runs in-process as an API client. The
//! figures: pods per second from the first create to the last bind seen on a watch, and each
//! pod's create→bound latency (HDR histogram).

mod observe;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use crate::nodesim::{self, SimConfig};

use observe::SendTimes;

const NAMESPACE: &str = "sched-bench";
const EXISTING_PREFIX: &str = "init-";
const MEASURED_PREFIX: &str = "pod-";
/// Longest wait for a phase (existing pods bound, measured pods bound), besides a second per
/// thousand pods.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Simulated nodes.
    #[arg(long, default_value_t = 5_000)]
    pub nodes: usize,
    /// Pods created and scheduled while measuring.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Pods created and scheduled before measuring.
    #[arg(long, default_value_t = 1_000)]
    pub existing: usize,
    /// Pod creates in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The scheduler's binds in flight at once [default: the scheduler's own default].
    #[arg(long)]
    pub bind_concurrency: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedBenchError {
    #[error("preparing the server's directory")]
    Setup(#[source] std::io::Error),
    #[error("starting the API server")]
    Server(#[source] berth_apiserver::StartError),
    #[error("starting the client runtime")]
    Runtime(#[source] std::io::Error),
    #[error("connecting to the API server")]
    Connect(#[source] berth_controllers::StartError),
    #[error("starting the scheduler")]
    Scheduler(#[source] berth_controllers::leader::LeaderError),
    #[error("simulating nodes")]
    Nodes(#[source] nodesim::SimError),
    #[error("{op}")]
    Api {
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Unexpected(String),
}

/// The figures of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub nodes: usize,
    pub existing: usize,
    pub pods: usize,
    /// Measured pods seen bound.
    pub binds: u64,
    /// First create sent to last bind seen.
    pub wall: Duration,
    pub pods_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// First create sent to last create answered.
    pub creates: Duration,
    /// CPU time the whole process (server, scheduler, load generator) used while measuring,
    /// when /proc tells: on a shared machine, pods per CPU-second is the steadier figure.
    pub cpu: Option<Duration>,
    /// Registering the nodes, and creating and scheduling the existing pods.
    pub register: Duration,
    pub existing_took: Duration,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": "scheduler",
            "workload": "SchedulingBasic",
            "nodes": self.nodes,
            "existing": self.existing,
            "pods": self.pods,
            "binds": self.binds,
            "wall_secs": self.wall.as_secs_f64(),
            "creates_secs": self.creates.as_secs_f64(),
            "cpu_secs": self.cpu.map(|c| c.as_secs_f64()),
            "pods_per_cpu_sec": self.pods_per_cpu_sec(),
            "pods_per_sec": self.pods_per_sec,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "register_secs": self.register.as_secs_f64(),
            "existing_secs": self.existing_took.as_secs_f64(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        })
    }

    pub fn pods_per_cpu_sec(&self) -> Option<f64> {
        let cpu = self.cpu?.as_secs_f64();
        (cpu > 0.0).then(|| self.binds as f64 / cpu)
    }

    pub fn to_table(&self) -> String {
        let cpu = match (self.cpu, self.pods_per_cpu_sec()) {
            (Some(c), Some(r)) => format!("{:.2} CPU-s, {r:.0} pods per CPU-s", c.as_secs_f64()),
            _ => "CPU time unknown".into(),
        };
        format!(
            "scheduler SchedulingBasic: {} nodes, {} existing pods, {} pods measured\n\
             \x20 throughput  {:.0} pods/s ({} binds in {:.3} s, first create to last bind; \
             creates answered in {:.3} s)\n\
             \x20 process CPU while measuring  {}\n\
             \x20 create→bound  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms\n\
             \x20 setup  nodes registered in {:.2} s, existing pods scheduled in {:.2} s\n",
            self.nodes,
            self.existing,
            self.pods,
            self.pods_per_sec,
            self.binds,
            self.wall.as_secs_f64(),
            self.creates.as_secs_f64(),
            cpu,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.register.as_secs_f64(),
            self.existing_took.as_secs_f64(),
        )
    }
}

/// Runs the benchmark and prints the table (or JSON) on stdout.
pub fn run(opts: &Options) -> Result<(), SchedBenchError> {
    let report = measure(opts)?;
    if opts.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

fn progress(message: &str) {
    eprintln!("berth bench scheduler: {message}");
}

/// The API server on a temporary directory; the directory lives as long as the returned guard.
fn start_server() -> Result<(PathBuf, tempfile::TempDir), SchedBenchError> {
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-scheduler-")
        .tempdir()
        .map_err(SchedBenchError::Setup)?;
    let mut config = berth_apiserver::Config::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("a literal address");
    let running = berth_apiserver::start(config).map_err(SchedBenchError::Server)?;
    Ok((running.kubeconfig, dir))
}

/// kube-scheduler's `pod-default.yaml`.
fn pod(name: &str) -> Pod {
    let resources = json!({"cpu": "100m", "memory": "500Mi"});
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {"limits": resources, "requests": resources},
        }]},
    }))
    .expect("a literal pod")
}

/// Creates `prefix0 … prefix<count-1>`, `concurrency` at a time, marking each send in `sent`.
async fn create_pods(
    api: &Api<Pod>,
    prefix: &str,
    count: usize,
    concurrency: usize,
    sent: Option<&SendTimes>,
) -> Result<(), SchedBenchError> {
    let pods: Vec<Pod> = (0..count).map(|i| pod(&format!("{prefix}{i}"))).collect();
    let params = PostParams::default();
    let mut creates = futures::stream::iter(pods.into_iter().enumerate())
        .map(|(i, p)| {
            let params = &params;
            async move {
                if let Some(sent) = sent {
                    sent.mark(i);
                }
                api.create(params, &p).await
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(created) = creates.next().await {
        created.map_err(|source| SchedBenchError::Api {
            op: "creating a pod",
            source,
        })?;
    }
    Ok(())
}

/// Waits until `done` holds for the observer's progress, or fails after the phase timeout.
async fn wait_for(
    progress: &mut observe::Progress,
    what: &str,
    pods: usize,
    done: impl Fn((usize, usize)) -> bool,
) -> Result<(), SchedBenchError> {
    let limit = PHASE_TIMEOUT + Duration::from_millis(pods as u64);
    let waited = tokio::time::timeout(limit, progress.wait_for(|p| done(*p)))
        .await
        .map(|r| r.is_ok());
    match waited {
        Ok(true) => Ok(()),
        Ok(false) => Err(SchedBenchError::Unexpected(format!(
            "the pod watch stopped while waiting for {what}"
        ))),
        Err(_) => {
            let (e, m) = *progress.borrow();
            Err(SchedBenchError::Unexpected(format!(
                "{what}: not done after {limit:?} ({e} existing and {m} measured pods bound)"
            )))
        }
    }
}

/// User and system CPU time of this process (all threads) from `/proc/self/stat`.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_from_stat(&stat)
}

/// Fields 14 and 15 (utime, stime), in clock ticks of 1/100 s (Linux's USER_HZ); the command
/// name in field 2 may hold spaces, so fields are counted after its closing parenthesis.
fn cpu_from_stat(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Runs one SchedulingBasic round and returns its figures.
pub fn measure(opts: &Options) -> Result<Report, SchedBenchError> {
    if opts.nodes == 0 || opts.pods == 0 {
        return Err(SchedBenchError::Unexpected(
            "--nodes and --pods must be at least 1".into(),
        ));
    }
    let (kubeconfig, _dir) = start_server()?;
    // One thread drives creates and the watch; the scheduler and the server have their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SchedBenchError::Runtime)?;
    // On a thread and runtime of its own, as inside `berth server`; it waits for nodes and pods.
    let mut config = berth_scheduler::RunConfig::default();
    if let Some(n) = opts.bind_concurrency {
        config.bind_concurrency = n.max(1);
    }
    let scheduler = berth_controllers::leader::spawn(
        &kubeconfig,
        "berth-scheduler",
        None,
        move |client, stop| berth_scheduler::run(client, config.clone(), stop),
    )
    .map_err(SchedBenchError::Scheduler)?;
    runtime.block_on(async {
        let client = berth_controllers::client_from_kubeconfig(&kubeconfig)
            .await
            .map_err(SchedBenchError::Connect)?;
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))
            .expect("a literal namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| SchedBenchError::Api {
                op: "creating the namespace",
                source,
            })?;

        progress(&format!("registering {} nodes", opts.nodes));
        let begun = Instant::now();
        let sim = nodesim::start(
            client.clone(),
            SimConfig {
                count: opts.nodes,
                prefix: "node-".into(),
                cpu: "4".into(),
                memory: "32Gi".into(),
                pods: 110,
                // Nodes stay Ready for the whole run without heartbeat traffic competing
                // with the measured writes.
                lease_period: Duration::from_secs(3600),
                lease_duration_seconds: 7200,
                run_pods: false,
                ..SimConfig::default()
            },
        )
        .await
        .map_err(SchedBenchError::Nodes)?;
        let register = begun.elapsed();

        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let revision = observe::start_revision(&pods).await?;
        let sent = Arc::new(SendTimes::new(opts.pods));
        let (tx, mut rx) = tokio::sync::watch::channel((0, 0));
        let observer = tokio::spawn(observe::observe(
            pods.clone(),
            revision,
            opts.existing,
            opts.pods,
            Arc::clone(&sent),
            tx,
        ));

        progress(&format!("scheduling {} existing pods", opts.existing));
        let begun = Instant::now();
        create_pods(
            &pods,
            EXISTING_PREFIX,
            opts.existing,
            opts.concurrency,
            None,
        )
        .await?;
        let existing = opts.existing;
        wait_for(&mut rx, "existing pods", existing, |(e, _)| e >= existing).await?;
        let existing_took = begun.elapsed();

        progress(&format!("creating and scheduling {} pods", opts.pods));
        let cpu_before = process_cpu();
        create_pods(
            &pods,
            MEASURED_PREFIX,
            opts.pods,
            opts.concurrency,
            Some(&sent),
        )
        .await?;
        let creates_done = Instant::now();
        let measured = opts.pods;
        wait_for(&mut rx, "measured pods", measured, |(_, m)| m >= measured).await?;
        let cpu = process_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        let observed = observer
            .await
            .map_err(|e| SchedBenchError::Unexpected(format!("the observer failed: {e}")))??;
        scheduler.stop();
        sim.shutdown().await;

        let first = sent.first().unwrap_or(observed.last_bound);
        let wall = observed.last_bound.saturating_duration_since(first);
        let summary = observed.latencies.summary(None);
        let ms = |us: f64| us / 1000.0;
        Ok(Report {
            nodes: opts.nodes,
            existing: opts.existing,
            pods: opts.pods,
            binds: observed.binds,
            wall,
            creates: creates_done.saturating_duration_since(first),
            cpu,
            pods_per_sec: observed.binds as f64 / wall.as_secs_f64().max(1e-9),
            p50_ms: ms(summary.p50_us),
            p99_ms: ms(summary.p99_us),
            p999_ms: ms(summary.p999_us),
            max_ms: ms(summary.max_us),
            register,
            existing_took,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_matches_kube_schedulers_default_template() {
        let p = pod("pod-0");
        let c = &p.spec.as_ref().unwrap().containers[0];
        let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(requests["memory"].0, "500Mi");
        assert_eq!(p.metadata.namespace.as_deref(), Some(NAMESPACE));
    }

    #[test]
    fn cpu_time_from_proc_stat() {
        let stat = "42 (berth x) S 1 42 42 0 -1 4194304 100 0 0 0 250 30 0 0 20 0 7 0";
        assert_eq!(cpu_from_stat(stat), Some(Duration::from_millis(2_800)));
        assert_eq!(cpu_from_stat("garbage"), None);
        assert!(process_cpu().is_some());
    }

    #[test]
    fn report_json_has_the_headline_fields() {
        let r = Report {
            nodes: 5,
            existing: 1,
            pods: 10,
            binds: 10,
            wall: Duration::from_millis(20),
            creates: Duration::from_millis(10),
            cpu: Some(Duration::from_millis(40)),
            pods_per_sec: 500.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            p999_ms: 3.0,
            max_ms: 3.0,
            register: Duration::ZERO,
            existing_took: Duration::ZERO,
        };
        let j = r.to_json();
        for key in [
            "pods_per_sec",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "nodes",
            "pods",
            "binds",
        ] {
            assert!(j.get(key).is_some_and(Value::is_number), "{key}");
        }
        assert!(r.to_table().contains("500 pods/s"));
    }
}
