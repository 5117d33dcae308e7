//! What one Service needs on this node: its frontends and, for each, the endpoints it forwards
//! to — computed from the Service and its EndpointSlices alone, with kube-proxy's rules for
//! readiness and traffic policies.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use super::{BackendAddr, Frontend, ServiceKey};
use crate::abi;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service with this label is forwarded by the proxy it names, never by kube-proxy (nor us).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// kube-apiserver's default for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// The service an EndpointSlice belongs to, from its namespace and `kubernetes.io/service-name`.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some(ServiceKey::new(namespace, name.as_str()))
}

/// The service's key from its metadata.
pub fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The frontends `svc` needs on node `node_name`, sorted by key, given the EndpointSlices of
/// the service (slices of other services or address types are ignored). Headless and
/// ExternalName services, and those labelled for another proxy, need none.
///
/// Per service port: a frontend on each IPv4 ClusterIP (internalTrafficPolicy applies), on each
/// externalIP and load-balancer ingress IP (externalTrafficPolicy applies, as in kube-proxy),
/// and for NodePort/LoadBalancer services one on address 0 for the nodePort, hashed with Maglev.
pub fn desired_frontends<'a>(
    svc: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: &str,
) -> Vec<Frontend> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" || spec.cluster_ip.as_deref() == Some("None") {
        return Vec::new();
    }
    let labels = svc.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL)) {
        return Vec::new();
    }
    let key = service_key(svc);
    let slices: Vec<&EndpointSlice> = slices
        .into_iter()
        .filter(|s| s.address_type == "IPv4" && slice_service(s).as_ref() == Some(&key))
        .collect();

    let cluster_ips = ipv4s(
        spec.cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter()),
    );
    let lb_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        // With ipMode Proxy the load balancer sends traffic to the nodes, not to its IP
        // (KEP-1860): kube-proxy leaves such IPs alone.
        .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.as_ref());
    let external_ips = ipv4s(spec.external_ips.iter().flatten().chain(lb_ips));
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let has_node_port = kind == "NodePort" || kind == "LoadBalancer";
    let (affinity_flag, affinity_timeout) = if spec.session_affinity.as_deref() == Some("ClientIP")
    {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
        (abi::SVC_AFFINITY, timeout)
    } else {
        (0, 0)
    };

    // BTreeMap: sorted output, and the first claim on a key wins if two ports collide.
    let mut out: BTreeMap<abi::SvcKey, Frontend> = BTreeMap::new();
    for port in spec.ports.iter().flatten() {
        let Some(proto) = protocol(port) else {
            tracing::debug!(service = %key, port = port.port, protocol = ?port.protocol, "services: skipping port with unsupported protocol");
            continue;
        };
        let Ok(svc_port) = u16::try_from(port.port) else {
            continue;
        };
        let endpoints = port_endpoints(&slices, port, proto);
        let mut add = |addr: Ipv4Addr, port: u16, flags: u16, local: bool| {
            let fe_key = abi::SvcKey::new(addr, port, proto);
            out.entry(fe_key).or_insert_with(|| Frontend {
                key: fe_key,
                flags: flags | affinity_flag,
                affinity_timeout,
                backends: select(&endpoints, local.then_some(node_name)),
            });
        };
        for ip in &cluster_ips {
            add(*ip, svc_port, 0, internal_local);
        }
        for ip in &external_ips {
            add(*ip, svc_port, 0, external_local);
        }
        if has_node_port {
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                let flags = abi::SVC_NODEPORT | abi::SVC_MAGLEV;
                add(Ipv4Addr::UNSPECIFIED, node_port, flags, external_local);
            }
        }
    }
    out.into_values().collect()
}

fn ipv4s<'a>(addrs: impl Iterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let set: BTreeSet<Ipv4Addr> = addrs
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_unspecified())
        .collect();
    set.into_iter().collect()
}

fn protocol(port: &ServicePort) -> Option<u8> {
    match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Some(abi::PROTO_TCP),
        "UDP" => Some(abi::PROTO_UDP),
        _ => None,
    }
}

/// An endpoint address for one service port, with what kube-proxy's selection needs.
#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    backend: BackendAddr,
    node: Option<&'a str>,
    ready: bool,
    serving_terminating: bool,
}

/// Every endpoint address of the slices, paired with the slice port that carries the service
/// port's name and protocol.
fn port_endpoints<'a>(
    slices: &[&'a EndpointSlice],
    port: &ServicePort,
    proto: u8,
) -> Vec<Candidate<'a>> {
    let name = port.name.as_deref().unwrap_or("");
    let proto_name = port.protocol.as_deref().unwrap_or("TCP");
    let mut out = Vec::new();
    for slice in slices {
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == name
                && p.protocol.as_deref().unwrap_or("TCP") == proto_name
        });
        let Some(target) = target
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let (ready, serving, terminating) = conditions(ep);
            // Like kube-proxy, only the first address: the API says consumers may assume the
            // others are the same endpoint.
            let Some(addr) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            out.push(Candidate {
                backend: BackendAddr::new(addr, target, proto),
                node: ep.node_name.as_deref(),
                ready,
                serving_terminating: serving && terminating,
            });
        }
    }
    out
}

