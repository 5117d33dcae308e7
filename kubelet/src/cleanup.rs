//! `berth cleanup` for a kubelet's data directory: stops the pods' shims and containers, then
//! removes the cgroups under the kubelet's cgroup base, the pods' host veths, the volume mounts
//! and the kubelet's state. Only what this kubelet made: processes are found through its own
//! shims' pid files (and checked to be `berth shim` for that pod), links through its own address
//! allocator.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup::CgroupManager;
use crate::shim::{Request, ShimClient};
use crate::KubeletError;

/// How long a shim gets to stop its containers and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn cleanup(data_dir: &Path, cgroup_base: &str) -> Result<Vec<String>, KubeletError> {
    let mut done = Vec::new();
    let pods = data_dir.join("pods");
    let pod_dirs: Vec<PathBuf> = match std::fs::read_dir(&pods) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    for pod_dir in &pod_dirs {
        if stop_shim(pod_dir).await {
            done.push(format!("stopped the shim of {}", pod_dir.display()));
        }
    }
    match CgroupManager::detect(Path::new("/proc/self/mountinfo"), cgroup_base) {
        Ok(cgroups) => {
            let n = cgroups.cleanup_all()?;
            if n > 0 {
                done.push(format!("removed {n} cgroups under {cgroup_base}"));
            }
        }
        Err(e) => tracing::warn!(error = %e, "berth cleanup: no cgroups to clean"),
    }
    let links = berth_dataplane::podnet::cleanup_state(&data_dir.join("ipam")).await?;
    if links > 0 {
        done.push(format!("removed {links} pod links"));
    }
    let mountinfo = Path::new("/proc/self/mountinfo");
    for pod_dir in &pod_dirs {
        crate::podspec::unmount_pod_volumes(pod_dir, mountinfo).map_err(|e| {
            KubeletError::Config {
                message: format!("unmounting volumes: {e}"),
            }
        })?;
    }
    for dir in [pods, data_dir.join("images")] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => done.push(format!("removed {}", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KubeletError::Io {
                    op: "remove",
                    path: dir,
                    source,
                })
            }
        }
    }
    Ok(done)
}

/// Kills a pod's containers through its shim and shuts the shim down; as a last resort kills the
/// shim itself, once /proc confirms it is `berth shim` for this pod. True if a shim was running.
async fn stop_shim(pod_dir: &Path) -> bool {
    let Some(pid) = shim_pid(pod_dir) else {
        return false;
    };
    let client = ShimClient::new(pod_dir);
    let deadline = Instant::now() + STOP_TIMEOUT;
    if let Ok((_, states)) = client.state().await {
        for c in states.iter().filter(|c| c.exit.is_none()) {
            let _ = client
                .request(&Request::Kill {
                    id: c.id.clone(),
                    signal: libc::SIGKILL,
                })
                .await;
        }
        let _ = client.request(&Request::Shutdown).await;
    }
    while Instant::now() < deadline && shim_pid(pod_dir) == Some(pid) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if shim_pid(pod_dir) == Some(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    true
}

/// The pid in the pod's `shim.pid`, if that process is alive and is `berth shim --pod-dir
/// <pod_dir>`.
fn shim_pid(pod_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pod_dir.join("shim.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let ours = args.contains(&b"shim".as_slice())
        && args.windows(2).any(|w| {
            w[0] == b"--pod-dir" && Path::new(std::str::from_utf8(w[1]).unwrap_or("")) == pod_dir
        });
    ours.then_some(pid)
}
