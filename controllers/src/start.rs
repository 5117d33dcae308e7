//! Wiring: which controllers run, on which informers and queues, and how they are started from
//! a kubeconfig (`berth controllers`) or inside another process (`berth up`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::Api;
use kube::runtime::watcher;
use kube::Client;

use crate::deployment::DeploymentController;
use crate::endpoints::EndpointsController;
use crate::endpointslice::{self, EndpointSliceController};
use crate::gc::GarbageCollector;
use crate::ipam::{CidrAllocator, CidrError, Ipv4Cidr, NodeIpam};
use crate::namespace::{self, NamespaceLifecycle};
use crate::nodelifecycle::{Grace, NodeLifecycle, PodsByNode, TaintEviction};
use crate::replicaset::ReplicaSetController;
use crate::runtime::{Informer, RateLimit, Runner, WorkQueue};
use crate::serviceaccount::ServiceAccounts;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--cluster-cidr")]
    ClusterCidr(#[from] CidrError),
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building a client from kubeconfig {path}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error("starting the controllers' runtime")]
    Runtime(#[source] std::io::Error),
}

/// What the controllers are told.
#[derive(Clone, Debug)]
pub struct Config {
    /// Pod addresses for the whole cluster; each Node gets one block of it.
    pub cluster_cidr: String,
    /// Prefix length of each Node's block.
    pub node_cidr_mask_size: u8,
    /// Namespaces emptied at once (Kubernetes' `--concurrent-namespace-syncs`).
    pub namespace_workers: usize,
    /// Endpoints per EndpointSlice (Kubernetes' `--max-endpoints-per-slice`).
    pub max_endpoints_per_slice: usize,
    /// A node silent this long turns Unknown (`--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// The same for a node that never reported Ready (`--node-startup-grace-period`).
    pub node_startup_grace_period: Duration,
    /// The Job controller's pod re-creation back-off and workers.
    pub job: crate::job::JobConfig,
    /// ReplicaSets synced at once (Kubernetes' `--concurrent-replicaset-syncs`).
    pub replicaset_workers: usize,
    /// Deployments synced at once (Kubernetes' `--concurrent-deployment-syncs`).
    pub deployment_workers: usize,
    /// The cluster CA for signing kubelet certificates; `None` approves but does not sign.
    pub csr_signing: Option<crate::csr::CsrSigning>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_mask_size: 24,
            namespace_workers: 10,
            max_endpoints_per_slice: crate::endpointslice::DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            node_monitor_grace_period: crate::nodelifecycle::DEFAULT_MONITOR_GRACE,
            node_startup_grace_period: crate::nodelifecycle::DEFAULT_STARTUP_GRACE,
            job: crate::job::JobConfig::default(),
            replicaset_workers: 5,
            deployment_workers: 5,
            csr_signing: None,
        }
    }
}

impl Config {
    /// Checks what `run` would reject, so a process can report it before starting anything.
    pub fn validate(&self) -> Result<(), StartError> {
        self.allocator()?;
        Ok(())
    }

    fn allocator(&self) -> Result<CidrAllocator, CidrError> {
        let cluster: Ipv4Cidr = self.cluster_cidr.parse()?;
        CidrAllocator::new(cluster, self.node_cidr_mask_size)
    }
}

