//! A node simulator, like kwok: registers Node objects, renews their Leases and moves the pods
//! bound to them to Running/Ready, so the scheduler and controllers can be tested and measured
//! at thousands of nodes without kubelets. It talks to the API only as a client (kube-rs), so it
//! works against any conforming API server; it runs nothing and contacts no node address.
//!
//! In process: [`start`] returns a [`NodeSimulator`] whose heartbeats can be stopped and
//! resumed per node to simulate node loss. From the command line: `berth simulate nodes`
//! ([`Options`], [`run`]).

mod cli;
mod heartbeat;
mod objects;
mod pods;
mod register;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use cli::{parse_label, parse_taint, run, Options};
pub use objects::{LEASE_NAMESPACE, MAX_NODES};

/// What to simulate. `Default` is one 32-CPU, 256 GiB, 250-pod node named `sim-0`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes to register, named `<prefix><index>`.
    pub count: usize,
    pub prefix: String,
    /// `status.capacity` (and `allocatable`, which equals it) as Kubernetes quantities.
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    /// Labels on every node, besides hostname, os, arch and zone.
    pub labels: BTreeMap<String, String>,
    /// Taints on every node.
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// `topology.kubernetes.io/zone` is `zone-<index % zones>`.
    pub zones: usize,
    /// Reported as `status.nodeInfo.kubeletVersion` (kubectl's VERSION column).
    pub kubelet_version: String,
    /// Every Lease is renewed once per period; renewals are spread evenly over it.
    pub lease_period: Duration,
    pub lease_duration_seconds: i32,
    /// Nodes that are registered but never heartbeat (lost from the start).
    pub stopped: Vec<String>,
    /// API requests in flight at most, for registration, renewals and pod updates each.
    pub concurrency: usize,
    /// Move pods bound to the nodes to Running/Ready (a kubelet's part); false leaves them
    /// Pending, as kube-scheduler's benchmarks do, so only the scheduler writes to them.
    pub run_pods: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            count: 1,
            prefix: "sim-".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 250,
            ephemeral_storage: "1Ti".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            zones: 3,
            kubelet_version: "v1.33.0-sim".into(),
            lease_period: Duration::from_secs(10),
            lease_duration_seconds: 40,
            stopped: Vec::new(),
            concurrency: 64,
            run_pods: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("no simulated node {name:?}")]
    UnknownNode { name: String },
    #[error("{op} {name}")]
    Api {
        op: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading the kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building a client from the kubeconfig")]
    Client(#[source] kube::Error),
    #[error("starting the tokio runtime")]
    Runtime(#[source] std::io::Error),
}

/// Counters since [`start`], for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub leases_renewed: u64,
    pub pods_started: u64,
    pub pods_deleted: u64,
    /// Failed API requests after registration (each is also logged).
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    leases_renewed: AtomicU64,
    pods_started: AtomicU64,
    pods_deleted: AtomicU64,
    errors: AtomicU64,
}

/// One simulated node's runtime state.
struct SimNode {
    name: String,
    index: usize,
    uid: String,
    host_ip: String,
    /// False once the node is "lost": no renewals, and its pods are left as they are.
    alive: AtomicBool,
    /// Held across a renewal, so `stop_heartbeat` can wait out one already in flight.
    renewing: tokio::sync::Mutex<()>,
    pod_ips: Mutex<pods::PodIps>,
}

struct Shared {
    client: kube::Client,
    /// In index order (the heartbeat spreads renewals by position).
    nodes: Vec<Arc<SimNode>>,
    by_name: HashMap<String, Arc<SimNode>>,
    lease_period: Duration,
    lease_duration_seconds: i32,
    concurrency: usize,
    counters: Counters,
}

impl Shared {
    fn node(&self, name: &str) -> Result<&Arc<SimNode>, SimError> {
        self.by_name.get(name).ok_or_else(|| SimError::UnknownNode {
            name: name.to_string(),
        })
    }

    fn failed(&self, what: &str, name: &str, err: &kube::Error) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%name, error = %err, "node simulator: {what} failed");
    }
}

