//! Shared by the integration tests: the skip rule, re-executing a test in fresh namespaces,
//! commands, network namespaces held by file descriptors, and BPF fixtures. Each test binary
//! includes it with `mod support;` and uses what it needs.

#![allow(dead_code, unused_imports)]

pub mod bpf;
pub mod echo;
pub mod netns;

use std::env;
use std::process::{Command, Output};

pub use netns::Netns;

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

/// Root with every one of `programs` on the PATH, or why not.
pub fn can_run_privileged(programs: &[&str]) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root".to_string());
    }
    for program in programs {
        if !on_path(program) {
            return Err(format!("{program} is not installed"));
        }
    }
    Ok(())
}

/// Whether the running kernel is `major.minor` or later.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = nix::sys::utsname::uname().expect("uname");
    let release = release.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let running = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    running >= (major, minor)
}

/// In the run [`run_isolated`] (or [`run_in_own_netns`]) started: runs `inner`, writes the
/// marker that shows it got to the end, and returns true. False in the outer run.
pub fn inner_run(inner_env: &str, inner: impl FnOnce()) -> bool {
    let Some(marker) = env::var_os(inner_env) else {
        return false;
    };
    inner();
    std::fs::write(marker, "done").expect("write marker");
    true
}

/// Runs `test_name` of this test binary again under `unshare --net --mount` (private mount
/// propagation), with `inner_env` set to a marker file the inner run writes at its end. Every
/// link, namespace and mount the inner run makes dies with it, even if it is killed.
pub fn run_isolated(test_name: &str, inner_env: &str) {
    reexec(
        &["--net", "--mount", "--propagation", "private"],
        test_name,
        inner_env,
    );
}

/// [`run_isolated`] with only a network namespace of its own (mounts stay shared).
pub fn run_in_own_netns(test_name: &str, inner_env: &str) {
    reexec(&["--net"], test_name, inner_env);
}

fn reexec(unshare: &[&str], test_name: &str, inner_env: &str) {
    let dir = tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir()
        .expect("tempdir");
    let marker = dir.path().join("done");
    let status = Command::new("unshare")
        .args(unshare)
        .arg("--")
        .arg(env::current_exe().expect("current exe"))
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(inner_env, &marker)
        .env(OUTER_NETNS_ENV, netns_inode().to_string())
        .status()
        .expect("run the test under unshare");
    assert!(status.success(), "the isolated test failed: {status}");
    // Guards against the inner run silently matching no test.
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

pub fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"))
}

/// Runs `program`, panics unless it succeeds, and returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    checked(program, args, output(program, args))
}

/// `ip <args>` in this namespace, which must succeed.
pub fn ip(args: &[&str]) {
    run_ok("ip", args);
}

fn checked(program: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
