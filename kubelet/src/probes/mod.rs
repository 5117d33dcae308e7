//! Container probes and lifecycle hooks, as the kubelet runs them (pkg/kubelet/prober,
//! pkg/kubelet/lifecycle): liveness, readiness and startup probes with their timing and
//! thresholds ([`threshold`], pure), the exec, httpGet and tcpSocket actions, and postStart /
//! preStop hooks. This module decides nothing about a pod: it reports results through a
//! [`Sink`], and the pod's worker restarts containers and sets readiness.

mod action;
mod exec;
mod hooks;
mod net;
mod runner;
mod threshold;

use std::time::Duration;

use k8s_openapi::api::core::v1::ContainerPort;

pub use action::{hook_action, probe_action, Action, ActionError, HttpGet, Scheme};
pub use exec::{ExecResult, ExecTarget, MAX_OUTPUT};
pub use hooks::run_hook;
pub use runner::{ProbeSet, Report, Sink};
pub use threshold::{ProbeKind, Timing, Tracker, Verdict};

/// One probe's result, with its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(String),
    Failure(String),
    /// The probe could not run (no such port, exec impossible): not counted as a failure.
    Error(String),
}

/// Where a container's probes and hooks go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The default host for httpGet and tcpSocket: the pod's IP.
    pub host: String,
    /// The container's ports, for named ports.
    pub ports: Vec<ContainerPort>,
    /// How to exec in the container; `None` when it can't be (exec probes then error).
    pub exec: Option<ExecTarget>,
}

/// Runs a probe action once within `timeout`.
pub async fn run_action(action: &Action, target: &Target, timeout: Duration) -> Outcome {
    match action {
        Action::Exec { command } => match &target.exec {
            Some(exec_target) => exec::probe(exec_target, command, timeout).await,
            None => Outcome::Error("the container cannot be exec'd into".into()),
        },
        Action::HttpGet(get) => net::http_get(get, timeout).await,
        Action::TcpSocket { host, port } => net::tcp(host, *port, timeout).await,
        Action::Sleep { .. } => Outcome::Error("sleep is not a probe".into()),
    }
}
