//! Host-local IP address management: one file per allocated pod address.
//!
//! Layout (the CNI host-local plugin's, so an operator can read it with `ls` and `cat`):
//! `<state_dir>/<ip>` holds the owning pod's uid; `<state_dir>/last_reserved_ip` holds the address
//! handed out last. A file is created with `O_EXCL`, so two allocators can never hand out one
//! address. The next allocation starts after the last one and wraps, so a just-released address is
//! reused as late as possible (stale conntrack entries and endpoints still name it for a while).
//!
//! The network address, the gateway (the network's first address) and the broadcast address are
//! never handed out.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::cidr::Ipv4Cidr;

const CURSOR_FILE: &str = "last_reserved_ip";

/// Why an address could not be allocated, looked up or released.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pod cidr {cidr} is too small: a /30 or larger is needed for a gateway and a pod")]
    TooSmall { cidr: Ipv4Cidr },
    #[error("pod cidr {cidr} has no free address")]
    Exhausted { cidr: Ipv4Cidr },
}

/// The gateway every pod routes through: the network's first address.
pub fn gateway(cidr: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1))
}

/// Pod addresses allocated from one podCIDR, mirrored in memory from the state directory.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Cidr,
    /// First and last allocatable address, as integers.
    first: u32,
    last: u32,
    /// Allocated address → pod uid.
    by_ip: BTreeMap<Ipv4Addr, String>,
    cursor: Option<u32>,
}

