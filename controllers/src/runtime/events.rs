//! core/v1 Events from controllers, as client-go's `record` package writes them: what
//! `kubectl describe` lists under "Events:".
//!
//! A [`Recorder`] never blocks or fails its caller: it hands the Event to a writer task over a
//! bounded queue and drops it (logged at debug) when the queue is full or the write fails — an
//! Event is a hint for humans, never state. The writer aggregates repeats as client-go's
//! `EventCorrelator` does: the same (object, type, reason, message) again within
//! [`AGGREGATION_WINDOW`] bumps `count` and `lastTimestamp` of the Event already written (a
//! PATCH) instead of creating another.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::mpsc;

use crate::apierrors::{is_gone_or_conflict, is_namespace_terminating};

/// Events waiting to be written; more are dropped (client-go's `maxQueuedEvents`).
pub const QUEUE_CAPACITY: usize = 1000;
/// Distinct events remembered for aggregation (client-go's `maxLruCacheEntries`).
pub const CACHE_SIZE: usize = 4096;
/// A repeat within this long of the previous one updates its Event; a later one starts a new
/// Event (client-go's aggregation interval).
pub const AGGREGATION_WINDOW: Duration = Duration::from_secs(600);

/// The reasons Kubernetes' `PodControl` records on a pod's owner.
pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
pub const FAILED_CREATE: &str = "FailedCreate";
pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
pub const FAILED_DELETE: &str = "FailedDelete";

/// An Event's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The reference an Event about `obj` carries: apiVersion, kind, namespace, name, uid and
/// resourceVersion.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// What Go's `%v` prints for an API error: the Status message alone (kube's `Display` adds
/// the whole response).
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Records Events for one component (`source.component`, `reportingComponent`). Cheap to
/// clone; clones share one writer task, which ends when the last clone is dropped.
#[derive(Clone)]
pub struct Recorder {
    component: Arc<str>,
    instance: Option<Arc<str>>,
    queue: mpsc::Sender<Event>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder writing through `client` as `component` (e.g. "deployment-controller"). Starts
    /// its writer on the current tokio runtime; outside one, every Event is dropped.
    pub fn new(client: Client, component: &str) -> Self {
        let (queue, events) = mpsc::channel(QUEUE_CAPACITY);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(write_all(client, events));
            }
            Err(_) => tracing::warn!(component, "no tokio runtime: events will not be recorded"),
        }
        Recorder {
            component: component.into(),
            instance: None,
            queue,
        }
    }

    /// Sets `reportingInstance` (e.g. the leader-election identity).
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.into());
        self
    }

    pub fn normal(&self, obj: &ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(obj, EventType::Normal, reason, message.into());
    }

    pub fn warning(&self, obj: &ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(obj, EventType::Warning, reason, message.into());
    }

    /// `SuccessfulCreate` "Created pod: <name>" (Kubernetes' `PodControl`).
    pub fn created_pod(&self, owner: &ObjectReference, pod: &str) {
        self.normal(owner, SUCCESSFUL_CREATE, format!("Created pod: {pod}"));
    }

    /// `FailedCreate` "Error creating: <error>", unless the namespace is going away (as
    /// Kubernetes, which says nothing then).
    pub fn failed_create(&self, owner: &ObjectReference, error: &kube::Error) {
        if !is_namespace_terminating(error) {
            let message = format!("Error creating: {}", error_message(error));
            self.warning(owner, FAILED_CREATE, message);
        }
    }

    /// `SuccessfulDelete` "Deleted pod: <name>".
    pub fn deleted_pod(&self, owner: &ObjectReference, pod: &str) {
        self.normal(owner, SUCCESSFUL_DELETE, format!("Deleted pod: {pod}"));
    }

    /// `FailedDelete` "Error deleting: <error>", unless the pod was already gone (404) or
    /// replaced by another of its name (409 on the UID precondition).
    pub fn failed_delete(&self, owner: &ObjectReference, error: &kube::Error) {
        if !is_gone_or_conflict(error) {
            let message = format!("Error deleting: {}", error_message(error));
            self.warning(owner, FAILED_DELETE, message);
        }
    }

    pub fn record(&self, obj: &ObjectReference, type_: EventType, reason: &str, message: String) {
        let event = new_event(
            obj,
            type_,
            reason,
            message,
            &self.component,
            self.instance.as_deref(),
            Timestamp::now(),
        );
        if let Err(e) = self.queue.try_send(event) {
            let (mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev)) = e;
            tracing::debug!(component = %self.component, reason = ?ev.reason, object = ?ev.involved_object.name, "event dropped: the event queue is full or closed");
        }
    }
}

