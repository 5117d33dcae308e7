//! The shim's event loop: one thread, one `poll` over the control socket, its clients, each
//! container's pidfd and output pipes. Exits are observed on the pidfd the moment they happen and
//! pushed to subscribers; output goes to the container's CRI log.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::logs::{LogWriter, Stream};
use super::protocol::{ContainerState, Event, Exit, Request, Response};
use super::{residency, ShimError};
use crate::runtime::{self, ContainerIo, Stdio};

/// Log rotation, as the kubelet's defaults (containerLogMaxSize 10Mi, containerLogMaxFiles 5).
const LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
const LOG_MAX_FILES: usize = 5;
/// What one read takes from a container's output or a client: on the stack, and every stack
/// page the shim ever touched stays resident, so small.
const READ_CHUNK: usize = 16 * 1024;
/// A container's output is logged by code no request touches: its pages are dropped at most this
/// often while output keeps coming, and this long after the last of it.
const OUTPUT_TRIM_INTERVAL: Duration = Duration::from_secs(1);

struct Container {
    state: ContainerState,
    pidfd: Option<OwnedFd>,
    oom_files: Vec<PathBuf>,
    oom_before: u64,
}

struct Output {
    id: String,
    stream: Stream,
    fd: OwnedFd,
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    subscribed: bool,
}

pub(super) struct Server {
    listener: UnixListener,
    clients: Vec<Client>,
    containers: BTreeMap<String, Container>,
    outputs: Vec<Output>,
    logs: BTreeMap<String, LogWriter>,
    shutting_down: bool,
    /// Something beyond log output happened since the last trim: drop the file
    /// pages that touched before blocking again.
    trim_pending: bool,
    /// Container output was logged since the last trim.
    output_since_trim: bool,
    last_trim: Instant,
    trimmer: residency::Trimmer,
}

impl Server {
    pub(super) fn new(listener: UnixListener) -> Server {
        Server {
            listener,
            clients: Vec::new(),
            containers: BTreeMap::new(),
            outputs: Vec::new(),
            logs: BTreeMap::new(),
            shutting_down: false,
            trim_pending: true,
            output_since_trim: false,
            last_trim: Instant::now(),
            trimmer: residency::Trimmer::new(Path::new("/proc/self")),
        }
    }

    /// Serves until a `Shutdown` request and every container has exited.
    pub(super) fn run(mut self) -> Result<(), ShimError> {
        loop {
            if self.shutting_down && self.running() == 0 && self.outputs.is_empty() {
                return Ok(());
            }
            self.poll_once()?;
        }
    }

    /// Whether to trim before this `poll`, and how long it may block: until the next trim is due
    /// when output came since the last one.
    fn trim_schedule(&mut self, now: Instant) -> (bool, PollTimeout) {
        let due = self.last_trim + OUTPUT_TRIM_INTERVAL;
        if self.trim_pending || (self.output_since_trim && now >= due) {
            self.trim_pending = false;
            self.output_since_trim = false;
            self.last_trim = now;
            return (true, PollTimeout::NONE);
        }
        if !self.output_since_trim {
            return (false, PollTimeout::NONE);
        }
        // Rounded up, so the next poll wakes with the trim due rather than spinning before it.
        let wait = due.saturating_duration_since(now) + Duration::from_millis(1);
        (
            false,
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
        )
    }

    fn running(&self) -> usize {
        self.containers
            .values()
            .filter(|c| c.state.exit.is_none())
            .count()
    }

