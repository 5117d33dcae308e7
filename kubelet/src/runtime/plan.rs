//! Everything the child does between clone and exec, prepared before cloning: every path,
//! mount, argv and env array, capability mask and seccomp program, so that the child (see
//! `sys::child`) only makes syscalls. Building a plan is pure and unit-tested.

use std::ffi::{c_char, CStr, CString};
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use seccompiler::BpfProgram;

use super::inroot::InRootPath;
use super::spec::{ContainerSpec, MountKind, Seccomp};
use super::{caps, lookup, seccomp, RuntimeError};

/// Where the child was when it failed; sent back with the errno and an index into the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    Release = 1,
    Setns,
    Propagation,
    Overlay,
    OpenRoot,
    MountPoint,
    Mount,
    DevNode,
    Pivot,
    Cwd,
    MaskPath,
    ReadonlyPath,
    ReadonlyRoot,
    Tty,
    Stdio,
    Signals,
    OomScoreAdj,
    Seccomp,
    Bounding,
    Groups,
    Gid,
    Uid,
    Capabilities,
    NoNewPrivs,
    CloseFds,
    Exec,
    ExecNotFound,
}

impl Step {
    pub(crate) fn from_u32(v: u32) -> Option<Step> {
        const ALL: [Step; 27] = [
            Step::Release,
            Step::Setns,
            Step::Propagation,
            Step::Overlay,
            Step::OpenRoot,
            Step::MountPoint,
            Step::Mount,
            Step::DevNode,
            Step::Pivot,
            Step::Cwd,
            Step::MaskPath,
            Step::ReadonlyPath,
            Step::ReadonlyRoot,
            Step::Tty,
            Step::Stdio,
            Step::Signals,
            Step::OomScoreAdj,
            Step::Seccomp,
            Step::Bounding,
            Step::Groups,
            Step::Gid,
            Step::Uid,
            Step::Capabilities,
            Step::NoNewPrivs,
            Step::CloseFds,
            Step::Exec,
            Step::ExecNotFound,
        ];
        ALL.into_iter().find(|s| *s as u32 == v)
    }
}

/// What one mount does once its mount point is resolved (and created) inside the root.
#[derive(Debug)]
pub(crate) enum MountOp {
    /// A new filesystem instance.
    Fs {
        fstype: &'static CStr,
        source: &'static CStr,
        flags: u64,
        data: Option<CString>,
    },
    /// A recursive bind of a host path; read-only is applied recursively to the whole tree.
    Bind { source: CString, readonly: bool },
    /// sysfs read-only, or a read-only recursive bind of the host's /sys where the kernel
    /// refuses a new sysfs instance.
    Sysfs,
    /// The /dev tmpfs, then its device nodes, symlinks and the devpts, shm and mqueue mounts.
    Dev,
}

#[derive(Debug)]
pub(crate) struct MountPlan {
    pub dest: InRootPath,
    /// The mount point is a file (a bind of a file): created empty when missing.
    pub file: bool,
    pub op: MountOp,
}

#[derive(Debug)]
pub(crate) struct Overlay {
    /// `lowerdir=…,upperdir=…,workdir=…` when it fits in the page mount(2) copies; otherwise
    /// the child uses fsopen/fsconfig with one `lowerdir+` per layer.
    pub data: Option<CString>,
    pub lowers: Vec<CString>,
    pub upper: CString,
    pub work: CString,
}

#[derive(Debug)]
pub(crate) struct RootfsPlan {
    pub target: CString,
    pub overlay: Overlay,
    pub mounts: Vec<MountPlan>,
    pub masked: Vec<CString>,
    pub readonly: Vec<CString>,
    pub readonly_root: bool,
    /// The container's working directory, created (as root, before the root turns read-only)
    /// when missing.
    pub cwd: InRootPath,
}

#[derive(Debug)]
pub(crate) enum IoPlan {
    /// The fds to become 0, 1 and 2.
    Pipes([RawFd; 3]),
    /// Open a pty in the container's devpts, send the master to the parent, make the slave the
    /// controlling terminal and stdio; the slave is given to `uid`.
    Tty { uid: u32 },
}

