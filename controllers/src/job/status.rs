//! The Job controller's decisions as pure functions of the Job, its pods and the time: which
//! finished pods are newly counted, how many pods should run, whether the Job has met its
//! success criteria or failed, and the conditions that say so.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use berth_api::well_known::finalizers::JOB_TRACKING;

use crate::pods::{is_active, is_ready};

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const FAILURE_TARGET: &str = "FailureTarget";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const SUSPENDED: &str = "Suspended";

pub const REASON_BACKOFF_LIMIT: &str = "BackoffLimitExceeded";
pub const MESSAGE_BACKOFF_LIMIT: &str = "Job has reached the specified backoff limit";
pub const REASON_DEADLINE: &str = "DeadlineExceeded";
pub const MESSAGE_DEADLINE: &str = "Job was active longer than specified deadline";
pub const REASON_COMPLETIONS: &str = "CompletionsReached";
pub const MESSAGE_COMPLETIONS: &str = "Reached expected number of succeeded pods";

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == JOB_TRACKING)
}

/// How a pod that has finished (or is going away) counts: Some(true) succeeded, Some(false)
/// failed, None still running. A pod deleted before it finished counts as failed, so orphaned
/// and evicted pods are not lost (Kubernetes' `isPodFailed`, podReplacementPolicy
/// TerminatingOrFailed); with policy `Failed` only the Failed phase counts.
pub fn outcome(pod: &Pod, replace_failed_only: bool) -> Option<bool> {
    match phase(pod) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if !replace_failed_only && pod.metadata.deletion_timestamp.is_some() => Some(false),
        _ => None,
    }
}

pub fn condition<'a>(job: &'a Job, kind: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// Complete or Failed: nothing more to do but clean-up.
pub fn finished(job: &Job) -> Option<&JobCondition> {
    condition(job, COMPLETE).or_else(|| condition(job, FAILED))
}

/// Sets condition `kind` in `conditions`; the transition time moves only when its status does.
pub fn set_condition(
    conditions: &mut Vec<JobCondition>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == kind) {
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        if c.status != status || c.reason.as_deref() != Some(reason) {
            c.last_probe_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        return;
    }
    conditions.push(JobCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// The finished pods whose outcome is not in the Job's counters yet, and the pods whose
/// tracking finalizer can go. `releasing` are the pods whose finalizer removal is already under
/// way (their outcome is recorded).
pub struct Tracking<'a> {
    /// UIDs newly added to `uncountedTerminatedPods`.
    pub newly_succeeded: Vec<String>,
    pub newly_failed: Vec<String>,
    /// Finished pods still holding the tracking finalizer.
    pub release: Vec<&'a Pod>,
}

pub fn track<'a>(
    pods: &[&'a Pod],
    uncounted: &UncountedTerminatedPods,
    releasing: &BTreeSet<String>,
    replace_failed_only: bool,
) -> Tracking<'a> {
    let known: BTreeSet<&str> = uncounted
        .succeeded
        .iter()
        .chain(uncounted.failed.iter())
        .flatten()
        .map(String::as_str)
        .collect();
    let mut t = Tracking {
        newly_succeeded: Vec::new(),
        newly_failed: Vec::new(),
        release: Vec::new(),
    };
    for &pod in pods {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if !has_tracking_finalizer(pod) || releasing.contains(uid) {
            continue;
        }
        let Some(succeeded) = outcome(pod, replace_failed_only) else {
            continue;
        };
        t.release.push(pod);
        if !known.contains(uid) {
            if succeeded {
                t.newly_succeeded.push(uid.to_string());
            } else {
                t.newly_failed.push(uid.to_string());
            }
        }
    }
    t
}

/// Moves uncounted UIDs whose pods no longer hold the finalizer (or are gone) into the
/// counters. `still_held` says whether a pod UID still holds it.
pub fn flush(status: &mut JobStatus, still_held: impl Fn(&str) -> bool) {
    let uncounted = status.uncounted_terminated_pods.get_or_insert_default();
    let mut moved = (0, 0);
    for (list, n) in [
        (&mut uncounted.succeeded, &mut moved.0),
        (&mut uncounted.failed, &mut moved.1),
    ] {
        if let Some(uids) = list {
            let before = uids.len();
            uids.retain(|u| still_held(u));
            *n = (before - uids.len()) as i32;
            if uids.is_empty() {
                *list = None;
            }
        }
    }
    if moved.0 > 0 {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + moved.0);
    }
    if moved.1 > 0 {
        status.failed = Some(status.failed.unwrap_or(0) + moved.1);
    }
}

/// Succeeded and failed pods, counted and not yet counted.
pub fn totals(status: &JobStatus) -> (i32, i32) {
    let u = status.uncounted_terminated_pods.as_ref();
    let len = |l: Option<&Vec<String>>| l.map_or(0, |v| v.len() as i32);
    (
        status.succeeded.unwrap_or(0) + len(u.and_then(|u| u.succeeded.as_ref())),
        status.failed.unwrap_or(0) + len(u.and_then(|u| u.failed.as_ref())),
    )
}

