//! Which slices to create, update and delete so a Service's slices hold exactly its desired
//! endpoints, with as few writes as possible (Kubernetes' `reconcileByPortMapping`): existing
//! slices keep the endpoints they have, changed slices are topped up first, leftovers go into
//! the unchanged slice closest to full or into new slices, and slices that would be deleted are
//! reused instead of creating new ones. Unchanged slices are never rewritten.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::desired::{slice_labels, EndpointKey, PortKey};

/// The only address type this controller writes.
pub const ADDRESS_TYPE: &str = "IPv4";

/// The endpoints a Service should have, grouped by the ports they serve.
#[derive(Debug, Default)]
pub struct Desired {
    groups: BTreeMap<PortKey, Group>,
}

#[derive(Debug)]
struct Group {
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

impl Desired {
    pub fn insert(&mut self, ports: Vec<EndpointPort>, endpoint: Endpoint) {
        let group = self
            .groups
            .entry(PortKey::of(&ports))
            .or_insert_with(|| Group {
                ports,
                endpoints: BTreeMap::new(),
            });
        group.endpoints.insert(EndpointKey::of(&endpoint), endpoint);
    }

    pub fn len(&self) -> usize {
        self.groups.values().map(|g| g.endpoints.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The writes that bring a Service's slices in line.
#[derive(Debug, Default)]
pub struct Plan {
    /// New slices, named by the server from `generateName`.
    pub create: Vec<EndpointSlice>,
    /// Existing slices with their new content (resourceVersion kept for optimistic locking).
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Whether one of the slice's owner references is `svc` (same UID).
pub fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    slice.metadata.owner_references.iter().flatten().any(|o| {
        Some(&o.uid) == svc.metadata.uid.as_ref() && o.kind == "Service" && o.api_version == "v1"
    })
}

fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new, empty slice for `svc` with `ports`.
pub fn new_slice(svc: &Service, ports: Vec<EndpointPort>) -> EndpointSlice {
    let name = svc.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![owner(svc)]),
            ..ObjectMeta::default()
        },
        address_type: ADDRESS_TYPE.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

fn ports_of(slice: &EndpointSlice) -> &[EndpointPort] {
    slice.ports.as_deref().unwrap_or_default()
}

/// An existing placeholder (no endpoints, no ports) that already says what a new one would.
fn same_placeholder(existing: &EndpointSlice, want: &EndpointSlice) -> bool {
    existing.endpoints.is_empty()
        && ports_of(existing).is_empty()
        && existing.address_type == want.address_type
        && existing.metadata.namespace == want.metadata.namespace
        && existing.metadata.labels.clone().unwrap_or_default()
            == want.metadata.labels.clone().unwrap_or_default()
        && existing.metadata.owner_references == want.metadata.owner_references
}

/// The slice among `slices` that ends up closest to full once `n` endpoints are added, if any
/// has room for all of them.
fn slice_to_fill(slices: &[EndpointSlice], n: usize, max: usize) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in slices.iter().enumerate() {
        let Some(room) = max.checked_sub(n + s.endpoints.len()) else {
            continue;
        };
        if best.is_none_or(|(_, r)| room < r) {
            best = Some((i, room));
        }
    }
    best.map(|(i, _)| i)
}

fn fill(slice: &mut EndpointSlice, remaining: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, ep)) = remaining.pop_first() else {
            break;
        };
        slice.endpoints.push(ep);
    }
}

