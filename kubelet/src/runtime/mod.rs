//! Starting one container: the spec the kubelet resolves and the shim executes, and the code
//! that executes it — clone3 into new mount and PID namespaces (and the container's cgroup),
//! an overlayfs root with /proc, /sys, /dev, pivot_root, masked paths, credentials,
//! capabilities, no_new_privs, seccomp, execve. No runc: see [`spawn`] and [`exec_in`].

mod caps;
pub(crate) mod inroot;
mod lookup;
pub(crate) mod plan;
mod seccomp;
mod seccomp_tables;
mod spawn;
pub mod spec;

use std::path::PathBuf;

pub use caps::{
    default_masked_paths, default_readonly_paths, ALL_CAPABILITIES, DEFAULT_CAPABILITIES,
    MASKED_PATHS, READONLY_PATHS,
};
pub use lookup::DEFAULT_PATH;
pub use seccomp::SeccompError;
pub use spawn::{exec_in, spawn, ContainerIo, Started, Stdio};
pub use spec::{CgroupPlacement, ContainerSpec, Mount, MountKind, Rootfs, Seccomp, User};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container spec: {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    #[error("unknown capability {name:?}")]
    UnknownCapability { name: String },
    #[error("no seccomp profile for architecture {arch}")]
    UnsupportedArch { arch: &'static str },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Preparing on the host side, before the container's process exists.
    #[error("{op} {}", path.display())]
    Host {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    /// The container's process failed before exec: at `step`, on `path` (inside the container
    /// unless the step says otherwise).
    #[error("container setup: {step} {path}")]
    Setup {
        step: &'static str,
        path: String,
        #[source]
        source: nix::Error,
    },
    /// runc's wording, which users and tests recognise.
    #[error("exec: {program:?}: executable file not found in $PATH")]
    NotFound { program: String },
    #[error("exec: {program:?}")]
    Exec {
        program: String,
        #[source]
        source: nix::Error,
    },
    #[error("container process exited during setup without reporting why")]
    Vanished,
}
