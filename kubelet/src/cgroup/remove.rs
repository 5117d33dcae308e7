//! Killing what is left in a cgroup subtree and removing it from every hierarchy.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
use nix::unistd::Pid;

use super::fs;
use super::manager::CgroupManager;
use super::CgroupError;
use crate::qos::QosClass;

/// How long a removal may wait for killed processes to leave and for rmdir to stop saying EBUSY.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a v1 freeze may take before we kill without it (a task in uninterruptible sleep
/// can hold FREEZING for long).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

impl CgroupManager {
    /// Kills whatever is left in the container's cgroups, waits until they are empty and
    /// removes them from every hierarchy. Missing is fine.
    pub fn remove_container(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: &str,
    ) -> Result<(), CgroupError> {
        let rel = self.container_rel(qos, pod_uid, container_dir)?;
        self.remove_tree(&rel).map(drop)
    }

    /// [`Self::remove_container`] for the pod and every container under it.
    pub fn remove_pod(&self, qos: QosClass, pod_uid: &str) -> Result<(), CgroupError> {
        let rel = self.pod_rel(qos, pod_uid)?;
        self.remove_tree(&rel).map(drop)
    }

    /// Removes everything under `<base>`, and `<base>` itself, deepest first, killing leftovers
    /// (`berth cleanup`). Returns how many cgroup directories it removed, over all hierarchies.
    pub fn cleanup_all(&self) -> Result<usize, CgroupError> {
        self.remove_tree(Path::new(self.base()))
    }

    fn remove_tree(&self, rel: &Path) -> Result<usize, CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        self.kill_tree(rel, deadline)?;
        let mut removed = 0;
        for root in self.hierarchies() {
            for dir in fs::subtree_post_order(&root.join(rel))? {
                if rmdir_cgroup(&dir, deadline)? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// v2: `cgroup.kill` (the kernel kills the whole subtree, no pid races). v1: freeze the
    /// subtree so nothing forks or exits, SIGKILL every pid, thaw. Then, in every hierarchy,
    /// kill whatever still shows up until the subtree is empty.
    fn kill_tree(&self, rel: &Path, deadline: Instant) -> Result<(), CgroupError> {
        if let Some(root) = self.unified() {
            let kill_file = root.join(rel).join("cgroup.kill");
            if kill_file.exists() {
                fs::write(&kill_file, 1)?;
            }
        }
        if let Some(root) = self.v1_root("freezer") {
            let dir = root.join(rel);
            if dir.is_dir() {
                let state = dir.join("freezer.state");
                fs::write(&state, "FROZEN")?;
                let frozen = wait_for(Instant::now() + FREEZE_TIMEOUT, || {
                    Ok(fs::read_or_empty(&state)?.trim() == "FROZEN")
                })?;
                if !frozen {
                    tracing::warn!(cgroup = %dir.display(), "freezing timed out; killing without it");
                }
                let killed = self.kill_pids(rel);
                fs::write(&state, "THAWED")?;
                killed?;
            }
        }
        // Without a freezer a pid could exit and be reused between reading and killing; with
        // one (or cgroup.kill) this loop finds nothing to kill.
        let done = wait_for(deadline, || Ok(self.kill_pids(rel)? == 0))?;
        if done {
            Ok(())
        } else {
            Err(CgroupError::NotEmpty {
                path: rel.to_owned(),
                waited_ms: REMOVE_TIMEOUT.as_millis(),
            })
        }
    }

    /// SIGKILLs every process in the subtree in any hierarchy; returns how many it found.
    fn kill_pids(&self, rel: &Path) -> Result<usize, CgroupError> {
        let me = std::process::id() as i32;
        let mut pids = BTreeSet::new();
        for root in self.hierarchies() {
            for dir in fs::subtree_post_order(&root.join(rel))? {
                // A pid of 0 is a process outside our pid namespace; kill(0) would be our group.
                pids.extend(fs::procs(&dir)?.into_iter().filter(|p| *p > 0 && *p != me));
            }
        }
        for &pid in &pids {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Kill {
                        path: rel.to_owned(),
                        pid,
                        source,
                    })
                }
            }
        }
        Ok(pids.len())
    }
}