/// Runs every controller against `client` until `shutdown` completes, then stops them cleanly.
/// Leader election, when wanted, wraps this (`leader::spawn`, `leader::run_until_interrupted`).
pub async fn run(
    client: Client,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let alloc = config.allocator()?;
    let mut runner = Runner::new();
    // One Namespace watch feeds both controllers that care about namespaces.
    let mut namespaces = Informer::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    );
    NamespaceLifecycle::register(
        &mut runner,
        client.clone(),
        &mut namespaces,
        WorkQueue::new(namespace::rate_limit()),
        config.namespace_workers,
    );
    ServiceAccounts::register(
        &mut runner,
        client.clone(),
        &mut namespaces,
        WorkQueue::new(RateLimit::default()),
    );
    runner.informer(namespaces);
    // One Node and one Pod watch feed every controller that looks at them.
    let mut nodes = Informer::new(Api::<Node>::all(client.clone()), watcher::Config::default());
    let mut pods = Informer::new(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let pods_by_node = PodsByNode::default();
    pods_by_node.attach(&mut pods);
    NodeLifecycle::register(
        &mut runner,
        client.clone(),
        Grace {
            monitor: config.node_monitor_grace_period,
            startup: config.node_startup_grace_period,
        },
        &mut nodes,
        &mut pods,
        pods_by_node.clone(),
        WorkQueue::new(RateLimit::default()),
    );
    TaintEviction::register(
        &mut runner,
        client.clone(),
        &mut nodes,
        &mut pods,
        pods_by_node,
        WorkQueue::new(RateLimit::default()),
    );
    register_endpoints_and_gc(&mut runner, &client, config, &mut pods, &mut nodes);
    let revisions = crate::history::served(&client).await;
    register_batch(&mut runner, &client, config, &mut pods, revisions);
    // One ReplicaSet watch feeds both the ReplicaSet and the Deployment controller.
    let mut replicasets = Informer::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    ReplicaSetController::register(
        &mut runner,
        client.clone(),
        &mut pods,
        &mut replicasets,
        WorkQueue::new(RateLimit::default()),
        config.replicaset_workers,
    );
    DeploymentController::register(
        &mut runner,
        client.clone(),
        &mut pods,
        &mut replicasets,
        WorkQueue::new(RateLimit::default()),
        config.deployment_workers,
    );
    runner.informer(replicasets);
    crate::csr::CsrController::register(
        &mut runner,
        client.clone(),
        &mut nodes,
        config
            .csr_signing
            .as_ref()
            .and_then(crate::csr::CsrSigning::load),
        WorkQueue::new(RateLimit::default()),
    );
    runner.informer(nodes);
    runner.informer(pods);
    NodeIpam::register(
        &mut runner,
        client.clone(),
        alloc,
        WorkQueue::new(RateLimit::default()),
    );
    tracing::info!(cluster_cidr = %config.cluster_cidr, "controllers starting");
    runner.run(shutdown).await;
    tracing::info!("controllers stopped");
    Ok(())
}

/// The EndpointSlice and Endpoints controllers (on the shared Pod and Node informers, which the
/// caller runs) and the garbage collector.
fn register_endpoints_and_gc(
    runner: &mut Runner,
    client: &Client,
    config: &Config,
    pods: &mut Informer<Pod>,
    nodes: &mut Informer<Node>,
) {
    let mut services = Informer::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    EndpointSliceController::register(
        runner,
        client.clone(),
        endpointslice::Informers {
            services: &mut services,
            pods,
            nodes,
        },
        WorkQueue::new(RateLimit::default()),
        5,
        config.max_endpoints_per_slice,
    );
    EndpointsController::register(
        runner,
        client.clone(),
        &mut services,
        pods,
        WorkQueue::new(RateLimit::default()),
        5,
    );
    runner.informer(services);
    GarbageCollector::register(
        runner,
        client.clone(),
        WorkQueue::new(RateLimit::default()),
        20,
    );
}

/// The Job, DaemonSet and StatefulSet controllers, on the shared Pod informer (which the caller
/// runs).
fn register_batch(
    runner: &mut Runner,
    client: &Client,
    config: &Config,
    pods: &mut Informer<Pod>,
    revisions: bool,
) {
    crate::job::JobController::register(
        runner,
        client.clone(),
        pods,
        config.job.clone(),
        WorkQueue::new(RateLimit::default()),
    );
    crate::daemonset::DaemonSets::register(
        runner,
        client.clone(),
        pods,
        WorkQueue::new(RateLimit::default()),
        revisions,
    );
    crate::statefulset::StatefulSets::register(
        runner,
        client.clone(),
        pods,
        WorkQueue::new(RateLimit::default()),
        revisions,
    );
}

/// A client authenticated as the kubeconfig's current context says.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, StartError> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|source| StartError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| StartError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    Client::try_from(config).map_err(|source| StartError::Client {
        path: path.to_path_buf(),
        source,
    })
}
