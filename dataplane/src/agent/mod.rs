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
mod pods;
mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::abi::{NodeAddrKey, NodeAddrValue};
use crate::dns::{self, DnsConfig, DnsIndex, DnsServer};
use crate::loader::{is_bpffs, Bpffs, Datapath, ServiceMaps, XdpMode};
use crate::nat::Nat;
use crate::podnet::{enable_forwarding, Ipv4Cidr};
use crate::routes::{run_node_routes, uplink_for, NodeRoutes};
use crate::services::{run_service_sync, Programmer, SyncProgress};
use state::State;

/// Under the bpffs: where maps and links are pinned.
pub const PIN_SUBDIR: &str = "berth";

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
    /// The nft table for masquerade and hostPorts (a `berth…` name); none: no NAT.
    pub nft_table: Option<String>,
    /// Turn forwarding on for the uplink (the link holding the node IP) and the NodePort links,
    /// so traffic from other nodes and NodePort clients reaches this node's pods. Off where they
    /// are not Berth's to change.
    pub uplink_forwarding: bool,
    /// Where NodePorts are served (XDP, with the same program on tcx for what XDP passes up):
    /// `None` for the uplink, else exactly these links (possibly none).
    pub nodeport_devices: Option<Vec<String>>,
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
    #[error(transparent)]
    Bpffs(#[from] crate::loader::BpffsError),
    #[error(transparent)]
    Datapath(#[from] crate::loader::DatapathError),
    #[error(transparent)]
    Routes(#[from] crate::routes::RoutesError),
    #[error(transparent)]
    Nat(#[from] crate::nat::NatError),
    #[error(transparent)]
    Sysctl(#[from] crate::podnet::SysctlError),
    #[error("data plane state {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmount {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the {what} task failed: {message}")]
    Task { what: &'static str, message: String },
}

/// The pod gateway of `cidr`: its first address, which every pod's host veth carries.
pub fn gateway(cidr: &Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// Runs the node's data plane until `stop` resolves. Maps, links and routes stay when it
/// returns (or dies): a restarted agent adopts them; `berth cleanup` removes them.
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

    // BPF: programs loaded, maps adopted, socket LB on the pods' (and host's) cgroup.
    let mut state = State::load(&config.data_dir)
        .map_err(|source| DataplaneError::State {
            path: config.data_dir.join(state::STATE_FILE),
            source,
        })?
        .unwrap_or_default();
    let bpffs = Bpffs::ensure(&config.bpffs)?;
    if bpffs.mounted() {
        state.mounted_bpffs = Some(config.bpffs.clone());
    }
    let pin_root = bpffs.keep();
    let pin_dir = pin_root.join(PIN_SUBDIR);
    std::fs::create_dir_all(&pin_dir).map_err(|source| DataplaneError::State {
        path: pin_dir.clone(),
        source,
    })?;
    state.pin_dir = Some(pin_dir.clone());
    state.nft_table = config.nft_table.clone();
    state.cluster_cidr = config.cluster_cidr.map(|c| c.to_string());
    state
        .store(&config.data_dir)
        .map_err(|source| DataplaneError::State {
            path: config.data_dir.join(state::STATE_FILE),
            source,
        })?;
    let mut datapath = Datapath::open(&pin_dir)?;
    for cgroup in config.pods_cgroup.iter().chain(&config.host_cgroup) {
        std::fs::create_dir_all(cgroup).map_err(|source| DataplaneError::State {
            path: cgroup.clone(),
            source,
        })?;
        let attached = datapath.attach_socket_lb(cgroup)?;
        tracing::info!(cgroup = %cgroup.display(), ?attached, "socket LB attached");
    }
    let uplink = uplink_for(config.node_ip).await?;
    let ifindex = uplink.as_ref().map_or(0, |u| u.index);
    datapath.maps_mut().node_addrs.insert(
        &NodeAddrKey::new(config.node_ip),
        &NodeAddrValue { ifindex },
    )?;
    let nodeport_devices = match &config.nodeport_devices {
        Some(devices) => devices.clone(),
        None => uplink.iter().map(|u| u.name.clone()).collect(),
    };
    if config.uplink_forwarding {
        for link in uplink.iter().map(|u| &u.name).chain(&nodeport_devices) {
            enable_forwarding(link)?;
        }
    }
    for device in &nodeport_devices {
        match datapath.attach_xdp(device, XdpMode::Auto) {
            Ok(attached) => tracing::info!(%device, ?attached, "NodePort XDP attached"),
            Err(e) => tracing::warn!(%device, error = %e, "NodePort XDP not attached"),
        }
        match datapath.attach_nodeport_tc(device) {
            Ok(attached) => tracing::info!(%device, ?attached, "NodePort tc attached"),
            Err(e) => tracing::warn!(%device, error = %e, "NodePort tc not attached"),
        }
    }
    let maps = ServiceMaps::open(&pin_dir)?;
    let snapshot = maps.snapshot()?;
    let programmer = Programmer::adopt(maps, snapshot);
    let (progress, _) = tokio::sync::watch::channel(SyncProgress::default());
    let (stop_services, services_stopped) = tokio::sync::oneshot::channel::<()>();
    let services = {
        let client = client.clone();
        let node = config.node_name.clone();
        tokio::spawn(async move {
            run_service_sync(client, &node, programmer, progress, async {
                let _ = services_stopped.await;
            })
            .await;
        })
    };

    // Routes to other nodes' pods, masquerade and hostPorts, the per-pod tc programs.
    let routes = match config.cluster_cidr {
        Some(cidr) => Some(tokio::spawn(run_node_routes(
            client.clone(),
            config.node_name.clone(),
            NodeRoutes::new()?.with_cluster_cidr(cidr),
        ))),
        None => None,
    };
    let nat = match (config.cluster_cidr, &config.nft_table) {
        (Some(cidr), Some(table)) => {
            let nat = Arc::new(Nat::new(cidr).with_table(table)?);
            let ensure = nat.clone();
            tokio::task::spawn_blocking(move || ensure.ensure())
                .await
                .map_err(|e| DataplaneError::Task {
                    what: "nat",
                    message: e.to_string(),
                })??;
            Some(nat)
        }
        _ => None,
    };
    let datapath = Arc::new(Mutex::new(datapath));
    let pods = tokio::spawn(pods::run(
        client.clone(),
        config.node_name.clone(),
        datapath,
        nat,
    ));

    // Cluster DNS on the pod gateway, published as this node's kube-dns endpoint.
    let index = DnsIndex::new();
    let dns_sync = tokio::spawn(dns::run_dns_sync(client.clone(), index.clone()));
    let dns_config = DnsConfig::from_resolv_conf(&config.cluster_domain, &config.resolv_conf)?;
    let dns_server =
        DnsServer::bind(SocketAddr::new(gateway.into(), 53), index, dns_config).await?;
    dns_endpoint::publish(client.clone(), &config.node_name, gateway).await?;
    tracing::info!(node = %config.node_name, %pod_cidr, dns = %dns_server.local_addr(), "data plane running");

    stop.await;
    let _ = stop_services.send(());
    let _ = services.await;
    for task in [dns_sync, pods] {
        task.abort();
    }
    if let Some(routes) = routes {
        routes.abort();
    }
    dns_server.shutdown().await;
    Ok(())
}

/// Removes what the data plane of `data_dir` made on this host, per its state file: the nft
/// table, the routes into its cluster network, the pinned links and maps and the bpffs it
/// mounted. Call from a tokio runtime. Returns what it removed.
pub async fn cleanup(data_dir: &Path) -> Result<Vec<String>, DataplaneError> {
    let state_path = data_dir.join(state::STATE_FILE);
    let Some(state) = State::load(data_dir).map_err(|source| DataplaneError::State {
        path: state_path,
        source,
    })?
    else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    if let Some(table) = &state.nft_table {
        crate::nat::cleanup(table)?;
        done.push(format!("removed nft table ip {table}"));
    }
    if let Some(cidr) = state
        .cluster_cidr
        .as_deref()
        .and_then(|c| c.parse::<Ipv4Cidr>().ok())
    {
        let removed = NodeRoutes::new()?.with_cluster_cidr(cidr).cleanup().await?;
        done.push(format!("removed {removed} routes into {cidr}"));
    }
    if let Some(pin_dir) = &state.pin_dir {
        if pin_dir.exists() {
            let removed = crate::loader::cleanup(pin_dir)?;
            done.push(format!("removed {removed} pins in {}", pin_dir.display()));
        }
    }
    if let Some(mount) = &state.mounted_bpffs {
        if is_bpffs(mount).unwrap_or(false) {
            nix::mount::umount2(mount.as_path(), nix::mount::MntFlags::MNT_DETACH).map_err(
                |source| DataplaneError::Unmount {
                    path: mount.clone(),
                    source,
                },
            )?;
            done.push(format!("unmounted {}", mount.display()));
        }
        // The empty mount point was made for the mount.
        let _ = std::fs::remove_dir(mount);
    }
    State::remove(data_dir).map_err(|source| DataplaneError::State {
        path: data_dir.join(state::STATE_FILE),
        source,
    })?;
    Ok(done)
}
