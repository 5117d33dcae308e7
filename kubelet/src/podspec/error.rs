//! The one error type of `podspec`. Messages a user reads in a pod's status or events are
//! Kubernetes' own wording, so `kubectl describe` reads the same as on a kubelet.

use std::path::PathBuf;

/// Why a container (or a pod's volumes) could not be prepared. Kubernetes reports the
/// container-level ones as `CreateContainerConfigError` and the volume ones as `FailedMount`.
#[derive(Debug, thiserror::Error)]
pub enum PodSpecError {
    /// A referenced ConfigMap or Secret does not exist (`kind` is `configmap` or `secret`, as in
    /// the kubelet's object cache errors).
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// Reading a referenced object failed for another reason (the API is unreachable, ...).
    #[error("couldn't get {kind} {namespace}/{name}")]
    Fetch {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An env `valueFrom` key is missing (`kind` is `ConfigMap` or `Secret`).
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    /// A configMap volume item names a missing key.
    #[error("configmap references non-existent config key: {key}")]
    MissingConfigMapVolumeKey { name: String, key: String },
    /// A secret volume item names a missing key.
    #[error("references non-existent secret key: {key}")]
    MissingSecretVolumeKey { name: String, key: String },
    /// A downward API field path or resource the kubelet cannot resolve.
    #[error("{message}")]
    FieldRef { message: String },
    /// Something in the pod the kubelet refuses (an invalid path, an unsupported source, ...).
    #[error("{message}")]
    Invalid { message: String },
    /// `runAsNonRoot` is violated, or the image's USER cannot be resolved.
    #[error("{message}")]
    User { message: String },
    /// A hostPath volume's `type` check failed.
    #[error("hostPath type check failed: {path} is not {what}")]
    HostPathType { path: String, what: &'static str },
    /// A filesystem operation under the pod directory (or on a hostPath) failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syscall on a path failed (mount, umount, openat, mkdirat).
    #[error("{op} {}", path.display())]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

impl PodSpecError {
    /// A fetch failure from an [`super::ObjectSource`] implementation.
    pub fn fetch(
        kind: &'static str,
        namespace: &str,
        name: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> PodSpecError {
        PodSpecError::Fetch {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: source.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> PodSpecError {
        PodSpecError::Invalid {
            message: message.into(),
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> PodSpecError {
        let path = path.into();
        move |source| PodSpecError::Io { op, path, source }
    }
}
