//! The collector's watches: every deletable resource the server serves (found through
//! discovery, re-checked periodically so new CRDs are covered), watched metadata-only
//! (`as=PartialObjectMetadata`) into the graph.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::task::JoinHandle;

use super::graph::{Graph, Node, Work};
use crate::runtime::WorkQueue;

/// Resources never watched: too many, never owners of anything (Kubernetes ignores them too).
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// One resource kind as discovery reports it.
#[derive(Clone, Debug)]
pub struct Kind {
    pub resource: Arc<ApiResource>,
    pub namespaced: bool,
}

/// What discovery found: how to reach each kind an owner reference may name, and which
/// resources to watch.
#[derive(Debug, Default)]
pub struct Discovered {
    /// (apiVersion, kind) → resource, for every served version.
    pub kinds: HashMap<(String, String), Kind>,
    /// `plural.group` → resource, one (preferred) version each.
    pub watched: HashMap<String, Kind>,
}

pub async fn discover(client: &Client) -> Result<Discovered, kube::Error> {
    let discovery = Discovery::new(client.clone()).run_aggregated().await?;
    let mut found = Discovered::default();
    for group in discovery.groups() {
        for version in group.versions() {
            for (ar, caps) in group.versioned_resources(version) {
                let kind = Kind {
                    namespaced: caps.scope == Scope::Namespaced,
                    resource: Arc::new(ar.clone()),
                };
                found
                    .kinds
                    .entry((ar.api_version.clone(), ar.kind.clone()))
                    .or_insert(kind);
            }
        }
        for (ar, caps) in group.recommended_resources() {
            let watchable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v));
            if !watchable || IGNORED.contains(&(ar.group.as_str(), ar.plural.as_str())) {
                continue;
            }
            let key = format!("{}.{}", ar.plural, ar.group);
            found.watched.insert(
                key,
                Kind {
                    namespaced: caps.scope == Scope::Namespaced,
                    resource: Arc::new(ar),
                },
            );
        }
    }
    Ok(found)
}

/// State the watches, the periodic re-discovery and the workers share.
pub struct Shared {
    pub client: Client,
    pub graph: Mutex<Graph>,
    pub queue: WorkQueue<String>,
    pub kinds: RwLock<HashMap<(String, String), Kind>>,
    monitors: Mutex<HashMap<String, JoinHandle<()>>>,
    /// How many watches have completed their first list.
    synced: tokio::sync::watch::Sender<usize>,
}

impl Shared {
    pub fn new(client: Client, queue: WorkQueue<String>) -> Self {
        Shared {
            client,
            graph: Mutex::new(Graph::default()),
            queue,
            kinds: RwLock::default(),
            monitors: Mutex::default(),
            synced: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn kind(&self, api_version: &str, kind: &str) -> Option<Kind> {
        self.kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(api_version.to_string(), kind.to_string()))
            .cloned()
    }

    pub fn push(&self, work: Vec<Work>) {
        for w in work {
            self.queue.add(w.key());
        }
    }

    pub fn synced(&self) -> tokio::sync::watch::Receiver<usize> {
        self.synced.subscribe()
    }

    pub fn monitor_count(&self) -> usize {
        self.monitors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Starts watches for newly served resources and stops those no longer served (their
    /// objects leave the graph).
    pub fn apply(self: &Arc<Self>, found: Discovered) {
        *self.kinds.write().unwrap_or_else(PoisonError::into_inner) = found.kinds;
        let mut monitors = self.monitors.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<String> = monitors
            .keys()
            .filter(|k| !found.watched.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(handle) = monitors.remove(&key) {
                handle.abort();
            }
            let Some((plural, group)) = key.split_once('.') else {
                continue;
            };
            let mut graph = self.graph();
            let stale = graph.uids_where(|r| r.group == group && r.plural == plural);
            let mut work = Vec::new();
            for uid in stale {
                work.extend(graph.remove(&uid));
            }
            drop(graph);
            self.push(work);
        }
        for (key, kind) in found.watched {
            if monitors.contains_key(&key) {
                continue;
            }
            tracing::debug!(resource = %key, "garbage collector watching");
            monitors.insert(key, tokio::spawn(monitor(self.clone(), kind)));
        }
    }

    /// Stops every watch.
    pub fn stop(&self) {
        for (_, handle) in self
            .monitors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            handle.abort();
        }
    }
}

/// Watches one resource into the graph until aborted.
async fn monitor(shared: Arc<Shared>, kind: Kind) {
    // `PartialObjectMeta` makes kube ask for metadata only.
    let api: Api<PartialObjectMeta<DynamicObject>> =
        Api::all_with(shared.client.clone(), &*kind.resource);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: Option<HashSet<String>> = None;
    let mut first_list = true;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(resource = %kind.resource.plural, error = %e, "garbage collector watch failed; retrying");
                continue;
            }
        };
        let work = match event {
            Event::Init => {
                listed = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(obj) | Event::Apply(obj) => {
                let Some(node) = Node::from_meta(kind.resource.clone(), &obj.metadata) else {
                    continue;
                };
                if let Some(seen) = listed.as_mut() {
                    seen.insert(node.identity.uid.clone());
                }
                shared.graph().upsert(node)
            }
            Event::Delete(obj) => match obj.metadata.uid.as_deref() {
                Some(uid) => shared.graph().remove(uid),
                None => Vec::new(),
            },
            Event::InitDone => {
                let seen = listed.take().unwrap_or_default();
                let mut graph = shared.graph();
                // Objects the re-list no longer shows were deleted while the watch was down.
                let vanished: Vec<String> = graph
                    .uids_of(&kind.resource)
                    .into_iter()
                    .filter(|u| !seen.contains(u))
                    .collect();
                let mut work = Vec::new();
                for uid in vanished {
                    work.extend(graph.remove(&uid));
                }
                drop(graph);
                if first_list {
                    first_list = false;
                    shared.synced.send_modify(|n| *n += 1);
                }
                work
            }
        };
        shared.push(work);
    }
}
