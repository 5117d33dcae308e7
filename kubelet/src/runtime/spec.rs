//! What a container is, fully resolved: the kubelet turns a pod's container (image config,
//! volumes, security context) into a [`ContainerSpec`]; the shim, which is the container's parent,
//! executes it. It crosses the kubelet→shim socket as JSON, so every path in it is absolute and
//! nothing in it needs the API.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One container, ready to start. The pod's network, IPC and UTS namespaces are the shim's own
/// (the shim is created in them), so the container inherits them; it always gets its own mount
/// namespace, and its own PID namespace unless `pid_namespace` names one to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique id (64 hex characters, like a CRI container id).
    pub id: String,
    pub rootfs: Rootfs,
    /// argv; `args[0]` is looked up in the container's `PATH` (from `env`) when it has no `/`.
    pub args: Vec<String>,
    /// `NAME=value`, in order.
    pub env: Vec<String>,
    /// Working directory inside the container (absolute); created when missing, like runc.
    pub cwd: String,
    pub user: User,
    /// Capability names as Kubernetes spells them without the `CAP_` prefix (e.g. `NET_BIND_SERVICE`);
    /// the bounding, effective, permitted and inheritable sets. Ambient stays empty for non-root.
    pub capabilities: Vec<String>,
    /// `allowPrivilegeEscalation: false` (and the default for non-privileged containers in runc).
    pub no_new_privs: bool,
    pub seccomp: Seccomp,
    /// `readOnlyRootFilesystem`.
    pub readonly_rootfs: bool,
    /// Mounts after the root: volumes, /etc/hosts, /etc/resolv.conf, /etc/hostname,
    /// /dev/termination-log. /proc, /sys, /dev, /dev/pts, /dev/shm and /dev/mqueue are the
    /// runtime's own and are not listed here.
    pub mounts: Vec<Mount>,
    /// Paths masked (bind of /dev/null, or an empty read-only tmpfs for directories) and made
    /// read-only; runc's defaults when the pod does not ask for `procMount: Unmasked`.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// Join this PID namespace (`/proc/<pid>/ns/pid`) instead of creating one
    /// (`shareProcessNamespace`).
    pub pid_namespace: Option<PathBuf>,
    pub cgroup: CgroupPlacement,
    /// `/proc/self/oom_score_adj` for the process (Kubernetes' QoS-based value).
    pub oom_score_adj: i32,
    /// Allocate a pseudo-terminal for stdio (`tty: true`).
    pub tty: bool,
}

/// The container's root: an overlayfs of image layers with a writable upper directory of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rootfs {
    /// Unpacked layer directories, topmost first (overlayfs `lowerdir` order).
    pub lower: Vec<PathBuf>,
    /// The container's writable layer and overlayfs' work directory (same filesystem).
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where the overlay is mounted, inside the container's own mount namespace.
    pub target: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Seccomp {
    /// `Unconfined` (and `privileged`).
    Unconfined,
    /// `RuntimeDefault`: the container runtime's default allow-list.
    #[default]
    RuntimeDefault,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container; parents are created as needed.
    pub destination: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A bind of a host path (a file or a directory), recursive.
    Bind { source: PathBuf, readonly: bool },
    /// A fresh tmpfs (`emptyDir.medium: Memory` is a bind of a pod-level tmpfs instead).
    Tmpfs { size_bytes: Option<u64>, mode: u32 },
}

/// Where the container's first process starts, before it runs any of the container's code.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CgroupPlacement {
    /// A cgroup v2 directory: the process is created in it (clone3 `CLONE_INTO_CGROUP`).
    pub unified: Option<PathBuf>,
    /// cgroup v1 directories, one per controller hierarchy: the parent writes the child's pid to
    /// each `cgroup.procs` before the child execs.
    pub v1: Vec<PathBuf>,
}
