//! Capability names to the bit masks capset(2) and PR_CAPBSET_DROP take, and the defaults
//! Kubernetes users expect (containerd's set, runc's masked and read-only paths).

use super::RuntimeError;

/// containerd's default capability set for non-privileged containers, spelled as Kubernetes
/// spells them (no `CAP_` prefix).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// containerd's default masked paths (runc's, plus powercap).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's (and runc's) default read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn default_masked_paths() -> Vec<String> {
    MASKED_PATHS.iter().map(|p| p.to_string()).collect()
}

pub fn default_readonly_paths() -> Vec<String> {
    READONLY_PATHS.iter().map(|p| p.to_string()).collect()
}

/// Every capability Linux 6.x knows (up to CAP_CHECKPOINT_RESTORE), for `add: [ALL]` and
/// privileged containers.
pub const ALL_CAPABILITIES: &[&str] = NAMES;

/// Capability numbers (linux/capability.h), by index.
const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability number for `name` (`NET_ADMIN`, `CAP_NET_ADMIN`, any case).
pub(crate) fn number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// The mask of `names` among capabilities `0..=last_cap`. `ALL` selects every capability the
/// runtime itself holds (`current`), as containerd does for privileged containers: a runtime
/// confined to fewer capabilities cannot hand out more.
pub(crate) fn mask(names: &[String], last_cap: u32, current: u64) -> Result<u64, RuntimeError> {
    let all = if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    };
    let mut mask = 0u64;
    for name in names {
        if name.eq_ignore_ascii_case("ALL") || name.eq_ignore_ascii_case("CAP_ALL") {
            mask |= all & current;
            continue;
        }
        let n =
            number(name).ok_or_else(|| RuntimeError::UnknownCapability { name: name.clone() })?;
        mask |= 1 << n;
    }
    Ok(mask & all)
}

/// The capabilities to drop from the bounding set: every one up to `last_cap` not in `keep`.
pub(crate) fn bounding_drops(keep: u64, last_cap: u32) -> Vec<u32> {
    (0..=last_cap.min(63))
        .filter(|c| keep & (1 << c) == 0)
        .collect()
}

/// This process's permitted capabilities (`CapPrm` in `<proc_root>/self/status`).
pub(crate) fn current(proc_root: &std::path::Path) -> Result<u64, RuntimeError> {
    let path = proc_root.join("self/status");
    let text = std::fs::read_to_string(&path).map_err(|source| RuntimeError::Host {
        op: "read",
        path: path.clone(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| RuntimeError::Host {
            op: "parse CapPrm in",
            path,
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })
}

/// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`).
pub(crate) fn last_cap(proc_root: &std::path::Path) -> Result<u32, RuntimeError> {
    let path = proc_root.join("sys/kernel/cap_last_cap");
    let text = std::fs::read_to_string(&path).map_err(|source| RuntimeError::Host {
        op: "read",
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| RuntimeError::Host {
        op: "parse",
        path,
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_containerds() {
        let names: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        // CapEff of a root container under containerd: 00000000a80425fb.
        assert_eq!(mask(&names, 40, u64::MAX).unwrap(), 0xa80425fb);
    }

    #[test]
    fn names_parse_with_or_without_prefix() {
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("sys_admin"), Some(21));
        assert_eq!(number("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("NOPE"), None);
        assert!(matches!(
            mask(&["NOPE".to_string()], 40, u64::MAX),
            Err(RuntimeError::UnknownCapability { name }) if name == "NOPE"
        ));
    }

    #[test]
    fn all_is_bounded_by_the_kernel() {
        assert_eq!(
            mask(&["ALL".to_string()], 40, u64::MAX).unwrap(),
            (1 << 41) - 1
        );
        assert_eq!(mask(&["ALL".to_string()], 40, 0b1010).unwrap(), 0b1010);
        assert_eq!(
            mask(&["CHECKPOINT_RESTORE".to_string()], 39, u64::MAX).unwrap(),
            0
        );
    }

    #[test]
    fn bounding_drops_everything_not_kept() {
        let drops = bounding_drops(0b101, 4);
        assert_eq!(drops, [1, 3, 4]);
        assert!(bounding_drops(u64::MAX, 40).is_empty());
    }

    #[test]
    fn last_cap_reads_the_proc_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        std::fs::write(dir.path().join("sys/kernel/cap_last_cap"), "40\n").unwrap();
        assert_eq!(last_cap(dir.path()).unwrap(), 40);
        assert!(last_cap(&dir.path().join("missing")).is_err());
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        std::fs::write(
            dir.path().join("self/status"),
            "Name:\tx\nCapPrm:\t000001fffeffffff\n",
        )
        .unwrap();
        assert_eq!(current(dir.path()).unwrap(), 0x1fffeffffff);
    }
}
