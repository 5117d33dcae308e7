//! The kubelet's `--eviction-hard` flag: `signal<threshold` pairs, comma-separated, e.g.
//! `memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,pid.available<10%`.

use std::str::FromStr;

use berth_api::Quantity;

use super::pressure::Thresholds;

/// The kubelet's own default for `--eviction-hard`.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,pid.available<10%";

impl FromStr for Thresholds {
    type Err = String;

    /// Signals left out keep their defaults, as with the kubelet.
    fn from_str(s: &str) -> Result<Thresholds, String> {
        let mut t = Thresholds::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (signal, value) = pair
                .split_once('<')
                .ok_or_else(|| format!("{pair:?}: expected signal<threshold"))?;
            let percent = || -> Result<f64, String> {
                let p = value.strip_suffix('%').ok_or_else(|| {
                    format!("{signal}: only a percentage is supported, got {value:?}")
                })?;
                let p: f64 = p
                    .parse()
                    .map_err(|_| format!("{signal}: bad percentage {value:?}"))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("{signal}: {value} is not within 0%..100%"));
                }
                Ok(p)
            };
            match signal {
                "memory.available" => {
                    let q =
                        Quantity::parse(value).map_err(|e| format!("{signal}: {value:?}: {e}"))?;
                    t.memory_available_bytes = u64::try_from(q.as_value())
                        .map_err(|_| format!("{signal}: {value:?} is negative"))?;
                }
                "nodefs.available" => t.nodefs_available_percent = percent()?,
                "nodefs.inodesFree" => t.nodefs_inodes_free_percent = percent()?,
                "pid.available" => t.pid_available_percent = percent()?,
                other => return Err(format!("unknown eviction signal {other:?}")),
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubelet_default_and_overrides() {
        let t: Thresholds = DEFAULT_EVICTION_HARD.parse().unwrap();
        assert_eq!(t, Thresholds::default());
        let t: Thresholds = "nodefs.available<1%, memory.available<1Gi".parse().unwrap();
        assert_eq!(t.nodefs_available_percent, 1.0);
        assert_eq!(t.memory_available_bytes, 1 << 30);
        assert_eq!(t.pid_available_percent, 10.0, "left out: the default");
        assert!("imagefs.available<1%"
            .parse::<Thresholds>()
            .unwrap_err()
            .contains("unknown"));
        assert!("nodefs.available<5Gi"
            .parse::<Thresholds>()
            .unwrap_err()
            .contains("percentage"));
        assert!("memory.available".parse::<Thresholds>().is_err());
        assert!("nodefs.available<150%".parse::<Thresholds>().is_err());
    }
}
