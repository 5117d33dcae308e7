//! One sync of one Deployment (Kubernetes' `syncDeployment` and what it calls): find or create
//! the new ReplicaSet, scale ReplicaSets for a rollout step or a scaling event, clean up old
//! revisions, and write the status. Every decision reads the informers' copies; every write
//! goes to the API, and its echo brings the next step.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::Client;
use serde_json::json;

use super::hash::equal_ignore_hash;
use super::revision::{self, rs_revision};
use super::rolling::{self, desired, rs_actual, rs_spec};
use super::scale::{self, by_creation};
use super::status::{self, condition, get_condition, progress_deadline, set_condition};
use super::DeploymentError;
use crate::apierrors::is_not_found;
use crate::pods::controller_of;
use crate::runtime::{reference, Action, Recorder};

/// The reason of the Events that report a ReplicaSet's new size.
pub(super) const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

pub(super) struct Rollout<'a> {
    pub(super) client: &'a Client,
    pub(super) events: &'a Recorder,
    pods: &'a Store<Pod>,
    pub(super) key: &'a str,
    pub(super) ns: &'a str,
    pub(super) d: Deployment,
    pub(super) rses: Vec<ReplicaSet>,
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn status_equal(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    let old = old.cloned().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    old.observed_generation.unwrap_or(0) == new.observed_generation.unwrap_or(0)
        && n(old.replicas) == n(new.replicas)
        && n(old.updated_replicas) == n(new.updated_replicas)
        && n(old.ready_replicas) == n(new.ready_replicas)
        && n(old.available_replicas) == n(new.available_replicas)
        && n(old.unavailable_replicas) == n(new.unavailable_replicas)
        && old.collision_count == new.collision_count
        && old.conditions.unwrap_or_default() == new.conditions.clone().unwrap_or_default()
}

impl<'a> Rollout<'a> {
    pub(super) fn new(
        client: &'a Client,
        events: &'a Recorder,
        pods: &'a Store<Pod>,
        key: &'a str,
        ns: &'a str,
        d: Deployment,
    ) -> Self {
        Rollout {
            client,
            events,
            pods,
            key,
            ns,
            d,
            rses: Vec::new(),
        }
    }

    pub(super) fn set_replicasets(&mut self, rses: Vec<ReplicaSet>) {
        self.rses = rses;
    }

    pub(super) async fn run(mut self) -> Result<Action, DeploymentError> {
        if self.d.metadata.deletion_timestamp.is_some() {
            let new = self.get_new_rs(false).await?;
            return self.sync_status(new).await;
        }
        self.check_paused_conditions().await?;
        if paused(&self.d) || self.is_scaling_event().await? {
            return self.sync_scale().await;
        }
        if rolling::is_rolling(&self.d) {
            self.rolling().await
        } else {
            self.recreate().await
        }
    }

    /// Only records that the spec was seen (a Deployment whose selector selects everything).
    pub(super) async fn observe_generation_only(&mut self) -> Result<(), DeploymentError> {
        let observed = self.d.status.as_ref().and_then(|s| s.observed_generation);
        if observed.unwrap_or(0) < self.d.metadata.generation.unwrap_or(0) {
            let mut s = self.d.status.clone().unwrap_or_default();
            s.observed_generation = self.d.metadata.generation;
            self.write_status(s).await?;
        }
        Ok(())
    }

