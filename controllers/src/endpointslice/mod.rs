//! EndpointSlices from Services and pods (kube-controller-manager's endpointslice controller):
//! every Service with a selector gets discovery.k8s.io/v1 slices of at most
//! `--max-endpoints-per-slice` endpoints, grouped by the ports each pod serves, rewritten only
//! where something changed.

mod desired;
mod membership;
mod plan;
mod tracker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;

pub use desired::{
    endpoint_ports, find_port, hostname_for, ipv4_addresses, is_headless, is_managed,
    pod_reference, pod_to_endpoint, selects, should_pod_be_in_endpoints, should_set_hostname,
    slice_labels, CONTROLLER_NAME, DEFAULT_MAX_ENDPOINTS_PER_SLICE, HEADLESS_LABEL,
    MANAGED_BY_LABEL, SERVICE_NAME_LABEL, ZONE_LABEL,
};
pub use membership::Membership;
pub use plan::{plan, Desired, Plan};

use crate::apierrors::{is_namespace_terminating, is_not_found};
use crate::runtime::{Action, Change, Informer, NotSynced, Reconciler, Runner, Synced, WorkQueue};
use tracker::Tracker;

/// How long a Service whose slices the cache has not caught up with waits before looking
/// again (the slice's own event normally re-queues it sooner).
const STALE_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    #[error("{verb} endpointslice for service {service}")]
    Write {
        verb: &'static str,
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

/// The shared informers the controller reads (others may feed them too).
pub struct Informers<'a> {
    pub services: &'a mut Informer<Service>,
    pub pods: &'a mut Informer<Pod>,
    pub nodes: &'a mut Informer<Node>,
}

pub struct EndpointSliceController {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
    synced: Vec<(&'static str, Synced)>,
    tracker: Arc<Tracker>,
    /// Services that left out pods whose Node is not in the cache, by node name: re-queued
    /// when that Node appears.
    waiting_for_nodes: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    max_endpoints_per_slice: usize,
}

impl EndpointSliceController {
    /// Registers the controller: `informers` are shared (the caller runs them), the
    /// EndpointSlice informer is the controller's own (only slices it manages).
    pub fn register(
        runner: &mut Runner,
        client: Client,
        informers: Informers<'_>,
        queue: WorkQueue<String>,
        workers: usize,
        max_endpoints_per_slice: usize,
    ) {
        let Informers {
            services,
            pods,
            nodes,
        } = informers;
        Membership::enqueue_services(services, pods, &queue);
        let waiting_for_nodes: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
        let (q, waiting) = (queue.clone(), waiting_for_nodes.clone());
        nodes.observe(move |change, node: &Node| {
            if change != Change::Added {
                return;
            }
            let name = node.metadata.name.clone().unwrap_or_default();
            let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
            for key in waiting.remove(&name).into_iter().flatten() {
                q.add(key);
            }
        });
        let config =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}"));
        let mut slices = Informer::new(Api::<EndpointSlice>::all(client.clone()), config);
        let tracker = Arc::new(Tracker::default());
        let t = tracker.clone();
        slices.observe(move |change, slice: &EndpointSlice| t.observe(change, slice));
        slices.enqueue(&queue, |slice: &EndpointSlice| {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            match (slice.metadata.namespace.as_deref(), service) {
                (Some(ns), Some(svc)) if !svc.is_empty() => vec![format!("{ns}/{svc}")],
                _ => Vec::new(),
            }
        });
        let controller = EndpointSliceController {
            client,
            services: services.store(),
            pods: pods.store(),
            nodes: nodes.store(),
            slices: slices.store(),
            synced: vec![
                ("service", services.synced()),
                ("pod", pods.synced()),
                ("node", nodes.synced()),
                ("endpointslice", slices.synced()),
            ],
            tracker,
            waiting_for_nodes,
            max_endpoints_per_slice,
        };
        runner.informer(slices);
        runner.controller(controller, queue, workers);
    }

