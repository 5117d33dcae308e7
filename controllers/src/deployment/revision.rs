//! Revision bookkeeping on ReplicaSets (Kubernetes' deployment util): the revision annotations
//! `kubectl rollout history` and `rollout undo` read, the replica annotations proportional
//! scaling reads, and the Deployment annotations copied onto its ReplicaSets.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Longest revision-history annotation kept (Kubernetes' `maxRevHistoryLengthInChars`).
const MAX_HISTORY_CHARS: usize = 2000;

/// Deployment annotations that are not copied to its ReplicaSets.
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// An object's revision; 0 when it has none (or an unparsable one).
pub fn revision(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub fn rs_revision(rs: &ReplicaSet) -> i64 {
    revision(rs.metadata.annotations.as_ref())
}

pub fn max_revision<'a>(rses: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rses.into_iter().map(rs_revision).max().unwrap_or(0)
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// The Deployment's `spec.replicas` when this RS was last sized for it.
pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DESIRED_REPLICAS)
}

/// `spec.replicas + maxSurge` when this RS was last sized.
pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, MAX_REPLICAS)
}

/// Whether the replica annotations differ from (desired, max).
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    desired_replicas_annotation(rs) != Some(desired) || max_replicas_annotation(rs) != Some(max)
}

/// Sets the replica annotations; true if they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let Some(from) = d.metadata.annotations.as_ref() else {
        return false;
    };
    let to = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in from {
        if skip_copy(k) || to.get(k) == Some(v) {
            continue;
        }
        to.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Annotates the new ReplicaSet (Kubernetes' `SetNewReplicaSetAnnotations`): the Deployment's
/// own annotations, `new_revision` if higher than the one it has — keeping the one it had in
/// the revision history, as when rolling back to it — and, for an RS about to be created
/// (`!exists`), the replica annotations. True if anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    max_surge: i32,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = a.get(REVISION).cloned();
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(r) => r,
            Err(_) => return changed,
        },
    };
    if old_revision < new_revision {
        a.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.to_string(), old);
            } else {
                let mut entries: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_HISTORY_CHARS && start < entries.len() {
                    total -= entries[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_HISTORY_CHARS {
                    entries.drain(..start);
                    entries.push(&old);
                    let joined = entries.join(",");
                    a.insert(REVISION_HISTORY.to_string(), joined);
                }
            }
        }
    }
    let desired = super::rolling::desired(d);
    if !exists && set_replicas_annotations(rs, desired, desired + max_surge) {
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs_with(annotations: &[(&str, &str)]) -> ReplicaSet {
        let mut rs = ReplicaSet::default();
        rs.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        rs
    }

    #[test]
    fn revisions_parse_and_the_max_wins() {
        let a = rs_with(&[(REVISION, "3")]);
        let b = rs_with(&[(REVISION, "x")]);
        let c = ReplicaSet::default();
        assert_eq!(
            (rs_revision(&a), rs_revision(&b), rs_revision(&c)),
            (3, 0, 0)
        );
        assert_eq!(max_revision([&a, &b, &c]), 3);
        assert_eq!(max_revision([]), 0);
    }

    #[test]
    fn a_new_rs_gets_the_deployments_annotations_revision_and_sizes() {
        let mut d = Deployment::default();
        d.metadata.annotations = Some(BTreeMap::from([
            ("team".to_string(), "a".to_string()),
            (REVISION.to_string(), "7".to_string()),
            (LAST_APPLIED.to_string(), "{}".to_string()),
        ]));
        d.spec = Some(Default::default());
        d.spec.as_mut().unwrap().replicas = Some(4);
        let mut rs = ReplicaSet::default();
        assert!(set_new_rs_annotations(&d, &mut rs, 2, false, 1));
        let a = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(a.get("team").map(String::as_str), Some("a"));
        assert_eq!(a.get(REVISION).map(String::as_str), Some("2"));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("5"));
        assert!(!a.contains_key(LAST_APPLIED));
        assert!(!a.contains_key(REVISION_HISTORY));
        // Nothing new the second time.
        assert!(!set_new_rs_annotations(&d, &mut rs, 2, true, 1));
    }

    #[test]
    fn rolling_back_to_an_rs_keeps_its_old_revisions() {
        let d = Deployment::default();
        let mut rs = rs_with(&[(REVISION, "1")]);
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true, 0));
        assert_eq!(rs_revision(&rs), 3);
        assert_eq!(
            rs.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY],
            "1"
        );
        assert!(set_new_rs_annotations(&d, &mut rs, 5, true, 0));
        assert_eq!(
            rs.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY],
            "1,3"
        );
        // A lower revision never replaces a higher one.
        assert!(!set_new_rs_annotations(&d, &mut rs, 4, true, 0));
        assert_eq!(rs_revision(&rs), 5);
    }

    #[test]
    fn replica_annotations() {
        let mut rs = ReplicaSet::default();
        assert!(replicas_annotations_need_update(&rs, 3, 4));
        assert!(set_replicas_annotations(&mut rs, 3, 4));
        assert!(!replicas_annotations_need_update(&rs, 3, 4));
        assert_eq!(desired_replicas_annotation(&rs), Some(3));
        assert_eq!(max_replicas_annotation(&rs), Some(4));
        assert!(!set_replicas_annotations(&mut rs, 3, 4));
    }
}
