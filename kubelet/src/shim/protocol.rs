//! The kubelet ↔ shim protocol: one JSON object per line over the pod's unix socket. A connection
//! carries requests and their responses in order; a connection that sends `Subscribe` then
//! receives an [`Event`] line for every container exit from then on (and the current state first,
//! so nothing is missed between a kubelet restart and its subscription).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::runtime::ContainerSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Start a container. `name` and `attempt` are Kubernetes' container name and restart count;
    /// the shim keeps one record per `spec.id`.
    Start {
        name: String,
        attempt: u32,
        spec: Box<ContainerSpec>,
        /// The CRI-format log file for this attempt.
        log_path: PathBuf,
        /// The container's cgroup directories that report OOM kills (`memory.events` on v2,
        /// `memory.oom_control` on v1), read before start and after exit to tell OOMKilled.
        oom_files: Vec<PathBuf>,
    },
    /// Send a signal to a container's first process.
    Kill { id: String, signal: i32 },
    /// Forget an exited container (its record and exit status).
    Remove { id: String },
    /// Every container the shim knows, running or exited.
    State,
    /// Turn this connection into an event stream: a `State` response, then one [`Event`] per
    /// exit.
    Subscribe,
    /// Exit once no container is running: the pod is being torn down.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Response {
    Ok,
    Started {
        pid: i32,
        started_at: String,
    },
    State {
        pid: i32,
        containers: Vec<ContainerState>,
    },
    Error {
        message: String,
    },
}

/// One container as the shim sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    pub attempt: u32,
    pub pid: i32,
    /// RFC 3339 with nanoseconds, UTC.
    pub started_at: String,
    pub exit: Option<Exit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    /// The exit code, or 128 + the signal number when a signal killed it (as runc reports).
    pub code: i32,
    pub signal: Option<i32>,
    pub finished_at: String,
    /// The kernel's OOM killer killed a process of this container while it ran.
    pub oom_killed: bool,
}

/// Pushed on a subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    Exited { id: String, exit: Exit },
}

/// The socket and state files inside a pod's directory.
pub fn socket_path(pod_dir: &std::path::Path) -> PathBuf {
    pod_dir.join("shim.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_line_of_json() {
        let line = serde_json::to_string(&Request::Kill {
            id: "a".into(),
            signal: 15,
        })
        .unwrap();
        assert_eq!(line, r#"{"op":"kill","id":"a","signal":15}"#);
        let back: Request = serde_json::from_str(&line).unwrap();
        assert_eq!(
            back,
            Request::Kill {
                id: "a".into(),
                signal: 15
            }
        );
        let event = Event::Exited {
            id: "a".into(),
            exit: Exit {
                code: 137,
                signal: Some(9),
                finished_at: "t".into(),
                oom_killed: true,
            },
        };
        assert!(!serde_json::to_string(&event).unwrap().contains('\n'));
    }
}
