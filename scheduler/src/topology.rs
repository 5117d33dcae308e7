//! Indexes the snapshot keeps so a cycle counts pods per topology domain without visiting every
//! placed pod or looking a node's labels up by string:
//!
//! - [`LabelColumns`]: for every label key some node has, each slot's value as a dense id, so
//!   "the node's zone" is one array read and per-domain sums are plain vectors;
//! - [`PodGroups`]: placed pods grouped by (namespace, labels), each group knowing how many of
//!   its pods sit on each slot. Pods of one workload share their labels, so a selector is
//!   matched once per group instead of once per pod, and only the matching groups' slots are
//!   visited.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::pod_info::PodInfo;
use crate::selectors::AffinityTerm;

/// A slot's value id when it has no label of the column's key.
pub(crate) const NO_VALUE: u32 = u32::MAX;

/// Hasher for small integer keys: one multiply, where std's SipHash costs tens of nanoseconds.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

/// FxHash's multiplier.
const SEED: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(SEED);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(SEED);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// One label key: its interned values (reference-counted, ids reused) and each slot's value.
#[derive(Debug, Default)]
pub(crate) struct Column {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    refs: Vec<u32>,
    free: Vec<u32>,
    per_slot: Vec<u32>,
}

impl Column {
    /// The slot's value id, or [`NO_VALUE`].
    #[inline]
    pub(crate) fn value(&self, slot: usize) -> u32 {
        self.per_slot.get(slot).copied().unwrap_or(NO_VALUE)
    }

    /// Upper bound of the value ids (freed ids included): the length of a dense per-value array.
    pub(crate) fn num_values(&self) -> usize {
        self.names.len()
    }

    /// The value an id stands for (empty for a freed id).
    pub(crate) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }

    fn set(&mut self, slot: usize, value: Option<&str>) {
        let old = self.per_slot[slot];
        if value.is_some_and(|v| old != NO_VALUE && self.names[old as usize] == v) {
            return;
        }
        let new = value.map_or(NO_VALUE, |v| self.intern(v));
        self.per_slot[slot] = new;
        if old != NO_VALUE {
            self.release(old);
        }
    }

    fn intern(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            self.refs[id as usize] += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = value.to_string();
                self.refs[id as usize] = 1;
                id
            }
            None => {
                self.names.push(value.to_string());
                self.refs.push(1);
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(value.to_string(), id);
        id
    }

    fn release(&mut self, id: u32) {
        let refs = &mut self.refs[id as usize];
        *refs -= 1;
        if *refs == 0 {
            let name = std::mem::take(&mut self.names[id as usize]);
            self.ids.remove(&name);
            self.free.push(id);
        }
    }
}

/// Every node label key as a [`Column`]. Keys are never dropped: clusters use few of them.
#[derive(Debug, Default)]
pub(crate) struct LabelColumns {
    keys: HashMap<String, u32>,
    names: Vec<String>,
    columns: Vec<Column>,
    slots: usize,
}

impl LabelColumns {
    pub(crate) fn column(&self, key: &str) -> Option<&Column> {
        self.keys.get(key).map(|&i| &self.columns[i as usize])
    }

    /// Makes room for `slots` slots (new slots have no labels).
    pub(crate) fn grow(&mut self, slots: usize) {
        if slots > self.slots {
            self.slots = slots;
            for c in &mut self.columns {
                c.per_slot.resize(slots, NO_VALUE);
            }
        }
    }

    /// Records the slot's labels; `None` clears them (node removed).
    pub(crate) fn set(&mut self, slot: usize, labels: Option<&BTreeMap<String, String>>) {
        for key in labels.into_iter().flat_map(BTreeMap::keys) {
            if !self.keys.contains_key(key) {
                self.keys.insert(key.clone(), self.columns.len() as u32);
                self.names.push(key.clone());
                self.columns.push(Column {
                    per_slot: vec![NO_VALUE; self.slots],
                    ..Column::default()
                });
            }
        }
        for (name, column) in self.names.iter().zip(&mut self.columns) {
            let value = labels.and_then(|l| l.get(name)).map(String::as_str);
            column.set(slot, value);
        }
    }
}

/// Pods on one slot of a [`Group`]: all of them, and those not terminating (the ones
/// PodTopologySpread counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotCount {
    pub all: u32,
    pub live: u32,
}

