//! What a cgroup is asked to enforce, already in the kernel's units.

use serde::{Deserialize, Serialize};

/// Limits and weights for one pod or container cgroup. `None` means "no limit" (`max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU request in millicores: cpu.weight on v2, cpu.shares on v1 (Kubernetes' conversion:
    /// shares = millis × 1024 / 1000, min 2; weight = 1 + (shares − 2) × 9999 / 262142).
    pub cpu_request_millis: u64,
    /// CPU limit in millicores: cpu.max / cpu.cfs_quota_us over a 100 ms period.
    pub cpu_limit_millis: Option<u64>,
    /// memory.max / memory.limit_in_bytes.
    pub memory_limit_bytes: Option<u64>,
    /// pids.max.
    pub pids_max: Option<u64>,
}
