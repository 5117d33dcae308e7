//! Resident memory of the kubelet and of the pods' shims, from `/proc/<pid>/status`: `VmRSS`
//! (what the targets are about; it counts the pages of the shared `berth` binary each process
//! touched), `RssAnon` (the process's own pages: heap, stacks, and the binary's relocated
//! read-only data) and, from `smaps_rollup`, `Pss` (shared pages divided among their users).

use std::path::Path;

/// `VmRSS` and `RssAnon` in KiB, if the process exists.
pub fn rss_kib(proc_root: &Path, pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    Some((
        field_kib(&status, "VmRSS:")?,
        field_kib(&status, "RssAnon:").unwrap_or(0),
    ))
}

/// `Pss` in KiB, from `/proc/<pid>/smaps_rollup`.
pub fn pss_kib(proc_root: &Path, pid: u32) -> Option<u64> {
    let rollup =
        std::fs::read_to_string(proc_root.join(pid.to_string()).join("smaps_rollup")).ok()?;
    field_kib(&rollup, "Pss:")
}

fn field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The live shims of the pods under `pods_dir`: each pod directory's `shim.pid`, kept when that
/// process is `berth shim --pod-dir <that directory>`.
pub fn shim_pids(proc_root: &Path, pods_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(pods_dir) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for pod_dir in entries.flatten().map(|e| e.path()) {
        let Some(pid) = std::fs::read_to_string(pod_dir.join("shim.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let wanted = pod_dir.as_os_str().as_encoded_bytes();
        let ours = args.contains(&b"shim".as_slice())
            && args
                .windows(2)
                .any(|w| w[0] == b"--pod-dir" && w[1] == wanted);
        if ours {
            pids.push(pid);
        }
    }
    pids
}

/// Resident memory at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rss {
    pub kubelet_kib: u64,
    pub kubelet_anon_kib: u64,
    pub server_kib: u64,
    pub shims: usize,
    pub shim_max_kib: u64,
    pub shim_mean_kib: f64,
    pub shim_anon_max_kib: u64,
    pub shim_pss_mean_kib: f64,
}

pub fn measure(proc_root: &Path, kubelet: u32, server: u32, pods_dir: &Path) -> Rss {
    let shims: Vec<(u64, u64)> = shim_pids(proc_root, pods_dir)
        .into_iter()
        .filter_map(|pid| rss_kib(proc_root, pid))
        .collect();
    let pss: Vec<u64> = shim_pids(proc_root, pods_dir)
        .into_iter()
        .filter_map(|pid| pss_kib(proc_root, pid))
        .collect();
    let (kubelet_kib, kubelet_anon_kib) = rss_kib(proc_root, kubelet).unwrap_or_default();
    Rss {
        kubelet_kib,
        kubelet_anon_kib,
        server_kib: rss_kib(proc_root, server).map_or(0, |r| r.0),
        shims: shims.len(),
        shim_max_kib: shims.iter().map(|r| r.0).max().unwrap_or(0),
        shim_mean_kib: if shims.is_empty() {
            0.0
        } else {
            shims.iter().map(|r| r.0).sum::<u64>() as f64 / shims.len() as f64
        },
        shim_anon_max_kib: shims.iter().map(|r| r.1).max().unwrap_or(0),
        shim_pss_mean_kib: pss.iter().sum::<u64>() as f64 / pss.len().max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_are_found_through_their_pid_files_and_command_lines() {
        let root = tempfile::tempdir().unwrap();
        let (proc_root, pods) = (root.path().join("proc"), root.path().join("pods"));
        let pod = |uid: &str, pid: u32, cmdline: &[&str], rss: u64| {
            let dir = pods.join(uid);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("shim.pid"), format!("{pid}\n")).unwrap();
            let p = proc_root.join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            let mut line = cmdline.join("\0").replace("DIR", &dir.to_string_lossy());
            line.push('\0');
            std::fs::write(p.join("cmdline"), line).unwrap();
            std::fs::write(
                p.join("status"),
                format!("Name:\tx\nVmRSS:\t  {rss} kB\nRssAnon:\t {} kB\n", rss / 4),
            )
            .unwrap();
            let rollup = format!("Rss: {rss} kB\nPss: {} kB\n", rss / 2);
            std::fs::write(p.join("smaps_rollup"), rollup).unwrap();
        };
        pod(
            "a",
            10,
            &["/usr/bin/berth", "shim", "--pod-dir", "DIR"],
            700,
        );
        pod(
            "b",
            11,
            &["/usr/bin/berth", "shim", "--pod-dir", "DIR"],
            900,
        );
        // A recycled pid now running something else.
        pod("c", 12, &["/bin/sleep", "9"], 5000);
        let mut found = shim_pids(&proc_root, &pods);
        found.sort_unstable();
        assert_eq!(found, vec![10, 11]);
        let rss = measure(&proc_root, 12, 99, &pods);
        assert_eq!((rss.kubelet_kib, rss.server_kib), (5000, 0));
        assert_eq!((rss.shims, rss.shim_max_kib), (2, 900));
        assert!((rss.shim_mean_kib - 800.0).abs() < 1e-9);
        assert_eq!((rss.kubelet_anon_kib, rss.shim_anon_max_kib), (1250, 225));
        assert!((rss.shim_pss_mean_kib - 400.0).abs() < 1e-9);
    }

    #[test]
    fn rss_of_this_process() {
        let (rss, anon) = rss_kib(Path::new("/proc"), std::process::id()).unwrap();
        assert!(rss > 0 && anon > 0 && anon <= rss);
        assert_eq!(field_kib("Name: x\n", "VmRSS:"), None);
    }
}
