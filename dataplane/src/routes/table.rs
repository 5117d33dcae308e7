//! [`NodeRoutes`]: the Berth-tagged routes of the main table, synced incrementally.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::{RoutesError, ROUTE_PROTOCOL};
use crate::podnet::Ipv4Cidr;

/// One of Berth's routes: `<pod_cidr> via <via> dev <oif> [onlink] proto 180`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    pub pod_cidr: Ipv4Cidr,
    pub via: Ipv4Addr,
    pub oif: Option<u32>,
    pub onlink: bool,
}

/// What [`NodeRoutes::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Routes added, or replaced because their next hop changed.
    pub written: usize,
    pub unchanged: usize,
    pub removed: usize,
    /// Destinations a foreign route (another protocol, same metric) already holds: left alone.
    pub conflicts: Vec<Ipv4Cidr>,
    /// Routes that could not be written; the rest were still synced, and an existing Berth route
    /// for the same podCIDR was kept.
    pub failed: Vec<RoutesError>,
}

/// Berth's routes to other nodes' podCIDRs in the calling thread's network namespace. Cheap to
/// clone.
#[derive(Clone)]
pub struct NodeRoutes {
    handle: Handle,
    /// Only routes into this network are this instance's (several clusters' agents may share a
    /// namespace, as parallel tests do); `None`: every Berth route.
    cluster: Option<Ipv4Cidr>,
}

/// The next hop a route to a node takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NextHop {
    oif: Option<u32>,
    onlink: bool,
}

impl NodeRoutes {
    /// Opens a netlink socket in the calling thread's namespace; needs a tokio runtime, which
    /// drives the socket.
    pub fn new() -> Result<Self, RoutesError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| RoutesError::Connect { source })?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            cluster: None,
        })
    }

    /// Limits this instance to routes into `cluster_cidr`: others, Berth's or not, are never
    /// listed, replaced or removed.
    pub fn with_cluster_cidr(mut self, cluster_cidr: Ipv4Cidr) -> Self {
        self.cluster = Some(cluster_cidr);
        self
    }

    fn owns(&self, msg: &RouteMessage) -> bool {
        is_ours(msg)
            && match (self.cluster, destination(msg)) {
                (None, _) => true,
                (Some(cluster), Some(dst)) => {
                    dst.prefix() >= cluster.prefix() && cluster.contains(dst.network())
                }
                (Some(_), None) => false,
            }
    }

    /// Berth's routes, and nothing else.
    pub async fn list(&self) -> Result<Vec<NodeRoute>, RoutesError> {
        Ok(self
            .dump()
            .await?
            .iter()
            .filter(|m| self.owns(m))
            .filter_map(node_route)
            .collect())
    }

    /// Makes Berth's routes exactly `desired` (podCIDR → the node's InternalIP; a podCIDR listed
    /// twice keeps its first entry), touching only what differs. A route whose next hop is not on
    /// a connected network gets `onlink` on the interface the kernel would use to reach it.
    pub async fn sync(&self, desired: &[(Ipv4Cidr, Ipv4Addr)]) -> Result<SyncReport, RoutesError> {
        let routes = self.dump().await?;
        let mut ours: HashMap<Ipv4Cidr, Vec<&RouteMessage>> = HashMap::new();
        let mut foreign = HashSet::new();
        for msg in &routes {
            let Some(dst) = destination(msg) else {
                continue;
            };
            if self.owns(msg) {
                ours.entry(dst).or_default().push(msg);
            } else if is_ours(msg) {
                continue;
            } else if table(msg) == u32::from(RouteHeader::RT_TABLE_MAIN) && priority(msg) == 0 {
                foreign.insert(dst);
            }
        }

        let mut report = SyncReport::default();
        let mut kept = HashSet::new();
        for &(pod_cidr, via) in desired {
            if !kept.insert(pod_cidr) {
                continue;
            }
            if foreign.contains(&pod_cidr) {
                report.conflicts.push(pod_cidr);
                continue;
            }
            let hop = match self.next_hop(pod_cidr, via).await {
                Ok(hop) => hop,
                Err(e) => {
                    report.failed.push(e);
                    continue;
                }
            };
            let current = ours.get(&pod_cidr).map(Vec::as_slice).unwrap_or_default();
            let wanted = NodeRoute {
                pod_cidr,
                via,
                oif: hop.oif,
                onlink: hop.onlink,
            };
            if let [only] = current {
                if priority(only) == 0 && node_route(only).as_ref() == Some(&wanted) {
                    report.unchanged += 1;
                    continue;
                }
            }
            match self.write(&wanted).await {
                Ok(()) => report.written += 1,
                Err(e) => report.failed.push(e),
            }
        }

        for (dst, msgs) in &ours {
            if kept.contains(dst) {
                continue;
            }
            for msg in msgs {
                if self.delete(msg).await? {
                    report.removed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Deletes every Berth route (whatever its table); returns how many.
    pub async fn cleanup(&self) -> Result<usize, RoutesError> {
        let mut removed = 0;
        for msg in self.dump().await?.iter().filter(|m| self.owns(m)) {
            if self.delete(msg).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every IPv4 route of every table.
    async fn dump(&self) -> Result<Vec<RouteMessage>, RoutesError> {
        let mut request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        // Filters, should the socket ever use strict checking: every table, every protocol.
        request.header.table = RouteHeader::RT_TABLE_UNSPEC;
        request.header.protocol = RouteProtocol::Unspec;
        self.handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(netlink_err("list routes", "ipv4"))
    }

    /// How the kernel reaches `via` right now.
    async fn next_hop(&self, pod_cidr: Ipv4Cidr, via: Ipv4Addr) -> Result<NextHop, RoutesError> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(via, 32)
            .build();
        let answer = self.handle.route().get(request).execute().try_next().await;
        let msg = match answer {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(RoutesError::Unreachable { pod_cidr, via }),
            Err(e) if matches!(errno(&e), Some(Errno::ENETUNREACH | Errno::EHOSTUNREACH)) => {
                return Err(RoutesError::Unreachable { pod_cidr, via });
            }
            Err(e) => return Err(netlink_err("look up route to", via)(e)),
        };
        match msg.header.kind {
            RouteType::Local => return Err(RoutesError::OwnAddress { pod_cidr, via }),
            RouteType::Unicast => {}
            _ => return Err(RoutesError::Unreachable { pod_cidr, via }),
        }
        Ok(NextHop {
            oif: oif(&msg),
            // Reached through a router: `via` is not on a connected network, but nodes are
            // assumed to share a link (that is what routing pods without encapsulation needs).
            onlink: gateway(&msg).is_some(),
        })
    }

    async fn write(&self, route: &NodeRoute) -> Result<(), RoutesError> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.pod_cidr.network(), route.pod_cidr.prefix())
            .gateway(route.via)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
        if let Some(oif) = route.oif {
            builder = builder.output_interface(oif);
        }
        if route.onlink {
            builder = builder.onlink();
        }
        self.handle
            .route()
            .add(builder.build())
            .replace()
            .execute()
            .await
            .map_err(netlink_err(
                "replace route",
                format!("{} via {}", route.pod_cidr, route.via),
            ))
    }

    /// Deletes the route `msg` describes (its protocol included, so the kernel matches only
    /// Berth's); false if it was already gone.
    async fn delete(&self, msg: &RouteMessage) -> Result<bool, RoutesError> {
        match self.handle.route().del(msg.clone()).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(Errno::ESRCH) => Ok(false),
            Err(e) => {
                let object = destination(msg).map_or_else(|| "?".to_string(), |d| d.to_string());
                Err(netlink_err("delete route", object)(e))
            }
        }
    }
}

fn netlink_err(
    op: &'static str,
    object: impl ToString,
) -> impl FnOnce(rtnetlink::Error) -> RoutesError {
    let object = object.to_string();
    move |source| RoutesError::Netlink {
        op,
        object,
        source: Box::new(source),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(Errno::from_raw(msg.raw_code().abs())),
        _ => None,
    }
}

fn is_ours(msg: &RouteMessage) -> bool {
    msg.header.address_family == AddressFamily::Inet
        && u8::from(msg.header.protocol) == ROUTE_PROTOCOL
}

fn node_route(msg: &RouteMessage) -> Option<NodeRoute> {
    Some(NodeRoute {
        pod_cidr: destination(msg)?,
        via: gateway(msg)?,
        oif: oif(msg),
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
    })
}

fn destination(msg: &RouteMessage) -> Option<Ipv4Cidr> {
    if msg.header.address_family != AddressFamily::Inet {
        return None;
    }
    let addr = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(addr)) => Some(*addr),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ipv4Cidr::new(addr, msg.header.destination_prefix_length).ok()
}