    /// The desired endpoints for `svc`, and the nodes whose absence left pods out.
    fn desired(&self, svc: &Service) -> (Desired, Vec<String>) {
        let publish_not_ready = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let mut desired = Desired::default();
        let mut missing_nodes = Vec::new();
        for pod in self.pods.state_filter(|p| selects(svc, p)) {
            if !should_pod_be_in_endpoints(&pod, true) {
                continue;
            }
            let node_name = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let node = self.nodes.get(&ObjectRef::new(&node_name));
            // As Kubernetes: a pod on an unknown Node is left out until the Node shows up,
            // unless the Service publishes addresses regardless of readiness.
            if node.is_none() && !publish_not_ready {
                missing_nodes.push(node_name);
                continue;
            }
            let endpoint = pod_to_endpoint(&pod, node.as_deref(), svc);
            if !endpoint.addresses.is_empty() {
                desired.insert(endpoint_ports(svc, &pod), endpoint);
            }
        }
        (desired, missing_nodes)
    }

    async fn apply(&self, key: &str, svc: &Service, plan: Plan) -> Result<(), EndpointSliceError> {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), &ns);
        let err = |verb, source| EndpointSliceError::Write {
            verb,
            service: key.to_string(),
            source,
        };
        let pp = PostParams::default();
        // No new slices for a Service being deleted: the garbage collector is removing them.
        if svc.metadata.deletion_timestamp.is_none() {
            for slice in &plan.create {
                match api.create(&pp, slice).await {
                    Ok(created) => self.tracker.written(key, &created, &self.slices),
                    // The namespace is being deleted: so is the Service.
                    Err(e) if is_namespace_terminating(&e) => return Ok(()),
                    Err(e) => return Err(err("creating", e)),
                }
            }
        }
        for slice in &plan.update {
            let name = slice.metadata.name.clone().unwrap_or_default();
            let updated = api
                .replace(&name, &pp, slice)
                .await
                .map_err(|e| err("updating", e))?;
            self.tracker.written(key, &updated, &self.slices);
        }
        for slice in &plan.delete {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(err("deleting", e)),
            }
            self.tracker.deleted(key, slice, &self.slices);
        }
        Ok(())
    }
}

impl Reconciler for EndpointSliceController {
    type Error = EndpointSliceError;

    fn name(&self) -> &'static str {
        "endpointslice"
    }

    async fn prepare(&self) -> Result<(), EndpointSliceError> {
        for (kind, synced) in &self.synced {
            synced.wait(kind).await?;
        }
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, EndpointSliceError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let Some(svc) = self.services.get(&ObjectRef::new(name).within(ns)) else {
            // The garbage collector removes the slices through their owner reference.
            self.tracker.forget(key);
            return Ok(Action::Done);
        };
        if !is_managed(&svc) {
            return Ok(Action::Done);
        }
        if self.tracker.stale(key) {
            return Ok(Action::RequeueAfter(STALE_RETRY));
        }
        let (desired, missing_nodes) = self.desired(&svc);
        let existing: Vec<EndpointSlice> = self
            .slices
            .state_filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata.deletion_timestamp.is_none()
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .is_some_and(|n| n == name)
            })
            .iter()
            .map(|s| (**s).clone())
            .collect();
        let plan = plan(&svc, desired, &existing, self.max_endpoints_per_slice);
        if !plan.is_empty() {
            tracing::debug!(
                service = key,
                create = plan.create.len(),
                update = plan.update.len(),
                delete = plan.delete.len(),
                "syncing endpointslices"
            );
            self.apply(key, &svc, plan).await?;
        }
        if !missing_nodes.is_empty() {
            let mut waiting = self
                .waiting_for_nodes
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for node in missing_nodes {
                // The Node may have arrived since the pods were read.
                if self.nodes.get(&ObjectRef::new(&node)).is_some() {
                    return Ok(Action::RequeueAfter(Duration::ZERO));
                }
                waiting.entry(node).or_default().insert(key.to_string());
            }
        }
        Ok(Action::Done)
    }
}
