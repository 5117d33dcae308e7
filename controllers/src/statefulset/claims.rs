//! A StatefulSet's PersistentVolumeClaims, as pure functions: the claims a pod needs from
//! `volumeClaimTemplates` (`<template>-<set>-<ordinal>`, the template's labels plus the set's
//! selector labels), and the owner references `persistentVolumeClaimRetentionPolicy` asks for
//! (Kubernetes' `updateClaimOwnerRefForSetAndPod`):
//!
//! | whenScaled | whenDeleted | claim of a pod in range | claim of a scaled-down pod |
//! |------------|-------------|-------------------------|----------------------------|
//! | Retain     | Retain      | no reference            | no reference               |
//! | Retain     | Delete      | the set                 | the set                    |
//! | Delete     | Retain      | no reference            | the pod                    |
//! | Delete     | Delete      | the set                 | the pod                    |
//!
//! The references are controller references, so the garbage collector deletes a claim once its
//! owner is gone: with the set (whenDeleted) or with the scaled-down pod (whenScaled).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::pods::controller_reference;

/// `<template>-<set>-<ordinal>`: the claim a pod's volume `<template>` refers to.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// Whether `claim` is one of `set`'s, for some template and ordinal.
pub fn belongs_to(set: &StatefulSet, claim: &str) -> bool {
    let Some(set_name) = set.metadata.name.as_deref() else {
        return false;
    };
    templates(set).any(|t| {
        claim
            .strip_prefix(t)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_prefix(set_name))
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn templates(set: &StatefulSet) -> impl Iterator<Item = &str> {
    set.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .filter_map(|t| t.metadata.name.as_deref())
}

/// `persistentVolumeClaimRetentionPolicy`; absent or unknown values mean Retain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// whenDeleted: Delete — claims go with the set.
    pub delete_with_set: bool,
    /// whenScaled: Delete — a scaled-down pod's claims go with the pod.
    pub delete_on_scale_down: bool,
}

impl Retention {
    pub fn of(set: &StatefulSet) -> Retention {
        let policy = set
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
        let is_delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
        Retention {
            delete_with_set: is_delete(policy.and_then(|p| p.when_deleted.as_ref())),
            delete_on_scale_down: is_delete(policy.and_then(|p| p.when_scaled.as_ref())),
        }
    }
}

/// The claims pod `ordinal` needs, ready to create (no owner references yet: see [`owners`]).
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let (Some(spec), Some(set_name)) = (set.spec.as_ref(), set.metadata.name.as_deref()) else {
        return Vec::new();
    };
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|template| {
            let name = template.metadata.name.as_deref()?;
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector.clone());
            Some(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(name, set_name, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    finalizers: template.metadata.finalizers.clone(),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            })
        })
        .collect()
}

/// The pod a claim's references are computed for: its name, and its uid once it exists.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    pub name: &'a str,
    pub uid: Option<&'a str>,
    /// Outside the set's ordinal range: being scaled away.
    pub scaled_down: bool,
}

impl<'a> PodRef<'a> {
    pub fn of(pod: &'a Pod, scaled_down: bool) -> PodRef<'a> {
        PodRef {
            name: pod.metadata.name.as_deref().unwrap_or_default(),
            uid: pod.metadata.uid.as_deref(),
            scaled_down,
        }
    }
}

fn is_set_ref(r: &OwnerReference, set: &StatefulSet) -> bool {
    r.api_version == "apps/v1"
        && r.kind == "StatefulSet"
        && Some(r.name.as_str()) == set.metadata.name.as_deref()
}

fn is_pod_ref(r: &OwnerReference, pod: &PodRef) -> bool {
    r.api_version == "v1" && r.kind == "Pod" && r.name == pod.name
}

/// Whether `claim` still belongs to an earlier pod of the same name (whenScaled Delete): the
/// garbage collector is about to delete it, so the pod must wait rather than mount it. A pod
/// not yet created (no uid) makes any such reference stale.
pub fn is_stale(claim: &PersistentVolumeClaim, pod: &PodRef, retention: Retention) -> bool {
    retention.delete_on_scale_down
        && claim
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| is_pod_ref(r, pod) && Some(r.uid.as_str()) != pod.uid)
}

