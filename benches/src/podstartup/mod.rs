//! `berth bench podstartup`: how fast a pod goes from create to Ready on a real node, how fast a
//! container starts next to `crun`, and how much memory the kubelet and the shims hold.
//!
//! Everything runs on a fresh temporary directory from the `berth` binary itself: a busybox OCI
//! archive is built in-process and `berth image import`ed into the node's data directory, so
//! pods (`imagePullPolicy: Never`) need no registry; `berth server` and `berth kubelet` run as
//! separate processes, so the kubelet's RSS is its own. Needs root.
//!
//! 1. Single pods, one after another: create → Ready as seen on a watch (HDR percentiles), and
//!    where the time went (create → bound → first kubelet status → running → Ready).
//! 2. A burst of N pods created at once on the node: first create to last Ready, and per pod.
//! 3. RSS of the kubelet and of each shim with the N pods running.
//! 4. Container start alone, Berth's runtime against crun on the same layers, interleaved (see
//!    `vscrun`); run first, before the cluster starts, so nothing else competes for the CPUs.

mod image;
mod observe;
mod processes;
mod report;
mod rss;
mod stats;
mod vscrun;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use observe::{Board, Timeline};
use processes::Cluster;
pub use report::{Report, Stages};
use stats::Samples;

const NAMESPACE: &str = "podstartup-bench";
/// How long the node has to register and turn Ready.
const NODE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one single pod has to turn Ready.
const POD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Pods in the burst created at once on the node (and running while RSS is read).
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Single pods created one after another.
    #[arg(long, default_value_t = 30)]
    pub single: usize,
    /// Container starts of each runtime (Berth's, crun) in the side-by-side comparison.
    #[arg(long, default_value_t = 50)]
    pub crun_iterations: usize,
    /// Where the temporary directory (the node's data directory) goes [default: $TMPDIR]. The
    /// kubelet taints its node with DiskPressure under 10% free space there.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PodStartupError {
    #[error("berth bench podstartup cannot run here: {reason}")]
    Unsupported { reason: String },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("berth's container runtime")]
    Runtime(#[from] berth_kubelet::runtime::RuntimeError),
    #[error("the node's image store")]
    Image(#[from] berth_kubelet::image::ImageError),
    #[error("connecting to the API server")]
    Connect(#[source] berth_controllers::StartError),
    #[error("{op}")]
    Api {
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {message}")]
    Process { what: String, message: String },
    #[error("{what}: not done after {limit:?}")]
    Timeout { what: String, limit: Duration },
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Unexpected(String),
}

/// Runs the benchmark and prints the table (or JSON) on stdout.
pub fn run(opts: &Options) -> Result<(), PodStartupError> {
    let report = measure(opts)?;
    if opts.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

fn progress(message: &str) {
    eprintln!("berth bench podstartup: {message}");
}

/// What the host must have; the reason when it lacks it.
fn check_host() -> Result<(), PodStartupError> {
    let unsupported = |reason: &str| {
        Err(PodStartupError::Unsupported {
            reason: reason.to_string(),
        })
    };
    if !nix::unistd::geteuid().is_root() {
        return unsupported("it needs root (namespaces, cgroups, overlayfs, pod networking)");
    }
    for tool in [image::BUSYBOX, vscrun::CRUN] {
        if !Path::new(tool).exists() {
            return unsupported(&format!("{tool} is not installed"));
        }
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") {
        return unsupported("the kernel has no overlayfs");
    }
    Ok(())
}

/// Fails fast where the kubelet would taint its node with DiskPressure (under 10% of the data
/// directory's filesystem available, its `nodefs.available` default), so no pod would schedule.
fn check_room(data_dir: &Path) -> Result<(), PodStartupError> {
    let parent = data_dir.parent().unwrap_or(data_dir);
    let fs = nix::sys::statvfs::statvfs(parent).map_err(|source| PodStartupError::Sys {
        op: "statvfs of the benchmark's directory",
        source,
    })?;
    let (total, available) = (fs.blocks() as f64, fs.blocks_available() as f64);
    let percent = if total > 0.0 {
        available * 100.0 / total
    } else {
        100.0
    };
    if percent < 10.0 {
        return Err(PodStartupError::Unsupported {
            reason: format!(
                "only {percent:.1}% of the filesystem under {} is available; the kubelet would \
                 taint its node with DiskPressure. Pass --dir on one with more room (e.g. /dev/shm)",
                parent.display()
            ),
        });
    }
    Ok(())
}

/// Runs every part once and returns the figures.
pub fn measure(opts: &Options) -> Result<Report, PodStartupError> {
    if opts.pods == 0 || opts.single == 0 || opts.crun_iterations == 0 {
        return Err(PodStartupError::Unexpected(
            "--pods, --single and --crun-iterations must be at least 1".into(),
        ));
    }
    check_host()?;
    let berth = std::env::current_exe().map_err(|source| PodStartupError::Io {
        op: "locate",
        path: "the berth binary".into(),
        source,
    })?;
    let mut cluster = Cluster::prepare(&berth, opts.dir.as_deref())?;
    check_room(&cluster.data_dir)?;
    let archive = cluster.scratch("busybox-oci.tar");
    image::write_busybox_archive(&archive)?;
    progress("importing the busybox image into the node's data directory");
    cluster.import_image(&archive)?;
    let store = berth_kubelet::image::ImageStore::open(
        &cluster.data_dir.join("images"),
        Default::default(),
    )?;
    let layers = store
        .get(image::IMAGE)
        .ok_or_else(|| {
            PodStartupError::Unexpected("the imported image is not in the store".into())
        })?
        .layers;
    drop(store);

    progress(&format!(
        "{} container starts each, berth's runtime and crun, interleaved",
        opts.crun_iterations
    ));
    let work = cluster.scratch("vscrun");
    std::fs::create_dir(&work).map_err(|source| PodStartupError::Io {
        op: "create",
        path: work.clone(),
        source,
    })?;
    let comparison = vscrun::compare(&layers, &work, opts.crun_iterations)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| PodStartupError::Io {
            op: "start a runtime",
            path: PathBuf::new(),
            source,
        })?;
    let pods = runtime.block_on(async {
        tokio::select! {
            r = measure_pods(opts, &mut cluster) => r,
            _ = tokio::signal::ctrl_c() => Err(PodStartupError::Interrupted),
        }
    });
    let pods = match pods {
        Ok(p) => p,
        Err(e) => {
            if !matches!(e, PodStartupError::Interrupted) {
                eprintln!(
                    "the kubelet's log ends with:\n{}",
                    cluster.log_tail("kubelet.log")
                );
            }
            return Err(e);
        }
    };
    progress("stopping the cluster and cleaning up");
    let cgroup_base = cluster.cgroup_base.clone();
    drop(cluster);
    Ok(Report {
        ours_start: comparison.ours.percentiles(),
        crun_start: comparison.crun.percentiles(),
        crun_note: comparison.note,
        cgroup_base,
        ..pods
    })
}

/// The pod phases on a running cluster: single pods, the burst, then RSS.
async fn measure_pods(opts: &Options, cluster: &mut Cluster) -> Result<Report, PodStartupError> {
    progress("starting berth server and berth kubelet");
    cluster.start_server()?;
    cluster.start_kubelet()?;
    let client = berth_controllers::client_from_kubeconfig(&cluster.kubeconfig)
        .await
        .map_err(PodStartupError::Connect)?;
    wait_node_ready(&client, cluster).await?;
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))
        .expect("a literal namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(|source| PodStartupError::Api {
            op: "creating the namespace",
            source,
        })?;
    let api: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let board = Arc::new(Board::default());
    let revision = observe::start_revision(&api).await?;
    let watcher = tokio::spawn(observe::watch(api.clone(), revision, Arc::clone(&board)));
    let events: Api<Event> = Api::namespaced(api.clone().into_client(), NAMESPACE);
    let revision = observe::start_revision(&events).await?;
    let event_watcher = tokio::spawn(observe::watch_events(events, revision, Arc::clone(&board)));
    let result = pod_phases(opts, cluster, &api, &board).await;
    watcher.abort();
    event_watcher.abort();
    result
}

