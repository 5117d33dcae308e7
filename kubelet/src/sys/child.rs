//! The container's first process between `clone3` and `execve`: it executes a prepared
//! [`ChildPlan`] with raw syscalls only — no allocation, no locks, no panics — because it is a
//! copy of a parent that may have had other threads holding the allocator's or stdio's locks.
//! A failure goes back to the parent as `[kind, step, index, errno]` on the channel socket.

use std::convert::Infallible;
use std::ffi::{c_int, CStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;

use super::raw::{self, SysResult};
use crate::runtime::inroot::InRootPath;
use crate::runtime::plan::{
    ChildPlan, Creds, IoPlan, MountOp, MountPlan, RootfsPlan, Step, DEV_LINKS, DEV_MOUNTS,
    DEV_NODES, DEV_TMPFS_DATA, DEV_TMPFS_FLAGS,
};

/// Message kinds on the channel, child → parent.
pub(crate) const MSG_ERROR: u32 = 1;
pub(crate) const MSG_PTY: u32 = 2;
pub(crate) const MSG_LEN: usize = 16;

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// How to clone: namespace flags (CLONE_NEWNS, CLONE_NEWPID) and the cgroup v2 directory to
/// start in.
pub(crate) struct CloneRequest {
    pub namespaces: u64,
    pub cgroup: Option<RawFd>,
}

/// Clones the child (fork semantics: a copy of the address space on the same stack) and runs
/// `plan` in it; returns the child's pid and pidfd in the parent.
pub(crate) fn start(
    plan: &ChildPlan,
    chan: RawFd,
    req: &CloneRequest,
) -> SysResult<(Pid, OwnedFd)> {
    let mut pidfd: c_int = -1;
    let mut args = CloneArgs {
        flags: req.namespaces | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = req.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed. With no stack given, clone3
    // behaves like fork: the child gets a private copy of this thread's memory and stack and
    // returns here with 0. The child then runs only `child_main`, which never returns, never
    // allocates and makes only raw syscalls, so no lock held by another parent thread matters.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    match ret {
        0 => child_main(plan, chan),
        r if r < 0 => Err(Errno::last()),
        pid => {
            // SAFETY: with CLONE_PIDFD the kernel stored a new, owned pidfd for the child.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok((Pid::from_raw(pid as i32), pidfd))
        }
    }
}

struct Fail {
    step: Step,
    index: u32,
    errno: Errno,
}

trait At<T> {
    fn at(self, step: Step, index: usize) -> Result<T, Fail>;
}

impl<T> At<T> for SysResult<T> {
    fn at(self, step: Step, index: usize) -> Result<T, Fail> {
        self.map_err(|errno| Fail {
            step,
            index: index as u32,
            errno,
        })
    }
}

fn child_main(plan: &ChildPlan, chan: RawFd) -> ! {
    let fail = match run(plan, chan) {
        Ok(never) => match never {},
        Err(fail) => fail,
    };
    let mut msg = [0u8; MSG_LEN];
    for (i, v) in [
        MSG_ERROR,
        fail.step as u32,
        fail.index,
        fail.errno as i32 as u32,
    ]
    .into_iter()
    .enumerate()
    {
        msg[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let _ = raw::send(chan, &msg);
    raw::exit(127)
}

fn run(plan: &ChildPlan, chan: RawFd) -> Result<Infallible, Fail> {
    if plan.wait_release {
        let mut go = [0u8; 1];
        match raw::read(chan, &mut go).at(Step::Release, 0)? {
            1 => {}
            _ => {
                return Err(Fail {
                    step: Step::Release,
                    index: 0,
                    errno: Errno::EPIPE,
                })
            }
        }
    }
    raw::reset_signals().at(Step::Signals, 0)?;
    for (i, ns) in plan.join.iter().enumerate() {
        raw::setns(ns.fd.as_raw_fd(), ns.nstype).at(Step::Setns, i)?;
    }
    if let Some(rootfs) = &plan.rootfs {
        raw::umask(0);
        setup_rootfs(rootfs)?;
    }
    setup_io(&plan.io, chan)?;
    oom_score_adj(plan).at(Step::OomScoreAdj, 0)?;
    raw::chdir(&plan.cwd).at(Step::Cwd, 0)?;
    let seccomp = plan.seccomp.as_deref();
    if let (false, Some(program)) = (plan.no_new_privs, seccomp) {
        // Without no_new_privs, loading a filter takes CAP_SYS_ADMIN: load it while we have it.
        // Everything after this point is allowed by RuntimeDefault.
        raw::seccomp_set_filter(program).at(Step::Seccomp, 0)?;
    }
    credentials(&plan.creds)?;
    if plan.no_new_privs {
        raw::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).at(Step::NoNewPrivs, 0)?;
        if let Some(program) = seccomp {
            raw::seccomp_set_filter(program).at(Step::Seccomp, 0)?;
        }
    }
    raw::close_range(3, u32::MAX, raw::CLOSE_RANGE_CLOEXEC).at(Step::CloseFds, 0)?;
    raw::umask(0o022);
    Err(exec(plan))
}

fn exec(plan: &ChildPlan) -> Fail {
    let e = &plan.exec;
    let mut denied = false;
    for (i, candidate) in e.candidates.iter().enumerate() {
        match raw::execve(candidate, &e.argv, &e.envp) {
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES => denied = true,
            errno => {
                return Fail {
                    step: Step::Exec,
                    index: i as u32,
                    errno,
                }
            }
        }
    }
    match (denied, e.searched) {
        (true, _) => Fail {
            step: Step::Exec,
            index: 0,
            errno: Errno::EACCES,
        },
        (false, true) => Fail {
            step: Step::ExecNotFound,
            index: 0,
            errno: Errno::ENOENT,
        },
        (false, false) => Fail {
            step: Step::Exec,
            index: 0,
            errno: Errno::ENOENT,
        },
    }
}

fn oom_score_adj(plan: &ChildPlan) -> SysResult<()> {
    let fd = raw::openat(
        libc::AT_FDCWD,
        c"/proc/self/oom_score_adj",
        libc::O_WRONLY | libc::O_CLOEXEC,
        0,
    )?;
    let r = raw::write_all(fd, plan.oom_score_adj.as_bytes());
    raw::close(fd);
    r
}

fn credentials(c: &Creds) -> Result<(), Fail> {
    if c.uid != 0 {
        // Permitted capabilities survive the switch away from uid 0; effective are re-raised below.
        raw::prctl(libc::PR_SET_KEEPCAPS, 1).at(Step::Capabilities, 0)?;
    }
    for cap in &c.bounding_drops {
        raw::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(*cap))
            .at(Step::Bounding, *cap as usize)?;
    }
    raw::setgroups(&c.groups).at(Step::Groups, 0)?;
    raw::setresgid(c.gid).at(Step::Gid, 0)?;
    raw::setresuid(c.uid).at(Step::Uid, 0)?;
    // Inheritable stays empty, as in runc/containerd since CVE-2022-24769.
    raw::capset(c.caps, c.caps, 0).at(Step::Capabilities, 1)
}

fn setup_io(io: &IoPlan, chan: RawFd) -> Result<(), Fail> {
    match io {
        IoPlan::Pipes(fds) => {
            let mut src = *fds;
            // A source already sitting on 0..2 would be overwritten by an earlier dup3.
            for (i, fd) in src.iter_mut().enumerate() {
                if *fd < 3 && *fd != i as RawFd {
                    *fd = raw::dup_above(*fd, 3).at(Step::Stdio, i)?;
                }
            }
            for (i, fd) in src.into_iter().enumerate() {
                let target = i as RawFd;
                if fd == target {
                    raw::clear_cloexec(fd)
                } else {
                    raw::dup3(fd, target)
                }
                .at(Step::Stdio, i)?;
            }
            Ok(())
        }
        IoPlan::Tty { uid } => {
            let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
            let master = raw::openat(libc::AT_FDCWD, c"/dev/ptmx", flags, 0).at(Step::Tty, 0)?;
            raw::ioctl_unlockpt(master).at(Step::Tty, 1)?;
            let peer = libc::c_long::from(libc::O_RDWR | libc::O_NOCTTY);
            let slave = raw::ioctl_int(master, libc::TIOCGPTPEER as libc::c_ulong, peer)
                .at(Step::Tty, 2)? as RawFd;
            raw::fchown(slave, *uid, u32::MAX).at(Step::Tty, 3)?;
            let mut msg = [0u8; MSG_LEN];
            msg[..4].copy_from_slice(&MSG_PTY.to_ne_bytes());
            raw::send_with_fd(chan, &msg, master).at(Step::Tty, 4)?;
            raw::close(master);
            raw::setsid().at(Step::Tty, 5)?;
            raw::ioctl_int(slave, libc::TIOCSCTTY as libc::c_ulong, 0).at(Step::Tty, 6)?;
            for target in 0..3 {
                raw::dup3(slave, target).at(Step::Stdio, target as usize)?;
            }
            if slave > 2 {
                raw::close(slave);
            }
            Ok(())
        }
    }
}

const RESOLVE: u64 = raw::RESOLVE_IN_ROOT | raw::RESOLVE_NO_MAGICLINKS;

fn setup_rootfs(r: &RootfsPlan) -> Result<(), Fail> {
    // Nothing done below may propagate back to the host.
    raw::mount(None, c"/", None, libc::MS_SLAVE | libc::MS_REC, None).at(Step::Propagation, 0)?;
    let root = mount_overlay(r)?;
    for (i, m) in r.mounts.iter().enumerate() {
        let fd = resolve(root, &m.dest, m.file).at(Step::MountPoint, i)?;
        let res = mount_one(root, fd, m);
        raw::close(fd);
        res.map_err(|mut f| {
            if f.step == Step::Mount {
                f.index = i as u32;
            }
            f
        })?;
    }
    // The working directory is created as root while the root is still writable, like runc.
    let cwd = resolve(root, &r.cwd, false).at(Step::Cwd, 0)?;
    raw::close(cwd);

    raw::fchdir(root).at(Step::Pivot, 0)?;
    raw::pivot_root(c".", c".").at(Step::Pivot, 1)?;
    raw::umount2(c".", libc::MNT_DETACH).at(Step::Pivot, 2)?;
    raw::chdir(c"/").at(Step::Pivot, 3)?;
    raw::close(root);

    for (i, path) in r.masked.iter().enumerate() {
        match raw::mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR) => {
                raw::mount(Some(c"tmpfs"), path, Some(c"tmpfs"), libc::MS_RDONLY, None)
                    .at(Step::MaskPath, i)?
            }
            Err(e) => {
                return Err(Fail {
                    step: Step::MaskPath,
                    index: i as u32,
                    errno: e,
                })
            }
        }
    }
    for (i, path) in r.readonly.iter().enumerate() {
        match raw::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None) {
            Err(Errno::ENOENT) => continue,
            other => other.at(Step::ReadonlyPath, i)?,
        }
        let flags = libc::AT_RECURSIVE as u32;
        raw::mount_setattr(libc::AT_FDCWD, path, flags, raw::MOUNT_ATTR_RDONLY)
            .at(Step::ReadonlyPath, i)?;
    }
    if r.readonly_root {
        raw::mount_setattr(libc::AT_FDCWD, c"/", 0, raw::MOUNT_ATTR_RDONLY)
            .at(Step::ReadonlyRoot, 0)?;
    }
    Ok(())
}

