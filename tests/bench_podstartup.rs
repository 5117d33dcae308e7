//! Privileged: `berth bench podstartup --json` at a tiny size runs end to end on this host (a
//! real `berth server` and `berth kubelet`, real containers, crun) and reports sane figures, and
//! leaves no cgroup behind. Needs root, /bin/busybox, crun and overlayfs; skips otherwise (fails
//! under BERTH_REQUIRE_PRIVILEGED=1).

#[path = "support/bench.rs"]
mod bench;

use std::path::Path;
use std::process::Command;

use bench::{is_root, number, run_json, runnable};

fn can_run() -> bool {
    let reason = if !is_root() {
        Some("the benchmark needs root".to_string())
    } else if !std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .contains("overlay")
    {
        Some("no overlayfs".into())
    } else {
        ["/bin/busybox", "/usr/bin/crun"]
            .into_iter()
            .find(|t| !Path::new(t).exists())
            .map(|t| format!("{t} is not installed"))
    };
    runnable(reason)
}

/// Available space of the filesystem holding `dir` in percent of its size (as the kubelet's
/// `nodefs.available` counts it), from `df -P`.
fn available_percent(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-P").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<u64> = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let (total, available) = (*fields.first()?, *fields.get(2)?);
    (total > 0).then(|| available * 100 / total)
}

#[test]
fn tiny_json_run_reports_every_figure() {
    if !can_run() {
        return;
    }
    let mut args: Vec<String> = [
        "bench",
        "podstartup",
        "--pods",
        "3",
        "--single",
        "3",
        "--crun-iterations",
        "3",
        "--json",
    ]
    .map(String::from)
    .to_vec();
    // The kubelet taints a node whose data directory's filesystem has under 10% available with
    // DiskPressure, and no pod would schedule: a nearly full /tmp moves the run to /dev/shm.
    let tmp = std::env::temp_dir();
    if available_percent(&tmp).is_some_and(|p| p < 15) && Path::new("/dev/shm").is_dir() {
        args.extend(["--dir".to_string(), "/dev/shm".to_string()]);
    }
    let report = run_json(&args);

    assert_eq!(report["single_pods"], 3, "{report}");
    assert_eq!(report["burst_pods"], 3);
    assert_eq!(report["shims"], 3, "a shim per running burst pod: {report}");
    let (p50, p99) = (
        number(&report, "single_p50_ms"),
        number(&report, "single_p99_ms"),
    );
    assert!(0.0 < p50 && p50 <= p99, "single p50 {p50} p99 {p99}");
    let all = number(&report, "burst100_all_ready_ms");
    assert!(
        0.0 < all && number(&report, "burst_p99_ms") <= all + 1.0,
        "no pod is Ready after the last: {report}"
    );
    let ratio = number(&report, "vs_crun_ratio");
    let (ours, crun) = (
        number(&report, "container_start_p50_ms"),
        number(&report, "crun_start_p50_ms"),
    );
    assert!(ours > 0.0 && crun > 0.0, "start times {ours} {crun}");
    assert!(
        (ratio - ours / crun).abs() < 1e-9,
        "ratio {ratio} of {ours}/{crun}"
    );
    let (kubelet, shim) = (
        number(&report, "kubelet_rss_kib"),
        number(&report, "shim_rss_max_kib"),
    );
    assert!(kubelet > 1024.0 && shim > 0.0, "rss {kubelet} {shim}");
    assert!(number(&report, "shim_rss_mean_kib") <= shim);

    // Its cleanup ran: no cgroup of the benchmark's node is left in any hierarchy.
    let base = report["cgroup_base"]
        .as_str()
        .expect("cgroup_base")
        .to_string();
    assert!(base.starts_with("berth-bench-"), "{base}");
    let leftovers: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| *n == base)
        .collect();
    assert!(leftovers.is_empty(), "cgroups left behind: {leftovers:?}");
}
