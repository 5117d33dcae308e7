//! The ReplicaSet and Deployment controllers end to end: a real API server, the controllers and
//! the scheduler in process, simulated nodes that run pods, and real kubectl — `create
//! deployment`, `rollout status`, `set image`, `rollout undo`, `rollout pause/resume`,
//! `rollout history`, `scale` — behaving as against kube-controller-manager.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_bench::nodesim::{self, NodeSimulator, SimConfig};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Taint};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use serde_json::json;

use common::{
    kubectl, kubectl_fails, kubectl_stdin, wait_for, InProcessControllers, InProcessScheduler,
    Server,
};

const NS: &str = "default";

/// `kubectl rollout status` until it reports success.
async fn rolled_out(server: &Server, name: &str) {
    let out = kubectl(
        server,
        &[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=60s",
        ],
    )
    .await;
    assert!(
        out.contains(&format!("deployment \"{name}\" successfully rolled out")),
        "{out}"
    );
}

/// A server with the controllers, the scheduler and simulated nodes.
struct Cluster {
    server: Server,
    client: kube::Client,
    controllers: Option<InProcessControllers>,
    scheduler: InProcessScheduler,
    sims: Vec<NodeSimulator>,
}

fn sim(prefix: &str, count: usize, cpu: &str) -> SimConfig {
    SimConfig {
        count,
        prefix: prefix.into(),
        cpu: cpu.into(),
        lease_period: Duration::from_secs(1),
        ..SimConfig::default()
    }
}

impl Cluster {
    async fn start(sims: Vec<SimConfig>) -> Cluster {
        let server = Server::start();
        let client = server.client().await;
        let mut started = Vec::new();
        for config in sims {
            started.push(
                nodesim::start(client.clone(), config)
                    .await
                    .expect("starting simulated nodes"),
            );
        }
        let controllers = InProcessControllers::start(client.clone(), Default::default());
        let scheduler = InProcessScheduler::start(client.clone(), Default::default());
        Cluster {
            server,
            client,
            controllers: Some(controllers),
            scheduler,
            sims: started,
        }
    }

