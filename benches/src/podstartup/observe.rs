//! Watches on the benchmark namespace's pods and events, stamping when each pod is first seen
//! bound, with the kubelet's `Pulled` event (its sandbox is up and the image resolved), its
//! `Started` event (the container runs), a status from the kubelet, its container running,
//! Ready, and deleted. The instants are when a watch delivered the change, so they include the
//! API server's fan-out, as a user's `kubectl get -w` would; the kubelet posts events on tasks
//! of their own, so an event may trail the status it precedes by a round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::Notify;

use super::PodStartupError;

/// When the watch first showed each stage of one pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    pub bound: Option<Instant>,
    /// The kubelet's `Pulled` and `Started` events of the pod's container.
    pub pulled: Option<Instant>,
    pub started: Option<Instant>,
    /// The kubelet's first status write (container statuses present).
    pub status: Option<Instant>,
    pub running: Option<Instant>,
    pub ready: Option<Instant>,
    pub gone: Option<Instant>,
}

/// Every pod's timeline, shared by the watch and the driver.
#[derive(Default)]
pub struct Board {
    pods: Mutex<HashMap<String, Timeline>>,
    failed: Mutex<Option<String>>,
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Board {
    pub fn get(&self, name: &str) -> Timeline {
        lock(&self.pods).get(name).copied().unwrap_or_default()
    }

    /// Waits until `done` holds for the timelines, at most `limit`.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&HashMap<String, Timeline>) -> bool,
    ) -> Result<(), PodStartupError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(message) = lock(&self.failed).clone() {
                return Err(PodStartupError::Unexpected(message));
            }
            if done(&lock(&self.pods)) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(PodStartupError::Timeout {
                    what: what.to_string(),
                    limit,
                });
            }
        }
    }

    fn update(&self, pod: &Pod, now: Instant) {
        let Some(name) = pod.metadata.name.clone() else {
            return;
        };
        let mut pods = lock(&self.pods);
        let t = pods.entry(name).or_default();
        let spec_bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let status = pod.status.as_ref();
        let statuses = status.and_then(|s| s.container_statuses.as_deref());
        let has_status = statuses.is_some_and(|c| !c.is_empty());
        let running = statuses.is_some_and(|c| {
            c.iter()
                .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        });
        let ready = status
            .and_then(|s| s.conditions.as_deref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        for (stage, reached) in [
            (&mut t.bound, spec_bound),
            (&mut t.status, has_status),
            (&mut t.running, running),
            (&mut t.ready, ready),
        ] {
            if reached && stage.is_none() {
                *stage = Some(now);
            }
        }
    }

    fn event(&self, event: &Event, now: Instant) {
        let Some(name) = event.involved_object.name.clone() else {
            return;
        };
        let mut pods = lock(&self.pods);
        let t = pods.entry(name).or_default();
        let stage = match event.reason.as_deref() {
            Some("Pulled") => &mut t.pulled,
            Some("Started") => &mut t.started,
            _ => return,
        };
        stage.get_or_insert(now);
    }

    fn remove(&self, pod: &Pod, now: Instant) {
        if let Some(name) = &pod.metadata.name {
            lock(&self.pods).entry(name.clone()).or_default().gone = Some(now);
        }
    }

    fn fail(&self, message: String) {
        *lock(&self.failed) = Some(message);
        self.changed.notify_waiters();
    }
}

/// The current resourceVersion of `api`'s objects, to watch from.
pub async fn start_revision<K>(api: &Api<K>) -> Result<String, PodStartupError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|source| PodStartupError::Api {
            op: "listing the namespace",
            source,
        })?;
    Ok(list.metadata.resource_version.unwrap_or_default())
}

