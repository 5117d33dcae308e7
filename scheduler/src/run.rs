//! The scheduler as an API client: one task owns the [`Snapshot`], the [`SchedulingQueue`] and
//! the [`Scheduler`], fed by watches on Nodes, Pods and Namespaces; it schedules one pod at a
//! time and hands binds and unschedulable reports to tasks, so a slow write never stalls the
//! next cycle. Nothing is shared, so nothing is locked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Instant;

use berth_api::k8s_openapi::api::core::v1 as core;
use berth_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use futures::stream::BoxStream;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::task::JoinSet;

use crate::binder::{self, WriteError};
use crate::cycle::{Scheduler, SchedulerConfig};
use crate::pod_info::PodInfo;
use crate::queue::{pod_key, Failure, QueueConfig, SchedulingQueue};
use crate::snapshot::Snapshot;

/// Scheduler names this scheduler serves.
pub const SCHEDULER_NAMES: [&str; 2] = ["default-scheduler", "berth"];

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub scheduler: SchedulerConfig,
    pub queue: QueueConfig,
    /// Binds in flight at once.
    pub bind_concurrency: usize,
    /// Unschedulable reports (status patch + Event) in flight at once; more are dropped and
    /// retried on the pod's next failed cycle.
    pub report_concurrency: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            scheduler: SchedulerConfig::default(),
            queue: QueueConfig::default(),
            bind_concurrency: 64,
            report_concurrency: 16,
        }
    }
}

/// Boxed: a Pod event is over 2 KB and most events are pods.
enum Change {
    Node(Box<Event<core::Node>>),
    Pod(Box<Event<core::Pod>>),
    Namespace(Box<Event<core::Namespace>>),
}

/// The node fields scheduling decisions read; a heartbeat that changes none of them is no
/// reason to retry unschedulable pods.
type NodeShape = (
    Option<BTreeMap<String, String>>,
    Option<core::NodeSpec>,
    Option<BTreeMap<String, Quantity>>,
);

fn node_shape(node: &core::Node) -> NodeShape {
    (
        node.metadata.labels.clone(),
        node.spec.clone(),
        node.status.as_ref().and_then(|s| s.allocatable.clone()),
    )
}

/// Which watches have completed their first list (or a re-list), and what each re-list saw.
#[derive(Default)]
struct Relist {
    nodes: Option<HashSet<String>>,
    pods: Option<HashSet<String>>,
    namespaces: Option<HashSet<String>>,
    synced: [bool; 3],
}

