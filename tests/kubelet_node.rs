//! The kubelet's node side against a real `berth apiserver`, with the controllers in process
//! (node IPAM for the podCIDR, node lifecycle for Unknown and taints) and a fake /proc, /sys and
//! /etc the test can change: registration shows capacity, allocatable, conditions, labels,
//! nodeInfo, addresses and images through kubectl; the Lease is renewed; conditions follow the
//! readiness check and the pressure files; a silent node turns Unknown and comes back; a
//! restarted agent takes over the same Node and updates it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_kubelet::node::{
    self, read_host, HostInfo, NodeAgent, NodeConfig, Providers, NODE_LEASE_NAMESPACE,
};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerImage, Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::{kubectl, row, wait_for, InProcessControllers, Server};

const NODE: &str = "berth-node-1";
const GRACE: Duration = Duration::from_secs(2);

/// Writes through a rename, so the agent never reads half a file.
fn put(root: &Path, path: &str, contents: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

fn meminfo(available_kib: u64) -> String {
    format!(
        "MemTotal:        8130056 kB\nMemFree:          100000 kB\n\
         MemAvailable:   {available_kib} kB\nHugePages_Total:       0\n"
    )
}

const CALM: &str = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n";

/// A 4-cpu, 8130056 KiB machine with 4 × 2 MiB hugepages.
fn fake_host(root: &Path) {
    let mut cpuinfo = String::new();
    for i in 0..4 {
        cpuinfo.push_str(&format!("processor\t: {i}\nmodel name\t: fake\n\n"));
    }
    for (path, contents) in [
        ("proc/meminfo", meminfo(4_000_000)),
        ("proc/cpuinfo", cpuinfo),
        ("proc/loadavg", "0.10 0.20 0.30 1/120 4242\n".into()),
        ("proc/sys/kernel/pid_max", "32768\n".into()),
        ("proc/sys/kernel/threads-max", "60000\n".into()),
        ("proc/sys/kernel/random/boot_id", "boot-1\n".into()),
        ("proc/sys/kernel/osrelease", "6.18.0-fake\n".into()),
        ("proc/pressure/memory", CALM.into()),
        ("proc/pressure/io", CALM.into()),
        (
            "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "4\n".into(),
        ),
        (
            "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "0\n".into(),
        ),
        ("sys/class/dmi/id/product_uuid", "uuid-1\n".into()),
        ("etc/machine-id", "machine-1\n".into()),
        (
            "etc/os-release",
            "PRETTY_NAME=\"Berth Test Linux 1\"\n".into(),
        ),
    ] {
        put(root, path, &contents);
    }
}

fn config(root: &Path) -> NodeConfig {
    let mut cfg = NodeConfig::new(NODE, "10.1.2.3".parse().unwrap(), root.join("data"));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    cfg.proc_root = root.join("proc");
    cfg.sys_root = root.join("sys");
    cfg.etc_root = root.join("etc");
    cfg.hostname = "host-1".into();
    cfg.labels = BTreeMap::from([("tier".to_string(), "edge".to_string())]);
    cfg.status_update_frequency = Duration::from_millis(200);
    cfg.lease_renew_interval = Duration::from_millis(300);
    cfg.pressure_transition_period = Duration::ZERO;
    // IO stalls count as disk pressure only when asked for; this test asks. The real disk
    // under the data directory must not decide the outcome: its free space is not the test's.
    cfg.thresholds.psi_io_some_avg10 = Some(80.0);
    cfg.thresholds.nodefs_available_percent = 0.0;
    cfg.thresholds.nodefs_inodes_free_percent = 0.0;
    cfg
}

fn host(cfg: &NodeConfig) -> HostInfo {
    read_host(&cfg.roots(), &cfg.data_dir).expect("reading the fake host")
}

/// The readiness check the test flips, and the agent's providers around it.
fn providers(ready: &Arc<AtomicBool>) -> Providers {
    let ready = Arc::clone(ready);
    Providers {
        readiness: Arc::new(move || {
            if ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("container runtime is down".into())
            }
        }),
        images: Arc::new(|| {
            vec![
                ContainerImage {
                    names: Some(vec!["registry.local/small:1".into()]),
                    size_bytes: Some(1_000),
                },
                ContainerImage {
                    names: Some(vec!["registry.local/big:1".into()]),
                    size_bytes: Some(9_000_000),
                },
            ]
        }),
    }
}

/// A running agent; `stop` ends it cleanly, dropping it aborts it.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), node::NodeError>>,
}

