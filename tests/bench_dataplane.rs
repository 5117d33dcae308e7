//! Privileged: `berth bench dataplane --json` at tiny sizes runs end to end on this host (its
//! own namespaces, bpffs, cgroup, tap, iptables and nftables rules), every path answers (NodePort
//! through XDP and iptables too, on a tap uplink), the headline fields are there, and nothing is
//! left behind. Needs root, unshare, nsenter, ip, iptables-restore, nft, a cgroup2 mount,
//! /dev/net/tun and Linux 6.6 (tcx); skips otherwise (fails under BERTH_REQUIRE_PRIVILEGED=1).

#[path = "support/bench.rs"]
mod bench;

use std::path::Path;
use std::process::Command;

use bench::{is_root, number, run_json, runnable};

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

fn can_run() -> bool {
    let missing_tool = ["unshare", "nsenter", "ip", "iptables-restore", "nft"]
        .into_iter()
        .find(|t| !on_path(t));
    let cgroup2 = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .contains(" - cgroup2 ");
    let reason = if !is_root() {
        Some("the benchmark needs root".to_string())
    } else if let Some(tool) = missing_tool {
        Some(format!("{tool} is not installed"))
    } else if !cgroup2 {
        Some("no cgroup2 mount".into())
    } else if !kernel_at_least(6, 6) {
        Some("tcx needs Linux 6.6 or later".into())
    } else if !Path::new("/dev/net/tun").exists() {
        Some("no /dev/net/tun for the NodePort uplink".into())
    } else {
        None
    };
    runnable(reason)
}

#[test]
fn tiny_json_run_measures_every_path_and_cleans_up() {
    if !can_run() {
        return;
    }
    let args = [
        "bench",
        "dataplane",
        "--sizes",
        "1,3",
        "--duration-ms",
        "150",
        "--warmup-ms",
        "30",
        "--connections",
        "2",
        "--rate",
        "100",
        "--rounds",
        "1",
        "--direct-pairs",
        "2",
        "--repeats",
        "2",
        "--json",
    ];
    let report = run_json(&args);

    assert_eq!(report["ratios_at_services"], 3, "{report}");
    for key in ["ratio_vs_iptables_10k", "ratio_vs_direct"] {
        assert!(number(&report, key) > 0.0, "{key}: {report}");
    }
    assert!(number(&report, "add_one_service_at_10k_ms") > 0.0);
    // The extra direct/socket-LB pairs for ratio_vs_direct, each of which answered.
    assert_eq!(report["direct_pairs"], 2, "{report}");
    let pairs = report["direct_pair_runs"].as_array().expect("pair runs");
    assert_eq!(pairs.len(), 4, "{report}");
    for m in pairs {
        assert!(number(m, "requests") > 0.0, "no request answered: {m}");
        assert_eq!(m["errors"], 0, "failed requests: {m}");
    }
    // NodePort in packets/s: Berth's XDP and kube-proxy's iptables NodePort both forward
    // the flood out of the tap uplink, rewritten whole (the far end checks every frame).
    for key in [
        "nodeport_xdp_pps",
        "nodeport_iptables_pps",
        "nodeport_xdp_vs_iptables_pps_ratio",
        "nodeport_xdp_node_cpu_us_per_packet",
    ] {
        assert!(number(&report, key) > 0.0, "{key}: {report}");
    }
    let runs = report["nodeport_runs"].as_array().expect("nodeport runs");
    assert_eq!(runs.len(), 2, "{report}");
    for run in runs {
        assert!(number(run, "received") > 0.0, "no frame forwarded: {run}");
        assert!(number(run, "received") <= number(run, "sent"), "{run}");
        assert!(number(run, "packets") <= number(run, "received"), "{run}");
    }
    assert_eq!(report["nodeport_services"], 3);
    assert!(report["ipvs"].is_string() && report["iptables"].is_string());

    // Two sizes × five paths × three modes, each of which answered every request.
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 30, "{report}");
    for m in results {
        assert!(number(m, "requests") > 0.0, "no request answered: {m}");
        assert_eq!(m["errors"], 0, "failed requests: {m}");
        assert!(number(m, "p50_ms") <= number(m, "p99_ms"), "{m}");
        assert!(number(m, "cpu_us_per_request") > 0.0, "{m}");
    }
    let control = &report["control_plane"];
    assert_eq!(control["services"], 3);
    for key in [
        "berth_program_all_ms",
        "berth_endpoints_change_ms",
        "iptables_load_all_ms",
        "iptables_add_one_ms",
        "iptables_add_one_minimal_ms",
        "nft_load_all_ms",
        "nft_add_one_ms",
    ] {
        assert!(number(control, key) > 0.0, "{key}: {control}");
    }

    // Nothing left: the cgroup, the scratch directory (and the bpffs mounted in it), the links.
    for key in ["cgroup", "scratch"] {
        let path = report[key].as_str().expect("a path");
        assert!(path.contains("berth-bench-dataplane-"), "{path}");
        assert!(!Path::new(path).exists(), "{path} left behind");
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("berthbc0") && !links.contains("berthbs0"),
        "the benchmark's veths reached the host namespace:\n{links}"
    );
}
