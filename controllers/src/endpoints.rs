//! The legacy v1 Endpoints of every Service with a selector (kube-controller-manager's endpoints
//! controller): ready and not-ready addresses grouped by the ports they serve, at most 1000
//! addresses (then annotated `endpoints.kubernetes.io/over-capacity: truncated`). Endpoints of
//! Services without a selector belong to whoever wrote them and are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;

use crate::apierrors::{is_conflict, is_namespace_terminating, is_not_found};
use crate::endpointslice::{
    find_port, hostname_for, ipv4_addresses, is_headless, is_managed, pod_reference, selects,
    should_pod_be_in_endpoints, Membership, HEADLESS_LABEL,
};
use crate::pods;
use crate::runtime::{
    key_of, Action, Change, Informer, NotSynced, Reconciler, Runner, Synced, WorkQueue,
};

/// Most addresses one Endpoints object holds (Kubernetes' `maxCapacity`).
pub const MAX_CAPACITY: usize = 1000;
/// Set when addresses were dropped to stay within [`MAX_CAPACITY`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("{verb} endpoints {key}")]
    Write {
        verb: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

pub struct EndpointsController {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    synced: Vec<(&'static str, Synced)>,
}

impl EndpointsController {
    /// Registers the controller on the shared Service and Pod informers (run by the caller);
    /// the Endpoints informer is its own.
    pub fn register(
        runner: &mut Runner,
        client: Client,
        services: &mut Informer<Service>,
        pods: &mut Informer<Pod>,
        queue: WorkQueue<String>,
        workers: usize,
    ) {
        Membership::enqueue_services(services, pods, &queue);
        let mut endpoints = Informer::new(
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
        );
        // As Kubernetes: only a deleted Endpoints object is put back; edits are left alone.
        let q = queue.clone();
        endpoints.observe(move |change, ep: &Endpoints| {
            if change == Change::Deleted {
                q.add(key_of(ep));
            }
        });
        let controller = EndpointsController {
            client,
            services: services.store(),
            pods: pods.store(),
            endpoints: endpoints.store(),
            synced: vec![
                ("service", services.synced()),
                ("pod", pods.synced()),
                ("endpoints", endpoints.synced()),
            ],
        };
        runner.informer(endpoints);
        runner.controller(controller, queue, workers);
    }
}

/// An address with the ports it serves and whether it is ready.
struct Member {
    address: EndpointAddress,
    ready: bool,
    ports: Vec<EndpointPort>,
}

fn port_sort_key(p: &EndpointPort) -> (String, i32, String) {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_default(),
    )
}

fn member(svc: &Service, pod: &Pod) -> Option<Member> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    if !should_pod_be_in_endpoints(pod, publish_not_ready) {
        return None;
    }
    let ip = ipv4_addresses(pod).into_iter().next()?;
    let address = EndpointAddress {
        ip,
        hostname: hostname_for(pod, svc),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
    };
    let service_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let mut ports: Vec<EndpointPort> = service_ports
        .iter()
        .filter_map(|sp| {
            Some(EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port: find_port(pod, sp)?,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    // Headless Services may have no ports; otherwise a pod serving none of them is left out.
    if ports.is_empty() && !(service_ports.is_empty() && is_headless(svc)) {
        return None;
    }
    ports.sort_by_key(port_sort_key);
    Some(Member {
        address,
        ready: publish_not_ready || pods::is_ready(pod),
        ports,
    })
}

/// The subsets for `svc` over `pods`: addresses grouped by the set of ports they serve, each
/// list sorted, as Kubernetes' `RepackSubsets` leaves them.
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    type Group = (
        Vec<EndpointPort>,
        Vec<EndpointAddress>,
        Vec<EndpointAddress>,
    );
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Group> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for pod in pods {
        let Some(m) = member(svc, pod) else { continue };
        if !seen.insert(m.address.ip.clone()) {
            continue;
        }
        let key = m.ports.iter().map(port_sort_key).collect();
        let group = groups
            .entry(key)
            .or_insert_with(|| (m.ports.clone(), Vec::new(), Vec::new()));
        if m.ready {
            group.1.push(m.address);
        } else {
            group.2.push(m.address);
        }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// Cuts `subsets` to [`MAX_CAPACITY`] addresses, ready ones first, each subset keeping its
/// share (Kubernetes' `truncateEndpoints`). Returns whether anything was cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let len = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| len(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| len(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let cut_ready = ready > MAX_CAPACITY;
    let (max, total) = if cut_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut left = max;
    for s in subsets.iter_mut() {
        let list = if cut_ready {
            s.not_ready_addresses = None;
            &mut s.addresses
        } else {
            &mut s.not_ready_addresses
        };
        let n = len(list);
        let share = (n * max).div_ceil(total).min(left);
        if let Some(l) = list.as_mut() {
            l.truncate(share);
            if l.is_empty() {
                *list = None;
            }
        }
        left -= len(list);
    }
    true
}

/// The labels of a Service's Endpoints: the Service's, plus the headless marker.
fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// `existing` (or a new object) as it should be; None when `existing` already is.
pub fn desired(
    svc: &Service,
    pods: &[Arc<Pod>],
    existing: Option<&Endpoints>,
) -> Option<Endpoints> {
    let mut subsets = subsets(svc, pods);
    let truncated = truncate(&mut subsets);
    let labels = labels(svc);
    if let Some(current) = existing {
        let annotated = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION))
            .map(String::as_str);
        let same = current.subsets.clone().unwrap_or_default() == subsets
            && current.metadata.labels.clone().unwrap_or_default() == labels
            && annotated == truncated.then_some("truncated");
        if same {
            return None;
        }
    }
    let mut ep = existing.cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        ..Endpoints::default()
    });
    ep.subsets = Some(subsets);
    ep.metadata.labels = Some(labels);
    let annotations = ep.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    if annotations.is_empty() {
        ep.metadata.annotations = None;
    }
    Some(ep)
}