/// Mounts the overlay at the target and returns an fd on its root.
fn mount_overlay(r: &RootfsPlan) -> Result<RawFd, Fail> {
    let dir = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let o = &r.overlay;
    if let Some(data) = &o.data {
        raw::mount(Some(c"overlay"), &r.target, Some(c"overlay"), 0, Some(data))
            .at(Step::Overlay, 0)?;
        return raw::openat(libc::AT_FDCWD, &r.target, dir, 0).at(Step::OpenRoot, 0);
    }
    // Too many layers for one page of options: one `lowerdir+` per layer (Linux 6.8+).
    let fs = raw::fsopen(c"overlay").at(Step::Overlay, 1)?;
    let configured = o
        .lowers
        .iter()
        .try_for_each(|l| raw::fsconfig_string(fs, c"lowerdir+", l))
        .and_then(|()| raw::fsconfig_string(fs, c"upperdir", &o.upper))
        .and_then(|()| raw::fsconfig_string(fs, c"workdir", &o.work))
        .and_then(|()| raw::fsconfig_create(fs))
        .and_then(|()| raw::fsmount(fs, 0));
    raw::close(fs);
    let mnt = configured.at(Step::Overlay, 2)?;
    let target = raw::openat(libc::AT_FDCWD, &r.target, dir, 0).at(Step::OpenRoot, 0)?;
    let moved = raw::move_mount_fd(mnt, target);
    raw::close(target);
    moved.at(Step::Overlay, 3)?;
    Ok(mnt)
}