/// How many pods should be running now.
pub fn wanted_active(job: &Job, succeeded: i32) -> i32 {
    let spec = job.spec.as_ref();
    let parallelism = spec.and_then(|s| s.parallelism).unwrap_or(1).max(0);
    match spec.and_then(|s| s.completions) {
        Some(completions) => parallelism.min((completions - succeeded).max(0)),
        // A work queue: once any pod succeeded, no new ones start.
        None if succeeded > 0 => 0,
        None => parallelism,
    }
}

/// Whether the Job has done its work: `completions` pods succeeded, or (no `completions`)
/// some pod succeeded and none is still running.
pub fn success_criteria_met(job: &Job, succeeded: i32, active: i32) -> bool {
    match job.spec.as_ref().and_then(|s| s.completions) {
        Some(completions) => succeeded >= completions,
        None => succeeded > 0 && active == 0,
    }
}

fn restart_policy(job: &Job) -> Option<&str> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .restart_policy
        .as_deref()
}

/// Failed pods beyond `backoffLimit`; with restartPolicy OnFailure the container restarts of
/// running pods count too (Kubernetes' `pastBackoffLimitOnFailure`).
pub fn past_backoff_limit(job: &Job, failed: i32, active: &[&Pod]) -> bool {
    let limit = job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6);
    let restarts: i32 = if restart_policy(job) == Some("OnFailure") {
        active
            .iter()
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    failed + restarts > limit
}

/// Time left before `activeDeadlineSeconds` runs out; Some(ZERO) once it has.
pub fn deadline_left(job: &Job, now: Timestamp) -> Option<Duration> {
    let deadline = job.spec.as_ref()?.active_deadline_seconds?;
    let start = job.status.as_ref()?.start_time.as_ref()?.0;
    let end_ms = start.as_millisecond() + deadline.saturating_mul(1000);
    Some(Duration::from_millis(
        (end_ms - now.as_millisecond()).max(0) as u64,
    ))
}

/// When a failed pod finished: its last container exit, else its Ready condition's last
/// change.
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    let exits = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    exits.or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")?
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
    })
}

/// How long to wait before creating pods again after failures: `base` doubled for each failure
/// since the last success, at most `max`, counted from the last failure (Kubernetes' pod
/// failure back-off, 10 s doubling to 10 min).
pub fn creation_backoff(pods: &[&Pod], base: Duration, max: Duration, now: Timestamp) -> Duration {
    let last_success = pods
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .filter_map(|p| finished_at(p))
        .max();
    let failures: Vec<Timestamp> = pods
        .iter()
        .filter(|p| phase(p) == "Failed")
        .map(|p| finished_at(p).unwrap_or(now))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let Some(last) = failures.iter().max() else {
        return Duration::ZERO;
    };
    let doublings = (failures.len() as u32 - 1).min(20);
    let delay = base.saturating_mul(1 << doublings).min(max);
    let since = Duration::from_millis((now.as_millisecond() - last.as_millisecond()).max(0) as u64);
    delay.saturating_sub(since)
}

/// Active pods to delete when there are `excess` too many: unscheduled, then not ready, then
/// the newest first (as the ReplicaSet controller ranks them).
pub fn pick_for_deletion<'a>(active: &[&'a Pod], excess: usize) -> Vec<&'a Pod> {
    let mut ranked: Vec<&Pod> = active.to_vec();
    ranked.sort_by_key(|p| {
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second());
        (
            crate::pods::is_scheduled(p),
            is_ready(p),
            std::cmp::Reverse(created),
        )
    });
    ranked.truncate(excess);
    ranked
}

