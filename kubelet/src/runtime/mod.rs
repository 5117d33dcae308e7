//! Starting one container: the spec the kubelet resolves and the shim executes.

pub mod spec;

pub use spec::{CgroupPlacement, ContainerSpec, Mount, MountKind, Rootfs, Seccomp, User};
