//! Allocation-free wrappers over the raw syscalls a container's first process makes between
//! `clone3` and `execve`. They run in a child cloned from a possibly multi-threaded parent, so
//! they must not allocate, lock, or go through glibc wrappers that keep process-wide state
//! (`setuid` and friends broadcast to every thread glibc believes exists: raw syscalls here).

use std::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr};
use std::os::fd::RawFd;
use std::ptr;

use nix::errno::Errno;

pub(crate) type SysResult<T> = Result<T, Errno>;

/// The one place raw return codes become `Result`s.
fn check(ret: c_long) -> SysResult<c_long> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_fd(ret: c_long) -> SysResult<RawFd> {
    check(ret).map(|fd| fd as RawFd)
}

fn opt_ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(ptr::null(), CStr::as_ptr)
}

// New mount API and openat2 constants (uapi linux/mount.h, linux/openat2.h).
pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub(crate) const RESOLVE_IN_ROOT: u64 = 0x10;
pub(crate) const FSCONFIG_SET_STRING: c_uint = 1;
pub(crate) const FSCONFIG_CMD_CREATE: c_uint = 6;
pub(crate) const FSOPEN_CLOEXEC: c_uint = 1;
pub(crate) const FSMOUNT_CLOEXEC: c_uint = 1;
pub(crate) const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x04;
pub(crate) const MOVE_MOUNT_T_EMPTY_PATH: c_uint = 0x40;
pub(crate) const OPEN_TREE_CLONE: c_uint = 1;
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const CLOSE_RANGE_CLOEXEC: c_uint = 1 << 2;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub(crate) fn openat2(
    dirfd: RawFd,
    path: &CStr,
    flags: c_int,
    mode: u32,
    resolve: u64,
) -> SysResult<RawFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: flags as u64,
        mode: u64::from(mode),
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` (struct open_how) lives across the call.
    check_fd(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const OpenHow,
            size_of::<OpenHow>(),
        )
    })
}

pub(crate) fn openat(dirfd: RawFd, path: &CStr, flags: c_int, mode: u32) -> SysResult<RawFd> {
    // SAFETY: `path` is NUL-terminated; openat has no other memory arguments.
    check_fd(unsafe { libc::syscall(libc::SYS_openat, dirfd, path.as_ptr(), flags, mode) })
}

pub(crate) fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it afterwards; errors from close are moot here.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

pub(crate) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: u64,
    data: Option<&CStr>,
) -> SysResult<()> {
    // SAFETY: every pointer is NUL-terminated or null, as mount(2) accepts.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount,
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags as libc::c_ulong,
            opt_ptr(data) as *const c_void,
        )
    })
    .map(drop)
}

pub(crate) fn umount2(target: &CStr, flags: c_int) -> SysResult<()> {
    // SAFETY: `target` is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_umount2, target.as_ptr(), flags) }).map(drop)
}

pub(crate) fn pivot_root(new_root: &CStr, put_old: &CStr) -> SysResult<()> {
    // SAFETY: both paths are NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

pub(crate) fn fsopen(fstype: &CStr) -> SysResult<RawFd> {
    // SAFETY: `fstype` is NUL-terminated.
    check_fd(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

pub(crate) fn fsconfig_string(fd: RawFd, key: &CStr, value: &CStr) -> SysResult<()> {
    // SAFETY: key and value are NUL-terminated; aux is unused for FSCONFIG_SET_STRING.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd,
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub(crate) fn fsconfig_create(fd: RawFd) -> SysResult<()> {
    // SAFETY: FSCONFIG_CMD_CREATE takes no pointers.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd,
            FSCONFIG_CMD_CREATE,
            ptr::null::<c_char>(),
            ptr::null::<c_void>(),
            0,
        )
    })
    .map(drop)
}

pub(crate) fn fsmount(fd: RawFd, attr_flags: u64) -> SysResult<RawFd> {
    // SAFETY: fsmount takes no pointers.
    check_fd(unsafe { libc::syscall(libc::SYS_fsmount, fd, FSMOUNT_CLOEXEC, attr_flags) })
}

/// Attaches the detached mount `from` onto the object `to` refers to.
pub(crate) fn move_mount_fd(from: RawFd, to: RawFd) -> SysResult<()> {
    let empty = c"";
    // SAFETY: both paths are the empty NUL-terminated string, as the *_EMPTY_PATH flags require.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            empty.as_ptr(),
            to,
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// A detached recursive copy of the mount tree at `path`.
pub(crate) fn open_tree_clone(path: &CStr) -> SysResult<RawFd> {
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as c_uint | libc::AT_RECURSIVE as c_uint;
    // SAFETY: `path` is NUL-terminated.
    check_fd(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })
}

/// Sets `attr_set` on the mount `dirfd`/`path` refers to (and below it with `AT_RECURSIVE`).
pub(crate) fn mount_setattr(
    dirfd: RawFd,
    path: &CStr,
    flags: c_uint,
    attr_set: u64,
) -> SysResult<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` outlives the call; size matches the struct.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