/// Polls `check` with a growing pause (1 ms to 50 ms) until it holds or `deadline` passes.
fn wait_for(
    deadline: Instant,
    mut check: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let mut pause = Duration::from_millis(1);
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// rmdir, retrying EBUSY (exiting tasks still hold the cgroup for a moment). Returns whether it
/// removed the directory (missing is not an error). A directory that is not on a cgroup
/// filesystem is a unit test's fake: its control files are plain files and go first.
fn rmdir_cgroup(dir: &Path, deadline: Instant) -> Result<bool, CgroupError> {
    let mut last = None;
    let removed = wait_for(deadline, || match std::fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            last = Some(e);
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !on_cgroupfs(dir) => {
            remove_plain_files(dir)?;
            last = Some(e);
            Ok(false)
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            last = Some(e);
            Ok(false)
        }
        Err(source) => Err(CgroupError::Rmdir {
            path: dir.to_owned(),
            source,
        }),
    })?;
    match (removed, last) {
        (true, Some(e)) if e.kind() == ErrorKind::NotFound => Ok(false),
        (true, _) => Ok(true),
        (false, e) => Err(CgroupError::Rmdir {
            path: dir.to_owned(),
            source: e.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY)),
        }),
    }
}

fn on_cgroupfs(dir: &Path) -> bool {
    statfs(dir)
        .map(|s| {
            let t = s.filesystem_type();
            t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
        })
        .unwrap_or(true)
}

fn remove_plain_files(dir: &Path) -> Result<(), CgroupError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CgroupError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|source| CgroupError::Rmdir { path, source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::testutil::Fake;
    use crate::cgroup::{Mode, Resources};

    #[test]
    fn remove_container_pod_and_all_idempotently() {
        let f = Fake::new(Mode::Hybrid, "");
        let res = Resources {
            pids_max: Some(5),
            ..Resources::default()
        };
        let placement = f
            .mgr
            .ensure_container(QosClass::Burstable, "u", "c1", &res)
            .unwrap();
        f.mgr
            .ensure_container(QosClass::Burstable, "u", "c2", &res)
            .unwrap();
        f.mgr.ensure_pod(QosClass::Guaranteed, "g", &res).unwrap();

        f.mgr
            .remove_container(QosClass::Burstable, "u", "c1")
            .unwrap();
        assert!(placement
            .v1
            .iter()
            .chain(placement.unified.iter())
            .all(|d| !d.exists()));
        f.mgr
            .remove_container(QosClass::Burstable, "u", "c1")
            .unwrap();
        assert_eq!(
            f.mgr.list_containers(QosClass::Burstable, "u").unwrap(),
            ["c2"]
        );

        f.mgr.remove_pod(QosClass::Burstable, "u").unwrap();
        f.mgr.remove_pod(QosClass::Burstable, "u").unwrap();
        assert_eq!(
            f.mgr.list_pods().unwrap(),
            [(QosClass::Guaranteed, "g".to_owned())]
        );

        // Left: base, kubepods, burstable, podg in 8 hierarchies (v2 + 7 v1).
        assert_eq!(f.mgr.cleanup_all().unwrap(), 4 * 8);
        assert_eq!(f.mgr.cleanup_all().unwrap(), 0);
        for h in ["unified", "memory", "cpu,cpuacct", "cpuset", "devices"] {
            assert!(!f.path(h).join("berth").exists(), "{h}");
            assert!(f.path(h).exists(), "the hierarchy root stays: {h}");
        }
    }

    #[test]
    fn wait_for_gives_up_at_the_deadline() {
        let start = Instant::now();
        assert!(!wait_for(start + Duration::from_millis(20), || Ok(false)).unwrap());
        let mut n = 0;
        assert!(wait_for(start + Duration::from_secs(5), || {
            n += 1;
            Ok(n == 3)
        })
        .unwrap());
    }
}
