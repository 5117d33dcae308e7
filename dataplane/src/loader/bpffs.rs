//! A bpffs instance for pins: mounted on demand, unmounted only by whoever mounted it.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("statfs {path}")]
    Statfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("mount bpffs on {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmount bpffs from {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Whether `dir` is on a bpffs.
pub fn is_bpffs(dir: &Path) -> Result<bool, BpffsError> {
    let stat = statfs(dir).map_err(|source| BpffsError::Statfs {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(stat.filesystem_type() == BPF_FS_MAGIC)
}

/// A directory on bpffs. Dropping it unmounts the bpffs only if [`Bpffs::ensure`] mounted it,
/// so an agent never takes away a bpffs (and the pins on it) that the host or a previous run
/// set up.
#[derive(Debug)]
pub struct Bpffs {
    dir: PathBuf,
    mounted: bool,
}

impl Bpffs {
    /// Makes `dir` (created if missing) a bpffs: kept as is when it already is one (it or a
    /// parent), else a fresh instance is mounted on it, mode 0700.
    pub fn ensure(dir: &Path) -> Result<Self, BpffsError> {
        std::fs::create_dir_all(dir).map_err(|source| BpffsError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let mounted = if is_bpffs(dir)? {
            false
        } else {
            nix::mount::mount(
                Some("bpffs"),
                dir,
                Some("bpf"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=0700"),
            )
            .map_err(|source| BpffsError::Mount {
                path: dir.to_path_buf(),
                source,
            })?;
            true
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            mounted,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether this guard mounted the bpffs (and so will unmount it).
    pub fn mounted(&self) -> bool {
        self.mounted
    }

    /// Leaves the mount in place for good: the agent's pins must outlive the agent (a restart
    /// finds them); `berth cleanup` unmounts it.
    pub fn keep(mut self) -> PathBuf {
        self.mounted = false;
        std::mem::take(&mut self.dir)
    }

    /// Unmounts now (if this guard mounted), reporting the error `Drop` would swallow.
    pub fn unmount(mut self) -> Result<(), BpffsError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), BpffsError> {
        if !std::mem::take(&mut self.mounted) {
            return Ok(());
        }
        // Lazy: a process still holding a pinned object's path open must not keep the mount
        // (and this guard) stuck; the kernel objects live on while referenced anyway.
        nix::mount::umount2(&self.dir, MntFlags::MNT_DETACH).map_err(|source| BpffsError::Unmount {
            path: self.dir.clone(),
            source,
        })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Err(error) = self.unmount_inner() {
            tracing::warn!(%error, "leaving bpffs mounted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_not_bpffs() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_bpffs(dir.path()).expect("statfs"));
    }

    #[test]
    fn statfs_of_a_missing_path_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let error = is_bpffs(&missing).expect_err("missing path");
        assert!(error.to_string().contains("missing"), "{error}");
    }
}
