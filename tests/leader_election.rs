//! Leader hand-over between two `berth server --join` processes against one `berth apiserver`,
//! with a 3 s lease: the first holds the kube-controller-manager and kube-scheduler Leases and
//! acts (a new namespace gets its `default` ServiceAccount, a pod is scheduled onto a simulated
//! node) while the second only watches; after kill -9 of the holder, the second takes both
//! Leases within the lease duration and acts in its turn.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_bench::nodesim::{self, SimConfig};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use common::{wait_for, ChildGuard, LineReader, Server};

const LEASES: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];
const LEASE_DURATION: Duration = Duration::from_secs(3);

fn join(server: &Server) -> (ChildGuard, LineReader) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("server")
        .arg("--join")
        .arg(&server.kubeconfig)
        .args([
            "--leader-elect-lease-duration",
            "3s",
            "--leader-elect-renew-deadline",
            "2s",
            "--leader-elect-retry-period",
            "500ms",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning berth server --join");
    let mut lines = LineReader::new(child.stdout.take().expect("piped stdout"));
    lines.wait_for(Duration::from_secs(30), |l| l.starts_with("berth: joined"));
    (ChildGuard(child), lines)
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

/// Waits until `name` is held by someone other than `not`; returns the Lease.
async fn held(leases: &Api<Lease>, name: &str, not: Option<&str>) -> Lease {
    wait_for(leases, name, "held by a new leader", |l: Option<&Lease>| {
        l.and_then(holder).is_some_and(|h| Some(h.as_str()) != not)
    })
    .await
    .expect("the lease exists")
}

/// Creates a namespace and waits for the ServiceAccount controller to give it `default`.
async fn serviceaccount_appears(client: &kube::Client, namespace: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    wait_for(
        &accounts,
        "default",
        "default serviceaccount",
        |sa: Option<&ServiceAccount>| sa.is_some(),
    )
    .await;
}

/// Creates a pod and waits for the scheduler to bind it.
async fn pod_is_scheduled(client: &kube::Client, name: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]},
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for(&pods, name, "scheduled", |p: Option<&Pod>| {
        p.and_then(|p| p.spec.as_ref()?.node_name.as_ref())
            .is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_a_standby_takes_over_after_kill_9() {
    let server = Server::start();
    let client = server.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let sim = nodesim::start(client.clone(), SimConfig::default())
        .await
        .expect("starting the node simulator");

    let (mut first, _first_out) = join(&server);
    let mut first_ids = Vec::new();
    for name in LEASES {
        let lease = held(&leases, name, None).await;
        assert_eq!(transitions(&lease), 0, "{name}: first holder");
        let spec = lease.spec.as_ref().unwrap();
        assert_eq!(spec.lease_duration_seconds, Some(3));
        assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
        first_ids.push(holder(&lease).unwrap());
    }
    let (_second, _second_out) = join(&server);

    serviceaccount_appears(&client, "before").await;
    pod_is_scheduled(&client, "before").await;
    // Longer than a lease duration: the standby sees the renewals and keeps its hands off.
    let watched = tokio::time::timeout(
        LEASE_DURATION + Duration::from_secs(1),
        held(&leases, LEASES[0], Some(&first_ids[0])),
    )
    .await;
    assert!(
        watched.is_err(),
        "the lease changed hands while its holder was alive"
    );
    for (name, id) in LEASES.iter().zip(&first_ids) {
        let lease = leases.get(name).await.unwrap();
        assert_eq!(holder(&lease).as_deref(), Some(id.as_str()), "{name}");
    }
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), "kube-system")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for id in &first_ids {
        let message = format!("{id} became leader");
        assert_eq!(
            events
                .iter()
                .filter(|e| e.reason.as_deref() == Some("LeaderElection")
                    && e.message.as_deref() == Some(message.as_str()))
                .count(),
            1,
            "one LeaderElection event {message:?} in {events:?}"
        );
    }

    first.0.kill().expect("SIGKILL to the leader");
    first.0.wait().expect("reaping the leader");
    let killed = Instant::now();
    for (name, old) in LEASES.iter().zip(&first_ids) {
        let lease = held(&leases, name, Some(old)).await;
        assert_eq!(transitions(&lease), 1, "{name}: one change of holder");
        assert!(
            !first_ids.contains(&holder(&lease).unwrap()),
            "{name}: taken by the standby"
        );
    }
    let took = killed.elapsed();
    // The lease duration from the last renewal, plus at most one jittered retry period.
    assert!(
        took < LEASE_DURATION + Duration::from_secs(2),
        "took over after {took:?}"
    );
    serviceaccount_appears(&client, "after").await;
    pod_is_scheduled(&client, "after").await;
    sim.shutdown().await;
}
