//! Berth's scheduler: queue → snapshot → filter/score → bind, an API client like any other.
//!
//! This crate is its hot path as a pure library: a [`Snapshot`] of the cluster updated
//! incrementally, a [`PodInfo`] parsed once per pod, and [`Scheduler::schedule`], which runs
//! kube-scheduler's default filters over every node, scores every feasible node with its
//! default score plugins and weights, and picks the best. It does no I/O, no async, takes no
//! lock and keeps no global state; the API client (watch, queues, bind) wraps it.
#![forbid(unsafe_code)]

mod cycle;
mod plugins;
mod pod_info;
mod selectors;
mod snapshot;
mod topology;
mod unschedulable;

pub use cycle::{ScheduleResult, Scheduler, SchedulerConfig};
pub use plugins::{weights, MAX_NODE_SCORE};
pub use pod_info::{
    normalized_image, HostPort, PodInfo, PodInfoError, Resources, SpreadConstraint, WeightedTerm,
    DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST,
};
pub use selectors::{
    AffinityTerm, NodeSelectorTerm, RequiredNodeAffinity, Taint, TaintEffect, Toleration,
};
pub use snapshot::{NodeInfo, Snapshot, SnapshotError};
pub use unschedulable::Unschedulable;