/// (ready, serving, terminating) with the API's defaults for unset conditions.
fn conditions(ep: &Endpoint) -> (bool, bool, bool) {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    (ready, serving, terminating)
}

/// The ready endpoints (only this node's when `local` is set); if there are none, the serving
/// and terminating ones, so connections drain to pods that still answer (KEP-1669).
fn select(candidates: &[Candidate<'_>], local: Option<&str>) -> Vec<BackendAddr> {
    let in_scope = |c: &&Candidate<'_>| local.is_none_or(|node| c.node == Some(node));
    let ready: BTreeSet<BackendAddr> = candidates
        .iter()
        .filter(in_scope)
        .filter(|c| c.ready)
        .map(|c| c.backend)
        .collect();
    if !ready.is_empty() {
        return ready.into_iter().collect();
    }
    let draining: BTreeSet<BackendAddr> = candidates
        .iter()
        .filter(in_scope)
        .filter(|c| c.serving_terminating)
        .map(|c| c.backend)
        .collect();
    draining.into_iter().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub(crate) fn service(name: &str, spec: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": spec,
        }))
        .expect("service")
    }

    /// An endpoint: (address, node, ready, serving, terminating).
    pub(crate) type Ep<'a> = (&'a str, &'a str, Option<bool>, Option<bool>, Option<bool>);

    /// A slice of `svc` with one port named `port_name` (TCP, `port`) and endpoints given as
    /// (address, node, ready, serving, terminating).
    pub(crate) fn slice(
        svc: &str,
        name: &str,
        port_name: &str,
        port: u16,
        endpoints: &[Ep<'_>],
    ) -> EndpointSlice {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(addr, node, ready, serving, terminating)| {
                json!({
                    "addresses": [addr],
                    "nodeName": node,
                    "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                })
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {
                "namespace": "default",
                "name": name,
                "labels": {SERVICE_NAME_LABEL: svc},
            },
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    fn ready(addr: &str) -> Ep<'_> {
        (addr, "n1", Some(true), Some(true), Some(false))
    }

    fn addrs(fe: &Frontend) -> Vec<String> {
        fe.backends
            .iter()
            .map(|b| format!("{}:{}", b.addr, b.port))
            .collect()
    }

    fn web() -> Service {
        service(
            "web",
            json!({
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10", "fd00::10"],
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "sig", "port": 9, "protocol": "SCTP"},
                ],
            }),
        )
    }

    #[test]
    fn cluster_ip_ports_match_slice_ports_by_name() {
        let a = slice(
            "web",
            "web-a",
            "http",
            8080,
            &[ready("10.244.0.2"), ready("10.244.0.1")],
        );
        let b = slice(
            "web",
            "web-b",
            "http",
            8080,
            &[ready("10.244.0.1"), ready("10.244.1.5")],
        );
        let fes = desired_frontends(&web(), [&a, &b], "n1");
        // UDP 53 has no slice port named "dns": a frontend with no backends, refusing fast.
        assert_eq!(fes.len(), 2, "{fes:?}");
        let http = fes
            .iter()
            .find(|f| f.key.proto == abi::PROTO_TCP)
            .expect("tcp");
        assert_eq!(
            http.key,
            abi::SvcKey::new(Ipv4Addr::new(10, 96, 0, 10), 80, abi::PROTO_TCP)
        );
        assert_eq!(http.flags, 0);
        assert_eq!(
            addrs(http),
            ["10.244.0.1:8080", "10.244.0.2:8080", "10.244.1.5:8080"]
        );
        let dns = fes
            .iter()
            .find(|f| f.key.proto == abi::PROTO_UDP)
            .expect("udp");
        assert!(dns.backends.is_empty());
    }

    #[test]
    fn other_services_and_ipv6_slices_are_ignored() {
        let other = slice("api", "api-a", "http", 8080, &[ready("10.244.0.9")]);
        let mut v6 = slice("web", "web-v6", "http", 8080, &[ready("10.244.0.8")]);
        v6.address_type = "IPv6".into();
        let fes = desired_frontends(&web(), [&other, &v6], "n1");
        assert!(fes.iter().all(|f| f.backends.is_empty()));
    }

    #[test]
    fn unnamed_port_matches_unnamed_slice_port() {
        let svc = service(
            "one",
            json!({"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}),
        );
        let mut s = slice("one", "one-a", "", 80, &[ready("10.244.0.4")]);
        s.ports.as_mut().expect("ports")[0].name = None;
        let fes = desired_frontends(&svc, [&s], "n1");
        assert_eq!(addrs(&fes[0]), ["10.244.0.4:80"]);
    }

    #[test]
    fn not_ready_endpoints_are_left_out_and_nil_ready_counts_as_ready() {
        let s = slice(
            "web",
            "web-a",
            "http",
            8080,
            &[
                ("10.244.0.1", "n1", Some(false), Some(false), Some(false)),
                ("10.244.0.2", "n1", None, None, None),
                ("10.244.0.3", "n1", Some(false), Some(true), Some(true)),
            ],
        );
        let fes = desired_frontends(&web(), [&s], "n1");
        assert_eq!(addrs(&fes[1]), ["10.244.0.2:8080"]);
    }

    #[test]
    fn serving_terminating_endpoints_stand_in_when_none_is_ready() {
        let s = slice(
            "web",
            "web-a",
            "http",
            8080,
            &[
                ("10.244.0.1", "n1", Some(false), Some(false), Some(true)),
                ("10.244.0.3", "n1", Some(false), Some(true), Some(true)),
                ("10.244.0.4", "n1", Some(false), Some(true), Some(false)),
            ],
        );
        let fes = desired_frontends(&web(), [&s], "n1");
        assert_eq!(addrs(&fes[1]), ["10.244.0.3:8080"]);
    }

    #[test]
    fn traffic_policies_keep_local_endpoints() {
        let svc = service(
            "np",
            json!({
                "type": "NodePort",
                "clusterIP": "10.96.0.7",
                "externalIPs": ["192.0.2.7"],
                "internalTrafficPolicy": "Local",
                "externalTrafficPolicy": "Local",
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
            }),
        );
        let s = slice(
            "np",
            "np-a",
            "http",
            8080,
            &[
                ready("10.244.0.1"),
                ("10.244.1.1", "n2", Some(true), None, None),
            ],
        );
        let fes = desired_frontends(&svc, [&s], "n1");
        assert_eq!(fes.len(), 3);
        for fe in &fes {
            assert_eq!(addrs(fe), ["10.244.0.1:8080"], "{:?}", fe.key);
        }
        // On a node without local endpoints the frontends refuse rather than forward away.
        let fes = desired_frontends(&svc, [&s], "n3");
        assert!(fes.iter().all(|f| f.backends.is_empty()));
    }

    #[test]
    fn node_port_frontend_is_address_zero_with_maglev() {
        let svc = service(
            "lb",
            json!({
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.8",
                "ports": [{"name": "http", "port": 80, "nodePort": 31000}],
            }),
        );
        let mut svc = svc;
        svc.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [
            {"ip": "203.0.113.4"},
            {"hostname": "x"},
            {"ip": "203.0.113.5", "ipMode": "Proxy"},
        ]}}))
        .expect("status");
        let s = slice(
            "lb",
            "lb-a",
            "http",
            8080,
            &[ready("10.244.0.1"), ready("10.244.1.1")],
        );
        let fes = desired_frontends(&svc, [&s], "n1");
        let keys: Vec<(Ipv4Addr, u16, u16)> = fes
            .iter()
            .map(|f| (f.key.ip(), f.key.host_port(), f.flags))
            .collect();
        assert!(keys.contains(&(
            Ipv4Addr::UNSPECIFIED,
            31000,
            abi::SVC_NODEPORT | abi::SVC_MAGLEV
        )));
        assert!(keys.contains(&(Ipv4Addr::new(10, 96, 0, 8), 80, 0)));
        assert!(keys.contains(&(Ipv4Addr::new(203, 0, 113, 4), 80, 0)));
        assert_eq!(fes.len(), 3);
        assert!(fes.iter().all(|f| f.backends.len() == 2));
    }

    #[test]
    fn client_ip_affinity_sets_flag_and_timeout() {
        let mut spec = json!({
            "clusterIP": "10.96.0.9",
            "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": 80}],
        });
        let fes = desired_frontends(&service("a", spec.clone()), [], "n1");
        assert_eq!(
            (fes[0].flags, fes[0].affinity_timeout),
            (abi::SVC_AFFINITY, 10800)
        );
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        let fes = desired_frontends(&service("a", spec), [], "n1");
        assert_eq!(
            (fes[0].flags, fes[0].affinity_timeout),
            (abi::SVC_AFFINITY, 60)
        );
    }

    #[test]
    fn headless_external_name_and_other_proxies_services_need_nothing() {
        let headless = service(
            "h",
            json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}),
        );
        let s = slice("h", "h-a", "http", 80, &[ready("10.244.0.1")]);
        assert!(desired_frontends(&headless, [&s], "n1").is_empty());
        let mut other = service(
            "o",
            json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}),
        );
        other.metadata.labels =
            Some([(SERVICE_PROXY_NAME_LABEL.to_string(), "x".to_string())].into());
        assert!(desired_frontends(&other, [], "n1").is_empty());
        let ext = service(
            "e",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        );
        assert!(desired_frontends(&ext, [], "n1").is_empty());
    }

    #[test]
    fn only_an_endpoints_first_address_counts() {
        let mut s = slice("web", "web-a", "http", 8080, &[ready("10.244.0.1")]);
        s.endpoints[0].addresses.push("10.244.0.9".into());
        let fes = desired_frontends(&web(), [&s], "n1");
        assert_eq!(addrs(&fes[1]), ["10.244.0.1:8080"]);
    }

    #[test]
    fn slice_service_uses_the_label() {
        let s = slice("web", "web-abc", "http", 80, &[]);
        assert_eq!(slice_service(&s), Some(ServiceKey::new("default", "web")));
        let mut unlabelled = s.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(slice_service(&unlabelled), None);
    }
}
