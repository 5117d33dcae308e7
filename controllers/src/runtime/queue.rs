//! A rate-limited work queue with client-go's guarantees: a key queued twice is processed once,
//! a key is never handed to two workers at once (a key added while it is being processed is
//! handed out again after `done`), and failed keys come back after a per-key back-off.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::ratelimit::{RateLimit, RateLimiter};

/// A handle on one queue; clones share it.
pub struct WorkQueue<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K> {
    state: Mutex<State<K>>,
    wake: Notify,
}

struct State<K> {
    /// Keys ready for a worker, in arrival order.
    ready: VecDeque<K>,
    /// Keys that need processing (queued, or re-added while being processed).
    dirty: HashSet<K>,
    /// Keys a worker holds between `get` and `done`.
    processing: HashSet<K>,
    /// When each delayed key becomes ready (the earliest asked for wins).
    waiting: HashMap<K, Instant>,
    /// `waiting` ordered by time; entries whose time no longer matches `waiting` are stale.
    timers: BinaryHeap<Reverse<(Instant, K)>>,
    limiter: RateLimiter<K>,
    shut_down: bool,
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    pub fn new(limit: RateLimit) -> Self {
        WorkQueue {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    ready: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    waiting: HashMap::new(),
                    timers: BinaryHeap::new(),
                    limiter: RateLimiter::new(limit),
                    shut_down: false,
                }),
                wake: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<K>> {
        // A panic while holding the lock leaves plain collections behind, still consistent
        // enough to keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `key` unless it is already queued.
    pub fn add(&self, key: K) {
        let mut st = self.state();
        if st.push(key) {
            drop(st);
            self.inner.wake.notify_one();
        }
    }

    /// Queues `key` after `delay`; an earlier pending time for the same key is kept.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut st = self.state();
        if st.shut_down {
            return;
        }
        if st.waiting.get(&key).is_some_and(|t| *t <= at) {
            return;
        }
        st.waiting.insert(key.clone(), at);
        st.timers.push(Reverse((at, key)));
        drop(st);
        // A waiting worker recomputes how long to sleep.
        self.inner.wake.notify_one();
    }

    /// Queues `key` after its back-off: one more failure of it.
    pub fn add_rate_limited(&self, key: K) {
        let delay = self.state().limiter.when(&key, std::time::Instant::now());
        self.add_after(key, delay);
    }

    /// Resets `key`'s back-off (it succeeded).
    pub fn forget(&self, key: &K) {
        self.state().limiter.forget(key);
    }

    /// How many times `key` failed since it was last forgotten.
    pub fn failures(&self, key: &K) -> u32 {
        self.state().limiter.failures(key)
    }

