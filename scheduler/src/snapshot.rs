//! The cluster as the scheduler sees it: one [`NodeInfo`] per node with the pods on it, kept
//! up to date by incremental calls (never rebuilt), plus a compact copy of each node's numbers
//! ([`NodeHot`]) so the per-node filter and score loop reads one small array, and the
//! [`crate::topology`] indexes (node labels as dense per-key columns, placed pods grouped by
//! namespace and labels) so topology plugins count per domain without visiting every pod.

use std::collections::{BTreeMap, HashMap};

use berth_api::k8s_openapi::api::core::v1 as core;
use berth_api::QuantityError;

use crate::plugins::fit_columns::FitColumns;
use crate::plugins::resource_scores::ResourceColumns;
use crate::pod_info::{HostPort, PodInfo, PodInfoError, Resources};
use crate::selectors::Taint;
use crate::topology::{AntiGroups, Column, IdMap, LabelColumns, PodGroups};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("node {node}: invalid {resource} quantity in status.allocatable")]
    NodeQuantity {
        node: String,
        resource: String,
        #[source]
        source: QuantityError,
    },
    #[error("node without a name")]
    NodeWithoutName,
    #[error("pod {pod} is not bound to a node")]
    PodNotBound { pod: String },
    #[error("parsing pod")]
    Pod(#[from] PodInfoError),
}

/// One node and the pods on it (bound or assumed).
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    /// Sum of the pods' requests (what NodeResourcesFit compares with allocatable).
    pub requested: Resources,
    /// Sum of the pods' cpu and memory with missing requests taken as the defaults.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub used_ports: Vec<HostPort>,
    /// `status.images`: every name of every image, with its size in bytes.
    pub images: Vec<(String, i64)>,
    pub pods: Vec<PodInfo>,
    /// Pods with any inter-pod affinity or anti-affinity term.
    pub pods_with_affinity: u32,
    pub pods_with_required_anti_affinity: u32,
    /// False for a slot that only holds pods whose node is not (or no longer) known.
    pub exists: bool,
}

/// The numbers of one node the hot loop reads, copied out of its [`NodeInfo`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodeHot {
    pub alloc_cpu: i64,
    pub alloc_memory: i64,
    pub alloc_ephemeral: i64,
    pub alloc_pods: i32,
    pub req_cpu: i64,
    pub req_memory: i64,
    pub req_ephemeral: i64,
    pub pod_count: i32,
    pub nz_cpu: i64,
    pub nz_memory: i64,
    /// Dividing by `alloc_cpu` and `alloc_memory` (see `resources::divisor`).
    pub div_cpu: Option<crate::plugins::resources::Divisor>,
    pub div_memory: Option<crate::plugins::resources::Divisor>,
    /// NoSchedule and NoExecute taints.
    pub hard_taints: u16,
    /// Index of the first of them in the node's taints.
    pub first_hard_taint: u16,
    pub prefer_no_schedule_taints: u16,
    pub unschedulable: bool,
    pub exists: bool,
    pub has_ports: bool,
}

impl NodeHot {
    pub(crate) fn of(n: &NodeInfo) -> NodeHot {
        let count = |pred: fn(&Taint) -> bool| n.taints.iter().filter(|t| pred(t)).count() as u16;
        NodeHot {
            alloc_cpu: n.allocatable.milli_cpu,
            alloc_memory: n.allocatable.memory,
            alloc_ephemeral: n.allocatable.ephemeral_storage,
            alloc_pods: n.allowed_pods.clamp(0, i64::from(i32::MAX)) as i32,
            req_cpu: n.requested.milli_cpu,
            req_memory: n.requested.memory,
            req_ephemeral: n.requested.ephemeral_storage,
            pod_count: n.pods.len().min(i32::MAX as usize) as i32,
            nz_cpu: n.non_zero_cpu,
            nz_memory: n.non_zero_memory,
            div_cpu: crate::plugins::resources::divisor(n.allocatable.milli_cpu),
            div_memory: crate::plugins::resources::divisor(n.allocatable.memory),
            hard_taints: count(|t| t.effect.is_hard()),
            first_hard_taint: n
                .taints
                .iter()
                .position(|t| t.effect.is_hard())
                .unwrap_or(0) as u16,
            prefer_no_schedule_taints: count(|t| {
                t.effect == crate::selectors::TaintEffect::PreferNoSchedule
            }),
            unschedulable: n.unschedulable,
            exists: n.exists,
            has_ports: !n.used_ports.is_empty(),
        }
    }
}

