//! Pod-level tmpfs mounts: `emptyDir.medium: Memory`, and secret and projected volumes, whose
//! content must never reach the disk (Kubernetes backs them with a memory emptyDir).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::PodSpecError;

/// The mount source every Berth tmpfs carries, so `berth cleanup` and humans can tell them apart.
pub const TMPFS_SOURCE: &str = "berth-tmpfs";

/// Who mounts the pod's memory-backed volumes. The kubelet uses [`HostMounter`]; unit tests use
/// [`NoMounter`] or a recorder.
pub trait Mounter {
    /// Mounts a tmpfs on the existing directory `target` unless one is there already.
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> Result<(), PodSpecError>;
}

/// Mounts for real (needs CAP_SYS_ADMIN in the kubelet's mount namespace).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostMounter;

impl Mounter for HostMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> Result<(), PodSpecError> {
        mount_memory_volume(target, size_bytes)
    }
}

/// Mounts nothing: memory volumes and secrets become plain directories on the pod directory's
/// filesystem. For tests, and for callers that accept secrets on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMounter;

impl Mounter for NoMounter {
    fn mount_tmpfs(&self, _target: &Path, _size_bytes: Option<u64>) -> Result<(), PodSpecError> {
        Ok(())
    }
}

/// Whether `path` is the root of a mount: its device differs from its parent's.
fn is_mount_point(path: &Path) -> Result<bool, PodSpecError> {
    let meta = fs::metadata(path).map_err(PodSpecError::io("stat", path))?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let pmeta = fs::metadata(parent).map_err(PodSpecError::io("stat", parent))?;
    Ok(meta.dev() != pmeta.dev())
}

/// Mounts a `berth-tmpfs` tmpfs (nosuid, nodev; `size=` when given) on `target`; does nothing
/// when `target` already is a mount point, so callers may repeat it.
pub fn mount_memory_volume(target: &Path, size_bytes: Option<u64>) -> Result<(), PodSpecError> {
    if is_mount_point(target)? {
        return Ok(());
    }
    let data = size_bytes.map(|s| format!("size={s}"));
    mount(
        Some(TMPFS_SOURCE),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        data.as_deref(),
    )
    .map_err(|source| PodSpecError::Sys {
        op: "mount tmpfs on",
        path: target.to_path_buf(),
        source,
    })
}

/// Mount points strictly under `dir`, deepest first, from a `/proc/<pid>/mountinfo` text.
fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts (lazily) every mount under `pod_dir`, deepest first, as listed in `mountinfo`
/// (normally `/proc/self/mountinfo`). Only mounts inside the pod's own directory are touched.
pub fn unmount_pod_volumes(pod_dir: &Path, mountinfo: &Path) -> Result<(), PodSpecError> {
    let text = fs::read_to_string(mountinfo).map_err(PodSpecError::io("read", mountinfo))?;
    for target in mounts_under(&text, pod_dir) {
        match umount2(&target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(PodSpecError::Sys {
                    op: "unmount",
                    path: target,
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_under_pod_dir() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
90 22 0:50 / /var/lib/berth/pods/u1/volumes/kubernetes.io~secret/tok rw - tmpfs berth-tmpfs rw
91 22 0:51 / /var/lib/berth/pods/u1/volumes/kubernetes.io~empty-dir/my\\040cache rw - tmpfs berth-tmpfs rw
92 90 0:52 / /var/lib/berth/pods/u1/volumes/kubernetes.io~secret/tok/inner rw - tmpfs berth-tmpfs rw
93 22 0:53 / /var/lib/berth/pods/u10/x rw - tmpfs berth-tmpfs rw
";
        let got = mounts_under(info, Path::new("/var/lib/berth/pods/u1"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/lib/berth/pods/u1/volumes/kubernetes.io~secret/tok/inner"),
                PathBuf::from("/var/lib/berth/pods/u1/volumes/kubernetes.io~secret/tok"),
                PathBuf::from("/var/lib/berth/pods/u1/volumes/kubernetes.io~empty-dir/my cache"),
            ]
        );
    }

    #[test]
    fn plain_directory_is_not_a_mount_point() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        assert!(!is_mount_point(&d).unwrap());
    }
}
