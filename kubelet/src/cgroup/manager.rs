//! The cgroup manager: paths per QoS class, creating pod and container cgroups, reading stats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::fs::{self, check_name};
use super::mountinfo::Roots;
use super::resources::MIN_SHARES;
use super::{CgroupError, Mode, Resources};
use crate::qos::QosClass;
use crate::runtime::spec::CgroupPlacement;

/// The v2 controllers Berth sets limits with.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// One pod's or container's cgroups, and the driver for all of them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    mode: Mode,
    roots: Roots,
    /// The controllers the v2 root offers (its `cgroup.controllers`).
    v2_available: BTreeSet<String>,
    base: String,
}

/// Where a controller lives.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ctl<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

impl CgroupManager {
    /// From `/proc/self/mountinfo` (the path is given for tests). `base` is the one top cgroup
    /// Berth owns in every hierarchy, named `berth…`, e.g. `berth` → `<root>/berth/kubepods/…`.
    pub fn detect(mountinfo: &Path, base: &str) -> Result<Self, CgroupError> {
        let roots = Roots::read(mountinfo)?;
        let mode = roots.mode().ok_or_else(|| CgroupError::NoHierarchy {
            path: mountinfo.to_owned(),
        })?;
        Self::with_roots(mode, roots.unified, roots.v1, base)
    }

