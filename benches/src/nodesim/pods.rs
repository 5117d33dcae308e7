//! The kubelet's side of pods, simulated: one watch on every scheduled pod (field selector
//! `spec.nodeName!=`), filtered to the simulated nodes. A new pod is reported Running and Ready
//! through `pods/status`; a pod marked for deletion is deleted for real (grace 0, UID
//! precondition), as a kubelet does once its containers have stopped. A pod annotated
//! `sim.berth.dev/exit-code` (and optionally `sim.berth.dev/run-for`) then exits as [`exit`]
//! describes: Succeeded, Failed, or a crash loop, as its restart policy says. At most
//! `concurrency` requests are in flight; the watch waits for a free slot, so a burst queues in
//! the watch rather than in memory.

pub mod exit;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::objects;
use super::register::is_status;
use super::{Shared, SimError, SimNode};

/// Selects pods bound to some node.
const SCHEDULED: &str = "spec.nodeName!=";
/// Host parts of a node's /24 handed to pods (.1 is left for a gateway, .255 is broadcast).
const FIRST_HOST: u8 = 2;
const LAST_HOST: u8 = 254;

/// The pod addresses in use on one node, by pod UID.
#[derive(Debug, Default)]
pub(super) struct PodIps {
    by_uid: HashMap<String, u8>,
    used: BTreeSet<u8>,
}

impl PodIps {
    /// The pod's host part: the one it has, else the lowest free one; None when all are taken.
    pub(super) fn assign(&mut self, uid: &str) -> Option<u8> {
        if let Some(&host) = self.by_uid.get(uid) {
            return Some(host);
        }
        let host = (FIRST_HOST..=LAST_HOST).find(|h| !self.used.contains(h))?;
        self.used.insert(host);
        self.by_uid.insert(uid.to_string(), host);
        Some(host)
    }

    /// Records an address a pod already has (found running after a restart).
    pub(super) fn adopt(&mut self, uid: &str, host: u8) {
        if !self.by_uid.contains_key(uid) && self.used.insert(host) {
            self.by_uid.insert(uid.to_string(), host);
        }
    }

    pub(super) fn release(&mut self, uid: &str) {
        if let Some(host) = self.by_uid.remove(uid) {
            self.used.remove(&host);
        }
    }
}

/// What the simulated kubelet does about a pod it sees.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    None,
    Start,
    Delete,
    /// A scripted pod's containers exit (see [`exit`]).
    Exit(exit::Script),
    /// A scripted pod's containers run again after a crash-loop back-off.
    Rerun,
    /// Look again after this long.
    Wait(Duration),
}

fn action(pod: &Pod, now: Timestamp) -> Action {
    if pod.metadata.deletion_timestamp.is_some() {
        return Action::Delete;
    }
    if let Some(script) = exit::script(pod) {
        return match exit::step(pod, script, now) {
            exit::Step::Start => Action::Start,
            exit::Step::Exit => Action::Exit(script),
            exit::Step::Rerun => Action::Rerun,
            exit::Step::Wait(d) => Action::Wait(d),
            exit::Step::None => Action::None,
        };
    }
    if objects::is_running(pod) {
        Action::None
    } else {
        Action::Start
    }
}

