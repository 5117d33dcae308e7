//! The node's status as the kubelet's setters build it: capacity and allocatable, nodeInfo,
//! addresses, the kubelet endpoint, images and conditions; and whether it differs from what the
//! API server holds by more than heartbeat times.

use std::collections::BTreeMap;

use berth_api::{Quantity, QuantityFormat};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, NodeAddress, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{update_conditions, without_heartbeats, Observation};
use super::host::HostInfo;
use super::pressure::Thresholds;
use super::NodeConfig;

/// What `nodeInfo.kubeletVersion` says: the Kubernetes version Berth implements, like the API
/// server's `gitVersion`.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-berth.", env!("CARGO_PKG_VERSION"));
/// `nodeInfo.containerRuntimeVersion`: Berth is its own runtime.
pub const CONTAINER_RUNTIME_VERSION: &str = concat!("berth://", env!("CARGO_PKG_VERSION"));
/// The kubelet's `nodeStatusMaxImages`.
pub const MAX_IMAGES: usize = 50;
/// The kubelet's `maxNamesPerImageInNodeStatus`.
pub const MAX_NAMES_PER_IMAGE: usize = 5;

pub type ResourceList = BTreeMap<String, K8sQuantity>;

fn binary(bytes: u64) -> K8sQuantity {
    Quantity::from_int(
        i64::try_from(bytes).unwrap_or(i64::MAX),
        QuantityFormat::BinarySI,
    )
    .into()
}

fn decimal(n: u64) -> K8sQuantity {
    Quantity::from_int(
        i64::try_from(n).unwrap_or(i64::MAX),
        QuantityFormat::DecimalSI,
    )
    .into()
}

/// `hugepages-2Mi` for a 2 MiB page.
pub fn hugepage_resource(page_bytes: u64) -> String {
    let size = Quantity::from_int(
        i64::try_from(page_bytes).unwrap_or(i64::MAX),
        QuantityFormat::BinarySI,
    );
    format!("hugepages-{size}")
}

/// cpu, memory, pods, ephemeral-storage and one entry per hugepage size.
pub fn capacity(host: &HostInfo, max_pods: u32) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("cpu".into(), decimal(u64::from(host.cpu)));
    out.insert("memory".into(), binary(host.memory_bytes));
    out.insert("pods".into(), decimal(u64::from(max_pods)));
    out.insert(
        "ephemeral-storage".into(),
        binary(host.ephemeral_storage_bytes),
    );
    for (&page, &bytes) in &host.hugepages {
        out.insert(hugepage_resource(page), binary(bytes));
    }
    out
}

/// Capacity minus the hard eviction thresholds (no kube/system reservations): memory less the
/// `memory.available` threshold and the memory held in hugepages, ephemeral storage less the
/// `nodefs.available` percentage of itself.
pub fn allocatable(host: &HostInfo, max_pods: u32, thresholds: &Thresholds) -> ResourceList {
    let mut out = capacity(host, max_pods);
    let hugepages: u64 = host.hugepages.values().sum();
    let memory = host
        .memory_bytes
        .saturating_sub(thresholds.memory_available_bytes)
        .saturating_sub(hugepages);
    out.insert("memory".into(), binary(memory));
    // Go's float arithmetic, as the kubelet's GetThresholdQuantity does it.
    let reserved =
        (host.ephemeral_storage_bytes as f64 * thresholds.nodefs_available_percent / 100.0) as u64;
    out.insert(
        "ephemeral-storage".into(),
        binary(host.ephemeral_storage_bytes.saturating_sub(reserved)),
    );
    out
}

pub fn node_info(host: &HostInfo) -> NodeSystemInfo {
    NodeSystemInfo {
        architecture: host.architecture.clone(),
        boot_id: host.boot_id.clone(),
        container_runtime_version: CONTAINER_RUNTIME_VERSION.into(),
        kernel_version: host.kernel_version.clone(),
        kubelet_version: KUBELET_VERSION.into(),
        machine_id: host.machine_id.clone(),
        operating_system: "linux".into(),
        os_image: host.os_image.clone(),
        system_uuid: host.system_uuid.clone(),
        ..Default::default()
    }
}

