//! A pod's container turned into the pieces of a [`crate::runtime::ContainerSpec`]: environment,
//! argv, volumes on the host, mounts, /etc files, security settings, cgroup resources and the
//! OOM score. This is what Kubernetes' kubelet does in `kuberuntime_container.go`,
//! `kubelet_pods.go` (makeEnvironmentVariables, makeMounts), its volume plugins and the
//! securitycontext helpers, with the container runtime's share (image USER, default
//! capabilities, resolv.conf) folded in.
//!
//! Everything here is logic over the pod and files under a given `pod_dir`; objects from the API
//! come through [`ObjectSource`], and the one privileged operation (tmpfs for secrets and
//! `medium: Memory`) through [`Mounter`]. Error messages that end up in a container's
//! `CreateContainerConfigError` or a volume's `FailedMount` event are Kubernetes' own.
//!
//! How the kubelet puts a container together: per pod, [`prepare_volumes`] (again from time to
//! time, to propagate ConfigMap/Secret updates) and, once the sandbox has its IP,
//! [`write_etc_files`]; per container, [`pod_environment`] → [`merge_image_env`] +
//! [`ensure_home`] for `env`, [`argv`] (expanding against the pod's variables) and
//! [`working_dir`], [`security`], [`termination_log_file`] + [`mounts`], [`container_resources`]
//! and [`pod_oom_score_adj`]; [`pod_resources`] for the pod cgroup.

mod argv;
mod atomic_writer;
mod env;
mod error;
mod etc_files;
mod expand;
mod fieldpath;
mod mounts;
mod passwd;
mod resources;
mod security;
mod source;
mod subpath;
mod tmpfs;
mod volumes;

pub use argv::{argv, working_dir};
pub use atomic_writer::{write_atomic, FileProjection};
pub use env::{environment, merge_image_env, pod_environment};
pub use error::PodSpecError;
pub use etc_files::{pod_hostname, termination_log_file, write_etc_files, DnsSettings, EtcFiles};
pub use expand::expand;
pub use mounts::mounts;
pub use resources::{container_resources, oom_score_adj, pod_oom_score_adj, pod_resources};
pub use security::{
    ensure_home, security, Security, DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
};
pub use source::{ObjectSource, PodFacts};
pub use tmpfs::{mount_memory_volume, unmount_pod_volumes, HostMounter, Mounter, NoMounter};
pub use volumes::{prepare_volumes, PreparedVolume, PreparedVolumes, VolumeKind};

#[cfg(test)]
mod testutil;