/// Active (running, not terminating) and ready counts.
pub fn active_and_ready(pods: &[&Pod]) -> (i32, i32) {
    let active: Vec<_> = pods.iter().filter(|p| is_active(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    (active.len() as i32, ready as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, phase: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({"metadata": {"name": uid, "uid": uid, "finalizers": [JOB_TRACKING]},
            "status": {"phase": phase}});
        if let (Some(a), Some(b)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in b {
                a.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn job(spec: serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": spec})).unwrap()
    }

    #[test]
    fn finished_pods_are_tracked_once() {
        let ok = pod("a", "Succeeded", json!({}));
        let bad = pod("b", "Failed", json!({}));
        let running = pod("c", "Running", json!({}));
        let deleted = pod(
            "d",
            "Running",
            json!({"metadata": {"name": "d", "uid": "d", "finalizers": [JOB_TRACKING],
                "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        let pods = [&ok, &bad, &running, &deleted];
        let t = track(&pods, &Default::default(), &BTreeSet::new(), false);
        assert_eq!(t.newly_succeeded, ["a"]);
        assert_eq!(t.newly_failed, ["b", "d"]);
        assert_eq!(t.release.len(), 3);
        // podReplacementPolicy Failed: a terminating pod is not failed yet.
        let t = track(&pods, &Default::default(), &BTreeSet::new(), true);
        assert_eq!(t.newly_failed, ["b"]);

        let uncounted = UncountedTerminatedPods {
            succeeded: Some(vec!["a".into()]),
            failed: None,
        };
        let releasing = BTreeSet::from(["b".to_string()]);
        let t = track(&pods, &uncounted, &releasing, false);
        assert!(t.newly_succeeded.is_empty());
        assert_eq!(t.newly_failed, ["d"]);
        assert_eq!(t.release.len(), 2, "a (recorded) and d");
    }

    #[test]
    fn flush_moves_released_pods_into_counters() {
        let mut status = JobStatus {
            succeeded: Some(1),
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["a".into(), "b".into()]),
                failed: Some(vec!["c".into()]),
            }),
            ..JobStatus::default()
        };
        assert_eq!(totals(&status), (3, 1));
        flush(&mut status, |uid| uid == "b");
        assert_eq!((status.succeeded, status.failed), (Some(2), Some(1)));
        let u = status.uncounted_terminated_pods.as_ref().unwrap();
        assert_eq!(u.succeeded.as_deref(), Some(&["b".to_string()][..]));
        assert_eq!(u.failed, None);
        assert_eq!(totals(&status), (3, 1));
    }

    #[test]
    fn wanted_pods_and_success() {
        let j = job(json!({"completions": 3, "parallelism": 2, "template": {}}));
        assert_eq!(wanted_active(&j, 0), 2);
        assert_eq!(wanted_active(&j, 2), 1);
        assert_eq!(wanted_active(&j, 3), 0);
        assert!(!success_criteria_met(&j, 2, 0));
        assert!(success_criteria_met(&j, 3, 1));
        let queue = job(json!({"parallelism": 2, "template": {}}));
        assert_eq!(wanted_active(&queue, 0), 2);
        assert_eq!(wanted_active(&queue, 1), 0);
        assert!(!success_criteria_met(&queue, 1, 1));
        assert!(success_criteria_met(&queue, 1, 0));
    }

    #[test]
    fn backoff_limit_counts_restarts_under_on_failure() {
        let never = job(json!({"backoffLimit": 2, "template": {"spec": {
            "restartPolicy": "Never", "containers": []}}}));
        assert!(!past_backoff_limit(&never, 2, &[]));
        assert!(past_backoff_limit(&never, 3, &[]));
        let on_failure = job(json!({"backoffLimit": 2, "template": {"spec": {
            "restartPolicy": "OnFailure", "containers": []}}}));
        let crashing = pod(
            "x",
            "Running",
            json!({"status": {"phase": "Running", "containerStatuses": [
            {"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 2}]}}),
        );
        assert!(!past_backoff_limit(&on_failure, 0, &[&crashing]));
        assert!(past_backoff_limit(&on_failure, 1, &[&crashing]));
        assert!(!past_backoff_limit(&never, 1, &[&crashing]));
    }

    #[test]
    fn deadline() {
        let mut j = job(json!({"activeDeadlineSeconds": 10, "template": {}}));
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(deadline_left(&j, at("2026-01-01T00:00:00Z")), None);
        j.status = Some(JobStatus {
            start_time: Some(Time(at("2026-01-01T00:00:00Z"))),
            ..JobStatus::default()
        });
        assert_eq!(
            deadline_left(&j, at("2026-01-01T00:00:04Z")),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            deadline_left(&j, at("2026-01-01T00:00:11Z")),
            Some(Duration::ZERO)
        );
    }

    fn failed_at(uid: &str, at: &str) -> Pod {
        pod(
            uid,
            "Failed",
            json!({"status": {"phase": "Failed", "containerStatuses": [{"name": "c", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "finishedAt": at}}}]}}),
        )
    }

    #[test]
    fn creation_backs_off_after_failures() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(600);
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let now = at("2026-01-01T00:00:05Z");
        assert_eq!(creation_backoff(&[], base, max, now), Duration::ZERO);
        let one = failed_at("a", "2026-01-01T00:00:00Z");
        assert_eq!(
            creation_backoff(&[&one], base, max, now),
            Duration::from_secs(5)
        );
        let two = failed_at("b", "2026-01-01T00:00:01Z");
        assert_eq!(
            creation_backoff(&[&one, &two], base, max, now),
            Duration::from_secs(16)
        );
        let ok = pod(
            "c",
            "Succeeded",
            json!({"status": {"phase": "Succeeded", "containerStatuses": [{"name": "c",
            "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "finishedAt": "2026-01-01T00:00:02Z"}}}]}}),
        );
        assert_eq!(
            creation_backoff(&[&one, &two, &ok], base, max, now),
            Duration::ZERO
        );
        assert_eq!(
            creation_backoff(&[&one, &two], Duration::ZERO, max, now),
            Duration::ZERO
        );
    }

    #[test]
    fn conditions_move_their_transition_time_only_on_change() {
        let mut conds = Vec::new();
        let t0 = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1 = "2026-01-01T00:00:09Z".parse().unwrap();
        set_condition(
            &mut conds,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            t0,
        );
        set_condition(
            &mut conds,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            t1,
        );
        assert_eq!(conds[0].last_transition_time, Some(Time(t0)));
        set_condition(
            &mut conds,
            SUSPENDED,
            "False",
            "JobResumed",
            "Job resumed",
            t1,
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Some(Time(t1)));
    }
}
