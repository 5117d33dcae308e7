//! Container start alone, Berth's runtime against `crun`, on the same image layers.
//!
//! Berth: what a pod's shim does per container — [`runtime::spawn`] in-process (clone3 into new
//! mount and PID namespaces, overlayfs of the layers, /proc /sys /dev /dev/pts /dev/shm
//! /dev/mqueue, masked and read-only paths, default capabilities, no_new_privs), timed from
//! before `unshare(net|ipc|uts)` (the namespaces a shim holds, made fresh each time so both
//! sides create all five) until `/bin/true` is reaped.
//! crun: what containerd does per container — mount the overlay of the same layers, then
//! `crun run` of a bundle whose config.json asks for the same namespaces, mounts, masked paths,
//! capabilities and no_new_privs, then unmount; timed from the mkdir of the overlay's
//! directories to the unmount. Neither side has seccomp or cgroups: crun runs with
//! `--cgroup-manager=disabled`, Berth's spec places the process in no cgroup.
//!
//! crun refuses a hybrid cgroup host (cgroup2 mounted at /sys/fs/cgroup/unified) even with
//! cgroups disabled, so everything here runs on a thread of its own that first moves into a
//! private mount namespace and detaches /sys/fs/cgroup/unified there: crun then sees a v1
//! host. On a pure v1 or v2 host nothing is detached. No mount made here reaches the host.
//! Iterations alternate (Berth, crun, Berth, …) so drift hits both alike.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_kubelet::runtime::{
    self, default_masked_paths, default_readonly_paths, CgroupPlacement, ContainerIo,
    ContainerSpec, Rootfs, Seccomp, User, DEFAULT_CAPABILITIES,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use serde_json::json;

use super::stats::Samples;
use super::PodStartupError;

pub const CRUN: &str = "/usr/bin/crun";
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Both sides' start times.
pub struct Comparison {
    pub ours: Samples,
    pub crun: Samples,
    /// What was done to make crun run on this host.
    pub note: String,
}

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> PodStartupError {
    move |source| PodStartupError::Sys { op, source }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodStartupError {
    let path = path.to_path_buf();
    move |source| PodStartupError::Io { op, path, source }
}

/// Runs `iterations` of each side, alternating, under `work` (which must exist and be empty).
pub fn compare(
    layers: &[PathBuf],
    work: &Path,
    iterations: usize,
) -> Result<Comparison, PodStartupError> {
    let layers = layers.to_vec();
    let work = work.to_path_buf();
    std::thread::spawn(move || compare_on_this_thread(&layers, &work, iterations))
        .join()
        .map_err(|_| PodStartupError::Unexpected("the crun comparison thread panicked".into()))?
}

/// Is `/sys/fs/cgroup/unified` a cgroup2 mount while `/sys/fs/cgroup` is not (a hybrid host)?
fn hybrid(mountinfo: &str) -> bool {
    let mut root_v2 = false;
    let mut unified_v2 = false;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else {
            continue;
        };
        if *fstype == "cgroup2" {
            root_v2 |= *point == "/sys/fs/cgroup";
            unified_v2 |= *point == HYBRID_UNIFIED;
        }
    }
    unified_v2 && !root_v2
}

fn compare_on_this_thread(
    layers: &[PathBuf],
    work: &Path,
    iterations: usize,
) -> Result<Comparison, PodStartupError> {
    // This thread only: a mount namespace of its own whose mounts never propagate to the host.
    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare a mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("make / private"))?;
    let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .map_err(io("read", Path::new("/proc/thread-self/mountinfo")))?;
    let note = if hybrid(&mountinfo) {
        umount2(HYBRID_UNIFIED, MntFlags::MNT_DETACH)
            .map_err(sys("detach /sys/fs/cgroup/unified"))?;
        "hybrid cgroup host: crun ran in a private mount namespace without \
         /sys/fs/cgroup/unified (seeing cgroup v1), --cgroup-manager=disabled"
    } else {
        "crun --cgroup-manager=disabled"
    };
    let bundle = work.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).map_err(io("create", &bundle))?;
    let config = bundle.join("config.json");
    std::fs::write(&config, crun_config().to_string()).map_err(io("write", &config))?;
    let state = work.join("crun-state");
    let tag = format!("{:x}", std::process::id());
    let (mut ours, mut crun) = (Samples::default(), Samples::default());
    // One unrecorded round warms the page cache and crun's binary.
    for i in 0..=iterations {
        let a = run_ours(layers, &work.join(format!("ours-{i}")))?;
        let b = run_crun(
            layers,
            work,
            &bundle,
            &state,
            &format!("berth-bench-{tag}-{i}"),
        )?;
        if i > 0 {
            ours.record(a);
            crun.record(b);
        }
        for side in ["ours", "crun"] {
            let _ = std::fs::remove_dir_all(work.join(format!("{side}-{i}")));
        }
    }
    Ok(Comparison {
        ours,
        crun,
        note: note.into(),
    })
}