async fn wait_node_ready(
    client: &kube::Client,
    cluster: &mut Cluster,
) -> Result<(), PodStartupError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + NODE_TIMEOUT;
    loop {
        cluster.check_alive()?;
        let node = nodes.get_opt(&cluster.node).await.ok().flatten();
        let ready = node
            .as_ref()
            .and_then(|n| n.status.as_ref()?.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let cidr = node
            .as_ref()
            .and_then(|n| n.spec.as_ref()?.pod_cidr.as_ref())
            .is_some();
        if ready && cidr {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(PodStartupError::Timeout {
                what: format!("node {} Ready", cluster.node),
                limit: NODE_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A busybox pod that sleeps; one second of grace so deleting it is quick.
fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep",
                "image": image::IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        },
    }))
    .expect("a literal pod")
}

async fn create(api: &Api<Pod>, name: &str) -> Result<Instant, PodStartupError> {
    let sent = Instant::now();
    api.create(&PostParams::default(), &pod(name))
        .await
        .map_err(|source| PodStartupError::Api {
            op: "creating a pod",
            source,
        })?;
    Ok(sent)
}

/// create → Ready of every pod seen Ready, and each stage's time since the previous one from
/// every timeline complete up to Ready.
fn stages(timelines: &[(Instant, Timeline)]) -> (Samples, Stages) {
    let mut total = Samples::default();
    let mut s: [Samples; 4] = Default::default();
    for (sent, t) in timelines {
        if let Some(ready) = t.ready {
            total.record(ready.saturating_duration_since(*sent));
        }
        let (Some(bound), Some(pulled), Some(started), Some(ready)) =
            (t.bound, t.pulled, t.started, t.ready)
        else {
            continue;
        };
        let points = [*sent, bound, pulled, started, ready];
        for (i, w) in points.windows(2).enumerate() {
            s[i].record(w[1].saturating_duration_since(w[0]));
        }
    }
    let [bound, sandbox, started, ready] = s.map(|s| s.percentiles());
    (
        total,
        Stages {
            bound,
            sandbox,
            started,
            ready,
        },
    )
}

