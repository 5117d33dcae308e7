//! What a Service's endpoints should be, pod by pod, as Kubernetes computes them: which pods
//! count, their conditions, addresses, ports (named target ports resolved per pod), hostname and
//! zone. Shared with the legacy Endpoints controller.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pods;

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value for [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Set (empty) on the slices and Endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The Node label endpoints take their zone from.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Kubernetes' default `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Whether the Service's pods are chosen by this controller: it has a selector and is not
/// ExternalName. Others get their endpoints from whoever created the Service.
pub fn is_managed(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() != Some("ExternalName") && spec.selector.is_some()
}

/// Whether the Service selects `pod` (same namespace, every selector label present). An empty
/// selector selects every pod, as in Kubernetes.
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    if svc.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// No cluster IP: `None` or unset (Kubernetes' `!IsServiceIPSet`).
pub fn is_headless(svc: &Service) -> bool {
    matches!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        None | Some("") | Some("None")
    )
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Kubernetes' `ShouldPodBeInEndpoints`: not finished, has an IP, and (unless
/// `include_terminating`) not being deleted.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if is_terminal(pod) {
        return false;
    }
    let status = pod.status.as_ref();
    let has_ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty())
        || status
            .and_then(|s| s.pod_ips.as_deref())
            .is_some_and(|ips| !ips.is_empty());
    if !has_ip {
        return false;
    }
    include_terminating || !pods::is_terminating(pod)
}

/// A pod's hostname is published when its subdomain names the Service.
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && svc.metadata.namespace == pod.metadata.namespace
}

/// The pod's hostname if [`should_set_hostname`].
pub fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    should_set_hostname(pod, svc)
        .then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone()))
        .flatten()
}

fn protocol(p: &ServicePort) -> &str {
    p.protocol.as_deref().unwrap_or("TCP")
}

/// The container port a Service port reaches on `pod` (Kubernetes' `FindPort`): a number is
/// taken as is; a name is looked up among the containers' (and sidecars') ports with the same
/// protocol. None when the pod has no such named port.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        Some(IntOrString::Int(n)) if *n != 0 => Some(*n),
        None | Some(IntOrString::Int(_)) => Some(port.port),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol(port)
                })
                .map(|p| p.container_port)
        }
    }
}

/// The ports `pod` serves for the Service, in the Service's order; ports the pod lacks are left
/// out (so such a pod lands in a slice with a different port set).
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| {
            let number = find_port(pod, p)?;
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(protocol(p).to_string()),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// The pod's IPv4 addresses (`status.podIPs`, else `status.podIP`).
pub fn ipv4_addresses(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.as_deref());
    }
    ips.into_iter()
        .filter_map(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        .map(|ip| ip.to_string())
        .collect()
}

/// The reference endpoints keep to their pod.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The endpoint for `pod` (Kubernetes' `podToEndpoint`): serving follows readiness; ready is
/// serving and not terminating, or forced by `publishNotReadyAddresses`.
pub fn pod_to_endpoint(pod: &Pod, node: Option<&Node>, svc: &Service) -> Endpoint {
    let serving = pods::is_ready(pod);
    let terminating = pods::is_terminating(pod);
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let ready = publish_not_ready || (serving && !terminating);
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(ZONE_LABEL))
        .filter(|z| !z.is_empty())
        .cloned();
    Endpoint {
        addresses: ipv4_addresses(pod),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname_for(pod, svc),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
        zone,
        ..Endpoint::default()
    }
}

/// The labels every slice of `svc` carries: the Service's own (minus the reserved ones), the
/// headless marker, the service name and the managing controller.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let reserved = [SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL];
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

/// Identifies a set of ports regardless of order: endpoints are grouped into slices by it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey(Vec<(String, i32, String, String)>);

impl PortKey {
    pub fn of(ports: &[EndpointPort]) -> PortKey {
        let mut key: Vec<_> = ports
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port.unwrap_or(0),
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.app_protocol.clone().unwrap_or_default(),
                )
            })
            .collect();
        key.sort();
        PortKey(key)
    }
}

/// Identifies an endpoint across updates (Kubernetes hashes the same fields): its pod, then its
/// addresses and hostname. Conditions, node and zone may change in place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    namespace: String,
    name: String,
    addresses: Vec<String>,
    hostname: String,
}

