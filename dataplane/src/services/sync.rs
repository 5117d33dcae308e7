//! The watch loop: Services and EndpointSlices from the API, kept in local stores, and every
//! change turned into one [`Programmer::apply`] (or `remove`) of the one service it touches.
//!
//! Nothing is programmed until both initial lists are complete, so an agent that restarts
//! never briefly programs a service without its endpoints (which would refuse connections).
//! After a watcher restarts (a relist, e.g. when the API server was away), the store of that
//! kind is replaced at `InitDone` and every service is reconciled: those that disappeared
//! meanwhile are removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;

use super::desired::{desired_frontends, service_key, slice_service};
use super::programmer::{Programmer, ServiceTables, Stats};
use super::ServiceKey;

/// How often services whose programming failed are tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What the sync loop has done so far, published after every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncProgress {
    /// Both initial lists are complete and have been programmed.
    pub synced: bool,
    /// Services applied or removed successfully (no-op applies included).
    pub applied: u64,
    /// Services whose last programming failed and will be retried (plus one while removing
    /// unclaimed entries fails).
    pub failing: usize,
    pub stats: Stats,
}

/// A slice by namespace and name.
type SliceName = (String, String);

/// The local stores and the programmer; fed watcher events, it programs the services they
/// touch. Separate from [`run_service_sync`] so tests can drive it with constructed events.
#[derive(Debug)]
pub struct ServiceSync<T> {
    node_name: String,
    programmer: Programmer<T>,
    services: HashMap<ServiceKey, Service>,
    slices: HashMap<ServiceKey, BTreeMap<SliceName, EndpointSlice>>,
    /// Which service each slice was filed under, to find it again when its label changes.
    slice_owner: HashMap<SliceName, ServiceKey>,
    service_relist: Option<HashMap<ServiceKey, Service>>,
    slice_relist: Option<Vec<EndpointSlice>>,
    services_listed: bool,
    slices_listed: bool,
    failing: BTreeSet<ServiceKey>,
    cleanup_failed: bool,
    applied: u64,
}

