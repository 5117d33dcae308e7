//! Privileged: real containers started by `runtime::spawn` from a busybox root (the host's
//! /bin/busybox as the single lower layer), checked through their stdout and exit status.
//! Needs root, overlayfs and /bin/busybox; skips otherwise (fails under
//! BERTH_REQUIRE_PRIVILEGED=1). Every mount lives in a container's own mount namespace and
//! dies with it; each run checks that nothing reached the host's mount table.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use berth_kubelet::runtime::{
    default_masked_paths, default_readonly_paths, exec_in, spawn, CgroupPlacement, ContainerIo,
    ContainerSpec, Mount, MountKind, Rootfs, RuntimeError, Seccomp, Started, Stdio, User,
    DEFAULT_CAPABILITIES,
};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};

const BUSYBOX: &str = "/bin/busybox";

/// Whether this host can run the tests; prints why not (and panics when required to run).
fn can_run() -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if !Path::new(BUSYBOX).exists() {
        Some("no /bin/busybox")
    } else if !fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
        Some("no overlayfs")
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if std::env::var_os("BERTH_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") => {
            panic!("BERTH_REQUIRE_PRIVILEGED=1 but cannot run: {reason}")
        }
        Some(reason) => {
            println!("skipping: {reason}");
            false
        }
    }
}

/// A busybox image layer and per-container directories in a tempdir (removed on drop).
struct Fixture {
    dir: tempfile::TempDir,
    lower: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .expect("tempdir");
        let lower = dir.path().join("layer");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "mnt", "root"] {
            fs::create_dir_all(lower.join(d)).expect("layer dir");
        }
        fs::copy(BUSYBOX, lower.join("bin/busybox")).expect("copy busybox");
        let list = std::process::Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|a| *a != "busybox")
        {
            symlink("busybox", lower.join("bin").join(applet)).expect("applet link");
        }
        fs::write(
            lower.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .expect("passwd");
        fs::write(
            lower.join("etc/group"),
            "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
        )
        .expect("group");
        Fixture { dir, lower }
    }

    fn spec(&self, name: &str, args: &[&str]) -> ContainerSpec {
        let c = self.dir.path().join(name);
        ContainerSpec {
            id: format!("{name:0>64}"),
            rootfs: Rootfs {
                lower: vec![self.lower.clone()],
                upper: c.join("upper"),
                work: c.join("work"),
                target: c.join("rootfs"),
            },
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/root".into()],
            cwd: "/".into(),
            user: User::default(),
            capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            no_new_privs: true,
            seccomp: Seccomp::RuntimeDefault,
            readonly_rootfs: false,
            mounts: Vec::new(),
            masked_paths: default_masked_paths(),
            readonly_paths: default_readonly_paths(),
            pid_namespace: None,
            cgroup: CgroupPlacement::default(),
            oom_score_adj: 0,
            tty: false,
        }
    }

    fn assert_no_mount_leaked(&self) {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let dir = self.dir.path().to_string_lossy().into_owned();
        assert!(
            !mountinfo.contains(&dir),
            "a container mount leaked into the host:\n{mountinfo}"
        );
    }

    /// Runs `spec` to completion: (exit code, stdout+stderr).
    fn run(&self, spec: &ContainerSpec) -> (i32, String) {
        let (started, out) = start(spec).expect("spawn");
        let result = finish(started, out);
        self.assert_no_mount_leaked();
        result
    }
}

/// Spawns with stdout and stderr on one pipe; returns the read end.
fn start(spec: &ContainerSpec) -> Result<(Started, OwnedFd), RuntimeError> {
    let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let stderr = w.try_clone().expect("dup");
    let started = spawn(
        spec,
        ContainerIo::Pipes(Stdio {
            stdin: None,
            stdout: w,
            stderr,
        }),
    )?;
    Ok((started, r))
}

fn finish(started: Started, out: OwnedFd) -> (i32, String) {
    let mut text = String::new();
    fs::File::from(out)
        .read_to_string(&mut text)
        .expect("read container output");
    (wait(started.pid), text)
}

