//! The Job, DaemonSet and StatefulSet controllers against a real API server, with the scheduler
//! and simulated nodes: Jobs run to Complete within their parallelism or fail past their
//! backoffLimit and expire after ttlSecondsAfterFinished; a DaemonSet covers each eligible node
//! once and `kubectl rollout status` follows it; a StatefulSet starts its pods in order.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_bench::nodesim::{self, NodeSimulator, SimConfig};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::wait::conditions;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use common::{wait_for, InProcessControllers, InProcessScheduler, Server};

/// kubectl off the async runtime's threads, so the controllers keep running meanwhile.
async fn kubectl(server: &Server, args: &[&str]) -> String {
    let k = server.kubectl();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        k.ok(&refs)
    })
    .await
    .expect("the kubectl task")
}

async fn apply(server: &Server, manifest: &str) {
    let k = server.kubectl();
    let manifest = manifest.to_string();
    tokio::task::spawn_blocking(move || k.ok_stdin(&["apply", "-f", "-"], &manifest))
        .await
        .expect("the kubectl task");
}

/// A control plane (controllers with an instant Job back-off, scheduler) and `nodes` simulated
/// nodes named `<prefix>0…`.
struct Cluster {
    server: Server,
    client: kube::Client,
    controllers: InProcessControllers,
    scheduler: InProcessScheduler,
    sim: NodeSimulator,
}

async fn cluster(prefix: &str, nodes: usize) -> Cluster {
    let server = Server::start();
    let client = server.client().await;
    let mut config = berth_controllers::Config::default();
    config.job.backoff_base = Duration::ZERO;
    let controllers = InProcessControllers::start(client.clone(), config);
    let scheduler = InProcessScheduler::start(client.clone(), Default::default());
    let sim = nodesim::start(
        client.clone(),
        SimConfig {
            count: nodes,
            prefix: prefix.into(),
            ..SimConfig::default()
        },
    )
    .await
    .expect("starting simulated nodes");
    Cluster {
        server,
        client,
        controllers,
        scheduler,
        sim,
    }
}

impl Cluster {
    async fn stop(self) {
        self.sim.shutdown().await;
        self.scheduler.stop().await;
        self.controllers.stop().await;
        drop(self.server);
    }
}

/// Watches pods matching `selector` and records, for each change, how many of them were
/// running (bound, not finished, not deleted) at once.
fn track_running(client: &kube::Client, selector: &str) -> Arc<Mutex<usize>> {
    let max = Arc::new(Mutex::new(0));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let config = watcher::Config::default().labels(selector);
    let seen = max.clone();
    tokio::spawn(async move {
        let mut running: HashMap<String, bool> = HashMap::new();
        let mut events = watcher(api, config).applied_objects().boxed();
        while let Some(Ok(pod)) = events.next().await {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            let live = pod.metadata.deletion_timestamp.is_none()
                && !matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
            running.insert(pod.uid().unwrap_or_default(), live);
            let now = running.values().filter(|l| **l).count();
            let mut max = seen.lock().unwrap();
            *max = (*max).max(now);
        }
    });
    max
}

async fn job_pods(client: &kube::Client, job: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .expect("listing the job's pods")
        .items
}

fn phases(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in pods {
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        *out.entry(phase.unwrap_or_default()).or_default() += 1;
    }
    out
}

fn job(name: &str, spec: &str, exit_code: i32, run_for: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
  template:
    metadata:
      annotations:
        sim.berth.dev/exit-code: "{exit_code}"
        sim.berth.dev/run-for: "{run_for}"
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_past_their_backoff_limit_and_expire() {
    let c = cluster("job-", 2).await;
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");

    // completions=3, parallelism=2: three pods succeed, never more than two at once.
    let running = track_running(&c.client, "batch.kubernetes.io/job-name=calc");
    apply(
        &c.server,
        &job("calc", "  completions: 3\n  parallelism: 2", 0, "300ms"),
    )
    .await;
    // The failing Job runs meanwhile: backoffLimit 2 → three failed pods, then Failed.
    apply(&c.server, &job("crash", "  backoffLimit: 2", 1, "0s")).await;
    // ttlSecondsAfterFinished 0: deleted as soon as it completes.
    apply(
        &c.server,
        &job("brief", "  ttlSecondsAfterFinished: 0", 0, "0s"),
    )
    .await;
    let brief = jobs.get("brief").await.expect("the brief job");

    kubectl(
        &c.server,
        &["wait", "--for=condition=complete", "job/calc", "--timeout=30s"],
    )
    .await;
    let calc = jobs.get("calc").await.expect("the calc job");
    let status = calc.status.clone().expect("a status");
    assert_eq!(status.succeeded, Some(3), "{status:?}");
    assert_eq!(status.failed, None);
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    let types: Vec<&str> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    let pods = job_pods(&c.client, "calc").await;
    assert_eq!(phases(&pods), BTreeMap::from([("Succeeded".into(), 3)]));
    let max = *running.lock().unwrap();
    assert_eq!(max, 2, "at most parallelism pods ran at once, and that many did");
    for p in &pods {
        let labels = p.labels();
        assert_eq!(labels["batch.kubernetes.io/job-name"], "calc");
        assert_eq!(
            labels["batch.kubernetes.io/controller-uid"],
            calc.uid().unwrap()
        );
        assert!(
            p.finalizers().is_empty(),
            "the tracking finalizer is removed from finished pods"
        );
    }
    let table = kubectl(&c.server, &["get", "job", "calc"]).await;
    assert!(table.contains("3/3"), "{table}");

    kubectl(
        &c.server,
        &["wait", "--for=condition=failed", "job/crash", "--timeout=30s"],
    )
    .await;
    let crash = jobs.get("crash").await.expect("the crash job");
    let status = crash.status.expect("a status");
    let failed = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed")
        .expect("a Failed condition");
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job has reached the specified backoff limit")
    );
    assert_eq!(status.failed, Some(3));
    let pods = job_pods(&c.client, "crash").await;
    assert_eq!(phases(&pods), BTreeMap::from([("Failed".into(), 3)]));

    wait_for(
        &jobs,
        "brief",
        "deleted after its TTL",
        conditions::is_deleted(&brief.uid().unwrap()),
    )
    .await;
    c.stop().await;
}