    async fn stop(mut self) {
        if let Some(c) = self.controllers.take() {
            c.stop().await;
        }
        self.scheduler.stop().await;
        for sim in self.sims.drain(..) {
            sim.shutdown().await;
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn pods_of(&self, app: &str) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .expect("listing pods")
            .items
    }

    async fn replicasets_of(&self, app: &str) -> Vec<ReplicaSet> {
        Api::<ReplicaSet>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .expect("listing replicasets")
            .items
    }

    async fn deployment(&self, name: &str) -> Deployment {
        Api::<Deployment>::namespaced(self.client.clone(), NS)
            .get(name)
            .await
            .expect("reading the deployment")
    }
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn live(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
}

/// Watches the pods of `app` and checks `check` against every state the watch shows, from
/// its first full list until `finish`; returns the states seen and the violations.
struct PodWatch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

type Check = Box<dyn Fn(&BTreeMap<String, Pod>) -> Option<String> + Send>;

impl PodWatch {
    async fn start(client: &kube::Client, app: &str, check: Check) -> PodWatch {
        let api: Api<Pod> = Api::namespaced(client.clone(), NS);
        let config = watcher::Config::default().labels(&format!("app={app}"));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut stream = watcher::watcher(api, config).boxed();
            let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
            let mut ready_tx = Some(ready_tx);
            let mut states = 0;
            let mut violations = Vec::new();
            loop {
                let event = tokio::select! {
                    _ = &mut stopped => break,
                    e = stream.next() => e,
                };
                let Some(event) = event else { break };
                match event.expect("the pod watch") {
                    // A (re)list: the state is whole again at InitDone.
                    Event::Init => {
                        pods.clear();
                        continue;
                    }
                    Event::InitApply(p) => {
                        pods.insert(p.name_any(), p);
                        continue;
                    }
                    Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Event::Apply(p) => {
                        pods.insert(p.name_any(), p);
                    }
                    Event::Delete(p) => {
                        pods.remove(&p.name_any());
                    }
                }
                states += 1;
                if let Some(v) = check(&pods) {
                    violations.push(v);
                }
            }
            (states, violations)
        });
        ready_rx.await.expect("the pod watch listed");
        PodWatch { stop, task }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        let _ = self.stop.send(());
        self.task.await.expect("the pod watch task")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_place_pods_by_requests_taints_and_affinity_and_scale() {
    let tainted = SimConfig {
        taints: vec![Taint {
            key: "dedicated".into(),
            value: Some("infra".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }],
        ..sim("infra-", 1, "32")
    };
    let cluster = Cluster::start(vec![sim("big-", 2, "8"), sim("small-", 2, "1"), tainted]).await;
    let server = &cluster.server;

    // No requests: anywhere but the tainted node.
    kubectl(
        server,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "--replicas=4",
        ],
    )
    .await;
    rolled_out(server, "web").await;
    let pods = cluster.pods_of("web").await;
    assert_eq!(pods.len(), 4);
    assert!(pods.iter().all(|p| is_ready(p) && !node_of(p).is_empty()));
    assert!(
        pods.iter().all(|p| !node_of(p).starts_with("infra-")),
        "a pod landed on the tainted node: {:?}",
        pods.iter().map(node_of).collect::<Vec<_>>()
    );
    // Named after their ReplicaSet, itself named after the deployment and its template hash.
    let rses = cluster.replicasets_of("web").await;
    assert_eq!(rses.len(), 1);
    let rs = &rses[0];
    let hash = &rs.labels()["pod-template-hash"];
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(
        rs.annotations()["deployment.kubernetes.io/revision"],
        "1",
        "{rs:?}"
    );
    assert!(pods
        .iter()
        .all(|p| p.name_any().starts_with(&format!("web-{hash}-"))
            && p.labels()["pod-template-hash"] == *hash));

    // `kubectl get deployment` reads the status.
    let table = kubectl(server, &["get", "deployment", "web"]).await;
    let cols = common::row(&table, "web");
    assert_eq!((cols[1], cols[2], cols[3]), ("4/4", "4", "4"), "{table}");

    // Two CPUs each: only the big nodes fit, at most four per node.
    kubectl_stdin(
        server,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: heavy
spec:
  replicas: 3
  selector:
    matchLabels: {app: heavy}
  template:
    metadata:
      labels: {app: heavy}
    spec:
      containers:
      - name: app
        image: nginx:1.25
        resources:
          requests: {cpu: "2"}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: pinned
spec:
  replicas: 2
  selector:
    matchLabels: {app: pinned}
  template:
    metadata:
      labels: {app: pinned}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: kubernetes.io/hostname, operator: In, values: [small-1]}
      containers:
      - name: app
        image: nginx:1.25
"#,
    )
    .await;
    rolled_out(server, "heavy").await;
    rolled_out(server, "pinned").await;
    let heavy = cluster.pods_of("heavy").await;
    assert_eq!(heavy.len(), 3);
    assert!(
        heavy.iter().all(|p| node_of(p).starts_with("big-")),
        "{:?}",
        heavy.iter().map(node_of).collect::<Vec<_>>()
    );
    let pinned = cluster.pods_of("pinned").await;
    assert_eq!(pinned.len(), 2);
    assert!(pinned.iter().all(|p| node_of(p) == "small-1"));

    // Scale up and down through the scale subresource.
    kubectl(server, &["scale", "deployment/web", "--replicas=7"]).await;
    rolled_out(server, "web").await;
    assert_eq!(cluster.pods_of("web").await.len(), 7);
    kubectl(server, &["scale", "deployment/web", "--replicas=2"]).await;
    rolled_out(server, "web").await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NS);
    wait_for(
        &deployments,
        "web",
        "two replicas",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.replicas == Some(2) && s.available_replicas == Some(2))
        },
    )
    .await;
    let left: Vec<Pod> = cluster
        .pods_of("web")
        .await
        .into_iter()
        .filter(live)
        .collect();
    assert_eq!(left.len(), 2);
    // Still one ReplicaSet: scaling is not a new revision.
    assert_eq!(cluster.replicasets_of("web").await.len(), 1);
    let rs_name = format!("web-{hash}");
    let table = kubectl(server, &["get", "rs", &rs_name]).await;
    let cols = common::row(&table, &rs_name);
    assert_eq!((cols[1], cols[2], cols[3]), ("2", "2", "2"), "{table}");
    let describe = kubectl(server, &["describe", "deployment", "web"]).await;
    let line = describe
        .lines()
        .find(|l| l.starts_with("NewReplicaSet:"))
        .unwrap_or_else(|| panic!("no NewReplicaSet in:\n{describe}"));
    assert!(
        line.ends_with(&format!("{rs_name} (2/2 replicas created)")),
        "{describe}"
    );
    let d = cluster.deployment("web").await;
    let status = d.status.expect("a status");
    let reasons: BTreeMap<String, (String, String)> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, (c.status, c.reason.unwrap_or_default())))
        .collect();
    assert_eq!(
        reasons["Available"],
        ("True".into(), "MinimumReplicasAvailable".into())
    );
    assert_eq!(
        reasons["Progressing"],
        ("True".into(), "NewReplicaSetAvailable".into())
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_image_rolls_within_surge_and_unavailability_then_undo_and_pause() {
    let cluster = Cluster::start(vec![sim("sim-", 3, "32")]).await;
    let server = &cluster.server;
    kubectl(
        server,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "--replicas=5",
        ],
    )
    .await;
    rolled_out(server, "web").await;

    // 25% of 5: maxSurge rounds up to 2, maxUnavailable down to 1.
    let (replicas, surge, unavailable) = (5, 2, 1);
    let check: Check = Box::new(move |pods| {
        let total = pods.values().filter(|p| live(p)).count();
        let available = pods.values().filter(|p| live(p) && is_ready(p)).count();
        (total > replicas + surge || available < replicas - unavailable)
            .then(|| format!("{total} pods, {available} available"))
    });
    let watch = PodWatch::start(&cluster.client, "web", check).await;
    kubectl(
        server,
        &["set", "image", "deployment/web", "nginx=nginx:1.26"],
    )
    .await;
    rolled_out(server, "web").await;
    let (states, violations) = watch.finish().await;
    assert!(violations.is_empty(), "over the limits: {violations:?}");
    // Every old pod went and every new one came, one watch event at a time at least.
    assert!(states >= 20, "only {states} pod states observed");

    let pods: Vec<Pod> = cluster
        .pods_of("web")
        .await
        .into_iter()
        .filter(live)
        .collect();
    assert_eq!(pods.len(), 5);
    assert!(pods.iter().all(|p| image_of(p) == "nginx:1.26"));
    let history = kubectl(server, &["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Undo: back to the first template, which becomes revision 3.
    let out = kubectl(server, &["rollout", "undo", "deployment/web"]).await;
    assert!(out.contains("rolled back"), "{out}");
    rolled_out(server, "web").await;
    let pods: Vec<Pod> = cluster
        .pods_of("web")
        .await
        .into_iter()
        .filter(live)
        .collect();
    assert_eq!(pods.len(), 5);
    assert!(pods.iter().all(|p| image_of(p) == "nginx:1.25"));
    let history = kubectl(server, &["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    let d = cluster.deployment("web").await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "3");
    let rses = cluster.replicasets_of("web").await;
    assert_eq!(rses.len(), 2);
    let reused = rses
        .iter()
        .find(|rs| rs.annotations()["deployment.kubernetes.io/revision"] == "3")
        .expect("the revision 3 replicaset");
    assert_eq!(
        reused.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );

    // Paused: a template change makes no new ReplicaSet, until resumed.
    kubectl(server, &["rollout", "pause", "deployment/web"]).await;
    kubectl(
        server,
        &["set", "image", "deployment/web", "nginx=nginx:1.27"],
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NS);
    let paused = wait_for(
        &deployments,
        "web",
        "the pause seen",
        |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                let s = d.status.as_ref();
                s.and_then(|s| s.observed_generation) == d.metadata.generation
                    && s.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == "Progressing"
                                && c.reason.as_deref() == Some("DeploymentPaused")
                        })
                    })
            })
        },
    )
    .await
    .expect("the deployment");
    assert_eq!(paused.status.unwrap().updated_replicas, Some(0));
    assert_eq!(cluster.replicasets_of("web").await.len(), 2);
    kubectl(server, &["rollout", "resume", "deployment/web"]).await;
    rolled_out(server, "web").await;
    let pods: Vec<Pod> = cluster
        .pods_of("web")
        .await
        .into_iter()
        .filter(live)
        .collect();
    assert!(pods.len() == 5 && pods.iter().all(|p| image_of(p) == "nginx:1.27"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_every_old_pod_first_and_a_stuck_rollout_times_out() {
    let cluster = Cluster::start(vec![sim("sim-", 2, "4")]).await;
    let server = &cluster.server;
    kubectl_stdin(
        server,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: db
spec:
  replicas: 3
  strategy: {type: Recreate}
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:16
"#,
    )
    .await;
    rolled_out(server, "db").await;
    let check: Check = Box::new(|pods| {
        let images: BTreeSet<String> = pods.values().map(image_of).collect();
        (images.len() > 1).then(|| format!("old and new pods at once: {images:?}"))
    });
    let watch = PodWatch::start(&cluster.client, "db", check).await;
    kubectl(server, &["set", "image", "deployment/db", "db=postgres:17"]).await;
    rolled_out(server, "db").await;
    let (states, violations) = watch.finish().await;
    assert!(violations.is_empty(), "{violations:?}");
    assert!(states >= 6, "only {states} pod states observed");
    let pods = cluster.pods_of("db").await;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| image_of(p) == "postgres:17"));

    // Requests no node can meet, a 2 s deadline: rollout status reports the timeout.
    kubectl_stdin(
        server,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: huge
spec:
  replicas: 1
  progressDeadlineSeconds: 2
  selector:
    matchLabels: {app: huge}
  template:
    metadata:
      labels: {app: huge}
    spec:
      containers:
      - name: app
        image: nginx:1.25
        resources:
          requests: {cpu: "64"}
"#,
    )
    .await;
    let err = kubectl_fails(
        server,
        &["rollout", "status", "deployment/huge", "--timeout=30s"],
    )
    .await;
    assert!(
        err.contains("deployment \"huge\" exceeded its progress deadline"),
        "{err}"
    );
    let d = cluster.deployment("huge").await;
    let progressing = d
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .expect("a Progressing condition");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicasets_adopt_orphans_release_strays_and_survive_a_restart() {
    let mut cluster = Cluster::start(vec![sim("sim-", 2, "32")]).await;
    let pods = cluster.pods();
    let pp = PostParams::default();
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "cache"}},
            "spec": {"containers": [{"name": "app", "image": "redis:7"}]}
        }))
        .expect("a pod")
    };
    pods.create(&pp, &pod("orphan"))
        .await
        .expect("an orphan pod");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "cache"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cache"}},
            "template": {"metadata": {"labels": {"app": "cache"}},
                "spec": {"containers": [{"name": "app", "image": "redis:7"}]}}}
    }))
    .expect("a replicaset");
    let replicasets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), NS);
    let rs = replicasets.create(&pp, &rs).await.expect("the replicaset");
    let uid = rs.uid().expect("a uid");
    let ready = |n: i32| {
        move |rs: Option<&ReplicaSet>| {
            rs.and_then(|rs| rs.status.as_ref()).is_some_and(|s| {
                s.replicas == n
                    && s.ready_replicas == Some(n)
                    && s.available_replicas == Some(n)
                    && s.fully_labeled_replicas == Some(n)
            })
        }
    };
    wait_for(&replicasets, "cache", "three ready pods", ready(3)).await;
    // The orphan was adopted: two new pods, not three.
    let owned = cluster.pods_of("cache").await;
    assert_eq!(owned.len(), 3);
    assert!(owned
        .iter()
        .all(|p| p.owner_references().iter().any(|r| r.uid == uid)));
    assert!(owned.iter().any(|p| p.name_any() == "orphan"));

    // A pod relabelled away is released and replaced.
    let patch = json!({"metadata": {"labels": {"app": "stray"}}});
    pods.patch("orphan", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("relabelling");
    let released = wait_for(&pods, "orphan", "released", |p: Option<&Pod>| {
        p.is_some_and(|p| p.owner_references().is_empty())
    })
    .await
    .expect("the stray pod");
    assert_eq!(released.labels()["app"], "stray");
    wait_for(&replicasets, "cache", "a replacement", ready(3)).await;

    // Scale up, and restart the controllers while pods are being created: no duplicates,
    // seen by a watch that counts every pod the ReplicaSet ever had at once.
    let check: Check = Box::new(|pods| {
        let live = pods.values().filter(|p| live(p)).count();
        (live > 12).then(|| format!("{live} pods"))
    });
    let watch = PodWatch::start(&cluster.client, "cache", check).await;
    let scale = json!({"spec": {"replicas": 12}});
    replicasets
        .patch("cache", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scaling");
    cluster
        .controllers
        .take()
        .expect("running controllers")
        .stop()
        .await;
    cluster.controllers = Some(InProcessControllers::start(
        cluster.client.clone(),
        Default::default(),
    ));
    wait_for(&replicasets, "cache", "twelve ready pods", ready(12)).await;
    let (_, violations) = watch.finish().await;
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(cluster.pods_of("cache").await.len(), 12);
    // And down again: the pods go, the status follows.
    let scale = json!({"spec": {"replicas": 1}});
    replicasets
        .patch("cache", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scaling down");
    wait_for(&replicasets, "cache", "one ready pod", ready(1)).await;
    let rs = replicasets.get("cache").await.expect("the replicaset");
    assert_eq!(
        rs.status.and_then(|s| s.observed_generation),
        rs.metadata.generation
    );
    cluster.stop().await;
}
