//! Privileged tests of the cgroup drivers (root): limits are enforced for real.
//!
//! The `host_*` tests use the driver this host gives (`CgroupManager::detect`): v1 or hybrid on
//! the development machine, v2 on production hosts. The `v2_*` test mounts a cgroup2 filesystem
//! of its own (in a private mount namespace) and checks the v2 driver with the controllers that
//! hierarchy offers. Every cgroup lives under `berth-test-…` and a guard removes it; the only
//! processes killed are the test's own children.
//!
//! When something they need is missing they print "skipping: <reason>"; with
//! `BERTH_REQUIRE_PRIVILEGED=1` that is a failure.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use berth_kubelet::cgroup::{attach, CgroupManager, Mode, Resources};
use berth_kubelet::qos::QosClass;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

const BUSYBOX: &str = "/bin/busybox";

fn skip(reason: &str) {
    if std::env::var("BERTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("BERTH_REQUIRE_PRIVILEGED=1 but the test cannot run: {reason}");
    }
    println!("skipping: {reason}");
}

fn unique_base(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("berth-test-{tag}-{}-{nanos}", std::process::id())
}

/// Removes the test's whole `berth-test-…` tree, in every hierarchy, even on panic.
struct Cleanup(CgroupManager);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = self.0.cleanup_all() {
            eprintln!("cleanup of {} failed: {e}", self.0.base());
        }
    }
}

/// The host's driver, or `None` (after saying why) when the test cannot run here.
fn host_manager(tag: &str, needs: &[&str]) -> Option<Cleanup> {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root");
        return None;
    }
    if !Path::new(BUSYBOX).exists() {
        skip("needs /bin/busybox (busybox-static)");
        return None;
    }
    let mgr = match CgroupManager::detect(Path::new("/proc/self/mountinfo"), &unique_base(tag)) {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("no usable cgroup hierarchy: {e}"));
            return None;
        }
    };
    let have = mgr.controllers();
    for need in needs {
        if !have.iter().any(|(c, _)| c == need) {
            skip(&format!(
                "the host has no {need} controller (have {have:?})"
            ));
            return None;
        }
    }
    println!("mode {:?}, controllers {have:?}", mgr.mode());
    Some(Cleanup(mgr))
}

/// A busybox shell of ours that waits for a line on stdin before running `script`, so the test
/// can move it into a cgroup first.
struct Proc(Child);

