//! What the benchmark smoke tests share: the privileged skip rule, and running
//! `berth bench … --json` for its one JSON object.

use std::process::Command;

/// True when the test can go on; else says "skipping: <reason>" (a failure under
/// BERTH_REQUIRE_PRIVILEGED=1, as for every privileged test).
pub fn runnable(reason: Option<String>) -> bool {
    let Some(reason) = reason else {
        return true;
    };
    if std::env::var("BERTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("cannot skip ({reason}) with BERTH_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("skipping: {reason}");
    false
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// Runs `berth <args>` (a `bench … --json` command) and returns what it printed, asserting it
/// succeeded and printed one JSON object.
pub fn run_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running berth bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {}; stderr:\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `report[key]` as a number, or a failure naming it.
pub fn number(report: &serde_json::Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {}", report[key]))
}
