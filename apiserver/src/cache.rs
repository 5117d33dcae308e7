//! The watch cache: every resource's objects and recent events in memory, kept current by one
//! storage watch. LIST and WATCH are served from here; each event is serialized once and the same
//! bytes go to every watcher that wants plain JSON.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::registry::{ResourceInfo, RESOURCES};
use crate::storage::{EventKind, KeyValue, RangeRequest, Revision, Storage, StorageError};

/// Events kept per resource for watches that resume from a resourceVersion.
const HISTORY: usize = 10_000;
/// Events a watcher may fall behind before it is closed (it re-lists, as with Kubernetes).
const BROADCAST: usize = 16_384;
/// How long a read waits for the cache to reach a revision before giving up.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// One object as stored, with its resourceVersion set, parsed and serialized.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub value: Value,
    pub json: Bytes,
    pub revision: Revision,
}

impl CachedObject {
    fn from_kv(kv: &KeyValue, revision: Revision) -> Option<CachedObject> {
        let mut value: Value = serde_json::from_slice(&kv.value).ok()?;
        crate::object::set_resource_version(&mut value, revision);
        let json = Bytes::from(serde_json::to_vec(&value).ok()?);
        Some(CachedObject {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value,
            json,
            revision,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct CacheEvent {
    pub kind: EventType,
    pub revision: Revision,
    /// The object after the change (for a delete: its last state, at the deletion revision).
    pub object: Arc<CachedObject>,
    /// The object before the change.
    pub prev: Option<Arc<CachedObject>>,
    /// `{"type":...,"object":...}\n`, serialized once for every plain-JSON watcher.
    pub line: Bytes,
}

pub fn watch_line(kind: &str, object_json: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object_json.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object_json);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<String, Arc<CachedObject>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// Every event after this revision is in `history`.
    floor: Revision,
    /// The global revision this cache is current with.
    revision: Revision,
}

/// One resource's cache.
pub struct ResourceCache {
    pub info: &'static ResourceInfo,
    prefix: String,
    inner: RwLock<Inner>,
    tx: broadcast::Sender<Arc<CacheEvent>>,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug)]
pub enum WatchStart {
    /// Synthetic ADDED events for every current object, then changes.
    Now,
    /// Changes after this revision.
    After(Revision),
}

/// A registered watch: what to send first, then the live feed.
pub struct Subscription {
    pub initial: Vec<Arc<CacheEvent>>,
    /// The revision the snapshot is current with.
    pub revision: Revision,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld {
        requested: Revision,
        oldest: Revision,
    },
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge {
        requested: Revision,
        current: Revision,
    },
    #[error("cache could not be loaded")]
    Load(#[source] StorageError),
}

impl ResourceCache {
    fn new(info: &'static ResourceInfo) -> Self {
        ResourceCache {
            info,
            prefix: info.key_prefix(),
            inner: RwLock::new(Inner::default()),
            tx: broadcast::channel(BROADCAST).0,
        }
    }

    /// The objects under `prefix` (a scope within this resource), in key order, and the revision
    /// they are current with (taken together, so a watch from it misses nothing).
    pub fn list(&self, prefix: &str) -> (Vec<Arc<CachedObject>>, Revision) {
        let inner = self.inner.read().expect("cache lock poisoned");
        (
            range_prefix(&inner.objects, prefix)
                .map(|(_, o)| o.clone())
                .collect(),
            inner.revision,
        )
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.inner
            .read()
            .expect("cache lock poisoned")
            .objects
            .get(key)
            .cloned()
    }

    /// Registers a watcher over `prefix`; events are filtered further by the caller.
    pub fn subscribe(&self, prefix: &str, start: WatchStart) -> Result<Subscription, CacheError> {
        let inner = self.inner.read().expect("cache lock poisoned");
        // Subscribing under the read lock: the feeder applies and broadcasts under the write
        // lock, so the snapshot and the live feed meet with no gap and no duplicate.
        let live = self.tx.subscribe();
        let initial = match start {
            WatchStart::Now => range_prefix(&inner.objects, prefix)
                .map(|(_, o)| {
                    Arc::new(CacheEvent {
                        kind: EventType::Added,
                        revision: o.revision,
                        object: o.clone(),
                        prev: None,
                        line: watch_line("ADDED", &o.json),
                    })
                })
                .collect(),
            WatchStart::After(rv) => {
                if rv < inner.floor {
                    return Err(CacheError::TooOld {
                        requested: rv,
                        oldest: inner.floor,
                    });
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.revision > rv && e.object.key.starts_with(prefix))
                    .cloned()
                    .collect()
            }
        };
        Ok(Subscription {
            initial,
            revision: inner.revision,
            live,
        })
    }

    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    fn apply(&self, kind: EventKind, kv: &KeyValue) {
        let revision = kv.mod_revision;
        let Some(object) = CachedObject::from_kv(kv, revision) else {
            tracing::error!(key = %String::from_utf8_lossy(&kv.key), "stored value is not JSON; skipped");
            return;
        };
        let object = Arc::new(object);
        let mut inner = self.inner.write().expect("cache lock poisoned");
        inner.revision = revision;
        let (event_type, prev) = match kind {
            EventKind::Put => match inner.objects.insert(object.key.clone(), object.clone()) {
                Some(prev) => (EventType::Modified, Some(prev)),
                None => (EventType::Added, None),
            },
            EventKind::Delete => (EventType::Deleted, inner.objects.remove(&object.key)),
        };
        let event = Arc::new(CacheEvent {
            kind: event_type,
            revision,
            line: watch_line(event_type.as_str(), &object.json),
            object,
            prev,
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > HISTORY {
            if let Some(old) = inner.history.pop_front() {
                inner.floor = old.revision;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
    }
}

fn range_prefix<'a>(
    map: &'a BTreeMap<String, Arc<CachedObject>>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Arc<CachedObject>)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// Every resource's cache, fed by one storage watch.
pub struct Caches {
    caches: Vec<Arc<ResourceCache>>,
    revision: watch::Sender<Revision>,
}

impl Caches {
    /// Loads everything from storage and starts the feeder thread.
    pub fn start(storage: Arc<dyn Storage>) -> Result<Arc<Caches>, CacheError> {
        let caches: Vec<Arc<ResourceCache>> = RESOURCES
            .iter()
            .map(|r| Arc::new(ResourceCache::new(r)))
            .collect();
        let loaded = futures::executor::block_on(storage.range(RangeRequest {
            prefix: b"/registry/".to_vec(),
            ..Default::default()
        }))
        .map_err(CacheError::Load)?;
        let start = loaded.revision;
        for kv in &loaded.kvs {
            let key = String::from_utf8_lossy(&kv.key);
            if let Some(cache) = caches.iter().find(|c| key.starts_with(&c.prefix)) {
                if let Some(o) = CachedObject::from_kv(kv, kv.mod_revision) {
                    let mut inner = cache.inner.write().expect("cache lock poisoned");
                    inner.objects.insert(o.key.clone(), Arc::new(o));
                }
            }
        }
        for cache in &caches {
            let mut inner = cache.inner.write().expect("cache lock poisoned");
            inner.floor = start;
            inner.revision = start;
        }
        let mut stream = storage
            .watch(b"/registry/".to_vec(), start + 1)
            .map_err(CacheError::Load)?;
        let this = Arc::new(Caches {
            caches,
            revision: watch::channel(start).0,
        });
        let feeder = this.clone();
        std::thread::Builder::new()
            .name("berth-watch-cache".into())
            .spawn(move || {
                futures::executor::block_on(async move {
                    while let Some(batch) = stream.recv().await {
                        match batch {
                            Ok(events) => feeder.apply(&events),
                            Err(e) => {
                                tracing::error!(error = %e, "storage watch failed; cache stops following");
                                return;
                            }
                        }
                    }
                });
            })
            .map_err(|e| CacheError::Load(StorageError::Backend { op: "spawn cache feeder", source: Box::new(e) }))?;
        Ok(this)
    }

    fn apply(&self, events: &[crate::storage::Event]) {
        let mut last = None;
        for event in events {
            let key = String::from_utf8_lossy(&event.kv.key);
            if let Some(cache) = self.caches.iter().find(|c| key.starts_with(&c.prefix)) {
                cache.apply(event.kind, &event.kv);
            }
            last = Some(event.revision());
        }
        if let Some(rev) = last {
            // Caches untouched by this batch are current with it too.
            for cache in &self.caches {
                let mut inner = cache.inner.write().expect("cache lock poisoned");
                inner.revision = inner.revision.max(rev);
            }
            self.revision.send_replace(rev);
        }
    }

    pub fn get(&self, info: &ResourceInfo) -> &Arc<ResourceCache> {
        self.caches
            .iter()
            .find(|c| {
                std::ptr::eq(c.info, info)
                    || c.info.plural == info.plural && c.info.group == info.group
            })
            .expect("every served resource has a cache")
    }

    /// The revision the caches have reached.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits until the caches have reached `revision` (consistent reads from the cache).
    pub async fn wait_for(&self, revision: Revision) -> Result<(), CacheError> {
        let mut rx = self.revision.subscribe();
        let reached = {
            let reached = Box::pin(rx.wait_for(|r| *r >= revision));
            let timeout = Box::pin(compio::time::sleep(CATCH_UP_TIMEOUT));
            matches!(
                futures::future::select(reached, timeout).await,
                futures::future::Either::Left((Ok(_), _))
            )
        };
        if reached {
            Ok(())
        } else {
            Err(CacheError::TooLarge {
                requested: revision,
                current: self.revision(),
            })
        }
    }

    pub fn watcher_counts(&self) -> Vec<(&'static ResourceInfo, usize)> {
        self.caches.iter().map(|c| (c.info, c.watchers())).collect()
    }
}
