//! The parent's side of starting a container's process: prepare the plan, clone, place it in
//! its cgroup v1 hierarchies, and wait until it has exec'd or said why it could not.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::plan::{self, ChildPlan, Host, IoPlan, JoinNs, Step, DEV_LINKS, DEV_MOUNTS, DEV_NODES};
use super::spec::ContainerSpec;
use super::{caps, RuntimeError};
use crate::sys::child::{self, CloneRequest, Report};
use crate::sys::raw;

/// The container's standard streams; `stdin: None` is /dev/null.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

#[derive(Debug)]
pub enum ContainerIo {
    Pipes(Stdio),
    /// A pty allocated in the container's own devpts; its slave is the process's stdio and
    /// controlling terminal, its master comes back in [`Started::pty_master`].
    Tty,
}

#[derive(Debug)]
pub struct Started {
    /// In the caller's PID namespace.
    pub pid: Pid,
    pub pidfd: OwnedFd,
    pub pty_master: Option<OwnedFd>,
}

/// Creates the container's process: clone3 with CLONE_NEWNS|CLONE_NEWPID (or joins
/// `spec.pid_namespace`), CLONE_PIDFD, and CLONE_INTO_CGROUP when `spec.cgroup.unified` is set;
/// for v1 the pid goes into each `cgroup.procs` before the child may continue. Returns once
/// the child has exec'd, or with the step, path and errno it failed at.
pub fn spawn(spec: &ContainerSpec, io: ContainerIo) -> Result<Started, RuntimeError> {
    spawn_in(Path::new("/proc"), spec, io)
}

/// `kubectl exec`: a new process in a running container's namespaces (mnt, pid, net, ipc,
/// uts from `/proc/<pid>/ns`), its cgroup and root, with the spec's user, capabilities,
/// no_new_privs and seccomp.
pub fn exec_in(
    container_pid: Pid,
    spec: &ContainerSpec,
    args: &[String],
    io: ContainerIo,
) -> Result<Started, RuntimeError> {
    exec_in_with(Path::new("/proc"), container_pid, spec, args, io)
}

fn host(proc_root: &Path) -> Result<Host, RuntimeError> {
    static HOST: OnceLock<Host> = OnceLock::new();
    if let Some(h) = HOST.get() {
        return Ok(*h);
    }
    let h = Host {
        last_cap: caps::last_cap(proc_root)?,
        current_caps: caps::current(proc_root)?,
    };
    Ok(*HOST.get_or_init(|| h))
}

fn open(op: &'static str, path: &Path) -> Result<OwnedFd, RuntimeError> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| RuntimeError::Host {
            op,
            path: path.to_owned(),
            source,
        })
}

/// The plan's view of `io`, and the fds that must stay open until the child has them.
fn io_plan(io: ContainerIo, uid: u32) -> Result<(IoPlan, Vec<OwnedFd>), RuntimeError> {
    match io {
        ContainerIo::Tty => Ok((IoPlan::Tty { uid }, Vec::new())),
        ContainerIo::Pipes(s) => {
            let stdin = match s.stdin {
                Some(fd) => fd,
                None => open("open", Path::new("/dev/null"))?,
            };
            let fds = [
                stdin.as_raw_fd(),
                s.stdout.as_raw_fd(),
                s.stderr.as_raw_fd(),
            ];
            Ok((IoPlan::Pipes(fds), vec![stdin, s.stdout, s.stderr]))
        }
    }
}

/// Switches this thread's `pid_for_children` while the child is cloned, and back on drop.
struct PidNsGuard {
    original: OwnedFd,
}

impl PidNsGuard {
    fn enter(proc_root: &Path, target: &OwnedFd) -> Result<Self, RuntimeError> {
        let original = open("open", &proc_root.join("thread-self/ns/pid_for_children"))?;
        nix::sched::setns(target, CloneFlags::CLONE_NEWPID).map_err(|source| {
            RuntimeError::Sys {
                op: "setns to the shared pid namespace",
                source,
            }
        })?;
        Ok(Self { original })
    }
}

