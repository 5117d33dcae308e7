//! `berth bench apiserver --quick --json` runs end to end and reports every figure.

use std::process::Command;

const MODES: [&str; 2] = ["io_uring", "epoll"];
const LATENCY: [&str; 4] = ["p50", "p99", "p999", "max"];

/// Workload names and units of a quick run (100 pods, 100 watchers).
const WORKLOADS: [(&str, &str); 6] = [
    ("create_sequential", "us"),
    ("create_concurrent", "us"),
    ("get_100", "us"),
    ("list_100", "us"),
    ("fanout_100", "ms"),
    ("fanout_100_each", "ms"),
];

fn positive(v: &serde_json::Value, what: &str) {
    let n = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(n > 0.0 && n.is_finite(), "{what} = {n}");
}

#[test]
fn quick_json_run_reports_every_figure_for_both_modes() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["bench", "apiserver", "--quick", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running berth bench apiserver");
    assert!(
        out.status.success(),
        "exit {}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    for mode in MODES {
        for (name, unit) in WORKLOADS {
            for q in LATENCY {
                let key = format!("{name}_{q}_{unit}");
                positive(&report[mode][&key], &format!("{mode}.{key}"));
            }
        }
        for name in ["create_sequential", "create_concurrent"] {
            let key = format!("{name}_per_sec");
            positive(&report[mode][&key], &format!("{mode}.{key}"));
        }
    }
    for (name, _) in WORKLOADS {
        for q in ["p50", "p99", "p999"] {
            let key = format!("{name}_{q}");
            positive(&report["ratios"][&key], &format!("ratios.{key}"));
        }
    }
    positive(
        &report["ratios"]["create_concurrent_per_sec"],
        "ratios.create_concurrent_per_sec",
    );
    assert_eq!(report["skipped"], serde_json::json!([]));
    positive(&report["host"]["nproc"], "host.nproc");
    assert!(!report["host"]["kernel"].as_str().unwrap().is_empty());
    assert!(report["date"].as_str().unwrap().ends_with('Z'));
}
