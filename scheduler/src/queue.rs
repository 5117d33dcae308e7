//! The scheduling queue, kube-scheduler's three queues in one structure: `active` (pods ready
//! for a cycle, highest priority then oldest first), `backoff` (pods that failed, until their
//! per-pod exponential back-off expires) and `unschedulable` (pods no node fits, until a cluster
//! event may have changed that, or they have waited the longest allowed). Time is passed in, so
//! the queue is pure and its tests need no clock.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::k8s_openapi::api::core::v1 as core;

/// Back-off and unschedulable limits; the defaults are kube-scheduler's (`podInitialBackoffSeconds`
/// 1, `podMaxBackoffSeconds` 10) with the unschedulable wait the brief sets (60 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest a pod stays in the unschedulable queue without a cluster event.
    pub max_unschedulable: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(60),
        }
    }
}

/// Why a popped pod comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No node fits: wait for a cluster event.
    Unschedulable,
    /// Anything else (bind failed, pod unparsable): retry after the back-off.
    Error,
}

/// Active-queue order: priority descending, then creation time, then arrival.
type ActiveKey = (Reverse<i32>, i128, u64, String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    Active(ActiveKey),
    Backoff(Instant, u64),
    Unschedulable(Instant, u64),
    /// Popped and not yet finished or failed.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    /// Shared with the cycle and the bind that use it, so a pop copies nothing.
    pod: Arc<core::Pod>,
    attempts: u32,
    last_failure: Option<Instant>,
    place: Place,
    /// The unschedulable message last written to the pod (status and Event).
    reported: Option<String>,
}

/// A popped pod.
#[derive(Clone, Debug)]
pub struct Popped {
    pub key: String,
    pub pod: Arc<core::Pod>,
    /// Cycles this pod has had, this one included.
    pub attempts: u32,
}

/// The three queues; keys are `namespace/name`.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    config: QueueConfig,
    entries: HashMap<String, Entry>,
    active: BTreeSet<ActiveKey>,
    backoff: BTreeSet<(Instant, u64, String)>,
    unschedulable: BTreeSet<(Instant, u64, String)>,
    seq: u64,
}

/// `namespace/name` of a pod.
pub fn pod_key(pod: &core::Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn active_key(pod: &core::Pod, seq: u64, key: &str) -> ActiveKey {
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond())
        .unwrap_or(0);
    (Reverse(priority), created, seq, key.to_string())
}

impl SchedulingQueue {
    pub fn new(config: QueueConfig) -> SchedulingQueue {
        SchedulingQueue {
            config,
            ..SchedulingQueue::default()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Every queued pod's key.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// Sizes of the active, back-off and unschedulable queues.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.active.len(),
            self.backoff.len(),
            self.unschedulable.len(),
        )
    }