#[derive(Debug)]
pub(crate) struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// Bounding, effective, permitted and inheritable.
    pub caps: u64,
    pub bounding_drops: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct ExecPlan {
    /// `args[0]` as given, for messages.
    pub program: String,
    /// True when `program` had no `/` and the candidates come from `PATH`.
    pub searched: bool,
    pub candidates: Vec<CString>,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
}

/// A namespace the child joins (exec_in): the open `/proc/<pid>/ns/<name>` and its type.
#[derive(Debug)]
pub(crate) struct JoinNs {
    pub name: &'static str,
    pub fd: OwnedFd,
    pub nstype: libc::c_int,
}

#[derive(Debug)]
pub(crate) struct ChildPlan {
    /// Wait for the parent's go-ahead (it writes the pid into cgroup v1 `cgroup.procs` first).
    pub wait_release: bool,
    pub join: Vec<JoinNs>,
    pub rootfs: Option<RootfsPlan>,
    pub io: IoPlan,
    pub oom_score_adj: CString,
    pub cwd: CString,
    pub creds: Creds,
    pub no_new_privs: bool,
    pub seccomp: Option<BpfProgram>,
    pub exec: ExecPlan,
}

fn cstring(what: &'static str, s: impl Into<Vec<u8>>) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|e| RuntimeError::InvalidSpec {
        field: what,
        reason: format!(
            "contains a NUL byte: {:?}",
            String::from_utf8_lossy(&e.into_vec())
        ),
    })
}

fn path_cstring(what: &'static str, p: &Path) -> Result<CString, RuntimeError> {
    cstring(what, p.as_os_str().as_encoded_bytes())
}

fn in_root(what: &'static str, path: &str) -> Result<InRootPath, RuntimeError> {
    if !path.starts_with('/') {
        return Err(RuntimeError::InvalidSpec {
            field: what,
            reason: format!("{path:?} is not absolute"),
        });
    }
    InRootPath::new(path).ok_or_else(|| RuntimeError::InvalidSpec {
        field: what,
        reason: format!("{path:?} contains a NUL byte"),
    })
}

/// mount(2) copies at most one page of options, including the NUL.
const MOUNT_DATA_MAX: usize = 4095;

fn overlay(spec: &ContainerSpec) -> Result<Overlay, RuntimeError> {
    let r = &spec.rootfs;
    if r.lower.is_empty() {
        return Err(RuntimeError::InvalidSpec {
            field: "rootfs.lower",
            reason: "no layers".into(),
        });
    }
    for p in r.lower.iter().chain([&r.upper, &r.work]) {
        let s = p.as_os_str().as_encoded_bytes();
        if s.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
            return Err(RuntimeError::InvalidSpec {
                field: "rootfs",
                reason: format!("overlay path {} contains ',', ':' or '\\'", p.display()),
            });
        }
    }
    let lowers = r
        .lower
        .iter()
        .map(|p| path_cstring("rootfs.lower", p))
        .collect::<Result<Vec<_>, _>>()?;
    let joined = lowers
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={joined},upperdir={},workdir={}",
        r.upper.display(),
        r.work.display()
    );
    Ok(Overlay {
        data: if data.len() <= MOUNT_DATA_MAX {
            Some(cstring("rootfs", data)?)
        } else {
            None
        },
        lowers,
        upper: path_cstring("rootfs.upper", &r.upper)?,
        work: path_cstring("rootfs.work", &r.work)?,
    })
}

const NOSUID: u64 = libc::MS_NOSUID;
const NODEV: u64 = libc::MS_NODEV;
const NOEXEC: u64 = libc::MS_NOEXEC;

