//! Pods on this node: one watch on the pods bound here, one worker task per pod
//! ([`worker`]), and the orphans a previous kubelet left behind.

mod backoff;
mod containers;
pub(crate) mod context;
mod probing;
mod registry;
mod sandbox;
mod source;
pub mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

pub(crate) use context::Context;
pub(crate) use registry::Registry;

use crate::podspec::{DnsSettings, PodFacts};
use crate::static_pods;

/// How often the manifest directory is read (the kubelet's fileCheckFrequency is 20 s).
const STATIC_RESCAN: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn facts(ctx: &Context, pod: &Pod, ip: Option<Ipv4Addr>) -> PodFacts {
    PodFacts {
        pod_ip: ip.map(|ip| ip.to_string()),
        host_ip: ctx.config.node_ip.to_string(),
        node_name: ctx.config.node_name.clone(),
        node_allocatable_cpu_millis: ctx.allocatable_cpu_millis,
        node_allocatable_memory: ctx.allocatable_memory,
        ..podspec_facts_default(pod)
    }
}

fn podspec_facts_default(_pod: &Pod) -> PodFacts {
    PodFacts::default()
}

pub(crate) fn dns_settings(ctx: &Context) -> DnsSettings {
    DnsSettings {
        cluster_dns: ctx
            .config
            .cluster_dns
            .map(|ip| ip.to_string())
            .into_iter()
            .collect(),
        cluster_domain: ctx.config.cluster_domain.clone(),
        ..Default::default()
    }
}

/// Watches the pods bound to this node and keeps one worker per pod until shutdown. Workers are
/// left running at shutdown only in the sense that their containers are: the shims keep them.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={}", ctx.config.node_name);
    let config = watcher::Config::default().fields(&selector);
    // While the API server is unreachable the watch retries with back-off (pods keep running:
    // the shims hold them), and relists when it is back.
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listed: Option<HashSet<String>> = None;
    let mut orphans_checked = false;
    // Static pods: loaded before the API's list is compared with what runs here, so they are
    // neither "deleted while away" nor orphans.
    let manifests = ctx.config.pod_manifest_path.clone();
    let node = ctx.config.node_name.clone();
    let mut statics = manifests
        .as_deref()
        .map(|d| static_pods::load(d, &node))
        .unwrap_or_default();
    for (uid, pod) in &statics {
        dispatch(&ctx, &mut workers, uid.clone(), Some(pod.clone()));
    }
    let mut rescan = tokio::time::interval(STATIC_RESCAN);
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => return,
            _ = rescan.tick(), if manifests.is_some() => {
                let found = manifests.as_deref().map(|d| static_pods::load(d, &node)).unwrap_or_default();
                for uid in statics.keys().filter(|u| !found.contains_key(*u)) {
                    if let Some(tx) = workers.get(uid) {
                        let _ = tx.send(None);
                    }
                }
                for (uid, pod) in &found {
                    if !statics.contains_key(uid) {
                        dispatch(&ctx, &mut workers, uid.clone(), Some(pod.clone()));
                    }
                }
                statics = found;
                let (client, node, wanted) = (ctx.client.clone(), node.clone(), statics.clone());
                tokio::spawn(async move { static_pods::sync_mirrors(&client, &node, &wanted).await });
                continue;
            }
            event = stream.next() => event,
        };
        workers.retain(|_, tx| !tx.is_closed());
        let Some(event) = event else { return };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet: watching pods");
                continue;
            }
        };
        match event {
            Event::Init => listed = Some(HashSet::new()),
            Event::InitApply(pod) | Event::Apply(pod) if static_pods::is_mirror(&pod) => {
                // Its pod runs from a file; a deleted mirror goes at once and comes back.
                if pod.metadata.deletion_timestamp.is_some() {
                    let client = ctx.client.clone();
                    tokio::spawn(async move { static_pods::delete(&client, &pod).await });
                    continue;
                }
                // A new mirror has no status yet: the static pod's worker posts it.
                let fresh = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_none();
                let hash = pod
                    .annotations()
                    .get(static_pods::CONFIG_MIRROR)
                    .cloned()
                    .unwrap_or_default();
                if let (true, Some(static_pod), Some(tx)) =
                    (fresh, statics.get(&hash), workers.get(&hash))
                {
                    let _ = tx.send(Some(static_pod.clone()));
                }
            }
            Event::InitApply(pod) | Event::Apply(pod) => {
                let uid = pod.uid().unwrap_or_default();
                if let Some(listed) = listed.as_mut() {
                    listed.insert(uid.clone());
                }
                dispatch(&ctx, &mut workers, uid, Some(pod));
            }
            Event::Delete(pod) => {
                let uid = pod.uid().unwrap_or_default();
                if let Some(tx) = workers.get(&uid) {
                    let _ = tx.send(None);
                }
            }
            Event::InitDone => {
                let seen = listed.take().unwrap_or_default();
                // Pods deleted while the watch was down.
                for (uid, tx) in &workers {
                    if !seen.contains(uid) && !statics.contains_key(uid) {
                        let _ = tx.send(None);
                    }
                }
                if !orphans_checked {
                    orphans_checked = true;
                    let known = |u: &String| seen.contains(u) || statics.contains_key(u);
                    for uid in pod_dirs(&ctx).into_iter().filter(|u| !known(u)) {
                        dispatch(&ctx, &mut workers, uid, None);
                    }
                }
            }
        }
    }
}

fn dispatch(
    ctx: &Arc<Context>,
    workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
    uid: String,
    pod: Option<Pod>,
) {
    if let Some(tx) = workers.get(&uid) {
        if pod.is_some() {
            let _ = tx.send(pod);
        }
        return;
    }
    let (tx, rx) = watch::channel(pod);
    workers.insert(uid.clone(), tx);
    tokio::spawn(worker::run(ctx.clone(), uid, rx));
}

/// Pod UIDs with a directory on this node.
fn pod_dirs(ctx: &Context) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(ctx.config.pods_dir()) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}
