//! What the pod's spec refers to but does not contain: API objects and node facts.

use std::future::Future;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

use super::PodSpecError;

/// Objects a pod refers to, fetched by the caller: the kubelet reads them from the API (or its
/// informer caches); unit tests use a map. `Ok(None)` means "does not exist"; other failures
/// are [`PodSpecError::fetch`]. Implementations may write `async fn` (the futures must be
/// `Send`).
pub trait ObjectSource {
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, PodSpecError>> + Send;
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, PodSpecError>> + Send;
    /// All Services of a namespace (for service-link environment variables).
    fn services(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<Service>, PodSpecError>> + Send;
}

/// What the kubelet knows about the pod's placement that is not (yet) in the pod object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// The sandbox's IP once the network is set up (`status.podIP` for the downward API).
    pub pod_ip: Option<String>,
    /// The node's InternalIP (`status.hostIP`).
    pub host_ip: String,
    pub node_name: String,
    /// Limits a container does not set default to these for `resourceFieldRef`, as in Kubernetes.
    pub node_allocatable_cpu_millis: u64,
    pub node_allocatable_memory: u64,
    pub node_allocatable_ephemeral_storage: u64,
}