impl Ipam {
    /// Loads the allocations under `dir` (created if missing). Addresses outside `cidr` are left
    /// on disk but not used: they belong to a podCIDR this node no longer has.
    pub fn open(dir: &Path, cidr: Ipv4Cidr) -> Result<Self, IpamError> {
        if cidr.prefix() > 30 {
            return Err(IpamError::TooSmall { cidr });
        }
        let io_err = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| IpamError::Io { op, path, source }
        };
        fs::create_dir_all(dir).map_err(io_err("create state directory", dir))?;
        let first = u32::from(cidr.network()) + 2;
        let last = u32::from(cidr.broadcast()) - 1;
        let mut by_ip = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_err("read state directory", dir))? {
            let entry = entry.map_err(io_err("read state directory", dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if !(first..=last).contains(&u32::from(ip)) {
                continue;
            }
            let path = entry.path();
            let uid = fs::read_to_string(&path).map_err(io_err("read allocation", &path))?;
            let uid = uid.trim();
            if uid.is_empty() {
                // A crash between the O_EXCL create and the write: nobody owns it.
                fs::remove_file(&path).map_err(io_err("remove empty allocation", &path))?;
                continue;
            }
            by_ip.insert(ip, uid.to_string());
        }
        let cursor = fs::read_to_string(dir.join(CURSOR_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|c| (first..=last).contains(c));
        Ok(Self {
            dir: dir.to_path_buf(),
            cidr,
            first,
            last,
            by_ip,
            cursor,
        })
    }

    /// The address `uid` holds, if any.
    pub fn lookup(&self, uid: &str) -> Option<Ipv4Addr> {
        self.by_ip
            .iter()
            .find_map(|(ip, owner)| (owner == uid).then_some(*ip))
    }

    /// The address `uid` already holds, or a newly allocated one.
    pub fn allocate(&mut self, uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.lookup(uid) {
            return Ok(ip);
        }
        let span = self.last - self.first + 1;
        let start = match self.cursor {
            Some(c) if c < self.last => c + 1,
            _ => self.first,
        };
        for step in 0..span {
            let candidate = self.first + (start - self.first + step) % span;
            let ip = Ipv4Addr::from(candidate);
            if self.by_ip.contains_key(&ip) {
                continue;
            }
            if self.claim(ip, uid)? {
                self.by_ip.insert(ip, uid.to_string());
                self.cursor = Some(candidate);
                self.save_cursor(ip);
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted { cidr: self.cidr })
    }

    /// Creates `<dir>/<ip>` holding `uid`; false if another allocator already owns the file.
    fn claim(&self, ip: Ipv4Addr, uid: &str) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(source) => {
                return Err(IpamError::Io {
                    op: "create allocation",
                    path,
                    source,
                });
            }
        };
        if let Err(source) = file.write_all(uid.as_bytes()) {
            // Best effort: an empty file is reclaimed on the next open anyway.
            let _ = fs::remove_file(&path);
            return Err(IpamError::Io {
                op: "write allocation",
                path,
                source,
            });
        }
        Ok(true)
    }

    fn save_cursor(&self, ip: Ipv4Addr) {
        let path = self.dir.join(CURSOR_FILE);
        // Only a hint for where to search next: losing it costs fairness, not correctness.
        if let Err(e) = fs::write(&path, ip.to_string()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the ipam cursor");
        }
    }

    /// Releases every address `uid` holds; returns them. Releasing nothing is not an error.
    pub fn release(&mut self, uid: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        let held: Vec<Ipv4Addr> = self
            .by_ip
            .iter()
            .filter_map(|(ip, owner)| (owner == uid).then_some(*ip))
            .collect();
        for ip in &held {
            let path = self.dir.join(ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IpamError::Io {
                        op: "remove allocation",
                        path,
                        source,
                    });
                }
            }
            self.by_ip.remove(ip);
        }
        Ok(held)
    }

    /// Removes every allocation file (in or out of the podCIDR) and the cursor; returns how many
    /// allocations were removed.
    pub fn clear(&mut self) -> Result<usize, IpamError> {
        let dir = self.dir.clone();
        let read_err = |source| IpamError::Io {
            op: "read state directory",
            path: dir.clone(),
            source,
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(read_err(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_ip = name.parse::<Ipv4Addr>().is_ok();
            if !is_ip && name != CURSOR_FILE {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed += usize::from(is_ip),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IpamError::Io {
                        op: "remove allocation",
                        path,
                        source,
                    });
                }
            }
        }
        self.by_ip.clear();
        self.cursor = None;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/29")).unwrap();
        assert_eq!(gateway(cidr("10.0.0.0/29")), Ipv4Addr::new(10, 0, 0, 1));
        let ips: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("pod-{i}")).unwrap())
            .collect();
        let expected: Vec<_> = (2..=6).map(|h| Ipv4Addr::new(10, 0, 0, h)).collect();
        assert_eq!(ips, expected);
        assert!(matches!(
            ipam.allocate("pod-5"),
            Err(IpamError::Exhausted { .. })
        ));
    }

    #[test]
    fn same_uid_same_address_and_files_hold_uids() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.0.0/24")).unwrap();
        let a = ipam.allocate("uid-a").unwrap();
        assert_eq!(ipam.allocate("uid-a").unwrap(), a);
        let b = ipam.allocate("uid-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            fs::read_to_string(dir.path().join(a.to_string())).unwrap(),
            "uid-a"
        );
        assert_eq!(ipam.lookup("uid-b"), Some(b));
        assert_eq!(ipam.lookup("uid-c"), None);
    }

    #[test]
    fn release_frees_and_is_idempotent_and_reuse_is_late() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/29")).unwrap();
        let a = ipam.allocate("a").unwrap();
        let _b = ipam.allocate("b").unwrap();
        assert_eq!(ipam.release("a").unwrap(), vec![a]);
        assert!(ipam.release("a").unwrap().is_empty());
        assert!(!dir.path().join(a.to_string()).exists());
        assert_eq!(ipam.lookup("a"), None);
        // The next allocation continues after the last one instead of reusing `a` at once.
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 0, 0, 4));
        // Once the range wraps, the released address comes back.
        for p in ["d", "e", "f"] {
            ipam.allocate(p).unwrap();
        }
        assert_eq!(ipam.lookup("f"), Some(a));
    }

    #[test]
    fn survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let mut ipam = Ipam::open(dir.path(), cidr("10.244.0.0/24")).unwrap();
            (ipam.allocate("a").unwrap(), ipam.allocate("b").unwrap())
        };
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.0.0/24")).unwrap();
        assert_eq!(ipam.lookup("a"), Some(a));
        assert_eq!(ipam.allocate("b").unwrap(), b);
        let c = ipam.allocate("c").unwrap();
        assert!(c != a && c != b);
        // The cursor survived too: allocation continues after the last address.
        assert_eq!(u32::from(c), u32::from(b) + 1);
    }

    #[test]
    fn foreign_files_are_skipped_and_empty_ones_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("10.0.0.2"), "other").unwrap();
        fs::write(dir.path().join("10.0.0.3"), "").unwrap();
        fs::write(dir.path().join("10.9.9.9"), "old-cidr").unwrap();
        fs::write(dir.path().join("README"), "not an address").unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/29")).unwrap();
        assert_eq!(ipam.lookup("other"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(ipam.lookup("old-cidr"), None);
        assert!(!dir.path().join("10.0.0.3").exists());
        assert_eq!(ipam.allocate("new").unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        // A file created behind our back (another allocator) is never taken over.
        fs::write(dir.path().join("10.0.0.4"), "racer").unwrap();
        assert_eq!(ipam.allocate("new2").unwrap(), Ipv4Addr::new(10, 0, 0, 5));
    }

    #[test]
    fn clear_removes_state() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("README"), "kept").unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.0.0/24")).unwrap();
        ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        assert_eq!(ipam.clear().unwrap(), 2);
        assert_eq!(ipam.lookup("a"), None);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["README"]);
        assert_eq!(ipam.clear().unwrap(), 0);
    }

    #[test]
    fn too_small_cidr() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Ipam::open(dir.path(), cidr("10.0.0.0/31")),
            Err(IpamError::TooSmall { .. })
        ));
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/30")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(ipam.allocate("b").is_err());
    }
}
