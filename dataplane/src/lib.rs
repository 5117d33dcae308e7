//! Berth's data plane: pod networking over netlink and (later) Services forwarded by the BPF
//! programs in `bpf/`, loaded with aya.
//!
//! - [`podnet`]: a pod's network namespace gets loopback and a veth with an address from the
//!   node's podCIDR and a default route.

pub mod abi;
pub mod nat;
pub mod podnet;
pub mod routes;
