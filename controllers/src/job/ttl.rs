//! `ttlSecondsAfterFinished` (kube-controller-manager's ttl-after-finished controller, folded
//! into the Job controller: both act on the same Job events): a finished Job is deleted that
//! many seconds after it finished; its pods go with it through the garbage collector.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::Client;

use super::status::finished;
use super::JobError;
use crate::apierrors::is_gone_or_conflict;
use crate::runtime::Action;

/// Time left before a finished Job expires; None if it is not finished or has no TTL.
pub fn left(job: &Job, now: Timestamp) -> Option<Duration> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let done = finished(job)?;
    let at = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .or(done.last_transition_time.as_ref())
        .map_or(now, |t| t.0);
    let expires_ms = at.as_millisecond() + i64::from(ttl) * 1000;
    Some(Duration::from_millis(
        (expires_ms - now.as_millisecond()).max(0) as u64,
    ))
}

/// Deletes `job` if its TTL has run out, or asks to look again when it will have.
pub async fn expire(
    client: &Client,
    job: &Job,
    key: &str,
    now: Timestamp,
) -> Result<Action, JobError> {
    let Some(left) = left(job, now) else {
        return Ok(Action::Done);
    };
    if !left.is_zero() {
        return Ok(Action::RequeueAfter(left));
    }
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let api: Api<Job> = Api::namespaced(
        client.clone(),
        job.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        // Only this Job, not a new one of the same name.
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api
        .delete(job.metadata.name.as_deref().unwrap_or_default(), &params)
        .await
    {
        Ok(_) => {
            tracing::info!(
                job = key,
                "deleted the finished job: its ttlSecondsAfterFinished passed"
            );
            Ok(Action::Done)
        }
        Err(e) if is_gone_or_conflict(&e) => Ok(Action::Done),
        Err(source) => Err(JobError::Job {
            op: "deleting the expired",
            key: key.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(ttl: Option<i32>, conditions: serde_json::Value, completion: Option<&str>) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "spec": {"ttlSecondsAfterFinished": ttl, "template": {}},
            "status": {"conditions": conditions, "completionTime": completion},
        }))
        .unwrap()
    }

    #[test]
    fn ttl_counts_from_completion_or_failure() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let complete = json!([{"type": "Complete", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let j = job(Some(30), complete.clone(), Some("2026-01-01T00:00:10Z"));
        assert_eq!(
            left(&j, at("2026-01-01T00:00:20Z")),
            Some(Duration::from_secs(20))
        );
        assert_eq!(left(&j, at("2026-01-01T00:01:00Z")), Some(Duration::ZERO));
        let failed = json!([{"type": "Failed", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let j = job(Some(0), failed, None);
        assert_eq!(left(&j, at("2026-01-01T00:00:00Z")), Some(Duration::ZERO));
        assert_eq!(
            left(&job(None, complete, None), at("2026-01-01T00:00:00Z")),
            None
        );
        let running = json!([{"type": "SuccessCriteriaMet", "status": "True"}]);
        assert_eq!(
            left(&job(Some(0), running, None), at("2026-01-01T00:00:00Z")),
            None
        );
    }
}
