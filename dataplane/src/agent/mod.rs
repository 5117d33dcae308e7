//! The node's data plane as one component: what `berth up` and `berth agent` run beside the
//! kubelet.
//!
//! Once the node has its podCIDR it serves cluster DNS on the pod gateway and publishes it as a
//! `kube-dns` endpoint, loads the BPF programs (maps and links pinned in bpffs, so a restart
//! keeps traffic flowing), attaches the socket LB to the pods' cgroup (and to the host's, when
//! configured), and keeps the service maps, the routes to other nodes' pods and the masquerade
//! rules in step with the API. What it created is recorded in `<data-dir>/dataplane.json` for
//! `berth cleanup`.

mod dns_endpoint;
mod node;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dns::{self, DnsConfig, DnsIndex, DnsServer};
use crate::podnet::Ipv4Cidr;

pub use dns_endpoint::{desired_slice, slice_name, DnsEndpointError, KUBE_DNS_NAMESPACE};
pub use node::{wait_pod_cidr, NodeError};

/// How long the data plane waits for the node IPAM controller to give the node a podCIDR.
const POD_CIDR_TIMEOUT: Duration = Duration::from_secs(120);

/// What the node's data plane needs to know.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    pub node_name: String,
    /// The node's InternalIP.
    pub node_ip: Ipv4Addr,
    pub data_dir: PathBuf,
    /// The cluster's pod network (`--cluster-cidr`): traffic leaving it is masqueraded.
    pub cluster_cidr: Option<Ipv4Cidr>,
    pub cluster_domain: String,
    /// Where a bpffs is (or is mounted, if it is not yet): pins go to `<bpffs>/berth`.
    pub bpffs: PathBuf,
    /// The cgroup2 directory holding the node's pods (created if missing).
    pub pods_cgroup: Option<PathBuf>,
    /// A cgroup2 directory whose processes reach ClusterIPs too: the cgroup2 root for all of the
    /// host's processes.
    pub host_cgroup: Option<PathBuf>,
    /// The file the host's resolvers come from, for names outside the cluster domain.
    pub resolv_conf: PathBuf,
}

/// Why the data plane stopped.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("the node's podCIDR {cidr:?}")]
    PodCidr {
        cidr: String,
        #[source]
        source: crate::podnet::CidrError,
    },
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error(transparent)]
    DnsEndpoint(#[from] DnsEndpointError),
}

/// The pod gateway of `cidr`: its first address, which every pod's host veth carries.
pub fn gateway(cidr: &Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// Runs the node's data plane until `stop` resolves.
pub async fn run(
    client: kube::Client,
    config: DataplaneConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DataplaneError> {
    let cidr_text = wait_pod_cidr(&client, &config.node_name, POD_CIDR_TIMEOUT).await?;
    let pod_cidr: Ipv4Cidr = cidr_text
        .parse()
        .map_err(|source| DataplaneError::PodCidr {
            cidr: cidr_text.clone(),
            source,
        })?;
    let gateway = gateway(&pod_cidr);

    let index = DnsIndex::new();
    let dns_sync = tokio::spawn(dns::run_dns_sync(client.clone(), index.clone()));
    let dns_config = DnsConfig::from_resolv_conf(&config.cluster_domain, &config.resolv_conf)?;
    let dns_server =
        DnsServer::bind(SocketAddr::new(gateway.into(), 53), index, dns_config).await?;
    dns_endpoint::publish(client.clone(), &config.node_name, gateway).await?;
    tracing::info!(node = %config.node_name, %pod_cidr, dns = %dns_server.local_addr(), "data plane running");

    stop.await;
    dns_sync.abort();
    dns_server.shutdown().await;
    Ok(())
}

/// Removes what the data plane of `data_dir` made on this host.
pub fn cleanup(_data_dir: &Path) -> Vec<String> {
    Vec::new()
}
