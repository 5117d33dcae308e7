//! The Job controller (kube-controller-manager's `job` and `ttl-after-finished` controllers):
//! runs pods until `completions` of them succeed (at most `parallelism` at once), fails the Job
//! past `backoffLimit` failed pods or `activeDeadlineSeconds`, honours `suspend`, and deletes
//! a finished Job after `ttlSecondsAfterFinished`.
//!
//! Pods are counted as Kubernetes does since 1.26: each pod carries the
//! `batch.kubernetes.io/job-tracking` finalizer; a finished pod's UID is first recorded in
//! `status.uncountedTerminatedPods`, then its finalizer removed, then it moves into
//! `status.succeeded`/`failed`. A pod is thus counted exactly once, even if it is deleted right
//! after finishing or the controller restarts halfway.

mod status;
mod ttl;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::well_known::finalizers::JOB_TRACKING;
use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

use crate::apierrors::{is_gone_or_conflict, is_not_found};
use crate::podcontrol::{Batches, DeletionSeen, Owner, PodControl, PodError, PodExpectations};
use crate::pods::{
    controller_key, controller_of, controller_of_kind, controller_reference, from_template,
    is_active, PodName,
};
use crate::runtime::{
    key_of, reference, Action, Change, Informer, NotSynced, Reconciler, Recorder, Runner, Synced,
    WorkQueue,
};

pub use status::{
    COMPLETE, FAILED, FAILURE_TARGET, REASON_BACKOFF_LIMIT, REASON_DEADLINE, SUCCESS_CRITERIA_MET,
    SUSPENDED,
};

/// Reported as the source of this controller's Events.
pub const COMPONENT: &str = "job-controller";

