//! Finding, annotating and creating a Deployment's new ReplicaSet (Kubernetes'
//! `getNewReplicaSet`), and the Deployment's revision annotation that follows it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::hash::{compute_hash, equal_ignore_hash, POD_TEMPLATE_HASH_LABEL};
use super::revision::{self, REVISION};
use super::rolling;
use super::status::{self, condition, get_condition, progress_deadline, set_condition};
use super::sync::{Rollout, SCALING_REPLICA_SET};
use super::DeploymentError;
use crate::apierrors::{is_conflict, is_namespace_terminating, is_not_found};
use crate::pods::{controller_reference, is_controlled_by};
use crate::runtime::events::error_message;
use crate::runtime::reference;

impl Rollout<'_> {
    /// Sets the Deployment's revision annotation to its new RS's (`SetDeploymentRevision`).
    pub(super) async fn set_revision(&mut self, rev: &str) -> Result<(), DeploymentError> {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if current.map(String::as_str) == Some(rev) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), self.ns);
        let patch = Patch::Merge(json!({"metadata": {"annotations": {REVISION: rev}}}));
        match api
            .patch(self.name(), &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                self.d
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(REVISION.into(), rev.into());
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(DeploymentError::Write {
                what: "revision annotation",
                key: self.key.to_string(),
                source,
            }),
        }
    }

    /// Finds the new RS and brings its annotations up to date, or creates it when `create`
    /// (Kubernetes' `getNewReplicaSet`). Returns its index.
    pub(super) async fn get_new_rs(
        &mut self,
        create: bool,
    ) -> Result<Option<usize>, DeploymentError> {
        let (existing, old) = self.split();
        let new_revision = revision::max_revision(old.iter().map(|&i| &self.rses[i])) + 1;
        let surge = rolling::max_surge(&self.d);
        if let Some(i) = existing {
            let mut copy = self.rses[i].clone();
            let annotated =
                revision::set_new_rs_annotations(&self.d, &mut copy, new_revision, true, surge);
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotated || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                self.update_rs(i, copy).await?;
                return Ok(Some(i));
            }
            if let Some(rev) = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
            {
                self.set_revision(&rev.clone()).await?;
            }
            let no_condition = get_condition(self.d.status.as_ref(), status::PROGRESSING).is_none();
            if progress_deadline(&self.d).is_some() && no_condition {
                let mut s = self.d.status.clone().unwrap_or_default();
                let message = format!("Found new replica set \"{}\"", self.rs_name(i));
                let c = condition(
                    status::PROGRESSING,
                    "True",
                    status::FOUND_NEW_RS,
                    message,
                    status::now(),
                );
                set_condition(&mut s, c);
                self.write_status(s).await?;
            }
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }
        self.create_new_rs(&old, new_revision, surge)
            .await
            .map(Some)
    }

    async fn create_new_rs(
        &mut self,
        old: &[usize],
        new_revision: i64,
        surge: i32,
    ) -> Result<usize, DeploymentError> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.name());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.to_string()),
                owner_references: controller_reference(&self.d).map(|r| vec![r]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let count = {
            let mut all: Vec<&ReplicaSet> = old.iter().map(|&i| &self.rses[i]).collect();
            all.push(&rs);
            rolling::new_rs_new_replicas(&self.d, &all, &rs).map_err(|e| self.rolling_error(e))?
        };
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(count);
        }
        revision::set_new_rs_annotations(&self.d, &mut rs, new_revision, false, surge);
        let (created, existed) = match self.api().create(&PostParams::default(), &rs).await {
            Ok(created) => (created, false),
            Err(e) if is_conflict(&e) => {
                let found = self
                    .api()
                    .get_opt(&name)
                    .await
                    .map_err(|e| self.rs_error("reading", name.clone(), e))?;
                let uid = self.d.metadata.uid.clone().unwrap_or_default();
                let ours = found.filter(|f| {
                    is_controlled_by(&f.metadata, &uid)
                        && f.spec
                            .as_ref()
                            .and_then(|s| s.template.as_ref())
                            .is_some_and(|t| equal_ignore_hash(t, &spec.template))
                });
                match ours {
                    Some(found) => (found, true),
                    None => {
                        // Another template hashed to this name: hash again with a new count.
                        let mut s = self.d.status.clone().unwrap_or_default();
                        s.collision_count = Some(collisions.unwrap_or(0) + 1);
                        self.write_status(s).await?;
                        return Err(DeploymentError::Collision {
                            key: self.key.to_string(),
                            rs: name,
                        });
                    }
                }
            }
            Err(e) => {
                let terminating = is_namespace_terminating(&e);
                let message = format!(
                    "Failed to create new replica set \"{name}\": {}",
                    error_message(&e)
                );
                if !terminating {
                    self.events
                        .warning(&reference(&self.d), status::FAILED_RS_CREATE, &message);
                }
                if !terminating && progress_deadline(&self.d).is_some() {
                    let mut s = self.d.status.clone().unwrap_or_default();
                    let c = condition(
                        status::PROGRESSING,
                        "False",
                        status::FAILED_RS_CREATE,
                        message,
                        status::now(),
                    );
                    set_condition(&mut s, c);
                    // Best effort: the create error is what gets retried.
                    let _ = self.write_status(s).await;
                }
                return Err(self.rs_error("creating", name, e));
            }
        };
        tracing::debug!(deployment = self.key, replicaset = %name, replicas = count, "created the new replicaset");
        if !existed && count > 0 {
            self.events.normal(
                &reference(&self.d),
                SCALING_REPLICA_SET,
                format!("Scaled up replica set {name} from 0 to {count}"),
            );
        }
        self.rses.push(created);
        let i = self.rses.len() - 1;
        self.set_revision(&new_revision.to_string()).await?;
        if !existed && progress_deadline(&self.d).is_some() {
            let mut s = self.d.status.clone().unwrap_or_default();
            let message = format!("Created new replica set \"{name}\"");
            let c = condition(
                status::PROGRESSING,
                "True",
                status::NEW_RS_CREATED,
                message,
                status::now(),
            );
            set_condition(&mut s, c);
            self.write_status(s).await?;
        }
        Ok(i)
    }
}
