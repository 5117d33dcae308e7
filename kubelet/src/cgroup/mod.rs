//! cgroup drivers: v2, v1 and hybrid, detected at runtime.
//!
//! Layout, as Kubernetes' cgroupfs driver: `<hierarchy>/<base>/kubepods/{burstable,besteffort}/
//! pod<uid>/<container>`, Guaranteed pods directly under `kubepods`. Berth writes only below
//! `<hierarchy>/<base>` (base is one path component named `berth…`), with one exception: when
//! Berth sets limits through v2 (a pure v2 host, or a hybrid one whose v2 tree holds cpu, memory
//! or pids), those controllers are enabled in the v2 root's `cgroup.subtree_control` if missing.
//!
//! v2 forbids processes in a cgroup that passes controllers down, so a pod cgroup holds none:
//! every process (a pod's shim too) goes into a leaf made with `ensure_container`.
//!
//! A limit goes to the hierarchy that has its controller: the v1 one when the controller is
//! mounted as v1, else the v2 one when the v2 root offers it. So a hybrid host (v1 controllers
//! plus a cgroup2 mount with none of them) is v1 for limits, and processes are also placed in the
//! v2 tree, as runc does.
//!
//! Not here: the v2 device filter (a BPF program attached to the container's cgroup), which
//! belongs with the runtime's BPF code.

mod fs;
mod manager;
mod mountinfo;
mod oom;
mod remove;
pub mod resources;
mod stats;
mod write;

#[cfg(test)]
mod testutil;

use std::path::PathBuf;

pub use manager::{attach, CgroupManager};
pub use mountinfo::Roots;
pub use oom::OomEvents;
pub use resources::Resources;
pub use stats::{CpuStats, MemoryUsage};

/// Which cgroup hierarchies the host mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A single cgroup2 hierarchy with the controllers (production hosts).
    V2,
    /// Only v1 controller hierarchies.
    V1,
    /// v1 controller hierarchies plus a cgroup2 mount (usually with few or no controllers).
    Hybrid,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read mountinfo {path}")]
    MountInfo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup hierarchy mounted according to {path}")]
    NoHierarchy { path: PathBuf },
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("create cgroup {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("remove cgroup {path}")]
    Rmdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("controller {controller} is not available in any cgroup hierarchy")]
    ControllerUnavailable { controller: &'static str },
    #[error("kill pid {pid} in {path}")]
    Kill {
        path: PathBuf,
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("cgroup {path} still has processes after {waited_ms} ms")]
    NotEmpty { path: PathBuf, waited_ms: u128 },
    #[error("freeze {path}: still {state:?} after {waited_ms} ms")]
    Freeze {
        path: PathBuf,
        state: String,
        waited_ms: u128,
    },
    #[error("{call} for {path}")]
    Notify {
        call: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}
