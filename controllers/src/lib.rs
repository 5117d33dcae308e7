//! Berth's controllers, each an API client on informers (kube-rs watcher + reflector stores) and
//! rate-limited work queues, never listing in a loop: Deployment, ReplicaSet, Job (with TTL after
//! finished), DaemonSet, StatefulSet, EndpointSlice and Endpoints, the garbage collector,
//! namespace lifecycle, node lifecycle with NoExecute taint eviction, node IPAM and the default
//! ServiceAccount per namespace. [`leader`] runs them (and, from the binary, the scheduler)
//! leader-elected on a Lease. They talk to the API server only through `kube` — never to its
//! internals — so they run against any Kubernetes API server.

#![forbid(unsafe_code)]

pub mod apierrors;
pub mod csr;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod history;
pub mod ipam;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod podcontrol;
pub mod pods;
pub mod replicaset;
pub mod runtime;
pub mod serviceaccount;
mod start;
pub mod statefulset;
mod status;

pub use start::{client_from_kubeconfig, run, Config, StartError};