struct State {
    client: Client,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    scheduler: Scheduler,
    nodes: HashMap<String, NodeShape>,
    /// Pods counted in the snapshot from the watch (bound, not finished).
    bound: HashSet<String>,
    /// Pods assumed onto a node whose binding the watch has not shown yet.
    assumed: HashMap<String, String>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    relist: Relist,
    binds: JoinSet<(String, Result<(), WriteError>)>,
    reports: JoinSet<Result<(), WriteError>>,
    config: RunConfig,
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

fn responsible(pod: &core::Pod) -> bool {
    let spec = pod.spec.as_ref();
    let name = spec.and_then(|s| s.scheduler_name.as_deref());
    name.is_none_or(|n| SCHEDULER_NAMES.contains(&n))
}

fn is_bound(pod: &core::Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn is_finished(pod: &core::Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl State {
    fn synced(&self) -> bool {
        self.relist.synced.iter().all(|s| *s)
    }

    fn apply(&mut self, change: Change) {
        let now = Instant::now();
        match change {
            Change::Node(event) => match *event {
                Event::Init => self.relist.nodes = Some(HashSet::new()),
                Event::InitApply(node) => {
                    if let (Some(seen), Some(name)) =
                        (self.relist.nodes.as_mut(), node.metadata.name.as_ref())
                    {
                        seen.insert(name.clone());
                    }
                    self.node_applied(&node, now);
                }
                Event::InitDone => {
                    let seen = self.relist.nodes.take().unwrap_or_default();
                    let gone: Vec<String> = self
                        .nodes
                        .keys()
                        .filter(|n| !seen.contains(*n))
                        .cloned()
                        .collect();
                    for name in gone {
                        self.node_deleted(&name);
                    }
                    self.relist.synced[0] = true;
                }
                Event::Apply(node) => self.node_applied(&node, now),
                Event::Delete(node) => {
                    if let Some(name) = node.metadata.name.as_deref() {
                        self.node_deleted(name);
                    }
                }
            },
            Change::Pod(event) => match *event {
                Event::Init => self.relist.pods = Some(HashSet::new()),
                Event::InitApply(pod) => {
                    if let Some(seen) = self.relist.pods.as_mut() {
                        seen.insert(pod_key(&pod));
                    }
                    self.pod_applied(pod, now);
                }
                Event::InitDone => {
                    let seen = self.relist.pods.take().unwrap_or_default();
                    let gone: Vec<String> = self
                        .bound
                        .iter()
                        .chain(self.assumed.keys())
                        .chain(self.queue.keys())
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.pod_deleted(&key, now);
                    }
                    self.relist.synced[1] = true;
                }
                Event::Apply(pod) => self.pod_applied(pod, now),
                Event::Delete(pod) => self.pod_deleted(&pod_key(&pod), now),
            },
            Change::Namespace(event) => match *event {
                Event::Init => self.relist.namespaces = Some(HashSet::new()),
                Event::InitApply(ns) => {
                    if let (Some(seen), Some(name)) =
                        (self.relist.namespaces.as_mut(), ns.metadata.name.as_ref())
                    {
                        seen.insert(name.clone());
                    }
                    self.namespace_applied(&ns, now);
                }
                Event::InitDone => {
                    let seen = self.relist.namespaces.take().unwrap_or_default();
                    let snapshot = &mut self.snapshot;
                    self.namespaces.retain(|n, _| {
                        let keep = seen.contains(n);
                        if !keep {
                            snapshot.remove_namespace(n);
                        }
                        keep
                    });
                    self.relist.synced[2] = true;
                }
                Event::Apply(ns) => self.namespace_applied(&ns, now),
                Event::Delete(ns) => {
                    if let Some(name) = ns.metadata.name.as_deref() {
                        self.namespaces.remove(name);
                        self.snapshot.remove_namespace(name);
                    }
                }
            },
        }
    }

    fn node_applied(&mut self, node: &core::Node, now: Instant) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        if let Err(e) = self.snapshot.update_node(node) {
            tracing::warn!(error = %e, node = %name, "node left out of scheduling");
            return;
        }
        let shape = node_shape(node);
        if self.nodes.get(&name) != Some(&shape) {
            self.nodes.insert(name, shape);
            self.queue.move_all_unschedulable(now);
        }
    }

    fn node_deleted(&mut self, name: &str) {
        self.nodes.remove(name);
        self.snapshot.remove_node(name);
    }

    fn pod_applied(&mut self, pod: core::Pod, now: Instant) {
        let key = pod_key(&pod);
        if is_bound(&pod) {
            self.queue.remove(&key);
            self.assumed.remove(&key);
            if is_finished(&pod) {
                // Its resources are free again.
                if self.bound.remove(&key) {
                    let (ns, name) = split_key(&key);
                    self.snapshot.remove_pod(ns, name);
                    self.queue.move_all_unschedulable(now);
                }
                return;
            }
            match self.snapshot.add_pod(&pod) {
                Ok(()) => {
                    self.bound.insert(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, pod = %key, "bound pod left out of the snapshot")
                }
            }
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() || !responsible(&pod) || is_finished(&pod) {
            self.queue.remove(&key);
            return;
        }
        if self.assumed.contains_key(&key) {
            // Being bound; kube-scheduler skips assumed pods too.
            return;
        }
        let reported = binder::unschedulable_message(&pod).map(str::to_string);
        let new = !self.queue.contains(&key);
        self.queue.add(pod, now);
        if let (true, Some(message)) = (new, reported) {
            self.queue.set_reported(&key, &message);
        }
    }

    fn pod_deleted(&mut self, key: &str, now: Instant) {
        self.queue.remove(key);
        let (ns, name) = split_key(key);
        if self.assumed.remove(key).is_some() {
            self.snapshot.forget_pod(ns, name);
        }
        if self.bound.remove(key) {
            self.snapshot.remove_pod(ns, name);
            self.queue.move_all_unschedulable(now);
        }
    }

    fn namespace_applied(&mut self, ns: &core::Namespace, now: Instant) {
        let Some(name) = ns.metadata.name.clone() else {
            return;
        };
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        match self.namespaces.insert(name.clone(), labels.clone()) {
            Some(old) if old == labels => {}
            old => {
                self.snapshot.set_namespace_labels(&name, labels);
                if old.is_some() {
                    // Relabelled: namespaceSelector terms may match differently now.
                    self.queue.move_all_unschedulable(now);
                }
            }
        }
    }

    /// Runs one cycle for the first active pod.
    fn schedule_one(&mut self) {
        let now = Instant::now();
        let Some(popped) = self.queue.pop(now) else {
            return;
        };
        let info = match PodInfo::from_pod(&popped.pod) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(error = %e, pod = %popped.key, "cannot schedule pod");
                self.queue.fail(&popped.key, Failure::Error, now);
                return;
            }
        };
        match self.scheduler.schedule(&info, &self.snapshot) {
            Ok(result) => {
                self.snapshot.assume_pod(&info, &result.node);
                self.assumed.insert(popped.key.clone(), result.node.clone());
                let client = self.client.clone();
                let key = popped.key;
                let pod = popped.pod;
                self.binds.spawn(async move {
                    let res = binder::bind(client, &pod, &result.node).await;
                    (key, res)
                });
            }
            Err(unschedulable) => {
                tracing::debug!(pod = %popped.key, reason = %unschedulable, "pod unschedulable");
                self.queue.fail(&popped.key, Failure::Unschedulable, now);
                while self.reports.try_join_next().is_some() {}
                if self.reports.len() < self.config.report_concurrency
                    && self.queue.set_reported(&popped.key, &unschedulable.message)
                {
                    let client = self.client.clone();
                    let pod = popped.pod;
                    let message = unschedulable.message;
                    self.reports.spawn(async move {
                        binder::report_unschedulable(client, &pod, &message).await
                    });
                }
            }
        }
    }