fn gateway(msg: &RouteMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(addr)) => Some(*addr),
        _ => None,
    })
}

fn oif(msg: &RouteMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        _ => None,
    })
}

fn priority(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(protocol: u8, dst: &str, via: Option<Ipv4Addr>, onlink: bool) -> RouteMessage {
        let cidr: Ipv4Cidr = dst.parse().unwrap();
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(cidr.network(), cidr.prefix())
            .output_interface(3)
            .protocol(RouteProtocol::from(protocol));
        if let Some(via) = via {
            builder = builder.gateway(via);
        }
        if onlink {
            builder = builder.onlink();
        }
        builder.build()
    }

    #[test]
    fn reads_berth_routes_only() {
        let via = Ipv4Addr::new(192, 0, 2, 2);
        let ours = message(ROUTE_PROTOCOL, "10.244.2.0/24", Some(via), true);
        assert!(is_ours(&ours));
        assert_eq!(
            node_route(&ours),
            Some(NodeRoute {
                pod_cidr: "10.244.2.0/24".parse().unwrap(),
                via,
                oif: Some(3),
                onlink: true,
            })
        );
        assert!(!is_ours(&message(4, "10.244.2.0/24", Some(via), false)));
        // A route without a gateway is no node route.
        assert_eq!(
            node_route(&message(ROUTE_PROTOCOL, "10.0.0.0/8", None, false)),
            None
        );
        assert_eq!(table(&ours), 254);
        assert_eq!(priority(&ours), 0);
    }

    #[test]
    fn default_route_has_a_zero_prefix() {
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        msg.attributes.clear();
        assert_eq!(destination(&msg), Some("0.0.0.0/0".parse().unwrap()));
    }
}
