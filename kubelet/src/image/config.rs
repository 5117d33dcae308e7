//! The parts of an image's config the kubelet uses to start a container.

use serde::{Deserialize, Serialize};

/// From the image config's `config` object (OCI image spec): what runs by default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`; Kubernetes' `command` replaces it.
    pub entrypoint: Vec<String>,
    /// `Cmd`; Kubernetes' `args` replaces it (and `command` alone drops it).
    pub cmd: Vec<String>,
    /// `Env`, `NAME=value`; the container's env is appended after it.
    pub env: Vec<String>,
    /// `WorkingDir`; empty means `/`.
    pub working_dir: String,
    /// `User`: `uid`, `uid:gid`, `name` or `name:group`; empty means root.
    pub user: String,
}