/// The owner references `claim` should have, or `None` when they are right already or belong
/// to an earlier set or pod of the same name (left for the garbage collector to settle).
pub fn owners(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &PodRef,
    retention: Retention,
) -> Option<Vec<OwnerReference>> {
    let refs = claim.metadata.owner_references.clone().unwrap_or_default();
    let set_uid = set.metadata.uid.as_deref();
    let stale = refs.iter().any(|r| {
        (is_set_ref(r, set) && Some(r.uid.as_str()) != set_uid)
            || (is_pod_ref(r, pod) && Some(r.uid.as_str()) != pod.uid)
    });
    if stale {
        return None;
    }
    let ours = |r: &OwnerReference| is_set_ref(r, set) || is_pod_ref(r, pod);
    // Someone else controls the claim: drop our references, add none (as Kubernetes does).
    let foreign_controller = (retention.delete_with_set || retention.delete_on_scale_down)
        && refs.iter().any(|r| !ours(r) && r.controller == Some(true));
    let mut want: Vec<OwnerReference> = refs.iter().filter(|r| !ours(r)).cloned().collect();
    if !foreign_controller {
        if retention.delete_on_scale_down && pod.scaled_down {
            if let Some(uid) = pod.uid {
                want.push(OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: pod.name.to_string(),
                    uid: uid.to_string(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                });
            }
        } else if retention.delete_with_set {
            want.extend(controller_reference(set));
        }
    }
    (want != refs).then_some(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        StatefulSetPersistentVolumeClaimRetentionPolicy as Policy, StatefulSetSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn set(when_deleted: &str, when_scaled: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("set-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                selector: LabelSelector {
                    match_labels: labels(&[("app", "web")]),
                    ..LabelSelector::default()
                },
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("data".into()),
                        labels: labels(&[("tier", "db"), ("app", "other")]),
                        ..ObjectMeta::default()
                    },
                    ..PersistentVolumeClaim::default()
                }]),
                persistent_volume_claim_retention_policy: Some(Policy {
                    when_deleted: Some(when_deleted.into()),
                    when_scaled: Some(when_scaled.into()),
                }),
                ..StatefulSetSpec::default()
            }),
            status: None,
        }
    }

    fn pod_ref(scaled_down: bool) -> PodRef<'static> {
        PodRef {
            name: "web-2",
            uid: Some("pod-uid"),
            scaled_down,
        }
    }

    fn kinds(refs: &[OwnerReference]) -> Vec<(&str, &str, Option<bool>)> {
        refs.iter()
            .map(|r| (r.kind.as_str(), r.uid.as_str(), r.controller))
            .collect()
    }

    #[test]
    fn claims_are_named_and_labelled_as_kubernetes_does() {
        let claims = new_claims(&set("Retain", "Retain"), 2);
        assert_eq!(claims.len(), 1);
        let meta = &claims[0].metadata;
        assert_eq!(meta.name.as_deref(), Some("data-web-2"));
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        // The selector's labels win over the template's.
        assert_eq!(meta.labels, labels(&[("app", "web"), ("tier", "db")]));
        assert!(meta.owner_references.is_none());
    }

    #[test]
    fn claim_names_map_back_to_their_set() {
        let s = set("Retain", "Retain");
        assert!(belongs_to(&s, "data-web-0"));
        assert!(belongs_to(&s, "data-web-12"));
        assert!(!belongs_to(&s, "data-web-"));
        assert!(!belongs_to(&s, "data-webx-0"));
        assert!(!belongs_to(&s, "logs-web-0"));
        assert!(!belongs_to(&s, "data-web-0a"));
    }

    #[test]
    fn retention_defaults_to_retain() {
        let mut s = set("Delete", "Delete");
        assert_eq!(
            Retention::of(&s),
            Retention {
                delete_with_set: true,
                delete_on_scale_down: true
            }
        );
        s.spec
            .as_mut()
            .unwrap()
            .persistent_volume_claim_retention_policy = None;
        assert_eq!(Retention::of(&s), Retention::default());
    }

    #[test]
    fn retain_retain_leaves_no_references() {
        let s = set("Retain", "Retain");
        let claim = &new_claims(&s, 2)[0];
        for scaled_down in [false, true] {
            assert_eq!(
                owners(claim, &s, &pod_ref(scaled_down), Retention::of(&s)),
                None
            );
        }
        // A reference left over from an earlier policy is removed.
        let mut owned = claim.clone();
        owned.metadata.owner_references = Some(vec![controller_reference(&s).unwrap()]);
        assert_eq!(
            owners(&owned, &s, &pod_ref(false), Retention::of(&s)),
            Some(vec![])
        );
    }

    #[test]
    fn when_deleted_delete_makes_the_set_the_owner() {
        let s = set("Delete", "Retain");
        let claim = &new_claims(&s, 2)[0];
        for scaled_down in [false, true] {
            let refs = owners(claim, &s, &pod_ref(scaled_down), Retention::of(&s)).unwrap();
            assert_eq!(kinds(&refs), [("StatefulSet", "set-uid", Some(true))]);
        }
        // A pod not created yet gets the same.
        let unborn = PodRef {
            name: "web-2",
            uid: None,
            scaled_down: false,
        };
        let refs = owners(claim, &s, &unborn, Retention::of(&s)).unwrap();
        assert_eq!(kinds(&refs), [("StatefulSet", "set-uid", Some(true))]);
    }

    #[test]
    fn when_scaled_delete_makes_a_scaled_down_pod_the_owner() {
        let s = set("Retain", "Delete");
        let claim = &new_claims(&s, 2)[0];
        assert_eq!(owners(claim, &s, &pod_ref(false), Retention::of(&s)), None);
        let refs = owners(claim, &s, &pod_ref(true), Retention::of(&s)).unwrap();
        assert_eq!(kinds(&refs), [("Pod", "pod-uid", Some(true))]);

        let both = set("Delete", "Delete");
        let refs = owners(claim, &both, &pod_ref(false), Retention::of(&both)).unwrap();
        assert_eq!(kinds(&refs), [("StatefulSet", "set-uid", Some(true))]);
        let mut owned = claim.clone();
        owned.metadata.owner_references = Some(refs);
        // Scaled down: the set's reference is swapped for the pod's.
        let refs = owners(&owned, &both, &pod_ref(true), Retention::of(&both)).unwrap();
        assert_eq!(kinds(&refs), [("Pod", "pod-uid", Some(true))]);
        owned.metadata.owner_references = Some(refs);
        assert_eq!(
            owners(&owned, &both, &pod_ref(true), Retention::of(&both)),
            None
        );
    }

    #[test]
    fn stale_and_foreign_references_are_respected() {
        let s = set("Delete", "Delete");
        let mut claim = new_claims(&s, 2)[0].clone();
        let old_pod = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "web-2".into(),
            uid: "old-pod-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        claim.metadata.owner_references = Some(vec![old_pod]);
        let unborn = PodRef {
            name: "web-2",
            uid: None,
            scaled_down: false,
        };
        assert!(is_stale(&claim, &unborn, Retention::of(&s)));
        assert!(!is_stale(
            &claim,
            &unborn,
            Retention::of(&set("Delete", "Retain"))
        ));
        assert_eq!(owners(&claim, &s, &pod_ref(false), Retention::of(&s)), None);

        let other = OwnerReference {
            api_version: "example.com/v1".into(),
            kind: "Backup".into(),
            name: "b".into(),
            uid: "b-uid".into(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        claim.metadata.owner_references = Some(vec![other.clone()]);
        assert_eq!(owners(&claim, &s, &pod_ref(false), Retention::of(&s)), None);
        assert!(!is_stale(&claim, &unborn, Retention::of(&s)));
    }
}