/// Pods (by UID) with a timer pending, so the echoes of a pod's updates arm one timer, not
/// many. Process-wide: UIDs are unique across simulators.
static TIMERS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// Handles `pod` again once `after` has passed (re-reading it first), unless a timer is
/// already pending for it.
fn look_again(shared: &Arc<Shared>, node: &Arc<SimNode>, pod: &Pod, after: Duration) {
    let uid = uid(pod).to_string();
    {
        let mut timers = TIMERS.lock().unwrap_or_else(|p| p.into_inner());
        if !timers.insert(uid.clone()) {
            return;
        }
    }
    let (shared, node) = (Arc::clone(shared), Arc::clone(node));
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        TIMERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid);
        if !node.alive.load(Ordering::SeqCst) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
        match api.get_opt(&name).await {
            Ok(Some(pod)) if pod.metadata.uid.as_deref() == Some(uid.as_str()) => {
                handle(&shared, &node, &pod).await
            }
            Ok(_) => {}
            Err(e) => shared.failed("reading pod", &name, &e),
        }
    });
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The node's host part of a pod IP in its range, if `ip` is one.
fn host_part(node: &SimNode, ip: &str) -> Option<u8> {
    let (net, host) = ip.rsplit_once('.')?;
    let ours = objects::pod_ip(node.index, 0);
    (ours.strip_suffix(".0") == Some(net))
        .then(|| host.parse().ok())
        .flatten()
}

pub(super) async fn run(shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.concurrency));
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(SCHEDULED);
    let mut events = watcher::watcher(pods, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(Event::Delete(pod)) => {
                if let Some(node) = node_of(&shared, &pod) {
                    lock_ips(node).release(uid(&pod));
                }
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "node simulator: pod watch failed; retrying");
                continue;
            }
        };
        let Some(node) = node_of(&shared, &pod).cloned() else {
            continue;
        };
        if !node.alive.load(Ordering::SeqCst) {
            continue;
        }
        // Most events are the echoes of our own status patches: no request needed.
        match action(&pod, Timestamp::now()) {
            Action::None => {
                adopt_ip(&node, &pod);
                continue;
            }
            Action::Wait(after) => {
                adopt_ip(&node, &pod);
                look_again(&shared, &node, &pod, after);
                continue;
            }
            _ => {}
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            handle(&shared, &node, &pod).await;
            drop(permit);
        });
    }
}

fn node_of<'a>(shared: &'a Shared, pod: &Pod) -> Option<&'a Arc<SimNode>> {
    let name = pod.spec.as_ref()?.node_name.as_deref()?;
    shared.by_name.get(name)
}

fn lock_ips(node: &SimNode) -> std::sync::MutexGuard<'_, PodIps> {
    // The map holds no invariant a panicking holder could break halfway.
    node.pod_ips.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps what a running pod holds, so a restarted simulator does not hand it out again.
fn adopt_ip(node: &SimNode, pod: &Pod) {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
    if let Some(host) = ip.and_then(|ip| host_part(node, ip)) {
        lock_ips(node).adopt(uid(pod), host);
    }
}

/// Brings one pod on `node` to where a kubelet would: running, finished, or gone.
async fn handle(shared: &Arc<Shared>, node: &Arc<SimNode>, pod: &Pod) {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), namespace);
    let patch_status = |status: serde_json::Value, what: &'static str| {
        let api = api.clone();
        async move {
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => true,
                // Deleted meanwhile: the watch reports that next.
                Err(e) if is_status(&e, 404) => false,
                Err(e) => {
                    shared.failed(what, name, &e);
                    false
                }
            }
        }
    };
    match action(pod, Timestamp::now()) {
        Action::None => adopt_ip(node, pod),
        Action::Wait(after) => {
            adopt_ip(node, pod);
            look_again(shared, node, pod, after);
        }
        Action::Exit(script) => {
            let now = objects::rfc3339(OffsetDateTime::now_utc());
            patch_status(exit::exited_status(pod, script, &now), "finishing pod").await;
        }
        Action::Rerun => {
            let now = objects::rfc3339(OffsetDateTime::now_utc());
            let status = pod.status.as_ref();
            let host_ip = status
                .and_then(|s| s.host_ip.as_deref())
                .unwrap_or(&node.host_ip);
            let pod_ip = status.and_then(|s| s.pod_ip.as_deref()).unwrap_or_default();
            let running = objects::running_status(pod, host_ip, pod_ip, &now);
            patch_status(exit::rerun_status(pod, running), "restarting pod").await;
        }
        Action::Start => {
            let Some(host) = lock_ips(node).assign(uid(pod)) else {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pod = %name, node = %node.name, "node simulator: no pod IP left");
                return;
            };
            let now = objects::rfc3339(OffsetDateTime::now_utc());
            let ip = objects::pod_ip(node.index, host);
            let status = objects::running_status(pod, &node.host_ip, &ip, &now);
            if patch_status(status, "starting pod").await {
                shared.counters.pods_started.fetch_add(1, Ordering::Relaxed);
            }
        }
        Action::Delete => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => {
                    shared.counters.pods_deleted.fetch_add(1, Ordering::Relaxed);
                    lock_ips(node).release(uid(pod));
                }
                // Already gone, or a newer pod of the same name.
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => shared.failed("deleting pod", name, &e),
            }
        }
    }
}

