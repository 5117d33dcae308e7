//! The filters that need nothing but the node: NodeUnschedulable, NodeName and NodePorts.

use crate::pod_info::PodInfo;
use crate::snapshot::{NodeHot, NodeInfo};

use super::Reason;

/// NodeUnschedulable: a cordoned node takes only pods tolerating
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub(crate) fn unschedulable(pod: &PodInfo, hot: &NodeHot) -> Option<Reason> {
    (hot.unschedulable && !pod.tolerates_unschedulable).then_some(Reason::Unschedulable)
}

/// NodeName: a pod naming a node fits only that node.
pub(crate) fn node_name(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    match &pod.node_name {
        Some(name) if *name != node.name => Some(Reason::NodeName),
        _ => None,
    }
}

/// NodePorts: no host port of the pod may be bound on the node already (same protocol and
/// port, and the same address or either side on every address).
pub(crate) fn node_ports(pod: &PodInfo, hot: &NodeHot, node: &NodeInfo) -> Option<Reason> {
    if pod.host_ports.is_empty() || !hot.has_ports {
        return None;
    }
    let conflict = pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
    conflict.then_some(Reason::NodePorts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_info::HostPort;

    fn port(ip: &str, port: i32) -> HostPort {
        HostPort {
            ip: ip.into(),
            protocol: "TCP".into(),
            port,
        }
    }

    #[test]
    fn ports_conflict_on_same_address_or_wildcard() {
        let node = NodeInfo {
            used_ports: vec![port("10.0.0.1", 80)],
            ..Default::default()
        };
        let hot = NodeHot {
            has_ports: true,
            ..Default::default()
        };
        let pod = |p: HostPort| PodInfo {
            host_ports: vec![p],
            ..Default::default()
        };
        assert_eq!(
            node_ports(&pod(port("0.0.0.0", 80)), &hot, &node),
            Some(Reason::NodePorts)
        );
        assert_eq!(
            node_ports(&pod(port("10.0.0.1", 80)), &hot, &node),
            Some(Reason::NodePorts)
        );
        assert_eq!(node_ports(&pod(port("10.0.0.2", 80)), &hot, &node), None);
        assert_eq!(node_ports(&pod(port("0.0.0.0", 81)), &hot, &node), None);
        let udp = HostPort {
            protocol: "UDP".into(),
            ..port("0.0.0.0", 80)
        };
        assert_eq!(node_ports(&pod(udp), &hot, &node), None);
    }

    #[test]
    fn cordoned_node_needs_toleration() {
        let hot = NodeHot {
            unschedulable: true,
            ..Default::default()
        };
        let mut pod = PodInfo::default();
        assert_eq!(unschedulable(&pod, &hot), Some(Reason::Unschedulable));
        pod.tolerates_unschedulable = true;
        assert_eq!(unschedulable(&pod, &hot), None);
    }

    #[test]
    fn node_name_must_match() {
        let node = NodeInfo {
            name: "n1".into(),
            ..Default::default()
        };
        let mut pod = PodInfo::default();
        assert_eq!(node_name(&pod, &node), None);
        pod.node_name = Some("n2".into());
        assert_eq!(node_name(&pod, &node), Some(Reason::NodeName));
        pod.node_name = Some("n1".into());
        assert_eq!(node_name(&pod, &node), None);
    }
}