impl Running {
    fn start(agent: NodeAgent) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("the agent stops within 5 s")
            .expect("the agent's task did not panic")
            .expect("the agent ran without error");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn status_of(n: Option<&Node>, type_: &str) -> Option<String> {
    n.and_then(|n| condition(n, type_))
        .map(|c| c.status.clone())
}

fn renew_time(lease: &Lease) -> Option<MicroTime> {
    lease.spec.as_ref()?.renew_time.clone()
}

/// Waits (watching) for the Lease to be renewed after `after`; returns it.
async fn renewed_after(leases: &Api<Lease>, after: Option<MicroTime>) -> Lease {
    wait_for(leases, NODE, "a lease renewal", move |l: Option<&Lease>| {
        l.and_then(renew_time)
            .is_some_and(|t| Some(&t) > after.as_ref())
    })
    .await
    .expect("the lease exists")
}

async fn node_json(server: &Server) -> Value {
    let out = kubectl(server, &["get", "node", NODE, "-o", "json"]).await;
    serde_json::from_str(&out).expect("kubectl printed JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_heartbeats_reports_and_survives_a_restart() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(
        client.clone(),
        berth_controllers::Config {
            node_monitor_grace_period: GRACE,
            ..Default::default()
        },
    );
    let root = tempfile::tempdir().unwrap();
    fake_host(root.path());
    let cfg = config(root.path());
    let host = host(&cfg);
    let ready = Arc::new(AtomicBool::new(true));
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);

    // Registration posts the full status at once.
    let registered = node::register(&client, &cfg, &host, &providers(&ready))
        .await
        .expect("registering the node");
    let uid = registered.metadata.uid.clone().expect("a uid");
    assert_eq!(
        status_of(Some(&registered), "Ready").as_deref(),
        Some("True")
    );
    let cidr = node::wait_pod_cidr(&client, NODE, Duration::from_secs(20))
        .await
        .expect("a podCIDR from the IPAM controller");
    assert!(
        cidr.starts_with("10.244.") && cidr.ends_with("/24"),
        "{cidr}"
    );

    let agent = Running::start(NodeAgent::new(
        client.clone(),
        cfg.clone(),
        host.clone(),
        providers(&ready),
    ));

