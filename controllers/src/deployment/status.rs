//! A Deployment's status from its ReplicaSets, and its Available / Progressing / ReplicaFailure
//! conditions, as `kubectl rollout status` reads them (Kubernetes' `calculateStatus`,
//! `syncRolloutStatus` and the condition helpers of its deployment util).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::rolling::{self, desired, rs_actual, rs_available, rs_ready, rs_spec};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";

/// Now, to the second (what a condition's time survives as in the API).
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

pub fn get_condition<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Sets `c` unless one of its type with the same status and reason is there; keeps the
/// transition time when only the reason changes (Kubernetes' `SetDeploymentCondition`).
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|x| x.type_ == c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|x| x.type_ != c.type_);
    conditions.push(c);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// `progressDeadlineSeconds` when set and not "never" (MaxInt32).
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()?
        .progress_deadline_seconds
        .filter(|s| *s != i32::MAX)
}

fn count(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// The status the ReplicaSets imply, with the Available condition set and the other
/// conditions carried over (Kubernetes' `calculateStatus`).
pub fn calculate(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_spec(rs)).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| rs_actual(rs)).sum()),
        updated_replicas: Some(new_rs.map_or(0, rs_actual)),
        ready_replicas: Some(all.iter().map(|rs| rs_ready(rs)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= desired(d) - rolling::max_unavailable(d) {
        set_condition(
            &mut status,
            condition(
                AVAILABLE,
                "True",
                MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            condition(
                AVAILABLE,
                "False",
                MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

/// Every pod updated, present and available, and the spec observed.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = desired(d);
    count(s.updated_replicas) == want
        && count(s.replicas) == want
        && count(s.available_replicas) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// More updated, ready or available pods, or fewer old ones, than the stored status says.
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

fn timed_out(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = get_condition(Some(new), PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

/// The rollout's status: `calculate` plus the Progressing condition (complete, progressing or
/// timed out) and ReplicaFailure copied from the ReplicaSets (Kubernetes' `syncRolloutStatus`).
pub fn rollout(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate(all, new_rs, d, now);
    let has_deadline = progress_deadline(d).is_some();
    if !has_deadline {
        remove_condition(&mut status, PROGRESSING);
    }
    let current = get_condition(d.status.as_ref(), PROGRESSING);
    let complete_already = count(status.replicas) == count(status.updated_replicas)
        && current.is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    let subject = |what: &str| match new_rs.and_then(|rs| rs.metadata.name.as_deref()) {
        Some(name) => format!("ReplicaSet \"{name}\" {what}"),
        None => format!(
            "Deployment \"{}\" {what}",
            d.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    if has_deadline && !complete_already {
        if complete(d, &status) {
            let c = condition(
                PROGRESSING,
                "True",
                NEW_RS_AVAILABLE,
                subject("has successfully progressed."),
                now,
            );
            set_condition(&mut status, c);
        } else if progressing(d, &status) {
            let mut c = condition(
                PROGRESSING,
                "True",
                RS_UPDATED,
                subject("is progressing."),
                now,
            );
            // Same reason, fresh lastUpdateTime: progress restarts the deadline.
            if let Some(cur) = current {
                if cur.status == "True" {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut status, PROGRESSING);
            }
            set_condition(&mut status, c);
        } else if timed_out(d, &status, now) {
            let c = condition(
                PROGRESSING,
                "False",
                TIMED_OUT,
                subject("has timed out progressing."),
                now,
            );
            set_condition(&mut status, c);
        }
    }
    match replica_failure(all, new_rs) {
        Some(c) => set_condition(&mut status, c),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    status
}

/// The new RS's ReplicaFailure condition, else an old one's, as a Deployment condition.
fn replica_failure(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == REPLICA_FAILURE)
            .map(|c| DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    new_rs
        .and_then(failure)
        .or_else(|| all.iter().find_map(|rs| failure(rs)))
}

/// When to look again at a rollout that shows no progress, so it times out on time
/// (Kubernetes' `requeueStuckDeployment`); None when there is no deadline to watch.
pub fn stuck_requeue(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let current = get_condition(d.status.as_ref(), PROGRESSING)?;
    if complete(d, new) || current.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let updated = current.last_update_time.as_ref()?.0.as_second();
    let after = updated + i64::from(deadline) - now.as_second();
    // The deadline check is strict (`before`), so look just after it.
    Some(Duration::from_secs(after.max(0) as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::rolling::tests::{deployment, rs};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn d3() -> Deployment {
        let mut d = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
        d.metadata.name = Some("web".into());
        d.metadata.generation = Some(2);
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(600);
        d
    }

    fn reason<'a>(s: &'a DeploymentStatus, t: &str) -> (&'a str, &'a str) {
        let c = get_condition(Some(s), t).expect("condition");
        (c.status.as_str(), c.reason.as_deref().unwrap())
    }

    #[test]
    fn counts_come_from_the_replicasets() {
        let d = d3();
        let old = rs(2, 2, 2);
        let new = rs(2, 1, 0);
        let s = calculate(&[&old, &new], Some(&new), &d, at(10));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.updated_replicas, Some(1));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.unavailable_replicas, Some(2));
        // 2 available ≥ 3 − 1.
        assert_eq!(reason(&s, AVAILABLE), ("True", MINIMUM_REPLICAS_AVAILABLE));
        let down = rs(3, 3, 1);
        let s = calculate(&[&down], Some(&down), &d, at(10));
        assert_eq!(
            reason(&s, AVAILABLE),
            ("False", MINIMUM_REPLICAS_UNAVAILABLE)
        );
    }

    #[test]
    fn progressing_then_complete_then_left_alone() {
        let mut d = d3();
        let mut new = rs(3, 1, 0);
        new.metadata.name = Some("web-abc".into());
        let s = rollout(&[&new], Some(&new), &d, at(10));
        assert_eq!(reason(&s, PROGRESSING), ("True", RS_UPDATED));
        let c = get_condition(Some(&s), PROGRESSING).unwrap();
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-abc\" is progressing.")
        );
        d.status = Some(s);
        // No change: nothing new, and a requeue for the deadline.
        let same = rollout(&[&new], Some(&new), &d, at(20));
        assert_eq!(Some(&same), d.status.as_ref());
        assert_eq!(
            stuck_requeue(&d, &same, at(20)),
            Some(Duration::from_secs(591))
        );
        // Past the deadline with no progress.
        let late = rollout(&[&new], Some(&new), &d, at(611));
        assert_eq!(reason(&late, PROGRESSING), ("False", TIMED_OUT));
        // All there: complete.
        let done = rs(3, 3, 3);
        let s = rollout(&[&done], Some(&done), &d, at(30));
        assert_eq!(reason(&s, PROGRESSING), ("True", NEW_RS_AVAILABLE));
        assert!(complete(&d, &s));
        assert_eq!(stuck_requeue(&d, &s, at(30)), None);
    }

    #[test]
    fn set_condition_keeps_transition_time_for_same_status() {
        let mut s = DeploymentStatus::default();
        set_condition(
            &mut s,
            condition(PROGRESSING, "True", NEW_RS_CREATED, "a".into(), at(1)),
        );
        set_condition(
            &mut s,
            condition(PROGRESSING, "True", RS_UPDATED, "b".into(), at(5)),
        );
        let c = get_condition(Some(&s), PROGRESSING).unwrap();
        assert_eq!(c.last_transition_time, Some(Time(at(1))));
        assert_eq!(c.last_update_time, Some(Time(at(5))));
        // Same status and reason: untouched.
        set_condition(
            &mut s,
            condition(PROGRESSING, "True", RS_UPDATED, "c".into(), at(9)),
        );
        let c = get_condition(Some(&s), PROGRESSING).unwrap();
        assert_eq!(c.message.as_deref(), Some("b"));
        remove_condition(&mut s, PROGRESSING);
        assert!(get_condition(Some(&s), PROGRESSING).is_none());
    }

    #[test]
    fn no_deadline_no_progressing_condition() {
        let mut d = d3();
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(i32::MAX);
        let new = rs(3, 1, 0);
        let s = rollout(&[&new], Some(&new), &d, at(10));
        assert!(get_condition(Some(&s), PROGRESSING).is_none());
    }
}