/// Resolves `dest` inside `root` and returns an fd on it, creating what is missing one
/// component at a time under an already resolved parent (never following a symlink out).
fn resolve(root: RawFd, dest: &InRootPath, file: bool) -> SysResult<RawFd> {
    let path_flags = libc::O_PATH | libc::O_CLOEXEC;
    match raw::openat2(root, &dest.rel, path_flags, 0, RESOLVE) {
        Err(Errno::ENOENT) => {}
        other => return other,
    }
    let last = dest.names.len().saturating_sub(1);
    let mut parent = root;
    for (k, (prefix, name)) in dest.prefixes.iter().zip(&dest.names).enumerate() {
        let found = if k == last && file {
            let create = libc::O_RDONLY | libc::O_CREAT | libc::O_NOCTTY | libc::O_CLOEXEC;
            raw::openat2(root, prefix, create, 0o644, RESOLVE)
        } else {
            let dir = path_flags | libc::O_DIRECTORY;
            match raw::openat2(root, prefix, dir, 0, RESOLVE) {
                Err(Errno::ENOENT) => match raw::mkdirat(parent, name, 0o755) {
                    Ok(()) | Err(Errno::EEXIST) => raw::openat2(root, prefix, dir, 0, RESOLVE),
                    Err(e) => Err(e),
                },
                other => other,
            }
        };
        if parent != root {
            raw::close(parent);
        }
        parent = found?;
    }
    Ok(parent)
}

