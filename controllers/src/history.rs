//! ControllerRevisions, as kube-controller-manager's `controller/history` keeps them for
//! DaemonSets and StatefulSets: one revision per distinct pod template, named
//! `<owner>-<hash>`, holding the patch `{"spec":{"template":{…,"$patch":"replace"}}}`, with
//! increasing `revision` numbers. The hash also labels the pods (`controller-revision-hash`), so
//! a pod's revision is known without comparing templates.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::well_known::labels::CONTROLLER_REVISION_HASH;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use kube::runtime::watcher;

use crate::apierrors::is_not_found;
use crate::pods::{controller_of, is_controlled_by};
use crate::runtime::{Informer, WorkQueue};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{op} controllerrevision {namespace}/{name}")]
    Api {
        op: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether the server serves apps/v1 ControllerRevisions. Where it does not, the DaemonSet and
/// StatefulSet controllers still label pods with the template hash and report revision names,
/// but keep no revision objects (so no `kubectl rollout history/undo` for them).
pub async fn served(client: &Client) -> bool {
    match client.list_api_group_resources("apps/v1").await {
        Ok(list) => list
            .resources
            .iter()
            .any(|r| r.name == "controllerrevisions"),
        Err(e) => {
            tracing::warn!(error = %e, "apps/v1 discovery failed; assuming no controllerrevisions");
            false
        }
    }
}

/// The revision a set's pods should be at: `<owner>-<hash>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub name: String,
    pub hash: String,
}

impl Revision {
    /// Without revision objects: named from the hash alone.
    pub fn local(owner: &str, data: &Value, collision_count: Option<i32>) -> Revision {
        let hash = hash(data, collision_count);
        Revision {
            name: format!("{owner}-{hash}"),
            hash,
        }
    }

    pub fn of(r: &ControllerRevision) -> Revision {
        Revision {
            name: r.metadata.name.clone().unwrap_or_default(),
            hash: hash_label(&r.metadata).unwrap_or_default().to_string(),
        }
    }
}

/// An informer on every ControllerRevision, queueing the key of the `owner_kind` controlling
/// each.
pub fn informer(
    client: &Client,
    queue: &WorkQueue<String>,
    owner_kind: &'static str,
) -> Informer<ControllerRevision> {
    let mut revisions = Informer::new(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
    );
    revisions.enqueue(queue, move |r: &ControllerRevision| {
        controller_of(&r.metadata)
            .filter(|o| o.kind == owner_kind)
            .map(|o| {
                format!(
                    "{}/{}",
                    r.metadata.namespace.as_deref().unwrap_or_default(),
                    o.name
                )
            })
            .into_iter()
            .collect()
    });
    revisions
}

/// The alphabet of Kubernetes' `rand.SafeEncodeString`: no vowels (no words), no look-alikes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kubernetes' `SafeEncodeString`: each byte mapped into [`ALPHANUMS`].
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// FNV-32a over the revision's data and the collision count, safe-encoded.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(data.to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    safe_encode(&h.to_string())
}

/// The data a revision of a set with this template holds.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(obj) = t.as_object_mut() {
        obj.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The `controller-revision-hash` label of a pod or revision.
pub fn hash_label(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

/// The revisions controlled by `owner_uid` among `all`, oldest first.
pub fn owned(all: &[Arc<ControllerRevision>], owner_uid: &str) -> Vec<Arc<ControllerRevision>> {
    let mut mine: Vec<_> = all
        .iter()
        .filter(|r| is_controlled_by(&r.metadata, owner_uid))
        .cloned()
        .collect();
    mine.sort_by_key(|r| (r.revision, r.metadata.name.clone()));
    mine
}

fn data_of(r: &ControllerRevision) -> Option<&Value> {
    r.data.as_ref().map(|d| &d.0)
}

/// The owner's current revision for `data`: the existing one holding it (renumbered to be the
/// newest, as a rollback to an earlier template does in Kubernetes), or a new one.
pub struct Owner<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub name: &'a str,
    pub reference: OwnerReference,
    pub template_labels: Option<&'a BTreeMap<String, String>>,
    pub collision_count: Option<i32>,
}

