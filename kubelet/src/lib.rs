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

pub mod cgroup;
pub mod image;
pub mod node;
pub mod qos;
pub mod runtime;
pub mod server;
pub mod shim;
mod sys;
