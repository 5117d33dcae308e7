//! The slices this controller wrote that its informer has not seen yet (Kubernetes'
//! `EndpointSliceTracker`). Reconciling a Service on a stale cache would miss a slice it just
//! created and create another one, duplicating endpoints; so a Service waits until the cache has
//! caught up with its own writes.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::runtime::{key_of, Change};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Written at this resourceVersion (or later).
    AtLeast(u64),
    Gone,
}

/// Expected states of slices, keyed by `namespace/name`, each with its Service's key.
#[derive(Debug, Default)]
pub struct Tracker {
    expected: Mutex<HashMap<String, (String, Expect)>>,
}

fn version(slice: &EndpointSlice) -> Option<u64> {
    slice.metadata.resource_version.as_deref()?.parse().ok()
}

fn met(expect: &Expect, seen: Option<&EndpointSlice>) -> bool {
    match (expect, seen) {
        (Expect::Gone, seen) => seen.is_none(),
        (Expect::AtLeast(_), None) => false,
        // A server whose versions are not numbers cannot be compared: do not wait on it.
        (Expect::AtLeast(want), Some(s)) => version(s).is_none_or(|v| v >= *want),
    }
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Expect)>> {
        // A panic while holding the lock leaves a plain map behind: still usable.
        self.expected.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expect(&self, service: &str, slice: String, expect: Expect, store: &Store<EndpointSlice>) {
        // Checked under the lock the informer's observer also takes, after the store was
        // updated: the event for our write cannot slip between the check and the insert.
        let mut expected = self.lock();
        let (ns, name) = slice.split_once('/').unwrap_or(("", &slice));
        let seen = store.get(&ObjectRef::new(name).within(ns));
        if met(&expect, seen.as_deref()) {
            expected.remove(&slice);
        } else {
            expected.insert(slice, (service.to_string(), expect));
        }
    }

    /// Records a create or update the server acknowledged with `written`.
    pub fn written(&self, service: &str, written: &EndpointSlice, store: &Store<EndpointSlice>) {
        if let Some(v) = version(written) {
            self.expect(service, key_of(written), Expect::AtLeast(v), store);
        }
    }

    /// Records a delete the server acknowledged.
    pub fn deleted(&self, service: &str, slice: &EndpointSlice, store: &Store<EndpointSlice>) {
        self.expect(service, key_of(slice), Expect::Gone, store);
    }

    /// Feeds the informer's changes (called after the store has applied them).
    pub fn observe(&self, change: Change, slice: &EndpointSlice) {
        let key = key_of(slice);
        let mut expected = self.lock();
        let done = match expected.get(&key) {
            None => false,
            Some((_, expect)) => {
                change == Change::Deleted || (met(expect, Some(slice)) && *expect != Expect::Gone)
            }
        };
        if done {
            expected.remove(&key);
        }
    }

    /// Whether the cache still lacks some of this Service's writes.
    pub fn stale(&self, service: &str) -> bool {
        self.lock().values().any(|(s, _)| s == service)
    }

    /// Drops what is expected for a Service that is gone.
    pub fn forget(&self, service: &str) {
        self.lock().retain(|_, (s, _)| s != service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    fn slice(name: &str, rv: &str) -> EndpointSlice {
        let mut s = EndpointSlice::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.resource_version = Some(rv.into());
        s
    }

    #[test]
    fn waits_until_the_cache_shows_the_write() {
        let (reader, mut writer) = store::<EndpointSlice>();
        let t = Tracker::default();
        t.written("ns/web", &slice("web-1", "10"), &reader);
        assert!(t.stale("ns/web") && !t.stale("ns/db"));
        let older = slice("web-1", "9");
        writer.apply_watcher_event(&Event::Apply(older.clone()));
        t.observe(Change::Added, &older);
        assert!(t.stale("ns/web"));
        let seen = slice("web-1", "10");
        writer.apply_watcher_event(&Event::Apply(seen.clone()));
        t.observe(Change::Modified, &seen);
        assert!(!t.stale("ns/web"));

        // Already in the cache when recorded: nothing to wait for.
        t.written("ns/web", &seen, &reader);
        assert!(!t.stale("ns/web"));

        t.deleted("ns/web", &seen, &reader);
        assert!(t.stale("ns/web"));
        writer.apply_watcher_event(&Event::Delete(seen.clone()));
        t.observe(Change::Deleted, &seen);
        assert!(!t.stale("ns/web"));

        t.written("ns/web", &slice("web-2", "20"), &reader);
        t.forget("ns/web");
        assert!(!t.stale("ns/web"));
    }
}