/// Everything written to the pty until its last slave fd closes (the master then reads EIO).
fn read_pty(master: OwnedFd) -> String {
    let mut out = Vec::new();
    let mut file = fs::File::from(master);
    let mut buf = [0u8; 256];
    while let Ok(n @ 1..) = file.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wait(pid: Pid) -> i32 {
    match waitpid(pid, None).expect("waitpid") {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

#[test]
fn pid_one_in_its_own_namespace_and_root() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let marker = tempfile::Builder::new()
        .prefix("berth-rt-marker-")
        .tempfile_in("/tmp")
        .expect("marker");
    let name = marker
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let script = format!(
        "echo pid=$$; ls /proc; test -e /tmp/{name} && echo host-visible || echo host-hidden"
    );
    let (code, out) = f.run(&f.spec("pidns", &["sh", "-c", &script]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("host-hidden"), "{out}");
    let pids: Vec<u32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(
        pids.contains(&1) && pids.iter().all(|p| *p < 10),
        "only its own processes: {pids:?}"
    );
}

#[test]
fn writes_go_to_the_upper_layer() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let spec = f.spec("upper", &["sh", "-c", "echo hi > /newfile && cat /newfile"]);
    let (code, out) = f.run(&spec);
    assert_eq!((code, out.as_str()), (0, "hi\n"));
    assert_eq!(
        fs::read_to_string(spec.rootfs.upper.join("newfile")).unwrap(),
        "hi\n"
    );
    assert!(!f.lower.join("newfile").exists());
}

#[test]
fn capabilities_no_new_privs_and_seccomp_in_status() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let (code, out) = f.run(&f.spec("caps", &["cat", "/proc/self/status"]));
    assert_eq!(code, 0, "{out}");
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&out, field), "00000000a80425fb", "{field}");
    }
    assert_eq!(status_field(&out, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    assert_eq!(status_field(&out, "Seccomp"), "2");
}

#[test]
fn mount_is_denied_by_capabilities_and_by_seccomp() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let try_mount = [
        "sh",
        "-c",
        "mount -t tmpfs x /mnt && grep -c ' /mnt ' /proc/self/mountinfo",
    ];
    let (code, out) = f.run(&f.spec("nomount", &try_mount));
    assert_ne!(
        code, 0,
        "default caps + RuntimeDefault must not mount: {out}"
    );

    let mut admin = f.spec("admin-default", &try_mount);
    admin.capabilities.push("SYS_ADMIN".into());
    let (code, out) = f.run(&admin);
    assert_ne!(
        code, 0,
        "CAP_SYS_ADMIN under RuntimeDefault must not mount: {out}"
    );

    let mut unconfined = f.spec("admin-unconfined", &try_mount);
    unconfined.capabilities.push("SYS_ADMIN".into());
    unconfined.seccomp = Seccomp::Unconfined;
    let (code, out) = f.run(&unconfined);
    assert_eq!(
        (code, out.as_str()),
        (0, "1\n"),
        "CAP_SYS_ADMIN unconfined mounts"
    );

    // Seccomp alone: RuntimeDefault with every capability still refuses to mount.
    let mut all = f.spec(
        "all-caps",
        &["sh", "-c", "mount -t tmpfs x /mnt; echo rc=$?"],
    );
    all.capabilities = vec!["ALL".into()];
    let (code, out) = f.run(&all);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rc=") && !out.contains("rc=0"), "{out}");
}

#[test]
fn run_as_user_and_group() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let mut spec = f.spec(
        "user",
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; grep CapEff /proc/self/status",
        ],
    );
    spec.user = User {
        uid: 65534,
        gid: 65534,
        additional_gids: vec![5, 65534],
    };
    let (code, out) = f.run(&spec);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["65534", "65534"]);
    assert!(lines[2].split(' ').any(|g| g == "5"), "{out}");
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000");
}

#[test]
fn readonly_rootfs_refuses_writes() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let mut spec = f.spec(
        "ro",
        &[
            "sh",
            "-c",
            "touch /x; echo rc=$?; touch /dev/shm/ok && echo shm-ok",
        ],
    );
    spec.readonly_rootfs = true;
    spec.cwd = "/made/by/runtime".into();
    let (code, out) = f.run(&spec);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Read-only file system") && out.contains("rc=1"),
        "{out}"
    );
    assert!(out.contains("shm-ok"), "{out}");
    assert!(
        spec.rootfs.upper.join("made/by/runtime").is_dir(),
        "cwd created before the root turned read-only"
    );
}

#[test]
fn masked_and_readonly_paths() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    // Which masked files exist depends on the kernel's configuration: check those the host has.
    let files: Vec<String> = default_masked_paths()
        .into_iter()
        .filter(|p| Path::new(p).is_file())
        .collect();
    assert!(!files.is_empty(), "the host has none of the masked files");
    let script = format!(
        "for f in {}; do echo \"$f $(wc -c < $f)\"; done; ls -A /sys/firmware | wc -l; cat /proc/self/mountinfo",
        files.join(" ")
    );
    let (code, out) = f.run(&f.spec("masked", &["sh", "-c", &script]));
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    for file in &files {
        assert_eq!(
            lines.next(),
            Some(format!("{file} 0").as_str()),
            "{file} masked"
        );
    }
    assert_eq!(
        lines.next().map(str::trim),
        Some("0"),
        "/sys/firmware masked"
    );
    let options = |point: &str| {
        out.lines()
            .filter(|l| l.split(' ').nth(4) == Some(point))
            .map(|l| l.split(' ').nth(5).unwrap_or("").to_string())
            .next_back()
            .unwrap_or_else(|| panic!("{point} not mounted:\n{out}"))
    };
    let readonly = default_readonly_paths()
        .into_iter()
        .filter(|p| Path::new(p).exists());
    for ro in readonly.chain(["/sys".to_string(), "/sys/firmware".to_string()]) {
        let ro = ro.as_str();
        assert!(options(ro).split(',').any(|o| o == "ro"), "{ro} read-only");
    }
    assert!(options("/dev").contains("nosuid"));
    for point in ["/proc", "/dev/pts", "/dev/shm", "/dev/mqueue"]
        .into_iter()
        .chain(files.iter().map(|f| f.as_str()))
    {
        options(point);
    }
}