/// A new Event (count 1) named `<object>.<hex nanoseconds>` as client-go names them; one about
/// a cluster-scoped object lives in "default".
pub fn new_event(
    obj: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: String,
    component: &str,
    instance: Option<&str>,
    now: Timestamp,
) -> Event {
    let namespace = obj
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let object = obj.name.as_deref().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{object}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        involved_object: obj.clone(),
        type_: Some(type_.as_str().into()),
        reason: Some(reason.into()),
        message: Some(message),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        reporting_instance: instance.map(Into::into),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

/// What the writer does with an Event.
#[derive(Debug, PartialEq)]
pub enum Write {
    /// A first occurrence: create it.
    Create(Event),
    /// A repeat: patch the Event of that name to this count and lastTimestamp (or create it,
    /// with this count, if it is gone).
    Update(Event),
}

/// client-go's `getEventKey`: everything that makes two Events "the same" — not the object's
/// resourceVersion, nor the time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    component: Option<String>,
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    field_path: Option<String>,
    type_: Option<String>,
    reason: Option<String>,
    message: Option<String>,
}

impl Key {
    fn of(event: &Event) -> Key {
        let o = &event.involved_object;
        Key {
            component: event.source.as_ref().and_then(|s| s.component.clone()),
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
            field_path: o.field_path.clone(),
            type_: event.type_.clone(),
            reason: event.reason.clone(),
            message: event.message.clone(),
        }
    }
}

struct Seen {
    name: Option<String>,
    first: Option<Time>,
    count: i32,
    last: Instant,
    /// Position in the recency order.
    tick: u64,
}

/// Recent Events by [`Key`], bounded: past `capacity`, the least recently seen is forgotten.
pub struct Correlator {
    seen: HashMap<Key, Seen>,
    recency: BTreeMap<u64, Key>,
    tick: u64,
    capacity: usize,
    window: Duration,
}

impl Correlator {
    pub fn new(capacity: usize, window: Duration) -> Self {
        Correlator {
            seen: HashMap::new(),
            recency: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(1),
            window,
        }
    }