/// The Job controller's knobs.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Delay before re-creating pods after the first failure, doubled for each further failure
    /// since the last success (Kubernetes: 10 s). Zero re-creates at once (tests).
    pub backoff_base: Duration,
    /// Cap of that delay (Kubernetes: 10 min).
    pub backoff_max: Duration,
    /// Jobs synced at once (`--concurrent-job-syncs`).
    pub workers: usize,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(600),
            workers: 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{op} job {key}")]
    Job {
        op: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

pub struct JobController {
    client: Client,
    events: Recorder,
    pod_control: PodControl,
    jobs: Store<Job>,
    pods: Store<Pod>,
    synced: [Synced; 2],
    config: JobConfig,
    expectations: Arc<PodExpectations>,
    /// Pods whose tracking finalizer this controller removed, until the informer shows it gone:
    /// a stale store must not count them twice.
    releasing: Arc<Mutex<BTreeSet<String>>>,
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

impl JobController {
    /// Registers the controller on `runner`; `pods` (shared with other controllers) feeds it.
    pub fn register(
        runner: &mut Runner,
        client: Client,
        pods: &mut Informer<Pod>,
        config: JobConfig,
        queue: WorkQueue<String>,
    ) {
        let mut jobs = Informer::new(Api::<Job>::all(client.clone()), watcher::Config::default());
        jobs.enqueue(&queue, |job: &Job| vec![key_of(job)]);
        let expectations = Arc::new(PodExpectations::new(DeletionSeen::OnDeleteOrTerminating));
        let releasing = Arc::new(Mutex::new(BTreeSet::new()));
        {
            let releasing = releasing.clone();
            pods.observe(move |change, pod: &Pod| {
                if change == Change::Deleted || !status::has_tracking_finalizer(pod) {
                    lock(&releasing).remove(uid(pod));
                }
            });
        }
        expectations.observe::<Job>(pods);
        pods.enqueue(&queue, |pod: &Pod| {
            controller_key::<Job>(&pod.metadata).into_iter().collect()
        });
        let workers = config.workers;
        let events = Recorder::new(client.clone(), COMPONENT);
        let controller = JobController {
            pod_control: PodControl::new(client.clone(), Some(events.clone())),
            events,
            client,
            jobs: jobs.store(),
            pods: pods.store(),
            synced: [jobs.synced(), pods.synced()],
            config,
            expectations,
            releasing,
        };
        runner.informer(jobs);
        runner.controller(controller, queue, workers);
    }

    /// The pods in `namespace` whose controller is the Job named `name`, of any UID.
    fn pods_named(&self, namespace: &str, name: &str) -> Vec<Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && controller_of_kind::<Job>(&p.metadata).is_some_and(|o| o.name == name)
            })
            .collect()
    }

    /// Removes the tracking finalizer from `pods` (a strategic merge patch, as Kubernetes does,
    /// so other finalizers are untouched).
    async fn release(&self, namespace: &str, pods: &[&Pod]) -> Result<(), JobError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [JOB_TRACKING]}});
        let results = join_all(pods.iter().map(|pod| {
            let api = api.clone();
            let patch = &patch;
            async move {
                lock(&self.releasing).insert(uid(pod).to_string());
                let name = pod.metadata.name.clone().unwrap_or_default();
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(source) => {
                        lock(&self.releasing).remove(uid(pod));
                        Err(JobError::Pod(PodError {
                            op: "removing the tracking finalizer of",
                            namespace: namespace.to_string(),
                            name,
                            source,
                        }))
                    }
                }
            }
        }))
        .await;
        results.into_iter().collect()
    }

    /// Releases the pods of a Job that is gone, going, or finished.
    async fn release_all(&self, namespace: &str, pods: &[Arc<Pod>]) -> Result<(), JobError> {
        let held: Vec<&Pod> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| status::has_tracking_finalizer(p))
            .collect();
        self.release(namespace, &held).await
    }

    async fn write_status(&self, job: &Job, status: JobStatus, key: &str) -> Result<Job, JobError> {
        let api: Api<Job> = Api::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let mut updated = job.clone();
        updated.status = Some(status);
        // The resourceVersion we read travels along: a stale store gets a 409 and a retry, never
        // a double count.
        api.replace_status(
            job.metadata.name.as_deref().unwrap_or_default(),
            &PostParams::default(),
            &updated,
        )
        .await
        .map_err(|source| JobError::Job {
            op: "updating the status of",
            key: key.to_string(),
            source,
        })
    }

    async fn create_pods(&self, job: &Job, key: &str, count: usize) -> Result<(), JobError> {
        let (Some(owner), Some(spec)) = (controller_reference(job), job.spec.as_ref()) else {
            return Ok(());
        };
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let prefix = format!("{name}-");
        let mut pod = from_template(
            &spec.template,
            &namespace,
            owner,
            PodName::Generate(&prefix),
        );
        pod.metadata
            .finalizers
            .get_or_insert_default()
            .push(JOB_TRACKING.to_string());
        self.pod_control
            .create_all(
                &self.owner(job, key),
                vec![pod; count],
                Batches::All,
                is_gone_or_conflict,
            )
            .await?;
        Ok(())
    }

    fn owner<'a>(&'a self, job: &Job, key: &'a str) -> Owner<'a> {
        Owner {
            key,
            expectations: &self.expectations,
            reference: reference(job),
        }
    }

    async fn sync(&self, key: &str, job: &Job) -> Result<Action, JobError> {
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let job_uid = job.metadata.uid.clone().unwrap_or_default();
        let named = self.pods_named(&namespace, &name);
        // Pods of an earlier Job of the same name: not ours to count, only to release.
        let (mine, strays): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = named
            .into_iter()
            .partition(|p| controller_of(&p.metadata).is_some_and(|o| o.uid == job_uid));
        self.release_all(&namespace, &strays).await?;

        if job.metadata.deletion_timestamp.is_some() {
            self.release_all(&namespace, &mine).await?;
            return Ok(Action::Done);
        }
        let now = Timestamp::now();
        if status::finished(job).is_some() {
            self.release_all(&namespace, &mine).await?;
            return ttl::expire(&self.client, job, key, now).await;
        }

        let pods: Vec<&Pod> = mine.iter().map(|p| &**p).collect();
        let spec = job.spec.clone().unwrap_or_default();
        let replace_failed_only = spec.pod_replacement_policy.as_deref() == Some("Failed");
        let mut job = job.clone();
        let mut st = job.status.clone().unwrap_or_default();

        // 1. Record newly finished pods as uncounted, durably, before touching their finalizers.
        let releasing = lock(&self.releasing).clone();
        let uncounted = st.uncounted_terminated_pods.clone().unwrap_or_default();
        let tracking = status::track(&pods, &uncounted, &releasing, replace_failed_only);
        if !tracking.newly_succeeded.is_empty() || !tracking.newly_failed.is_empty() {
            let u = st.uncounted_terminated_pods.get_or_insert_default();
            u.succeeded
                .get_or_insert_default()
                .extend(tracking.newly_succeeded.iter().cloned());
            u.failed
                .get_or_insert_default()
                .extend(tracking.newly_failed.iter().cloned());
            job = self.write_status(&job, st.clone(), key).await?;
            st = job.status.clone().unwrap_or_default();
        }
        // 2. Release them, then 3. count what was released.
        self.release(&namespace, &tracking.release).await?;
        let held: BTreeSet<&str> = pods
            .iter()
            .filter(|p| status::has_tracking_finalizer(p))
            .map(|p| uid(p))
            .collect();
        let released = lock(&self.releasing).clone();
        status::flush(&mut st, |u| held.contains(u) && !released.contains(u));

        // 4. Decide.
        let (succeeded, failed) = status::totals(&st);
        let active_pods: Vec<&Pod> = pods.iter().copied().filter(|p| is_active(p)).collect();
        let (active, ready) = status::active_and_ready(&pods);
        let terminating = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some() && status::outcome(p, true).is_none()
            })
            .count() as i32;
        let mut conditions = st.conditions.clone().unwrap_or_default();
        let suspended = spec.suspend == Some(true);
        let mut requeue: Option<Duration> = None;
        let mut finishing = conditions
            .iter()
            .find(|c| {
                c.status == "True" && (c.type_ == FAILURE_TARGET || c.type_ == SUCCESS_CRITERIA_MET)
            })
            .cloned();
        if finishing.is_none() {
            let failure = if status::past_backoff_limit(&job, failed, &active_pods) {
                Some((REASON_BACKOFF_LIMIT, status::MESSAGE_BACKOFF_LIMIT))
            } else if !suspended && status::deadline_left(&job, now) == Some(Duration::ZERO) {
                Some((REASON_DEADLINE, status::MESSAGE_DEADLINE))
            } else {
                None
            };
            if let Some((reason, message)) = failure {
                status::set_condition(
                    &mut conditions,
                    FAILURE_TARGET,
                    "True",
                    reason,
                    message,
                    now,
                );
            } else if status::success_criteria_met(&job, succeeded, active) {
                status::set_condition(
                    &mut conditions,
                    SUCCESS_CRITERIA_MET,
                    "True",
                    status::REASON_COMPLETIONS,
                    status::MESSAGE_COMPLETIONS,
                    now,
                );
            }
            finishing = conditions
                .iter()
                .find(|c| c.type_ == FAILURE_TARGET || c.type_ == SUCCESS_CRITERIA_MET)
                .cloned();
        }

        let mut delete: Vec<&Pod> = Vec::new();
        let mut create = 0;
        let satisfied = self.expectations.satisfied(key);
        if finishing.is_some() || suspended {
            delete = active_pods.clone();
        } else if satisfied {
            let want = status::wanted_active(&job, succeeded);
            if active < want {
                let wait = status::creation_backoff(
                    &pods,
                    self.config.backoff_base,
                    self.config.backoff_max,
                    now,
                );
                if wait.is_zero() {
                    create = (want - active) as usize;
                } else {
                    requeue = Some(wait);
                }
            } else if active > want {
                delete = status::pick_for_deletion(&active_pods, (active - want) as usize);
            }
        }
        if suspended {
            status::set_condition(
                &mut conditions,
                SUSPENDED,
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
        } else if conditions
            .iter()
            .any(|c| c.type_ == SUSPENDED && c.status == "True")
        {
            status::set_condition(
                &mut conditions,
                SUSPENDED,
                "False",
                "JobResumed",
                "Job resumed",
                now,
            );
            // The deadline counts from the resumption.
            st.start_time = Some(Time(now));
        }
        if !suspended && st.start_time.is_none() {
            st.start_time = Some(Time(now));
        }
        // The terminal condition once every pod has stopped and been counted.
        let all_counted = st
            .uncounted_terminated_pods
            .as_ref()
            .is_none_or(|u| u.succeeded.is_none() && u.failed.is_none());
        if let Some(interim) = &finishing {
            if active == 0 && terminating == 0 && all_counted {
                let terminal = if interim.type_ == FAILURE_TARGET {
                    FAILED
                } else {
                    COMPLETE
                };
                status::set_condition(
                    &mut conditions,
                    terminal,
                    "True",
                    interim.reason.as_deref().unwrap_or_default(),
                    interim.message.as_deref().unwrap_or_default(),
                    now,
                );
                if terminal == COMPLETE {
                    st.completion_time = Some(Time(now));
                }
            }
        }

        let deleting = delete.len() as i32;
        st.active = Some(active - deleting + create as i32).filter(|n| *n > 0);
        st.ready = Some(ready);
        st.terminating = Some(terminating + deleting);
        st.conditions = Some(conditions).filter(|c| !c.is_empty());
        st.uncounted_terminated_pods.get_or_insert_default();

        self.pod_control
            .delete_all(&self.owner(&job, key), &delete)
            .await?;
        if create > 0 {
            self.create_pods(&job, key, create).await?;
        }
        if job.status.as_ref() != Some(&st) {
            let was_suspended = status::condition(&job, SUSPENDED).is_some();
            job = self.write_status(&job, st, key).await?;
            self.record_transitions(&job, was_suspended);
        }
        if status::finished(&job).is_some() {
            return ttl::expire(&self.client, &job, key, now).await;
        }
        if let Some(left) = status::deadline_left(&job, now).filter(|d| !d.is_zero()) {
            requeue = Some(requeue.map_or(left, |r| r.min(left)));
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }
}