pub fn addresses(cfg: &NodeConfig) -> Vec<NodeAddress> {
    vec![
        NodeAddress {
            type_: "InternalIP".into(),
            address: cfg.internal_ip.to_string(),
        },
        NodeAddress {
            type_: "Hostname".into(),
            address: cfg.hostname.clone(),
        },
    ]
}

/// The largest [`MAX_IMAGES`] images, largest first, each with at most
/// [`MAX_NAMES_PER_IMAGE`] names.
pub fn images(mut list: Vec<ContainerImage>) -> Vec<ContainerImage> {
    list.sort_by_key(|i| std::cmp::Reverse(i.size_bytes.unwrap_or(0)));
    list.truncate(MAX_IMAGES);
    for image in &mut list {
        if let Some(names) = &mut image.names {
            names.truncate(MAX_NAMES_PER_IMAGE);
        }
    }
    list
}

/// Everything that goes into one status report.
pub struct StatusInputs<'a> {
    pub cfg: &'a NodeConfig,
    pub host: &'a HostInfo,
    pub observation: &'a Observation,
    pub images: Vec<ContainerImage>,
    pub now: &'a Time,
}

/// `current` with every field the kubelet owns set; the rest (volumes, other conditions) kept.
pub fn desired_status(current: Option<&NodeStatus>, inputs: StatusInputs<'_>) -> NodeStatus {
    let mut status = current.cloned().unwrap_or_default();
    let cfg = inputs.cfg;
    let mut capacity_list = status.capacity.take().unwrap_or_default();
    let mut allocatable_list = status.allocatable.take().unwrap_or_default();
    // Extended resources from device plugins stay; the ones computed here are replaced.
    capacity_list.extend(capacity(inputs.host, cfg.max_pods));
    allocatable_list.extend(allocatable(inputs.host, cfg.max_pods, &cfg.thresholds));
    status.capacity = Some(capacity_list);
    status.allocatable = Some(allocatable_list);
    status.node_info = Some(node_info(inputs.host));
    status.addresses = Some(addresses(cfg));
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(cfg.kubelet_port),
        }),
    });
    status.images = Some(images(inputs.images));
    let existing = status.conditions.take().unwrap_or_default();
    status.conditions = Some(update_conditions(&existing, inputs.observation, inputs.now));
    status
}

/// Whether `new` says anything `old` does not, heartbeat times aside.
pub fn status_changed(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        s.conditions = s.conditions.as_deref().map(without_heartbeats);
        s
    };
    strip(old) != strip(new)
}