#[test]
fn bind_mounts_read_only_and_read_write() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let host = f.dir.path().join("host-data");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("f"), "from-host\n").unwrap();
    let rw = f.dir.path().join("host-rw");
    fs::create_dir_all(&rw).unwrap();
    let mut spec = f.spec(
        "bind",
        &[
            "sh",
            "-c",
            "cat /data/f; touch /data/g; echo rc=$?; echo out > /deep/rw/h; cat /etc/hosts",
        ],
    );
    let hosts = f.dir.path().join("hosts");
    fs::write(&hosts, "127.0.0.1 berth\n").unwrap();
    spec.mounts = vec![
        Mount {
            destination: "/data".into(),
            kind: MountKind::Bind {
                source: host.clone(),
                readonly: true,
            },
        },
        Mount {
            destination: "/deep/rw".into(),
            kind: MountKind::Bind {
                source: rw.clone(),
                readonly: false,
            },
        },
        Mount {
            destination: "/etc/hosts".into(),
            kind: MountKind::Bind {
                source: hosts,
                readonly: true,
            },
        },
    ];
    let (code, out) = f.run(&spec);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("from-host\n"), "{out}");
    assert!(
        out.contains("Read-only file system") && out.contains("rc=1"),
        "{out}"
    );
    assert!(out.ends_with("127.0.0.1 berth\n"), "{out}");
    assert!(!host.join("g").exists());
    assert_eq!(fs::read_to_string(rw.join("h")).unwrap(), "out\n");
}

#[test]
fn mount_points_never_escape_the_root() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let outside = f.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    // An image symlink naming a host path resolves inside the container's root: there it is
    // dangling, which is refused...
    symlink(&outside, f.lower.join("evil")).unwrap();
    let mut dangling = f.spec("dangling", &["true"]);
    dangling.mounts = vec![Mount {
        destination: "/evil/sub".into(),
        kind: MountKind::Tmpfs {
            size_bytes: None,
            mode: 0o755,
        },
    }];
    let err = start(&dangling)
        .map(drop)
        .expect_err("dangling symlink refused");
    assert_eq!(
        err.to_string(),
        "container setup: create mount point /evil/sub"
    );
    assert!(
        !outside.join("sub").exists(),
        "mount point created on the host"
    );
    // ...and once the image has that path, the mount point is made there, still inside.
    fs::create_dir_all(f.lower.join(outside.strip_prefix("/").unwrap())).unwrap();
    let script = format!("grep -c ' {}/sub ' /proc/self/mountinfo", outside.display());
    let mut spec = f.spec("escape", &["sh", "-c", &script]);
    spec.mounts = vec![Mount {
        destination: "/evil/sub".into(),
        kind: MountKind::Tmpfs {
            size_bytes: None,
            mode: 0o755,
        },
    }];
    let (code, out) = f.run(&spec);
    assert_eq!(
        (code, out.as_str()),
        (0, "1\n"),
        "mounted at the symlink's target inside the root"
    );
    assert!(
        !outside.join("sub").exists(),
        "mount point created on the host"
    );
    assert!(
        spec.rootfs
            .upper
            .join(outside.strip_prefix("/").unwrap())
            .join("sub")
            .is_dir(),
        "created in the root"
    );
}

#[test]
fn missing_binary_is_reported_like_runc() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let err = start(&f.spec("missing", &["nosuchprog", "x"]))
        .map(drop)
        .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        r#"exec: "nosuchprog": executable file not found in $PATH"#
    );
    let err = start(&f.spec("missing-abs", &["/no/such"]))
        .map(drop)
        .expect_err("must fail");
    assert!(err.to_string().starts_with(r#"exec: "/no/such""#), "{err}");
    let mut bad = f.spec("bad-bind", &["true"]);
    bad.mounts = vec![Mount {
        destination: "/x".into(),
        kind: MountKind::Bind {
            source: "/nonexistent-berth".into(),
            readonly: false,
        },
    }];
    let err = start(&bad).map(drop).expect_err("must fail");
    assert_eq!(err.to_string(), "container setup: mount /x");
    f.assert_no_mount_leaked();
}

#[test]
fn tty_container() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let started = spawn(
        &f.spec("tty", &["sh", "-c", "tty; echo done"]),
        ContainerIo::Tty,
    )
    .expect("spawn");
    let out = read_pty(started.pty_master.expect("pty master"));
    assert_eq!(wait(started.pid), 0, "{out}");
    assert!(
        out.starts_with("/dev/pts/0\r\n") && out.contains("done"),
        "{out:?}"
    );
    f.assert_no_mount_leaked();
}

