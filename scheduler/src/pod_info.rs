//! Everything the plugins need to know about a pod, parsed once: its resource requests counted
//! as Kubernetes counts them, node selection rules, tolerations, host ports, inter-pod
//! (anti-)affinity, topology spread constraints and images. The same type describes the pod
//! being scheduled and the pods already on nodes.

use std::collections::BTreeMap;

use berth_api::k8s_openapi::api::core::v1 as core;
use berth_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use berth_api::{LabelSelector, Operator, Quantity, QuantityError};

use crate::selectors::{
    label_key_requirements, merge, AffinityTerm, NodeSelectorTerm, RequiredNodeAffinity,
    TaintEffect, Toleration,
};

/// What kube-scheduler assumes a container without a cpu request uses, for scoring only.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// What kube-scheduler assumes a container without a memory request uses, for scoring only.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

#[derive(Debug, thiserror::Error)]
pub enum PodInfoError {
    #[error("pod {pod}: invalid {resource} quantity in {container}")]
    Quantity {
        pod: String,
        container: String,
        resource: String,
        #[source]
        source: QuantityError,
    },
}

/// Resource amounts: cpu in millicores, the rest in units (bytes, pods, devices).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Every other resource (extended resources, hugepages), sorted by name.
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    /// Reads a `requests`/`allocatable` map; `pods` is returned apart since only nodes have
    /// it. The error names the resource whose quantity is invalid.
    pub fn from_map(
        map: Option<&BTreeMap<String, ApiQuantity>>,
    ) -> Result<(Resources, i64), (String, QuantityError)> {
        let mut r = Resources::default();
        let mut pods = 0;
        for (name, q) in map.into_iter().flatten() {
            let q = Quantity::try_from(q).map_err(|e| (name.clone(), e))?;
            let value = clamp(q.as_value());
            match name.as_str() {
                "cpu" => r.milli_cpu = clamp(q.as_milli()),
                "memory" => r.memory = value,
                "ephemeral-storage" => r.ephemeral_storage = value,
                "pods" => pods = value,
                _ => r.scalar.push((name.clone(), value)),
            }
        }
        Ok((r, pods))
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Adds `sign × other` (sign is 1 or -1).
    pub fn add(&mut self, other: &Resources, sign: i64) {
        self.milli_cpu += sign * other.milli_cpu;
        self.memory += sign * other.memory;
        self.ephemeral_storage += sign * other.ephemeral_storage;
        for (name, v) in &other.scalar {
            match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                Ok(i) => self.scalar[i].1 += sign * v,
                Err(i) => self.scalar.insert(i, (name.clone(), sign * v)),
            }
        }
    }

    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                Ok(i) => self.scalar[i].1 = self.scalar[i].1.max(*v),
                Err(i) => self.scalar.insert(i, (name.clone(), *v)),
            }
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.iter().all(|(_, v)| *v == 0)
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// A host port a container binds: `ip` `0.0.0.0` means every address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedTerm {
    pub weight: i32,
    pub term: AffinityTerm,
}

/// Whether a spread constraint filters (DoNotSchedule) or only scores (ScheduleAnyway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub hard: bool,
    pub selector: LabelSelector,
    pub min_domains: Option<i32>,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node
    /// selection count.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore): only nodes whose taints the pod tolerates
    /// count.
    pub honor_taints: bool,
}

/// A pod parsed for scheduling.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`, when the pod asks for one node.
    pub node_name: Option<String>,
    pub terminating: bool,
    /// What NodeResourcesFit checks and BalancedAllocation scores.
    pub requests: Resources,
    /// cpu and memory with containers' missing requests taken as the defaults, for
    /// LeastAllocated.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub required_node_affinity: RequiredNodeAffinity,
    pub preferred_node_affinity: Vec<(i32, NodeSelectorTerm)>,
    pub tolerations: Vec<Toleration>,
    pub tolerates_unschedulable: bool,
    pub host_ports: Vec<HostPort>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedTerm>,
    pub preferred_anti_affinity: Vec<WeightedTerm>,
    pub spread: Vec<SpreadConstraint>,
    /// Normalized image names (`:latest` added when there is no tag or digest), init
    /// containers first.
    pub images: Vec<String>,
}