    /// Waits for a key to process, or `None` once the queue is shut down. The caller owns the
    /// key until it calls `done`.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so a wake between the read and the wait is
            // not lost.
            notified.as_mut().enable();
            let next_timer = {
                let mut st = self.state();
                if st.shut_down {
                    return None;
                }
                st.promote_due(Instant::now());
                if let Some(key) = st.ready.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    let more = !st.ready.is_empty();
                    drop(st);
                    if more {
                        self.inner.wake.notify_one();
                    }
                    return Some(key);
                }
                st.timers.peek().map(|Reverse((at, _))| *at)
            };
            match next_timer {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Ends the processing of `key`; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let mut st = self.state();
        st.processing.remove(key);
        if st.dirty.contains(key) && !st.shut_down {
            st.ready.push_back(key.clone());
            drop(st);
            self.inner.wake.notify_one();
        }
    }

    /// Makes every `get` return `None`; later adds are ignored.
    pub fn shut_down(&self) {
        self.state().shut_down = true;
        self.inner.wake.notify_waiters();
    }

    pub fn is_shut_down(&self) -> bool {
        self.state().shut_down
    }

    /// Keys ready for a worker now (not counting delayed or in-process ones).
    pub fn len(&self) -> usize {
        self.state().ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Clone + Eq + Hash + Ord> State<K> {
    /// Marks `key` dirty and queues it unless a worker holds it; false if nothing changed.
    fn push(&mut self, key: K) -> bool {
        if self.shut_down || self.dirty.contains(&key) {
            return false;
        }
        self.dirty.insert(key.clone());
        if self.processing.contains(&key) {
            return false;
        }
        self.ready.push_back(key);
        true
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else {
                break;
            };
            if self.waiting.get(&key) == Some(&at) {
                self.waiting.remove(&key);
                self.push(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<String> {
        WorkQueue::new(RateLimit::default())
    }

    async fn next(q: &WorkQueue<String>) -> String {
        tokio::time::timeout(Duration::from_secs(5), q.get())
            .await
            .expect("a key within 5 s")
            .expect("the queue is running")
    }

    #[tokio::test]
    async fn duplicate_adds_are_processed_once() {
        let q = queue();
        for k in ["a", "b", "a", "a", "c", "b"] {
            q.add(k.to_string());
        }
        assert_eq!(q.len(), 3);
        assert_eq!(next(&q).await, "a");
        assert_eq!(next(&q).await, "b");
        assert_eq!(next(&q).await, "c");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_in_process_is_not_handed_out_again_until_done() {
        let q = queue();
        q.add("a".to_string());
        assert_eq!(next(&q).await, "a");
        // Re-added twice while held: queued once, and only after `done`.
        q.add("a".to_string());
        q.add("a".to_string());
        q.add("b".to_string());
        assert_eq!(q.len(), 1);
        assert_eq!(next(&q).await, "b");
        assert!(q.is_empty());
        q.done(&"a".to_string());
        assert_eq!(q.len(), 1);
        assert_eq!(next(&q).await, "a");
        q.done(&"a".to_string());
        q.done(&"b".to_string());
        assert!(q.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_workers_never_hold_one_key_together() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let q = queue();
        let held = Arc::new(Mutex::new(HashSet::new()));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let processed = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (q, held, overlaps, processed) =
                    (q.clone(), held.clone(), overlaps.clone(), processed.clone());
                tokio::spawn(async move {
                    while let Some(key) = q.get().await {
                        if !held.lock().unwrap().insert(key.clone()) {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        // Re-adding the held key from inside its own processing must not hand
                        // it to another worker.
                        q.add(key.clone());
                        tokio::task::yield_now().await;
                        held.lock().unwrap().remove(&key);
                        processed.fetch_add(1, Ordering::SeqCst);
                        q.done(&key);
                    }
                })
            })
            .collect();
        for round in 0..200 {
            q.add(format!("k{}", round % 3));
            tokio::task::yield_now().await;
        }
        while processed.load(Ordering::SeqCst) < 300 {
            tokio::task::yield_now().await;
        }
        q.shut_down();
        for w in workers {
            w.await.unwrap();
        }
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_idle_workers_pick_up_every_later_add() {
        let q = queue();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let workers: Vec<_> = (0..10)
            .map(|_| {
                let (q, tx) = (q.clone(), tx.clone());
                tokio::spawn(async move {
                    while let Some(key) = q.get().await {
                        tx.send(key.clone()).unwrap();
                        q.done(&key);
                    }
                })
            })
            .collect();
        for i in 0..200 {
            let key = format!("k{}", i % 7);
            q.add(key.clone());
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("add #{i} ({key}) was never processed"));
            assert_eq!(got.as_deref(), Some(key.as_str()));
        }
        q.shut_down();
        for w in workers {
            w.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_waiting_worker_is_woken_by_an_add() {
        let q = queue();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.add("x".to_string());
        let got = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("woken within 5 s")
            .expect("worker task");
        assert_eq!(got.as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn delayed_keys_come_back_after_their_delay() {
        let q = queue();
        let start = Instant::now();
        q.add_after("late".to_string(), Duration::from_millis(300));
        q.add_after("soon".to_string(), Duration::from_millis(20));
        assert!(q.is_empty());
        assert_eq!(next(&q).await, "soon");
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(next(&q).await, "late");
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn rate_limited_keys_back_off_and_forget_resets() {
        let q = queue();
        for _ in 0..3 {
            q.add_rate_limited("k".to_string());
        }
        assert_eq!(q.failures(&"k".to_string()), 3);
        assert_eq!(next(&q).await, "k");
        q.forget(&"k".to_string());
        assert_eq!(q.failures(&"k".to_string()), 0);
    }

    #[tokio::test]
    async fn shut_down_releases_waiting_workers_and_ignores_adds() {
        let q = queue();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        let got = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("released within 5 s")
            .expect("worker task");
        assert_eq!(got, None);
        q.add("a".to_string());
        assert!(q.is_empty());
        assert_eq!(q.get().await, None);
    }
}
