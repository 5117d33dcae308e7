//! Writing a [`Resources`] into a pod's or container's cgroup files.

use std::collections::BTreeSet;
use std::path::Path;

use super::fs;
use super::manager::{CgroupManager, Ctl};
use super::resources::CPU_PERIOD_US;
use super::{CgroupError, Resources};

/// runc's default device rules (libcontainer/specconv `AllowedDevices`), in its order: mknod of
/// anything, then null, random, full, tty, zero, urandom, the pts slaves, ptmx and tun.
pub const DEFAULT_DEVICE_RULES: [&str; 11] = [
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

impl CgroupManager {
    /// Writes `res` to the cgroup at `rel` in whichever hierarchy holds each controller. A limit
    /// that no hierarchy can enforce is an error; a weight is best effort.
    pub(super) fn apply(
        &self,
        rel: &Path,
        res: &Resources,
        container: bool,
    ) -> Result<(), CgroupError> {
        match self.ctl("cpu") {
            Some(Ctl::V1(root)) => {
                let dir = root.join(rel);
                fs::write(&dir.join("cpu.shares"), res.cpu_shares())?;
                fs::write(&dir.join("cpu.cfs_period_us"), CPU_PERIOD_US)?;
                let quota = res.cpu_quota_us().map_or(-1, |q| q as i64);
                fs::write(&dir.join("cpu.cfs_quota_us"), quota)?;
            }
            Some(Ctl::V2(root)) => {
                let dir = root.join(rel);
                fs::write(&dir.join("cpu.weight"), res.cpu_weight())?;
                let quota = res
                    .cpu_quota_us()
                    .map_or("max".to_owned(), |q| q.to_string());
                fs::write(&dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"))?;
            }
            None if res.cpu_quota_us().is_some() => {
                return Err(CgroupError::ControllerUnavailable { controller: "cpu" });
            }
            None => {}
        }
        match self.ctl("memory") {
            Some(Ctl::V1(root)) => {
                let limit = res
                    .memory_limit_bytes
                    .map_or(-1, |b| b.min(i64::MAX as u64) as i64);
                fs::write(&root.join(rel).join("memory.limit_in_bytes"), limit)?;
            }
            Some(Ctl::V2(root)) => {
                let dir = root.join(rel);
                let limit = res
                    .memory_limit_bytes
                    .map_or("max".to_owned(), |b| b.to_string());
                fs::write(&dir.join("memory.max"), limit)?;
                if container {
                    // Kubernetes on v2: an OOM kills the whole container, not one process.
                    fs::write(&dir.join("memory.oom.group"), 1)?;
                    // And no swap (its NoSwap behaviour), where the kernel accounts swap.
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        fs::write(&swap, 0)?;
                    }
                }
            }
            None if res.memory_limit_bytes.is_some() => {
                return Err(CgroupError::ControllerUnavailable {
                    controller: "memory",
                });
            }
            None => {}
        }
        match self.ctl("pids") {
            Some(Ctl::V1(root) | Ctl::V2(root)) => {
                let max = res.pids_max.map_or("max".to_owned(), |n| n.to_string());
                fs::write(&root.join(rel).join("pids.max"), max)?;
            }
            None if res.pids_max.is_some() => {
                return Err(CgroupError::ControllerUnavailable { controller: "pids" });
            }
            None => {}
        }
        if let (true, Some(Ctl::V1(root))) = (container, self.ctl("devices")) {
            write_devices(&root.join(rel), res.allow_all_devices)?;
        }
        Ok(())
    }
}

/// Deny everything, then allow runc's defaults (or everything, for privileged containers).
/// Skipped when devices.list already says so: rewriting would briefly deny a running container.
fn write_devices(dir: &Path, allow_all: bool) -> Result<(), CgroupError> {
    let wanted: BTreeSet<&str> = if allow_all {
        BTreeSet::from(["a *:* rwm"])
    } else {
        DEFAULT_DEVICE_RULES.into_iter().collect()
    };
    let list = fs::read_or_empty(&dir.join("devices.list"))?;
    let current: BTreeSet<&str> = list.lines().map(str::trim).collect();
    if current == wanted {
        return Ok(());
    }
    if allow_all {
        return fs::write(&dir.join("devices.allow"), "a");
    }
    fs::write(&dir.join("devices.deny"), "a")?;
    for rule in DEFAULT_DEVICE_RULES {
        fs::write(&dir.join("devices.allow"), rule)?;
    }
    Ok(())
}