    /// kube-scheduler's back-off: `initial · 2^(attempts−1)`, at most `max`.
    pub fn backoff_for(&self, attempts: u32) -> Duration {
        let mut d = self.config.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d >= self.config.max_backoff {
                return self.config.max_backoff;
            }
        }
        d.min(self.config.max_backoff)
    }

    /// Adds a pod waiting for a node, or refreshes the stored copy of one already queued. A
    /// queued unschedulable pod whose spec or labels changed may fit now, so it moves on (to
    /// back-off if it is still backing off); other updates (e.g. the status this scheduler
    /// wrote) leave it where it is.
    pub fn add(&mut self, pod: core::Pod, now: Instant) {
        let key = pod_key(&pod);
        let Some(entry) = self.entries.get_mut(&key) else {
            let seq = self.next_seq();
            let ak = active_key(&pod, seq, &key);
            self.active.insert(ak.clone());
            self.entries.insert(
                key,
                Entry {
                    pod: Arc::new(pod),
                    attempts: 0,
                    last_failure: None,
                    place: Place::Active(ak),
                    reported: None,
                },
            );
            return;
        };
        let changed =
            entry.pod.spec != pod.spec || entry.pod.metadata.labels != pod.metadata.labels;
        entry.pod = Arc::new(pod);
        if changed && matches!(entry.place, Place::Unschedulable(..)) {
            self.requeue(&key, now);
        }
    }

    /// Forgets a pod (deleted, bound, or no longer this scheduler's).
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.unlink(key, &entry.place);
        true
    }

    /// Takes the first active pod (after moving every pod whose back-off has expired).
    pub fn pop(&mut self, now: Instant) -> Option<Popped> {
        self.flush_backoff(now);
        let ak = self.active.pop_first()?;
        let key = ak.3;
        let entry = self.entries.get_mut(&key)?;
        entry.place = Place::InFlight;
        entry.attempts += 1;
        Some(Popped {
            key,
            pod: Arc::clone(&entry.pod),
            attempts: entry.attempts,
        })
    }

    /// A popped pod was placed (assumed and bound): it leaves the queue.
    pub fn finish(&mut self, key: &str) {
        if matches!(
            self.entries.get(key).map(|e| &e.place),
            Some(Place::InFlight)
        ) {
            self.entries.remove(key);
        }
    }

    /// Puts a pod back after a failed cycle or bind. A pod deleted meanwhile stays gone.
    pub fn fail(&mut self, key: &str, failure: Failure, now: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.place != Place::InFlight {
            return;
        }
        entry.last_failure = Some(now);
        match failure {
            Failure::Unschedulable => {
                self.seq += 1;
                let seq = self.seq;
                if let Some(entry) = self.entries.get_mut(key) {
                    entry.place = Place::Unschedulable(now, seq);
                }
                self.unschedulable.insert((now, seq, key.to_string()));
            }
            Failure::Error => self.move_to_backoff(key),
        }
    }

    /// A cluster event may let unschedulable pods fit: all of them move on.
    pub fn move_all_unschedulable(&mut self, now: Instant) -> usize {
        let keys: Vec<String> = std::mem::take(&mut self.unschedulable)
            .into_iter()
            .map(|(_, _, k)| k)
            .collect();
        for key in &keys {
            if let Some(e) = self.entries.get_mut(key) {
                e.place = Place::InFlight;
            }
            self.requeue(key, now);
        }
        keys.len()
    }

    /// Moves back-off pods whose time has come, and unschedulable pods that waited too long.
    pub fn tick(&mut self, now: Instant) {
        self.flush_backoff(now);
        while let Some((since, _, _)) = self.unschedulable.first() {
            if *since + self.config.max_unschedulable > now {
                break;
            }
            let Some((_, _, key)) = self.unschedulable.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&key) {
                e.place = Place::InFlight;
            }
            self.requeue(&key, now);
        }
    }

    /// When [`SchedulingQueue::tick`] next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        let backoff = self.backoff.first().map(|(t, _, _)| *t);
        let unsched = self
            .unschedulable
            .first()
            .map(|(t, _, _)| *t + self.config.max_unschedulable);
        match (backoff, unsched) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The message last reported for a pod.
    pub fn reported(&self, key: &str) -> Option<&str> {
        self.entries.get(key)?.reported.as_deref()
    }

    /// Records `message` as reported; false when it was already (nothing to write).
    pub fn set_reported(&mut self, key: &str, message: &str) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        if entry.reported.as_deref() == Some(message) {
            return false;
        }
        entry.reported = Some(message.to_string());
        true
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn unlink(&mut self, key: &str, place: &Place) {
        match place {
            Place::Active(ak) => {
                self.active.remove(ak);
            }
            Place::Backoff(t, s) => {
                self.backoff.remove(&(*t, *s, key.to_string()));
            }
            Place::Unschedulable(t, s) => {
                self.unschedulable.remove(&(*t, *s, key.to_string()));
            }
            Place::InFlight => {}
        }
    }

    /// Moves a pod to back-off if it is still backing off, else to active.
    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let place = entry.place.clone();
        let until = entry
            .last_failure
            .map(|t| t + self.backoff_for(entry.attempts));
        self.unlink(key, &place);
        match until {
            Some(t) if t > now => self.move_to_backoff(key),
            _ => self.move_to_active(key),
        }
    }

    fn move_to_backoff(&mut self, key: &str) {
        let seq = self.next_seq();
        let Some(attempts) = self.entries.get(key).map(|e| e.attempts) else {
            return;
        };
        let backoff = self.backoff_for(attempts);
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let until = entry.last_failure.unwrap_or_else(Instant::now) + backoff;
        entry.place = Place::Backoff(until, seq);
        self.backoff.insert((until, seq, key.to_string()));
    }

    fn move_to_active(&mut self, key: &str) {
        let seq = self.next_seq();
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let ak = active_key(&entry.pod, seq, key);
        entry.place = Place::Active(ak.clone());
        self.active.insert(ak);
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some((t, _, _)) = self.backoff.first() {
            if *t > now {
                break;
            }
            let Some((_, _, key)) = self.backoff.pop_first() else {
                break;
            };
            self.move_to_active(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32, created: &str) -> core::Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": name, "creationTimestamp": created},
            "spec": {"priority": priority, "containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap()
    }

    fn pop_names(q: &mut SchedulingQueue, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| q.pop(now).map(|p| p.key)).collect()
    }

    #[test]
    fn active_orders_by_priority_then_creation() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new(QueueConfig::default());
        q.add(pod("late-low", 0, "2024-01-01T00:00:05Z"), now);
        q.add(pod("early-low", 0, "2024-01-01T00:00:01Z"), now);
        q.add(pod("high", 100, "2024-01-01T00:00:09Z"), now);
        q.add(pod("negative", -5, "2024-01-01T00:00:00Z"), now);
        assert_eq!(
            pop_names(&mut q, now),
            ["ns/high", "ns/early-low", "ns/late-low", "ns/negative"]
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_to_ten() {
        let q = SchedulingQueue::new(QueueConfig::default());
        let secs: Vec<u64> = (1..=6).map(|a| q.backoff_for(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn failed_pod_waits_its_backoff() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(QueueConfig::default());
        q.add(pod("a", 0, "2024-01-01T00:00:00Z"), t0);
        let p = q.pop(t0).unwrap();
        assert_eq!(p.attempts, 1);
        q.fail(&p.key, Failure::Error, t0);
        assert_eq!(q.sizes(), (0, 1, 0));
        assert_eq!(q.next_wake(), Some(t0 + Duration::from_secs(1)));
        assert!(q.pop(t0 + Duration::from_millis(999)).is_none());
        let p = q.pop(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(p.attempts, 2);
        let t1 = t0 + Duration::from_secs(1);
        q.fail(&p.key, Failure::Error, t1);
        assert_eq!(q.next_wake(), Some(t1 + Duration::from_secs(2)));
    }

    #[test]
    fn unschedulable_waits_for_an_event_or_the_maximum() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(QueueConfig::default());
        q.add(pod("a", 0, "2024-01-01T00:00:00Z"), t0);
        let p = q.pop(t0).unwrap();
        q.fail(&p.key, Failure::Unschedulable, t0);
        assert_eq!(q.sizes(), (0, 0, 1));
        assert_eq!(q.next_wake(), Some(t0 + Duration::from_secs(60)));
        // An event within the back-off sends it to back-off, after it to active.
        assert_eq!(q.move_all_unschedulable(t0), 1);
        assert_eq!(q.sizes(), (0, 1, 0));
        let p = q.pop(t0 + Duration::from_secs(1)).unwrap();
        q.fail(&p.key, Failure::Unschedulable, t0 + Duration::from_secs(1));
        q.tick(t0 + Duration::from_secs(60));
        assert_eq!(q.sizes(), (0, 0, 1));
        q.tick(t0 + Duration::from_secs(61));
        assert_eq!(q.sizes(), (1, 0, 0));
    }

    #[test]
    fn status_update_keeps_pod_unschedulable_but_spec_change_moves_it() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(30);
        let mut q = SchedulingQueue::new(QueueConfig::default());
        let mut p0 = pod("a", 0, "2024-01-01T00:00:00Z");
        q.add(p0.clone(), t0);
        let p = q.pop(t0).unwrap();
        q.fail(&p.key, Failure::Unschedulable, t0);
        p0.status = Some(core::PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        q.add(p0.clone(), later);
        assert_eq!(q.sizes(), (0, 0, 1));
        p0.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        q.add(p0, later);
        assert_eq!(q.sizes(), (1, 0, 0));
    }

    #[test]
    fn deleted_while_in_flight_stays_gone() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(QueueConfig::default());
        q.add(pod("a", 0, "2024-01-01T00:00:00Z"), t0);
        let p = q.pop(t0).unwrap();
        assert!(q.remove(&p.key));
        q.fail(&p.key, Failure::Error, t0);
        assert!(q.is_empty());
        assert_eq!(q.sizes(), (0, 0, 0));
    }

    #[test]
    fn reported_message_is_written_once() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new(QueueConfig::default());
        q.add(pod("a", 0, "2024-01-01T00:00:00Z"), t0);
        assert!(q.set_reported("ns/a", "0/1 nodes are available: 1 Insufficient cpu."));
        assert!(!q.set_reported("ns/a", "0/1 nodes are available: 1 Insufficient cpu."));
        assert!(q.set_reported("ns/a", "0/2 nodes are available: 2 Insufficient cpu."));
        assert_eq!(
            q.reported("ns/a"),
            Some("0/2 nodes are available: 2 Insufficient cpu.")
        );
    }
}
