//! Services in BPF: Kubernetes Services and EndpointSlices turned into the `berth_svc`,
//! `berth_slots`, `berth_backends` and `berth_maglev` maps (see `bpf/include/berth_abi.h`).
//!
//! The work is split so that everything but the watch is pure and testable without a kernel:
//! - [`desired`]: one Service and its EndpointSlices → the frontends this node must program;
//! - [`maglev`]: the Maglev lookup table for NodePort frontends;
//! - [`programmer`]: the programmed state and the minimal, safely ordered map writes that move it
//!   to a service's new desired frontends, over any [`ServiceTables`];
//! - [`memory`]: an in-memory [`ServiceTables`] that checks the map invariants after every write;
//! - [`sync`]: the watch loop that recomputes only the service an event touches.
//!
//! This module never touches BPF itself: the aya-backed [`ServiceTables`] lives with the loader.

pub mod desired;
pub mod maglev;
pub mod memory;
pub mod programmer;
pub mod sync;

use std::fmt;
use std::net::Ipv4Addr;

use crate::abi;

pub use desired::desired_frontends;
pub use programmer::{ProgramError, Programmer, ServiceTables, Snapshot, Stats, TableError};
pub use sync::{run_service_sync, ServiceSync, SyncProgress};

/// A Service by namespace and name: the unit the programmer applies and removes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A backend in host byte order; its identity is (address, port, protocol), which is also what
/// Maglev hashes, so every node builds the same table for the same endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

impl BackendAddr {
    pub fn new(addr: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self { addr, port, proto }
    }

    /// The `berth_backends` value for this backend.
    pub fn to_abi(self) -> abi::Backend {
        abi::Backend::new(self.addr, self.port, self.proto)
    }
}

/// One frontend a service needs on this node: the `berth_svc` key, its flags and the backends
/// its slots (and, with [`abi::SVC_MAGLEV`], its Maglev table) must hold, sorted and unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub key: abi::SvcKey,
    pub flags: u16,
    /// Seconds; 0 unless `flags` has [`abi::SVC_AFFINITY`].
    pub affinity_timeout: u32,
    pub backends: Vec<BackendAddr>,
}