#[test]
fn exec_into_a_running_container() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let spec = f.spec("exec", &["sleep", "30"]);
    let (sleeper, sleeper_out) = start(&spec).expect("spawn sleep");
    let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let stderr = w.try_clone().unwrap();
    let args = [
        "sh".to_string(),
        "-c".into(),
        "cat /proc/1/cmdline; echo; echo pid=$$".into(),
    ];
    let exec = exec_in(
        sleeper.pid,
        &spec,
        &args,
        ContainerIo::Pipes(Stdio {
            stdin: None,
            stdout: w,
            stderr,
        }),
    )
    .expect("exec_in");
    let (code, out) = finish(exec, r);
    let tty = exec_in(sleeper.pid, &spec, &["tty".to_string()], ContainerIo::Tty)
        .expect("exec_in with a tty");
    let tty_out = read_pty(tty.pty_master.expect("pty master"));
    assert_eq!(wait(tty.pid), 0, "{tty_out}");
    assert!(tty_out.starts_with("/dev/pts/"), "{tty_out:?}");
    kill(sleeper.pid, Signal::SIGKILL).unwrap();
    let (_, _) = finish(sleeper, sleeper_out);
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("sleep\u{0}30\u{0}"));
    let pid: u32 = lines
        .next()
        .and_then(|l| l.strip_prefix("pid="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        pid > 1 && pid < 10,
        "exec'd process is in the container's pid namespace: {pid}"
    );
    f.assert_no_mount_leaked();
}

#[test]
fn shared_pid_namespace() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let (first, first_out) = start(&f.spec("first", &["sleep", "30"])).expect("spawn first");
    let mut second = f.spec(
        "second",
        &["sh", "-c", "cat /proc/1/cmdline; echo; echo pid=$$"],
    );
    second.pid_namespace = Some(PathBuf::from(format!("/proc/{}/ns/pid", first.pid)));
    let (code, out) = f.run(&second);
    kill(first.pid, Signal::SIGKILL).unwrap();
    finish(first, first_out);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("sleep\u{0}30\u{0}\npid="), "{out:?}");
    assert_ne!(out.trim_end().rsplit('=').next(), Some("1"));
}

#[test]
fn many_layers_use_the_new_mount_api() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let mut spec = f.spec("layers", &["sh", "-c", "cat /layer-0 /layer-59"]);
    for i in 0..60 {
        let layer = f.dir.path().join(format!("{i:0>80}"));
        fs::create_dir_all(&layer).unwrap();
        fs::write(layer.join(format!("layer-{i}")), format!("{i}\n")).unwrap();
        spec.rootfs.lower.insert(0, layer);
    }
    let total: usize = spec
        .rootfs
        .lower
        .iter()
        .map(|l| l.as_os_str().len() + 1)
        .sum();
    assert!(
        total > 4096,
        "the lowerdir option must not fit in a page ({total})"
    );
    let (code, out) = f.run(&spec);
    assert_eq!((code, out.as_str()), (0, "0\n59\n"));
}

/// A cgroup made for one test and removed (after its processes exited) on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(parent: &Path, name: &str) -> Option<Self> {
        let dir = parent.join(format!("berth-rt-{name}-{}", std::process::id()));
        fs::create_dir(&dir).ok().map(|()| TestCgroup(dir))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn starts_in_its_cgroups() {
    if !can_run() {
        return;
    }
    let f = Fixture::new();
    let v1 = TestCgroup::new(Path::new("/sys/fs/cgroup/pids"), "v1");
    let v2 = TestCgroup::new(Path::new("/sys/fs/cgroup/unified"), "v2");
    if v1.is_none() && v2.is_none() {
        println!("skipping cgroup placement: cannot create a test cgroup");
        return;
    }
    let mut spec = f.spec("cgroup", &["cat", "/proc/self/cgroup"]);
    spec.cgroup.v1 = v1.iter().map(|c| c.0.clone()).collect();
    spec.cgroup.unified = v2.as_ref().map(|c| c.0.clone());
    let (code, out) = f.run(&spec);
    assert_eq!(code, 0, "{out}");
    for cg in v1.iter().chain(v2.iter()) {
        let name = cg.0.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            out.lines().any(|l| l.ends_with(&format!("/{name}"))),
            "in {name}:\n{out}"
        );
    }
}
