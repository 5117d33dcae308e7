//! A ReplicaSet's status from the pods it owns (Kubernetes' `calculateStatus`), and when to
//! look again for pods that will become available once `minReadySeconds` have passed.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::pods::{is_available, is_ready, ready_since};

pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Why pods could not be created or deleted, for the ReplicaFailure condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure<'a> {
    Create(&'a str),
    Delete(&'a str),
}

fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// The status `pods` (the active pods the RS owns) imply. A failure adds ReplicaFailure if it
/// is not there yet; success removes it.
pub fn calculate(
    rs: &ReplicaSet,
    pods: &[&Pod],
    failure: Option<Failure<'_>>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = min_ready_seconds(rs);
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for pod in pods {
        let labels = pod.metadata.labels.as_ref();
        if template_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            fully_labeled += 1;
        }
        if is_ready(pod) {
            ready += 1;
            if is_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }
    let mut status = rs.status.clone().unwrap_or_default();
    let has_failure = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == REPLICA_FAILURE);
    match failure {
        Some(f) if !has_failure => {
            let (reason, message) = match f {
                Failure::Create(m) => ("FailedCreate", m),
                Failure::Delete(m) => ("FailedDelete", m),
            };
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(ReplicaSetCondition {
                    type_: REPLICA_FAILURE.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    last_transition_time: Some(Time(now)),
                });
        }
        None if has_failure => {
            if let Some(c) = status.conditions.as_mut() {
                c.retain(|c| c.type_ != REPLICA_FAILURE);
            }
        }
        _ => {}
    }
    status.replicas = pods.len() as i32;
    status.fully_labeled_replicas = Some(fully_labeled);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status
}

/// Whether `new` says something `rs.status` does not (counts, conditions, or an unobserved
/// generation) — Kubernetes skips the write otherwise.
pub fn needs_update(rs: &ReplicaSet, new: &ReplicaSetStatus) -> bool {
    let old = rs.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    old.replicas != new.replicas
        || n(old.fully_labeled_replicas) != n(new.fully_labeled_replicas)
        || n(old.ready_replicas) != n(new.ready_replicas)
        || n(old.available_replicas) != n(new.available_replicas)
        || rs.metadata.generation != old.observed_generation
        || old.conditions.unwrap_or_default() != new.conditions.clone().unwrap_or_default()
}

/// How long until the next ready pod counts as available, if one is waiting out
/// `minReadySeconds`.
pub fn next_available_in(rs: &ReplicaSet, pods: &[&Pod], now: Timestamp) -> Option<Duration> {
    let min_ready = i64::from(min_ready_seconds(rs));
    if min_ready <= 0 {
        return None;
    }
    pods.iter()
        .filter_map(|p| ready_since(p).flatten())
        .map(|since| since.as_second() + min_ready - now.as_second())
        .filter(|left| *left >= 0)
        .min()
        // A second late rather than early: availability is judged in whole seconds.
        .map(|left| Duration::from_secs(left as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn rs(min_ready: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                min_ready_seconds: Some(min_ready),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(&[("app", "web"), ("tier", "fe")]),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                }),
                ..ReplicaSetSpec::default()
            }),
            status: None,
        }
    }

    fn pod(l: &[(&str, &str)], ready_at: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                labels: labels(l),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(t))),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
            spec: None,
        }
    }

    #[test]
    fn counts_with_min_ready_seconds() {
        let rs = rs(10);
        let a = pod(&[("app", "web"), ("tier", "fe")], Some(100));
        let b = pod(&[("app", "web")], Some(105));
        let c = pod(&[("app", "web"), ("tier", "fe")], None);
        let s = calculate(&rs, &[&a, &b, &c], None, at(111));
        assert_eq!(s.replicas, 3);
        assert_eq!(s.fully_labeled_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        assert!(needs_update(&rs, &s));
        // b becomes available at 115: look again in 4 s, plus the rounding second.
        assert_eq!(
            next_available_in(&rs, &[&a, &b, &c], at(111)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(next_available_in(&self::rs(0), &[&a], at(111)), None);
    }

    #[test]
    fn replica_failure_comes_and_goes() {
        let mut rs = rs(0);
        let s = calculate(&rs, &[], Some(Failure::Create("quota")), at(1));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref(), c.message.as_deref()),
            (REPLICA_FAILURE, Some("FailedCreate"), Some("quota"))
        );
        rs.status = Some(s);
        // Still failing: the first condition stays as it was.
        let again = calculate(&rs, &[], Some(Failure::Create("other")), at(9));
        assert_eq!(again.conditions, rs.status.as_ref().unwrap().conditions);
        let ok = calculate(&rs, &[], None, at(10));
        assert_eq!(ok.conditions, Some(vec![]));
        let mut observed = rs.clone();
        observed.status = Some(ReplicaSetStatus {
            observed_generation: Some(3),
            ..ok.clone()
        });
        assert!(!needs_update(&observed, &ok));
    }
}