    fn bind_done(&mut self, key: String, result: Result<(), WriteError>) {
        match result {
            Ok(()) => self.queue.finish(&key),
            Err(e) => {
                tracing::warn!(error = %e, "bind failed");
                if self.assumed.remove(&key).is_some() {
                    let (ns, name) = split_key(&key);
                    self.snapshot.forget_pod(ns, name);
                }
                self.queue.fail(&key, Failure::Error, Instant::now());
            }
        }
    }

    fn changed(&mut self, change: Result<Change, watcher::Error>) {
        match change {
            Ok(change) => self.apply(change),
            Err(e) => tracing::warn!(error = %e, "scheduler watch failed; retrying"),
        }
    }

    fn joined(&mut self, done: Result<(String, Result<(), WriteError>), tokio::task::JoinError>) {
        match done {
            Ok((key, result)) => self.bind_done(key, result),
            Err(e) => tracing::error!(error = %e, "bind task failed"),
        }
    }

    fn can_schedule(&self) -> bool {
        self.synced() && self.binds.len() < self.config.bind_concurrency && self.queue.has_active()
    }
}

fn watch<K>(api: Api<K>) -> BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

/// Events decoded by the watch tasks and not yet applied; a full channel holds the watches
/// back rather than memory.
const CHANGES_BUFFERED: usize = 4096;
/// Changes applied in one go before the loop looks at binds and the queue again.
const CHANGES_PER_TURN: usize = 1024;

/// Runs each watch on a task of its own, so that decoding events (most of a watch's cost)
/// happens beside the scheduling cycles rather than between them. Each stream keeps its order.
fn spawn_watches(
    client: &Client,
    tasks: &mut JoinSet<()>,
) -> tokio::sync::mpsc::Receiver<Result<Change, watcher::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANGES_BUFFERED);
    let streams: [BoxStream<'static, Result<Change, watcher::Error>>; 3] = [
        watch(Api::<core::Node>::all(client.clone()))
            .map(|r| r.map(|e| Change::Node(Box::new(e))))
            .boxed(),
        watch(Api::<core::Pod>::all(client.clone()))
            .map(|r| r.map(|e| Change::Pod(Box::new(e))))
            .boxed(),
        watch(Api::<core::Namespace>::all(client.clone()))
            .map(|r| r.map(|e| Change::Namespace(Box::new(e))))
            .boxed(),
    ];
    for mut stream in streams {
        let tx = tx.clone();
        tasks.spawn(async move {
            while let Some(change) = stream.next().await {
                if tx.send(change).await.is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Schedules pods through `client` until `shutdown` completes; then waits for binds and
/// reports in flight (up to 10 s) and returns.
pub async fn run(client: Client, config: RunConfig, shutdown: impl Future<Output = ()> + Send) {
    let mut watches = JoinSet::new();
    let mut changes = spawn_watches(&client, &mut watches);
    let mut state = State {
        client,
        snapshot: Snapshot::new(),
        queue: SchedulingQueue::new(config.queue),
        scheduler: Scheduler::new(config.scheduler.clone()),
        nodes: HashMap::new(),
        bound: HashSet::new(),
        assumed: HashMap::new(),
        namespaces: HashMap::new(),
        relist: Relist::default(),
        binds: JoinSet::new(),
        reports: JoinSet::new(),
        config,
    };
    tokio::pin!(shutdown);
    tracing::info!("scheduler starting");
    loop {
        let wake = state.queue.next_wake().map(tokio::time::Instant::from_std);
        let can_schedule = state.can_schedule();
        tokio::select! {
            () = &mut shutdown => break,
            change = changes.recv() => match change {
                Some(change) => {
                    state.changed(change);
                    // Whatever else has arrived goes in now: cycles then see the newest state,
                    // and a burst costs one turn of the loop, not one each.
                    for _ in 1..CHANGES_PER_TURN {
                        match changes.try_recv() {
                            Ok(change) => state.changed(change),
                            Err(_) => break,
                        }
                    }
                }
                None => break,
            },
            Some(done) = state.binds.join_next(), if !state.binds.is_empty() => {
                state.joined(done);
                while let Some(done) = state.binds.try_join_next() {
                    state.joined(done);
                }
            }
            () = std::future::ready(()), if can_schedule => state.schedule_one(),
            () = sleep_until(wake), if wake.is_some() => state.queue.tick(Instant::now()),
        }
        while let Some(done) = state.reports.try_join_next() {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "reporting an unschedulable pod failed");
            }
        }
    }
    watches.abort_all();
    let drain = async {
        while let Some(done) = state.binds.join_next().await {
            if let Ok((_, Err(e))) = done {
                tracing::warn!(error = %e, "bind failed during shutdown");
            }
        }
        while state.reports.join_next().await.is_some() {}
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("writes still in flight after 10 s; abandoned");
    }
    tracing::info!("scheduler stopped");
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
