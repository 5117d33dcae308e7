//! The garbage collector's view of ownership: every object it watches, keyed by UID, with its
//! owner references, and the reverse index from an owner's UID to its dependents. Each change
//! says which objects must be looked at again (Kubernetes' `processGraphChanges`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::discovery::ApiResource;

/// Finalizer that makes the server wait while the garbage collector deletes dependents.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer that makes the server wait while the garbage collector orphans dependents.
pub const ORPHAN: &str = "orphan";

/// Where an object lives, enough to read, patch and delete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub resource: Arc<ApiResource>,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

/// One watched object.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub identity: Identity,
    pub owners: Vec<OwnerReference>,
    /// Being deleted with the `foregroundDeletion` finalizer: waits for its dependents.
    pub deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer.
    pub orphaning: bool,
}

impl Node {
    pub fn from_meta(resource: Arc<ApiResource>, meta: &ObjectMeta) -> Option<Node> {
        let deleting = meta.deletion_timestamp.is_some();
        let has = |f: &str| deleting && meta.finalizers.iter().flatten().any(|x| x == f);
        Some(Node {
            identity: Identity {
                resource,
                namespace: meta.namespace.clone().filter(|n| !n.is_empty()),
                name: meta.name.clone()?,
                uid: meta.uid.clone()?,
            },
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting_dependents: has(FOREGROUND),
            orphaning: has(ORPHAN),
        })
    }

    fn blocks(&self, owner: &str) -> bool {
        self.owners
            .iter()
            .any(|o| o.uid == owner && o.block_owner_deletion == Some(true))
    }
}

/// What the collector must do next.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// Check whether the object's owners are gone (or, for an owner deleting in the
    /// foreground, whether its dependents are).
    Delete(String),
    /// Strip the owner's reference from its dependents, then its `orphan` finalizer.
    Orphan(String),
}

impl Work {
    pub fn key(&self) -> String {
        match self {
            Work::Delete(uid) => format!("delete/{uid}"),
            Work::Orphan(uid) => format!("orphan/{uid}"),
        }
    }

    pub fn parse(key: &str) -> Option<Work> {
        match key.split_once('/')? {
            ("delete", uid) => Some(Work::Delete(uid.to_string())),
            ("orphan", uid) => Some(Work::Orphan(uid.to_string())),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner UID → UIDs of the objects referencing it (the owner may not be known).
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The objects referencing `uid` as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<&Node> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .collect()
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// Dependents that hold up `uid`'s foreground deletion (`blockOwnerDeletion: true`).
    pub fn blocking_dependents(&self, uid: &str) -> Vec<&Node> {
        self.dependents(uid)
            .into_iter()
            .filter(|d| d.blocks(uid))
            .collect()
    }

    fn waiting(&self, uid: &str) -> bool {
        self.nodes.get(uid).is_some_and(|n| n.deleting_dependents)
    }

    /// Records an added or changed object.
    pub fn upsert(&mut self, node: Node) -> Vec<Work> {
        let uid = node.identity.uid.clone();
        let old = self.nodes.get(&uid);
        let mut work = Vec::new();
        let old_owners: Vec<OwnerReference> = old.map(|o| o.owners.clone()).unwrap_or_default();
        for o in &old_owners {
            if !node.owners.iter().any(|n| n.uid == o.uid) {
                if let Some(set) = self.dependents.get_mut(&o.uid) {
                    set.remove(&uid);
                    if set.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
                // One fewer dependent may let a foreground deletion finish.
                if self.waiting(&o.uid) {
                    work.push(Work::Delete(o.uid.clone()));
                }
            }
        }
        let mut check_self = false;
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
            let before = old_owners.iter().find(|b| b.uid == o.uid);
            if before.is_none() {
                // An owner never seen may be gone; one deleting in the foreground wants this
                // object deleted.
                check_self |= !self.nodes.contains_key(&o.uid) || self.waiting(&o.uid);
            }
            if self.waiting(&o.uid)
                && before.is_some_and(|b| b.block_owner_deletion != o.block_owner_deletion)
            {
                work.push(Work::Delete(o.uid.clone()));
            }
        }
        if check_self {
            work.push(Work::Delete(uid.clone()));
        }
        let was = |f: fn(&Node) -> bool| old.is_some_and(f);
        if node.orphaning && !was(|n| n.orphaning) {
            work.push(Work::Orphan(uid.clone()));
        }
        if node.deleting_dependents && !was(|n| n.deleting_dependents) {
            work.push(Work::Delete(uid.clone()));
            work.extend(
                self.dependents(&uid)
                    .into_iter()
                    .map(|d| Work::Delete(d.identity.uid.clone())),
            );
        }
        self.nodes.insert(uid, node);
        work
    }

    /// Records a deleted object: its dependents may now be garbage, and an owner waiting for
    /// it may finish.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut work = Vec::new();
        for o in &node.owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
            if self.waiting(&o.uid) {
                work.push(Work::Delete(o.uid.clone()));
            }
        }
        work.extend(
            self.dependents(uid)
                .into_iter()
                .map(|d| Work::Delete(d.identity.uid.clone())),
        );
        work
    }

