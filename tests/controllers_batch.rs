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
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::wait::conditions;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use common::{apply, kubectl, wait_for, InProcessControllers, InProcessScheduler, Server};

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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
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
        &[
            "wait",
            "--for=condition=complete",
            "job/calc",
            "--timeout=30s",
        ],
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
    assert_eq!(
        max, 2,
        "at most parallelism pods ran at once, and that many did"
    );
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
        &[
            "wait",
            "--for=condition=failed",
            "job/crash",
            "--timeout=30s",
        ],
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

const DAEMONSET: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: app
        image: nginx:1.25
"#;

/// `(node, image, revision hash)` of each pod with `selector`, sorted.
async fn placed(client: &kube::Client, selector: &str) -> Vec<(String, String, String)> {
    let pods = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing pods");
    let mut out: Vec<_> = pods
        .items
        .iter()
        .map(|p| {
            let spec = p.spec.as_ref().expect("a pod spec");
            (
                spec.node_name.clone().unwrap_or_default(),
                spec.containers[0].image.clone().unwrap_or_default(),
                p.labels()
                    .get("controller-revision-hash")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_covers_each_untainted_node_once_and_rolls() {
    let c = cluster("ds-", 3).await;
    let tainted = nodesim::start(
        c.client.clone(),
        SimConfig {
            prefix: "gpu-".into(),
            taints: vec![serde_json::from_value(serde_json::json!(
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
            ))
            .unwrap()],
            ..SimConfig::default()
        },
    )
    .await
    .expect("starting the tainted node");

    apply(&c.server, DAEMONSET).await;
    let out = kubectl(
        &c.server,
        &["rollout", "status", "ds/agent", "--timeout=30s"],
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let first = placed(&c.client, "app=agent").await;
    let nodes: Vec<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(nodes, ["ds-0", "ds-1", "ds-2"], "{first:?}");
    let ds = kubectl(&c.server, &["get", "ds", "agent", "-o", "json"]).await;
    let ds: serde_json::Value = serde_json::from_str(&ds).unwrap();
    let status = &ds["status"];
    assert_eq!(
        (
            &status["desiredNumberScheduled"],
            &status["numberReady"],
            &status["updatedNumberScheduled"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(3),
            &serde_json::json!(3)
        ),
        "{status}"
    );
    assert_eq!(status["observedGeneration"], ds["metadata"]["generation"]);
    // Pinned by node affinity, with the daemon tolerations.
    let pod = Api::<Pod>::namespaced(c.client.clone(), "default")
        .list(&ListParams::default().labels("app=agent"))
        .await
        .unwrap()
        .items
        .remove(0);
    let spec = pod.spec.unwrap();
    let terms = &spec
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    let field = &terms[0].match_fields.as_ref().unwrap()[0];
    assert_eq!(field.key, "metadata.name");
    assert_eq!(
        field.values.as_deref(),
        Some(&[spec.node_name.clone().unwrap()][..])
    );
    assert_eq!(spec.tolerations.map(|t| t.len()), Some(6));

    // A new image rolls out node by node.
    kubectl(&c.server, &["set", "image", "ds/agent", "app=nginx:1.27"]).await;
    let out = kubectl(
        &c.server,
        &["rollout", "status", "ds/agent", "--timeout=30s"],
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let second = placed(&c.client, "app=agent").await;
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(
        second.iter().all(|(_, image, _)| image == "nginx:1.27"),
        "{second:?}"
    );
    assert!(second
        .iter()
        .all(|(_, _, h)| h != &first[0].2 && h == &second[0].2));

    tainted.shutdown().await;
    c.stop().await;
}

const STATEFULSET: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: 3
  serviceName: web
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: nginx:1.25
"#;

/// Each pod in the order it first appeared, with the pods that were Ready at that moment.
type Appearances = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// Watches `app=web` pods; for every pod first seen, records which pods were Ready then.
fn track_order(client: &kube::Client) -> Appearances {
    let log = Arc::new(Mutex::new(Vec::new()));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let config = watcher::Config::default().labels("app=web");
    let seen = log.clone();
    tokio::spawn(async move {
        let mut ready: BTreeMap<String, bool> = BTreeMap::new();
        let mut events = watcher(api, config).applied_objects().boxed();
        while let Some(Ok(pod)) = events.next().await {
            let name = pod.name_any();
            if !ready.contains_key(&name) {
                let now_ready: Vec<String> = ready
                    .iter()
                    .filter(|(_, r)| **r)
                    .map(|(n, _)| n.clone())
                    .collect();
                seen.lock().unwrap().push((name.clone(), now_ready));
            }
            let is_ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            ready.insert(name, is_ready);
        }
    });
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_starts_its_pods_in_order_and_rolls() {
    let c = cluster("sts-", 2).await;
    let order = track_order(&c.client);
    apply(&c.server, STATEFULSET).await;
    let out = kubectl(
        &c.server,
        &["rollout", "status", "sts/web", "--timeout=30s"],
    )
    .await;
    assert!(out.contains("roll out complete"), "{out}");
    let log = order.lock().unwrap().clone();
    let names: Vec<&str> = log.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"], "{log:?}");
    for (i, (name, ready_before)) in log.iter().enumerate().skip(1) {
        assert!(
            ready_before.contains(&format!("web-{}", i - 1)),
            "{name} appeared before web-{} was Ready: {log:?}",
            i - 1
        );
    }
    // Kubernetes' StatefulSet Events, one per pod created.
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let config = watcher::Config::default().fields("involvedObject.name=web");
    let mut stream = watcher::watcher(events, config)
        .applied_objects()
        .filter_map(|e| async move { e.ok() })
        .filter(|e| {
            std::future::ready(
                e.reason.as_deref() == Some("SuccessfulCreate")
                    && e.message.as_deref()
                        == Some("create Pod web-2 in StatefulSet web successful"),
            )
        })
        .boxed();
    tokio::time::timeout(common::CONVERGE_TIMEOUT, stream.next())
        .await
        .expect("a SuccessfulCreate event for web-2")
        .expect("the event watch ended");
    let pod = Api::<Pod>::namespaced(c.client.clone(), "default")
        .get("web-1")
        .await
        .expect("web-1");
    assert_eq!(pod.labels()["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(pod.labels()["apps.kubernetes.io/pod-index"], "1");
    let spec = pod.spec.unwrap();
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("web-1"), Some("web"))
    );

    kubectl(&c.server, &["set", "image", "sts/web", "app=nginx:1.27"]).await;
    let out = kubectl(
        &c.server,
        &["rollout", "status", "sts/web", "--timeout=30s"],
    )
    .await;
    // The defaulted partition 0 makes kubectl report a partitioned roll-out, as on Kubernetes.
    assert!(
        out.contains("partitioned roll out complete: 3 new pods"),
        "{out}"
    );
    let images = placed(&c.client, "app=web").await;
    assert!(
        images.iter().all(|(_, image, _)| image == "nginx:1.27"),
        "{images:?}"
    );
    let sts = kubectl(&c.server, &["get", "sts", "web", "-o", "json"]).await;
    let sts: serde_json::Value = serde_json::from_str(&sts).unwrap();
    let status = &sts["status"];
    assert_eq!(
        status["currentRevision"], status["updateRevision"],
        "{status}"
    );
    assert_eq!(
        (
            &status["replicas"],
            &status["readyReplicas"],
            &status["updatedReplicas"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(3),
            &serde_json::json!(3)
        ),
        "{status}"
    );
    assert_eq!(images[0].2, status["updateRevision"].as_str().unwrap());

    // Scaling down removes the highest ordinals.
    kubectl(&c.server, &["scale", "sts/web", "--replicas=1"]).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    for gone in ["web-2", "web-1"] {
        wait_for(&pods, gone, "deleted on scale-down", |p: Option<&Pod>| {
            p.is_none()
        })
        .await;
    }
    assert!(pods.get_opt("web-0").await.unwrap().is_some());
    c.stop().await;
}
