//! Per-pod data plane state, following this node's pods: the tc program on each pod's host veth
//! (the per-packet path for what the socket hooks do not see), the veth's entry in the devices
//! NodePort XDP may redirect into, and the pod's hostPorts in nft.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use crate::loader::Datapath;
use crate::nat::{HostPort, Nat, Protocol};
use crate::podnet::host_ifname;

/// What one pod needs from the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodPlan {
    pub ifname: String,
    pub hostports: Vec<HostPort>,
}

/// None for pods without their own network (hostNetwork, or no IP yet).
pub(super) fn plan(pod: &Pod) -> Option<PodPlan> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let ip: Ipv4Addr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let uid = pod.metadata.uid.as_deref()?;
    let mut hostports = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port.and_then(|h| u16::try_from(h).ok()) else {
                continue;
            };
            let Ok(container_port) = u16::try_from(p.container_port) else {
                continue;
            };
            let Ok(protocol) = p.protocol.as_deref().unwrap_or("TCP").parse::<Protocol>() else {
                continue;
            };
            hostports.push(HostPort {
                protocol,
                host_port,
                pod_ip: ip,
                container_port,
            });
        }
    }
    Some(PodPlan {
        ifname: host_ifname(uid),
        hostports,
    })
}

/// Follows this node's pods until the task is dropped.
pub(super) async fn run(
    client: kube::Client,
    node: String,
    datapath: Arc<Mutex<Datapath>>,
    nat: Option<Arc<Nat>>,
) {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher::watcher(pods, config).default_backoff().boxed();
    let mut applied: BTreeMap<String, PodPlan> = BTreeMap::new();
    let mut listing: BTreeMap<String, PodPlan> = BTreeMap::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(pod)) => {
                if let (Some(uid), Some(plan)) = (pod.metadata.uid.clone(), plan(&pod)) {
                    listing.insert(uid, plan);
                }
            }
            Ok(Event::InitDone) => {
                let gone: BTreeSet<String> = applied
                    .keys()
                    .filter(|uid| !listing.contains_key(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    if let Some(old) = applied.remove(&uid) {
                        withdraw(&datapath, nat.as_ref(), &old).await;
                    }
                }
                for (uid, plan) in std::mem::take(&mut listing) {
                    update(&datapath, nat.as_ref(), &mut applied, uid, Some(plan)).await;
                }
            }
            Ok(Event::Apply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    update(&datapath, nat.as_ref(), &mut applied, uid, plan(&pod)).await;
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(old) = pod
                    .metadata
                    .uid
                    .as_ref()
                    .and_then(|uid| applied.remove(uid))
                {
                    withdraw(&datapath, nat.as_ref(), &old).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "data plane: watching pods"),
        }
    }
}

async fn update(
    datapath: &Arc<Mutex<Datapath>>,
    nat: Option<&Arc<Nat>>,
    applied: &mut BTreeMap<String, PodPlan>,
    uid: String,
    plan: Option<PodPlan>,
) {
    let old = applied.get(&uid);
    if old == plan.as_ref() {
        return;
    }
    let Some(plan) = plan else {
        if let Some(old) = applied.remove(&uid) {
            withdraw(datapath, nat, &old).await;
        }
        return;
    };
    let stale: Vec<HostPort> = old
        .map(|o| {
            o.hostports
                .iter()
                .filter(|h| !plan.hostports.contains(h))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let dp = datapath.clone();
    let ifname = plan.ifname.clone();
    let nat_owned = nat.cloned();
    let hostports = plan.hostports.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut datapath = dp.lock().expect("datapath lock");
        if let Err(e) = datapath.attach_tc(&ifname) {
            tracing::warn!(%ifname, error = %e, "data plane: attaching the pod's tc program");
        }
        // The pod's end has NAPI (podnet turns GRO on), so NodePort XDP may redirect into it.
        if let Err(e) = datapath.allow_xdp_redirect(&ifname) {
            tracing::warn!(%ifname, error = %e, "data plane: letting XDP redirect to the pod");
        }
        drop(datapath);
        if let Some(nat) = nat_owned {
            for h in &stale {
                if let Err(e) = nat.remove_hostport(h.protocol, h.host_port) {
                    tracing::warn!(port = h.host_port, error = %e, "data plane: removing a hostPort");
                }
            }
            for h in &hostports {
                if let Err(e) = nat.add_hostport(h) {
                    tracing::warn!(port = h.host_port, error = %e, "data plane: adding a hostPort");
                }
            }
        }
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "data plane: pod update task");
    }
    applied.insert(uid, plan);
}

async fn withdraw(datapath: &Arc<Mutex<Datapath>>, nat: Option<&Arc<Nat>>, old: &PodPlan) {
    let dp = datapath.clone();
    let old = old.clone();
    let nat = nat.cloned();
    let done = tokio::task::spawn_blocking(move || {
        let mut datapath = dp.lock().expect("datapath lock");
        if let Err(e) = datapath.detach_tc(&old.ifname) {
            tracing::debug!(ifname = %old.ifname, error = %e, "data plane: detaching tc");
        }
        if let Err(e) = datapath.forbid_xdp_redirect(&old.ifname) {
            tracing::debug!(ifname = %old.ifname, error = %e, "data plane: XDP redirect entry");
        }
        drop(datapath);
        if let Some(nat) = nat {
            for h in &old.hostports {
                if let Err(e) = nat.remove_hostport(h.protocol, h.host_port) {
                    tracing::warn!(port = h.host_port, error = %e, "data plane: removing a hostPort");
                }
            }
        }
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "data plane: pod removal task");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pod_with_an_ip_gets_its_veth_and_host_ports() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u-1"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 8080, "hostPort": 30080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"},
                {"containerPort": 9000}]}]},
            "status": {"podIP": "10.244.0.5"}
        }));
        let plan = plan(&p).unwrap();
        assert_eq!(plan.ifname, host_ifname("u-1"));
        let ports: Vec<_> = plan
            .hostports
            .iter()
            .map(|h| (h.protocol, h.host_port, h.container_port))
            .collect();
        assert_eq!(
            ports,
            vec![(Protocol::Tcp, 30080, 8080), (Protocol::Udp, 5353, 53)]
        );
        assert!(plan
            .hostports
            .iter()
            .all(|h| h.pod_ip == Ipv4Addr::new(10, 244, 0, 5)));
    }

    #[test]
    fn host_network_pods_and_pods_without_an_ip_need_nothing() {
        let host = pod(serde_json::json!({
            "metadata": {"uid": "u"}, "spec": {"hostNetwork": true, "containers": []},
            "status": {"podIP": "192.0.2.1"}}));
        assert_eq!(plan(&host), None);
        let pending =
            pod(serde_json::json!({"metadata": {"uid": "u"}, "spec": {"containers": []}}));
        assert_eq!(plan(&pending), None);
    }
}