    /// UIDs of the objects of `resource` (to notice those a re-list no longer shows).
    pub fn uids_of(&self, resource: &ApiResource) -> Vec<String> {
        self.uids_where(|r| r == resource)
    }

    /// UIDs of the objects whose resource satisfies `pred`.
    pub fn uids_where(&self, pred: impl Fn(&ApiResource) -> bool) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| pred(&n.identity.resource))
            .map(|n| n.identity.uid.clone())
            .collect()
    }

    /// Objects with an owner the graph does not hold: to be checked once every watch has
    /// listed (the owner may only have been missing from a list not yet done).
    pub fn unresolved(&self) -> Vec<Work> {
        self.nodes
            .values()
            .filter(|n| n.owners.iter().any(|o| !self.nodes.contains_key(&o.uid)))
            .map(|n| Work::Delete(n.identity.uid.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("name-{uid}"),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: Some(block),
        }
    }

    fn node(uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            identity: Identity {
                resource: Arc::new(ApiResource::erase::<Pod>(&())),
                namespace: Some("ns".into()),
                name: uid.into(),
                uid: uid.into(),
            },
            owners,
            deleting_dependents: false,
            orphaning: false,
        }
    }

    fn sorted(mut w: Vec<Work>) -> Vec<Work> {
        w.sort();
        w
    }

    #[test]
    fn a_dependent_of_an_unknown_owner_is_checked_and_owner_deletion_cascades() {
        let mut g = Graph::default();
        assert_eq!(
            g.upsert(node("pod", vec![owner_ref("rs", true)])),
            [Work::Delete("pod".into())]
        );
        assert_eq!(g.unresolved(), [Work::Delete("pod".into())]);
        // The owner shows up: nothing to do.
        let mut rs = node("rs", vec![]);
        rs.identity.resource = Arc::new(ApiResource::erase::<ConfigMap>(&()));
        assert!(g.upsert(rs).is_empty());
        assert!(g.unresolved().is_empty());
        assert_eq!(g.dependents("rs").len(), 1);
        assert_eq!(g.uids_of(&ApiResource::erase::<Pod>(&())), ["pod"]);
        // A known owner referenced by a new object: nothing to check.
        assert!(g
            .upsert(node("pod2", vec![owner_ref("rs", false)]))
            .is_empty());
        assert_eq!(
            sorted(g.remove("rs")),
            [Work::Delete("pod".into()), Work::Delete("pod2".into())]
        );
    }

    #[test]
    fn foreground_and_orphan_transitions() {
        let mut g = Graph::default();
        g.upsert(node("owner", vec![]));
        g.upsert(node("a", vec![owner_ref("owner", true)]));
        g.upsert(node("b", vec![owner_ref("owner", false)]));
        let mut deleting = node("owner", vec![]);
        deleting.deleting_dependents = true;
        assert_eq!(
            sorted(g.upsert(deleting.clone())),
            [
                Work::Delete("a".into()),
                Work::Delete("b".into()),
                Work::Delete("owner".into())
            ]
        );
        // Only once per transition.
        assert!(g.upsert(deleting).is_empty());
        let blocking: Vec<_> = g
            .blocking_dependents("owner")
            .iter()
            .map(|n| n.identity.uid.clone())
            .collect();
        assert_eq!(blocking, ["a"]);
        // A blocking dependent going away re-checks the owner.
        assert_eq!(g.remove("a"), [Work::Delete("owner".into())]);
        // So does one dropping its reference.
        assert_eq!(g.upsert(node("b", vec![])), [Work::Delete("owner".into())]);
        assert!(!g.has_dependents("owner"));

        let mut orphaning = node("o2", vec![]);
        orphaning.orphaning = true;
        assert_eq!(g.upsert(orphaning), [Work::Orphan("o2".into())]);
    }

    #[test]
    fn work_keys_round_trip() {
        for w in [Work::Delete("u-1".into()), Work::Orphan("u-2".into())] {
            assert_eq!(Work::parse(&w.key()), Some(w));
        }
        assert_eq!(Work::parse("other/x"), None);
    }
}
