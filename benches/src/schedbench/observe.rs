//! Watching binds land: one watch on the benchmark namespace's pods that have a node
//! (`spec.nodeName!=`), so each pod arrives once, when its binding is persisted. Existing pods
//! are counted; measured pods get their create→bound latency from the instant their create
//! was sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;

use crate::apiserver::Latencies;

use super::{SchedBenchError, EXISTING_PREFIX, MEASURED_PREFIX};

/// When each measured pod's create was sent: nanoseconds since `origin`, plus one (0: not
/// yet sent).
pub(super) struct SendTimes {
    pub origin: Instant,
    sent: Vec<AtomicU64>,
}

impl SendTimes {
    pub fn new(pods: usize) -> SendTimes {
        SendTimes {
            origin: Instant::now(),
            sent: (0..pods).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn mark(&self, index: usize) {
        let nanos = self.origin.elapsed().as_nanos() as u64 + 1;
        if let Some(slot) = self.sent.get(index) {
            slot.store(nanos, Ordering::Relaxed);
        }
    }

    fn sent_at(&self, index: usize) -> Option<Instant> {
        let nanos = self.sent.get(index)?.load(Ordering::Relaxed);
        (nanos != 0).then(|| self.origin + Duration::from_nanos(nanos - 1))
    }

    /// The earliest send.
    pub fn first(&self) -> Option<Instant> {
        let min = self
            .sent
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&n| n != 0)
            .min()?;
        Some(self.origin + Duration::from_nanos(min - 1))
    }
}

/// What the observer saw once every measured pod was bound.
pub(super) struct Observed {
    pub latencies: Latencies,
    pub last_bound: Instant,
    pub binds: u64,
}

/// Progress the driver waits on: bound existing pods, bound measured pods.
pub(super) type Progress = watch::Receiver<(usize, usize)>;

fn index_of(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// The pods' resourceVersion to watch from: the namespace is empty, so nothing is missed.
pub(super) async fn start_revision(api: &Api<Pod>) -> Result<String, SchedBenchError> {
    let list = api
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|source| SchedBenchError::Api {
            op: "listing pods",
            source,
        })?;
    Ok(list.metadata.resource_version.unwrap_or_default())
}

/// Runs until all `existing` and `measured` pods are seen bound; reports progress on
/// `progress`. A watch that ends early is resumed from the last revision it delivered.
pub(super) async fn observe(
    api: Api<Pod>,
    mut revision: String,
    existing: usize,
    measured: usize,
    sent: Arc<SendTimes>,
    progress: watch::Sender<(usize, usize)>,
) -> Result<Observed, SchedBenchError> {
    let mut seen_existing = vec![false; existing];
    let mut seen_measured = vec![false; measured];
    let (mut existing_bound, mut measured_bound) = (0, 0);
    let mut latencies = Latencies::default();
    let mut last_bound = Instant::now();
    let params = WatchParams::default().fields("spec.nodeName!=");
    while measured_bound < measured || existing_bound < existing {
        let stream =
            api.watch(&params, &revision)
                .await
                .map_err(|source| SchedBenchError::Api {
                    op: "watching pods",
                    source,
                })?;
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let event = event.map_err(|source| SchedBenchError::Api {
                op: "watching pods",
                source,
            })?;
            let pod = match event {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => pod,
                WatchEvent::Bookmark(b) => {
                    revision = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Deleted(_) => continue,
                WatchEvent::Error(e) => {
                    return Err(SchedBenchError::Unexpected(format!(
                        "the pod watch failed: {} ({})",
                        e.message, e.code
                    )))
                }
            };
            let now = Instant::now();
            if let Some(rv) = pod.metadata.resource_version {
                revision = rv;
            }
            let name = pod.metadata.name.as_deref().unwrap_or("");
            if let Some(i) = index_of(name, MEASURED_PREFIX).filter(|&i| i < measured) {
                if !std::mem::replace(&mut seen_measured[i], true) {
                    measured_bound += 1;
                    last_bound = now;
                    let from = sent.sent_at(i).unwrap_or(now);
                    latencies.record(now.saturating_duration_since(from));
                }
            } else if let Some(i) = index_of(name, EXISTING_PREFIX).filter(|&i| i < existing) {
                if !std::mem::replace(&mut seen_existing[i], true) {
                    existing_bound += 1;
                }
            } else {
                continue;
            }
            let _ = progress.send((existing_bound, measured_bound));
            if measured_bound == measured && existing_bound == existing {
                break;
            }
        }
    }
    Ok(Observed {
        latencies,
        last_bound,
        binds: measured_bound as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_indexes() {
        assert_eq!(index_of("pod-17", MEASURED_PREFIX), Some(17));
        assert_eq!(index_of("init-3", EXISTING_PREFIX), Some(3));
        assert_eq!(index_of("pod-x", MEASURED_PREFIX), None);
        assert_eq!(index_of("init-3", MEASURED_PREFIX), None);
    }

    #[test]
    fn send_times_are_relative_to_the_origin() {
        let t = SendTimes::new(3);
        assert!(t.first().is_none() && t.sent_at(1).is_none());
        t.mark(1);
        t.mark(2);
        let (a, b) = (t.sent_at(1).unwrap(), t.sent_at(2).unwrap());
        assert!(a <= b && t.first() == Some(a) && a >= t.origin);
        t.mark(9); // out of range: ignored
    }
}
