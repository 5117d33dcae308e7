//! The node simulator against a real `berth apiserver`: nodes kubectl shows Ready, Leases that
//! are renewed (and stop being renewed for a lost node), pods bound to simulated nodes that turn
//! Running and Ready and are deleted for real, the `berth simulate nodes` command, and a quick
//! registration of 1,000 nodes.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_bench::nodesim::{self, SimConfig, LEASE_NAMESPACE};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use common::{header, kubectl, kubectl_fails, kubectl_stdin, row, ChildGuard, LineReader, Server};

/// Upper bound for anything the tests wait for; the waits themselves end on events.
const WAIT: Duration = Duration::from_secs(60);

fn renew_time(lease: &Lease) -> MicroTime {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.clone())
        .unwrap_or_else(|| panic!("lease {} has no renewTime", lease.name_any()))
}

/// Watches Leases until `done` says the renewals seen so far (per node, in order) suffice.
async fn watch_renewals(
    leases: &Api<Lease>,
    mut done: impl FnMut(&HashMap<String, Vec<MicroTime>>) -> bool,
) -> HashMap<String, Vec<MicroTime>> {
    let mut seen: HashMap<String, Vec<MicroTime>> = HashMap::new();
    let mut events = watcher(leases.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let waited = tokio::time::timeout(WAIT, async {
        while let Some(lease) = events.next().await {
            let lease = lease.expect("a lease watch event");
            let times = seen.entry(lease.name_any()).or_default();
            let t = renew_time(&lease);
            if times.last() != Some(&t) {
                times.push(t);
            }
            if done(&seen) {
                return;
            }
        }
        panic!("the lease watch ended");
    })
    .await;
    if waited.is_err() {
        panic!("renewals did not arrive within {WAIT:?}; seen: {seen:?}");
    }
    seen
}

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  nodeName: sim-7
  containers:
  - name: app
    image: nginx:1.25
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_ready_leases_renewed_pods_run() {
    let server = Server::start();
    let client = server.client().await;
    let config = SimConfig {
        count: 50,
        lease_period: Duration::from_secs(1),
        ..SimConfig::default()
    };
    let sim = nodesim::start(client.clone(), config)
        .await
        .expect("starting the simulator");
    let names = sim.node_names();
    assert_eq!((names.len(), names[0].as_str()), (50, "sim-0"));

    // kubectl shows every node Ready with the usual columns.
    let table = kubectl(&server, &["get", "nodes"]).await;
    assert_eq!(
        header(&table),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    );
    assert_eq!(table.lines().count(), 51, "{table}");
    for name in &names {
        let cols = row(&table, name);
        assert_eq!(
            (cols[1], cols[2], cols[4]),
            ("Ready", "<none>", "v1.33.0-sim"),
            "{table}"
        );
    }
    let node: Node = Api::all(client.clone()).get("sim-4").await.expect("sim-4");
    let labels = node.labels();
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-1");
    assert_eq!(labels["kubernetes.io/hostname"], "sim-4");
    let status = node.status.expect("a node status");
    assert_eq!(status.capacity.expect("capacity")["pods"].0, "250");
    assert_eq!(
        status.addresses.expect("addresses")[0].address,
        "10.255.0.5"
    );

    // One Lease per node, renewed: every node's renewTime moves past its first value.
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let listed = leases.list(&ListParams::default()).await.expect("leases");
    assert_eq!(listed.items.len(), 50);
    let spec = listed.items[0].spec.clone().expect("a lease spec");
    assert_eq!(
        (spec.holder_identity.as_deref(), spec.lease_duration_seconds),
        (Some(listed.items[0].name_any().as_str()), Some(40))
    );
    watch_renewals(&leases, |seen| {
        seen.len() == 50 && seen.values().all(|times| times.len() >= 2)
    })
    .await;

    // A pod bound to a simulated node runs, then is deleted for real.
    kubectl_stdin(&server, &["apply", "-f", "-"], POD).await;
    kubectl(
        &server,
        &["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"],
    )
    .await;
    let table = kubectl(&server, &["get", "pod", "web", "-o", "wide"]).await;
    let cols = row(&table, "web");
    assert_eq!(
        (cols[1], cols[2], cols[3]),
        ("1/1", "Running", "0"),
        "{table}"
    );
    assert_eq!((cols[5], cols[6]), ("10.64.7.2", "sim-7"), "{table}");
    kubectl(&server, &["delete", "pod", "web", "--timeout=60s"]).await;
    let err = kubectl_fails(&server, &["get", "pod", "web"]).await;
    assert!(err.contains("NotFound"), "{err}");
    assert_eq!((sim.stats().pods_started, sim.stats().pods_deleted), (1, 1));

    // A lost node: its Lease stays put while every other one is renewed twice more.
    sim.stop_heartbeat("sim-3").await.expect("stopping sim-3");
    let frozen = renew_time(&leases.get("sim-3").await.expect("sim-3's lease"));
    let seen = watch_renewals(&leases, |seen| {
        names.iter().filter(|n| *n != "sim-3").all(|n| {
            seen.get(n.as_str())
                .is_some_and(|times| times.iter().filter(|t| **t > frozen).count() >= 2)
        })
    })
    .await;
    assert_eq!(
        seen["sim-3"],
        std::slice::from_ref(&frozen),
        "sim-3 was renewed"
    );
    assert_eq!(
        renew_time(&leases.get("sim-3").await.expect("sim-3's lease")),
        frozen
    );
    // The counter trails the watch by the renewals still in flight (at most 64), and the
    // watch has shown at least 50 + 2 × 49.
    assert!(sim.stats().leases_renewed >= 50, "{:?}", sim.stats());
    assert!(matches!(
        sim.stop_heartbeat("nope").await,
        Err(nodesim::SimError::UnknownNode { .. })
    ));

    // It comes back.
    sim.resume_heartbeat("sim-3").await.expect("resuming sim-3");
    let renewed = renew_time(&leases.get("sim-3").await.expect("sim-3's lease"));
    assert!(renewed > frozen, "{renewed:?} after {frozen:?}");
    assert_eq!(sim.stats().errors, 0, "{:?}", sim.stats());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_nodes_register() {
    let server = Server::start();
    let client = server.client().await;
    let config = SimConfig {
        count: 1000,
        ..SimConfig::default()
    };
    let begun = Instant::now();
    let sim = nodesim::start(client.clone(), config)
        .await
        .expect("starting 1,000 nodes");
    let took = begun.elapsed();
    println!("1,000 simulated nodes registered in {took:?}");
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes.list(&ListParams::default()).await.expect("nodes");
    assert_eq!(listed.items.len(), 1000);
    let ready = listed
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    assert_eq!(ready, 1000);
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    assert_eq!(
        leases
            .list(&ListParams::default())
            .await
            .expect("leases")
            .items
            .len(),
        1000
    );
    sim.shutdown().await;
}

#[test]
fn simulate_nodes_command() {
    let server = Server::start();
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["simulate", "nodes", "--kubeconfig"])
        .arg(&server.kubeconfig)
        .args(["--count", "3", "--prefix", "cli-", "--zones", "2"])
        .args(["--cpu", "8", "--memory", "16Gi", "--pods", "110"])
        .args(["--label", "pool=blue", "--taint", "dedicated=db:NoSchedule"])
        .args(["--stop-heartbeat", "cli-2"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning berth simulate nodes");
    let mut child = ChildGuard(child);
    let mut lines = LineReader::new(child.0.stdout.take().expect("piped stdout"));
    let line = lines.wait_for(WAIT, |l| l.contains("simulated nodes registered"));
    assert!(
        line.starts_with("berth: 3 simulated nodes registered in "),
        "{line}"
    );

    let k = server.kubectl();
    let table = k.ok(&["get", "nodes", "-l", "pool=blue"]);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(row(&table, "cli-2")[1], "Ready");
    let shown = k.ok(&[
        "get",
        "node",
        "cli-1",
        "-o",
        "jsonpath={.metadata.labels.topology\\.kubernetes\\.io/zone} {.spec.taints[0].key}={.spec.taints[0].value}:{.spec.taints[0].effect} {.status.capacity.cpu} {.status.capacity.memory} {.status.allocatable.pods}",
    ]);
    assert_eq!(shown, "zone-1 dedicated=db:NoSchedule 8 16Gi 110");

    let bad = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["simulate", "nodes", "--kubeconfig"])
        .arg(&server.kubeconfig)
        .args(["--count", "1", "--taint", "k=v:Never"])
        .output()
        .expect("running berth simulate nodes");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("the effect must be one of NoSchedule, PreferNoSchedule, NoExecute"),
        "{stderr}"
    );
}
