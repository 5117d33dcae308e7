//! Informers: one kube-rs watcher per resource feeding a reflector store (the controllers' read
//! cache) and the work queues of the controllers that care about it. A re-list after a broken
//! watch also reports the objects that vanished meanwhile, so no delete goes unnoticed.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;

use super::queue::WorkQueue;

type KeyFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;
type ObserveFn<K> = Arc<dyn Fn(Change, &K) + Send + Sync>;

/// What happened to an object, for [`Informer::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not in the store before (a create, or first seen at a (re)list).
    Added,
    Modified,
    /// Deleted, or found gone at a re-list.
    Deleted,
}

/// Resolves once an informer's first list is in its store. (kube-runtime's
/// `Store::wait_until_ready` wakes only the last of several concurrent waiters, so controllers
/// sharing an informer wait on this instead.)
#[derive(Clone, Debug)]
pub struct Synced(tokio::sync::watch::Receiver<bool>);

/// The informer stopped before its first list completed.
#[derive(Debug, thiserror::Error)]
#[error("the {kind} informer stopped before its first list")]
pub struct NotSynced {
    pub kind: String,
}

impl Synced {
    pub async fn wait(&self, kind: &str) -> Result<(), NotSynced> {
        let mut rx = self.0.clone();
        rx.wait_for(|synced| *synced)
            .await
            .map(|_| ())
            .map_err(|_| NotSynced { kind: kind.into() })
    }
}

/// A watch on one resource, its store, and where its changes are queued.
pub struct Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    handlers: Vec<(WorkQueue<String>, KeyFn<K>)>,
    observers: Vec<ObserveFn<K>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        Informer {
            api,
            config,
            writer: Writer::default(),
            handlers: Vec::new(),
            observers: Vec::new(),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Resolves once the first list is in the store.
    pub fn synced(&self) -> Synced {
        Synced(self.synced.subscribe())
    }

    /// The read cache this informer keeps; ready once the first list has completed.
    pub fn store(&self) -> Store<K> {
        self.writer.as_reader()
    }

    /// Queues on `queue` the keys `keys` returns for every object that is added, changed,
    /// deleted, or seen at a (re)list.
    pub fn enqueue(
        &mut self,
        queue: &WorkQueue<String>,
        keys: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) {
        self.handlers.push((queue.clone(), Arc::new(keys)));
    }

    /// Calls `f` for every change, before the change's keys are queued (controller
    /// expectations count creations and deletions here).
    pub fn observe(&mut self, f: impl Fn(Change, &K) + Send + Sync + 'static) {
        self.observers.push(Arc::new(f));
    }

    /// Watches until dropped. Errors are logged and the watch resumes after kube-rs' default
    /// back-off; a watch that is too old restarts with a fresh list.
    pub async fn run(self) {
        let Informer {
            api,
            config,
            mut writer,
            handlers,
            observers,
            synced,
        } = self;
        let store = writer.as_reader();
        let kind = K::kind(&());
        // Objects the store held when a re-list began: those missing once it is done were
        // deleted while the watch was down.
        let mut before_relist: Vec<Arc<K>> = Vec::new();
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %e, "watch failed; retrying");
                    continue;
                }
            };
            if matches!(event, Event::Init) {
                before_relist = store.state();
            }
            let change = match &event {
                Event::Apply(obj) | Event::InitApply(obj) => {
                    if store.get(&ObjectRef::from_obj(obj)).is_some() {
                        Some(Change::Modified)
                    } else {
                        Some(Change::Added)
                    }
                }
                Event::Delete(_) => Some(Change::Deleted),
                Event::Init | Event::InitDone => None,
            };
            writer.apply_watcher_event(&event);
            match &event {
                Event::Apply(obj) | Event::Delete(obj) | Event::InitApply(obj) => {
                    if let Some(change) = change {
                        for f in &observers {
                            f(change, obj);
                        }
                    }
                    dispatch(&handlers, obj)
                }
                Event::InitDone => {
                    synced.send_replace(true);
                    let present: HashSet<ObjectRef<K>> = store
                        .state()
                        .iter()
                        .map(|o| ObjectRef::from_obj(&**o))
                        .collect();
                    for old in before_relist.drain(..) {
                        if !present.contains(&ObjectRef::from_obj(&*old)) {
                            for f in &observers {
                                f(Change::Deleted, &old);
                            }
                            dispatch(&handlers, &old);
                        }
                    }
                }
                Event::Init => {}
            }
        }
    }
}

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, config)
}

fn dispatch<K>(handlers: &[(WorkQueue<String>, KeyFn<K>)], obj: &K) {
    for (queue, keys) in handlers {
        for key in keys(obj) {
            queue.add(key);
        }
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects: the usual queue key.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    let name = meta.name.clone().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name,
    }
}