impl Drop for PidNsGuard {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.original, CloneFlags::CLONE_NEWPID) {
            tracing::error!(error = %e, "cannot restore this thread's pid namespace for children");
        }
    }
}

fn spawn_in(
    proc_root: &Path,
    spec: &ContainerSpec,
    io: ContainerIo,
) -> Result<Started, RuntimeError> {
    let host = host(proc_root)?;
    let (io, keep) = io_plan(io, spec.user.uid)?;
    let plan = plan::build(spec, &spec.args, true, io, host)?;
    for dir in [&spec.rootfs.target, &spec.rootfs.upper, &spec.rootfs.work] {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Host {
            op: "create",
            path: dir.clone(),
            source,
        })?;
    }
    let pidns = spec
        .pid_namespace
        .as_deref()
        .map(|p| open("open", p))
        .transpose()?;
    let mut namespaces = CloneFlags::CLONE_NEWNS.bits() as u64;
    if pidns.is_none() {
        namespaces |= CloneFlags::CLONE_NEWPID.bits() as u64;
    }
    launch(proc_root, &plan, spec, namespaces, pidns.as_ref(), keep)
}

fn exec_in_with(
    proc_root: &Path,
    container_pid: Pid,
    spec: &ContainerSpec,
    args: &[String],
    io: ContainerIo,
) -> Result<Started, RuntimeError> {
    let host = host(proc_root)?;
    let (io, keep) = io_plan(io, spec.user.uid)?;
    let mut plan = plan::build(spec, args, false, io, host)?;
    let ns_dir = proc_root.join(container_pid.to_string()).join("ns");
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        // Last: once in the container's mounts, the child's root and cwd are the container's.
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let fd = open("open", &ns_dir.join(name))?;
        plan.join.push(JoinNs {
            name,
            fd,
            nstype: flag.bits(),
        });
    }
    let pidns = open("open", &ns_dir.join("pid"))?;
    launch(proc_root, &plan, spec, 0, Some(&pidns), keep)
}

fn launch(
    proc_root: &Path,
    plan: &ChildPlan,
    spec: &ContainerSpec,
    namespaces: u64,
    pidns: Option<&OwnedFd>,
    keep: Vec<OwnedFd>,
) -> Result<Started, RuntimeError> {
    let cgroup = spec
        .cgroup
        .unified
        .as_deref()
        .map(|p| open("open cgroup", p))
        .transpose()?;
    let (chan, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| RuntimeError::Sys {
        op: "socketpair",
        source,
    })?;
    let request = CloneRequest {
        namespaces,
        cgroup: cgroup.as_ref().map(AsRawFd::as_raw_fd),
    };
    let (pid, pidfd) = {
        let _guard = pidns
            .map(|ns| PidNsGuard::enter(proc_root, ns))
            .transpose()?;
        child::start(plan, child_end.as_raw_fd(), &request).map_err(|source| RuntimeError::Sys {
            op: "clone3 the container process",
            source,
        })?
    };
    // The child holds its own copies now; ours would keep the channel from reaching EOF.
    drop((child_end, keep, cgroup));

    let abort = |err: RuntimeError| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
        err
    };
    if plan.wait_release {
        for dir in &spec.cgroup.v1 {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, pid.as_raw().to_string()).map_err(|source| {
                abort(RuntimeError::Host {
                    op: "write",
                    path: procs,
                    source,
                })
            })?;
        }
        raw::send(chan.as_raw_fd(), &[1]).map_err(|source| {
            abort(RuntimeError::Sys {
                op: "release child",
                source,
            })
        })?;
    }
    let mut pty_master = None;
    loop {
        match child::recv_report(chan.as_raw_fd()) {
            Ok(Report::Closed) => {
                return Ok(Started {
                    pid,
                    pidfd,
                    pty_master,
                })
            }
            Ok(Report::Pty(fd)) => pty_master = Some(fd),
            Ok(Report::Failed { step, index, errno }) => {
                let _ = waitpid(pid, None);
                return Err(describe(plan, spec, step, index, errno));
            }
            Err(source) => {
                return Err(abort(RuntimeError::Sys {
                    op: "read from container process",
                    source,
                }))
            }
        }
    }
}

