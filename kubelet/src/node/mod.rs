//! The kubelet's node side: register the Node, renew its Lease, keep its status — as
//! pkg/kubelet/kubelet_node_status.go, nodestatus/setters.go and nodelease do.
//!
//! - [`register`]: creates the Node (default labels, taints), or reconciles an existing one's
//!   labels, then posts its full status.
//! - [`run_status_loop`] / [`NodeAgent::run`]: the Lease in `kube-node-lease` renewed every
//!   10 s (what the node lifecycle controller watches), and the status re-posted every 10 s
//!   when it changed or every 5 minutes regardless.
//! - [`read_host`]: capacity and identity from procfs, sysfs and /etc; [`pressure`]: the
//!   samples and thresholds behind MemoryPressure, DiskPressure and PIDPressure.
//!
//! No credentials here: the caller hands in a client that may act as the node.

pub mod conditions;
pub mod host;
pub mod lease;
pub mod pressure;
pub mod register;
pub mod status;

mod agent;
mod eviction_flag;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

pub use agent::{run_status_loop, ImageLister, NodeAgent, Providers, Readiness};
pub use eviction_flag::DEFAULT_EVICTION_HARD;
pub use host::{read_host, HostInfo, HostRoots};
pub use pressure::Thresholds;
pub use register::{register, wait_pod_cidr};

/// Where node Leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no {what} in {}", path.display())]
    Parse { path: PathBuf, what: &'static str },
    #[error("statvfs of {}", path.display())]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{op} {name}")]
    Api {
        op: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {name} got no podCIDR within {after:?}")]
    NoPodCidr { name: String, after: Duration },
    #[error("{op} {name}: still conflicting after {attempts} attempts")]
    Conflicts {
        op: &'static str,
        name: String,
        attempts: usize,
    },
}

impl NodeError {
    pub(crate) fn api(op: &'static str, name: &str) -> impl FnOnce(kube::Error) -> NodeError {
        let name = name.to_string();
        move |source| NodeError::Api { op, name, source }
    }
}

/// Whether a client error is the API's `code` (404, 409, …).
pub(crate) fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// How this node registers and reports itself.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub internal_ip: IpAddr,
    /// The `Hostname` address and the `kubernetes.io/hostname` label.
    pub hostname: String,
    /// Extra labels (`--node-labels`), set at registration and on every restart.
    pub labels: BTreeMap<String, String>,
    /// The `pods` capacity; well above the kubelet's 110, as pods here are cheap.
    pub max_pods: u32,
    /// Its filesystem is the node's ephemeral storage (`nodefs`).
    pub data_dir: PathBuf,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub etc_root: PathBuf,
    /// Reported in `status.daemonEndpoints.kubeletEndpoint.Port`.
    pub kubelet_port: u16,
    /// How often the status is computed and, if changed, posted (`nodeStatusUpdateFrequency`).
    pub status_update_frequency: Duration,
    /// Posted at least this often even unchanged (`nodeStatusReportFrequency`).
    pub status_report_frequency: Duration,
    pub lease_duration_seconds: i32,
    /// The kubelet renews at a quarter of the lease duration: 10 s.
    pub lease_renew_interval: Duration,
    /// Taints the Node is created with (`--register-with-taints`).
    pub register_taints: Vec<Taint>,
    /// Eviction thresholds behind the pressure conditions and allocatable.
    pub thresholds: Thresholds,
    /// A pressure stays reported this long after it was last seen
    /// (`evictionPressureTransitionPeriod`).
    pub pressure_transition_period: Duration,
}

impl NodeConfig {
    /// The kubelet's defaults for a node called `name` (also its hostname).
    pub fn new(name: &str, internal_ip: IpAddr, data_dir: PathBuf) -> NodeConfig {
        let roots = HostRoots::default();
        NodeConfig {
            name: name.to_string(),
            internal_ip,
            hostname: name.to_string(),
            labels: BTreeMap::new(),
            max_pods: 500,
            data_dir,
            proc_root: roots.proc,
            sys_root: roots.sys,
            etc_root: roots.etc,
            kubelet_port: 10250,
            status_update_frequency: Duration::from_secs(10),
            status_report_frequency: Duration::from_secs(5 * 60),
            lease_duration_seconds: 40,
            lease_renew_interval: Duration::from_secs(10),
            register_taints: Vec::new(),
            thresholds: Thresholds::default(),
            pressure_transition_period: Duration::from_secs(5 * 60),
        }
    }

    pub fn roots(&self) -> HostRoots {
        HostRoots {
            proc: self.proc_root.clone(),
            sys: self.sys_root.clone(),
            etc: self.etc_root.clone(),
        }
    }
}
