//! `berth shim`: the per-pod process that holds the pod's network, IPC and UTS namespaces and is
//! the parent of its containers. The kubelet starts one per pod and talks to it over a unix
//! socket in the pod's directory ([`protocol`]); since the shim is in its own session and not
//! the kubelet's to kill, the kubelet can restart (or be killed) without touching running
//! containers, and re-adopts them by connecting again. The shim reaps its containers through
//! their pidfds, so an exit code is never lost, and writes their output to CRI log files.
//!
//! The shim is one thread and a `poll` loop: it stays small (the target is under 1 MiB RSS).

pub mod client;
pub mod logs;
pub mod protocol;
pub mod residency;
mod server;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::sched::CloneFlags;

pub use client::{launch, ShimClient, Subscription};
pub use protocol::{ContainerState, Event, Exit, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{call}")]
    Sys {
        call: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim for {}: {message}", pod_dir.display())]
    Protocol { pod_dir: PathBuf, message: String },
}

/// How `berth shim` was asked to run.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    pub pod_dir: PathBuf,
    /// The pod's hostname, set in its new UTS namespace.
    pub hostname: String,
    /// Share the host's network namespace (`hostNetwork: true`).
    pub host_network: bool,
    /// Share the host's IPC namespace (`hostIPC: true`).
    pub host_ipc: bool,
}

/// The body of `berth shim`. Prints `ready <pid>` on stdout once its socket listens, then
/// closes stdout, so the kubelet knows it can connect; returns when the pod is shut down.
pub fn run(config: &ShimConfig) -> Result<(), ShimError> {
    // Out of the kubelet's session and process group: a signal to those must not reach the pod.
    nix::unistd::setsid().map_err(|source| ShimError::Sys {
        call: "setsid",
        source,
    })?;
    let mut flags = CloneFlags::CLONE_NEWUTS;
    if !config.host_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if !config.host_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    nix::sched::unshare(flags).map_err(|source| ShimError::Sys {
        call: "unshare",
        source,
    })?;
    nix::unistd::sethostname(&config.hostname).map_err(|source| ShimError::Sys {
        call: "sethostname",
        source,
    })?;
    let socket = protocol::socket_path(&config.pod_dir);
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ShimError::Io {
                op: "remove",
                path: socket,
                source,
            })
        }
    }
    let listener = UnixListener::bind(&socket).map_err(|source| ShimError::Io {
        op: "bind",
        path: socket.clone(),
        source,
    })?;
    let pid_file = config.pod_dir.join("shim.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|source| {
        ShimError::Io {
            op: "write",
            path: pid_file,
            source,
        }
    })?;
    let mut stdout = std::io::stdout().lock();
    let ready = writeln!(stdout, "ready {}", std::process::id()).and_then(|()| stdout.flush());
    ready.map_err(|source| ShimError::Io {
        op: "write",
        path: "stdout".into(),
        source,
    })?;
    drop(stdout);
    close_stdout();
    server::Server::new(listener).run()
}

/// Points stdout at /dev/null, so the kubelet's read of the ready line sees EOF and nothing the
/// shim does later can block on a pipe nobody reads.
fn close_stdout() {
    use std::os::fd::AsFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
}