    /// Decides how to write `event`, seen at `now`, and remembers it.
    pub fn observe(&mut self, mut event: Event, now: Instant) -> Write {
        let key = Key::of(&event);
        self.tick += 1;
        let tick = self.tick;
        if let Some(seen) = self.seen.get_mut(&key) {
            self.recency.remove(&seen.tick);
            self.recency.insert(tick, key);
            seen.tick = tick;
            if now.saturating_duration_since(seen.last) <= self.window {
                seen.count += 1;
                seen.last = now;
                event.metadata.name = seen.name.clone();
                event.first_timestamp = seen.first.clone();
                event.count = Some(seen.count);
                return Write::Update(event);
            }
            *seen = Seen {
                name: event.metadata.name.clone(),
                first: event.first_timestamp.clone(),
                count: 1,
                last: now,
                tick,
            };
            return Write::Create(event);
        }
        self.recency.insert(tick, key.clone());
        self.seen.insert(
            key,
            Seen {
                name: event.metadata.name.clone(),
                first: event.first_timestamp.clone(),
                count: event.count.unwrap_or(1),
                last: now,
                tick,
            },
        );
        while self.seen.len() > self.capacity {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            self.seen.remove(&oldest);
        }
        Write::Create(event)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The writer: one Event at a time, so a repeat's PATCH follows its CREATE.
async fn write_all(client: Client, mut events: mpsc::Receiver<Event>) {
    let mut correlator = Correlator::new(CACHE_SIZE, AGGREGATION_WINDOW);
    while let Some(event) = events.recv().await {
        let write = correlator.observe(event, Instant::now());
        if let Err(e) = write_one(&client, write).await {
            tracing::debug!(error = %e, "recording an event failed");
        }
    }
}

async fn write_one(client: &Client, write: Write) -> Result<(), kube::Error> {
    let (Write::Create(event) | Write::Update(event)) = &write;
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let api = Api::<Event>::namespaced(client.clone(), namespace);
    if let Write::Update(event) = &write {
        let name = event.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({
            "count": event.count,
            "lastTimestamp": event.last_timestamp,
            "message": event.message,
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            // Deleted meanwhile (events expire): write it anew, count and all.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            other => return other.map(drop),
        }
    }
    api.create(&PostParams::default(), event).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str, rv: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            resource_version: Some(rv.into()),
            field_path: None,
        }
    }

    fn event(obj: &ObjectReference, reason: &str, message: &str, at: i64) -> Event {
        new_event(
            obj,
            EventType::Warning,
            reason,
            message.into(),
            "test-controller",
            None,
            Timestamp::from_second(at).unwrap(),
        )
    }

    fn created(w: Write) -> Event {
        match w {
            Write::Create(e) => e,
            Write::Update(e) => panic!("expected a create, got an update of {e:?}"),
        }
    }

    fn updated(w: Write) -> Event {
        match w {
            Write::Update(e) => e,
            Write::Create(e) => panic!("expected an update, got a create of {e:?}"),
        }
    }

    #[test]
    fn events_are_named_and_filled_as_client_go_writes_them() {
        let at = Timestamp::from_second(1_700_000_000).unwrap();
        let e = new_event(
            &pod("web-1", "u1", "7"),
            EventType::Normal,
            "SuccessfulCreate",
            "Created pod: web-1".into(),
            "replicaset-controller",
            Some("host_1"),
            at,
        );
        assert_eq!(
            e.metadata.name.as_deref(),
            Some(format!("web-1.{:x}", at.as_nanosecond()).as_str())
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.count, Some(1));
        assert_eq!(e.first_timestamp, e.last_timestamp);
        let source = e.source.unwrap();
        assert_eq!(source.component.as_deref(), Some("replicaset-controller"));
        assert_eq!(
            e.reporting_component.as_deref(),
            Some("replicaset-controller")
        );
        assert_eq!(e.reporting_instance.as_deref(), Some("host_1"));

        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("n1".into()),
            ..ObjectReference::default()
        };
        let e = new_event(&node, EventType::Normal, "R", "m".into(), "c", None, at);
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn repeats_update_the_first_event() {
        let mut c = Correlator::new(10, Duration::from_secs(600));
        let t0 = Instant::now();
        let first = created(c.observe(event(&pod("p", "u", "1"), "R", "m", 100), t0));
        // A newer resourceVersion of the same object is the same object.
        let again = event(&pod("p", "u", "2"), "R", "m", 160);
        let second = updated(c.observe(again, t0 + Duration::from_secs(60)));
        assert_eq!(second.metadata.name, first.metadata.name);
        assert_eq!(second.count, Some(2));
        assert_eq!(second.first_timestamp, first.first_timestamp);
        assert_eq!(
            second.last_timestamp,
            Some(Time(Timestamp::from_second(160).unwrap()))
        );
        let third = updated(c.observe(
            event(&pod("p", "u", "3"), "R", "m", 170),
            t0 + Duration::from_secs(70),
        ));
        assert_eq!(third.count, Some(3));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn anything_else_different_is_another_event() {
        let mut c = Correlator::new(10, Duration::from_secs(600));
        let t0 = Instant::now();
        created(c.observe(event(&pod("p", "u", "1"), "R", "m", 1), t0));
        created(c.observe(event(&pod("p", "u", "1"), "R", "other", 1), t0));
        created(c.observe(event(&pod("p", "u", "1"), "Other", "m", 1), t0));
        created(c.observe(event(&pod("q", "u", "1"), "R", "m", 1), t0));
        // A re-created object of the same name has another UID.
        created(c.observe(event(&pod("p", "u2", "1"), "R", "m", 1), t0));
        let mut normal = event(&pod("p", "u", "1"), "R", "m", 1);
        normal.type_ = Some("Normal".into());
        created(c.observe(normal, t0));
        let mut elsewhere = event(&pod("p", "u", "1"), "R", "m", 1);
        elsewhere.source = Some(EventSource {
            component: Some("other-controller".into()),
            host: None,
        });
        created(c.observe(elsewhere, t0));
        assert_eq!(c.len(), 7);
    }

    #[test]
    fn a_repeat_after_the_window_starts_a_new_event() {
        let window = Duration::from_secs(600);
        let mut c = Correlator::new(10, window);
        let t0 = Instant::now();
        let first = created(c.observe(event(&pod("p", "u", "1"), "R", "m", 1), t0));
        let late = t0 + window + Duration::from_secs(1);
        let fresh = created(c.observe(event(&pod("p", "u", "1"), "R", "m", 700), late));
        assert_ne!(fresh.metadata.name, first.metadata.name);
        assert_eq!(fresh.count, Some(1));
        // And repeats now count from the fresh one.
        let next = updated(c.observe(event(&pod("p", "u", "1"), "R", "m", 701), late));
        assert_eq!(next.metadata.name, fresh.metadata.name);
        assert_eq!(next.count, Some(2));
    }

    #[test]
    fn the_least_recently_seen_is_forgotten_past_capacity() {
        let mut c = Correlator::new(2, Duration::from_secs(600));
        let t0 = Instant::now();
        let a = || event(&pod("a", "ua", "1"), "R", "m", 1);
        let b = || event(&pod("b", "ub", "1"), "R", "m", 1);
        let d = || event(&pod("d", "ud", "1"), "R", "m", 1);
        created(c.observe(a(), t0));
        created(c.observe(b(), t0));
        // Touching a makes b the oldest.
        updated(c.observe(a(), t0));
        created(c.observe(d(), t0));
        assert_eq!(c.len(), 2);
        updated(c.observe(a(), t0));
        updated(c.observe(d(), t0));
        // b was forgotten: it starts over.
        assert_eq!(created(c.observe(b(), t0)).count, Some(1));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn api_errors_print_as_their_status_message() {
        let mut status =
            kube::core::Status::failure("pods \"x\" is forbidden: exceeded quota", "Forbidden");
        status.code = 403;
        let e = kube::Error::Api(Box::new(status));
        assert_eq!(error_message(&e), "pods \"x\" is forbidden: exceeded quota");
    }
}
