//! Cluster DNS: `<svc>.<ns>.svc.<cluster-domain>` A and SRV records served from the API's
//! Services and EndpointSlices, one server per node.
//!
//! # Design
//!
//! - **Wire format** is hickory-proto's `Message` (parse and encode); no hand-written parsing.
//!   The serving loops are ours (tokio UDP + TCP), small enough that hickory-server's
//!   authority machinery would add more than it saves.
//! - **Data**: [`DnsIndex`] keeps only what DNS needs from Services and EndpointSlices;
//!   [`run_dns_sync`] keeps it current from kube watchers (all namespaces; a relist after a
//!   watch restart replaces the whole index, so deletions missed meanwhile disappear).
//! - **Answers** (`answer.rs`) follow the Kubernetes DNS spec and CoreDNS's `kubernetes`
//!   plugin: ClusterIP A, headless endpoints, ExternalName CNAME, SRV for named ports with A
//!   additionals, endpoint hostnames, PTR for ClusterIPs and endpoints (`reverse.rs`), the
//!   deprecated `<a-b-c-d>.<ns>.pod` names, `dns-version`; NXDOMAIN or NODATA with the zone's
//!   SOA in the authority section. Every record, and the SOA's negative-caching minimum, has a TTL of
//!   [`DEFAULT_TTL`] (5 s, CoreDNS's default) unless configured otherwise.
//! - **Elsewhere**: names outside the cluster domain are relayed to upstream resolvers (the
//!   host's resolv.conf by default); with no upstream the answer is REFUSED, when all fail
//!   SERVFAIL. An ExternalName's CNAME target is resolved the same way and appended.
//! - **Size**: a UDP answer larger than 512 bytes, or than the client's EDNS size, is sent
//!   truncated (TC, no records) so the client retries over TCP.
//! - **Address**: each node's server listens on the pod gateway address (the podCIDR's first
//!   address) port 53. That address exists only once a pod's veth carries it, so the sockets
//!   are bound with `IP_FREEBIND` and start receiving as soon as it appears.

mod answer;
mod forward;
mod index;
mod reverse;
mod server;
mod sync;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use forward::resolv_conf_nameservers;
pub use index::DnsIndex;
pub use server::DnsServer;
pub use sync::run_dns_sync;

/// The cluster domain unless configured otherwise (the kubelet's `--cluster-domain` default).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Where the host's resolvers are listed; [`DnsConfig::from_resolv_conf`] forwards to them.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The TTL of every answer, in seconds (CoreDNS's `kubernetes` plugin default).
pub const DEFAULT_TTL: u32 = 5;

/// How a [`DnsServer`] answers.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The cluster domain, e.g. `cluster.local` (case and a trailing dot are ignored).
    pub cluster_domain: String,
    /// Where names outside the cluster domain are forwarded, tried in order. Empty: REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer before the next is tried.
    pub upstream_timeout: Duration,
    /// TTL of every record, in seconds.
    pub ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            ttl: DEFAULT_TTL,
        }
    }
}

impl DnsConfig {
    /// The defaults for `cluster_domain`, forwarding to the nameservers of `resolv_conf`
    /// (normally `/etc/resolv.conf`).
    pub fn from_resolv_conf(cluster_domain: &str, resolv_conf: &Path) -> Result<Self, DnsError> {
        Ok(Self {
            cluster_domain: cluster_domain.to_string(),
            upstreams: resolv_conf_nameservers(resolv_conf)?,
            ..Self::default()
        })
    }
}

/// Errors of the cluster DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("reading nameservers from {path}")]
    ReadResolvConf {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("binding dns {transport} socket on {addr}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("invalid cluster domain {domain:?}")]
    ClusterDomain { domain: String },
}