/// Placed pods sharing a namespace and labels.
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pods: u32,
    pub on: IdMap<u32, SlotCount>,
}

/// Placed pods grouped by (namespace, labels).
#[derive(Debug, Default)]
pub(crate) struct PodGroups {
    ids: HashMap<(String, BTreeMap<String, String>), u32>,
    groups: Vec<Group>,
    free: Vec<u32>,
}

impl PodGroups {
    /// Counts the pod on `slot`; returns its group id for [`PodGroups::remove`].
    pub(crate) fn add(&mut self, pod: &PodInfo, slot: u32) -> u32 {
        let key = (pod.namespace.clone(), pod.labels.clone());
        let id = match self.ids.get(&key) {
            Some(&id) => id,
            None => {
                let group = Group {
                    namespace: key.0.clone(),
                    labels: key.1.clone(),
                    ..Group::default()
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.groups[id as usize] = group;
                        id
                    }
                    None => {
                        self.groups.push(group);
                        (self.groups.len() - 1) as u32
                    }
                };
                self.ids.insert(key, id);
                id
            }
        };
        let g = &mut self.groups[id as usize];
        g.pods += 1;
        let c = g.on.entry(slot).or_default();
        c.all += 1;
        c.live += u32::from(!pod.terminating);
        id
    }

    /// Undoes [`PodGroups::add`] of a pod with that `terminating` flag.
    pub(crate) fn remove(&mut self, id: u32, slot: u32, terminating: bool) {
        let Some(g) = self.groups.get_mut(id as usize) else {
            return;
        };
        if let Some(c) = g.on.get_mut(&slot) {
            c.all -= 1;
            c.live -= u32::from(!terminating);
            if c.all == 0 {
                g.on.remove(&slot);
            }
        }
        g.pods -= 1;
        if g.pods == 0 {
            let g = std::mem::take(g);
            self.ids.remove(&(g.namespace, g.labels));
            self.free.push(id);
        }
    }

    /// The groups holding at least one pod.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter().filter(|g| g.pods > 0)
    }
}

/// Placed pods with the same required anti-affinity terms (replicas of one workload), and
/// how many sit on each slot: a cycle matches each distinct set of terms against the incoming
/// pod once.
#[derive(Debug, Default)]
pub(crate) struct AntiGroup {
    pub terms: Vec<AffinityTerm>,
    pods: u32,
    pub on: IdMap<u32, u32>,
}

/// Pods with required anti-affinity, grouped by their terms.
#[derive(Debug, Default)]
pub(crate) struct AntiGroups {
    /// The terms' `Debug` rendering (AffinityTerm has no `Hash`) → candidate ids.
    ids: HashMap<String, Vec<u32>>,
    groups: Vec<AntiGroup>,
    free: Vec<u32>,
}