impl PodInfo {
    pub fn from_pod(pod: &core::Pod) -> Result<PodInfo, PodInfoError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let default_spec = core::PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let full_name = || format!("{namespace}/{name}");

        let (requests, non_zero) = pod_requests(spec, &full_name)?;
        let tolerations: Vec<Toleration> = spec
            .tolerations
            .iter()
            .flatten()
            .map(Toleration::from_api)
            .collect();
        let tolerates_unschedulable = tolerations
            .iter()
            .any(|t| t.tolerates(UNSCHEDULABLE_TAINT, "", TaintEffect::NoSchedule));

        let node_affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref());
        let preferred_node_affinity = node_affinity
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0)
            .map(|p| (p.weight, NodeSelectorTerm::from_api(&p.preference)))
            .collect();

        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let host_ports = spec
            .containers
            .iter()
            .chain(sidecars)
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|hp| hp > 0))
            .map(|p| HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.host_port.unwrap_or(0),
            })
            .collect();

        let terms = |list: Option<&Vec<core::PodAffinityTerm>>| -> Vec<AffinityTerm> {
            list.into_iter()
                .flatten()
                .map(|t| AffinityTerm::from_api(t, &namespace, &labels))
                .collect()
        };
        let weighted = |list: Option<&Vec<core::WeightedPodAffinityTerm>>| -> Vec<WeightedTerm> {
            list.into_iter()
                .flatten()
                .filter(|w| w.weight != 0)
                .map(|w| WeightedTerm {
                    weight: w.weight,
                    term: AffinityTerm::from_api(&w.pod_affinity_term, &namespace, &labels),
                })
                .collect()
        };
        let affinity = spec.affinity.as_ref().and_then(|a| a.pod_affinity.as_ref());
        let anti = spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref());
        let spread = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| spread_constraint(c, &labels))
            .collect();
        let images = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| normalized_image(c.image.as_deref().unwrap_or("")))
            .collect();

        Ok(PodInfo {
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            requests,
            non_zero_cpu: non_zero.milli_cpu,
            non_zero_memory: non_zero.memory,
            required_node_affinity: RequiredNodeAffinity::from_pod(spec),
            preferred_node_affinity,
            tolerations,
            tolerates_unschedulable,
            host_ports,
            required_affinity: terms(affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: terms(anti.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: weighted(affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: weighted(anti.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            spread,
            images,
            namespace,
            name,
            labels,
        })
    }

    /// Whether it has any inter-pod affinity or anti-affinity term (kube-scheduler's
    /// "pods with affinity", which scoring must visit).
    pub fn has_pod_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

/// `max(sum(containers) + sum(sidecars), max over init containers of (its request + the
/// sidecars started before it)) + overhead`, as Kubernetes' `PodRequests`; the second value
/// does the same with containers' missing cpu/memory requests taken as the defaults.
fn pod_requests(
    spec: &core::PodSpec,
    pod: &dyn Fn() -> String,
) -> Result<(Resources, Resources), PodInfoError> {
    let container_requests = |c: &core::Container| -> Result<(Resources, Resources), PodInfoError> {
        let map = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let (r, _) =
            Resources::from_map(map).map_err(|(resource, source)| PodInfoError::Quantity {
                pod: pod(),
                container: c.name.clone(),
                resource,
                source,
            })?;
        let mut nz = r.clone();
        let has = |k: &str| map.is_some_and(|m| m.contains_key(k));
        if !has("cpu") {
            nz.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            nz.memory = DEFAULT_MEMORY_REQUEST;
        }
        Ok((r, nz))
    };
    let mut sum = (Resources::default(), Resources::default());
    for c in &spec.containers {
        let (r, nz) = container_requests(c)?;
        sum.0.add(&r, 1);
        sum.1.add(&nz, 1);
    }
    let mut sidecars = (Resources::default(), Resources::default());
    let mut init_max = (Resources::default(), Resources::default());
    for c in spec.init_containers.iter().flatten() {
        let (mut r, mut nz) = container_requests(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sum.0.add(&r, 1);
            sum.1.add(&nz, 1);
            sidecars.0.add(&r, 1);
            sidecars.1.add(&nz, 1);
            r = sidecars.0.clone();
            nz = sidecars.1.clone();
        } else {
            r.add(&sidecars.0, 1);
            nz.add(&sidecars.1, 1);
        }
        init_max.0.max_with(&r);
        init_max.1.max_with(&nz);
    }
    sum.0.max_with(&init_max.0);
    sum.1.max_with(&init_max.1);
    let (overhead, _) =
        Resources::from_map(spec.overhead.as_ref()).map_err(|(resource, source)| {
            PodInfoError::Quantity {
                pod: pod(),
                container: "overhead".into(),
                resource,
                source,
            }
        })?;
    sum.0.add(&overhead, 1);
    sum.1.add(&overhead, 1);
    sum.0.scalar.retain(|(_, v)| *v != 0);
    Ok(sum)
}

fn spread_constraint(
    c: &core::TopologySpreadConstraint,
    labels: &BTreeMap<String, String>,
) -> SpreadConstraint {
    let mut selector = LabelSelector::from_optional(c.label_selector.as_ref())
        .unwrap_or_else(|_| LabelSelector::nothing());
    if !selector.matches_nothing() {
        let extra = label_key_requirements(c.match_label_keys.as_deref(), labels, Operator::In);
        selector = merge(selector, extra);
    }
    SpreadConstraint {
        max_skew: c.max_skew,
        topology_key: c.topology_key.clone(),
        hard: c.when_unsatisfiable == "DoNotSchedule",
        selector,
        min_domains: c.min_domains,
        honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
    }
}

/// Adds `:latest` to an image reference with neither tag nor digest, as ImageLocality does.
pub fn normalized_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(
        name: &str,
        cpu: Option<&str>,
        memory: Option<&str>,
        always: bool,
    ) -> core::Container {
        let mut requests = BTreeMap::new();
        if let Some(c) = cpu {
            requests.insert("cpu".to_string(), ApiQuantity(c.into()));
        }
        if let Some(m) = memory {
            requests.insert("memory".to_string(), ApiQuantity(m.into()));
        }
        core::Container {
            name: name.into(),
            image: Some("nginx".into()),
            resources: Some(core::ResourceRequirements {
                requests: Some(requests),
                ..Default::default()
            }),
            restart_policy: always.then(|| "Always".to_string()),
            ..Default::default()
        }
    }

    fn pod(spec: core::PodSpec) -> core::Pod {
        core::Pod {
            metadata: berth_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    #[test]
    fn requests_count_init_sidecars_and_overhead() {
        let spec = core::PodSpec {
            containers: vec![
                container("a", Some("100m"), Some("64Mi"), false),
                container("b", Some("200m"), None, false),
            ],
            init_containers: Some(vec![
                container("sidecar", Some("50m"), Some("16Mi"), true),
                container("init", Some("1"), Some("32Mi"), false),
            ]),
            overhead: Some([("cpu".to_string(), ApiQuantity("10m".into()))].into()),
            ..Default::default()
        };
        let info = PodInfo::from_pod(&pod(spec)).expect("parses");
        // cpu: max(100+200+50, 1000+50) + 10; memory: max(64+16, 32+16) Mi.
        assert_eq!(info.requests.milli_cpu, 1060);
        assert_eq!(info.requests.memory, 80 * 1024 * 1024);
        // Container b's missing memory request counts as 200Mi for scoring.
        assert_eq!(info.non_zero_memory, (64 + 200 + 16) * 1024 * 1024);
        assert_eq!(info.non_zero_cpu, 1060);
        assert_eq!(info.images, vec!["nginx:latest"; 4]);
    }

    #[test]
    fn invalid_quantity_is_an_error() {
        let spec = core::PodSpec {
            containers: vec![container("a", Some("lots"), None, false)],
            ..Default::default()
        };
        let err = PodInfo::from_pod(&pod(spec)).expect_err("refused");
        assert_eq!(err.to_string(), "pod default/p: invalid cpu quantity in a");
    }

    #[test]
    fn image_names_normalize() {
        assert_eq!(normalized_image("nginx"), "nginx:latest");
        assert_eq!(normalized_image("reg:5000/app"), "reg:5000/app:latest");
        assert_eq!(normalized_image("reg:5000/app:1.0"), "reg:5000/app:1.0");
        assert_eq!(normalized_image("app@sha256:ab"), "app@sha256:ab");
    }
}
