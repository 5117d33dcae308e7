//! Where the cgroup hierarchies are mounted, from `/proc/self/mountinfo`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CgroupError, Mode};

/// The v1 controllers Berth puts a container in. `name=systemd` and the others (hugetlb,
/// net_cls, perf_event, rdma, misc) are not Berth's to manage.
pub const V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio",
];

/// The mount points of the hierarchies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    /// The cgroup2 mount, if any.
    pub unified: Option<PathBuf>,
    /// v1 controller → its hierarchy's mount point (co-mounted controllers share one).
    pub v1: BTreeMap<String, PathBuf>,
}

impl Roots {
    pub fn parse(mountinfo: &str) -> Roots {
        let mut roots = Roots::default();
        for line in mountinfo.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(mount_point), Some(fstype)) = (left.get(4), right.first()) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            match *fstype {
                "cgroup2" => {
                    roots.unified.get_or_insert(mount_point);
                }
                "cgroup" => {
                    let options = right.get(2).copied().unwrap_or("");
                    for opt in options.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            roots
                                .v1
                                .entry(opt.to_owned())
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        roots
    }

    pub fn read(mountinfo: &Path) -> Result<Roots, CgroupError> {
        let text = std::fs::read_to_string(mountinfo).map_err(|source| CgroupError::MountInfo {
            path: mountinfo.to_owned(),
            source,
        })?;
        Ok(Roots::parse(&text))
    }

    pub fn mode(&self) -> Option<Mode> {
        match (self.unified.is_some(), self.v1.is_empty()) {
            (true, true) => Some(Mode::V2),
            (true, false) => Some(Mode::Hybrid),
            (false, false) => Some(Mode::V1),
            (false, true) => None,
        }
    }

    /// The distinct v1 hierarchy mount points (cpu and cpuacct co-mounted count once).
    pub fn v1_hierarchies(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.v1.values().cloned().collect();
        out.sort();
        out.dedup();
        out
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal.map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'))) {
            Some(v) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This development host: v1 controllers, each on its own, plus cgroup2 at .../unified.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host() {
        let roots = Roots::parse(HYBRID);
        assert_eq!(roots.mode(), Some(Mode::Hybrid));
        assert_eq!(roots.unified, Some("/sys/fs/cgroup/unified".into()));
        assert_eq!(roots.v1.len(), 8);
        assert_eq!(roots.v1["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert!(!roots.v1.contains_key("name=systemd"));
        assert_eq!(roots.v1_hierarchies().len(), 8);
    }

    #[test]
    fn pure_v2_with_optional_fields() {
        let text =
            "25 1 0:22 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n\
                    26 1 0:23 / /proc rw shared:10 - proc proc rw\n";
        let roots = Roots::parse(text);
        assert_eq!(roots.mode(), Some(Mode::V2));
        assert_eq!(roots.unified, Some("/sys/fs/cgroup".into()));
        assert!(roots.v1.is_empty());
    }

    #[test]
    fn co_mounted_v1_and_escapes() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio
32 25 0:28 / /my\\040cgroups/memory rw - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let roots = Roots::parse(text);
        assert_eq!(roots.mode(), Some(Mode::V1));
        assert_eq!(roots.v1["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(roots.v1["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(roots.v1["memory"], Path::new("/my cgroups/memory"));
        assert_eq!(roots.v1.len(), 3);
        assert_eq!(roots.v1_hierarchies().len(), 2);
    }

    #[test]
    fn nothing_mounted_and_garbage() {
        assert_eq!(Roots::parse("").mode(), None);
        assert_eq!(Roots::parse("garbage\n - \n1 2 - cgroup2").mode(), None);
        assert_eq!(unescape("a\\134b\\0"), "a\\b\\0");
    }
}