fn mount_one(root: RawFd, fd: RawFd, m: &MountPlan) -> Result<(), Fail> {
    let mut buf = [0u8; 96];
    let target = raw::proc_fd_path(&mut buf, fd, b"").at(Step::Mount, 0)?;
    match &m.op {
        MountOp::Fs {
            fstype,
            source,
            flags,
            data,
        } => raw::mount(Some(source), target, Some(fstype), *flags, data.as_deref())
            .at(Step::Mount, 0),
        MountOp::Bind {
            source,
            readonly: false,
        } => raw::mount(
            Some(source),
            target,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .at(Step::Mount, 0),
        MountOp::Bind {
            source,
            readonly: true,
        } => readonly_bind(source, fd).at(Step::Mount, 0),
        MountOp::Sysfs => {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
            match raw::mount(Some(c"sysfs"), target, Some(c"sysfs"), flags, None) {
                // Not allowed to instantiate sysfs here (no own network namespace under a user
                // namespace): show the host's, read-only.
                Err(Errno::EPERM | Errno::EBUSY) => readonly_bind(c"/sys", fd).at(Step::Mount, 0),
                other => other.at(Step::Mount, 0),
            }
        }
        MountOp::Dev => {
            raw::mount(
                Some(c"tmpfs"),
                target,
                Some(c"tmpfs"),
                DEV_TMPFS_FLAGS,
                Some(DEV_TMPFS_DATA),
            )
            .at(Step::Mount, 0)?;
            // Reopen: `fd` is the directory under the new tmpfs, not its root.
            let dev = resolve(root, &m.dest, false).at(Step::Mount, 0)?;
            let res = populate_dev(dev);
            raw::close(dev);
            res
        }
    }
}

fn readonly_bind(source: &CStr, target: RawFd) -> SysResult<()> {
    let tree = raw::open_tree_clone(source)?;
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as u32;
    let res = raw::mount_setattr(tree, c"", flags, raw::MOUNT_ATTR_RDONLY)
        .and_then(|()| raw::move_mount_fd(tree, target));
    raw::close(tree);
    res
}

fn populate_dev(dev: RawFd) -> Result<(), Fail> {
    for (i, (name, major, minor)) in DEV_NODES.iter().enumerate() {
        raw::mknodat(dev, name, libc::S_IFCHR | 0o666, *major, *minor).at(Step::DevNode, i)?;
    }
    for (i, (name, target)) in DEV_LINKS.iter().enumerate() {
        raw::symlinkat(target, dev, name).at(Step::DevNode, DEV_NODES.len() + i)?;
    }
    for (i, (name, fstype, flags, data)) in DEV_MOUNTS.iter().enumerate() {
        let index = DEV_NODES.len() + DEV_LINKS.len() + i;
        raw::mkdirat(dev, name, 0o755).at(Step::DevNode, index)?;
        let mut buf = [0u8; 96];
        let target = raw::proc_fd_path(&mut buf, dev, name.to_bytes()).at(Step::DevNode, index)?;
        let data = if data.is_empty() { None } else { Some(*data) };
        raw::mount(Some(fstype), target, Some(fstype), *flags, data).at(Step::DevNode, index)?;
    }
    Ok(())
}

/// What the parent reads from the channel.
#[derive(Debug)]
pub(crate) enum Report {
    /// End of file: the child exec'd (the channel is close-on-exec) or died without a word.
    Closed,
    /// The master side of the container's pty.
    Pty(OwnedFd),
    Failed {
        step: u32,
        index: u32,
        errno: Errno,
    },
}

/// Reads one message from the child (parent side).
pub(crate) fn recv_report(chan: RawFd) -> nix::Result<Report> {
    use std::io::IoSliceMut;

    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

    let mut msg = [0u8; MSG_LEN];
    let mut cmsg = nix::cmsg_space!(RawFd);
    let (bytes, passed) = loop {
        let mut iov = [IoSliceMut::new(&mut msg)];
        match recvmsg::<()>(chan, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(r) => {
                let mut passed = None;
                for c in r.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for fd in fds {
                            // SAFETY: SCM_RIGHTS installed this fd in our table just now; we
                            // are its only owner.
                            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                            passed.get_or_insert(owned);
                        }
                    }
                }
                break (r.bytes, passed);
            }
        }
    };
    let word =
        |i: usize| u32::from_ne_bytes([msg[4 * i], msg[4 * i + 1], msg[4 * i + 2], msg[4 * i + 3]]);
    match (bytes, word(0), passed) {
        (0, _, _) => Ok(Report::Closed),
        (MSG_LEN, MSG_PTY, Some(fd)) => Ok(Report::Pty(fd)),
        (MSG_LEN, MSG_ERROR, _) => Ok(Report::Failed {
            step: word(1),
            index: word(2),
            errno: Errno::from_raw(word(3) as i32),
        }),
        _ => Err(Errno::EBADMSG),
    }
}