/// The runtime's own mounts (/proc, /sys, /dev and what lives in it), then the spec's.
pub(crate) fn mounts(spec: &ContainerSpec) -> Result<Vec<MountPlan>, RuntimeError> {
    let own = |dest: &str, op| MountPlan {
        dest: InRootPath::new(dest).expect("constant path"),
        file: false,
        op,
    };
    let mut out = vec![
        own(
            "/proc",
            MountOp::Fs {
                fstype: c"proc",
                source: c"proc",
                flags: NOSUID | NODEV | NOEXEC,
                data: None,
            },
        ),
        own("/sys", MountOp::Sysfs),
        own("/dev", MountOp::Dev),
    ];
    for m in &spec.mounts {
        let dest = in_root("mounts.destination", &m.destination)?;
        if dest.names.is_empty() {
            return Err(RuntimeError::InvalidSpec {
                field: "mounts.destination",
                reason: "mount over /".into(),
            });
        }
        let plan = match &m.kind {
            MountKind::Bind { source, readonly } => MountPlan {
                dest,
                // A missing source is the kubelet's bug; treat it as a directory and let the
                // bind fail with the path in the message.
                file: std::fs::metadata(source)
                    .map(|md| !md.is_dir())
                    .unwrap_or(false),
                op: MountOp::Bind {
                    source: path_cstring("mounts.source", source)?,
                    readonly: *readonly,
                },
            },
            MountKind::Tmpfs { size_bytes, mode } => {
                let mut data = format!("mode={:o}", mode & 0o7777);
                if let Some(size) = size_bytes {
                    data.push_str(&format!(",size={size}"));
                }
                MountPlan {
                    dest,
                    file: false,
                    op: MountOp::Fs {
                        fstype: c"tmpfs",
                        source: c"tmpfs",
                        flags: NOSUID | NODEV,
                        data: Some(cstring("mounts", data)?),
                    },
                }
            }
        };
        out.push(plan);
    }
    Ok(out)
}

/// Device nodes of the container's /dev: name, major, minor (all mode 0666 character devices).
pub(crate) const DEV_NODES: &[(&CStr, u32, u32)] = &[
    (c"null", 1, 3),
    (c"zero", 1, 5),
    (c"full", 1, 7),
    (c"random", 1, 8),
    (c"urandom", 1, 9),
    (c"tty", 5, 0),
];

/// Symlinks of the container's /dev: name, target.
pub(crate) const DEV_LINKS: &[(&CStr, &CStr)] = &[
    (c"fd", c"/proc/self/fd"),
    (c"stdin", c"/proc/self/fd/0"),
    (c"stdout", c"/proc/self/fd/1"),
    (c"stderr", c"/proc/self/fd/2"),
    (c"ptmx", c"pts/ptmx"),
];

/// Mounts inside the container's /dev: directory, fstype, flags, options.
pub(crate) const DEV_MOUNTS: &[(&CStr, &CStr, u64, &CStr)] = &[
    (
        c"pts",
        c"devpts",
        NOSUID | NOEXEC,
        c"newinstance,ptmxmode=0666,mode=0620,gid=5",
    ),
    (
        c"shm",
        c"tmpfs",
        NOSUID | NODEV | NOEXEC,
        c"mode=1777,size=65536k",
    ),
    (c"mqueue", c"mqueue", NOSUID | NODEV | NOEXEC, c""),
];

pub(crate) const DEV_TMPFS_FLAGS: u64 = NOSUID | libc::MS_STRICTATIME;
pub(crate) const DEV_TMPFS_DATA: &CStr = c"mode=755,size=65536k";