/// `error`, with what the API says of pod `name` (its status, for a pod that never got Ready).
async fn with_status(api: &Api<Pod>, name: &str, error: PodStartupError) -> PodStartupError {
    let status = match api.get(name).await {
        Ok(pod) => serde_json::to_string(&pod.status).unwrap_or_default(),
        Err(e) => format!("(reading it failed: {e})"),
    };
    PodStartupError::Unexpected(format!("{error}; pod {name}'s status: {status}"))
}

async fn pod_phases(
    opts: &Options,
    cluster: &mut Cluster,
    api: &Api<Pod>,
    board: &Board,
) -> Result<Report, PodStartupError> {
    progress(&format!(
        "a first pod, then {} single pods one after another",
        opts.single
    ));
    // single-0 is the node's first pod: it pays one-time costs (the first shim and container
    // exec, cold caches), so it is reported on its own and left out of the percentiles.
    let mut sends = Vec::new();
    for i in 0..=opts.single {
        cluster.check_alive()?;
        let name = format!("single-{i}");
        let sent = create(api, &name).await?;
        let ready = board
            .wait_until(&format!("pod {name} Ready"), POD_TIMEOUT, |p| {
                p.get(&name).is_some_and(|t| t.ready.is_some())
            })
            .await;
        if let Err(e) = ready {
            return Err(with_status(api, &name, e).await);
        }
        sends.push((name.clone(), sent));
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(|source| PodStartupError::Api {
                op: "deleting a pod",
                source,
            })?;
    }
    board
        .wait_until("single pods deleted", POD_TIMEOUT, |p| {
            sends
                .iter()
                .all(|(n, _)| p.get(n).is_some_and(|t| t.gone.is_some()))
        })
        .await?;
    // Read after the fact: the kubelet's events may trail its Ready status.
    let singles: Vec<(Instant, Timeline)> = sends
        .iter()
        .map(|(name, sent)| (*sent, board.get(name)))
        .collect();
    let first_pod = singles
        .first()
        .and_then(|(sent, t)| Some(t.ready?.saturating_duration_since(*sent)))
        .unwrap_or_default();
    let (single, single_stages) = stages(&singles[1..]);

    progress(&format!("a burst of {} pods at once", opts.pods));
    cluster.check_alive()?;
    let names: Vec<String> = (0..opts.pods).map(|i| format!("burst-{i}")).collect();
    let sends = futures::future::join_all(names.iter().map(|n| create(api, n))).await;
    let sends = sends.into_iter().collect::<Result<Vec<_>, _>>()?;
    let limit = POD_TIMEOUT + Duration::from_millis(100 * opts.pods as u64);
    let ready = board
        .wait_until(&format!("{} burst pods Ready", opts.pods), limit, |p| {
            names
                .iter()
                .all(|n| p.get(n).is_some_and(|t| t.ready.is_some()))
        })
        .await;
    if let Err(e) = ready {
        let late = names.iter().find(|n| board.get(n).ready.is_none());
        return Err(match late {
            Some(name) => with_status(api, name, e).await,
            None => e,
        });
    }
    // Give the kubelet's last events a moment to land (they trail Ready by a round trip).
    let _ = board
        .wait_until("burst events", Duration::from_secs(2), |p| {
            names
                .iter()
                .all(|n| p.get(n).is_some_and(|t| t.started.is_some()))
        })
        .await;
    let bursts: Vec<(Instant, Timeline)> = names
        .iter()
        .zip(&sends)
        .map(|(n, sent)| (*sent, board.get(n)))
        .collect();
    let first = sends.iter().min().copied().unwrap_or_else(Instant::now);
    let last = bursts
        .iter()
        .filter_map(|(_, t)| t.ready)
        .max()
        .unwrap_or(first);
    let (burst, burst_stages) = stages(&bursts);

    cluster.check_alive()?;
    let rss = rss::measure(
        Path::new("/proc"),
        cluster.kubelet_pid(),
        cluster.server_pid(),
        &cluster.pods_dir(),
    );
    Ok(Report {
        first_pod,
        single: single.percentiles(),
        single_stages,
        burst_pods: opts.pods,
        burst_all_ready: last.saturating_duration_since(first),
        burst: burst.percentiles(),
        burst_stages,
        ours_start: Default::default(),
        crun_start: Default::default(),
        crun_note: String::new(),
        rss,
        cgroup_base: String::new(),
    })
}
