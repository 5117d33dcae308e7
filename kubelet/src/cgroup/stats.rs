//! Usage figures for eviction and metrics, read from a pod's or container's cgroup.

use super::fs;
use super::manager::{CgroupManager, Ctl};
use super::CgroupError;
use crate::qos::QosClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUsage {
    /// memory.current / memory.usage_in_bytes (page cache included).
    pub usage_bytes: u64,
    /// Usage minus inactive file pages: what Kubernetes' eviction and metrics call working set.
    pub working_set_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStats {
    pub usage_nanos: u64,
    /// CFS periods with runnable tasks, and those in which the quota ran out (0 without a cpu
    /// controller).
    pub nr_periods: u64,
    pub nr_throttled: u64,
}

impl CgroupManager {
    pub fn memory_usage(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: Option<&str>,
    ) -> Result<MemoryUsage, CgroupError> {
        let rel = self.target_rel(qos, pod_uid, container_dir)?;
        let (dir, usage_file, inactive_key) = match self.ctl("memory") {
            Some(Ctl::V1(root)) => (
                root.join(&rel),
                "memory.usage_in_bytes",
                "total_inactive_file",
            ),
            Some(Ctl::V2(root)) => (root.join(&rel), "memory.current", "inactive_file"),
            None => {
                return Err(CgroupError::ControllerUnavailable {
                    controller: "memory",
                })
            }
        };
        let usage_bytes = fs::read_u64(&dir.join(usage_file))?;
        let inactive = fs::keyed_u64(&dir.join("memory.stat"), inactive_key).unwrap_or(0);
        Ok(MemoryUsage {
            usage_bytes,
            working_set_bytes: usage_bytes.saturating_sub(inactive),
        })
    }

    pub fn pids_current(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: Option<&str>,
    ) -> Result<u64, CgroupError> {
        let rel = self.target_rel(qos, pod_uid, container_dir)?;
        match self.ctl("pids") {
            Some(Ctl::V1(root) | Ctl::V2(root)) => {
                fs::read_u64(&root.join(rel).join("pids.current"))
            }
            None => Err(CgroupError::ControllerUnavailable { controller: "pids" }),
        }
    }

    /// CPU time used and CFS throttling. v1: cpuacct.usage and the cpu hierarchy's cpu.stat;
    /// v2: cpu.stat (usage_usec is there even without the cpu controller).
    pub fn cpu_stats(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: Option<&str>,
    ) -> Result<CpuStats, CgroupError> {
        let rel = self.target_rel(qos, pod_uid, container_dir)?;
        let usage_nanos = match (self.v1_root("cpuacct"), self.unified()) {
            (Some(root), _) => fs::read_u64(&root.join(&rel).join("cpuacct.usage"))?,
            (None, Some(root)) => {
                fs::keyed_u64(&root.join(&rel).join("cpu.stat"), "usage_usec")?.saturating_mul(1000)
            }
            (None, None) => {
                return Err(CgroupError::ControllerUnavailable {
                    controller: "cpuacct",
                })
            }
        };
        let (nr_periods, nr_throttled) = match self.ctl("cpu") {
            Some(Ctl::V1(root) | Ctl::V2(root)) => {
                let stat = root.join(&rel).join("cpu.stat");
                (
                    fs::keyed_u64(&stat, "nr_periods").unwrap_or(0),
                    fs::keyed_u64(&stat, "nr_throttled").unwrap_or(0),
                )
            }
            None => (0, 0),
        };
        Ok(CpuStats {
            usage_nanos,
            nr_periods,
            nr_throttled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::testutil::{limits, Fake};
    use crate::cgroup::Mode;

    #[test]
    fn stats() {
        let f = Fake::new(Mode::V1, "");
        f.mgr
            .ensure_container(QosClass::Burstable, "u", "c", &limits())
            .unwrap();
        let c = "berth/kubepods/burstable/podu/c";
        std::fs::write(
            f.path(&format!("memory/{c}/memory.usage_in_bytes")),
            "1000\n",
        )
        .unwrap();
        std::fs::write(
            f.path(&format!("memory/{c}/memory.stat")),
            "cache 5\ntotal_inactive_file 300\n",
        )
        .unwrap();
        std::fs::write(f.path(&format!("pids/{c}/pids.current")), "7\n").unwrap();
        std::fs::write(
            f.path(&format!("cpu,cpuacct/{c}/cpuacct.usage")),
            "123456\n",
        )
        .unwrap();
        std::fs::write(
            f.path(&format!("cpu,cpuacct/{c}/cpu.stat")),
            "nr_periods 10\nnr_throttled 4\nthrottled_time 9\n",
        )
        .unwrap();
        let m = f
            .mgr
            .memory_usage(QosClass::Burstable, "u", Some("c"))
            .unwrap();
        assert_eq!(
            m,
            MemoryUsage {
                usage_bytes: 1000,
                working_set_bytes: 700
            }
        );
        assert_eq!(
            f.mgr
                .pids_current(QosClass::Burstable, "u", Some("c"))
                .unwrap(),
            7
        );
        let cpu = f
            .mgr
            .cpu_stats(QosClass::Burstable, "u", Some("c"))
            .unwrap();
        assert_eq!(
            cpu,
            CpuStats {
                usage_nanos: 123456,
                nr_periods: 10,
                nr_throttled: 4
            }
        );

        let f = Fake::new(Mode::V2, "cpu memory pids");
        f.mgr
            .ensure_pod(QosClass::Guaranteed, "u", &limits())
            .unwrap();
        let p = "unified/berth/kubepods/podu";
        std::fs::write(f.path(&format!("{p}/memory.current")), "2000\n").unwrap();
        std::fs::write(
            f.path(&format!("{p}/memory.stat")),
            "anon 1\ninactive_file 500\n",
        )
        .unwrap();
        std::fs::write(
            f.path(&format!("{p}/cpu.stat")),
            "usage_usec 7\nnr_periods 3\nnr_throttled 1\n",
        )
        .unwrap();
        let m = f.mgr.memory_usage(QosClass::Guaranteed, "u", None).unwrap();
        assert_eq!(m.working_set_bytes, 1500);
        let cpu = f.mgr.cpu_stats(QosClass::Guaranteed, "u", None).unwrap();
        assert_eq!(
            cpu,
            CpuStats {
                usage_nanos: 7000,
                nr_periods: 3,
                nr_throttled: 1
            }
        );
    }
}