fn exec(spec: &ContainerSpec, args: &[String]) -> Result<ExecPlan, RuntimeError> {
    let program = args.first().ok_or(RuntimeError::InvalidSpec {
        field: "args",
        reason: "empty".into(),
    })?;
    let candidates =
        lookup::candidates(program, lookup::container_path(&spec.env)).ok_or_else(|| {
            RuntimeError::InvalidSpec {
                field: "args",
                reason: format!("invalid program name {program:?}"),
            }
        })?;
    let argv = args
        .iter()
        .map(|a| cstring("args", a.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = spec
        .env
        .iter()
        .map(|e| cstring("env", e.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect::<Vec<_>>()
    };
    Ok(ExecPlan {
        program: program.clone(),
        searched: !program.contains('/'),
        candidates,
        argv: ptrs(&argv),
        envp: ptrs(&envp),
        _argv: argv,
        _envp: envp,
    })
}

/// Host facts a plan depends on, read once per process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Host {
    pub last_cap: u32,
    /// The runtime's own permitted capabilities: what `ALL` means.
    pub current_caps: u64,
}

/// The plan for `spec`, running `args` (the spec's for a new container, exec's otherwise);
/// `rootfs` is false for exec_in, which joins the container's mounts instead.
pub(crate) fn build(
    spec: &ContainerSpec,
    args: &[String],
    rootfs: bool,
    io: IoPlan,
    host: Host,
) -> Result<ChildPlan, RuntimeError> {
    let cap_mask = caps::mask(&spec.capabilities, host.last_cap, host.current_caps)?;
    let seccomp = match spec.seccomp {
        Seccomp::Unconfined => None,
        Seccomp::RuntimeDefault => {
            let arch = seccomp::host_arch().ok_or(RuntimeError::UnsupportedArch {
                arch: std::env::consts::ARCH,
            })?;
            Some(seccomp::runtime_default(cap_mask, arch)?)
        }
    };
    let cwd = in_root("cwd", &spec.cwd)?;
    let rootfs = if rootfs {
        let own = |v: &[String], what| {
            v.iter()
                .map(|p| cstring(what, p.as_str()))
                .collect::<Result<Vec<_>, _>>()
        };
        Some(RootfsPlan {
            target: path_cstring("rootfs.target", &spec.rootfs.target)?,
            overlay: overlay(spec)?,
            mounts: mounts(spec)?,
            masked: own(&spec.masked_paths, "masked_paths")?,
            readonly: own(&spec.readonly_paths, "readonly_paths")?,
            readonly_root: spec.readonly_rootfs,
            cwd: cwd.clone(),
        })
    } else {
        None
    };
    Ok(ChildPlan {
        wait_release: !spec.cgroup.v1.is_empty(),
        join: Vec::new(),
        rootfs,
        io,
        oom_score_adj: cstring("oom_score_adj", spec.oom_score_adj.to_string())?,
        cwd: cstring(
            "cwd",
            format!("/{}", cwd.rel.to_string_lossy().trim_start_matches('.')),
        )?,
        creds: Creds {
            uid: spec.user.uid,
            gid: spec.user.gid,
            groups: spec.user.additional_gids.clone(),
            caps: cap_mask,
            bounding_drops: caps::bounding_drops(cap_mask, host.last_cap),
        },
        no_new_privs: spec.no_new_privs,
        seccomp,
        exec: exec(spec, args)?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::runtime::spec::{CgroupPlacement, Mount, Rootfs, User};

    pub(crate) fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "c".repeat(64),
            rootfs: Rootfs {
                lower: vec![PathBuf::from("/layers/a"), PathBuf::from("/layers/b")],
                upper: "/c/upper".into(),
                work: "/c/work".into(),
                target: "/c/rootfs".into(),
            },
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin:/usr/bin".into(), "HOME=/root".into()],
            cwd: "/work/dir".into(),
            user: User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![5, 6],
            },
            capabilities: crate::runtime::DEFAULT_CAPABILITIES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            no_new_privs: true,
            seccomp: Seccomp::RuntimeDefault,
            readonly_rootfs: false,
            mounts: vec![
                Mount {
                    destination: "/data/../vol".into(),
                    kind: MountKind::Bind {
                        source: "/nonexistent-source".into(),
                        readonly: true,
                    },
                },
                Mount {
                    destination: "/scratch".into(),
                    kind: MountKind::Tmpfs {
                        size_bytes: Some(1 << 20),
                        mode: 0o1777,
                    },
                },
            ],
            masked_paths: crate::runtime::default_masked_paths(),
            readonly_paths: crate::runtime::default_readonly_paths(),
            pid_namespace: None,
            cgroup: CgroupPlacement::default(),
            oom_score_adj: -997,
            tty: false,
        }
    }

    const HOST: Host = Host {
        last_cap: 40,
        current_caps: u64::MAX,
    };

    #[test]
    fn plan_carries_everything_the_child_needs() {
        let s = spec();
        let p = build(&s, &s.args, true, IoPlan::Pipes([0, 1, 2]), HOST).unwrap();
        assert!(!p.wait_release);
        assert_eq!(p.oom_score_adj.as_c_str(), c"-997");
        assert_eq!(p.cwd.as_c_str(), c"/work/dir");
        assert_eq!(p.creds.caps, 0xa80425fb);
        assert_eq!(p.creds.bounding_drops.len(), 41 - 14);
        assert_eq!(p.creds.groups, [5, 6]);
        assert!(p.seccomp.is_some());
        assert_eq!(
            p.exec.candidates,
            [c"/bin/sh", c"/usr/bin/sh"].map(CString::from)
        );
        assert_eq!(p.exec.argv.len(), 4);
        assert!(p.exec.argv[3].is_null() && p.exec.envp[2].is_null());
        let r = p.rootfs.unwrap();
        assert_eq!(
            r.overlay.data.unwrap().as_c_str(),
            c"lowerdir=/layers/a:/layers/b,upperdir=/c/upper,workdir=/c/work"
        );
        assert_eq!(r.masked.len(), crate::runtime::MASKED_PATHS.len());
        assert_eq!(r.cwd.rel.as_c_str(), c"work/dir");
    }

    #[test]
    fn mount_list_puts_the_runtimes_own_first() {
        let m = mounts(&spec()).unwrap();
        let dests: Vec<String> = m.iter().map(|m| m.dest.display()).collect();
        assert_eq!(dests, ["/proc", "/sys", "/dev", "/vol", "/scratch"]);
        assert!(matches!(&m[3].op, MountOp::Bind { readonly: true, .. }));
        match &m[4].op {
            MountOp::Fs {
                fstype,
                data,
                flags,
                ..
            } => {
                assert_eq!(*fstype, c"tmpfs");
                assert_eq!(data.as_deref(), Some(c"mode=1777,size=1048576"));
                assert_eq!(*flags, NOSUID | NODEV);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_layer_lists_use_the_new_mount_api() {
        let mut s = spec();
        s.rootfs.lower = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/berth/layers/{i:064}")))
            .collect();
        let o = overlay(&s).unwrap();
        assert!(o.data.is_none());
        assert_eq!(o.lowers.len(), 100);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec();
        s.mounts[0].destination = "relative".into();
        assert!(matches!(
            mounts(&s),
            Err(RuntimeError::InvalidSpec {
                field: "mounts.destination",
                ..
            })
        ));
        s.mounts[0].destination = "/".into();
        assert!(mounts(&s).is_err());
        let mut s = spec();
        s.rootfs.lower = vec!["/a:b".into()];
        assert!(overlay(&s).is_err());
        let mut s = spec();
        s.rootfs.lower.clear();
        assert!(overlay(&s).is_err());
        let s = spec();
        assert!(build(&s, &[], true, IoPlan::Pipes([0, 1, 2]), HOST).is_err());
        let mut s = spec();
        s.capabilities.push("BOGUS".into());
        assert!(build(&s, &s.args.clone(), true, IoPlan::Pipes([0, 1, 2]), HOST).is_err());
    }

    #[test]
    fn unconfined_has_no_program_and_steps_round_trip() {
        let mut s = spec();
        s.seccomp = Seccomp::Unconfined;
        s.cgroup.v1 = vec!["/sys/fs/cgroup/pids/x".into()];
        let p = build(&s, &s.args, false, IoPlan::Tty { uid: 0 }, HOST).unwrap();
        assert!(p.seccomp.is_none() && p.rootfs.is_none() && p.wait_release);
        for v in 1..=27 {
            assert_eq!(Step::from_u32(v).unwrap() as u32, v);
        }
        assert!(Step::from_u32(0).is_none() && Step::from_u32(28).is_none());
    }
}
