//! What the node is: cores, memory, hugepages, disk, and the identity fields of `nodeInfo`, read
//! once at start from procfs, sysfs and /etc (cadvisor's machine info, which the kubelet reports).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::NodeError;

/// Where the host's pseudo-filesystems are; tests point them at a tempdir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    /// `/proc`
    pub proc: PathBuf,
    /// `/sys`
    pub sys: PathBuf,
    /// `/etc`
    pub etc: PathBuf,
}

impl Default for HostRoots {
    fn default() -> Self {
        HostRoots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            etc: PathBuf::from("/etc"),
        }
    }
}

/// The machine as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Logical CPUs (the `processor` entries of /proc/cpuinfo).
    pub cpu: u32,
    /// `MemTotal` in bytes.
    pub memory_bytes: u64,
    /// Size of the filesystem holding the data directory.
    pub ephemeral_storage_bytes: u64,
    /// Page size in bytes → bytes reserved in pages of that size. 2 MiB and 1 GiB are always
    /// present (0 when the kernel offers none).
    pub hugepages: BTreeMap<u64, u64>,
    pub boot_id: String,
    pub machine_id: String,
    /// From DMI; empty on machines without it.
    pub system_uuid: String,
    pub kernel_version: String,
    /// `PRETTY_NAME` of os-release.
    pub os_image: String,
    /// Go's `GOARCH` name (`amd64`, `arm64`, …), as Kubernetes labels and reports it.
    pub architecture: String,
}

pub const HUGEPAGE_2MI: u64 = 2 << 20;
pub const HUGEPAGE_1GI: u64 = 1 << 30;

/// Reads the machine under `roots`; `data_dir`'s filesystem is the ephemeral storage.
pub fn read_host(roots: &HostRoots, data_dir: &Path) -> Result<HostInfo, NodeError> {
    let meminfo_path = roots.proc.join("meminfo");
    let meminfo = parse_meminfo(&read(&meminfo_path)?);
    let memory_kib = *meminfo.get("MemTotal").ok_or(NodeError::Parse {
        path: meminfo_path,
        what: "MemTotal",
    })?;
    let cpuinfo_path = roots.proc.join("cpuinfo");
    let cpu = count_processors(&read(&cpuinfo_path)?);
    if cpu == 0 {
        return Err(NodeError::Parse {
            path: cpuinfo_path,
            what: "processor entries",
        });
    }
    let fs = super::pressure::fs_stats(data_dir)?;
    let os_release = std::fs::read_to_string(roots.etc.join("os-release")).unwrap_or_default();
    Ok(HostInfo {
        cpu,
        memory_bytes: memory_kib * 1024,
        ephemeral_storage_bytes: fs.total_bytes,
        hugepages: read_hugepages(&roots.sys),
        boot_id: read_trimmed(&roots.proc.join("sys/kernel/random/boot_id")).unwrap_or_default(),
        machine_id: read_trimmed(&roots.etc.join("machine-id")).unwrap_or_default(),
        system_uuid: read_trimmed(&roots.sys.join("class/dmi/id/product_uuid")).unwrap_or_default(),
        kernel_version: read_trimmed(&roots.proc.join("sys/kernel/osrelease")).unwrap_or_default(),
        os_image: pretty_name(&os_release).unwrap_or_else(|| "Linux".into()),
        architecture: go_arch(std::env::consts::ARCH).to_string(),
    })
}

pub(super) fn read(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|source| NodeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// /proc/meminfo as key → value in kB (or a bare count for the `HugePages_*` lines).
pub(super) fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let value = rest.split_whitespace().next()?.parse().ok()?;
            Some((key.trim().to_string(), value))
        })
        .collect()
}

fn count_processors(cpuinfo: &str) -> u32 {
    let n = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Every hugepage size the kernel offers (`<sys>/kernel/mm/hugepages/hugepages-<N>kB`), with
/// the bytes reserved in it; 2 MiB and 1 GiB are always listed, as the kubelet does on x86.
fn read_hugepages(sys_root: &Path) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::from([(HUGEPAGE_2MI, 0), (HUGEPAGE_1GI, 0)]);
    let dir = sys_root.join("kernel/mm/hugepages");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(kib) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-")?.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let pages = read_trimmed(&entry.path().join("nr_hugepages"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        out.insert(kib * 1024, pages.saturating_mul(kib * 1024));
    }
    out
}

