//! The node agent: registration, then two loops until shutdown — the Lease renewal and the
//! status sync (post when changed, or when the report interval has passed).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerImage, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::conditions::Observation;
use super::host::HostInfo;
use super::lease::LeaseRenewer;
use super::pressure::{sample, PressureTracker, Pressures};
use super::register::create_or_reconcile;
use super::status::{capacity, desired_status, missing_capacity, status_changed, StatusInputs};
use super::{is_status, NodeConfig, NodeError};

/// `Err(why)` while the node cannot run pods (runtime not ready, …); `why` becomes the Ready
/// condition's message.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
/// The images the node holds, for `status.images`.
pub type ImageLister = Arc<dyn Fn() -> Vec<ContainerImage> + Send + Sync>;

/// What the rest of the kubelet tells the node status.
#[derive(Clone)]
pub struct Providers {
    pub readiness: Readiness,
    pub images: ImageLister,
}

impl Default for Providers {
    /// Always ready, no images.
    fn default() -> Self {
        Providers {
            readiness: Arc::new(|| Ok(())),
            images: Arc::new(Vec::new),
        }
    }
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers").finish_non_exhaustive()
    }
}

/// Status posts per sync before giving up on conflicts (the kubelet's `nodeStatusUpdateRetry`).
const STATUS_ATTEMPTS: usize = 5;
/// First wait after a failed renewal; doubles up to the renew interval.
const LEASE_RETRY: Duration = Duration::from_millis(200);

/// One node's registration and status.
pub struct NodeAgent {
    client: kube::Client,
    cfg: NodeConfig,
    host: HostInfo,
    providers: Providers,
    tracker: PressureTracker,
    last_report: Option<Instant>,
}

fn now_time() -> Time {
    // The API keeps whole seconds; comparing against what it returns needs the same.
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

impl NodeAgent {
    pub fn new(
        client: kube::Client,
        cfg: NodeConfig,
        host: HostInfo,
        providers: Providers,
    ) -> NodeAgent {
        let tracker = PressureTracker::new(cfg.pressure_transition_period);
        NodeAgent {
            client,
            cfg,
            host,
            providers,
            tracker,
            last_report: None,
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    fn observe(&mut self) -> Observation {
        let observed = match sample(&self.cfg.roots(), &self.cfg.data_dir) {
            Ok(usage) => self.cfg.thresholds.observe(&usage),
            Err(e) => {
                tracing::warn!(node = %self.cfg.name, error = %e, "sampling node resources");
                Pressures::default()
            }
        };
        let pressures = self.tracker.update(observed, Instant::now());
        let mut errors = Vec::new();
        if let Err(why) = (self.providers.readiness)() {
            errors.push(why);
        }
        if let Some(why) = missing_capacity(&capacity(&self.host, self.cfg.max_pods)) {
            errors.push(why);
        }
        Observation {
            pressures,
            ready: if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join(","))
            },
        }
    }

    /// Creates or reconciles the Node and posts its full status; returns the Node.
    pub async fn register(&mut self) -> Result<Node, NodeError> {
        create_or_reconcile(&self.client, &self.cfg, &self.host).await?;
        self.last_report = None;
        self.sync_status()
            .await?
            .ok_or_else(|| NodeError::Conflicts {
                op: "posting the status of node",
                name: self.cfg.name.clone(),
                attempts: STATUS_ATTEMPTS,
            })
    }

    /// One status sync: reads the Node, computes its status and posts it if it changed or the
    /// report interval passed (always on the first sync). Returns the Node when it posted.
    /// A missing Node is registered again.
    pub async fn sync_status(&mut self) -> Result<Option<Node>, NodeError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let name = self.cfg.name.clone();
        let observation = self.observe();
        let report_due = self
            .last_report
            .is_none_or(|at| at.elapsed() >= self.cfg.status_report_frequency);
        for _ in 0..STATUS_ATTEMPTS {
            let node = match nodes
                .get_opt(&name)
                .await
                .map_err(NodeError::api("getting node", &name))?
            {
                Some(node) => node,
                None => {
                    tracing::warn!(node = %name, "node is gone; registering it again");
                    create_or_reconcile(&self.client, &self.cfg, &self.host).await?
                }
            };
            let current = node.status.as_ref();
            let status = desired_status(
                current,
                StatusInputs {
                    cfg: &self.cfg,
                    host: &self.host,
                    observation: &observation,
                    images: (self.providers.images)(),
                    now: &now_time(),
                },
            );
            if !report_due && !status_changed(current, &status) {
                return Ok(None);
            }
            // Pinned to the version read, so nothing written since is overwritten.
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "status": status,
            });
            match nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(node) => {
                    self.last_report = Some(Instant::now());
                    return Ok(Some(node));
                }
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => continue,
                Err(e) => return Err(NodeError::api("posting the status of node", &name)(e)),
            }
        }
        Err(NodeError::Conflicts {
            op: "posting the status of node",
            name,
            attempts: STATUS_ATTEMPTS,
        })
    }

    /// Renews the Lease and syncs the status, each on its own interval, until `shutdown`
    /// completes. Failures are logged and retried: the node keeps trying as the kubelet does.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let renewing = renew_lease(
            self.client.clone(),
            self.cfg.name.clone(),
            self.cfg.lease_duration_seconds,
            self.cfg.lease_renew_interval,
        );
        let syncing = async {
            loop {
                if let Err(e) = self.sync_status().await {
                    tracing::warn!(node = %self.cfg.name, error = %e, "node status not posted");
                }
                tokio::time::sleep(self.cfg.status_update_frequency).await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = renewing => {}
            () = syncing => {}
        }
        Ok(())
    }
}

async fn renew_lease(client: kube::Client, name: String, duration_seconds: i32, every: Duration) {
    let mut renewer = LeaseRenewer::new(client, &name, duration_seconds);
    let mut retry = LEASE_RETRY;
    loop {
        match renewer.renew().await {
            Ok(()) => {
                retry = LEASE_RETRY;
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "node lease not renewed");
                tokio::time::sleep(retry.min(every)).await;
                retry = retry.saturating_mul(2);
            }
        }
    }
}

/// Runs the node's Lease renewal and status sync until `shutdown` (registering the Node first
/// if it does not exist).
pub async fn run_status_loop(
    client: kube::Client,
    cfg: NodeConfig,
    host: HostInfo,
    providers: Providers,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    NodeAgent::new(client, cfg, host, providers)
        .run(shutdown)
        .await
}