/// The Ready check the kubelet makes itself: a node without cpu, memory, pods or
/// ephemeral-storage capacity cannot take pods.
pub fn missing_capacity(capacity: &ResourceList) -> Option<String> {
    let missing: Vec<&str> = ["cpu", "memory", "pods", "ephemeral-storage"]
        .into_iter()
        .filter(|r| {
            capacity
                .get(*r)
                .and_then(|q| Quantity::try_from(q).ok())
                .is_none_or(|q| q <= Quantity::default())
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing node capacity for resources: {}",
            missing.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::host::{HUGEPAGE_1GI, HUGEPAGE_2MI};
    use super::super::pressure::Pressures;
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn host() -> HostInfo {
        HostInfo {
            cpu: 4,
            memory_bytes: 8130056 * 1024,
            ephemeral_storage_bytes: 100_000_000_000,
            hugepages: BTreeMap::from([(HUGEPAGE_2MI, 4 * HUGEPAGE_2MI), (HUGEPAGE_1GI, 0)]),
            boot_id: "b".into(),
            machine_id: "m".into(),
            system_uuid: "u".into(),
            kernel_version: "6.18".into(),
            os_image: "Debian".into(),
            architecture: "amd64".into(),
        }
    }

    fn strings(list: &ResourceList) -> BTreeMap<&str, &str> {
        list.iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str()))
            .collect()
    }

    #[test]
    fn capacity_in_kubernetes_canonical_form() {
        let cap = capacity(&host(), 500);
        assert_eq!(
            strings(&cap),
            BTreeMap::from([
                ("cpu", "4"),
                ("memory", "8130056Ki"),
                ("pods", "500"),
                ("ephemeral-storage", "97656250Ki"),
                ("hugepages-2Mi", "8Mi"),
                ("hugepages-1Gi", "0"),
            ])
        );
    }

    #[test]
    fn allocatable_is_capacity_minus_hard_eviction_thresholds() {
        let alloc = allocatable(&host(), 500, &Thresholds::default());
        // 8130056Ki - 100Mi - 8Mi of hugepages = 8019464Ki.
        assert_eq!(alloc["memory"].0, "8019464Ki");
        assert_eq!(alloc["ephemeral-storage"].0, "87890625Ki");
        assert_eq!(alloc["cpu"].0, "4");
        assert_eq!(alloc["pods"].0, "500");
        assert_eq!(alloc["hugepages-2Mi"].0, "8Mi");

        let mut tiny = host();
        tiny.memory_bytes = 50 << 20;
        tiny.ephemeral_storage_bytes = 4096 * 1000 + 7;
        let alloc = allocatable(&tiny, 110, &Thresholds::default());
        assert_eq!(alloc["memory"].0, "0", "never negative");
        // floor(4096007 * 0.1) = 409600 reserved.
        assert_eq!(alloc["ephemeral-storage"].0, "3686407");
    }

    #[test]
    fn images_are_the_largest_fifty() {
        let list: Vec<ContainerImage> = (0..60)
            .map(|i| ContainerImage {
                names: Some((0..7).map(|n| format!("img{i}:{n}")).collect()),
                size_bytes: Some(i * 1000),
            })
            .collect();
        let out = images(list);
        assert_eq!(out.len(), 50);
        assert_eq!(out[0].size_bytes, Some(59_000));
        assert_eq!(out[49].size_bytes, Some(10_000));
        assert_eq!(out[0].names.as_ref().unwrap().len(), 5);
    }

    #[test]
    fn missing_capacity_blocks_ready() {
        assert_eq!(missing_capacity(&capacity(&host(), 500)), None);
        let mut h = host();
        h.cpu = 0;
        assert_eq!(
            missing_capacity(&capacity(&h, 0)).as_deref(),
            Some("missing node capacity for resources: cpu, pods")
        );
    }

    #[test]
    fn only_real_changes_count() {
        let cfg = NodeConfig::new("n1", "10.0.0.1".parse().unwrap(), "/tmp".into());
        let h = host();
        let obs = Observation {
            pressures: Pressures::default(),
            ready: Ok(()),
        };
        let t0 = Time(Timestamp::from_second(1_700_000_000).unwrap());
        let t1 = Time(Timestamp::from_second(1_700_000_010).unwrap());
        let inputs = |now| StatusInputs {
            cfg: &cfg,
            host: &h,
            observation: &obs,
            images: vec![],
            now,
        };
        let first = desired_status(None, inputs(&t0));
        assert!(status_changed(None, &first));
        let second = desired_status(Some(&first), inputs(&t1));
        assert!(!status_changed(Some(&first), &second), "a heartbeat only");
        assert_eq!(
            second
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let info = second.node_info.unwrap();
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert!(info.container_runtime_version.starts_with("berth://"));
        let addrs = second.addresses.unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "10.0.0.1");
        assert_eq!(addrs[1].type_, "Hostname");

        let sick = Observation {
            pressures: Pressures {
                disk: true,
                ..Default::default()
            },
            ready: Ok(()),
        };
        let third = desired_status(
            Some(&first),
            StatusInputs {
                observation: &sick,
                ..inputs(&t1)
            },
        );
        assert!(status_changed(Some(&first), &third));
    }
}
