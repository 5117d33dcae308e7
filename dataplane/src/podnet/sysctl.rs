//! Per-interface IPv4 sysctls, for links Berth created and the node's uplink — never the global
//! ones (`all`, `default`, `net.ipv4.ip_forward`), which belong to the host.
//!
//! Why per interface is enough: the kernel decides whether to forward a packet by the setting of
//! the device it *arrived* on (`IN_DEV_FORWARD(in_dev)` in `ip_route_input_slow`); the outgoing
//! device's setting and `net.ipv4.ip_forward` are not consulted (writing `ip_forward` only copies
//! its value to every device). So forwarding on a pod's host veth lets that pod's packets be
//! routed onwards, and forwarding on the uplink lets other nodes' packets and replies to
//! masqueraded connections reach pods, with the host's global switch left off.
//!
//! `rp_filter` needs no change: the kernel uses the larger of `all` and the device's value, so
//! a device cannot loosen the host's setting anyway, and every Berth path passes strict checking
//! (a pod's source is routed back through its own veth, another node's podCIDR through the uplink
//! the packet came in on).
//!
//! The files under `/proc/sys/net` show the network namespace of the thread that opens them, so
//! these functions act on the calling thread's namespace, like the rest of `podnet`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the per-interface IPv4 settings live.
pub const IPV4_CONF_ROOT: &str = "/proc/sys/net/ipv4/conf";

/// Why a per-interface sysctl could not be set.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("{ifname:?} is not an interface name berth may configure")]
    InvalidIfname { ifname: String },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {value} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
}

/// Turns IPv4 forwarding on for packets arriving on `ifname`, in the calling thread's network
/// namespace. Refuses `all` and `default`: those are the host's global switches.
pub fn enable_forwarding(ifname: &str) -> Result<(), SysctlError> {
    set_interface_sysctl(Path::new(IPV4_CONF_ROOT), ifname, "forwarding", "1")
}

/// Writes `value` to `<conf_root>/<ifname>/<key>` unless it already holds it (a write of
/// `forwarding` flushes the route cache even when nothing changes).
pub fn set_interface_sysctl(
    conf_root: &Path,
    ifname: &str,
    key: &str,
    value: &str,
) -> Result<(), SysctlError> {
    let invalid = ifname.is_empty()
        || ifname.len() > 15
        || ifname.contains('/')
        || matches!(ifname, "." | ".." | "all" | "default");
    if invalid {
        return Err(SysctlError::InvalidIfname {
            ifname: ifname.to_string(),
        });
    }
    let path = conf_root.join(ifname).join(key);
    let current = fs::read_to_string(&path).map_err(|source| SysctlError::Read {
        path: path.clone(),
        source,
    })?;
    if current.trim() == value {
        return Ok(());
    }
    fs::write(&path, value).map_err(|source| SysctlError::Write {
        path,
        value: value.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_when_different() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path();
        fs::create_dir_all(conf.join("berth0")).unwrap();
        fs::write(conf.join("berth0/forwarding"), "0\n").unwrap();
        set_interface_sysctl(conf, "berth0", "forwarding", "1").unwrap();
        assert_eq!(
            fs::read_to_string(conf.join("berth0/forwarding")).unwrap(),
            "1"
        );
        // Already set: not rewritten, so a read-only file is fine.
        fs::write(conf.join("berth0/forwarding"), "1\n").unwrap();
        let mut perms = fs::metadata(conf.join("berth0/forwarding"))
            .unwrap()
            .permissions();
        perms.set_readonly(true);
        fs::set_permissions(conf.join("berth0/forwarding"), perms).unwrap();
        set_interface_sysctl(conf, "berth0", "forwarding", "1").unwrap();
    }

    #[test]
    fn refuses_global_and_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["all", "default", "", ".", "..", "a/b", "sixteen-bytes-xx"] {
            fs::create_dir_all(dir.path().join("all")).unwrap();
            let err = set_interface_sysctl(dir.path(), name, "forwarding", "1").unwrap_err();
            assert!(
                matches!(err, SysctlError::InvalidIfname { .. }),
                "{name}: {err}"
            );
        }
        let err = set_interface_sysctl(dir.path(), "berth1", "forwarding", "1").unwrap_err();
        assert!(matches!(err, SysctlError::Read { .. }), "{err}");
        assert_eq!(
            enable_forwarding("all").unwrap_err().to_string(),
            "\"all\" is not an interface name berth may configure"
        );
    }
}
