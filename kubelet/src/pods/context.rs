//! What every pod worker shares: the API client, the node's stores and drivers.

use berth_dataplane::podnet::PodNetwork;

use crate::cgroup::CgroupManager;
use crate::config::KubeletConfig;
use crate::events::Recorder;
use crate::image::ImageStore;

pub struct Context {
    pub client: kube::Client,
    pub config: KubeletConfig,
    pub images: ImageStore,
    pub cgroups: CgroupManager,
    pub network: PodNetwork,
    pub recorder: Recorder,
    /// What the kubelet's server reads: pods' containers, for logs and exec.
    pub registry: super::Registry,
    /// The node's allocatable cpu (millicores) and memory (bytes), for resourceFieldRef
    /// defaults, and its memory capacity for oom_score_adj.
    pub allocatable_cpu_millis: u64,
    pub allocatable_memory: u64,
    pub memory_capacity: u64,
}
