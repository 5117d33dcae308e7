//! Adoption and release of owned objects (Kubernetes' `ControllerRefManager`): a controller
//! adopts orphans its selector matches and releases objects it controls that no longer match.
//! Each patch is a JSON patch that first tests the object's UID and resourceVersion, so it
//! never touches a recreated object of the same name nor overwrites an ownership change it has
//! not seen.

use std::fmt::Debug;

use berth_api::LabelSelector;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::apierrors::is_not_found;
use crate::pods::{controller_key, controller_of};
use crate::runtime::key_of;

/// What a controller does about one object in its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Controlled by us and matching: ours.
    Keep,
    /// Controlled by someone else, or not ours to take: leave it.
    Ignore,
    /// An orphan that matches: take it.
    Adopt,
    /// Controlled by us but no longer matching: let it go.
    Release,
}

/// Whether a non-empty `selector` matches the labels of `meta`.
pub fn selects(selector: &LabelSelector, meta: &ObjectMeta) -> bool {
    let empty = Default::default();
    !selector.is_empty() && selector.matches(meta.labels.as_ref().unwrap_or(&empty))
}

/// Keys to sync for `child`: its controlling `O`, or, for an orphan, every `O` in its
/// namespace whose selector (`selector_of`) would adopt it; none if another kind controls it.
pub fn owner_keys<O, C>(
    owners: &Store<O>,
    child: &C,
    selector_of: fn(&O) -> LabelSelector,
) -> Vec<String>
where
    O: Resource<DynamicType = ()> + Clone + 'static,
    C: Resource,
{
    let meta = child.meta();
    if let Some(key) = controller_key::<O>(meta) {
        return vec![key];
    }
    if controller_of(meta).is_some() {
        return Vec::new();
    }
    let ns = meta.namespace.as_deref().unwrap_or_default();
    owners
        .state()
        .iter()
        .filter(|o| {
            o.meta().namespace.as_deref().unwrap_or_default() == ns
                && selects(&selector_of(o), meta)
        })
        .map(|o| key_of(&**o))
        .collect()
}

/// Decides for one object; `owner_deleting` stops adoptions and releases while the owner goes.
pub fn decide(owner_uid: &str, owner_deleting: bool, meta: &ObjectMeta, matches: bool) -> Claim {
    match controller_of(meta) {
        Some(r) if r.uid != owner_uid => Claim::Ignore,
        Some(_) if matches => Claim::Keep,
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting || !matches || meta.deletion_timestamp.is_some() => Claim::Ignore,
        None => Claim::Adopt,
    }
}

fn preconditions(meta: &ObjectMeta) -> Vec<serde_json::Value> {
    vec![
        json!({"op": "test", "path": "/metadata/uid", "value": meta.uid}),
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": meta.resource_version}),
    ]
}

/// Makes `owner` the controller of `obj`. Ok(false) if the object is gone.
pub async fn adopt<K>(api: &Api<K>, obj: &K, owner: OwnerReference) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let meta = obj.meta();
    let mut refs = meta.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner.uid);
    refs.push(owner);
    let mut ops = preconditions(meta);
    ops.push(json!({"op": "add", "path": "/metadata/ownerReferences", "value": refs}));
    patch(api, meta, ops).await
}

/// Removes the reference to `owner_uid` from `obj`. Ok(false) if the object is gone or no
/// longer the one we saw (its UID changed).
pub async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let meta = obj.meta();
    let refs: Vec<&OwnerReference> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .collect();
    let mut ops = preconditions(meta);
    ops.push(if refs.is_empty() {
        json!({"op": "remove", "path": "/metadata/ownerReferences"})
    } else {
        json!({"op": "add", "path": "/metadata/ownerReferences", "value": refs})
    });
    match patch(api, meta, ops).await {
        // A failed test (the object changed under us): the next sync sees the change.
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => Ok(false),
        other => other,
    }
}

async fn patch<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    ops: Vec<serde_json::Value>,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let body =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::<()>::Json(body))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn owned_by(uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            owner_references: uid.map(|u| {
                vec![OwnerReference {
                    uid: u.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn claims_as_the_controller_ref_manager() {
        let ours = owned_by(Some("me"));
        assert_eq!(decide("me", false, &ours, true), Claim::Keep);
        assert_eq!(decide("me", false, &ours, false), Claim::Release);
        assert_eq!(decide("me", true, &ours, false), Claim::Ignore);
        let theirs = owned_by(Some("other"));
        assert_eq!(decide("me", false, &theirs, true), Claim::Ignore);
        let orphan = owned_by(None);
        assert_eq!(decide("me", false, &orphan, true), Claim::Adopt);
        assert_eq!(decide("me", false, &orphan, false), Claim::Ignore);
        assert_eq!(decide("me", true, &orphan, true), Claim::Ignore);
        let mut leaving = orphan.clone();
        leaving.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(decide("me", false, &leaving, true), Claim::Ignore);
    }
}