/// Handles every pod bound to `node` now (after its heartbeat resumes: the watch events of the
/// time it was lost were skipped).
pub(super) async fn resync_node(shared: &Arc<Shared>, node: &Arc<SimNode>) -> Result<(), SimError> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", node.name);
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|source| SimError::Api {
            op: "listing the pods of node",
            name: node.name.clone(),
            source,
        })?;
    futures::stream::iter(&list.items)
        .for_each_concurrent(shared.concurrency, |pod| handle(shared, node, pod))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    #[test]
    fn pod_ips_assign_release_adopt() {
        let mut ips = PodIps::default();
        assert_eq!(ips.assign("a"), Some(2));
        assert_eq!(ips.assign("b"), Some(3));
        assert_eq!(ips.assign("a"), Some(2), "a pod keeps its address");
        ips.release("a");
        assert_eq!(ips.assign("c"), Some(2), "a released address is reused");
        ips.adopt("d", 10);
        ips.adopt("e", 10);
        assert_eq!(ips.assign("d"), Some(10));
        assert_eq!(ips.assign("e"), Some(4), "an address is adopted once");
        // 253 addresses (.2 to .254), four of them taken.
        for i in 0..249 {
            assert!(ips.assign(&format!("x{i}")).is_some(), "pod {i}");
        }
        assert_eq!(ips.assign("full"), None);
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn actions() {
        let pending =
            pod(json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": []}}));
        let now = Timestamp::now();
        assert_eq!(action(&pending, now), Action::Start);
        let running = pod(json!({"metadata": {"name": "p"}, "status": {
            "phase": "Running", "podIP": "10.64.0.2",
            "conditions": [{"type": "Ready", "status": "True"}]}}));
        assert_eq!(action(&running, now), Action::None);
        let deleting = pod(
            json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Running", "podIP": "10.64.0.2",
                       "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(action(&deleting, now), Action::Delete);
        let scripted = pod(json!({"metadata": {"name": "p", "annotations": {
                exit::EXIT_CODE: "1", exit::RUN_FOR: "1h"}},
            "status": {"phase": "Running", "podIP": "10.64.0.2",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}));
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            action(&scripted, at("2026-01-01T00:30:00Z")),
            Action::Wait(Duration::from_secs(1800))
        );
        assert_eq!(
            action(&scripted, at("2026-01-01T01:00:00Z")),
            Action::Exit(exit::Script {
                exit_code: 1,
                run_for: Duration::from_secs(3600)
            })
        );
    }

    #[test]
    fn host_parts() {
        let node = SimNode {
            name: "sim-257".into(),
            index: 257,
            uid: "u".into(),
            host_ip: objects::node_ip(257),
            alive: AtomicBool::new(true),
            renewing: tokio::sync::Mutex::new(()),
            pod_ips: Mutex::new(PodIps::default()),
        };
        assert_eq!(host_part(&node, "10.65.1.7"), Some(7));
        assert_eq!(host_part(&node, "10.65.2.7"), None);
        assert_eq!(host_part(&node, "10.65.1.x"), None);
        assert_eq!(host_part(&node, "nonsense"), None);
    }
}
