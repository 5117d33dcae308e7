//! How a kubelet is configured (flags of `berth kubelet`, `berth agent`, `berth up`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::image::RegistryConfig;

#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    /// The node's InternalIP.
    pub node_ip: IpAddr,
    /// Root of the kubelet's state: `pods/<uid>/` (shim socket, volumes, logs, container layers),
    /// `images/`, `ipam/`.
    pub data_dir: PathBuf,
    /// The program run, as `<program> shim --pod-dir …`, for each pod's shim: `berth-shim` when
    /// it is installed next to `berth`, else `berth` itself.
    pub shim_exe: PathBuf,
    /// The top cgroup Berth owns in every hierarchy (`<root>/<base>/kubepods/...`).
    pub cgroup_base: String,
    pub registry: RegistryConfig,
    /// Cluster DNS server for pods with dnsPolicy ClusterFirst (none yet: the host's resolver).
    pub cluster_dns: Option<Ipv4Addr>,
    pub cluster_domain: String,
    pub max_pods: u32,
    /// pids.max for each pod (kubelet's podPidsLimit); None = unlimited.
    pub pod_pids_limit: Option<u64>,
    /// Labels set on the Node at registration, besides the well-known ones.
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// `--pod-manifest-path`: static pods' manifests.
    pub pod_manifest_path: Option<PathBuf>,
    /// `--eviction-hard`: when the node reports memory, disk and PID pressure.
    pub eviction_hard: crate::node::Thresholds,
    /// The HTTPS port of the kubelet's server (logs, exec); 0 picks a free one, which the Node
    /// then advertises.
    pub port: u16,
    /// The server's certificate and the CA its clients (the API server) are checked against;
    /// without it the server does not run and `kubectl logs`/`exec` can't reach this node.
    pub serving: Option<ServingTls>,
}

/// PEM files' contents for the kubelet's server.
#[derive(Debug, Clone)]
pub struct ServingTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Vec<u8>,
}

impl KubeletConfig {
    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir().join(uid)
    }
}
