//! The machinery every controller shares: informers (watch + store), rate-limited work queues,
//! the `Reconciler` shape, and a runner that drives many controllers on one tokio runtime.

pub mod events;
mod expectations;
mod informer;
mod queue;
mod ratelimit;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

pub use events::{reference, EventType, Recorder};
pub use expectations::{Expectations, EXPECTATIONS_TTL};
pub use informer::{key_of, Change, Informer, NotSynced, Synced};
pub use queue::WorkQueue;
pub use ratelimit::{RateLimit, RateLimiter};

/// What a successful reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the key's objects change again.
    Done,
    /// Look again after this long (e.g. waiting on something no watch reports).
    RequeueAfter(Duration),
}

/// One controller: brings the world in line with one key's desired state. Reconciles must be
/// idempotent — a key may be reconciled again at any time, and after a restart.
pub trait Reconciler: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Names the controller in logs.
    fn name(&self) -> &'static str;

    /// Runs once before the workers start: waits for the informers' first lists and rebuilds
    /// whatever in-memory state the controller derives from them. An error stops the controller.
    fn prepare(&self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    fn reconcile(&self, key: &str) -> impl Future<Output = Result<Action, Self::Error>> + Send;
}

/// Informers and controllers to run together until shutdown.
#[derive(Default)]
pub struct Runner {
    informers: Vec<BoxFuture<'static, ()>>,
    controllers: Vec<BoxFuture<'static, ()>>,
    queues: Vec<WorkQueue<String>>,
}

impl Runner {
    pub fn new() -> Self {
        Runner::default()
    }

    pub fn informer<K>(&mut self, informer: Informer<K>)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        self.informers.push(informer.run().boxed());
    }

    /// Runs `reconciler` with `workers` workers on `queue` (which its informers feed).
    pub fn controller<R: Reconciler>(
        &mut self,
        reconciler: R,
        queue: WorkQueue<String>,
        workers: usize,
    ) {
        self.queues.push(queue.clone());
        let reconciler = Arc::new(reconciler);
        self.controllers.push(
            async move {
                if let Err(e) = reconciler.prepare().await {
                    // Stopped before the first lists completed: not a failure.
                    if queue.is_shut_down() {
                        return;
                    }
                    tracing::error!(controller = reconciler.name(), error = %e, "controller did not start");
                    return;
                }
                tracing::debug!(controller = reconciler.name(), workers, "controller started");
                let workers = (0..workers.max(1))
                    .map(|_| tokio::spawn(work(reconciler.clone(), queue.clone())));
                for w in futures::future::join_all(workers).await {
                    if let Err(e) = w {
                        tracing::error!(controller = reconciler.name(), error = %e, "worker panicked");
                    }
                }
            }
            .boxed(),
        );
    }

    /// Runs everything until `shutdown` completes, then stops: the watches end, the queues
    /// close, and each worker finishes the key it holds.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let informers: Vec<_> = self.informers.into_iter().map(tokio::spawn).collect();
        let controllers: Vec<_> = self.controllers.into_iter().map(tokio::spawn).collect();
        shutdown.await;
        for q in &self.queues {
            q.shut_down();
        }
        // Dropping the watches drops their readiness signals, which releases a `prepare` still
        // waiting for a first list (the queues are closed first, so that is not an error).
        for i in &informers {
            i.abort();
        }
        for c in controllers {
            let _ = c.await;
        }
        for i in informers {
            let _ = i.await;
        }
    }
}

async fn work<R: Reconciler>(reconciler: Arc<R>, queue: WorkQueue<String>) {
    while let Some(key) = queue.get().await {
        tracing::trace!(controller = reconciler.name(), key = %key, "reconciling");
        match reconciler.reconcile(&key).await {
            Ok(Action::Done) => queue.forget(&key),
            Ok(Action::RequeueAfter(after)) => {
                queue.forget(&key);
                queue.add_after(key.clone(), after);
            }
            Err(e) => {
                tracing::warn!(
                    controller = reconciler.name(),
                    key = %key,
                    failures = queue.failures(&key) + 1,
                    error = %e,
                    "reconcile failed; retrying with back-off"
                );
                queue.add_rate_limited(key.clone());
            }
        }
        queue.done(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails each key a set number of times, then succeeds; records every call.
    struct Flaky {
        fail_first: u32,
        calls: Arc<Mutex<Vec<String>>>,
        finished: tokio::sync::mpsc::UnboundedSender<String>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("flaky failure")]
    struct FlakyError;

    impl Reconciler for Flaky {
        type Error = FlakyError;
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn reconcile(&self, key: &str) -> Result<Action, FlakyError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(key.to_string());
            let n = calls.iter().filter(|k| *k == key).count() as u32;
            if n <= self.fail_first {
                return Err(FlakyError);
            }
            let _ = self.finished.send(key.to_string());
            Ok(Action::Done)
        }
    }

    #[tokio::test]
    async fn failed_keys_are_retried_until_they_succeed_then_the_runner_stops() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (finished, mut done) = tokio::sync::mpsc::unbounded_channel();
        let queue = WorkQueue::new(RateLimit::default());
        let mut runner = Runner::new();
        runner.controller(
            Flaky {
                fail_first: 3,
                calls: calls.clone(),
                finished,
            },
            queue.clone(),
            2,
        );
        queue.add("a".to_string());
        queue.add("b".to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        let mut finished = vec![
            done.recv().await.expect("a key finished"),
            done.recv().await.expect("a key finished"),
        ];
        finished.sort();
        assert_eq!(finished, ["a", "b"]);
        // Three failures and a success each; back-off was reset by the success.
        assert_eq!(calls.lock().unwrap().len(), 8);
        assert_eq!(queue.failures(&"a".to_string()), 0);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the runner stops within 5 s")
            .unwrap();
    }
}