    /// From explicit roots: a fake cgroupfs in a tempdir, or a cgroup2 mount a test made.
    pub fn with_roots(
        mode: Mode,
        unified: Option<PathBuf>,
        v1: BTreeMap<String, PathBuf>,
        base: &str,
    ) -> Result<Self, CgroupError> {
        check_name(base)?;
        if !base.starts_with("berth") {
            return Err(CgroupError::InvalidName {
                name: base.to_owned(),
                reason: "the base cgroup must be named berth…",
            });
        }
        let v2_available = match &unified {
            Some(root) => fs::read_or_empty(&root.join("cgroup.controllers"))?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            None => BTreeSet::new(),
        };
        Ok(CgroupManager {
            mode,
            roots: Roots { unified, v1 },
            v2_available,
            base: base.to_owned(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The controllers Berth can set limits with, and where: `("memory", "v1")`, …
    pub fn controllers(&self) -> Vec<(&'static str, &'static str)> {
        ["cpu", "memory", "pids", "cpuset", "devices", "freezer"]
            .into_iter()
            .filter_map(|c| match self.ctl(c)? {
                Ctl::V1(_) => Some((c, "v1")),
                Ctl::V2(_) => Some((c, "v2")),
            })
            .collect()
    }

    /// The directory of a pod's (`container_dir: None`) or container's cgroup in the hierarchy
    /// that holds `controller`, for reading files this API does not cover.
    pub fn controller_dir(
        &self,
        controller: &str,
        qos: QosClass,
        pod_uid: &str,
        container_dir: Option<&str>,
    ) -> Result<Option<PathBuf>, CgroupError> {
        let rel = self.target_rel(qos, pod_uid, container_dir)?;
        Ok(self.ctl(controller).map(|c| match c {
            Ctl::V1(root) | Ctl::V2(root) => root.join(rel),
        }))
    }

    /// The v1 hierarchy that has `controller`, else the v2 root if it offers it.
    pub(super) fn ctl(&self, controller: &str) -> Option<Ctl<'_>> {
        if let Some(root) = self.roots.v1.get(controller) {
            return Some(Ctl::V1(root));
        }
        let root = self.roots.unified.as_deref()?;
        self.v2_available
            .contains(controller)
            .then_some(Ctl::V2(root))
    }

    /// The v2 controllers pod-level cgroups must pass down (`cgroup.subtree_control`).
    pub(super) fn v2_delegated(&self) -> Vec<&'static str> {
        V2_CONTROLLERS
            .into_iter()
            .filter(|c| matches!(self.ctl(c), Some(Ctl::V2(_))))
            .collect()
    }

    /// Every hierarchy root Berth uses: the v2 one first, then the distinct v1 ones.
    pub(super) fn hierarchies(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.roots.unified.iter().cloned().collect();
        out.extend(self.roots.v1_hierarchies());
        out
    }

    pub(super) fn unified(&self) -> Option<&Path> {
        self.roots.unified.as_deref()
    }

    pub(super) fn v1_root(&self, controller: &str) -> Option<&Path> {
        self.roots.v1.get(controller).map(PathBuf::as_path)
    }

    /// `<base>/kubepods[/burstable|/besteffort]`, relative to a hierarchy root.
    pub(super) fn qos_rel(&self, qos: QosClass) -> PathBuf {
        let kubepods = Path::new(&self.base).join("kubepods");
        match qos {
            QosClass::Guaranteed => kubepods,
            QosClass::Burstable => kubepods.join("burstable"),
            QosClass::BestEffort => kubepods.join("besteffort"),
        }
    }

    pub(super) fn pod_rel(&self, qos: QosClass, pod_uid: &str) -> Result<PathBuf, CgroupError> {
        check_name(pod_uid)?;
        Ok(self.qos_rel(qos).join(format!("pod{pod_uid}")))
    }

    pub(super) fn container_rel(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: &str,
    ) -> Result<PathBuf, CgroupError> {
        check_name(container_dir)?;
        Ok(self.pod_rel(qos, pod_uid)?.join(container_dir))
    }

    /// Where the runtime puts a container's first process.
    pub fn placement(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: &str,
    ) -> Result<CgroupPlacement, CgroupError> {
        let rel = self.container_rel(qos, pod_uid, container_dir)?;
        Ok(CgroupPlacement {
            unified: self.roots.unified.as_ref().map(|r| r.join(&rel)),
            v1: self
                .roots
                .v1_hierarchies()
                .iter()
                .map(|r| r.join(&rel))
                .collect(),
        })
    }

    /// `<base>/kubepods/{burstable,besteffort}/pod<uid>` in every hierarchy, with the pod-level
    /// limits; creates the ancestors (cpuset copied from the parent on v1, controllers enabled in
    /// `cgroup.subtree_control` on v2). Idempotent: limits are rewritten.
    pub fn ensure_pod(
        &self,
        qos: QosClass,
        pod_uid: &str,
        res: &Resources,
    ) -> Result<(), CgroupError> {
        let rel = self.pod_rel(qos, pod_uid)?;
        self.create_path(&rel, true)?;
        self.apply(&rel, res, false)
    }

    /// `<pod>/<container_dir>` with its limits (pod ancestors created if missing, without pod
    /// limits); returns the placement for the runtime.
    pub fn ensure_container(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: &str,
        res: &Resources,
    ) -> Result<CgroupPlacement, CgroupError> {
        let rel = self.container_rel(qos, pod_uid, container_dir)?;
        self.create_path(&rel, false)?;
        self.apply(&rel, res, true)?;
        self.placement(qos, pod_uid, container_dir)
    }

    /// Creates every missing component of `rel` below the hierarchy roots. On v2 every created
    /// ancestor passes Berth's controllers down; the leaf too when it is a pod (its containers
    /// need them), never a container (v2 allows processes only in leaves without them).
    fn create_path(&self, rel: &Path, leaf_delegates: bool) -> Result<(), CgroupError> {
        let delegated = self.v2_delegated();
        let components: Vec<_> = rel.components().collect();
        for root in self.hierarchies() {
            let is_unified = Some(root.as_path()) == self.unified();
            let is_cpuset = self.v1_root("cpuset") == Some(root.as_path());
            if is_unified && !delegated.is_empty() {
                // The one write outside <base>: a pure v2 host whose root does not yet pass
                // our controllers down (systemd normally does).
                self.enable_controllers(&root, &delegated)?;
            }
            let mut dir = root.clone();
            for (i, component) in components.iter().enumerate() {
                dir.push(component);
                fs::mkdir(&dir)?;
                if is_cpuset {
                    copy_cpuset(&dir)?;
                }
                let last = i + 1 == components.len();
                if is_unified && !delegated.is_empty() && (!last || leaf_delegates) {
                    self.enable_controllers(&dir, &delegated)?;
                }
            }
        }
        if rel.starts_with(self.qos_rel(QosClass::BestEffort)) {
            // Kubernetes gives the BestEffort class the minimum cpu.shares / cpu.weight.
            let qos = self.qos_rel(QosClass::BestEffort);
            match self.ctl("cpu") {
                Some(Ctl::V1(root)) => fs::write(&root.join(qos).join("cpu.shares"), MIN_SHARES)?,
                Some(Ctl::V2(root)) => fs::write(&root.join(qos).join("cpu.weight"), 1)?,
                None => {}
            }
        }
        Ok(())
    }

    fn enable_controllers(&self, dir: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
        let path = dir.join("cgroup.subtree_control");
        let current = fs::read_or_empty(&path)?;
        let enabled: BTreeSet<&str> = current.split_whitespace().collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|c| !enabled.contains(*c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Some(dir) == self.unified() {
            tracing::info!(root = %dir.display(), controllers = ?missing, "enabling cgroup v2 controllers in the root");
        }
        fs::write(&path, missing.join(" "))
    }

    /// Pods that have a cgroup in any hierarchy (after a restart, to re-adopt or clean up).
    pub fn list_pods(&self) -> Result<Vec<(QosClass, String)>, CgroupError> {
        let mut pods = BTreeSet::new();
        for root in self.hierarchies() {
            for qos in [
                QosClass::Guaranteed,
                QosClass::Burstable,
                QosClass::BestEffort,
            ] {
                for dir in fs::subdirs(&root.join(self.qos_rel(qos)))? {
                    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if let Some(uid) = name.strip_prefix("pod").filter(|u| !u.is_empty()) {
                        pods.insert((qos, uid.to_owned()));
                    }
                }
            }
        }
        Ok(pods.into_iter().collect())
    }

    /// The container directories under a pod, in any hierarchy.
    pub fn list_containers(
        &self,
        qos: QosClass,
        pod_uid: &str,
    ) -> Result<Vec<String>, CgroupError> {
        let rel = self.pod_rel(qos, pod_uid)?;
        let mut out = BTreeSet::new();
        for root in self.hierarchies() {
            for dir in fs::subdirs(&root.join(&rel))? {
                if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
                    out.insert(name.to_owned());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// A pod's (`container_dir: None`) or a container's cgroup relative path.
    pub(super) fn target_rel(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: Option<&str>,
    ) -> Result<PathBuf, CgroupError> {
        match container_dir {
            Some(c) => self.container_rel(qos, pod_uid, c),
            None => self.pod_rel(qos, pod_uid),
        }
    }
}

/// A new v1 cpuset cgroup has empty cpus and mems and refuses tasks: take the parent's.
fn copy_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = fs::read_or_empty(&dir.join(file))?;
        if own.trim().is_empty() {
            let inherited = fs::read(&parent.join(file))?;
            fs::write(&dir.join(file), inherited.trim())?;
        }
    }
    Ok(())
}

/// Moves `pid` into every cgroup of a placement (v1 hierarchies, and the v2 one unless the
/// runtime created the process there with CLONE_INTO_CGROUP).
pub fn attach(placement: &CgroupPlacement, pid: u32) -> Result<(), CgroupError> {
    for dir in placement.v1.iter().chain(placement.unified.iter()) {
        fs::write(&dir.join("cgroup.procs"), pid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::testutil::{limits, Fake};

    #[test]
    fn layout_per_qos() {
        let f = Fake::new(Mode::V2, "cpu memory pids");
        let p = |q, c| f.mgr.placement(q, "u1", c).unwrap().unified.unwrap();
        let root = f.path("unified/berth/kubepods");
        assert_eq!(p(QosClass::Guaranteed, "c"), root.join("podu1/c"));
        assert_eq!(p(QosClass::Burstable, "c"), root.join("burstable/podu1/c"));
        assert_eq!(
            p(QosClass::BestEffort, "c"),
            root.join("besteffort/podu1/c")
        );
        assert!(f.mgr.placement(QosClass::Guaranteed, "../x", "c").is_err());
        assert!(f.mgr.placement(QosClass::Guaranteed, "u", "..").is_err());
        assert!(f
            .mgr
            .ensure_pod(QosClass::Guaranteed, "a/b", &limits())
            .is_err());
        let bad_base = CgroupManager::with_roots(Mode::V2, None, BTreeMap::new(), "kubepods");
        assert!(matches!(bad_base, Err(CgroupError::InvalidName { .. })));
    }

    #[test]
    fn v2_pod_and_container_files() {
        let f = Fake::new(Mode::V2, "cpuset cpu io memory pids");
        f.mgr
            .ensure_pod(QosClass::Burstable, "u1", &limits())
            .unwrap();
        let placement = f
            .mgr
            .ensure_container(QosClass::Burstable, "u1", "c1", &limits())
            .unwrap();
        let pod = "unified/berth/kubepods/burstable/podu1";
        assert_eq!(placement.unified, Some(f.path(&format!("{pod}/c1"))));
        assert!(placement.v1.is_empty());
        // Controllers passed down from the root to the pod, not in the container.
        for dir in [
            "unified",
            "unified/berth",
            "unified/berth/kubepods",
            "unified/berth/kubepods/burstable",
            pod,
        ] {
            assert_eq!(
                f.read(&format!("{dir}/cgroup.subtree_control")),
                "+cpu +memory +pids",
                "{dir}"
            );
        }
        assert!(!f.path(&format!("{pod}/c1/cgroup.subtree_control")).exists());
        for dir in [pod.to_owned(), format!("{pod}/c1")] {
            assert_eq!(f.read(&format!("{dir}/cpu.weight")), "10");
            assert_eq!(f.read(&format!("{dir}/cpu.max")), "50000 100000");
            assert_eq!(
                f.read(&format!("{dir}/memory.max")),
                (64u64 << 20).to_string()
            );
            assert_eq!(f.read(&format!("{dir}/pids.max")), "100");
        }
        assert_eq!(f.read(&format!("{pod}/c1/memory.oom.group")), "1");
        assert!(!f.path(&format!("{pod}/memory.oom.group")).exists());

        // Unlimited is "max"; rewriting is idempotent.
        f.mgr
            .ensure_container(QosClass::Burstable, "u1", "c1", &Resources::default())
            .unwrap();
        assert_eq!(f.read(&format!("{pod}/c1/cpu.max")), "max 100000");
        assert_eq!(f.read(&format!("{pod}/c1/memory.max")), "max");
        assert_eq!(f.read(&format!("{pod}/c1/pids.max")), "max");
        assert_eq!(f.read(&format!("{pod}/c1/cpu.weight")), "1");
    }

    #[test]
    fn v2_root_already_delegating_is_not_written() {
        let f = Fake::new(Mode::V2, "cpu memory pids");
        std::fs::write(f.path("unified/cgroup.subtree_control"), "cpu memory pids").unwrap();
        f.mgr
            .ensure_pod(QosClass::Guaranteed, "u", &limits())
            .unwrap();
        assert_eq!(f.read("unified/cgroup.subtree_control"), "cpu memory pids");
        assert_eq!(
            f.read("unified/berth/kubepods/podu/cpu.max"),
            "50000 100000"
        );
    }

    #[test]
    fn besteffort_gets_minimum_weight() {
        let f = Fake::new(Mode::V2, "cpu memory pids");
        f.mgr
            .ensure_pod(QosClass::BestEffort, "u", &Resources::default())
            .unwrap();
        assert_eq!(f.read("unified/berth/kubepods/besteffort/cpu.weight"), "1");
        let f = Fake::new(Mode::V1, "");
        f.mgr
            .ensure_pod(QosClass::BestEffort, "u", &Resources::default())
            .unwrap();
        assert_eq!(
            f.read("cpu,cpuacct/berth/kubepods/besteffort/cpu.shares"),
            "2"
        );
    }

    #[test]
    fn v1_files_devices_and_cpuset() {
        let f = Fake::new(Mode::V1, "");
        assert_eq!(f.mgr.mode(), Mode::V1);
        f.mgr
            .ensure_pod(QosClass::Guaranteed, "u1", &limits())
            .unwrap();
        let placement = f
            .mgr
            .ensure_container(QosClass::Guaranteed, "u1", "c1", &limits())
            .unwrap();
        assert_eq!(placement.unified, None);
        // cpu and cpuacct share a hierarchy: seven directories, not eight.
        assert_eq!(placement.v1.len(), 7);
        assert!(placement
            .v1
            .iter()
            .all(|d| d.ends_with("berth/kubepods/podu1/c1") && d.is_dir()));
        for dir in ["berth/kubepods/podu1", "berth/kubepods/podu1/c1"] {
            assert_eq!(f.read(&format!("cpu,cpuacct/{dir}/cpu.shares")), "256");
            assert_eq!(
                f.read(&format!("cpu,cpuacct/{dir}/cpu.cfs_period_us")),
                "100000"
            );
            assert_eq!(
                f.read(&format!("cpu,cpuacct/{dir}/cpu.cfs_quota_us")),
                "50000"
            );
            assert_eq!(
                f.read(&format!("memory/{dir}/memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            assert_eq!(f.read(&format!("pids/{dir}/pids.max")), "100");
            assert_eq!(f.read(&format!("cpuset/{dir}/cpuset.cpus")), "0-1");
            assert_eq!(f.read(&format!("cpuset/{dir}/cpuset.mems")), "0");
        }
        let c = "devices/berth/kubepods/podu1/c1";
        assert_eq!(f.read(&format!("{c}/devices.deny")), "a");
        // The fake keeps only the last write: runc's list ends with tun.
        assert_eq!(f.read(&format!("{c}/devices.allow")), "c 10:200 rwm");
        assert!(!f.path("devices/berth/kubepods/podu1/devices.deny").exists());

        // Unlimited is -1 / max.
        f.mgr
            .ensure_container(QosClass::Guaranteed, "u1", "c1", &Resources::default())
            .unwrap();
        let c = "berth/kubepods/podu1/c1";
        assert_eq!(f.read(&format!("cpu,cpuacct/{c}/cpu.cfs_quota_us")), "-1");
        assert_eq!(f.read(&format!("cpu,cpuacct/{c}/cpu.shares")), "2");
        assert_eq!(f.read(&format!("memory/{c}/memory.limit_in_bytes")), "-1");
        assert_eq!(f.read(&format!("pids/{c}/pids.max")), "max");
    }

    #[test]
    fn hybrid_limits_go_to_v1_and_processes_to_both() {
        let f = Fake::new(Mode::Hybrid, "hugetlb");
        assert_eq!(
            f.mgr.controllers(),
            [
                ("cpu", "v1"),
                ("memory", "v1"),
                ("pids", "v1"),
                ("cpuset", "v1"),
                ("devices", "v1"),
                ("freezer", "v1")
            ]
        );
        let placement = f
            .mgr
            .ensure_container(QosClass::Burstable, "u", "c", &limits())
            .unwrap();
        let unified = placement.unified.unwrap();
        assert!(unified.is_dir());
        assert_eq!(placement.v1.len(), 7);
        // Nothing written in the v2 tree: none of our controllers live there.
        assert_eq!(f.read("unified/cgroup.subtree_control"), "");
        assert!(!unified.join("memory.max").exists());
        assert!(f
            .path("memory/berth/kubepods/burstable/podu/c/memory.limit_in_bytes")
            .exists());
    }

    #[test]
    fn limits_without_a_controller_are_errors() {
        let f = Fake::new(Mode::V2, "hugetlb");
        // Weights are best effort, so a pod without limits is fine…
        f.mgr
            .ensure_pod(QosClass::Burstable, "u", &Resources::default())
            .unwrap();
        // …but a limit nobody can enforce is not.
        let res = Resources {
            memory_limit_bytes: Some(1 << 20),
            ..Resources::default()
        };
        let err = f
            .mgr
            .ensure_container(QosClass::Burstable, "u", "c", &res)
            .unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::ControllerUnavailable {
                    controller: "memory"
                }
            ),
            "{err}"
        );
        assert_eq!(f.read("unified/cgroup.subtree_control"), "");
    }

    #[test]
    fn list_pods_and_containers() {
        let f = Fake::new(Mode::Hybrid, "");
        f.mgr
            .ensure_pod(QosClass::Guaranteed, "g", &limits())
            .unwrap();
        f.mgr
            .ensure_container(QosClass::Burstable, "b", "c1", &limits())
            .unwrap();
        f.mgr
            .ensure_container(QosClass::Burstable, "b", "c2", &limits())
            .unwrap();
        f.mgr
            .ensure_pod(QosClass::BestEffort, "e", &Resources::default())
            .unwrap();
        // A pod left in one hierarchy only still counts.
        std::fs::create_dir_all(f.path("pids/berth/kubepods/besteffort/podx")).unwrap();
        assert_eq!(
            f.mgr.list_pods().unwrap(),
            [
                (QosClass::Guaranteed, "g".to_owned()),
                (QosClass::Burstable, "b".to_owned()),
                (QosClass::BestEffort, "e".to_owned()),
                (QosClass::BestEffort, "x".to_owned()),
            ]
        );
        assert_eq!(
            f.mgr.list_containers(QosClass::Burstable, "b").unwrap(),
            ["c1", "c2"]
        );
        assert!(f
            .mgr
            .list_containers(QosClass::Burstable, "none")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn attach_writes_every_hierarchy() {
        let f = Fake::new(Mode::Hybrid, "");
        let placement = f
            .mgr
            .ensure_container(QosClass::Burstable, "u", "c", &limits())
            .unwrap();
        attach(&placement, 4242).unwrap();
        for dir in placement.v1.iter().chain(placement.unified.iter()) {
            assert_eq!(
                crate::cgroup::testutil::read(&dir.join("cgroup.procs")),
                "4242"
            );
        }
    }
}