impl JobController {
    /// Kubernetes' Events for a status just written: suspended or resumed, and finished (a
    /// Job is found unfinished at the start of a sync, so this is its first finish).
    fn record_transitions(&self, job: &Job, was_suspended: bool) {
        let r = reference(job);
        match (was_suspended, status::condition(job, SUSPENDED).is_some()) {
            (false, true) => self.events.normal(&r, "Suspended", "Job suspended"),
            (true, false) => self.events.normal(&r, "Resumed", "Job resumed"),
            _ => {}
        }
        if status::condition(job, COMPLETE).is_some() {
            self.events.normal(&r, "Completed", "Job completed");
        } else if let Some(failed) = status::condition(job, FAILED) {
            let reason = failed.reason.as_deref().unwrap_or_default();
            let message = failed.message.clone().unwrap_or_default();
            self.events.warning(&r, reason, message);
        }
    }
}

fn lock(m: &Mutex<BTreeSet<String>>) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    // Single inserts and removes: a panicking holder leaves the set consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reconciler for JobController {
    type Error = JobError;

    fn name(&self) -> &'static str {
        "job"
    }

    async fn prepare(&self) -> Result<(), JobError> {
        self.synced[0].wait("job").await?;
        self.synced[1].wait("pod").await?;
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, JobError> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        match self.jobs.get(&ObjectRef::new(name).within(namespace)) {
            Some(job) => self.sync(key, &job).await,
            None => {
                // Gone: its pods keep nothing from going away.
                self.expectations.forget(key);
                let pods = self.pods_named(namespace, name);
                self.release_all(namespace, &pods).await?;
                Ok(Action::Done)
            }
        }
    }
}