impl Reconciler for EndpointsController {
    type Error = EndpointsError;

    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn prepare(&self) -> Result<(), EndpointsError> {
        for (kind, synced) in &self.synced {
            synced.wait(kind).await?;
        }
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, EndpointsError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let api = Api::<Endpoints>::namespaced(self.client.clone(), ns);
        let err = |verb, source| EndpointsError::Write {
            verb,
            key: key.to_string(),
            source,
        };
        let existing = self.endpoints.get(&ObjectRef::new(name).within(ns));
        let Some(svc) = self.services.get(&ObjectRef::new(name).within(ns)) else {
            // The Service is gone: so are its endpoints, as Kubernetes does.
            if existing.is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(err("deleting", e)),
                }
            }
            return Ok(Action::Done);
        };
        if !is_managed(&svc) {
            return Ok(Action::Done);
        }
        let pods = self.pods.state_filter(|p| selects(&svc, p));
        let Some(want) = desired(&svc, &pods, existing.as_deref()) else {
            return Ok(Action::Done);
        };
        let pp = PostParams::default();
        let result = if existing.is_some() {
            api.replace(name, &pp, &want).await.map(|_| ())
        } else {
            api.create(&pp, &want).await.map(|_| ())
        };
        match result {
            Ok(()) => Ok(Action::Done),
            // Created meanwhile (the cache lags): the Endpoints event brings the key back.
            Err(e) if is_conflict(&e) && existing.is_none() => {
                Ok(Action::RequeueAfter(std::time::Duration::from_millis(200)))
            }
            Err(e) if is_namespace_terminating(&e) => Ok(Action::Done),
            Err(e) => Err(err(
                if existing.is_some() {
                    "updating"
                } else {
                    "creating"
                },
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod(i: usize, ready: bool, named: bool) -> Arc<Pod> {
        let ports = if named {
            json!([{"name": "http", "containerPort": 8080}])
        } else {
            json!([])
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("u{i}"),
                    "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": ports}]},
                "status": {"phase": "Running", "podIP": format!("10.1.{}.{}", i / 250, i % 250 + 1),
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .unwrap(),
        )
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn addresses_split_by_readiness_and_port_set() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.9",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                      {"name": "admin", "port": 81, "targetPort": 9000, "protocol": "TCP"}]}));
        let pods = vec![pod(1, true, true), pod(2, false, true), pod(3, true, false)];
        let subsets = subsets(&svc, &pods);
        assert_eq!(subsets.len(), 2);
        let both = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap().len() == 2)
            .unwrap();
        assert_eq!(ips(&both.addresses), ["10.1.0.2"]);
        assert_eq!(ips(&both.not_ready_addresses), ["10.1.0.3"]);
        let admin_only = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap().len() == 1)
            .unwrap();
        assert_eq!(ips(&admin_only.addresses), ["10.1.0.4"]);
        let ep = desired(&svc, &pods, None).unwrap();
        assert_eq!(ep.metadata.labels.unwrap().get("app").unwrap(), "web");
        assert!(ep.metadata.annotations.is_none());
    }

    #[test]
    fn headless_without_ports_and_unchanged_objects() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let pods = vec![pod(1, true, false)];
        let ep = desired(&svc, &pods, None).unwrap();
        assert_eq!(
            ep.metadata
                .labels
                .as_ref()
                .unwrap()
                .get(HEADLESS_LABEL)
                .unwrap(),
            ""
        );
        let subsets = ep.subsets.as_ref().unwrap();
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        assert!(desired(&svc, &pods, Some(&ep)).is_none());
        // A terminating pod leaves unless not-ready addresses are published.
        let mut gone = (*pods[0]).clone();
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let after = desired(&svc, &[Arc::new(gone)], Some(&ep)).unwrap();
        assert!(after.subsets.unwrap().is_empty());
    }

    #[test]
    fn over_capacity_keeps_ready_addresses_first() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.9",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}));
        let pods: Vec<_> = (0..1100).map(|i| pod(i, i < 900, true)).collect();
        let ep = desired(&svc, &pods, None).unwrap();
        let s = &ep.subsets.as_ref().unwrap()[0];
        assert_eq!(ips(&s.addresses).len(), 900);
        assert_eq!(ips(&s.not_ready_addresses).len(), 100);
        assert_eq!(
            ep.metadata.annotations.as_ref().unwrap()[OVER_CAPACITY_ANNOTATION],
            "truncated"
        );
        assert!(desired(&svc, &pods, Some(&ep)).is_none());
        let all_ready: Vec<_> = (0..1100).map(|i| pod(i, true, true)).collect();
        let ep = desired(&svc, &all_ready, Some(&ep)).unwrap();
        let s = &ep.subsets.as_ref().unwrap()[0];
        assert_eq!(
            (ips(&s.addresses).len(), s.not_ready_addresses.is_none()),
            (1000, true)
        );
        // Back under capacity: the annotation goes.
        let few: Vec<_> = (0..3).map(|i| pod(i, true, true)).collect();
        let ep = desired(&svc, &few, Some(&ep)).unwrap();
        assert!(ep.metadata.annotations.is_none());
    }
}