    pub(super) fn api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), self.ns)
    }

    pub(super) fn name(&self) -> &str {
        self.d.metadata.name.as_deref().unwrap_or_default()
    }

    pub(super) fn rs_name(&self, i: usize) -> String {
        self.rses[i].metadata.name.clone().unwrap_or_default()
    }

    pub(super) fn rs_error(
        &self,
        op: &'static str,
        rs: String,
        source: kube::Error,
    ) -> DeploymentError {
        DeploymentError::ReplicaSet {
            op,
            key: self.key.to_string(),
            rs,
            source,
        }
    }

    pub(super) fn rolling_error(&self, source: rolling::RollingError) -> DeploymentError {
        DeploymentError::Rolling {
            key: self.key.to_string(),
            source,
        }
    }

    /// The new RS (template equal to the Deployment's, oldest first if several) and the old
    /// ones, oldest first (Kubernetes' `FindNewReplicaSet` / `FindOldReplicaSets`).
    pub(super) fn split(&self) -> (Option<usize>, Vec<usize>) {
        let template = self.d.spec.as_ref().map(|s| &s.template);
        let mut order: Vec<usize> = (0..self.rses.len()).collect();
        order.sort_by(|&a, &b| by_creation(&self.rses[a], &self.rses[b]));
        let new = order.iter().copied().find(|&i| {
            let rs_template = self.rses[i].spec.as_ref().and_then(|s| s.template.as_ref());
            matches!((template, rs_template), (Some(a), Some(b)) if equal_ignore_hash(a, b))
        });
        order.retain(|&i| Some(i) != new);
        (new, order)
    }

    fn old_of(&self, new: Option<usize>) -> Vec<usize> {
        let mut old: Vec<usize> = (0..self.rses.len()).filter(|&i| Some(i) != new).collect();
        old.sort_by(|&a, &b| by_creation(&self.rses[a], &self.rses[b]));
        old
    }

    pub(super) async fn write_status(
        &mut self,
        status: DeploymentStatus,
    ) -> Result<(), DeploymentError> {
        let mut body = serde_json::to_value(&status).unwrap_or_else(|_| json!({}));
        // A merge patch keeps what it does not mention: say "no conditions" explicitly.
        if status.conditions.as_ref().is_none_or(Vec::is_empty) {
            body["conditions"] = serde_json::Value::Null;
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), self.ns);
        let patch = Patch::Merge(json!({ "status": body }));
        match api
            .patch_status(self.name(), &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                self.d.status = Some(status);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(DeploymentError::Write {
                what: "status",
                key: self.key.to_string(),
                source,
            }),
        }
    }

    /// Writes an RS as a whole, with its resourceVersion: a conflict means our copy was stale
    /// and the sync is retried (Kubernetes' `Update`).
    pub(super) async fn update_rs(
        &mut self,
        i: usize,
        rs: ReplicaSet,
    ) -> Result<(), DeploymentError> {
        let name = self.rs_name(i);
        match self.api().replace(&name, &PostParams::default(), &rs).await {
            Ok(updated) => {
                self.rses[i] = updated;
                Ok(())
            }
            Err(source) => Err(self.rs_error("updating", name, source)),
        }
    }

    /// Sizes RS `i` (and refreshes its replica annotations); true if its size changed.
    async fn scale_rs(&mut self, i: usize, size: i32) -> Result<bool, DeploymentError> {
        let want = desired(&self.d);
        let max = want + rolling::max_surge(&self.d);
        let rs = &self.rses[i];
        let resize = rs_spec(rs) != size;
        if !resize && !revision::replicas_annotations_need_update(rs, want, max) {
            return Ok(false);
        }
        let mut copy = rs.clone();
        let from = rs_spec(rs);
        copy.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(size);
        revision::set_replicas_annotations(&mut copy, want, max);
        self.update_rs(i, copy).await?;
        if resize {
            let rs = self.rs_name(i);
            tracing::debug!(deployment = self.key, replicaset = %rs, from, to = size, "scaled");
            let direction = if from < size { "up" } else { "down" };
            self.events.normal(
                &reference(&self.d),
                SCALING_REPLICA_SET,
                format!("Scaled {direction} replica set {rs} from {from} to {size}"),
            );
        }
        Ok(resize)
    }

    /// Progressing=Unknown with DeploymentPaused / DeploymentResumed as `spec.paused` changes.
    async fn check_paused_conditions(&mut self) -> Result<(), DeploymentError> {
        if progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let reason = get_condition(self.d.status.as_ref(), status::PROGRESSING)
            .and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(status::TIMED_OUT) {
            return Ok(());
        }
        let paused_recorded = reason.as_deref() == Some(status::PAUSED);
        let (reason, message) = match (paused(&self.d), paused_recorded) {
            (true, false) => (status::PAUSED, "Deployment is paused"),
            (false, true) => (status::RESUMED, "Deployment is resumed"),
            _ => return Ok(()),
        };
        let mut s = self.d.status.clone().unwrap_or_default();
        let c = condition(
            status::PROGRESSING,
            "Unknown",
            reason,
            message.into(),
            status::now(),
        );
        set_condition(&mut s, c);
        self.write_status(s).await
    }

    /// An active RS sized for another replica count: the Deployment was scaled.
    async fn is_scaling_event(&mut self) -> Result<bool, DeploymentError> {
        self.get_new_rs(false).await?;
        let want = desired(&self.d);
        Ok(self
            .rses
            .iter()
            .filter(|rs| rs_spec(rs) > 0)
            .any(|rs| revision::desired_replicas_annotation(rs).is_some_and(|d| d != want)))
    }

    /// Paused or scaled: size the RSes, no rollout progress (Kubernetes' `sync`).
    async fn sync_scale(&mut self) -> Result<Action, DeploymentError> {
        let new = self.get_new_rs(false).await?;
        let old = self.old_of(new);
        self.scale(new, &old).await?;
        if paused(&self.d) {
            self.cleanup(&old).await?;
        }
        self.sync_status(new).await
    }

    async fn scale(&mut self, new: Option<usize>, old: &[usize]) -> Result<(), DeploymentError> {
        let want = desired(&self.d);
        let target = {
            let new_rs = new.map(|i| &self.rses[i]);
            let old_rses: Vec<&ReplicaSet> = old.iter().map(|&i| &self.rses[i]).collect();
            scale::active_or_latest(new_rs, &old_rses)
                .and_then(|t| self.rses.iter().position(|rs| std::ptr::eq(rs, t)))
        };
        if let Some(i) = target {
            if rs_spec(&self.rses[i]) != want {
                self.scale_rs(i, want).await?;
            }
            return Ok(());
        }
        if scale::is_saturated(&self.d, new.map(|i| &self.rses[i])) {
            for &i in old {
                if rs_spec(&self.rses[i]) > 0 {
                    self.scale_rs(i, 0).await?;
                }
            }
            return Ok(());
        }
        if rolling::is_rolling(&self.d) {
            let active: Vec<usize> = old
                .iter()
                .copied()
                .chain(new)
                .filter(|&i| rs_spec(&self.rses[i]) > 0)
                .collect();
            let sizes = {
                let refs: Vec<&ReplicaSet> = active.iter().map(|&i| &self.rses[i]).collect();
                scale::proportional(&self.d, &refs)
            };
            for (k, size) in sizes {
                self.scale_rs(active[k], size).await?;
            }
        }
        Ok(())
    }

    /// One RollingUpdate step (Kubernetes' `rolloutRolling`).
    async fn rolling(&mut self) -> Result<Action, DeploymentError> {
        let Some(new) = self.get_new_rs(true).await? else {
            return self.rollout_status(None).await;
        };
        if self.reconcile_new(new).await? || self.reconcile_old(new).await? {
            return self.rollout_status(Some(new)).await;
        }
        if status::complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            let old = self.old_of(Some(new));
            self.cleanup(&old).await?;
        }
        self.rollout_status(Some(new)).await
    }

    async fn reconcile_new(&mut self, new: usize) -> Result<bool, DeploymentError> {
        let want = desired(&self.d);
        let current = rs_spec(&self.rses[new]);
        if current == want {
            return Ok(false);
        }
        if current > want {
            return self.scale_rs(new, want).await;
        }
        let size = {
            let all: Vec<&ReplicaSet> = self.rses.iter().collect();
            rolling::new_rs_new_replicas(&self.d, &all, &self.rses[new])
                .map_err(|e| self.rolling_error(e))?
        };
        self.scale_rs(new, size).await
    }

    async fn reconcile_old(&mut self, new: usize) -> Result<bool, DeploymentError> {
        let old: Vec<usize> = self
            .old_of(Some(new))
            .into_iter()
            .filter(|&i| rs_spec(&self.rses[i]) > 0)
            .collect();
        if old.is_empty() {
            return Ok(false);
        }
        let budget = {
            let all: Vec<&ReplicaSet> = self.rses.iter().collect();
            rolling::max_scaled_down(&self.d, &all, &self.rses[new])
        };
        if budget <= 0 {
            return Ok(false);
        }
        let mut scaled = 0;
        let cleanup = {
            let refs: Vec<&ReplicaSet> = old.iter().map(|&i| &self.rses[i]).collect();
            rolling::cleanup_unhealthy(&refs, budget)
        };
        for (k, size) in cleanup {
            scaled += rs_spec(&self.rses[old[k]]) - size;
            self.scale_rs(old[k], size).await?;
        }
        let down = {
            let all: Vec<&ReplicaSet> = self.rses.iter().collect();
            let refs: Vec<&ReplicaSet> = old.iter().map(|&i| &self.rses[i]).collect();
            rolling::scale_down_old(&self.d, &all, &refs)
        };
        for (k, size) in down {
            scaled += rs_spec(&self.rses[old[k]]) - size;
            self.scale_rs(old[k], size).await?;
        }
        Ok(scaled > 0)
    }

    /// One Recreate step (Kubernetes' `rolloutRecreate`): old RSes to zero, wait until their
    /// pods are gone, then the new RS to full size.
    async fn recreate(&mut self) -> Result<Action, DeploymentError> {
        let new = self.get_new_rs(false).await?;
        let old = self.old_of(new);
        let mut scaled = false;
        for &i in &old {
            if rs_spec(&self.rses[i]) > 0 {
                self.scale_rs(i, 0).await?;
                scaled = true;
            }
        }
        if scaled || self.old_pods_running(&old) {
            return self.rollout_status(new).await;
        }
        let new = match new {
            Some(i) => i,
            None => match self.get_new_rs(true).await? {
                Some(i) => i,
                None => return self.rollout_status(None).await,
            },
        };
        self.scale_rs(new, desired(&self.d)).await?;
        if status::complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            let old = self.old_of(Some(new));
            self.cleanup(&old).await?;
        }
        self.rollout_status(Some(new)).await
    }

    /// Old RSes still report pods, or a pod of theirs (even a terminating one) is not finished.
    fn old_pods_running(&self, old: &[usize]) -> bool {
        if old.iter().map(|&i| rs_actual(&self.rses[i])).sum::<i32>() > 0 {
            return true;
        }
        let old_uids: HashSet<&str> = old
            .iter()
            .filter_map(|&i| self.rses[i].metadata.uid.as_deref())
            .collect();
        self.pods.state().iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(self.ns)
                && controller_of(&p.metadata).is_some_and(|r| old_uids.contains(r.uid.as_str()))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
    }

    /// Deletes the oldest empty old RSes beyond `revisionHistoryLimit`.
    async fn cleanup(&mut self, old: &[usize]) -> Result<(), DeploymentError> {
        let limit = self.d.spec.as_ref().and_then(|s| s.revision_history_limit);
        let Some(limit) = limit.filter(|l| *l != i32::MAX) else {
            return Ok(());
        };
        let mut alive: Vec<usize> = old
            .iter()
            .copied()
            .filter(|&i| self.rses[i].metadata.deletion_timestamp.is_none())
            .collect();
        let excess = alive.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return Ok(());
        }
        alive.sort_by(|&a, &b| {
            let (ra, rb) = (&self.rses[a], &self.rses[b]);
            rs_revision(ra)
                .cmp(&rs_revision(rb))
                .then_with(|| by_creation(ra, rb))
        });
        for &i in alive.iter().take(excess as usize) {
            let rs = &self.rses[i];
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation);
            if rs_actual(rs) != 0
                || rs_spec(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed.unwrap_or(0)
            {
                continue;
            }
            let name = self.rs_name(i);
            match self.api().delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::debug!(deployment = self.key, replicaset = %name, "deleted an old revision");
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(self.rs_error("deleting", name, e)),
            }
        }
        Ok(())
    }

    /// Counts and Available only (Kubernetes' `syncDeploymentStatus`).
    async fn sync_status(&mut self, new: Option<usize>) -> Result<Action, DeploymentError> {
        let all: Vec<&ReplicaSet> = self.rses.iter().collect();
        let s = status::calculate(&all, new.map(|i| &self.rses[i]), &self.d, status::now());
        if !status_equal(self.d.status.as_ref(), &s) {
            self.write_status(s).await?;
        }
        Ok(Action::Done)
    }

    /// Counts and every condition (Kubernetes' `syncRolloutStatus`); a rollout showing no
    /// progress is looked at again when its deadline passes.
    async fn rollout_status(&mut self, new: Option<usize>) -> Result<Action, DeploymentError> {
        let now = status::now();
        let all: Vec<&ReplicaSet> = self.rses.iter().collect();
        let s = status::rollout(&all, new.map(|i| &self.rses[i]), &self.d, now);
        if status_equal(self.d.status.as_ref(), &s) {
            return Ok(
                status::stuck_requeue(&self.d, &s, now).map_or(Action::Done, Action::RequeueAfter)
            );
        }
        self.write_status(s).await?;
        Ok(Action::Done)
    }
}