pub(crate) fn mkdirat(dirfd: RawFd, path: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_mkdirat, dirfd, path.as_ptr(), mode) }).map(drop)
}

pub(crate) fn mknodat(
    dirfd: RawFd,
    path: &CStr,
    mode: u32,
    major: u32,
    minor: u32,
) -> SysResult<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_mknodat, dirfd, path.as_ptr(), mode, dev) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dirfd: RawFd, path: &CStr) -> SysResult<()> {
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_symlinkat, target.as_ptr(), dirfd, path.as_ptr()) })
        .map(drop)
}

pub(crate) fn chdir(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_chdir, path.as_ptr()) }).map(drop)
}

pub(crate) fn fchdir(fd: RawFd) -> SysResult<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::syscall(libc::SYS_fchdir, fd) }).map(drop)
}

pub(crate) fn umask(mask: u32) {
    // SAFETY: no pointers; umask cannot fail.
    unsafe { libc::syscall(libc::SYS_umask, mask) };
}

pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice of the given length.
        match check(unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) }) {
            Ok(n) => buf = buf.get(n as usize..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is a valid writable slice of the given length.
        match check(unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) }) {
            Err(Errno::EINTR) => {}
            other => return other.map(|n| n as usize),
        }
    }
}

pub(crate) fn dup3(old: RawFd, new: RawFd) -> SysResult<()> {
    // SAFETY: no pointers; the flags are 0 so `new` loses close-on-exec, which is the point.
    check(unsafe { libc::syscall(libc::SYS_dup3, old, new, 0) }).map(drop)
}

pub(crate) fn clear_cloexec(fd: RawFd) -> SysResult<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFD, 0) }).map(drop)
}

pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> SysResult<RawFd> {
    // SAFETY: no pointers.
    check_fd(unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, min) })
}

pub(crate) fn ioctl_int(fd: RawFd, request: libc::c_ulong, arg: c_long) -> SysResult<c_long> {
    // SAFETY: the requests used here (TIOCGPTPEER, TIOCSCTTY) take an integer argument.
    check(unsafe { libc::syscall(libc::SYS_ioctl, fd, request, arg) })
}

pub(crate) fn ioctl_unlockpt(fd: RawFd) -> SysResult<()> {
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which lives across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            fd,
            libc::TIOCSPTLCK,
            &unlock as *const c_int,
        )
    })
    .map(drop)
}

pub(crate) fn fchown(fd: RawFd, uid: u32, gid: u32) -> SysResult<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::syscall(libc::SYS_fchown, fd, uid, gid) }).map(drop)
}

pub(crate) fn setsid() -> SysResult<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::syscall(libc::SYS_setsid) }).map(drop)
}

pub(crate) fn setns(fd: RawFd, nstype: c_int) -> SysResult<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::syscall(libc::SYS_setns, fd, nstype) }).map(drop)
}

pub(crate) fn prctl(option: c_int, arg2: libc::c_ulong) -> SysResult<()> {
    // SAFETY: the options used here take integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_prctl, option, arg2, 0, 0, 0) }).map(drop)
}

pub(crate) fn setgroups(groups: &[libc::gid_t]) -> SysResult<()> {
    // SAFETY: `groups` is a valid slice of gid_t of the given length.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) }).map(drop)
}

pub(crate) fn setresgid(gid: u32) -> SysResult<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

pub(crate) fn setresuid(uid: u32) -> SysResult<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

/// Sets the effective, permitted and inheritable sets (version 3: two 32-bit halves).
pub(crate) fn capset(effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let half = |v: u64, i: u32| (v >> (32 * i)) as u32;
    let data = [0, 1].map(|i| Data {
        effective: half(effective, i),
        permitted: half(permitted, i),
        inheritable: half(inheritable, i),
    });
    // SAFETY: header and a two-element data array (what version 3 requires) outlive the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) })
        .map(drop)
}

/// Installs a seccomp filter (the caller has no_new_privs or CAP_SYS_ADMIN).
pub(crate) fn seccomp_set_filter(program: &[seccompiler::sock_filter]) -> SysResult<()> {
    #[repr(C)]
    struct Fprog {
        len: u16,
        filter: *const seccompiler::sock_filter,
    }
    let len = u16::try_from(program.len()).map_err(|_| Errno::E2BIG)?;
    let prog = Fprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `len` valid, repr(C) BPF instructions that outlive the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const Fprog,
        )
    })
    .map(drop)
}

