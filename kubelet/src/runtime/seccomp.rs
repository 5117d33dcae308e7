//! `RuntimeDefault`: containerd's default seccomp profile compiled to classic BPF with
//! seccompiler — an allow-list, everything else fails with EPERM, `clone3` with ENOSYS (so libc
//! falls back to `clone`, whose namespace flags are then checked). One deliberate difference:
//! containerd also allows mount, unshare, setns and the new mount API when the container has
//! CAP_SYS_ADMIN; Berth never does, so RuntimeDefault always forbids mounting.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::seccomp_tables::{AARCH64, X86_64};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile names syscall {name} unknown on {arch}")]
    UnknownSyscall {
        name: &'static str,
        arch: &'static str,
    },
    #[error("compile seccomp profile for {arch}")]
    Compile {
        arch: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
}

/// Allowed whatever the arguments and capabilities (containerd's list, plus what it adds on
/// kernels ≥ 4.8 and per architecture; names an arch lacks are skipped).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "lstat",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "map_shadow_stack",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
    // kernel >= 4.8
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    // per architecture
    "arch_prctl",
    "modify_ldt",
];

/// Extra syscalls a capability brings (capability number, names), as in containerd's profile,
/// minus CAP_SYS_ADMIN's (see the module docs).
const BY_CAPABILITY: &[(u32, &[&str])] = &[
    (2, &["open_by_handle_at"]), // DAC_READ_SEARCH
    (22, &["reboot"]),           // SYS_BOOT
    (18, &["chroot"]),           // SYS_CHROOT
    (16, &["delete_module", "init_module", "finit_module"]), // SYS_MODULE
    (20, &["acct"]),             // SYS_PACCT
    (
        19,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (17, &["iopl", "ioperm"]),                         // SYS_RAWIO
    (25, &["settimeofday", "stime", "clock_settime"]), // SYS_TIME
    (26, &["vhangup"]),                                // SYS_TTY_CONFIG
    (
        23,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ), // SYS_NICE
    (34, &["syslog"]),                                 // SYSLOG
    (39, &["bpf"]),                                    // BPF
    (38, &["perf_event_open"]),                        // PERFMON
];

/// Namespace flags `clone` may not be given (CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|
/// NEWCGROUP).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

fn table(arch: TargetArch) -> (&'static [(&'static str, i64)], &'static str) {
    match arch {
        TargetArch::aarch64 => (AARCH64, "aarch64"),
        _ => (X86_64, "x86_64"),
    }
}

fn lookup(table: &[(&str, i64)], name: &str) -> Option<i64> {
    table
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| table[i].1)
}

fn arg0(op: SeccompCmpOp, value: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        op,
        value,
    )?])
}

/// The host's architecture, or `None` where Berth has no profile.
pub(crate) fn host_arch() -> Option<TargetArch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(TargetArch::x86_64),
        "aarch64" => Some(TargetArch::aarch64),
        _ => None,
    }
}

/// The RuntimeDefault program for a container whose bounding set is `caps`.
pub(crate) fn runtime_default(caps: u64, arch: TargetArch) -> Result<BpfProgram, SeccompError> {
    let (table, arch_name) = table(arch);
    let compile = |source| SeccompError::Compile {
        arch: arch_name,
        source,
    };
    let nr = |name: &'static str| {
        lookup(table, name).ok_or(SeccompError::UnknownSyscall {
            name,
            arch: arch_name,
        })
    };

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let cap_names = BY_CAPABILITY
        .iter()
        .filter(|(cap, _)| caps & (1 << cap) != 0)
        .flat_map(|(_, n)| n.iter());
    for name in ALLOWED.iter().chain(cap_names) {
        if let Some(n) = lookup(table, name) {
            rules.insert(n, Vec::new());
        }
    }
    let socket = vec![
        arg0(SeccompCmpOp::Lt, AF_ALG).map_err(compile)?,
        arg0(SeccompCmpOp::Eq, AF_ALG + 1).map_err(compile)?,
        arg0(SeccompCmpOp::Gt, AF_VSOCK).map_err(compile)?,
    ];
    rules.insert(nr("socket")?, socket);
    let personality = PERSONALITIES
        .iter()
        .map(|v| arg0(SeccompCmpOp::Eq, *v))
        .collect::<Result<_, _>>()
        .map_err(compile)?;
    rules.insert(nr("personality")?, personality);
    let clone = vec![arg0(SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS), 0).map_err(compile)?];
    rules.insert(nr("clone")?, clone);

    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(compile)?;
    let mut program: BpfProgram = filter.try_into().map_err(compile)?;
    splice_enosys(&mut program, nr("clone3")?);
    Ok(program)
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const ARCH_CHECK_LEN: usize = 3;

