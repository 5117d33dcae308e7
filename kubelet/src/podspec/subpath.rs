//! `subPath` inside a volume, resolved and created without following symlinks out of the volume
//! (Kubernetes' subpath `SafeMakeDir` and the within-volume check of `PrepareSafeSubpath`).

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fchmod, mkdirat, Mode};

use super::PodSpecError;

fn dir_flags() -> OFlag {
    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY
}

/// The host path of `sub` inside `volume`. Symlinks inside the volume are followed (a configMap
/// key is one), but the result must stay inside the volume. Missing directories are created with
/// the volume's mode, one component at a time relative to an open directory and refusing
/// symlinks, so a container cannot race a symlink into place to make the kubelet create
/// directories elsewhere.
///
/// The returned path is checked, not pinned: the runtime binds it later, so it must open it
/// with `O_PATH | O_NOFOLLOW` and bind the fd (Kubernetes binds `/proc/<pid>/fd/<n>` at once).
pub(crate) fn resolve_subpath(
    volume: &Path,
    sub: &str,
    mount_name: &str,
    container: &str,
) -> Result<PathBuf, PodSpecError> {
    if sub.starts_with('/') {
        return Err(PodSpecError::invalid(format!(
            "error SubPath `{sub}` must not be an absolute path"
        )));
    }
    if Path::new(sub)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(PodSpecError::invalid(format!(
            "unable to provision SubPath `{sub}`: must not contain '..'"
        )));
    }
    let base = fs::canonicalize(volume).map_err(PodSpecError::io("resolve", volume))?;
    let full = base.join(sub);
    if fs::metadata(&full).is_err() {
        let perm = fs::metadata(&base)
            .map_err(PodSpecError::io("stat", &base))?
            .permissions()
            .mode()
            & 0o7777;
        safe_make_dir(&base, sub, perm).map_err(|e| {
            tracing::warn!(error = %e, mount = mount_name, container, "creating subPath directory");
            PodSpecError::invalid(format!(
                "failed to create subPath directory for volumeMount {mount_name:?} of container {container:?}"
            ))
        })?;
    }
    let resolved = fs::canonicalize(&full).map_err(PodSpecError::io("resolve", &full))?;
    if !resolved.starts_with(&base) {
        return Err(PodSpecError::invalid(format!(
            "subpath {:?} not within volume path {:?}",
            resolved.display().to_string(),
            base.display().to_string()
        )));
    }
    Ok(resolved)
}

/// Creates `base/sub` as directories with mode `perm`; `base` is canonical.
fn safe_make_dir(base: &Path, sub: &str, perm: u32) -> Result<(), PodSpecError> {
    let parts: Vec<&str> = sub
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    // The longest prefix that exists (following symlinks, as Kubernetes' findExistingPrefix).
    let mut existing = 0;
    while existing < parts.len() && fs::metadata(base.join(parts[..=existing].join("/"))).is_ok() {
        existing += 1;
    }
    let prefix = base.join(parts[..existing].join("/"));
    let real = fs::canonicalize(&prefix).map_err(PodSpecError::io("resolve", &prefix))?;
    let inside = real.strip_prefix(base).map_err(|_| {
        PodSpecError::invalid(format!(
            "pathname {:?} is not within base {:?}",
            real.display().to_string(),
            base.display().to_string()
        ))
    })?;
    let mount_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| PodSpecError::Sys { op, path, source }
    };
    let mut fd: OwnedFd =
        open(base, dir_flags(), Mode::empty()).map_err(mount_err("open", base))?;
    let mut at = base.to_path_buf();
    for comp in inside.components() {
        at.push(comp);
        fd = openat(&fd, comp.as_os_str(), dir_flags(), Mode::empty())
            .map_err(mount_err("open", &at))?;
    }
    let mode = Mode::from_bits_truncate(perm);
    for part in &parts[existing..] {
        at.push(part);
        match mkdirat(&fd, *part, mode) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(mount_err("mkdir", &at)(e)),
        }
        fd = openat(&fd, *part, dir_flags(), Mode::empty()).map_err(mount_err("open", &at))?;
        fchmod(&fd, mode).map_err(mount_err("chmod", &at))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn creates_and_resolves_inside_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        fs::create_dir(&vol).unwrap();
        fs::set_permissions(&vol, fs::Permissions::from_mode(0o750)).unwrap();
        let got = resolve_subpath(&vol, "a/b/c", "m", "c").unwrap();
        let vol_real = fs::canonicalize(&vol).unwrap();
        assert_eq!(got, vol_real.join("a/b/c"));
        assert!(got.is_dir());
        assert_eq!(
            fs::metadata(&got).unwrap().permissions().mode() & 0o777,
            0o750
        );
        // An existing file through an in-volume symlink (a configMap key).
        fs::write(vol.join("real"), "x").unwrap();
        symlink("real", vol.join("key")).unwrap();
        assert_eq!(
            resolve_subpath(&vol, "key", "m", "c").unwrap(),
            vol_real.join("real")
        );
    }

    #[test]
    fn refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        let outside = tmp.path().join("outside");
        fs::create_dir(&vol).unwrap();
        fs::create_dir(&outside).unwrap();
        symlink(&outside, vol.join("evil")).unwrap();
        let e = resolve_subpath(&vol, "evil", "m", "c")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("subpath ") && e.contains("not within volume path"),
            "{e}"
        );
        let e = resolve_subpath(&vol, "evil/new", "m", "c")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "failed to create subPath directory for volumeMount \"m\" of container \"c\""
        );
        assert!(!outside.join("new").exists());
        assert_eq!(
            resolve_subpath(&vol, "/etc", "m", "c")
                .unwrap_err()
                .to_string(),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert_eq!(
            resolve_subpath(&vol, "a/../../x", "m", "c")
                .unwrap_err()
                .to_string(),
            "unable to provision SubPath `a/../../x`: must not contain '..'"
        );
    }
}