/// The writes that turn `existing` (this controller's live slices for `svc`) into `desired`,
/// with at most `max` endpoints per slice.
pub fn plan(svc: &Service, desired: Desired, existing: &[EndpointSlice], max: usize) -> Plan {
    let max = max.max(1);
    let labels = slice_labels(svc);
    let mut out = Plan::default();
    let mut by_ports: BTreeMap<PortKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        if s.address_type != ADDRESS_TYPE || !owned_by(s, svc) {
            out.delete.push(s.clone());
        } else {
            by_ports
                .entry(PortKey::of(ports_of(s)))
                .or_default()
                .push(s);
        }
    }
    for (key, slices) in &by_ports {
        if !desired.groups.contains_key(key) {
            out.delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }
    for (key, group) in desired.groups {
        let mut remaining = group.endpoints;
        let mut updated: Vec<EndpointSlice> = Vec::new();
        let mut unchanged: Vec<EndpointSlice> = Vec::new();
        for s in by_ports.get(&key).into_iter().flatten() {
            let mut kept = Vec::with_capacity(s.endpoints.len());
            let mut changed = false;
            for ep in &s.endpoints {
                // Taken out once placed: a duplicate in another slice is dropped there.
                if let Some(want) = remaining.remove(&EndpointKey::of(ep)) {
                    changed |= want != *ep;
                    kept.push(want);
                }
            }
            let labels_changed = s.metadata.labels.as_ref() != Some(&labels);
            if changed || kept.len() != s.endpoints.len() {
                if kept.is_empty() {
                    out.delete.push((*s).clone());
                } else {
                    let mut s = (*s).clone();
                    s.endpoints = kept;
                    s.metadata.labels = Some(labels.clone());
                    updated.push(s);
                }
            } else if labels_changed {
                let mut s = (*s).clone();
                s.metadata.labels = Some(labels.clone());
                updated.push(s);
            } else {
                unchanged.push((*s).clone());
            }
        }
        // Slices being written anyway take new endpoints first, fullest first.
        updated.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
        for s in &mut updated {
            fill(s, &mut remaining, max);
        }
        while !remaining.is_empty() {
            let reuse = if remaining.len() < max {
                slice_to_fill(&unchanged, remaining.len(), max)
            } else {
                None
            };
            let mut slice = match reuse {
                Some(i) => unchanged.swap_remove(i),
                None => new_slice(svc, group.ports.clone()),
            };
            fill(&mut slice, &mut remaining, max);
            if slice.metadata.name.is_some() {
                updated.push(slice);
            } else {
                out.create.push(slice);
            }
        }
        out.update.extend(updated);
    }
    // A Service with no endpoints still gets one empty slice, as in Kubernetes.
    if out.delete.len() == existing.len() && out.create.is_empty() {
        let placeholder = new_slice(svc, Vec::new());
        if out.delete.len() == 1 && same_placeholder(&out.delete[0], &placeholder) {
            out.delete.clear();
        } else {
            out.create.push(placeholder);
        }
    }
    // Rewrite slices that would be deleted rather than create new ones.
    let mut i = 0;
    while i < out.delete.len() && !out.create.is_empty() {
        let old = &out.delete[i];
        if old.address_type == ADDRESS_TYPE && owned_by(old, svc) {
            let mut slice = out.create.pop().expect("checked non-empty");
            slice.metadata.name = old.metadata.name.clone();
            slice.metadata.generate_name = None;
            slice.metadata.resource_version = old.metadata.resource_version.clone();
            out.update.push(slice);
            out.delete.remove(i);
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::desired::{endpoint_ports, pod_to_endpoint};
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.9",
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
        }))
        .unwrap()
    }

    fn pod(i: usize, ready: bool, named_port: bool) -> Pod {
        let ports = if named_port {
            json!([{"name": "http", "containerPort": 8080}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {"name": format!("p{i:03}"), "namespace": "ns", "uid": format!("u{i}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": ports}]},
            "status": {"phase": "Running", "podIPs": [{"ip": format!("10.1.{}.{}", i / 200, i % 200 + 1)}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn desired(svc: &Service, pods: &[Pod]) -> Desired {
        let mut d = Desired::default();
        for p in pods {
            d.insert(endpoint_ports(svc, p), pod_to_endpoint(p, None, svc));
        }
        d
    }

    /// Applies a plan the way the server would, naming new slices.
    fn apply(mut existing: Vec<EndpointSlice>, plan: Plan, next: &mut usize) -> Vec<EndpointSlice> {
        existing.retain(|s| {
            !plan
                .delete
                .iter()
                .chain(&plan.update)
                .any(|d| d.metadata.name == s.metadata.name)
        });
        existing.extend(plan.update);
        for mut s in plan.create {
            *next += 1;
            s.metadata.name = Some(format!("web-{next}"));
            existing.push(s);
        }
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        existing
    }

    fn count(slices: &[EndpointSlice]) -> usize {
        slices.iter().map(|s| s.endpoints.len()).sum()
    }

    #[test]
    fn packs_at_most_max_per_slice_and_never_rewrites_unchanged_slices() {
        let svc = service();
        let pods: Vec<Pod> = (0..250).map(|i| pod(i, true, true)).collect();
        let mut n = 0;
        let first = plan(&svc, desired(&svc, &pods), &[], 100);
        assert_eq!((first.create.len(), first.update.len()), (3, 0));
        let slices = apply(Vec::new(), first, &mut n);
        assert!(slices.iter().all(|s| s.endpoints.len() <= 100));
        assert_eq!(count(&slices), 250);
        let s0 = &slices[0];
        assert_eq!(s0.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(s0.address_type, "IPv4");
        assert_eq!(ports_of(s0)[0].port, Some(8080));
        assert!(owned_by(s0, &svc));

        // Same pods: nothing to write.
        assert!(plan(&svc, desired(&svc, &pods), &slices, 100).is_empty());

        // One pod turns unready: exactly one slice is rewritten.
        let mut changed = pods.clone();
        changed[7] = pod(7, false, true);
        let p = plan(&svc, desired(&svc, &changed), &slices, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let ep = p.update[0]
            .endpoints
            .iter()
            .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some("p007"))
            .unwrap();
        assert_eq!(ep.conditions.as_ref().unwrap().ready, Some(false));

        // A removed pod and a new one: the slice that lost one takes the new one.
        let mut swapped = pods.clone();
        swapped.remove(3);
        swapped.push(pod(900, true, true));
        let p = plan(&svc, desired(&svc, &swapped), &slices, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let after = apply(slices.clone(), p, &mut n);
        assert_eq!(count(&after), 250);
        assert!(plan(&svc, desired(&svc, &swapped), &after, 100).is_empty());
    }

    #[test]
    fn pods_without_the_named_port_go_to_a_slice_of_their_own() {
        let svc = service();
        let pods = vec![pod(1, true, true), pod(2, true, false), pod(3, true, true)];
        let p = plan(&svc, desired(&svc, &pods), &[], 100);
        assert_eq!(p.create.len(), 2);
        let mut sizes: Vec<_> = p
            .create
            .iter()
            .map(|s| (ports_of(s).len(), s.endpoints.len()))
            .collect();
        sizes.sort();
        assert_eq!(sizes, [(0, 1), (1, 2)]);
    }

    #[test]
    fn placeholder_for_no_endpoints_is_kept_then_reused() {
        let svc = service();
        let mut n = 0;
        let p = plan(&svc, Desired::default(), &[], 100);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        let slices = apply(Vec::new(), p, &mut n);
        assert!(plan(&svc, Desired::default(), &slices, 100).is_empty());
        // The first endpoints rewrite the placeholder instead of create + delete.
        let p = plan(&svc, desired(&svc, &[pod(1, true, true)]), &slices, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert_eq!(p.update[0].metadata.name.as_deref(), Some("web-1"));
        assert_eq!(p.update[0].endpoints.len(), 1);
        // All pods gone: the slice is emptied back into the placeholder.
        let slices = apply(slices, p, &mut n);
        let p = plan(&svc, Desired::default(), &slices, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert!(p.update[0].endpoints.is_empty() && ports_of(&p.update[0]).is_empty());
    }

    #[test]
    fn slices_of_another_service_uid_are_replaced() {
        let svc = service();
        let mut old = new_slice(&svc, Vec::new());
        old.metadata.name = Some("web-old".into());
        old.metadata.owner_references.as_mut().unwrap()[0].uid = "previous".into();
        let p = plan(&svc, desired(&svc, &[pod(1, true, true)]), &[old], 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 1));
    }

    #[test]
    fn leftovers_fill_the_unchanged_slice_closest_to_full() {
        let svc = service();
        let pods: Vec<Pod> = (0..150).map(|i| pod(i, true, true)).collect();
        let mut n = 0;
        let slices = apply(
            Vec::new(),
            plan(&svc, desired(&svc, &pods), &[], 100),
            &mut n,
        );
        let mut more = pods.clone();
        more.extend((150..160).map(|i| pod(i, true, true)));
        let p = plan(&svc, desired(&svc, &more), &slices, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert_eq!(p.update[0].endpoints.len(), 60);
    }
}