    fn poll_once(&mut self) -> Result<(), ShimError> {
        // Order: listener, clients, pidfds, outputs; the ready sets are read back in that order.
        let pidfd_ids: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.pidfd.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let (trim, timeout) = self.trim_schedule(Instant::now());
        let (ready_listener, ready_clients, ready_pids, ready_outputs) = {
            let mut fds: Vec<PollFd> = Vec::new();
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for c in &self.clients {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            }
            for id in &pidfd_ids {
                let fd = self.containers[id].pidfd.as_ref().map(|f| f.as_fd());
                fds.push(PollFd::new(fd.expect("filtered above"), PollFlags::POLLIN));
            }
            for o in &self.outputs {
                fds.push(PollFd::new(o.fd.as_fd(), PollFlags::POLLIN));
            }
            if trim {
                // Last before blocking, so the pages this loop touched until now are dropped.
                let _ = self.trimmer.trim();
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => {
                    return Err(ShimError::Sys {
                        call: "poll",
                        source: e,
                    })
                }
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let mut it = fds.iter();
            let l = ready(it.next().expect("listener"));
            let c: Vec<bool> = (0..self.clients.len())
                .map(|_| ready(it.next().unwrap()))
                .collect();
            let p: Vec<bool> = (0..pidfd_ids.len())
                .map(|_| ready(it.next().unwrap()))
                .collect();
            let o: Vec<bool> = (0..self.outputs.len())
                .map(|_| ready(it.next().unwrap()))
                .collect();
            (l, c, p, o)
        };
        // Output before exits, so a container's last lines are logged before its exit is told.
        for i in (0..ready_outputs.len()).rev() {
            if ready_outputs[i] {
                self.output_since_trim = true;
                self.read_output(i);
            }
        }
        for (id, ready) in pidfd_ids.iter().zip(ready_pids) {
            if ready {
                self.trim_pending = true;
                self.reap(id);
            }
        }
        for i in (0..ready_clients.len()).rev() {
            if ready_clients[i] {
                self.trim_pending = true;
                if !self.serve_client(i) {
                    self.clients.remove(i);
                }
            }
        }
        if ready_listener {
            match self.listener.accept() {
                Ok((stream, _)) => self.clients.push(Client {
                    stream,
                    buf: Vec::new(),
                    subscribed: false,
                }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ShimError::Io {
                        op: "accept",
                        path: PathBuf::new(),
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn read_output(&mut self, i: usize) {
        let mut buf = [0u8; READ_CHUNK];
        let n = nix::unistd::read(self.outputs[i].fd.as_fd(), &mut buf);
        let output = &self.outputs[i];
        let log = self.logs.get_mut(&output.id);
        match n {
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                // EOF (EIO is a pty whose other side closed).
                if let Some(log) = log {
                    let _ = log.finish(output.stream);
                }
                let id = output.id.clone();
                self.outputs.remove(i);
                if !self.outputs.iter().any(|o| o.id == id) {
                    self.logs.remove(&id);
                }
            }
            Ok(n) => {
                if let Some(log) = log {
                    if let Err(e) = log.write(output.stream, &buf[..n]) {
                        eprintln!("berth shim: writing the log of {}: {e}", output.id);
                    }
                }
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("berth shim: reading output of {}: {e}", output.id);
                self.outputs.remove(i);
            }
        }
    }

    fn reap(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let Some(pidfd) = c.pidfd.as_ref() else {
            return;
        };
        let status = match waitid(
            Id::PIDFd(pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => return,
            Ok(s) => s,
            Err(e) => {
                eprintln!("berth shim: waitid for {id}: {e}");
                return;
            }
        };
        let (code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, None),
            WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
            _ => return,
        };
        let oom_killed = oom_kills(&c.oom_files) > c.oom_before;
        let exit = Exit {
            code,
            signal,
            finished_at: now(),
            oom_killed,
        };
        c.pidfd = None;
        c.state.exit = Some(exit.clone());
        let event = Event::Exited {
            id: id.to_owned(),
            exit,
        };
        let line = serde_json::to_vec(&event).expect("events serialize");
        self.clients.retain_mut(|client| {
            !client.subscribed || send_line(&mut client.stream, &line).is_ok()
        });
    }

    /// Reads what a client sent and answers each complete request. False: drop the client.
    #[inline(never)]
    fn serve_client(&mut self, i: usize) -> bool {
        let mut chunk = [0u8; READ_CHUNK];
        match self.clients[i].stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => self.clients[i].buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(_) => return false,
        }
        while let Some(end) = self.clients[i].buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.clients[i].buf.drain(..=end).collect();
            let response = match serde_json::from_slice::<Request>(&line) {
                Ok(Request::Subscribe) => {
                    self.clients[i].subscribed = true;
                    self.state()
                }
                Ok(request) => self.handle(request),
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                },
            };
            let line = serde_json::to_vec(&response).expect("responses serialize");
            if send_line(&mut self.clients[i].stream, &line).is_err() {
                return false;
            }
        }
        true
    }

    fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Start {
                name,
                attempt,
                spec,
                log_path,
                oom_files,
            } => match self.start(name, attempt, &spec, &log_path, oom_files) {
                Ok(state) => Response::Started {
                    pid: state.0,
                    started_at: state.1,
                },
                Err(message) => Response::Error { message },
            },
            Request::Kill { id, signal: signo } => {
                let Some(c) = self.containers.get(&id) else {
                    return Response::Error {
                        message: format!("container {id} not found"),
                    };
                };
                if c.state.exit.is_some() {
                    return Response::Ok;
                }
                let sig = match Signal::try_from(signo) {
                    Ok(s) => s,
                    Err(e) => {
                        return Response::Error {
                            message: format!("signal {signo}: {e}"),
                        }
                    }
                };
                // pidfd_send_signal would be exact; the pid is ours and unreaped, so it can't
                // have been reused.
                match signal::kill(Pid::from_raw(c.state.pid), sig) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => Response::Ok,
                    Err(e) => Response::Error {
                        message: format!("kill {id}: {e}"),
                    },
                }
            }
            Request::Remove { id } => match self.containers.get(&id) {
                Some(c) if c.state.exit.is_none() => Response::Error {
                    message: format!("container {id} is running"),
                },
                _ => {
                    self.containers.remove(&id);
                    Response::Ok
                }
            },
            Request::State | Request::Subscribe => self.state(),
            Request::Shutdown => {
                self.shutting_down = true;
                Response::Ok
            }
        }
    }

    fn state(&self) -> Response {
        Response::State {
            pid: std::process::id() as i32,
            containers: self.containers.values().map(|c| c.state.clone()).collect(),
        }
    }

    fn start(
        &mut self,
        name: String,
        attempt: u32,
        spec: &runtime::ContainerSpec,
        log_path: &Path,
        oom_files: Vec<PathBuf>,
    ) -> Result<(i32, String), String> {
        if self.shutting_down {
            return Err("the pod is shutting down".into());
        }
        if self
            .containers
            .get(&spec.id)
            .is_some_and(|c| c.state.exit.is_none())
        {
            return Err(format!("container {} is already running", spec.id));
        }
        let log = LogWriter::open(log_path, LOG_MAX_SIZE, LOG_MAX_FILES)
            .map_err(|e| format!("opening log {}: {e}", log_path.display()))?;
        let oom_before = oom_kills(&oom_files);
        let (io, outputs) = if spec.tty {
            (ContainerIo::Tty, Vec::new())
        } else {
            let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            let io = ContainerIo::Pipes(Stdio {
                stdin: None,
                stdout: out_w,
                stderr: err_w,
            });
            (io, vec![(Stream::Stdout, out_r), (Stream::Stderr, err_r)])
        };
        let started = runtime::spawn(spec, io).map_err(|e| e.to_string())?;
        let mut outputs = outputs;
        if let Some(master) = started.pty_master {
            outputs.push((Stream::Stdout, master));
        }
        for (stream, fd) in outputs {
            set_nonblocking(fd.as_fd());
            self.outputs.push(Output {
                id: spec.id.clone(),
                stream,
                fd,
            });
        }
        self.logs.insert(spec.id.clone(), log);
        let started_at = now();
        let pid = started.pid.as_raw();
        let state = ContainerState {
            id: spec.id.clone(),
            name,
            attempt,
            pid,
            started_at: started_at.clone(),
            exit: None,
        };
        self.containers.insert(
            spec.id.clone(),
            Container {
                state,
                pidfd: Some(started.pidfd),
                oom_files,
                oom_before,
            },
        );
        // The spawn path is most of what a shim ever touches: dropped before answering too, as
        // the kubelet may report the pod started (and someone read this shim's VmRSS) before the
        // trim ahead of the next poll gets a CPU.
        let _ = self.trimmer.trim();
        Ok((pid, started_at))
    }
}