/// seccompiler gives one match action for the whole filter; `clone3` must fail with ENOSYS
/// instead of EPERM. The three instructions go right after seccompiler's architecture check
/// (load arch, jump over the kill when equal, kill): every jump in BPF is forward and relative,
/// and that check's "equal" jump lands on the first inserted instruction.
fn splice_enosys(program: &mut BpfProgram, syscall: i64) {
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let enosys = [
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        insn(BPF_JEQ_K, 0, 1, syscall as u32),
        insn(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
    ];
    let at = ARCH_CHECK_LEN.min(program.len());
    program.splice(at..at, enosys);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_CAPS: u64 = 0xa80425fb;

    /// A tiny classic-BPF interpreter for the instructions seccompiler and the splice emit,
    /// enough to ask what the program answers for a syscall.
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &program[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    acc =
                        u32::from_ne_bytes(data[i.k as usize..i.k as usize + 4].try_into().unwrap())
                }
                0x06 => return i.k,
                0x05 => pc += i.k as usize,
                0x54 => acc &= i.k,
                code => {
                    let taken = match code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        0x45 => acc & i.k != 0,
                        other => panic!("unexpected BPF opcode {other:#x}"),
                    };
                    pc += if taken { i.jt } else { i.jf } as usize;
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;
    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    const ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;

    fn program(caps: u64) -> BpfProgram {
        runtime_default(caps, host_arch().unwrap()).unwrap()
    }

    /// What the host-arch program answers for syscall `nr` with `arg0`.
    fn answer(p: &[sock_filter], nr: libc::c_long, arg0: u64) -> u32 {
        run(p, ARCH, nr as u32, [arg0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for t in [X86_64, AARCH64] {
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn builds_for_both_architectures() {
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            let p = runtime_default(DEFAULT_CAPS, arch).unwrap();
            assert!(p.len() > 300 && p.len() < 4096, "{} instructions", p.len());
        }
    }

    #[test]
    fn denies_what_a_container_must_not_do() {
        use libc::{
            SYS_acct, SYS_add_key, SYS_bpf, SYS_capset, SYS_chroot, SYS_close_range,
            SYS_delete_module, SYS_execve, SYS_finit_module, SYS_fsopen, SYS_init_module,
            SYS_kexec_load, SYS_keyctl, SYS_mount, SYS_mount_setattr, SYS_move_mount,
            SYS_open_tree, SYS_openat, SYS_pivot_root, SYS_read, SYS_reboot, SYS_setns,
            SYS_setresuid, SYS_settimeofday, SYS_swapon, SYS_umount2, SYS_unshare, SYS_write,
        };
        let p = program(DEFAULT_CAPS);
        for nr in [
            SYS_mount,
            SYS_umount2,
            SYS_init_module,
            SYS_finit_module,
            SYS_delete_module,
            SYS_kexec_load,
            SYS_reboot,
            SYS_swapon,
            SYS_pivot_root,
            SYS_unshare,
            SYS_setns,
            SYS_open_tree,
            SYS_fsopen,
            SYS_move_mount,
            SYS_mount_setattr,
            SYS_bpf,
            SYS_keyctl,
            SYS_add_key,
            SYS_acct,
            SYS_settimeofday,
        ] {
            assert_eq!(answer(&p, nr, 0), EPERM, "syscall {nr}");
        }
        for nr in [
            SYS_read,
            SYS_write,
            SYS_execve,
            SYS_openat,
            SYS_capset,
            SYS_setresuid,
            SYS_close_range,
            SYS_chroot,
        ] {
            assert_eq!(answer(&p, nr, 0), ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn clone3_is_enosys_and_clone_checks_namespace_flags() {
        let p = program(DEFAULT_CAPS);
        assert_eq!(answer(&p, libc::SYS_clone3, 0), ENOSYS);
        let sigchld = libc::SIGCHLD as u64;
        assert_eq!(answer(&p, libc::SYS_clone, sigchld), ALLOW);
        assert_eq!(
            answer(&p, libc::SYS_clone, libc::CLONE_NEWUSER as u64 | sigchld),
            EPERM
        );
        assert_eq!(
            answer(&p, libc::SYS_clone, libc::CLONE_NEWNS as u64 | sigchld),
            EPERM
        );
    }

    #[test]
    fn socket_families_and_personalities() {
        let p = program(DEFAULT_CAPS);
        let socket = |family: u64| answer(&p, libc::SYS_socket, family);
        assert_eq!(socket(libc::AF_INET as u64), ALLOW);
        assert_eq!(socket(AF_ALG), EPERM);
        assert_eq!(socket(AF_VSOCK), EPERM);
        assert_eq!(socket(39), ALLOW);
        assert_eq!(socket(libc::AF_NETLINK as u64), ALLOW);
        assert_eq!(answer(&p, libc::SYS_personality, 0x0008), ALLOW);
        assert_eq!(answer(&p, libc::SYS_personality, 0x0040000), EPERM);
    }

    #[test]
    fn capabilities_add_their_syscalls_but_never_mount() {
        let admin_ptrace = DEFAULT_CAPS | 1 << 21 | 1 << 19;
        let p = program(admin_ptrace);
        assert_eq!(answer(&p, libc::SYS_kcmp, 0), ALLOW);
        assert_eq!(answer(&p, libc::SYS_mount, 0), EPERM);
        let p = program(DEFAULT_CAPS);
        assert_eq!(answer(&p, libc::SYS_kcmp, 0), EPERM);
    }

    #[test]
    fn other_architectures_are_killed_and_x32_refused() {
        let p = program(DEFAULT_CAPS);
        let i386 = 3 | 0x4000_0000;
        assert_eq!(run(&p, i386, 0, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(answer(&p, libc::SYS_read | 0x4000_0000, 0), EPERM);
    }
}