    // What kubectl shows.
    let n = node_json(&server).await;
    let st = &n["status"];
    assert_eq!(st["capacity"]["cpu"], "4");
    assert_eq!(st["capacity"]["memory"], "8130056Ki");
    assert_eq!(st["capacity"]["pods"], "500");
    assert_eq!(st["capacity"]["hugepages-2Mi"], "8Mi");
    assert_eq!(st["capacity"]["hugepages-1Gi"], "0");
    assert!(st["capacity"]["ephemeral-storage"].is_string());
    // 8130056Ki - 100Mi - 8Mi of hugepages.
    assert_eq!(st["allocatable"]["memory"], "8019464Ki");
    assert_eq!(st["allocatable"]["cpu"], "4");
    let labels = &n["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "host-1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], host.architecture.as_str());
    assert_eq!(
        labels["beta.kubernetes.io/arch"],
        host.architecture.as_str()
    );
    assert_eq!(labels["tier"], "edge");
    let info = &st["nodeInfo"];
    assert_eq!(info["kubeletVersion"], node::status::KUBELET_VERSION);
    assert!(info["kubeletVersion"]
        .as_str()
        .unwrap()
        .starts_with("v1.33."));
    assert!(info["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("berth://"));
    assert_eq!(info["kernelVersion"], "6.18.0-fake");
    assert_eq!(info["osImage"], "Berth Test Linux 1");
    assert_eq!(info["operatingSystem"], "linux");
    assert_eq!(info["bootID"], "boot-1");
    assert_eq!(info["machineID"], "machine-1");
    assert_eq!(info["systemUUID"], "uuid-1");
    assert_eq!(
        st["addresses"],
        serde_json::json!([{"type": "InternalIP", "address": "10.1.2.3"},
                           {"type": "Hostname", "address": "host-1"}])
    );
    assert_eq!(st["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    assert_eq!(st["images"][0]["names"][0], "registry.local/big:1");
    assert_eq!(st["images"][1]["sizeBytes"], 1000);
    let reasons: Vec<(&str, &str)> = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("MemoryPressure", "KubeletHasSufficientMemory"),
            ("DiskPressure", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "KubeletHasSufficientPID"),
            ("Ready", "KubeletReady"),
        ]
    );
    let table = kubectl(&server, &["get", "nodes"]).await;
    assert_eq!(row(&table, NODE)[1], "Ready", "{table}");

    // The Lease: held by the node, owned by its Node, renewed.
    let lease = renewed_after(&leases, None).await;
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owners = lease.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Node", uid.as_str())
    );
    let lease = renewed_after(&leases, renew_time(&lease)).await;
    renewed_after(&leases, renew_time(&lease)).await;

    // Readiness fails: Ready=False with the check's message, then the controller taints it.
    let before = nodes.get(NODE).await.unwrap();
    let ready_since = condition(&before, "Ready")
        .unwrap()
        .last_transition_time
        .clone();
    ready.store(false, Ordering::SeqCst);
    let sick = wait_for(&nodes, NODE, "Ready=False", |n: Option<&Node>| {
        status_of(n, "Ready").as_deref() == Some("False")
    })
    .await
    .unwrap();
    let c = condition(&sick, "Ready").unwrap();
    assert_eq!(c.reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(c.message.as_deref(), Some("container runtime is down"));
    assert!(c.last_transition_time >= ready_since);
    wait_for(&nodes, NODE, "tainted not-ready", |n: Option<&Node>| {
        n.and_then(|n| n.spec.as_ref()?.taints.clone())
            .is_some_and(|t| t.iter().any(|t| t.key == "node.kubernetes.io/not-ready"))
    })
    .await;
    ready.store(true, Ordering::SeqCst);
    wait_for(&nodes, NODE, "Ready=True again", |n: Option<&Node>| {
        status_of(n, "Ready").as_deref() == Some("True")
    })
    .await;

    // Memory pressure from MemAvailable, then from PSI; disk pressure from PSI.
    put(root.path(), "proc/meminfo", &meminfo(50 * 1024));
    let pressed = wait_for(&nodes, NODE, "MemoryPressure", |n: Option<&Node>| {
        status_of(n, "MemoryPressure").as_deref() == Some("True")
    })
    .await
    .unwrap();
    assert_eq!(
        condition(&pressed, "MemoryPressure")
            .unwrap()
            .reason
            .as_deref(),
        Some("KubeletHasInsufficientMemory")
    );
    put(root.path(), "proc/meminfo", &meminfo(4_000_000));
    wait_for(&nodes, NODE, "no MemoryPressure", |n: Option<&Node>| {
        status_of(n, "MemoryPressure").as_deref() == Some("False")
    })
    .await;
    put(
        root.path(),
        "proc/pressure/memory",
        "some avg10=75.00 avg60=10.00 avg300=2.00 total=9\nfull avg10=5.00 avg60=0 avg300=0 total=1\n",
    );
    put(
        root.path(),
        "proc/pressure/io",
        "some avg10=95.00 avg60=10.00 avg300=2.00 total=9\nfull avg10=5.00 avg60=0 avg300=0 total=1\n",
    );
    let pressed = wait_for(&nodes, NODE, "PSI pressure", |n: Option<&Node>| {
        status_of(n, "MemoryPressure").as_deref() == Some("True")
            && status_of(n, "DiskPressure").as_deref() == Some("True")
    })
    .await
    .unwrap();
    assert_eq!(
        condition(&pressed, "DiskPressure")
            .unwrap()
            .reason
            .as_deref(),
        Some("KubeletHasDiskPressure")
    );
    put(root.path(), "proc/pressure/memory", CALM);
    put(root.path(), "proc/pressure/io", CALM);
    wait_for(&nodes, NODE, "pressure gone", |n: Option<&Node>| {
        status_of(n, "MemoryPressure").as_deref() == Some("False")
            && status_of(n, "DiskPressure").as_deref() == Some("False")
    })
    .await;

    // The controller lifts the pressure taints it added; after that nothing writes the Node.
    wait_for(&nodes, NODE, "untainted", |n: Option<&Node>| {
        n.is_some_and(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_none_or(|t| t.is_empty())
        })
    })
    .await;

    // Nothing changes: heartbeats go to the Lease, the Node is not written (several status
    // periods observed through a watch).
    let config = watcher::Config::default().fields(&format!("metadata.name={NODE}"));
    let mut events = watcher::watcher(nodes.clone(), config).boxed();
    let rv = loop {
        match events
            .next()
            .await
            .expect("a watch event")
            .expect("watching")
        {
            watcher::Event::InitApply(n) => break n.metadata.resource_version,
            _ => continue,
        }
    };
    let quiet = tokio::time::timeout(Duration::from_millis(1200), async {
        while let Some(e) = events.next().await {
            if let Ok(watcher::Event::Apply(n)) = e {
                if n.metadata.resource_version != rv {
                    return n;
                }
            }
        }
        futures::future::pending().await
    })
    .await;
    assert!(quiet.is_err(), "node written without a change: {quiet:?}");
    drop(events);

    // The agent stops: the lifecycle controller marks the node Unknown.
    agent.stop().await;
    wait_for(&nodes, NODE, "Ready=Unknown", |n: Option<&Node>| {
        status_of(n, "Ready").as_deref() == Some("Unknown")
    })
    .await;

    // A restarted agent with new settings takes over the same Node and updates it.
    let mut cfg2 = cfg.clone();
    cfg2.max_pods = 250;
    cfg2.internal_ip = "10.1.2.4".parse().unwrap();
    cfg2.labels.insert("zone".into(), "b".into());
    let mut agent2 = NodeAgent::new(client.clone(), cfg2, host.clone(), providers(&ready));
    let again = agent2.register().await.expect("registering again");
    assert_eq!(
        again.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "the same Node"
    );
    let last = leases.get(NODE).await.unwrap();
    let agent2 = Running::start(agent2);
    renewed_after(&leases, renew_time(&last)).await;
    let back = wait_for(&nodes, NODE, "Ready after restart", |n: Option<&Node>| {
        status_of(n, "Ready").as_deref() == Some("True")
    })
    .await
    .unwrap();
    assert!(condition(&back, "Ready").unwrap().last_transition_time >= ready_since);
    let n = node_json(&server).await;
    assert_eq!(n["status"]["capacity"]["pods"], "250");
    assert_eq!(n["status"]["allocatable"]["pods"], "250");
    assert_eq!(n["status"]["addresses"][0]["address"], "10.1.2.4");
    assert_eq!(n["metadata"]["labels"]["zone"], "b");
    assert_eq!(n["metadata"]["labels"]["tier"], "edge");
    assert_eq!(n["spec"]["podCIDR"], cidr.as_str(), "the podCIDR stays");
    let table = kubectl(&server, &["get", "nodes"]).await;
    assert_eq!(table.lines().count(), 2, "one node:\n{table}");
    assert_eq!(row(&table, NODE)[1], "Ready", "{table}");

    // Another writer touches the Lease: the agent's next update conflicts, it reads the Lease
    // again and keeps renewing.
    let touched = leases
        .patch(
            NODE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"touched": "yes"}}}),
            ),
        )
        .await
        .unwrap();
    let lease = renewed_after(&leases, renew_time(&touched)).await;
    assert_eq!(
        lease
            .metadata
            .labels
            .unwrap_or_default()
            .get("touched")
            .map(String::as_str),
        Some("yes"),
        "renewed from the re-read Lease"
    );

    agent2.stop().await;
    controllers.stop().await;
}