/// Simulated nodes, running until [`NodeSimulator::shutdown`] or drop. The Node objects stay
/// in the API afterwards (like a cluster whose kubelets all stopped).
pub struct NodeSimulator {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// Registers `config.count` nodes (Node, its status, its Lease), then heartbeats them and runs
/// the pods bound to them. Returns once every node is registered. Existing nodes and Leases of
/// the same names are adopted, so a restarted simulator picks up where it left off.
pub async fn start(client: kube::Client, config: SimConfig) -> Result<NodeSimulator, SimError> {
    validate(&config)?;
    let nodes = register::register_all(&client, &config).await?;
    let by_name = nodes
        .iter()
        .map(|n| (n.name.clone(), Arc::clone(n)))
        .collect();
    let shared = Arc::new(Shared {
        client,
        nodes,
        by_name,
        lease_period: config.lease_period,
        lease_duration_seconds: config.lease_duration_seconds,
        concurrency: config.concurrency,
        counters: Counters::default(),
    });
    for name in &config.stopped {
        shared.node(name)?.alive.store(false, Ordering::SeqCst);
    }
    let mut tasks = vec![tokio::spawn(heartbeat::run(Arc::clone(&shared)))];
    if config.run_pods {
        tasks.push(tokio::spawn(pods::run(Arc::clone(&shared))));
    }
    Ok(NodeSimulator { shared, tasks })
}

fn validate(config: &SimConfig) -> Result<(), SimError> {
    let invalid = |field, value: String, reason: &str| {
        Err(SimError::Invalid {
            field,
            value,
            reason: reason.into(),
        })
    };
    if config.count == 0 || config.count > MAX_NODES {
        return invalid(
            "count",
            config.count.to_string(),
            &format!("must be between 1 and {MAX_NODES}"),
        );
    }
    if config.concurrency == 0 {
        return invalid("concurrency", "0".into(), "must be at least 1");
    }
    if config.lease_period.is_zero() {
        return invalid("lease period", "0s".into(), "must be positive");
    }
    if config.lease_duration_seconds <= 0 {
        let value = config.lease_duration_seconds.to_string();
        return invalid("lease duration", value, "must be positive");
    }
    for (field, value) in [
        ("cpu", &config.cpu),
        ("memory", &config.memory),
        ("ephemeral storage", &config.ephemeral_storage),
    ] {
        if let Err(e) = berth_api::Quantity::parse(value) {
            return invalid(field, value.clone(), &e.to_string());
        }
    }
    let name = format!("{}{}", config.prefix, config.count - 1);
    if let Some(reason) = berth_api::names::is_dns1123_subdomain(&name).first() {
        return invalid("prefix", config.prefix.clone(), reason);
    }
    Ok(())
}

impl NodeSimulator {
    /// The simulated nodes' names, in index order.
    pub fn node_names(&self) -> Vec<String> {
        self.shared.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn stats(&self) -> SimStats {
        let c = &self.shared.counters;
        SimStats {
            leases_renewed: c.leases_renewed.load(Ordering::Relaxed),
            pods_started: c.pods_started.load(Ordering::Relaxed),
            pods_deleted: c.pods_deleted.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// Simulates losing the node: its Lease is no longer renewed and its pods are left alone.
    /// When this returns, no renewal of that node is in flight.
    pub async fn stop_heartbeat(&self, name: &str) -> Result<(), SimError> {
        let node = self.shared.node(name)?;
        node.alive.store(false, Ordering::SeqCst);
        drop(node.renewing.lock().await);
        Ok(())
    }

    /// Brings a lost node back: renews its Lease and posts a Ready status now, then catches
    /// up with the pods bound to it meanwhile.
    pub async fn resume_heartbeat(&self, name: &str) -> Result<(), SimError> {
        let node = Arc::clone(self.shared.node(name)?);
        node.alive.store(true, Ordering::SeqCst);
        heartbeat::renew(&self.shared, &node).await;
        register::post_status(&self.shared.client, &node).await?;
        pods::resync_node(&self.shared, &node).await
    }

    /// Stops heartbeats and pod handling. Nodes and Leases stay in the API.
    pub async fn shutdown(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            // Aborted tasks end with a cancellation error; that is the expected outcome.
            let _ = task.await;
        }
    }
}

impl Drop for NodeSimulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(config: SimConfig) -> String {
        validate(&config).expect_err("invalid").to_string()
    }

    #[test]
    fn validation() {
        assert!(validate(&SimConfig::default()).is_ok());
        assert_eq!(
            reason(SimConfig {
                count: 0,
                ..Default::default()
            }),
            "invalid count \"0\": must be between 1 and 40000"
        );
        assert_eq!(
            reason(SimConfig {
                memory: "lots".into(),
                ..Default::default()
            }),
            format!(
                "invalid memory \"lots\": {}",
                berth_api::Quantity::parse("lots").unwrap_err()
            )
        );
        assert!(reason(SimConfig {
            prefix: "Sim_".into(),
            ..Default::default()
        })
        .starts_with("invalid prefix \"Sim_\": a lowercase RFC 1123 subdomain"));
        assert_eq!(
            reason(SimConfig {
                lease_period: Duration::ZERO,
                ..Default::default()
            }),
            "invalid lease period \"0s\": must be positive"
        );
    }
}
