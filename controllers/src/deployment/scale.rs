//! Sizing ReplicaSets when the Deployment's replica count changes: the single active RS takes
//! the new count, a saturated new RS leaves the old ones at zero, and mid-rollout every active
//! RS grows or shrinks in proportion to its share (Kubernetes' `scale` and `GetProportion`).

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::revision::{desired_replicas_annotation, max_replicas_annotation};
use super::rolling::{desired, max_surge, rs_available, rs_spec};

/// Oldest first; ties by name (Kubernetes' `ReplicaSetsByCreationTimestamp`).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let ts = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    ts(a)
        .cmp(&ts(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Larger first; ties newer first (`ReplicaSetsBySizeNewer`).
fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_spec(b).cmp(&rs_spec(a)).then_with(|| by_creation(b, a))
}

/// Larger first; ties older first (`ReplicaSetsBySizeOlder`).
fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_spec(b).cmp(&rs_spec(a)).then_with(|| by_creation(a, b))
}

/// The new RS has every pod the Deployment wants, all available.
pub fn is_saturated(d: &Deployment, new_rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = new_rs else {
        return false;
    };
    let want = desired(d);
    desired_replicas_annotation(rs) == Some(want) && rs_spec(rs) == want && rs_available(rs) == want
}

/// The RS to give the whole count when there is no rollout to balance: the only active one,
/// or the newest when none is active (Kubernetes' `FindActiveOrLatest`).
pub fn active_or_latest<'a>(
    new_rs: Option<&'a ReplicaSet>,
    old: &[&'a ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let mut old: Vec<&ReplicaSet> = old.to_vec();
    old.sort_by(|a, b| by_creation(b, a));
    let mut all: Vec<&ReplicaSet> = old.clone();
    all.extend(new_rs);
    let active: Vec<&ReplicaSet> = all.into_iter().filter(|rs| rs_spec(rs) > 0).collect();
    match active.len() {
        0 => new_rs.or_else(|| old.first().copied()),
        1 => Some(active[0]),
        _ => None,
    }
}

fn fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if desired(d) == 0 {
        return -rs_spec(rs);
    }
    let allowed = desired(d) + max_surge(d);
    let annotated = max_replicas_annotation(rs).unwrap_or_else(|| {
        d.status
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or_default()
    });
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_spec(rs)) * f64::from(allowed) / f64::from(annotated);
    // Go's math.Round: halves away from zero, as Rust's round.
    size.round() as i32 - rs_spec(rs)
}

fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_spec(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let f = fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        f.min(allowed)
    } else {
        f.max(allowed)
    }
}

/// New sizes for the active RSes (`spec.replicas > 0`) of a rolling Deployment mid-rollout,
/// as (index into `active`, size); leftovers go to the first in scaling order.
pub fn proportional(d: &Deployment, active: &[&ReplicaSet]) -> Vec<(usize, i32)> {
    let current: i32 = active.iter().map(|rs| rs_spec(rs)).sum();
    let allowed = if desired(d) > 0 {
        desired(d) + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - current;
    let mut order: Vec<usize> = (0..active.len()).collect();
    match to_add.cmp(&0) {
        Ordering::Greater => order.sort_by(|&a, &b| by_size_newer(active[a], active[b])),
        Ordering::Less => order.sort_by(|&a, &b| by_size_older(active[a], active[b])),
        Ordering::Equal => {}
    }
    let mut added = 0;
    let mut sizes: Vec<(usize, i32)> = Vec::with_capacity(order.len());
    for &i in &order {
        let rs = active[i];
        let p = proportion(rs, d, to_add, added);
        added += p;
        sizes.push((i, rs_spec(rs) + p));
    }
    if to_add != 0 {
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::revision::set_replicas_annotations;
    use crate::deployment::rolling::tests::{deployment, rs};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use k8s_openapi::jiff::Timestamp;

    fn named(name: &str, created: i64, spec: i32, max: i32) -> ReplicaSet {
        let mut r = rs(spec, spec, spec);
        r.metadata.name = Some(name.into());
        r.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        set_replicas_annotations(&mut r, 0, max);
        r
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // 10 replicas, surge 3: old 8 + new 5 = 13. Scaled to 20 (surge 3 → 23): +10.
        let old = named("old", 1, 8, 13);
        let new = named("new", 2, 5, 13);
        let d = deployment(20, IntOrString::Int(3), IntOrString::Int(2));
        let sizes = proportional(&d, &[&old, &new]);
        let mut by_name: Vec<(String, i32)> = sizes
            .iter()
            .map(|&(i, n)| ([&old, &new][i].metadata.name.clone().unwrap(), n))
            .collect();
        by_name.sort();
        // 8 * 23 / 13 = 14.15 → 14; 5 * 23 / 13 = 8.85 → 9; 14 + 9 = 23.
        assert_eq!(by_name, vec![("new".into(), 9), ("old".into(), 14)]);
        // Scaled down to 5 (surge 3 → 8): −5, larger (older on ties) first.
        let d = deployment(5, IntOrString::Int(3), IntOrString::Int(2));
        let sizes = proportional(&d, &[&old, &new]);
        let total: i32 = sizes.iter().map(|s| s.1).sum();
        assert_eq!(total, 8);
        assert_eq!(sizes[0].0, 0, "the larger RS goes first: {sizes:?}");
    }

    #[test]
    fn active_or_latest_and_saturation() {
        let a = named("a", 1, 0, 0);
        let b = named("b", 2, 3, 0);
        assert_eq!(
            active_or_latest(None, &[&a, &b]).and_then(|r| r.metadata.name.clone()),
            Some("b".into())
        );
        let c = named("c", 3, 0, 0);
        assert_eq!(
            active_or_latest(Some(&c), &[&a]).and_then(|r| r.metadata.name.clone()),
            Some("c".into())
        );
        assert_eq!(
            active_or_latest(None, &[&a]).and_then(|r| r.metadata.name.clone()),
            Some("a".into())
        );
        let d = named("d", 4, 2, 0);
        assert!(active_or_latest(Some(&d), &[&b]).is_none());
        let dep = deployment(2, IntOrString::Int(1), IntOrString::Int(0));
        let mut full = rs(2, 2, 2);
        assert!(!is_saturated(&dep, Some(&full)));
        set_replicas_annotations(&mut full, 2, 3);
        assert!(is_saturated(&dep, Some(&full)));
        assert!(!is_saturated(&dep, None));
    }
}