impl Proc {
    fn spawn(script: &str) -> Proc {
        let child = Command::new(BUSYBOX)
            .args(["sh", "-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn busybox");
        Proc(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn go(&mut self) {
        let mut stdin = self.0.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("start the child");
    }

    fn wait(&mut self) -> ExitStatus {
        self.0.wait().expect("wait")
    }

    /// Waits up to `limit` for the shell to exit (it may leave children behind).
    fn wait_deadline(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// stdout and stderr; only once every holder of the pipes is gone.
    fn output(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn keyed(path: &Path, key: &str) -> u64 {
    read(path)
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {}", path.display()))
}

fn readable(fd: &impl AsFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    poll(&mut fds, PollTimeout::from(ms)).expect("poll") == 1
}

fn dirs_of(mgr: &CgroupManager, uid: &str, container: &str) -> Vec<PathBuf> {
    let p = mgr.placement(QosClass::Burstable, uid, container).unwrap();
    p.v1.into_iter().chain(p.unified).collect()
}

#[test]
fn host_memory_limit_oom_kills_and_notifies() {
    let Some(guard) = host_manager("oom", &["memory"]) else {
        return;
    };
    let mgr = &guard.0;
    let pod = Resources {
        memory_limit_bytes: Some(64 << 20),
        ..Resources::default()
    };
    let res = Resources {
        memory_limit_bytes: Some(32 << 20),
        ..Resources::default()
    };
    mgr.ensure_pod(QosClass::Burstable, "p1", &pod).unwrap();
    let placement = mgr
        .ensure_container(QosClass::Burstable, "p1", "hog", &res)
        .unwrap();
    let before = mgr.oom_kills(QosClass::Burstable, "p1", "hog").unwrap();
    let events = mgr.oom_events(QosClass::Burstable, "p1", "hog").unwrap();

    // One 64 MiB buffer filled from /dev/zero: twice the limit.
    let mut hog = Proc::spawn("exec dd if=/dev/zero of=/dev/null bs=67108864 count=1");
    attach(&placement, hog.pid()).unwrap();
    hog.go();
    let status = hog.wait();
    assert_eq!(
        status.signal(),
        Some(9),
        "the hog was not OOM-killed: {status:?}"
    );
    assert!(
        readable(&events, Duration::from_secs(10)),
        "no OOM event arrived"
    );
    assert!(events.drain().unwrap() >= 1);
    let after = mgr.oom_kills(QosClass::Burstable, "p1", "hog").unwrap();
    assert_eq!(after, before + 1, "oom_kill counter");
    println!("OOM-killed by signal 9; oom_kill {before} -> {after}; event received");

    mgr.remove_container(QosClass::Burstable, "p1", "hog")
        .unwrap();
    for dir in dirs_of(mgr, "p1", "hog") {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn host_pids_max_stops_a_fork_bomb() {
    let Some(guard) = host_manager("pids", &["pids"]) else {
        return;
    };
    let mgr = &guard.0;
    let res = Resources {
        pids_max: Some(8),
        ..Resources::default()
    };
    let placement = mgr
        .ensure_container(QosClass::Burstable, "p2", "bomb", &res)
        .unwrap();
    let pids_dir = mgr
        .controller_dir("pids", QosClass::Burstable, "p2", Some("bomb"))
        .unwrap()
        .unwrap();
    let mut bomb =
        Proc::spawn("i=0; while [ $i -lt 64 ]; do sleep 1000 & i=$((i+1)); done; echo all-forked");
    attach(&placement, bomb.pid()).unwrap();
    bomb.go();
    let status = bomb.wait_deadline(Duration::from_secs(30));
    let current = mgr
        .pids_current(QosClass::Burstable, "p2", Some("bomb"))
        .unwrap();
    let refused = keyed(&pids_dir.join("pids.events"), "max");
    println!("shell exited {status:?}; pids.current {current} of 8; forks refused {refused}");
    assert!(current <= 8, "pids.current {current} above pids.max");
    assert!(refused >= 1, "no fork was refused");

    // The leftover sleeps (orphans now) are killed by the removal.
    mgr.remove_container(QosClass::Burstable, "p2", "bomb")
        .unwrap();
    for dir in dirs_of(mgr, "p2", "bomb") {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    let (out, err) = bomb.output();
    assert!(!out.contains("all-forked"), "every fork succeeded: {out}");
    assert!(err.contains("fork"), "no fork failure reported: {err}");
}

#[test]
fn host_cpu_limit_throttles() {
    let Some(guard) = host_manager("cpu", &["cpu"]) else {
        return;
    };
    let mgr = &guard.0;
    let res = Resources {
        cpu_request_millis: 100,
        cpu_limit_millis: Some(200),
        ..Resources::default()
    };
    mgr.ensure_pod(QosClass::Burstable, "p3", &res).unwrap();
    let placement = mgr
        .ensure_container(QosClass::Burstable, "p3", "spin", &res)
        .unwrap();
    let mut spin = Proc::spawn("while :; do :; done");
    attach(&placement, spin.pid()).unwrap();
    spin.go();
    let stats = || {
        mgr.cpu_stats(QosClass::Burstable, "p3", Some("spin"))
            .unwrap()
    };

    // Measure over a 1 s window once the spinner has started running.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats().usage_nanos == 0 {
        assert!(Instant::now() < deadline, "the spinner never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (start, t0) = (stats(), Instant::now());
    while t0.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (end, wall) = (stats(), t0.elapsed());
    let share = (end.usage_nanos - start.usage_nanos) as f64 / wall.as_nanos() as f64;
    println!(
        "cpu share {share:.3} of one cpu (limit 0.2); throttled {} of {} periods",
        end.nr_throttled - start.nr_throttled,
        end.nr_periods - start.nr_periods
    );
    assert!(share < 0.3, "not throttled to 200m: {share:.3}");
    assert!(share > 0.05, "the spinner barely ran: {share:.3}");
    assert!(
        end.nr_throttled > start.nr_throttled,
        "no throttled periods"
    );

    mgr.remove_pod(QosClass::Burstable, "p3").unwrap();
    assert_eq!(spin.wait().signal(), Some(9));
}

#[test]
fn host_v1_devices_deny_all_but_runc_defaults() {
    let Some(guard) = host_manager("dev", &[]) else {
        return;
    };
    let mgr = &guard.0;
    if !mgr.controllers().contains(&("devices", "v1")) {
        println!(
            "not applicable: no v1 devices controller (the v2 device filter is BPF, not here)"
        );
        return;
    }
    let run = |name: &str, allow_all: bool| {
        let res = Resources {
            allow_all_devices: allow_all,
            ..Resources::default()
        };
        let placement = mgr
            .ensure_container(QosClass::Burstable, "p4", name, &res)
            .unwrap();
        let mut p = Proc::spawn(": < /dev/null && echo null-ok; : < /dev/kmsg && echo kmsg-ok");
        attach(&placement, p.pid()).unwrap();
        p.go();
        p.wait();
        let (out, err) = p.output();
        let dir = mgr
            .controller_dir("devices", QosClass::Burstable, "p4", Some(name))
            .unwrap()
            .unwrap();
        let list = read(&dir.join("devices.list"));
        (out, err, list)
    };

    let (out, err, list) = run("plain", false);
    let mut rules: Vec<&str> = list.lines().collect();
    rules.sort();
    let mut want = vec![
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:8 rwm",
        "c 1:7 rwm",
        "c 5:0 rwm",
        "c 1:5 rwm",
        "c 1:9 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    ];
    want.sort();
    assert_eq!(rules, want);
    assert!(out.contains("null-ok"), "/dev/null denied: {out} {err}");
    assert!(!out.contains("kmsg-ok"), "/dev/kmsg allowed: {out}");
    assert!(err.contains("not permitted"), "{err}");

    let (out, _, list) = run("privileged", true);
    assert_eq!(list.trim(), "a *:* rwm");
    assert!(
        out.contains("kmsg-ok"),
        "privileged container denied /dev/kmsg: {out}"
    );
}

#[test]
fn host_remove_kills_everything_and_cleanup_leaves_nothing() {
    let Some(guard) = host_manager("rm", &[]) else {
        return;
    };
    let mgr = &guard.0;
    let mut procs = Vec::new();
    for name in ["a", "b"] {
        let placement = mgr
            .ensure_container(QosClass::Burstable, "p5", name, &Resources::default())
            .unwrap();
        let mut p = Proc::spawn("sleep 1000 & sleep 1000");
        attach(&placement, p.pid()).unwrap();
        p.go();
        procs.push(p);
    }
    mgr.ensure_pod(QosClass::BestEffort, "p6", &Resources::default())
        .unwrap();
    assert_eq!(
        mgr.list_pods().unwrap(),
        [
            (QosClass::Burstable, "p5".to_owned()),
            (QosClass::BestEffort, "p6".to_owned())
        ]
    );

    mgr.remove_pod(QosClass::Burstable, "p5").unwrap();
    for p in &mut procs {
        assert_eq!(p.wait().signal(), Some(9));
    }
    for name in ["a", "b"] {
        for dir in dirs_of(mgr, "p5", name) {
            assert!(!dir.parent().unwrap().exists(), "{} left", dir.display());
        }
    }
    mgr.remove_pod(QosClass::Burstable, "p5").unwrap();

    let removed = mgr.cleanup_all().unwrap();
    println!("cleanup_all removed {removed} cgroups");
    assert!(removed > 0);
    let mountinfo = read(Path::new("/proc/self/mountinfo"));
    for line in mountinfo.lines().filter(|l| l.contains(" - cgroup")) {
        let mount_point = line.split(' ').nth(4).unwrap();
        let base = Path::new(mount_point).join(mgr.base());
        assert!(!base.exists(), "{} left behind", base.display());
    }
}

/// The v2 driver on a cgroup2 mount the test makes itself, in a private mount namespace (its
/// own thread), so the host's mounts never change.
#[test]
fn v2_on_own_cgroup2_mount() {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root");
    }
    if !Path::new(BUSYBOX).exists() {
        return skip("needs /bin/busybox (busybox-static)");
    }
    let result = std::thread::spawn(v2_in_private_mount_ns).join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn v2_in_private_mount_ns() {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};

    // Only this thread's mount namespace changes; it ends with the thread.
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare the mount namespace");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make mounts private");
    let tmp = tempfile::tempdir().unwrap();
    if let Err(e) = mount(
        Some("none"),
        tmp.path(),
        Some("cgroup2"),
        MsFlags::empty(),
        None::<&str>,
    ) {
        return skip(&format!("cannot mount cgroup2: {e}"));
    }
    let _unmount = Unmount(tmp.path().to_owned());
    let root = tmp.path().to_owned();
    let offered = read(&root.join("cgroup.controllers"));
    let mgr = CgroupManager::with_roots(
        Mode::V2,
        Some(root.clone()),
        Default::default(),
        &unique_base("v2"),
    )
    .unwrap();
    let guard = Cleanup(mgr);
    let mgr = &guard.0;
    let have = |c: &str| mgr.controllers().contains(&(c, "v2"));
    println!("cgroup2 offers {:?}", offered.trim());

    // Limits only for what this hierarchy offers (a hybrid host keeps them in v1).
    let res = Resources {
        cpu_request_millis: 500,
        cpu_limit_millis: have("cpu").then_some(300),
        memory_limit_bytes: have("memory").then_some(48 << 20),
        pids_max: have("pids").then_some(20),
        allow_all_devices: false,
    };
    mgr.ensure_pod(QosClass::Burstable, "v", &res).unwrap();
    let placement = mgr
        .ensure_container(QosClass::Burstable, "v", "c", &res)
        .unwrap();
    let dir = placement.unified.clone().expect("a v2 placement");
    assert!(placement.v1.is_empty());
    assert_eq!(dir, root.join(mgr.base()).join("kubepods/burstable/podv/c"));
    let pod_dir = dir.parent().unwrap().to_owned();

    let mut checked = Vec::new();
    for (controller, file, want) in [
        ("cpu", "cpu.max", "30000 100000"),
        ("cpu", "cpu.weight", "20"),
        ("memory", "memory.max", "50331648"),
        ("memory", "memory.oom.group", "1"),
        ("pids", "pids.max", "20"),
    ] {
        if have(controller) {
            assert_eq!(read(&dir.join(file)).trim(), want, "{file}");
            checked.push(file);
        }
    }
    println!("v2 limit files checked: {checked:?} (the rest are not offered by this cgroup2)");
    if !have("cpu") && !have("memory") && !have("pids") {
        // Nothing was delegated, so nothing may have been written to the root.
        assert_eq!(read(&root.join("cgroup.subtree_control")).trim(), "");
    }

    let mut p = Proc::spawn("exec sleep 1000");
    assert!(read(&pod_dir.join("cgroup.events")).contains("populated 0"));
    attach(&placement, p.pid()).unwrap();
    assert_eq!(read(&dir.join("cgroup.procs")).trim(), p.pid().to_string());
    assert!(read(&dir.join("cgroup.events")).contains("populated 1"));
    assert!(read(&pod_dir.join("cgroup.events")).contains("populated 1"));
    p.go();

    mgr.remove_container(QosClass::Burstable, "v", "c").unwrap();
    assert_eq!(p.wait().signal(), Some(9), "cgroup.kill did not kill");
    assert!(!dir.exists());
    assert!(read(&pod_dir.join("cgroup.events")).contains("populated 0"));
    mgr.remove_container(QosClass::Burstable, "v", "c").unwrap();

    assert_eq!(mgr.cleanup_all().unwrap(), 4);
    assert!(!root.join(mgr.base()).exists());
}
