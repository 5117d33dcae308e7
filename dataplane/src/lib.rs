//! Berth's data plane: pod networking over netlink, Services forwarded by the BPF programs in
//! `bpf/` (loaded with aya), cluster DNS, routes to other nodes' pods and masquerade. It must
//! not touch what it did not create: every link, route, nft table, pin and cgroup it makes is
//! Berth's by name or tag.
//!
//! - [`podnet`]: a pod's network namespace gets loopback and a veth with an address from the
//!   node's podCIDR and a default route; the host side forwards per device.
//! - [`loader`]: the BPF programs, their pinned maps and links.
//! - [`services`]: Services and EndpointSlices → the service maps, incrementally.
//! - [`dns`]: the cluster DNS server.
//! - [`routes`], [`nat`]: routes to other nodes' podCIDRs; masquerade and hostPorts in nft.
//! - [`agent`]: all of the above as the node's data plane component.

pub mod abi;
pub mod agent;
pub mod dns;
pub mod loader;
pub mod nat;
pub mod podnet;
pub mod routes;
pub mod services;
mod sys;
