//! RollingUpdate arithmetic (Kubernetes' deployment util): maxSurge / maxUnavailable resolved
//! against the desired replicas, how far the new ReplicaSet may grow, and how far the old ones
//! may shrink, at every step.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RollingError {
    #[error("invalid value for IntOrString: invalid type: string is not a percentage")]
    NotAPercentage { value: String },
    #[error("invalid value {value:?}: {reason}")]
    BadPercentage { value: String, reason: String },
}

/// `spec.replicas` of a Deployment (defaulted to 1 by the API server).
pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_spec(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// A value of maxSurge / maxUnavailable against `total`: an int as is, a percentage of
/// `total` rounded up or down (apimachinery's `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, RollingError> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let digits = s
                .strip_suffix('%')
                .ok_or_else(|| RollingError::NotAPercentage { value: s.clone() })?;
            let pct: i64 = digits.parse().map_err(|e: std::num::ParseIntError| {
                RollingError::BadPercentage {
                    value: s.clone(),
                    reason: e.to_string(),
                }
            })?;
            let scaled = pct as f64 * f64::from(total) / 100.0;
            let v = if round_up {
                scaled.ceil()
            } else {
                scaled.floor()
            };
            Ok(v as i32)
        }
    }
}

fn rolling_params(d: &Deployment) -> Option<(IntOrString, IntOrString)> {
    let strategy = d.spec.as_ref()?.strategy.as_ref();
    let is_rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    if !is_rolling {
        return None;
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let pct = || IntOrString::String("25%".into());
    Some((
        ru.and_then(|r| r.max_surge.clone()).unwrap_or_else(pct),
        ru.and_then(|r| r.max_unavailable.clone())
            .unwrap_or_else(pct),
    ))
}

/// Whether the Deployment rolls (RollingUpdate) rather than recreates.
pub fn is_rolling(d: &Deployment) -> bool {
    rolling_params(d).is_some()
}

/// (surge, unavailable) for `desired` replicas; both zero would deadlock, so unavailable is
/// then 1 (Kubernetes' `ResolveFenceposts`).
pub fn resolve_fenceposts(
    max_surge: &IntOrString,
    max_unavailable: &IntOrString,
    desired: i32,
) -> Result<(i32, i32), RollingError> {
    let surge = scaled_value(max_surge, desired, true)?;
    let mut unavailable = scaled_value(max_unavailable, desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// Pods the rollout may add above `spec.replicas` (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    match rolling_params(d) {
        None => 0,
        Some((surge, unavailable)) => resolve_fenceposts(&surge, &unavailable, desired(d))
            .map(|(s, _)| s)
            .unwrap_or(0),
    }
}

/// Pods that may be unavailable during the rollout, at most `spec.replicas` (0 for Recreate).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = desired(d);
    match rolling_params(d) {
        Some(_) if replicas == 0 => 0,
        None => 0,
        Some((surge, unavailable)) => resolve_fenceposts(&surge, &unavailable, replicas)
            .map(|(_, u)| u.min(replicas))
            .unwrap_or(0),
    }
}

/// Pods an RS has or may soon have: its spec, or more while pods it is shrinking away from are
/// still there. Kubernetes counts specs only, so a new pod can start before the old one it
/// replaces is gone; counting both holds maxSurge on the pods themselves.
fn pods_bound(rs: &ReplicaSet) -> i32 {
    rs_spec(rs).max(rs_actual(rs))
}

/// The size the new ReplicaSet may grow to now (Kubernetes' `NewRSNewReplicas`).
pub fn new_rs_new_replicas(
    d: &Deployment,
    all: &[&ReplicaSet],
    new_rs: &ReplicaSet,
) -> Result<i32, RollingError> {
    let Some((surge, unavailable)) = rolling_params(d) else {
        return Ok(desired(d));
    };
    let replicas = desired(d);
    let (surge, _) = resolve_fenceposts(&surge, &unavailable, replicas)?;
    let current: i32 = all.iter().map(|rs| pods_bound(rs)).sum();
    let max_total = replicas + surge;
    if current >= max_total {
        return Ok(rs_spec(new_rs));
    }
    let up = (max_total - current).min(replicas - rs_spec(new_rs));
    Ok(rs_spec(new_rs) + up)
}

/// How many old pods may go now, given the new RS's unavailable pods (the bound in
/// Kubernetes' `reconcileOldReplicaSets`); ≤ 0 means none.
pub fn max_scaled_down(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    let all_pods: i32 = all.iter().map(|rs| rs_spec(rs)).sum();
    let min_available = desired(d) - max_unavailable(d);
    let new_unavailable = rs_spec(new_rs) - rs_available(new_rs);
    all_pods - min_available - new_unavailable
}

/// Old RSes' unhealthy pods to drop first, oldest RS first, up to `budget` in all
/// (Kubernetes' `cleanupUnhealthyReplicas`). `old` must be sorted oldest first; returns
/// (index, new size) for each RS to scale.
pub fn cleanup_unhealthy(old: &[&ReplicaSet], budget: i32) -> Vec<(usize, i32)> {
    let mut done = 0;
    let mut out = Vec::new();
    for (i, rs) in old.iter().enumerate() {
        if done >= budget {
            break;
        }
        let spec = rs_spec(rs);
        if spec == 0 || spec == rs_available(rs) {
            continue;
        }
        let down = (budget - done).min(spec - rs_available(rs));
        out.push((i, spec - down));
        done += down;
    }
    out
}

