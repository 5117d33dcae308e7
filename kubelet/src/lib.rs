//! Berth's kubelet: runs pods' containers itself with Linux namespaces, cgroups and overlayfs
//! from OCI images — no containerd, no runc. Unsafe code lives only in its `sys` module.
//!
//! - [`image`]: pulls over the OCI distribution API into a content-addressed store and unpacks
//!   each layer once.
//! - [`cgroup`]: the v2, v1 and hybrid drivers, detected at runtime.
//! - [`runtime`]: starts one container from a [`runtime::ContainerSpec`]: namespaces, an overlayfs
//!   root, capabilities, seccomp, straight into its cgroup.
//! - [`shim`]: `berth shim`, the per-pod process that holds the pod's namespaces and is the parent
//!   of its containers, so the kubelet can restart without touching them.
//! - [`podspec`]: a pod's container resolved into a runtime spec: env, argv, volumes, security.
//! - [`node`]: the Node's registration, Lease and status.
//! - `pods`: one worker per pod, from sandbox to status.

pub mod apilimit;
pub mod cgroup;
mod cleanup;
mod config;
mod events;
mod eviction;
pub mod image;
mod image_gc;
pub mod node;
mod pods;
pub mod podspec;
pub mod probes;
pub mod qos;
mod run;
pub mod runtime;
pub mod server;
pub mod shim;
pub mod static_pods;
mod sys;

pub use cleanup::cleanup;
pub use config::{KubeletConfig, ServingTls};
pub use pods::status;
pub use run::{default_node_ip, run};

/// Why the kubelet could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error(transparent)]
    Network(#[from] berth_dataplane::podnet::PodNetError),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{message}")]
    Config { message: String },
}
