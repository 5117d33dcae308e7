//! Watching Nodes: each other node's `spec.podCIDR` and InternalIP become a route.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};

use super::{NodeRoutes, SyncReport};
use crate::podnet::Ipv4Cidr;

/// How often the routes are re-synced without a Node change, repairing routes someone deleted.
const RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// A node's route target: its IPv4 podCIDR (`spec.podCIDR`, else the first IPv4 entry of
/// `spec.podCIDRs`) and its first IPv4 `InternalIP`. None until it has both.
pub fn node_route(node: &Node) -> Option<(Ipv4Cidr, Ipv4Addr)> {
    let spec = node.spec.as_ref()?;
    let cidr = spec
        .pod_cidr
        .iter()
        .chain(spec.pod_cidrs.iter().flatten())
        .find_map(|c| c.parse::<Ipv4Cidr>().ok())?;
    let ip = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())?;
    Some((cidr, ip))
}

/// The routes this node (`self_node`) needs: one per other node with a route target, in node
/// name order.
pub fn desired_routes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    self_node: &str,
) -> Vec<(Ipv4Cidr, Ipv4Addr)> {
    let mut table = NodeTable::default();
    for node in nodes {
        table.apply(node);
    }
    table.desired(self_node)
}

/// The route targets of the nodes seen so far, by name.
#[derive(Debug, Default)]
struct NodeTable {
    nodes: BTreeMap<String, (Ipv4Cidr, Ipv4Addr)>,
}

impl NodeTable {
    fn apply(&mut self, node: &Node) {
        match node_route(node) {
            Some(target) => self.nodes.insert(node.name_any(), target),
            None => self.nodes.remove(&node.name_any()),
        };
    }

    fn delete(&mut self, node: &Node) {
        self.nodes.remove(&node.name_any());
    }

    fn desired(&self, self_node: &str) -> Vec<(Ipv4Cidr, Ipv4Addr)> {
        self.nodes
            .iter()
            .filter(|(name, _)| name.as_str() != self_node)
            .map(|(_, target)| *target)
            .collect()
    }
}

/// Keeps `routes` in step with the cluster's Nodes: a route to every other node's podCIDR via
/// its InternalIP, none to `self_node`'s. Runs until the task is dropped; watch and netlink
/// errors are logged and retried (the watch with kube's default backoff, routes at the next
/// change or after a minute).
pub async fn run_node_routes(client: kube::Client, self_node: String, routes: NodeRoutes) {
    let api: Api<Node> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut table = NodeTable::default();
    let mut relisting: Option<NodeTable> = None;
    let mut synced: Option<Vec<(Ipv4Cidr, Ipv4Addr)>> = None;
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let force = tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching nodes for pod routes");
                    continue;
                }
                Some(Ok(Event::Init)) => {
                    relisting = Some(NodeTable::default());
                    continue;
                }
                Some(Ok(Event::InitApply(node))) => {
                    relisting.get_or_insert_with(NodeTable::default).apply(&node);
                    continue;
                }
                Some(Ok(Event::InitDone)) => {
                    table = relisting.take().unwrap_or_default();
                    // A fresh list: repair whatever drifted while the watch was down.
                    true
                }
                Some(Ok(Event::Apply(node))) => {
                    table.apply(&node);
                    false
                }
                Some(Ok(Event::Delete(node))) => {
                    table.delete(&node);
                    false
                }
            },
            _ = resync.tick() => {
                if synced.is_none() {
                    // Nothing listed yet: syncing now would delete every route.
                    continue;
                }
                true
            }
        };
        let desired = table.desired(&self_node);
        if !force && synced.as_ref() == Some(&desired) {
            continue;
        }
        match routes.sync(&desired).await {
            Ok(report) => {
                log_report(&report);
                synced = Some(desired);
            }
            Err(e) => tracing::warn!(error = %e, "syncing pod routes to other nodes"),
        }
    }
}

fn log_report(report: &SyncReport) {
    for cidr in &report.conflicts {
        tracing::warn!(%cidr, "another route already holds this podCIDR; not routing it");
    }
    for e in &report.failed {
        tracing::warn!(error = %e, "routing a node's podCIDR");
    }
    if report.written + report.removed > 0 {
        tracing::info!(
            written = report.written,
            removed = report.removed,
            "pod routes to other nodes updated"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: Option<&str>, addresses: &[(&str, &str)]) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.to_string());
        node.spec = Some(NodeSpec {
            pod_cidr: cidr.map(str::to_string),
            ..NodeSpec::default()
        });
        node.status = Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        });
        node
    }

    fn target(cidr: &str, ip: &str) -> (Ipv4Cidr, Ipv4Addr) {
        (cidr.parse().unwrap(), ip.parse().unwrap())
    }

    #[test]
    fn node_route_needs_a_cidr_and_an_internal_ip() {
        let n = node(
            "a",
            Some("10.244.1.0/24"),
            &[
                ("Hostname", "a"),
                ("InternalIP", "fd00::1"),
                ("InternalIP", "192.0.2.1"),
            ],
        );
        assert_eq!(node_route(&n), Some(target("10.244.1.0/24", "192.0.2.1")));
        assert_eq!(
            node_route(&node("a", None, &[("InternalIP", "192.0.2.1")])),
            None
        );
        assert_eq!(
            node_route(&node(
                "a",
                Some("10.244.1.0/24"),
                &[("ExternalIP", "192.0.2.1")]
            )),
            None
        );
        assert_eq!(
            node_route(&node("a", Some("bogus"), &[("InternalIP", "192.0.2.1")])),
            None
        );
        let mut dual = node("a", None, &[("InternalIP", "192.0.2.1")]);
        dual.spec.as_mut().unwrap().pod_cidrs = Some(vec![
            "fd00:10::/64".to_string(),
            "10.244.3.0/24".to_string(),
        ]);
        assert_eq!(
            node_route(&dual),
            Some(target("10.244.3.0/24", "192.0.2.1"))
        );
    }

    #[test]
    fn desired_routes_skip_self_and_incomplete_nodes() {
        let nodes = [
            node("c", Some("10.244.3.0/24"), &[("InternalIP", "192.0.2.3")]),
            node(
                "self",
                Some("10.244.1.0/24"),
                &[("InternalIP", "192.0.2.1")],
            ),
            node("b", Some("10.244.2.0/24"), &[("InternalIP", "192.0.2.2")]),
            node("new", None, &[("InternalIP", "192.0.2.4")]),
        ];
        assert_eq!(
            desired_routes(&nodes, "self"),
            vec![
                target("10.244.2.0/24", "192.0.2.2"),
                target("10.244.3.0/24", "192.0.2.3")
            ]
        );
    }

    #[test]
    fn table_follows_changes_and_deletes() {
        let mut table = NodeTable::default();
        table.apply(&node(
            "b",
            Some("10.244.2.0/24"),
            &[("InternalIP", "192.0.2.2")],
        ));
        table.apply(&node(
            "b",
            Some("10.244.2.0/24"),
            &[("InternalIP", "192.0.2.9")],
        ));
        assert_eq!(
            table.desired("a"),
            vec![target("10.244.2.0/24", "192.0.2.9")]
        );
        // Losing its podCIDR removes the route, as does deletion.
        table.apply(&node("b", None, &[("InternalIP", "192.0.2.9")]));
        assert!(table.desired("a").is_empty());
        let c = node("c", Some("10.244.3.0/24"), &[("InternalIP", "192.0.2.3")]);
        table.apply(&c);
        table.delete(&c);
        assert!(table.desired("a").is_empty());
    }
}