/// `PRETTY_NAME` from os-release, unquoted as the shell would.
pub(super) fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?
        .trim();
    let unquoted = match value.as_bytes() {
        [b'"', .., b'"'] if value.len() >= 2 => unescape(&value[1..value.len() - 1]),
        [b'\'', .., b'\''] if value.len() >= 2 => value[1..value.len() - 1].to_string(),
        _ => value.to_string(),
    };
    (!unquoted.is_empty()).then_some(unquoted)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Rust's target architecture → Go's `GOARCH`, the spelling Kubernetes uses.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Writes `files` (path relative to `root` → contents) under `root`.
    pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
        for (path, contents) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, contents).expect("write");
        }
    }

    pub const MEMINFO: &str = "MemTotal:        8130056 kB\nMemFree:          123456 kB\n\
        MemAvailable:    4000000 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";
    pub const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: x\n\n\
        processor\t: 1\nvendor_id\t: GenuineIntel\n\nprocessor\t: 2\n\nprocessor\t: 3\n";

    /// A fake host: 4 cpus, 8130056 KiB, 4 × 2 MiB hugepages, Debian.
    pub fn fake_host(root: &Path) -> HostRoots {
        write_tree(
            root,
            &[
                ("proc/meminfo", MEMINFO),
                ("proc/cpuinfo", CPUINFO),
                ("proc/sys/kernel/random/boot_id", "b00t-1d\n"),
                ("proc/sys/kernel/osrelease", "6.18.0-test\n"),
                (
                    "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
                    "4\n",
                ),
                (
                    "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
                    "0\n",
                ),
                ("sys/class/dmi/id/product_uuid", "UUID-1\n"),
                ("etc/machine-id", "abc123\n"),
                (
                    "etc/os-release",
                    "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
                ),
            ],
        );
        HostRoots {
            proc: root.join("proc"),
            sys: root.join("sys"),
            etc: root.join("etc"),
        }
    }

    #[test]
    fn reads_a_fake_host() {
        let dir = tempfile::tempdir().unwrap();
        let roots = fake_host(dir.path());
        let host = read_host(&roots, dir.path()).unwrap();
        assert_eq!(host.cpu, 4);
        assert_eq!(host.memory_bytes, 8130056 * 1024);
        assert!(host.ephemeral_storage_bytes > 0);
        assert_eq!(
            host.hugepages,
            BTreeMap::from([(HUGEPAGE_2MI, 4 * HUGEPAGE_2MI), (HUGEPAGE_1GI, 0)])
        );
        assert_eq!(host.boot_id, "b00t-1d");
        assert_eq!(host.machine_id, "abc123");
        assert_eq!(host.system_uuid, "UUID-1");
        assert_eq!(host.kernel_version, "6.18.0-test");
        assert_eq!(host.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(host.architecture, go_arch(std::env::consts::ARCH));
    }

    #[test]
    fn optional_files_may_be_missing_but_meminfo_may_not() {
        let dir = tempfile::tempdir().unwrap();
        write_tree(
            dir.path(),
            &[("proc/meminfo", MEMINFO), ("proc/cpuinfo", CPUINFO)],
        );
        let roots = HostRoots {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
            etc: dir.path().join("etc"),
        };
        let host = read_host(&roots, dir.path()).unwrap();
        assert_eq!(host.os_image, "Linux");
        assert_eq!(host.system_uuid, "");
        assert_eq!(host.hugepages.get(&HUGEPAGE_1GI), Some(&0));

        std::fs::remove_file(dir.path().join("proc/meminfo")).unwrap();
        let err = read_host(&roots, dir.path()).unwrap_err();
        assert!(matches!(err, NodeError::Read { .. }), "{err}");
        std::fs::write(dir.path().join("proc/meminfo"), "MemFree: 1 kB\n").unwrap();
        let err = read_host(&roots, dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no MemTotal in {}",
                dir.path().join("proc/meminfo").display()
            )
        );
        std::fs::write(dir.path().join("proc/meminfo"), MEMINFO).unwrap();
        std::fs::write(dir.path().join("proc/cpuinfo"), "garbage\n").unwrap();
        assert!(read_host(&roots, dir.path()).is_err());
    }

    #[test]
    fn os_release_quoting() {
        assert_eq!(pretty_name("PRETTY_NAME=Alpine").as_deref(), Some("Alpine"));
        assert_eq!(
            pretty_name("PRETTY_NAME='Fedora Linux 40'").as_deref(),
            Some("Fedora Linux 40")
        );
        assert_eq!(
            pretty_name("PRETTY_NAME=\"A \\\"quoted\\\" name\"").as_deref(),
            Some("A \"quoted\" name")
        );
        assert_eq!(pretty_name("PRETTY_NAME=\"\""), None);
        assert_eq!(pretty_name("NAME=x"), None);
    }

    #[test]
    fn go_arch_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("s390x"), "s390x");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }
}
