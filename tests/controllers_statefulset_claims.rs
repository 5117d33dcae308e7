//! A StatefulSet's PersistentVolumeClaims against a real API server, with the controllers
//! (garbage collector included), the scheduler and simulated nodes: claims from
//! `volumeClaimTemplates` appear before their pods and outlive scale-down and the set by
//! default; `persistentVolumeClaimRetentionPolicy` Delete removes them with the scaled-down pod
//! or with the set. No provisioner runs, so every claim stays Pending.

mod common;

use berth_bench::nodesim::{self, NodeSimulator, SimConfig};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::Api;
use kube::ResourceExt;

use common::{
    apply, header, kubectl, row, wait_for, InProcessControllers, InProcessScheduler, Server,
};

struct Cluster {
    server: Server,
    client: kube::Client,
    controllers: InProcessControllers,
    scheduler: InProcessScheduler,
    sim: NodeSimulator,
}

async fn cluster(prefix: &str) -> Cluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    let scheduler = InProcessScheduler::start(client.clone(), Default::default());
    let sim = nodesim::start(
        client.clone(),
        SimConfig {
            count: 2,
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

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }
}

/// A set `name` of `replicas` pods with one claim template `data`, and `policy` as its
/// `persistentVolumeClaimRetentionPolicy` (YAML lines, indented for `spec`) if any.
fn stateful_set(name: &str, replicas: u32, policy: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  serviceName: {name}
  selector:
    matchLabels:
      app: {name}
{policy}  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: nginx:1.25
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
      labels:
        tier: storage
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#
    )
}

async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: Clone
        + std::fmt::Debug
        + Send
        + k8s_openapi::serde::de::DeserializeOwned
        + kube::Resource
        + 'static,
{
    wait_for(api, name, what, |o: Option<&K>| o.is_none()).await;
}

async fn wait_present(api: &Api<PersistentVolumeClaim>, name: &str) -> PersistentVolumeClaim {
    wait_for(api, name, "created", |c: Option<&PersistentVolumeClaim>| {
        c.is_some()
    })
    .await
    .expect("the claim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_created_per_ordinal_and_retained_by_default() {
    let c = cluster("keep-").await;
    apply(&c.server, &stateful_set("web", 3, "")).await;
    let out = kubectl(
        &c.server,
        &["rollout", "status", "sts/web", "--timeout=30s"],
    )
    .await;
    assert!(out.contains("roll out complete"), "{out}");
    // Pods get created although nothing binds their claims: the scheduler does not check
    // volume binding yet.
    for ordinal in 0..3 {
        let claim = wait_present(&c.claims(), &format!("data-web-{ordinal}")).await;
        assert_eq!(claim.labels()["app"], "web");
        assert_eq!(claim.labels()["tier"], "storage");
        assert!(claim.owner_references().is_empty(), "{claim:?}");
        let pod = c.pods().get(&format!("web-{ordinal}")).await.expect("pod");
        let volume = pod.spec.unwrap().volumes.unwrap_or_default();
        let source = volume
            .iter()
            .find(|v| v.name == "data")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .expect("the data volume");
        assert_eq!(source.claim_name, format!("data-web-{ordinal}"));
    }
    let table = kubectl(&c.server, &["get", "pvc"]).await;
    assert_eq!(header(&table)[..3], ["NAME", "STATUS", "VOLUME"], "{table}");
    for ordinal in 0..3 {
        let name = format!("data-web-{ordinal}");
        assert_eq!(row(&table, &name)[1], "Pending", "{table}");
    }

    kubectl(&c.server, &["scale", "sts/web", "--replicas=1"]).await;
    for gone in ["web-2", "web-1"] {
        wait_gone(&c.pods(), gone, "deleted on scale-down").await;
    }
    // The claims are still there and have no owner, so the garbage collector keeps them.
    for ordinal in 0..3 {
        let claim = c
            .claims()
            .get(&format!("data-web-{ordinal}"))
            .await
            .expect("claim kept on scale-down");
        assert!(claim.owner_references().is_empty(), "{claim:?}");
    }

    kubectl(&c.server, &["delete", "sts", "web"]).await;
    wait_gone(&c.pods(), "web-0", "deleted with its set").await;
    // Unowned, the claims survive their set (kubectl's default cascade is background).
    let claims: Vec<(String, usize)> = c
        .claims()
        .list(&Default::default())
        .await
        .expect("claims")
        .items
        .iter()
        .map(|c| (c.name_any(), c.owner_references().len()))
        .collect();
    assert_eq!(
        claims,
        [
            ("data-web-0".to_string(), 0),
            ("data-web-1".to_string(), 0),
            ("data-web-2".to_string(), 0)
        ]
    );
    c.stop().await;
}

const DELETE_POLICY: &str = "  persistentVolumeClaimRetentionPolicy:
    whenDeleted: Delete
    whenScaled: Delete
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policies_remove_claims_with_their_pod_or_set() {
    let c = cluster("drop-").await;
    apply(&c.server, &stateful_set("db", 3, DELETE_POLICY)).await;
    let out = kubectl(&c.server, &["rollout", "status", "sts/db", "--timeout=30s"]).await;
    assert!(out.contains("roll out complete"), "{out}");
    for ordinal in 0..3 {
        let claim = wait_present(&c.claims(), &format!("data-db-{ordinal}")).await;
        // whenDeleted Delete: the set owns the claims of its pods.
        let owners: Vec<&str> = claim
            .owner_references()
            .iter()
            .map(|r| r.kind.as_str())
            .collect();
        assert_eq!(owners, ["StatefulSet"], "{claim:?}");
    }
    let old = c.claims().get("data-db-2").await.expect("claim").uid();

    // whenScaled Delete: the removed ordinal's claim goes with its pod; the others stay.
    kubectl(&c.server, &["scale", "sts/db", "--replicas=2"]).await;
    wait_gone(&c.claims(), "data-db-2", "deleted with its scaled-down pod").await;
    assert!(c.pods().get_opt("db-2").await.expect("get").is_none());
    for kept in ["data-db-0", "data-db-1"] {
        assert!(c.claims().get_opt(kept).await.expect("get").is_some());
    }

    // Scaling up again gives the ordinal a fresh claim.
    kubectl(&c.server, &["scale", "sts/db", "--replicas=3"]).await;
    let fresh = wait_present(&c.claims(), "data-db-2").await;
    assert_ne!(fresh.uid(), old);
    let out = kubectl(&c.server, &["rollout", "status", "sts/db", "--timeout=30s"]).await;
    assert!(out.contains("roll out complete"), "{out}");

    // whenDeleted Delete: the claims go with the set.
    kubectl(&c.server, &["delete", "sts", "db"]).await;
    for ordinal in 0..3 {
        wait_gone(
            &c.claims(),
            &format!("data-db-{ordinal}"),
            "deleted with its set",
        )
        .await;
    }
    c.stop().await;
}
