//! What a cgroup is asked to enforce, already in the kernel's units.

use serde::{Deserialize, Serialize};

/// The CFS period Kubernetes uses for every quota: 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;
/// cpu.shares bounds (kernel and Kubernetes' `MinShares`/`MaxShares`).
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
/// Kubernetes' `MinQuotaPeriod`: the smallest quota it writes, 1 ms.
pub const MIN_QUOTA_US: u64 = 1_000;

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
    /// `privileged: true`: the v1 devices controller allows every device (containers only).
    #[serde(default)]
    pub allow_all_devices: bool,
}

impl Resources {
    /// Kubernetes' `MilliCPUToShares`: 0 → 2 (the kernel's minimum), clamped to [2, 262144].
    pub fn cpu_shares(&self) -> u64 {
        (self.cpu_request_millis.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
    }

    /// Kubernetes' `CPUSharesToCPUWeight` (cgroup v2 cpu.weight, 1..=10000).
    pub fn cpu_weight(&self) -> u64 {
        1 + (self.cpu_shares() - MIN_SHARES) * 9999 / (MAX_SHARES - MIN_SHARES)
    }

    /// Kubernetes' `MilliCPUToQuota` over [`CPU_PERIOD_US`]: `None` without a limit (a zero
    /// limit is no limit too), at least 1 ms.
    pub fn cpu_quota_us(&self) -> Option<u64> {
        let millis = self.cpu_limit_millis.filter(|m| *m > 0)?;
        Some((millis.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_QUOTA_US))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(request: u64, limit: Option<u64>) -> Resources {
        Resources {
            cpu_request_millis: request,
            cpu_limit_millis: limit,
            ..Resources::default()
        }
    }

    #[test]
    fn shares_weight_quota_match_kubernetes() {
        assert_eq!(cpu(0, None).cpu_shares(), 2);
        assert_eq!(cpu(1, None).cpu_shares(), 2);
        assert_eq!(cpu(100, None).cpu_shares(), 102);
        assert_eq!(cpu(1000, None).cpu_shares(), 1024);
        assert_eq!(cpu(1_000_000, None).cpu_shares(), MAX_SHARES);
        assert_eq!(cpu(0, None).cpu_weight(), 1);
        assert_eq!(cpu(100, None).cpu_weight(), 4);
        assert_eq!(cpu(1000, None).cpu_weight(), 39);
        assert_eq!(cpu(1_000_000, None).cpu_weight(), 10_000);
        assert_eq!(cpu(0, None).cpu_quota_us(), None);
        assert_eq!(cpu(0, Some(0)).cpu_quota_us(), None);
        assert_eq!(cpu(0, Some(1)).cpu_quota_us(), Some(1000));
        assert_eq!(cpu(0, Some(250)).cpu_quota_us(), Some(25_000));
        assert_eq!(cpu(0, Some(2000)).cpu_quota_us(), Some(200_000));
    }
}