/// Old RSes to shrink while keeping `spec.replicas - maxUnavailable` available, oldest first
/// (Kubernetes' `scaleDownOldReplicaSetsForRollingUpdate`). `all` includes the new RS; `old`
/// is sorted oldest first. Returns (index into `old`, new size).
pub fn scale_down_old(
    d: &Deployment,
    all: &[&ReplicaSet],
    old: &[&ReplicaSet],
) -> Vec<(usize, i32)> {
    let min_available = desired(d) - max_unavailable(d);
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    if available <= min_available {
        return Vec::new();
    }
    let total = available - min_available;
    let mut done = 0;
    let mut out = Vec::new();
    for (i, rs) in old.iter().enumerate() {
        if done >= total {
            break;
        }
        let spec = rs_spec(rs);
        if spec == 0 {
            continue;
        }
        let down = spec.min(total - done);
        out.push((i, spec - down));
        done += down;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    pub(crate) fn deployment(
        replicas: i32,
        surge: IntOrString,
        unavail: IntOrString,
    ) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavail),
                    }),
                }),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    pub(crate) fn rs(spec: i32, actual: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..ReplicaSetSpec::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: actual,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..ReplicaSetStatus::default()
            }),
            ..ReplicaSet::default()
        }
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        assert_eq!(scaled_value(&pct("25%"), 10, true), Ok(3));
        assert_eq!(scaled_value(&pct("25%"), 10, false), Ok(2));
        assert_eq!(scaled_value(&IntOrString::Int(4), 10, false), Ok(4));
        assert!(matches!(
            scaled_value(&pct("25"), 10, true),
            Err(RollingError::NotAPercentage { .. })
        ));
        assert!(scaled_value(&pct("x%"), 10, true).is_err());
        // 25%/25% of 1: surge 1, unavailable 0.
        assert_eq!(resolve_fenceposts(&pct("25%"), &pct("25%"), 1), Ok((1, 0)));
        // Both zero would never progress.
        assert_eq!(
            resolve_fenceposts(&IntOrString::Int(0), &pct("10%"), 5),
            Ok((0, 1))
        );
    }

    #[test]
    fn max_unavailable_is_capped_and_zero_for_recreate() {
        let d = deployment(2, IntOrString::Int(0), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2);
        assert_eq!(max_surge(&d), 0);
        let mut recreate = d.clone();
        recreate.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
        assert!(!is_rolling(&recreate));
        let defaults = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(4),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        assert_eq!((max_surge(&defaults), max_unavailable(&defaults)), (1, 1));
    }

    #[test]
    fn the_new_rs_grows_within_the_surge() {
        let d = deployment(4, IntOrString::Int(1), IntOrString::Int(1));
        let old = rs(4, 4, 4);
        let new = rs(0, 0, 0);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(1));
        // Already at 4 + 1.
        let new = rs(1, 1, 0);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), Ok(1));
        // The old RS shrank in spec but its pod is still there: no growth yet.
        let shrinking = rs(3, 4, 4);
        assert_eq!(new_rs_new_replicas(&d, &[&shrinking, &new], &new), Ok(1));
        let shrunk = rs(3, 3, 3);
        assert_eq!(new_rs_new_replicas(&d, &[&shrunk, &new], &new), Ok(2));
        // Never past the desired count.
        let gone = rs(0, 0, 0);
        let new = rs(3, 3, 3);
        assert_eq!(new_rs_new_replicas(&d, &[&gone, &new], &new), Ok(4));
    }

    #[test]
    fn old_rses_shrink_keeping_minimum_availability() {
        let d = deployment(4, IntOrString::Int(1), IntOrString::Int(1));
        let old = rs(4, 4, 4);
        let new = rs(1, 1, 0);
        // 5 pods, 3 must stay available, 1 new one unavailable: 1 may go.
        assert_eq!(max_scaled_down(&d, &[&old, &new], &new), 1);
        assert_eq!(scale_down_old(&d, &[&old, &new], &[&old]), vec![(0, 3)]);
        // Nothing available to spare.
        let old = rs(3, 3, 3);
        assert_eq!(scale_down_old(&d, &[&old, &new], &[&old]), vec![]);
        // Oldest first, skipping empty RSes.
        let a = rs(0, 0, 0);
        let b = rs(2, 2, 2);
        let c = rs(2, 2, 2);
        let new = rs(2, 2, 2);
        assert_eq!(
            scale_down_old(&d, &[&a, &b, &c, &new], &[&a, &b, &c]),
            vec![(1, 0), (2, 1)]
        );
    }

    #[test]
    fn unhealthy_old_pods_go_first() {
        let a = rs(3, 3, 1);
        let b = rs(2, 2, 2);
        let c = rs(2, 2, 0);
        assert_eq!(cleanup_unhealthy(&[&a, &b, &c], 3), vec![(0, 1), (2, 1)]);
        assert_eq!(cleanup_unhealthy(&[&a, &b, &c], 0), vec![]);
    }
}
