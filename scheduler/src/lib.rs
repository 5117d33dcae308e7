//! Berth's scheduler: queue → snapshot → filter/score → bind, an API client like any other.
//!
//! The hot path is a pure library: a [`Snapshot`] of the cluster updated incrementally, a
//! [`PodInfo`] parsed once per pod, and [`Scheduler::schedule`], which runs kube-scheduler's
//! default filters over every node, scores every feasible node with its default score plugins and
//! weights, and picks the best. Those modules do no I/O, no async, take no lock and keep no global
//! state. Around them, `run` (watches, the scheduling queue, the loop), `queue` and `binder`
//! (pods/binding, PodScheduled=False and FailedScheduling events) make it an API client like any
//! other; it never reaches into the API server's internals. Processes start it from a
//! kubeconfig, leader-elected or not, through `berth_controllers::leader` (the binary wires it).
#![forbid(unsafe_code)]

mod binder;
mod cycle;
mod plugins;
mod pod_info;
mod queue;
mod run;
mod selectors;
mod snapshot;
mod topology;
mod unschedulable;

pub use binder::{bind, report_unschedulable, unschedulable_message, WriteError, COMPONENT};
pub use cycle::{ScheduleResult, Scheduler, SchedulerConfig};
pub use plugins::{weights, MAX_NODE_SCORE};
pub use pod_info::{
    normalized_image, HostPort, PodInfo, PodInfoError, Resources, SpreadConstraint, WeightedTerm,
    DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST,
};
pub use queue::{pod_key, Failure, Popped, QueueConfig, SchedulingQueue};
pub use run::{run, RunConfig, SCHEDULER_NAMES};
pub use selectors::{
    AffinityTerm, NodeSelectorTerm, RequiredNodeAffinity, Taint, TaintEffect, Toleration,
};
pub use snapshot::{NodeInfo, Snapshot, SnapshotError};
pub use unschedulable::Unschedulable;