fn send_line(stream: &mut UnixStream, line: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    stream.write_all(&buf)
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd, FcntlArg::F_SETFL(flags));
    }
}

/// The `oom_kill` counters of a container's cgroups (v2 memory.events, v1 memory.oom_control);
/// unreadable files count zero.
pub(super) fn oom_kills(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|path| std::fs::File::open(path).ok())
        .flat_map(|f| {
            io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| {
            line.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

pub(super) fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_requests_at_once_and_after_output_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s.sock")).unwrap();
        let mut server = Server::new(listener);
        let start = server.last_trim;
        let millis = |t: PollTimeout| i32::from(t);
        // The first poll trims what starting up touched; then nothing is due.
        assert_eq!(server.trim_schedule(start), (true, PollTimeout::NONE));
        assert_eq!(server.trim_schedule(start), (false, PollTimeout::NONE));
        // Output: the trim waits for the interval, and poll wakes up for it.
        server.output_since_trim = true;
        let (trim, timeout) = server.trim_schedule(start + Duration::from_millis(100));
        assert!(!trim);
        assert!((900..=902).contains(&millis(timeout)), "{timeout:?}");
        assert_eq!(
            server.trim_schedule(start + OUTPUT_TRIM_INTERVAL),
            (true, PollTimeout::NONE)
        );
        // A request is followed by a trim at once, output or not.
        server.output_since_trim = true;
        server.trim_pending = true;
        let later = start + OUTPUT_TRIM_INTERVAL + Duration::from_millis(1);
        assert_eq!(server.trim_schedule(later), (true, PollTimeout::NONE));
        assert!(!server.output_since_trim);
    }

    #[test]
    fn oom_counters_from_v1_and_v2_files() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("memory.events");
        std::fs::write(
            &v2,
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        let v1 = dir.path().join("memory.oom_control");
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills(std::slice::from_ref(&v2)), 2);
        assert_eq!(oom_kills(&[v2, v1, dir.path().join("missing")]), 3);
    }
}