fn at<T: AsRef<[u8]>>(list: &[T], index: u32) -> String {
    list.get(index as usize)
        .map(|c| String::from_utf8_lossy(c.as_ref()).into_owned())
        .unwrap_or_default()
}

/// The child's report as an error naming the step and the path it concerned.
fn describe(
    plan: &ChildPlan,
    spec: &ContainerSpec,
    step: u32,
    index: u32,
    errno: Errno,
) -> RuntimeError {
    let Some(step) = Step::from_u32(step) else {
        return RuntimeError::Sys {
            op: "container setup (unknown step)",
            source: errno,
        };
    };
    let rootfs = plan.rootfs.as_ref();
    let target = || spec.rootfs.target.display().to_string();
    let (what, path): (&'static str, String) = match step {
        Step::Release => ("wait for the parent", String::new()),
        Step::Setns => (
            "setns",
            plan.join
                .get(index as usize)
                .map(|j| j.name.to_string())
                .unwrap_or_default(),
        ),
        Step::Propagation => ("make mounts rslave", "/".into()),
        Step::Overlay => ("mount overlay on", target()),
        Step::OpenRoot => ("open", target()),
        Step::MountPoint | Step::Mount => {
            let what = if step == Step::Mount {
                "mount"
            } else {
                "create mount point"
            };
            let dest = rootfs
                .and_then(|r| r.mounts.get(index as usize))
                .map(|m| m.dest.display());
            (what, dest.unwrap_or_default())
        }
        Step::DevNode => {
            let names = DEV_NODES
                .iter()
                .map(|n| n.0)
                .chain(DEV_LINKS.iter().map(|l| l.0))
                .chain(DEV_MOUNTS.iter().map(|m| m.0));
            let name = names
                .clone()
                .nth(index as usize)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ("create", format!("/dev/{name}"))
        }
        Step::Pivot => ("pivot_root into", target()),
        Step::Cwd => ("create or enter working directory", spec.cwd.clone()),
        Step::MaskPath => ("mask", at(&spec.masked_paths, index)),
        Step::ReadonlyPath => ("make read-only", at(&spec.readonly_paths, index)),
        Step::ReadonlyRoot => ("make read-only", "/".into()),
        Step::Tty => ("allocate a pty from", "/dev/ptmx".into()),
        Step::Stdio => ("set up stdio fd", index.to_string()),
        Step::Signals => ("reset signals", String::new()),
        Step::OomScoreAdj => ("write", "/proc/self/oom_score_adj".into()),
        Step::Seccomp => ("load seccomp filter", String::new()),
        Step::Bounding => ("drop from the bounding set capability", index.to_string()),
        Step::Groups => ("setgroups", format!("{:?}", spec.user.additional_gids)),
        Step::Gid => ("setresgid", spec.user.gid.to_string()),
        Step::Uid => ("setresuid", spec.user.uid.to_string()),
        Step::Capabilities => ("set capabilities", String::new()),
        Step::NoNewPrivs => ("set no_new_privs", String::new()),
        Step::CloseFds => ("close inherited fds", String::new()),
        Step::Exec => {
            let program = plan
                .exec
                .candidates
                .get(index as usize)
                .map(|c| c.to_string_lossy().into_owned());
            return RuntimeError::Exec {
                program: program.unwrap_or_else(|| plan.exec.program.clone()),
                source: errno,
            };
        }
        Step::ExecNotFound => {
            return RuntimeError::NotFound {
                program: plan.exec.program.clone(),
            }
        }
    };
    RuntimeError::Setup {
        step: what,
        path,
        source: errno,
    }
}