pub async fn ensure(
    owner: &Owner<'_>,
    revisions: &[Arc<ControllerRevision>],
    data: &Value,
) -> Result<ControllerRevision, HistoryError> {
    let api: Api<ControllerRevision> = Api::namespaced(owner.client.clone(), owner.namespace);
    let newest = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(existing) = revisions.iter().rev().find(|r| data_of(r) == Some(data)) {
        if existing.revision == newest {
            return Ok((**existing).clone());
        }
        let name = existing.metadata.name.clone().unwrap_or_default();
        let patch = json!({"revision": newest + 1});
        return api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| HistoryError::Api {
                op: "renumbering",
                namespace: owner.namespace.to_string(),
                name,
                source,
            });
    }
    let hash = hash(data, owner.collision_count);
    let name = format!("{}-{hash}", owner.name);
    let mut labels = owner.template_labels.cloned().unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH.into(), hash);
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(owner.namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner.reference.clone()]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data.clone())),
        revision: newest + 1,
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(created) => Ok(created),
        // Ours already (the store lags our create): use it.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let found = api.get(&name).await.map_err(|source| HistoryError::Api {
                op: "reading",
                namespace: owner.namespace.to_string(),
                name: name.clone(),
                source,
            })?;
            Ok(found)
        }
        Err(source) => Err(HistoryError::Api {
            op: "creating",
            namespace: owner.namespace.to_string(),
            name,
            source,
        }),
    }
}

/// Deletes the oldest revisions beyond `limit` that none of `pods` uses and that are not `keep`.
pub async fn truncate(
    client: &Client,
    namespace: &str,
    revisions: &[Arc<ControllerRevision>],
    pods: &[Arc<Pod>],
    keep: &[&str],
    limit: i32,
) -> Result<(), HistoryError> {
    let in_use: Vec<&str> = pods
        .iter()
        .filter_map(|p| hash_label(&p.metadata))
        .collect();
    let unused: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| {
            let name = r.metadata.name.as_deref().unwrap_or_default();
            let hash = hash_label(&r.metadata).unwrap_or_default();
            !keep.contains(&name) && !in_use.contains(&hash)
        })
        .collect();
    let excess = unused.len().saturating_sub(limit.max(0) as usize);
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    for r in unused.into_iter().take(excess) {
        let name = r.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(HistoryError::Api {
                    op: "deleting",
                    namespace: namespace.to_string(),
                    name,
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_safe_and_differ() {
        let a = json!({"spec": {"template": {"spec": {"containers": [{"image": "a"}]}}}});
        let b = json!({"spec": {"template": {"spec": {"containers": [{"image": "b"}]}}}});
        assert_eq!(hash(&a, None), hash(&a, None));
        assert_ne!(hash(&a, None), hash(&b, None));
        assert_ne!(hash(&a, None), hash(&a, Some(1)));
        assert!(hash(&a, None).bytes().all(|c| ALPHANUMS.contains(&c)));
        // As Kubernetes: byte value modulo the alphabet's length.
        assert_eq!(safe_encode("0123"), "4567");
    }

    #[test]
    fn template_patch_replaces_the_template() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "x"}}})).unwrap();
        assert_eq!(
            template_patch(&t),
            json!({"spec": {"template": {"metadata": {"labels": {"app": "x"}}, "$patch": "replace"}}})
        );
    }

    #[test]
    fn owned_revisions_oldest_first() {
        let rev = |name: &str, uid: &str, n: i64| {
            Arc::new(
                serde_json::from_value::<ControllerRevision>(json!({
                    "metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1",
                        "kind": "DaemonSet", "name": "d", "uid": uid, "controller": true}]},
                    "revision": n,
                }))
                .unwrap(),
            )
        };
        let all = [rev("b", "u", 2), rev("x", "other", 1), rev("a", "u", 1)];
        let names: Vec<_> = owned(&all, "u")
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