impl<T: ServiceTables> ServiceSync<T> {
    pub fn new(programmer: Programmer<T>, node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            programmer,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            service_relist: None,
            slice_relist: None,
            services_listed: false,
            slices_listed: false,
            failing: BTreeSet::new(),
            cleanup_failed: false,
            applied: 0,
        }
    }

    pub fn programmer(&self) -> &Programmer<T> {
        &self.programmer
    }

    pub fn into_programmer(self) -> Programmer<T> {
        self.programmer
    }

    pub fn progress(&self) -> SyncProgress {
        SyncProgress {
            synced: self.synced(),
            applied: self.applied,
            failing: self.failing.len() + usize::from(self.cleanup_failed),
            stats: self.programmer.stats(),
        }
    }

    fn synced(&self) -> bool {
        self.services_listed && self.slices_listed
    }

    pub fn on_service(&mut self, event: Event<Service>) {
        match event {
            Event::Init => self.service_relist = Some(HashMap::new()),
            Event::InitApply(svc) => {
                if let Some(relist) = self.service_relist.as_mut() {
                    relist.insert(service_key(&svc), svc);
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.service_relist.take() {
                    self.services = relist;
                }
                self.services_listed = true;
                self.reconcile_all();
            }
            Event::Apply(svc) => {
                let key = service_key(&svc);
                self.services.insert(key.clone(), svc);
                self.recompute(&key);
            }
            Event::Delete(svc) => {
                let key = service_key(&svc);
                self.services.remove(&key);
                self.recompute(&key);
            }
        }
    }

    pub fn on_slice(&mut self, event: Event<EndpointSlice>) {
        match event {
            Event::Init => self.slice_relist = Some(Vec::new()),
            Event::InitApply(slice) => {
                if let Some(relist) = self.slice_relist.as_mut() {
                    relist.push(slice);
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.slice_relist.take() {
                    self.slices.clear();
                    self.slice_owner.clear();
                    for slice in relist {
                        self.file_slice(slice);
                    }
                }
                self.slices_listed = true;
                self.reconcile_all();
            }
            Event::Apply(slice) => {
                let old = self.unfile_slice(&slice);
                let new = self.file_slice(slice);
                if old != new {
                    if let Some(old) = old {
                        self.recompute(&old);
                    }
                }
                if let Some(new) = new {
                    self.recompute(&new);
                }
            }
            Event::Delete(slice) => {
                if let Some(old) = self.unfile_slice(&slice) {
                    self.recompute(&old);
                }
            }
        }
    }

    /// Tries again the services whose programming failed.
    pub fn retry_failing(&mut self) {
        let failing: Vec<ServiceKey> = self.failing.iter().cloned().collect();
        for key in failing {
            self.recompute(&key);
        }
        if self.cleanup_failed && self.synced() {
            self.cleanup();
        }
    }

    fn slice_name(slice: &EndpointSlice) -> SliceName {
        (
            slice.metadata.namespace.clone().unwrap_or_default(),
            slice.metadata.name.clone().unwrap_or_default(),
        )
    }

    fn file_slice(&mut self, slice: EndpointSlice) -> Option<ServiceKey> {
        let owner = slice_service(&slice)?;
        let name = Self::slice_name(&slice);
        self.slice_owner.insert(name.clone(), owner.clone());
        self.slices
            .entry(owner.clone())
            .or_default()
            .insert(name, slice);
        Some(owner)
    }

    fn unfile_slice(&mut self, slice: &EndpointSlice) -> Option<ServiceKey> {
        let name = Self::slice_name(slice);
        let owner = self.slice_owner.remove(&name)?;
        if let Some(slices) = self.slices.get_mut(&owner) {
            slices.remove(&name);
            if slices.is_empty() {
                self.slices.remove(&owner);
            }
        }
        Some(owner)
    }

    fn reconcile_all(&mut self) {
        if !self.synced() {
            return;
        }
        let mut keys: BTreeSet<ServiceKey> = self.programmer.services().cloned().collect();
        keys.extend(self.services.keys().cloned());
        for key in keys {
            self.recompute(&key);
        }
        self.cleanup();
    }

    /// Removes what an adopted programmer found in the maps and no service claimed.
    fn cleanup(&mut self) {
        match self.programmer.remove_unclaimed() {
            Ok(()) => self.cleanup_failed = false,
            Err(e) => {
                tracing::warn!(error = %e, "services: removing unclaimed entries, will retry");
                self.cleanup_failed = true;
            }
        }
    }

    /// Programs `key` from the stores, then any service that was waiting for a frontend the
    /// change freed.
    fn recompute(&mut self, key: &ServiceKey) {
        if !self.synced() {
            return;
        }
        self.program(key);
        for released in self.programmer.take_released() {
            self.program(&released);
        }
    }

    fn program(&mut self, key: &ServiceKey) {
        let result = match self.services.get(key) {
            Some(svc) => {
                let slices = self.slices.get(key).into_iter().flat_map(|s| s.values());
                let desired = desired_frontends(svc, slices, &self.node_name);
                self.programmer.apply(key, &desired)
            }
            None => self.programmer.remove(key),
        };
        match result {
            Ok(()) => {
                self.failing.remove(key);
                self.applied += 1;
            }
            Err(e) => {
                tracing::warn!(service = %key, error = %e, "services: programming failed, will retry");
                self.failing.insert(key.clone());
            }
        }
    }
}

/// Watches all Services and EndpointSlices with `client` and programs them through
/// `programmer` for node `node_name` until `shutdown` completes; returns the programmer, whose
/// state describes the maps. `progress` receives [`SyncProgress`] after every event.
///
/// Pass [`Programmer::new`] over empty maps, or [`Programmer::adopt`] over maps a previous
/// agent left pinned: then unchanged services are not rewritten, and what no service claims
/// once both lists are in is removed.
pub async fn run_service_sync<T: ServiceTables>(
    client: Client,
    node_name: &str,
    programmer: Programmer<T>,
    progress: watch::Sender<SyncProgress>,
    shutdown: impl Future<Output = ()>,
) -> Programmer<T> {
    let mut sync = ServiceSync::new(programmer, node_name);
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client);
    // While the API server is unreachable the watches back off and retry; the maps keep
    // forwarding what they hold.
    let mut services = watcher::watcher(services, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut slices = watcher::watcher(slices, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut retry = tokio::time::interval(RETRY_INTERVAL);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = services.next() => match event {
                Some(Ok(event)) => sync.on_service(event),
                Some(Err(e)) => tracing::warn!(error = %e, "services: watching services"),
                None => break,
            },
            event = slices.next() => match event {
                Some(Ok(event)) => sync.on_slice(event),
                Some(Err(e)) => tracing::warn!(error = %e, "services: watching endpointslices"),
                None => break,
            },
            _ = retry.tick(), if sync.progress().failing > 0 => sync.retry_failing(),
        }
        progress.send_replace(sync.progress());
    }
    sync.into_programmer()
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