impl EndpointKey {
    pub fn of(ep: &Endpoint) -> EndpointKey {
        let mut addresses = ep.addresses.clone();
        addresses.sort();
        let target = ep.target_ref.as_ref();
        EndpointKey {
            namespace: target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
            name: target.and_then(|t| t.name.clone()).unwrap_or_default(),
            addresses,
            hostname: ep.hostname.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": spec,
        }))
        .unwrap()
    }

    pub(crate) fn pod(name: &str, ip: &str, ready: bool, containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": containers},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn web() -> serde_json::Value {
        json!([{"name": "app", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}])
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_missing_ones_are_left_out() {
        let svc = service(
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.9", "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "targetPort": 9100, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": "http", "protocol": "UDP"},
            ]}),
        );
        let with_name = pod("a", "10.0.0.1", true, web());
        let ports = endpoint_ports(&svc, &with_name);
        let got: Vec<_> = ports
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port.unwrap()))
            .collect();
        // The UDP port's name exists only for TCP on the pod.
        assert_eq!(got, [("http".into(), 8080), ("metrics".into(), 9100)]);
        let without = pod(
            "b",
            "10.0.0.2",
            true,
            json!([{"name": "app", "image": "x"}]),
        );
        let ports_b = endpoint_ports(&svc, &without);
        assert_eq!(ports_b.len(), 1);
        assert_ne!(PortKey::of(&ports), PortKey::of(&ports_b));
        let mut reversed = ports.clone();
        reversed.reverse();
        assert_eq!(PortKey::of(&ports), PortKey::of(&reversed));
    }

    #[test]
    fn conditions_follow_readiness_termination_and_publish_not_ready() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.9"}));
        let cond = |p: &Pod, s: &Service| {
            let c = pod_to_endpoint(p, None, s).conditions.unwrap();
            (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
        };
        let ready = pod("a", "10.0.0.1", true, web());
        assert_eq!(cond(&ready, &svc), (true, true, false));
        let unready = pod("b", "10.0.0.2", false, web());
        assert_eq!(cond(&unready, &svc), (false, false, false));
        let mut terminating = ready.clone();
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(cond(&terminating, &svc), (false, true, true));
        let publish =
            service(json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true}));
        assert_eq!(cond(&unready, &publish), (true, false, false));
        assert!(should_pod_be_in_endpoints(&terminating, true));
        assert!(!should_pod_be_in_endpoints(&terminating, false));
        let mut no_ip = ready.clone();
        no_ip.status.as_mut().unwrap().pod_ip = None;
        no_ip.status.as_mut().unwrap().pod_ips = None;
        assert!(!should_pod_be_in_endpoints(&no_ip, true));
        let mut done = ready;
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!should_pod_be_in_endpoints(&done, true));
    }

    #[test]
    fn endpoint_carries_node_zone_hostname_and_pod_reference() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let mut p = pod("a", "10.0.0.1", true, web());
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("a".into());
        spec.subdomain = Some("web".into());
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1",
            "labels": {"topology.kubernetes.io/zone": "z1"}}}))
        .unwrap();
        let ep = pod_to_endpoint(&p, Some(&node), &svc);
        assert_eq!(ep.addresses, ["10.0.0.1"]);
        assert_eq!(ep.zone.as_deref(), Some("z1"));
        assert_eq!(ep.node_name.as_deref(), Some("n1"));
        assert_eq!(ep.hostname.as_deref(), Some("a"));
        let target = ep.target_ref.unwrap();
        assert_eq!(
            (
                target.kind.as_deref(),
                target.name.as_deref(),
                target.uid.as_deref()
            ),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
        p.spec.as_mut().unwrap().subdomain = Some("other".into());
        assert_eq!(pod_to_endpoint(&p, None, &svc).hostname, None);
    }

    #[test]
    fn labels_and_selection() {
        let headless = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let labels = slice_labels(&headless);
        assert_eq!(labels.get(HEADLESS_LABEL).map(String::as_str), Some(""));
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        let normal = service(json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.9"}));
        assert!(!slice_labels(&normal).contains_key(HEADLESS_LABEL));
        let p = pod("a", "10.0.0.1", true, web());
        assert!(selects(&normal, &p));
        assert!(!selects(&service(json!({"selector": {"app": "db"}})), &p));
        assert!(!selects(&service(json!({})), &p));
        assert!(selects(&service(json!({"selector": {}})), &p));
        assert!(!is_managed(&service(json!({}))));
        assert!(!is_managed(&service(
            json!({"type": "ExternalName", "externalName": "x.example", "selector": {"a": "b"}})
        )));
    }
}