/// The scheduler's view of the cluster. Every update costs O(1) or O(pods on the node).
#[derive(Debug, Default)]
pub struct Snapshot {
    slots: Vec<NodeInfo>,
    hot: Vec<NodeHot>,
    /// `hot`'s cpu and memory numbers as the vectorized resource scores read them.
    resource_columns: ResourceColumns,
    /// `hot`'s NodeResourcesFit numbers and filter flags as the plain-pod pass reads them.
    fit_columns: FitColumns,
    free: Vec<u32>,
    by_name: HashMap<String, u32>,
    /// `namespace/name` → where its pod is accounted.
    pod_slots: HashMap<String, PodSlot>,
    /// Image name → (slot → size) of the nodes that have it.
    images: HashMap<String, IdMap<u32, i64>>,
    columns: LabelColumns,
    groups: PodGroups,
    anti_groups: AntiGroups,
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    nodes: usize,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
}

/// A placed pod's slot, its group in `groups` and in `anti_groups` (if it has anti-affinity).
#[derive(Clone, Copy, Debug)]
struct PodSlot {
    slot: u32,
    group: u32,
    anti_group: Option<u32>,
}

fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Number of nodes (slots holding only pods of unknown nodes do not count).
    pub fn num_nodes(&self) -> usize {
        self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        let slot = *self.by_name.get(name)?;
        let n = &self.slots[slot as usize];
        n.exists.then_some(n)
    }

    /// Adds or replaces a node, keeping the pods already on it.
    pub fn add_node(&mut self, node: &core::Node) -> Result<(), SnapshotError> {
        let name = node
            .metadata
            .name
            .clone()
            .ok_or(SnapshotError::NodeWithoutName)?;
        let status = node.status.as_ref();
        let (allocatable, allowed_pods) = Resources::from_map(
            status.and_then(|s| s.allocatable.as_ref()),
        )
        .map_err(|(resource, source)| SnapshotError::NodeQuantity {
            node: name.clone(),
            resource,
            source,
        })?;
        let spec = node.spec.as_ref();
        let taints = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(Taint::from_api)
            .collect();
        let images: Vec<(String, i64)> = status
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|i| {
                let size = i.size_bytes.unwrap_or(0);
                i.names.iter().flatten().map(move |n| (n.clone(), size))
            })
            .collect();
        let slot = self.slot_for(&name);
        let info = &mut self.slots[slot as usize];
        if !info.exists {
            self.nodes += 1;
        }
        info.exists = true;
        info.labels = node.metadata.labels.clone().unwrap_or_default();
        self.columns.set(slot as usize, Some(&info.labels));
        info.taints = taints;
        info.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        info.allocatable = allocatable;
        info.allowed_pods = allowed_pods;
        let old_images = std::mem::replace(&mut info.images, images);
        for (image, _) in &old_images {
            if let Some(nodes) = self.images.get_mut(image) {
                nodes.remove(&slot);
                if nodes.is_empty() {
                    self.images.remove(image);
                }
            }
        }
        for (image, size) in &self.slots[slot as usize].images {
            self.images
                .entry(image.clone())
                .or_default()
                .insert(slot, *size);
        }
        self.refresh(slot);
        Ok(())
    }

    /// Same as [`Snapshot::add_node`].
    pub fn update_node(&mut self, node: &core::Node) -> Result<(), SnapshotError> {
        self.add_node(node)
    }

    /// Removes a node; pods still bound to it stay accounted until they are removed.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(&slot) = self.by_name.get(name) else {
            return false;
        };
        let info = &mut self.slots[slot as usize];
        if !info.exists {
            return false;
        }
        info.exists = false;
        self.nodes -= 1;
        self.columns.set(slot as usize, None);
        for (image, _) in std::mem::take(&mut info.images) {
            if let Some(nodes) = self.images.get_mut(&image) {
                nodes.remove(&slot);
                if nodes.is_empty() {
                    self.images.remove(&image);
                }
            }
        }
        self.release_if_empty(slot);
        true
    }

    /// Adds or replaces a bound pod. A pod that has finished (Succeeded or Failed) uses no
    /// resources, so it is removed instead.
    pub fn add_pod(&mut self, pod: &core::Pod) -> Result<(), SnapshotError> {
        let info = PodInfo::from_pod(pod)?;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            self.remove_pod(&info.namespace, &info.name);
            return Ok(());
        }
        let Some(node) = info.node_name.clone() else {
            return Err(SnapshotError::PodNotBound {
                pod: pod_key(&info.namespace, &info.name),
            });
        };
        self.place(info, &node);
        Ok(())
    }

    /// Same as [`Snapshot::add_pod`].
    pub fn update_pod(&mut self, pod: &core::Pod) -> Result<(), SnapshotError> {
        self.add_pod(pod)
    }

    /// Accounts a pod on `node` before its binding is observed, so the next cycles see the
    /// node's capacity taken. The observed pod later replaces it ([`Snapshot::add_pod`]), or
    /// [`Snapshot::forget_pod`] drops it when the bind failed.
    pub fn assume_pod(&mut self, pod: &PodInfo, node: &str) {
        let mut info = pod.clone();
        info.node_name = Some(node.to_string());
        self.place(info, node);
    }

    /// Drops an assumed pod.
    pub fn forget_pod(&mut self, namespace: &str, name: &str) -> bool {
        self.remove_pod(namespace, name)
    }

    pub fn remove_pod(&mut self, namespace: &str, name: &str) -> bool {
        let Some(PodSlot {
            slot,
            group,
            anti_group,
        }) = self.pod_slots.remove(&pod_key(namespace, name))
        else {
            return false;
        };
        let info = &mut self.slots[slot as usize];
        let Some(i) = info
            .pods
            .iter()
            .position(|p| p.name == name && p.namespace == namespace)
        else {
            return false;
        };
        let pod = info.pods.swap_remove(i);
        self.groups.remove(group, slot, pod.terminating);
        if let Some(id) = anti_group {
            self.anti_groups.remove(id, slot);
        }
        info.requested.add(&pod.requests, -1);
        info.non_zero_cpu -= pod.non_zero_cpu;
        info.non_zero_memory -= pod.non_zero_memory;
        for port in &pod.host_ports {
            if let Some(j) = info.used_ports.iter().position(|p| p == port) {
                info.used_ports.swap_remove(j);
            }
        }
        if pod.has_pod_affinity() {
            info.pods_with_affinity -= 1;
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            info.pods_with_required_anti_affinity -= 1;
            self.pods_with_required_anti_affinity -= 1;
        }
        self.refresh(slot);
        self.release_if_empty(slot);
        true
    }

    /// Labels of a namespace, for affinity terms with a `namespaceSelector`.
    pub fn set_namespace_labels(&mut self, namespace: &str, labels: BTreeMap<String, String>) {
        self.namespace_labels.insert(namespace.to_string(), labels);
    }

    pub fn remove_namespace(&mut self, namespace: &str) {
        self.namespace_labels.remove(namespace);
    }

    pub(crate) fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespace_labels.get(namespace)
    }

    pub(crate) fn slots(&self) -> &[NodeInfo] {
        &self.slots
    }

    pub(crate) fn hot(&self) -> &[NodeHot] {
        &self.hot
    }

    pub(crate) fn resource_columns(&self) -> &ResourceColumns {
        &self.resource_columns
    }

    pub(crate) fn fit_columns(&self) -> &FitColumns {
        &self.fit_columns
    }

    pub(crate) fn image_nodes(&self, image: &str) -> Option<&IdMap<u32, i64>> {
        self.images.get(image)
    }

    /// Each slot's value of the node label `key`; `None` when no node has that label.
    pub(crate) fn column(&self, key: &str) -> Option<&Column> {
        self.columns.column(key)
    }

    pub(crate) fn groups(&self) -> &PodGroups {
        &self.groups
    }

    pub(crate) fn anti_groups(&self) -> &AntiGroups {
        &self.anti_groups
    }

    pub(crate) fn any_pod_with_affinity(&self) -> bool {
        self.pods_with_affinity > 0
    }

    pub(crate) fn any_pod_with_required_anti_affinity(&self) -> bool {
        self.pods_with_required_anti_affinity > 0
    }

    fn place(&mut self, info: PodInfo, node: &str) {
        self.remove_pod(&info.namespace, &info.name);
        let slot = self.slot_for(node);
        let group = self.groups.add(&info, slot);
        let anti_group = (!info.required_anti_affinity.is_empty())
            .then(|| self.anti_groups.add(&info.required_anti_affinity, slot));
        self.pod_slots.insert(
            pod_key(&info.namespace, &info.name),
            PodSlot {
                slot,
                group,
                anti_group,
            },
        );
        let n = &mut self.slots[slot as usize];
        n.requested.add(&info.requests, 1);
        n.non_zero_cpu += info.non_zero_cpu;
        n.non_zero_memory += info.non_zero_memory;
        n.used_ports.extend(info.host_ports.iter().cloned());
        if info.has_pod_affinity() {
            n.pods_with_affinity += 1;
            self.pods_with_affinity += 1;
        }
        if !info.required_anti_affinity.is_empty() {
            n.pods_with_required_anti_affinity += 1;
            self.pods_with_required_anti_affinity += 1;
        }
        n.pods.push(info);
        self.refresh(slot);
    }

    fn slot_for(&mut self, name: &str) -> u32 {
        if let Some(&slot) = self.by_name.get(name) {
            return slot;
        }
        let info = NodeInfo {
            name: name.to_string(),
            ..NodeInfo::default()
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = info;
                slot
            }
            None => {
                self.slots.push(info);
                self.hot.push(NodeHot::default());
                self.resource_columns.push(&NodeHot::default());
                self.fit_columns.push(&NodeHot::default());
                self.columns.grow(self.slots.len());
                (self.slots.len() - 1) as u32
            }
        };
        self.by_name.insert(name.to_string(), slot);
        slot
    }

    fn release_if_empty(&mut self, slot: u32) {
        let info = &mut self.slots[slot as usize];
        if info.exists || !info.pods.is_empty() {
            return;
        }
        self.by_name.remove(&info.name);
        *info = NodeInfo::default();
        self.hot[slot as usize] = NodeHot::default();
        self.resource_columns
            .set(slot as usize, &self.hot[slot as usize]);
        self.fit_columns
            .set(slot as usize, &self.hot[slot as usize]);
        self.free.push(slot);
    }

    fn refresh(&mut self, slot: u32) {
        let hot = NodeHot::of(&self.slots[slot as usize]);
        self.hot[slot as usize] = hot;
        self.resource_columns.set(slot as usize, &hot);
        self.fit_columns.set(slot as usize, &hot);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use berth_api::k8s_openapi::api::core::v1::{ContainerImage, NodeSpec, NodeStatus};
    use berth_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use berth_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn node(name: &str, cpu: &str, memory: &str, pods: &str) -> core::Node {
        core::Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(
                    [
                        ("cpu".to_string(), Q(cpu.into())),
                        ("memory".to_string(), Q(memory.into())),
                        ("pods".to_string(), Q(pods.into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
        }
    }

    /// A 4-cpu node with a `zone` label when given one.
    pub(crate) fn zoned_node(name: &str, zone: Option<&str>) -> core::Node {
        let mut n = node(name, "4", "8Gi", "110");
        if let Some(zone) = zone {
            let labels = n.metadata.labels.as_mut().expect("labels");
            labels.insert("zone".into(), zone.into());
        }
        n
    }

    /// The slot index of a node, for plugin tests that call per-slot functions.
    pub(crate) fn slot_of(s: &Snapshot, name: &str) -> usize {
        s.slots().iter().position(|n| n.name == name).expect("node")
    }

    pub(crate) fn pod(name: &str, node: Option<&str>, cpu: &str, memory: &str) -> core::Pod {
        core::Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(core::PodSpec {
                node_name: node.map(Into::into),
                containers: vec![core::Container {
                    name: "c".into(),
                    image: Some("nginx:1.27".into()),
                    resources: Some(core::ResourceRequirements {
                        requests: Some(
                            [
                                ("cpu".to_string(), Q(cpu.into())),
                                ("memory".to_string(), Q(memory.into())),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pods_accumulate_and_leave() {
        let mut s = Snapshot::new();
        s.add_node(&node("n1", "4", "8Gi", "110")).expect("node");
        s.add_pod(&pod("a", Some("n1"), "500m", "1Gi"))
            .expect("pod");
        s.add_pod(&pod("b", Some("n1"), "250m", "1Gi"))
            .expect("pod");
        // Re-adding a pod replaces it rather than counting it twice.
        s.add_pod(&pod("b", Some("n1"), "250m", "1Gi"))
            .expect("pod");
        let n = s.node("n1").expect("n1");
        assert_eq!(n.requested.milli_cpu, 750);
        assert_eq!(n.requested.memory, 2 << 30);
        assert_eq!(n.pods.len(), 2);
        assert!(s.remove_pod("default", "a"));
        assert!(!s.remove_pod("default", "a"));
        assert_eq!(s.node("n1").expect("n1").requested.milli_cpu, 250);
        assert_eq!(s.hot()[0].req_cpu, 250);
        assert_eq!(s.hot()[0].pod_count, 1);
    }

    /// Recomputes the pod groups and label columns from the slots and compares them with the
    /// incrementally kept ones.
    fn check_indexes(s: &Snapshot) {
        type Key = (String, Vec<(String, String)>, u32);
        let mut want: BTreeMap<Key, (u32, u32)> = BTreeMap::new();
        for (i, n) in s.slots().iter().enumerate() {
            for p in &n.pods {
                let labels = p.labels.clone().into_iter().collect();
                let e = want
                    .entry((p.namespace.clone(), labels, i as u32))
                    .or_default();
                e.0 += 1;
                e.1 += u32::from(!p.terminating);
            }
        }
        let mut have: BTreeMap<Key, (u32, u32)> = BTreeMap::new();
        for g in s.groups().iter() {
            for (&slot, c) in &g.on {
                let labels = g.labels.clone().into_iter().collect();
                let old = have.insert((g.namespace.clone(), labels, slot), (c.all, c.live));
                assert!(old.is_none(), "one group per namespace and labels");
            }
        }
        assert_eq!(have, want);
        let mut want: BTreeMap<(String, u32), u32> = BTreeMap::new();
        for (i, n) in s.slots().iter().enumerate() {
            for p in n
                .pods
                .iter()
                .filter(|p| !p.required_anti_affinity.is_empty())
            {
                let terms = format!("{:?}", p.required_anti_affinity);
                *want.entry((terms, i as u32)).or_default() += 1;
            }
        }
        let mut have: BTreeMap<(String, u32), u32> = BTreeMap::new();
        for g in s.anti_groups().iter() {
            for (&slot, &n) in &g.on {
                let old = have.insert((format!("{:?}", g.terms), slot), n);
                assert!(old.is_none(), "one group per set of terms");
            }
        }
        assert_eq!(have, want);
        for key in ["kubernetes.io/hostname", "zone"] {
            let Some(column) = s.column(key) else {
                continue;
            };
            for (i, n) in s.slots().iter().enumerate() {
                let want = n.labels.get(key).filter(|_| n.exists).map(String::as_str);
                let v = column.value(i);
                let have = (v != crate::topology::NO_VALUE).then(|| column.name(v));
                assert_eq!(have, want, "slot {i} key {key}");
            }
        }
    }

    #[test]
    fn indexes_follow_every_update() {
        let mut s = Snapshot::new();
        let zoned = |name: &str, zone: &str| zoned_node(name, Some(zone));
        let labelled = |name: &str, node: Option<&str>, app: &str| {
            let mut p = pod(name, node, "100m", "128Mi");
            p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
            p
        };
        s.add_node(&zoned("n1", "a")).expect("node");
        s.add_node(&zoned("n2", "b")).expect("node");
        check_indexes(&s);
        let spread_out = |mut p: core::Pod| {
            p.spec.as_mut().expect("spec").affinity = Some(core::Affinity {
                pod_anti_affinity: Some(core::PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![
                        core::PodAffinityTerm {
                            topology_key: "kubernetes.io/hostname".into(),
                            label_selector: Some(
                                berth_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                                    match_expressions: None,
                                },
                            ),
                            ..Default::default()
                        },
                    ]),
                    preferred_during_scheduling_ignored_during_execution: None,
                }),
                ..Default::default()
            });
            p
        };
        s.add_pod(&spread_out(labelled("w1", Some("n1"), "web")))
            .expect("pod");
        s.add_pod(&spread_out(labelled("w2", Some("n1"), "web")))
            .expect("pod");
        assert_eq!(s.anti_groups().iter().count(), 1);
        s.add_pod(&labelled("d1", Some("n2"), "db")).expect("pod");
        check_indexes(&s);
        // Relabelled: moves to another group; rebound: moves to another slot.
        s.update_pod(&labelled("w2", Some("n1"), "db"))
            .expect("pod");
        s.update_pod(&labelled("w1", Some("n2"), "web"))
            .expect("pod");
        check_indexes(&s);
        let mut t = PodInfo::from_pod(&labelled("t1", None, "web")).expect("pod");
        t.terminating = true;
        s.assume_pod(&t, "n2");
        let web = s.groups().iter().find(|g| g.labels["app"] == "web");
        let on_n2 = web.expect("web group").on[&1];
        assert_eq!((on_n2.all, on_n2.live), (2, 1));
        check_indexes(&s);
        assert!(s.forget_pod("default", "t1"));
        check_indexes(&s);
        // A node changes zone, is removed with its pods still bound, comes back.
        s.update_node(&zoned("n2", "c")).expect("node");
        check_indexes(&s);
        assert!(s.remove_node("n2"));
        check_indexes(&s);
        s.add_node(&zoned("n2", "a")).expect("node");
        check_indexes(&s);
        // Emptied slots are released and reused with fresh labels and no pods.
        assert!(s.remove_node("n2"));
        for name in ["w1", "d1"] {
            assert!(s.remove_pod("default", name));
        }
        check_indexes(&s);
        s.add_node(&zoned("n3", "b")).expect("node");
        s.add_pod(&labelled("x", Some("n3"), "web")).expect("pod");
        check_indexes(&s);
        assert_eq!(s.slots().len(), 2, "n3 reuses n2's slot");
        assert_eq!(s.groups().iter().count(), 2);
        let a = s.column("zone").expect("zone").value(0);
        assert_eq!(s.column("zone").expect("zone").name(a), "a");
    }

    #[test]
    fn assumed_pod_counts_until_forgotten() {
        let mut s = Snapshot::new();
        s.add_node(&node("n1", "4", "8Gi", "110")).expect("node");
        let p = PodInfo::from_pod(&pod("a", None, "1", "1Gi")).expect("pod");
        s.assume_pod(&p, "n1");
        assert_eq!(s.node("n1").expect("n1").requested.milli_cpu, 1000);
        assert!(s.forget_pod("default", "a"));
        assert_eq!(s.node("n1").expect("n1").requested.milli_cpu, 0);
    }

    #[test]
    fn pods_of_unknown_node_wait_for_it_and_slots_are_reused() {
        let mut s = Snapshot::new();
        s.add_pod(&pod("a", Some("n9"), "1", "1Gi")).expect("pod");
        assert_eq!(s.num_nodes(), 0);
        assert!(s.node("n9").is_none());
        s.add_node(&node("n9", "4", "8Gi", "110")).expect("node");
        assert_eq!(s.num_nodes(), 1);
        assert_eq!(s.node("n9").expect("n9").requested.milli_cpu, 1000);
        assert!(s.remove_node("n9"));
        assert!(s.remove_pod("default", "a"));
        s.add_node(&node("n2", "4", "8Gi", "110")).expect("node");
        assert_eq!(s.slots().len(), 1, "freed slot reused");
        assert!(s.pod_slots.is_empty());
    }

    #[test]
    fn images_index_follows_node_updates() {
        let mut s = Snapshot::new();
        let mut n = node("n1", "4", "8Gi", "110");
        n.status.as_mut().expect("status").images = Some(vec![ContainerImage {
            names: Some(vec![
                "nginx:1.27".into(),
                "docker.io/library/nginx:1.27".into(),
            ]),
            size_bytes: Some(100),
        }]);
        s.add_node(&n).expect("node");
        assert_eq!(
            s.image_nodes("nginx:1.27").expect("indexed").get(&0),
            Some(&100)
        );
        n.status.as_mut().expect("status").images = None;
        s.update_node(&n).expect("node");
        assert!(s.image_nodes("nginx:1.27").is_none());
    }

    #[test]
    fn bad_allocatable_is_an_error() {
        let mut s = Snapshot::new();
        let err = s
            .add_node(&node("n1", "x", "8Gi", "110"))
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "node n1: invalid cpu quantity in status.allocatable"
        );
        let err = s.add_pod(&pod("a", None, "1", "1Gi")).expect_err("refused");
        assert_eq!(err.to_string(), "pod default/a is not bound to a node");
    }
}
