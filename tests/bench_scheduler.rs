//! `berth bench scheduler --json` at a tiny size runs end to end: every pod is bound, and the
//! figures are present and consistent.

use std::process::Command;

fn number(report: &serde_json::Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {}", report[key]))
}

#[test]
fn tiny_json_run_binds_every_pod_and_reports_the_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "bench",
            "scheduler",
            "--nodes",
            "20",
            "--pods",
            "50",
            "--existing",
            "10",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running berth bench scheduler");
    assert!(
        out.status.success(),
        "exit {}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    assert_eq!(report["nodes"], 20);
    assert_eq!(report["pods"], 50);
    assert_eq!(report["existing"], 10);
    assert_eq!(report["binds"], 50, "every measured pod is bound");

    let (p50, p99, p999) = (
        number(&report, "p50_ms"),
        number(&report, "p99_ms"),
        number(&report, "p999_ms"),
    );
    assert!(p50 > 0.0, "p50_ms = {p50}");
    assert!(
        p50 <= p99 && p99 <= p999,
        "percentiles out of order: {p50} {p99} {p999}"
    );
    let wall = number(&report, "wall_secs");
    let rate = number(&report, "pods_per_sec");
    assert!(wall > 0.0 && rate.is_finite(), "wall {wall} s, rate {rate}");
    assert!(
        (rate * wall - 50.0).abs() < 0.5,
        "pods_per_sec × wall_secs must be the pods bound: {rate} × {wall}"
    );
    // No pod can take longer to bind than the whole measured window.
    assert!(
        p999 <= wall * 1000.0 + 1.0,
        "p99.9 {p999} ms > wall {wall} s"
    );
}
