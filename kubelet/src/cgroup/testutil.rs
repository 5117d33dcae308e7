//! A fake cgroupfs in a tempdir: the hierarchy roots with the files the manager reads there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::mountinfo::V1_CONTROLLERS;
use super::{CgroupManager, Mode};

pub struct Fake {
    pub dir: tempfile::TempDir,
    pub mgr: CgroupManager,
}

impl Fake {
    /// `v2_controllers`: what the fake v2 root offers (ignored without a v2 root).
    pub fn new(mode: Mode, v2_controllers: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let unified = (mode != Mode::V1).then(|| {
            let root = dir.path().join("unified");
            std::fs::create_dir(&root).unwrap();
            std::fs::write(root.join("cgroup.controllers"), v2_controllers).unwrap();
            std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
            root
        });
        let mut v1 = BTreeMap::new();
        if mode != Mode::V2 {
            for c in V1_CONTROLLERS {
                // cpu and cpuacct co-mounted, as on most v1 distributions.
                let name = if c == "cpu" || c == "cpuacct" {
                    "cpu,cpuacct"
                } else {
                    c
                };
                let root = dir.path().join(name);
                std::fs::create_dir_all(&root).unwrap();
                v1.insert(c.to_owned(), root);
            }
            std::fs::write(dir.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
            std::fs::write(dir.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        }
        let mgr = CgroupManager::with_roots(mode, unified, v1, "berth").unwrap();
        Fake { dir, mgr }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        read(&self.path(rel))
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// Limits of every kind, for tests that check where each one is written.
pub fn limits() -> crate::cgroup::Resources {
    crate::cgroup::Resources {
        cpu_request_millis: 250,
        cpu_limit_millis: Some(500),
        memory_limit_bytes: Some(64 << 20),
        pids_max: Some(100),
        allow_all_devices: false,
    }
}
