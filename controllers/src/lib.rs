//! Berth's controllers, each an API client on informers (kube-rs watcher + reflector stores) and
//! rate-limited work queues, never listing in a loop: namespace lifecycle, the default
//! ServiceAccount per namespace, and node IPAM so far. They talk to the API server only through
//! `kube` — never to its internals — so they run against any Kubernetes API server.

#![forbid(unsafe_code)]

pub mod deployment;
pub mod ipam;
pub mod namespace;
pub mod pods;
pub mod replicaset;
pub mod runtime;
pub mod serviceaccount;
mod start;

pub use start::{
    client_from_kubeconfig, run, run_until_interrupted, spawn, Config, Running, StartError,
};