/// Feeds `board` until aborted; a watch that ends is resumed from the last revision seen. A
/// failure is left on the board for the driver.
pub async fn watch(api: Api<Pod>, mut revision: String, board: Arc<Board>) {
    let params = WatchParams::default();
    loop {
        let stream = match api.watch(&params, &revision).await {
            Ok(s) => s,
            Err(e) => return board.fail(format!("watching pods: {e}")),
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            match event {
                Ok(WatchEvent::Added(pod)) | Ok(WatchEvent::Modified(pod)) => {
                    revision = pod.metadata.resource_version.clone().unwrap_or(revision);
                    board.update(&pod, now);
                }
                Ok(WatchEvent::Deleted(pod)) => {
                    revision = pod.metadata.resource_version.clone().unwrap_or(revision);
                    board.remove(&pod, now);
                }
                Ok(WatchEvent::Bookmark(b)) => revision = b.metadata.resource_version,
                Ok(WatchEvent::Error(e)) => {
                    return board.fail(format!("the pod watch failed: {} ({})", e.message, e.code))
                }
                Err(e) => return board.fail(format!("watching pods: {e}")),
            }
            board.changed.notify_waiters();
        }
    }
}

/// Feeds `board` the kubelet's `Pulled` and `Started` events until aborted.
pub async fn watch_events(api: Api<Event>, mut revision: String, board: Arc<Board>) {
    let params = WatchParams::default();
    loop {
        let stream = match api.watch(&params, &revision).await {
            Ok(s) => s,
            Err(e) => return board.fail(format!("watching events: {e}")),
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            match event {
                Ok(WatchEvent::Added(e)) | Ok(WatchEvent::Modified(e)) => {
                    revision = e.metadata.resource_version.clone().unwrap_or(revision);
                    board.event(&e, now);
                }
                Ok(WatchEvent::Deleted(e)) => {
                    revision = e.metadata.resource_version.clone().unwrap_or(revision);
                }
                Ok(WatchEvent::Bookmark(b)) => revision = b.metadata.resource_version,
                Ok(WatchEvent::Error(e)) => {
                    return board.fail(format!(
                        "the event watch failed: {} ({})",
                        e.message, e.code
                    ))
                }
                Err(e) => return board.fail(format!("watching events: {e}")),
            }
            board.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn stages_are_stamped_once_each() {
        let board = Board::default();
        let t0 = Instant::now();
        board.update(&pod(serde_json::json!({"metadata": {"name": "a"}})), t0);
        assert_eq!(board.get("a"), Timeline::default());
        let bound = serde_json::json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n",
            "containers": []}});
        let t1 = t0 + Duration::from_millis(1);
        board.update(&pod(bound), t1);
        let ready = serde_json::json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n",
            "containers": []}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}}]}});
        let t2 = t0 + Duration::from_millis(2);
        board.update(&pod(ready.clone()), t2);
        board.update(&pod(ready.clone()), t2 + Duration::from_millis(5));
        let t = board.get("a");
        assert_eq!(t.bound, Some(t1));
        assert_eq!(
            (t.status, t.running, t.ready),
            (Some(t2), Some(t2), Some(t2))
        );
        board.remove(&pod(ready), t2 + Duration::from_millis(9));
        let event = |reason: &str| -> Event {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "a.1"},
                "involvedObject": {"name": "a"}, "reason": reason}))
            .unwrap()
        };
        board.event(&event("Pulled"), t1);
        board.event(&event("Started"), t2);
        board.event(&event("Started"), t2 + Duration::from_millis(7));
        board.event(&event("Killing"), t2);
        assert_eq!(
            (board.get("a").pulled, board.get("a").started),
            (Some(t1), Some(t2))
        );
        assert!(board.get("a").gone.is_some());
    }

    #[tokio::test]
    async fn waiting_times_out_or_sees_a_failure() {
        let board = Board::default();
        let r = board
            .wait_until("nothing", Duration::from_millis(10), |p| {
                p.contains_key("x")
            })
            .await;
        assert!(matches!(r, Err(PodStartupError::Timeout { .. })));
        board.fail("boom".into());
        let r = board
            .wait_until("x", Duration::from_secs(5), |_| false)
            .await;
        assert!(matches!(r, Err(PodStartupError::Unexpected(m)) if m == "boom"));
    }
}
