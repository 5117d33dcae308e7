//! Routes to the other nodes' pods: one `<podCIDR> via <InternalIP>` route per other node in the
//! main table, so pod traffic crosses nodes unencapsulated (the "host-gw" model of flannel and
//! kube-router; design §6).
//!
//! Every route Berth adds carries the rtnetlink route protocol [`ROUTE_PROTOCOL`], and only
//! routes carrying it are ever replaced or deleted; a foreign route for the same destination is
//! left alone and reported as a conflict. Operators see them with `ip route show proto 180`
//! (or by name after `echo '180 berth' > /etc/iproute2/rt_protos.d/berth.conf`).
//!
//! Forwarding: pods' own veths forward (podnet sets that up); the uplink must forward too, for
//! packets from other nodes' pods and for replies to masqueraded connections — the agent calls
//! [`enable_forwarding`] on it ([`uplink_for`] finds it).
//!
//! Everything acts on the network namespace of the calling thread, like `podnet`.

mod table;
mod uplink;
mod watch;

use std::io;
use std::net::Ipv4Addr;

pub use crate::podnet::{enable_forwarding, SysctlError};
pub use table::{NodeRoute, NodeRoutes, SyncReport};
pub use uplink::{uplink_for, Uplink};
pub use watch::{desired_routes, node_route, run_node_routes};

use crate::podnet::Ipv4Cidr;

/// The rtnetlink route protocol (`rtm_protocol`) of Berth's routes. Values above
/// `RTPROT_STATIC` are not interpreted by the kernel; 180 is in none of the kernel's
/// `RTPROT_*` constants nor iproute2's `rt_protos` (whose assignments reach 192, eigrp), and no
/// routing daemon we know claims it.
pub const ROUTE_PROTOCOL: u8 = 180;

/// Why the node routes could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("open a netlink socket")]
    Connect {
        #[source]
        source: io::Error,
    },
    #[error("{op} {object}")]
    Netlink {
        op: &'static str,
        object: String,
        // Boxed: netlink errors carry the whole offending message.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("route {pod_cidr} via {via}: {via} is this node's own address")]
    OwnAddress { pod_cidr: Ipv4Cidr, via: Ipv4Addr },
    #[error("route {pod_cidr} via {via}: the kernel has no route to {via}")]
    Unreachable { pod_cidr: Ipv4Cidr, via: Ipv4Addr },
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
}
