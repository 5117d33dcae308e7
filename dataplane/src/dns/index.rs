//! The in-memory view of Services and EndpointSlices that DNS answers are built from.
//!
//! Only what DNS needs is kept: a Service's kind, its IPv4 ClusterIPs and named ports, and per
//! EndpointSlice the IPv4 endpoints (ready or not, with their hostnames) and the slice's ports.
//! Keys are lowercased because DNS matching is case-insensitive.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's address shape, as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    /// A ClusterIP (or NodePort/LoadBalancer) Service: A records are its IPv4 ClusterIPs.
    ClusterIp(Vec<Ipv4Addr>),
    /// `clusterIP: None`: A records are the ready endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to this name.
    ExternalName(String),
}

/// One port, named or not (only named ports get SRV records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortEntry {
    pub name: String,
    /// Lowercased: `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceEntry {
    pub kind: ServiceKind,
    pub ports: Vec<PortEntry>,
    /// `spec.publishNotReadyAddresses`: not-ready endpoints are published too.
    pub publish_not_ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointEntry {
    pub addresses: Vec<Ipv4Addr>,
    /// Lowercased `hostname`, if the endpoint has one.
    pub hostname: Option<String>,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceEntry {
    pub endpoints: Vec<EndpointEntry>,
    pub ports: Vec<PortEntry>,
}

/// `(namespace, name)`, lowercased.
pub(crate) type Key = (String, String);

#[derive(Debug, Default)]
pub(crate) struct IndexState {
    pub services: HashMap<Key, ServiceEntry>,
    /// Per Service `(namespace, service)`, its slices by slice name.
    pub slices: HashMap<Key, BTreeMap<String, SliceEntry>>,
    /// Slice `(namespace, slice)` → the service it was filed under, so a removal (or a relabel)
    /// finds it.
    slice_owner: HashMap<Key, String>,
}

/// Services and EndpointSlices for cluster DNS; cheap to clone (shared).
///
/// Updated by [`DnsIndex::upsert_service`] and friends (normally from
/// [`run_dns_sync`](super::run_dns_sync)); read by [`DnsServer`](super::DnsServer).
#[derive(Debug, Clone)]
pub struct DnsIndex {
    state: Arc<RwLock<IndexState>>,
    /// Bumped after every change, for whoever waits on one ([`DnsIndex::changes`]).
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for DnsIndex {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            generation: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl DnsIndex {
    /// A receiver that sees every change to the index (its value counts them).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, IndexState> {
        // A poisoned lock only means a writer panicked mid-update of plain maps; the data is
        // still usable for answering.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a Service. Services without a namespace or name are ignored.
    pub fn upsert_service(&self, svc: &Service) {
        self.upsert_service_quietly(svc);
        self.changed();
    }

    fn upsert_service_quietly(&self, svc: &Service) {
        let Some(key) = object_key(
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            return;
        };
        let entry = service_entry(svc);
        self.write().services.insert(key, entry);
    }

    /// Removes a Service (its EndpointSlices stay until they are removed themselves).
    pub fn remove_service(&self, svc: &Service) {
        self.remove_service_quietly(svc);
        self.changed();
    }

    fn remove_service_quietly(&self, svc: &Service) {
        if let Some(key) = object_key(
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) {
            self.write().services.remove(&key);
        }
    }

    /// Adds or replaces an EndpointSlice. Only `addressType: IPv4` slices carrying the
    /// `kubernetes.io/service-name` label are kept.
    pub fn upsert_endpoint_slice(&self, slice: &EndpointSlice) {
        self.upsert_endpoint_slice_quietly(slice);
        self.changed();
    }

    fn upsert_endpoint_slice_quietly(&self, slice: &EndpointSlice) {
        let Some(key) = object_key(
            slice.metadata.namespace.as_deref(),
            slice.metadata.name.as_deref(),
        ) else {
            return;
        };
        let mut state = self.write();
        state.remove_slice(&key);
        if slice.address_type != "IPv4" {
            return;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|s| s.to_ascii_lowercase())
        else {
            return;
        };
        let entry = slice_entry(slice);
        state
            .slices
            .entry((key.0.clone(), service.clone()))
            .or_default()
            .insert(key.1.clone(), entry);
        state.slice_owner.insert(key, service);
    }

    /// Removes an EndpointSlice.
    pub fn remove_endpoint_slice(&self, slice: &EndpointSlice) {
        self.remove_endpoint_slice_quietly(slice);
        self.changed();
    }

    fn remove_endpoint_slice_quietly(&self, slice: &EndpointSlice) {
        if let Some(key) = object_key(
            slice.metadata.namespace.as_deref(),
            slice.metadata.name.as_deref(),
        ) {
            self.write().remove_slice(&key);
        }
    }

    /// Replaces every Service with `services` (a watcher's relist).
    pub fn replace_services(&self, services: &[Service]) {
        self.replace_services_quietly(services);
        self.changed();
    }

    fn replace_services_quietly(&self, services: &[Service]) {
        let fresh = Self::new();
        for svc in services {
            fresh.upsert_service_quietly(svc);
        }
        let fresh = std::mem::take(&mut fresh.write().services);
        self.write().services = fresh;
    }

    /// Replaces every EndpointSlice with `slices` (a watcher's relist).
    pub fn replace_endpoint_slices(&self, slices: &[EndpointSlice]) {
        self.replace_endpoint_slices_quietly(slices);
        self.changed();
    }

    fn replace_endpoint_slices_quietly(&self, slices: &[EndpointSlice]) {
        let fresh = Self::new();
        for slice in slices {
            fresh.upsert_endpoint_slice_quietly(slice);
        }
        let mut fresh = std::mem::take(&mut *fresh.write());
        let mut state = self.write();
        state.slices = std::mem::take(&mut fresh.slices);
        state.slice_owner = std::mem::take(&mut fresh.slice_owner);
    }

    /// The indexed Services as sorted `namespace/name` (for logs and tests).
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .services
            .keys()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect();
        names.sort();
        names
    }

    /// The indexed EndpointSlices as sorted `namespace/name` (for logs and tests).
    pub fn endpoint_slice_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .slice_owner
            .keys()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect();
        names.sort();
        names
    }
}

impl IndexState {
    fn remove_slice(&mut self, key: &Key) {
        let Some(service) = self.slice_owner.remove(key) else {
            return;
        };
        let svc_key = (key.0.clone(), service);
        if let Some(slices) = self.slices.get_mut(&svc_key) {
            slices.remove(&key.1);
            if slices.is_empty() {
                self.slices.remove(&svc_key);
            }
        }
    }

    /// Whether any Service lives in `namespace` (lowercased).
    pub(crate) fn has_namespace(&self, namespace: &str) -> bool {
        self.services.keys().any(|(ns, _)| ns == namespace)
    }

    /// The endpoints DNS publishes for a Service: ready ones, or all of them with
    /// `publishNotReadyAddresses`; each with the port list of its slice.
    pub(crate) fn published_endpoints(
        &self,
        key: &Key,
        svc: &ServiceEntry,
    ) -> Vec<(&EndpointEntry, &[PortEntry])> {
        let Some(slices) = self.slices.get(key) else {
            return Vec::new();
        };
        slices
            .values()
            .flat_map(|s| s.endpoints.iter().map(move |e| (e, s.ports.as_slice())))
            .filter(|(e, _)| e.ready || svc.publish_not_ready)
            .collect()
    }
}

fn object_key(namespace: Option<&str>, name: Option<&str>) -> Option<Key> {
    Some((namespace?.to_ascii_lowercase(), name?.to_ascii_lowercase()))
}

fn service_entry(svc: &Service) -> ServiceEntry {
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(
            spec.external_name
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        )
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let ips = spec
            .cluster_ips
            .clone()
            .filter(|ips| !ips.is_empty())
            .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
            .unwrap_or_default();
        ServiceKind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(PortEntry {
                name: p.name.unwrap_or_default().to_ascii_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    ServiceEntry {
        kind,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    }
}

fn slice_entry(slice: &EndpointSlice) -> SliceEntry {
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| EndpointEntry {
            addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            hostname: e.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
            // A nil `ready` means unknown, which consumers must read as ready (discovery/v1).
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortEntry {
                name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    SliceEntry { endpoints, ports }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn service(
        ns: &str,
        name: &str,
        cluster_ip: &str,
        ports: &[(&str, &str, i32)],
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, proto, port)| ServicePort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            protocol: Some(proto.to_string()),
                            port: *port,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Endpoints as `(ip, hostname, ready)`.
    pub(crate) fn slice(
        ns: &str,
        name: &str,
        service: &str,
        endpoints: &[(&str, Option<&str>, bool)],
        ports: &[(&str, &str, i32)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(ip, host, ready)| Endpoint {
                    addresses: vec![ip.to_string()],
                    hostname: host.map(str::to_string),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, proto, port)| EndpointPort {
                        name: Some(n.to_string()),
                        protocol: Some(proto.to_string()),
                        port: Some(*port),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn service_kinds_are_recognised() {
        let index = DnsIndex::new();
        index.upsert_service(&service(
            "Default",
            "Web",
            "10.96.0.10",
            &[("http", "TCP", 80)],
        ));
        let mut headless = service("default", "db", "None", &[]);
        index.upsert_service(&headless);
        headless.metadata.name = Some("ext".into());
        let spec = headless.spec.as_mut().expect("spec");
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("Example.COM.".into());
        index.upsert_service(&headless);

        let state = index.read();
        let web = &state.services[&("default".into(), "web".into())];
        assert_eq!(
            web.kind,
            ServiceKind::ClusterIp(vec![Ipv4Addr::new(10, 96, 0, 10)])
        );
        assert_eq!(web.ports[0].protocol, "tcp");
        assert_eq!(
            state.services[&("default".into(), "db".into())].kind,
            ServiceKind::Headless
        );
        assert_eq!(
            state.services[&("default".into(), "ext".into())].kind,
            ServiceKind::ExternalName("example.com".into())
        );
    }

    #[test]
    fn slices_are_filed_under_their_service_and_removed() {
        let index = DnsIndex::new();
        let a = slice("ns", "db-a", "db", &[("10.0.0.1", None, true)], &[]);
        let b = slice("ns", "db-b", "db", &[("10.0.0.2", None, false)], &[]);
        index.upsert_endpoint_slice(&a);
        index.upsert_endpoint_slice(&b);
        assert_eq!(index.read().slices[&("ns".into(), "db".into())].len(), 2);

        // Relabelled to another service: moves.
        let moved = slice("ns", "db-b", "other", &[("10.0.0.2", None, true)], &[]);
        index.upsert_endpoint_slice(&moved);
        assert_eq!(index.read().slices[&("ns".into(), "db".into())].len(), 1);

        index.remove_endpoint_slice(&a);
        index.remove_endpoint_slice(&moved);
        assert!(index.read().slices.is_empty());
    }

    #[test]
    fn non_ipv4_and_unlabelled_slices_are_ignored() {
        let index = DnsIndex::new();
        let mut v6 = slice("ns", "s6", "db", &[("fd00::1", None, true)], &[]);
        v6.address_type = "IPv6".into();
        index.upsert_endpoint_slice(&v6);
        let mut unlabelled = slice("ns", "s", "db", &[("10.0.0.1", None, true)], &[]);
        unlabelled.metadata.labels = None;
        index.upsert_endpoint_slice(&unlabelled);
        assert!(index.read().slices.is_empty());
    }

    #[test]
    fn replace_drops_what_the_relist_no_longer_has() {
        let index = DnsIndex::new();
        index.upsert_service(&service("ns", "old", "10.96.0.1", &[]));
        index.upsert_endpoint_slice(&slice(
            "ns",
            "old-x",
            "old",
            &[("10.0.0.1", None, true)],
            &[],
        ));
        index.replace_services(&[service("ns", "new", "10.96.0.2", &[])]);
        index.replace_endpoint_slices(&[]);
        let state = index.read();
        assert_eq!(state.services.len(), 1);
        assert!(state.services.contains_key(&("ns".into(), "new".into())));
        assert!(state.slices.is_empty());
    }

    #[test]
    fn not_ready_endpoints_are_published_only_when_asked() {
        let index = DnsIndex::new();
        let mut svc = service("ns", "db", "None", &[]);
        index.upsert_service(&svc);
        index.upsert_endpoint_slice(&slice(
            "ns",
            "db-a",
            "db",
            &[("10.0.0.1", None, true), ("10.0.0.2", None, false)],
            &[],
        ));
        let key: Key = ("ns".into(), "db".into());
        {
            let state = index.read();
            assert_eq!(
                state.published_endpoints(&key, &state.services[&key]).len(),
                1
            );
        }
        svc.spec.as_mut().expect("spec").publish_not_ready_addresses = Some(true);
        index.upsert_service(&svc);
        let state = index.read();
        assert_eq!(
            state.published_endpoints(&key, &state.services[&key]).len(),
            2
        );
    }
}