fn dev_null() -> Result<OwnedFd, PodStartupError> {
    let path = Path::new("/dev/null");
    File::options()
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(io("open", path))
}

fn rootfs(layers: &[PathBuf], dir: &Path) -> Rootfs {
    Rootfs {
        lower: layers.to_vec(),
        upper: dir.join("upper"),
        work: dir.join("work"),
        target: dir.join("rootfs"),
    }
}

fn run_ours(layers: &[PathBuf], dir: &Path) -> Result<Duration, PodStartupError> {
    let spec = ContainerSpec {
        id: format!("{:0>64}", "bench"),
        rootfs: rootfs(layers, dir),
        args: vec!["/bin/true".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: User::default(),
        capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        no_new_privs: true,
        seccomp: Seccomp::Unconfined,
        readonly_rootfs: false,
        mounts: Vec::new(),
        masked_paths: default_masked_paths(),
        readonly_paths: default_readonly_paths(),
        pid_namespace: None,
        cgroup: CgroupPlacement::default(),
        oom_score_adj: 0,
        tty: false,
    };
    let stdio = runtime::Stdio {
        stdin: None,
        stdout: dev_null()?,
        stderr: dev_null()?,
    };
    let begun = Instant::now();
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(sys("unshare net, ipc and uts namespaces"))?;
    let started = runtime::spawn(&spec, ContainerIo::Pipes(stdio))?;
    let status = waitpid(started.pid, None).map_err(sys("wait for the container"))?;
    let took = begun.elapsed();
    match status {
        WaitStatus::Exited(_, 0) => Ok(took),
        other => Err(PodStartupError::Unexpected(format!(
            "berth's /bin/true ended with {other:?}"
        ))),
    }
}

fn run_crun(
    layers: &[PathBuf],
    work: &Path,
    bundle: &Path,
    state: &Path,
    id: &str,
) -> Result<Duration, PodStartupError> {
    let dir = work.join(format!("crun-{}", id.rsplit('-').next().unwrap_or("0")));
    let r = rootfs(layers, &dir);
    let target = bundle.join("rootfs");
    let lower: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        r.upper.display(),
        r.work.display()
    );
    let begun = Instant::now();
    for d in [&r.upper, &r.work] {
        std::fs::create_dir_all(d).map_err(io("create", d))?;
    }
    mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(sys("mount the bundle's overlay"))?;
    let ran = Command::new(CRUN)
        .arg("--root")
        .arg(state)
        .arg("--cgroup-manager=disabled")
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let unmounted = umount2(&target, MntFlags::empty());
    let took = begun.elapsed();
    let out = ran.map_err(io("run", Path::new(CRUN)))?;
    unmounted.map_err(sys("unmount the bundle's overlay"))?;
    if !out.status.success() {
        return Err(PodStartupError::Unexpected(format!(
            "crun run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(took)
}

/// runc's default mounts, Berth's masked and read-only paths and capabilities, no seccomp, no
/// cgroup settings.
fn crun_config() -> serde_json::Value {
    let caps: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps,
            },
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": default_masked_paths(),
            "readonlyPaths": default_readonly_paths(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_host_is_told_from_v1_and_v2() {
        let hybrid_host = "\
30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert!(hybrid(hybrid_host));
        let v2 = "30 22 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw";
        assert!(!hybrid(v2));
        let v1 = "32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert!(!hybrid(v1));
    }

    #[test]
    fn crun_gets_the_same_namespaces_and_capabilities() {
        let c = crun_config();
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "network", "ipc", "uts", "mount"] {
            assert!(ns.contains(&want), "{want}");
        }
        let caps = c["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert!(c["linux"].get("cgroupsPath").is_none() && c["linux"].get("seccomp").is_none());
    }
}