impl AntiGroups {
    /// Counts a pod with these (non-empty) terms on `slot`; returns the group id.
    pub(crate) fn add(&mut self, terms: &[AffinityTerm], slot: u32) -> u32 {
        let key = format!("{terms:?}");
        let candidates = self.ids.entry(key).or_default();
        let found = candidates
            .iter()
            .copied()
            .find(|&id| self.groups[id as usize].terms == terms);
        let id = match found {
            Some(id) => id,
            None => {
                let group = AntiGroup {
                    terms: terms.to_vec(),
                    ..AntiGroup::default()
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.groups[id as usize] = group;
                        id
                    }
                    None => {
                        self.groups.push(group);
                        (self.groups.len() - 1) as u32
                    }
                };
                candidates.push(id);
                id
            }
        };
        let g = &mut self.groups[id as usize];
        g.pods += 1;
        *g.on.entry(slot).or_default() += 1;
        id
    }

    pub(crate) fn remove(&mut self, id: u32, slot: u32) {
        let Some(g) = self.groups.get_mut(id as usize) else {
            return;
        };
        if let Some(n) = g.on.get_mut(&slot) {
            *n -= 1;
            if *n == 0 {
                g.on.remove(&slot);
            }
        }
        g.pods -= 1;
        if g.pods == 0 {
            let g = std::mem::take(g);
            let key = format!("{:?}", g.terms);
            if let Some(ids) = self.ids.get_mut(&key) {
                ids.retain(|&x| x != id);
                if ids.is_empty() {
                    self.ids.remove(&key);
                }
            }
            self.free.push(id);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &AntiGroup> {
        self.groups.iter().filter(|g| g.pods > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn columns_intern_values_and_reuse_freed_ids() {
        let mut c = LabelColumns::default();
        c.grow(3);
        c.set(0, Some(&labels(&[("zone", "a")])));
        c.set(1, Some(&labels(&[("zone", "b"), ("disk", "ssd")])));
        c.set(2, Some(&labels(&[("zone", "a")])));
        let zone = c.column("zone").expect("zone");
        assert_eq!(zone.value(0), zone.value(2));
        assert_ne!(zone.value(0), zone.value(1));
        assert_eq!(zone.name(zone.value(1)), "b");
        assert_eq!(c.column("disk").expect("disk").value(0), NO_VALUE);
        // Zone b loses its last node: its id is freed and reused for zone c.
        let b = zone.value(1);
        c.set(1, None);
        assert_eq!(c.column("zone").expect("zone").value(1), NO_VALUE);
        assert_eq!(c.column("disk").expect("disk").value(1), NO_VALUE);
        c.set(0, Some(&labels(&[("zone", "c")])));
        let zone = c.column("zone").expect("zone");
        assert_eq!(zone.value(0), b);
        assert_eq!(zone.name(b), "c");
        assert_eq!(zone.num_values(), 2);
        c.grow(5);
        assert_eq!(c.column("zone").expect("zone").value(4), NO_VALUE);
    }

    #[test]
    fn anti_groups_share_equal_terms() {
        let term = |app: &str| AffinityTerm {
            namespaces: vec!["default".into()],
            namespace_selector: None,
            selector: berth_api::LabelSelector::parse(&format!("app={app}")).expect("selector"),
            topology_key: "kubernetes.io/hostname".into(),
        };
        let mut g = AntiGroups::default();
        let a = g.add(&[term("web")], 0);
        assert_eq!(g.add(&[term("web")], 0), a);
        assert_eq!(g.add(&[term("web")], 3), a);
        let b = g.add(&[term("db")], 3);
        assert_ne!(a, b);
        let web = g.iter().find(|x| x.terms == [term("web")]).expect("web");
        assert_eq!((web.on[&0], web.on[&3]), (2, 1));
        g.remove(a, 0);
        g.remove(a, 3);
        let web = g.iter().find(|x| x.terms == [term("web")]).expect("web");
        assert_eq!(web.on.len(), 1);
        g.remove(a, 0);
        assert_eq!(g.iter().count(), 1);
        assert_eq!(g.add(&[term("cache")], 1), a, "freed id reused");
        assert_eq!(g.ids.len(), 2, "the emptied key is dropped");
    }

    #[test]
    fn groups_count_pods_per_slot() {
        let pod = |name: &str, app: &str, terminating: bool| PodInfo {
            namespace: "default".into(),
            name: name.into(),
            labels: labels(&[("app", app)]),
            terminating,
            ..Default::default()
        };
        let mut g = PodGroups::default();
        let a = g.add(&pod("w1", "web", false), 0);
        let b = g.add(&pod("w2", "web", true), 0);
        let c = g.add(&pod("w3", "web", false), 4);
        let d = g.add(&pod("d1", "db", false), 0);
        assert_eq!((a, b, c), (a, a, a));
        assert_ne!(a, d);
        let web = g.iter().find(|x| x.labels["app"] == "web").expect("web");
        assert_eq!(web.on[&0], SlotCount { all: 2, live: 1 });
        assert_eq!(web.on[&4], SlotCount { all: 1, live: 1 });
        g.remove(a, 0, true);
        g.remove(a, 4, false);
        let web = g.iter().find(|x| x.labels["app"] == "web").expect("web");
        assert_eq!(web.on.len(), 1);
        assert_eq!(web.on[&0], SlotCount { all: 1, live: 1 });
        g.remove(a, 0, false);
        assert_eq!(g.iter().count(), 1, "the emptied group is gone");
        // Its id is reused by the next new group.
        assert_eq!(g.add(&pod("x", "cache", false), 2), a);
    }
}
