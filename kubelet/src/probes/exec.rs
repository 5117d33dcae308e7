//! exec probes and hooks: a command in the running container (its namespaces, cgroup, root,
//! user and security, through [`runtime::exec_in`]) with a timeout; exit 0 is success. Standard
//! output and error are captured together, at most [`MAX_OUTPUT`] bytes, for the event message.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use tokio::io::AsyncReadExt;

use super::Outcome;
use crate::runtime::{self, ContainerIo, ContainerSpec, Stdio};

/// The most output kept (kubelet: maxReadLength, 10 KiB).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// A running container to exec in: its first process (host pid) and the spec it was started with.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub pid: i32,
    pub spec: Arc<ContainerSpec>,
}

/// What a finished command left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub code: i32,
    pub output: String,
}

/// Runs `command` in the container. `Ok(None)` when it did not finish within `timeout` (it is
/// killed); `Err` when it could not be started.
pub async fn run(
    target: &ExecTarget,
    command: &[String],
    timeout: Option<Duration>,
) -> Result<Option<ExecResult>, String> {
    if command.is_empty() {
        return Err("empty command".into());
    }
    let (read, write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let write_err = write.try_clone().map_err(|e| format!("dup: {e}"))?;
    let spec = target.spec.clone();
    let pid = Pid::from_raw(target.pid);
    let args = command.to_vec();
    let started = tokio::task::spawn_blocking(move || {
        let io = ContainerIo::Pipes(Stdio {
            stdin: None,
            stdout: write,
            stderr: write_err,
        });
        runtime::exec_in(pid, &spec, &args, io)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let child = started.pid;
    let pidfd = started.pidfd;
    let mut waiter = tokio::task::spawn_blocking(move || wait_blocking(pidfd, child, timeout));
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read)
        .map_err(|e| format!("reading the output: {e}"))?;
    let mut out = Vec::new();
    let status = {
        let reading = read_limited(&mut pipe, &mut out);
        tokio::pin!(reading);
        let mut read_all = false;
        let status = tokio::select! {
            status = &mut waiter => status,
            _ = &mut reading => {
                read_all = true;
                (&mut waiter).await
            }
        };
        if !read_all {
            // A process it left behind may hold the pipe open: take what is there and go.
            let _ = tokio::time::timeout(DRAIN, &mut reading).await;
        }
        status
    };
    let output = String::from_utf8_lossy(&out).into_owned();
    let code = status.map_err(|e| e.to_string())??;
    Ok(code.map(|code| ExecResult { code, output }))
}

/// How long output is still read after the command has exited.
const DRAIN: Duration = Duration::from_millis(200);

/// Everything the command writes, keeping the first [`MAX_OUTPUT`] bytes.
async fn read_limited(pipe: &mut tokio::net::unix::pipe::Receiver, kept: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// Waits for the process on its pidfd; past `timeout` kills it (`None`). Only this thread reaps
/// it, so until then its pid cannot name another process.
fn wait_blocking(
    pidfd: OwnedFd,
    pid: Pid,
    timeout: Option<Duration>,
) -> Result<Option<i32>, String> {
    let mut timed_out = false;
    if let Some(timeout) = timeout {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128))
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) => {
                    timed_out = true;
                    break;
                }
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waiting: {e}")),
            }
        }
    }
    if timed_out {
        let _ = kill(pid, Signal::SIGKILL);
    }
    loop {
        match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Ok(WaitStatus::Exited(_, code)) => return Ok((!timed_out).then_some(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Ok((!timed_out).then_some(128 + signal as i32))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting: {e}")),
        }
    }
}

/// An exec probe: exit 0 succeeds; a timeout fails with Go's wording.
pub async fn probe(target: &ExecTarget, command: &[String], timeout: Duration) -> Outcome {
    match run(target, command, Some(timeout)).await {
        Ok(Some(r)) if r.code == 0 => Outcome::Success(r.output),
        Ok(Some(r)) => Outcome::Failure(r.output),
        Ok(None) => Outcome::Failure(format!("command {:?} timed out", command.join(" "))),
        Err(e) => Outcome::Error(e),
    }
}
