//! Shared by the privileged BPF tests: the skip rule, re-executing the test in fresh
//! namespaces, a bpffs of its own, and map fixtures.

#![allow(dead_code)]

use std::env;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_dataplane::abi::{Backend, BackendKey, SlotKey, SlotValue, SvcKey, SvcValue};
use berth_dataplane::loader::{Bpffs, LbMaps};

/// Skips the test, or fails it when `BERTH_REQUIRE_PRIVILEGED=1`.
pub fn skip(reason: &str) {
    if env::var("BERTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("BERTH_REQUIRE_PRIVILEGED=1 but cannot run: {reason}");
    }
    eprintln!("skipping: {reason}");
}

pub fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Root with `unshare` and `ip`, or why not.
pub fn can_run_privileged() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root".to_string());
    }
    for program in ["unshare", "ip"] {
        if !on_path(program) {
            return Err(format!("{program} is not installed"));
        }
    }
    Ok(())
}

/// Runs `test_name` of this test binary again under `unshare --net --mount` (private mount
/// propagation), with `inner_env` set to a marker file the inner run writes at its end. Every
/// link, namespace and mount the inner run makes dies with it, even if it is killed.
pub fn run_isolated(test_name: &str, inner_env: &str) {
    let dir = tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir()
        .expect("tempdir");
    let marker = dir.path().join("done");
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(env::current_exe().expect("current exe"))
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(inner_env, &marker)
        .env(OUTER_NETNS_ENV, netns_inode().to_string())
        .status()
        .expect("run the test under unshare");
    assert!(status.success(), "the isolated test failed: {status}");
    assert!(marker.exists(), "the isolated test did not run to the end");
}

/// The network namespace inode of the process that called [`run_isolated`].
const OUTER_NETNS_ENV: &str = "BERTH_TEST_OUTER_NETNS";

fn netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .expect("own netns")
        .ino()
}

/// Panics unless this process runs in a network namespace [`run_isolated`] made, so a
/// namespace-wide setting it changes cannot be the host's.
pub fn assert_isolated() {
    let outer: u64 = env::var(OUTER_NETNS_ENV)
        .expect("run by run_isolated")
        .parse()
        .expect("inode");
    assert_ne!(
        netns_inode(),
        outer,
        "must run in its own network namespace"
    );
}

pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A temp dir with a bpffs of its own; unmounted (by the guard) before the dir goes.
pub struct TestBpffs {
    pub bpffs: Option<Bpffs>,
    pub dir: tempfile::TempDir,
}

impl TestBpffs {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-bpffs-")
            .tempdir()
            .expect("tempdir");
        let bpffs = Bpffs::ensure(dir.path()).expect("mount bpffs");
        assert!(bpffs.mounted(), "a fresh temp dir is not bpffs yet");
        Self {
            bpffs: Some(bpffs),
            dir,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if let Some(bpffs) = self.bpffs.take() {
            let _ = berth_dataplane::loader::cleanup(bpffs.path());
            drop(bpffs);
        }
    }
}

/// Writes one frontend with `backends` in slots 1..=n (ids from `first_backend_id`).
pub fn add_service(
    maps: &mut LbMaps,
    frontend: SvcKey,
    svc_id: u32,
    flags: u16,
    affinity_timeout: u32,
    first_backend_id: u32,
    backends: &[(Ipv4Addr, u16)],
) {
    for (index, (addr, port)) in backends.iter().enumerate() {
        let id = first_backend_id + index as u32;
        maps.backends
            .insert(
                &BackendKey { id },
                &Backend::new(*addr, *port, frontend.proto),
            )
            .expect("insert backend");
        maps.slots
            .insert(
                &SlotKey {
                    svc_id,
                    slot: index as u32 + 1,
                },
                &SlotValue { backend_id: id },
            )
            .expect("insert slot");
    }
    let value = SvcValue {
        id: svc_id,
        count: backends.len() as u16,
        flags,
        affinity_timeout,
        pad: 0,
    };
    maps.svc.insert(&frontend, &value).expect("insert frontend");
}

/// Berth's pins under `dir`, recursively (the kernel's own `maps.debug` and `progs.debug`
/// preload files in every bpffs are not ours).
pub fn pins_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read pin dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with("maps.debug") && !path.ends_with("progs.debug") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