/// The status loop alone registers a node that does not exist yet (and again if it is
/// deleted), on this machine's real /proc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_loop_registers_a_missing_node_from_the_real_host() {
    let server = Server::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(NODE, "127.0.0.1".parse().unwrap(), dir.path().into());
    cfg.status_update_frequency = Duration::from_millis(200);
    let host = read_host(&cfg.roots(), &cfg.data_dir).expect("reading this host");
    assert!(host.cpu > 0 && host.memory_bytes > 0 && host.ephemeral_storage_bytes > 0);
    let agent = Running::start(NodeAgent::new(
        client.clone(),
        cfg,
        host.clone(),
        Providers::default(),
    ));
    let nodes: Api<Node> = Api::all(client.clone());
    let created = wait_for(&nodes, NODE, "registered", |n: Option<&Node>| {
        status_of(n, "Ready").is_some()
    })
    .await
    .unwrap();
    let cpu = &created.status.as_ref().unwrap().capacity.as_ref().unwrap()["cpu"];
    assert_eq!(cpu.0, host.cpu.to_string());
    nodes.delete(NODE, &Default::default()).await.unwrap();
    let recreated = wait_for(&nodes, NODE, "registered again", |n: Option<&Node>| {
        n.is_some_and(|n| n.metadata.uid != created.metadata.uid) && status_of(n, "Ready").is_some()
    })
    .await
    .unwrap();
    assert_ne!(recreated.metadata.uid, created.metadata.uid);
    agent.stop().await;
}
