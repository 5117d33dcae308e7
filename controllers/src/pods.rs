//! What every workload controller asks of pods and owners: which controller owns an object,
//! whether a pod is active / ready / available, and a new pod from a template.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The controller reference of `meta` if it names an object of kind `K` (kind and API group;
/// any version).
pub fn controller_of_kind<K: Resource<DynamicType = ()>>(
    meta: &ObjectMeta,
) -> Option<&OwnerReference> {
    let r = controller_of(meta)?;
    let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    (r.kind == K::kind(&()) && group == K::group(&())).then_some(r)
}

/// The queue key (`namespace/name`) of the `K` controlling the object with `meta`, which lives
/// in its controller's namespace.
pub fn controller_key<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> Option<String> {
    let r = controller_of_kind::<K>(meta)?;
    Some(format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        r.name
    ))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller reference to `owner` (controller and blockOwnerDeletion set, as Kubernetes'
/// controllers write them); None if the owner has no name or UID yet.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let meta = owner.meta();
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Not finished and not being deleted: counts towards a controller's replicas.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// Has a deletion timestamp (graceful deletion under way).
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Bound to a node.
pub fn is_scheduled(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// When the pod's Ready condition turned True; None if it is not Ready.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (cond.status == "True").then(|| cond.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready condition True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (Kubernetes' `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// A pod to create from `template`: its labels, annotations and spec, owned by `owner`, named
/// by the server from `generate_name` (or exactly `name` when given).
pub fn from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    owner: OwnerReference,
    name: PodName<'_>,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let (name, generate_name) = match name {
        PodName::Exact(n) => (Some(n.to_string()), None),
        PodName::Generate(prefix) => (None, Some(prefix.to_string())),
    };
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// How a new pod is named.
#[derive(Clone, Copy, Debug)]
pub enum PodName<'a> {
    /// Exactly this (StatefulSet's ordinals).
    Exact(&'a str),
    /// The server appends a random suffix to this prefix (`<rs-name>-`).
    Generate(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn pod_with(phase: &str, ready: Option<i64>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.map(|at| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(at).unwrap())),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn activity_and_readiness() {
        assert!(is_active(&pod_with("Running", None)));
        assert!(is_active(&pod_with("", None)));
        assert!(!is_active(&pod_with("Succeeded", None)));
        assert!(!is_active(&pod_with("Failed", Some(1))));
        let mut deleting = pod_with("Running", Some(1));
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!is_active(&deleting) && is_terminating(&deleting));
        assert!(is_ready(&pod_with("Running", Some(1))));
        assert!(!is_ready(&pod_with("Running", None)));
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let pod = pod_with("Running", Some(100));
        let at = |s| Timestamp::from_second(s).unwrap();
        assert!(is_available(&pod, 0, at(100)));
        assert!(!is_available(&pod, 10, at(109)));
        assert!(is_available(&pod, 10, at(110)));
        assert!(!is_available(&pod_with("Running", None), 0, at(200)));
    }

    #[test]
    fn controller_reference_and_template() {
        let mut rs = ReplicaSet::default();
        assert!(controller_reference(&rs).is_none());
        rs.metadata.name = Some("web-5d9".into());
        rs.metadata.uid = Some("u1".into());
        let owner = controller_reference(&rs).unwrap();
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            ("apps/v1", "ReplicaSet")
        );
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec::default()),
        };
        let pod = from_template(&template, "ns", owner, PodName::Generate("web-5d9-"));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-5d9-"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("ns"));
        assert!(is_controlled_by(&pod.metadata, "u1"));
        assert!(!is_controlled_by(&pod.metadata, "u2"));
        assert_eq!(pod.metadata.labels, template.metadata.unwrap().labels);
    }

    #[test]
    fn controller_key_names_the_controller_of_that_kind_and_group() {
        use k8s_openapi::api::apps::v1::DaemonSet;
        use k8s_openapi::api::batch::v1::Job;
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        assert_eq!(controller_key::<ReplicaSet>(&pod.metadata), None);
        let owner = |api_version: &str, kind: &str, controller| OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "web-abc".into(),
            uid: "u".into(),
            controller,
            block_owner_deletion: None,
        };
        pod.metadata.owner_references = Some(vec![owner("apps/v1", "ReplicaSet", None)]);
        assert_eq!(controller_key::<ReplicaSet>(&pod.metadata), None);
        pod.metadata.owner_references = Some(vec![owner("apps/v1", "ReplicaSet", Some(true))]);
        assert_eq!(
            controller_key::<ReplicaSet>(&pod.metadata).as_deref(),
            Some("ns/web-abc")
        );
        assert_eq!(controller_key::<DaemonSet>(&pod.metadata), None);
        // Same kind, other group: not ours.
        pod.metadata.owner_references =
            Some(vec![owner("example.com/v1", "ReplicaSet", Some(true))]);
        assert_eq!(controller_key::<ReplicaSet>(&pod.metadata), None);
        pod.metadata.owner_references = Some(vec![owner("batch/v1", "Job", Some(true))]);
        assert_eq!(
            controller_key::<Job>(&pod.metadata).as_deref(),
            Some("ns/web-abc")
        );
    }
}