pub(crate) fn close_range(first: c_uint, last: c_uint, flags: c_uint) -> SysResult<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }).map(drop)
}

/// Unblocks every signal and restores SIGPIPE's default: both survive execve, and Rust
/// programs ignore SIGPIPE.
pub(crate) fn reset_signals() -> SysResult<()> {
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask reads an 8-byte kernel sigset through the pointer; old set is null.
    check(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            ptr::null::<u64>(),
            8,
        )
    })?;
    // SAFETY: SIG_DFL is a valid disposition; glibc's signal() only wraps rt_sigaction.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(Errno::last());
    }
    Ok(())
}

/// Replaces the process image; returns only on failure.
pub(crate) fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> Errno {
    if argv.last().is_none_or(|p| !p.is_null()) || envp.last().is_none_or(|p| !p.is_null()) {
        return Errno::EINVAL;
    }
    // SAFETY: both arrays are null-terminated (checked above) arrays of NUL-terminated strings
    // owned by the plan, which outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_execve,
            path.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    Errno::last()
}

pub(crate) fn exit(code: c_int) -> ! {
    // SAFETY: _exit never returns and runs no atexit handlers or destructors, as a child must.
    unsafe { libc::_exit(code) }
}

pub(crate) fn send(fd: RawFd, buf: &[u8]) -> SysResult<()> {
    // SAFETY: `buf` is valid for its length; no address.
    check(unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            0,
            0,
        )
    })
    .map(drop)
}

/// Sends `payload` with `passed` attached as SCM_RIGHTS, from a stack buffer.
pub(crate) fn send_with_fd(fd: RawFd, payload: &[u8], passed: RawFd) -> SysResult<()> {
    #[repr(C)]
    struct Cmsg {
        hdr: libc::cmsghdr,
        fd: c_int,
        _pad: c_int,
    }
    let mut cmsg = Cmsg {
        // SAFETY: cmsghdr is plain old data; every field is set below.
        hdr: unsafe { std::mem::zeroed() },
        fd: passed,
        _pad: 0,
    };
    // SAFETY: CMSG_LEN is a pure computation.
    cmsg.hdr.cmsg_len = unsafe { libc::CMSG_LEN(size_of::<c_int>() as c_uint) } as _;
    cmsg.hdr.cmsg_level = libc::SOL_SOCKET;
    cmsg.hdr.cmsg_type = libc::SCM_RIGHTS;
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut c_void,
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain old data; the fields that matter are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = &mut cmsg as *mut Cmsg as *mut c_void;
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<c_int>() as c_uint) } as _;
    // SAFETY: msg points at the iovec and the control buffer, both alive and large enough
    // (cmsghdr + int, padded, equals CMSG_SPACE(sizeof(int)) on 64-bit targets).
    check(unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            fd,
            &msg as *const libc::msghdr,
            libc::MSG_NOSIGNAL,
        )
    })
    .map(drop)
}

/// Writes `/proc/self/fd/<fd>` (and `/<name>` when `name` is not empty) into `buf` and returns
/// it as a C string, without allocating: the way to name an fd-resolved object to syscalls
/// that take only paths.
pub(crate) fn proc_fd_path<'a>(
    buf: &'a mut [u8; 96],
    fd: RawFd,
    name: &[u8],
) -> SysResult<&'a CStr> {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let sep = usize::from(!name.is_empty());
    let total = PREFIX.len() + len + sep + name.len();
    if total + 1 > buf.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    if sep == 1 {
        buf[PREFIX.len() + len] = b'/';
    }
    buf[PREFIX.len() + len + sep..total].copy_from_slice(name);
    buf[total] = 0;
    CStr::from_bytes_with_nul(&buf[..=total]).map_err(|_| Errno::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fd_path_formats_without_allocating() {
        let mut buf = [0u8; 96];
        assert_eq!(proc_fd_path(&mut buf, 0, b"").unwrap(), c"/proc/self/fd/0");
        let mut buf = [0u8; 96];
        assert_eq!(
            proc_fd_path(&mut buf, 1234, b"pts").unwrap(),
            c"/proc/self/fd/1234/pts"
        );
        let mut buf = [0u8; 96];
        assert_eq!(
            proc_fd_path(&mut buf, 7, &[b'x'; 90]),
            Err(Errno::ENAMETOOLONG)
        );
    }
}
