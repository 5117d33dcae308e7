//! Berth's controllers, each an API client on informers (kube-rs watcher + reflector stores) and
//! rate-limited work queues, never listing in a loop: namespace lifecycle, the default
//! ServiceAccount per namespace, node IPAM, and node lifecycle with NoExecute taint eviction so
//! far; [`leader`] runs them (and, from the binary, the scheduler) leader-elected on a Lease.
//! They talk to the API server only through `kube` — never to its internals — so they run
//! against any Kubernetes API server.

#![forbid(unsafe_code)]

pub mod daemonset;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod history;
pub mod ipam;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod pods;
pub mod runtime;
pub mod serviceaccount;
mod start;
pub mod statefulset;

pub use start::{
    client_from_kubeconfig, run, run_until_interrupted, spawn, Config, Running, StartError,
};
