//! Kubernetes' atomic writer layout for configMap, secret, downwardAPI and projected volumes:
//! the files live in a timestamped directory `..2006_01_02_15_04_05.<n>`, `..data` is a
//! symlink to it, and each top-level name the user sees is a symlink `name → ..data/name`.
//! An update writes a new timestamped directory and swaps `..data` with one rename, so a reader
//! sees the old set of files or the new one, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PodSpecError;

const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// One file of a volume payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (`mode`/`defaultMode`).
    pub mode: u32,
}

/// Kubernetes' `validatePath` for a payload path.
fn validate_path(p: &str) -> Result<(), PodSpecError> {
    let err = |m: String| Err(PodSpecError::invalid(m));
    if p.is_empty() {
        return err(format!("invalid path: must not be empty: {p:?}"));
    }
    if p.starts_with('/') {
        return err(format!("invalid path: must be relative path: {p}"));
    }
    if p.len() > MAX_PATH {
        return err(format!(
            "invalid path: must be less than or equal to {MAX_PATH} characters"
        ));
    }
    let items: Vec<&str> = p.split('/').collect();
    for item in &items {
        if *item == ".." {
            return err(format!("invalid path: must not contain '..': {p}"));
        }
        if item.len() > MAX_NAME {
            return err(format!(
                "invalid path: filenames must be less than or equal to {MAX_NAME} characters"
            ));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return err(format!("invalid path: must not start with '..': {p}"));
    }
    Ok(())
}

/// `path.Clean` for the relative paths that passed validation.
fn clean(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn top_level(p: &str) -> &str {
    p.split('/').next().unwrap_or(p)
}

/// Every regular file under `dir`, relative, with its content and mode, and the set of their
/// group ids.
fn read_tree(
    dir: &Path,
) -> Result<(BTreeMap<String, FileProjection>, BTreeSet<u32>), PodSpecError> {
    let mut gids = BTreeSet::new();
    let mut out = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(PodSpecError::io("read dir", &d))? {
            let entry = entry.map_err(PodSpecError::io("read dir", &d))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel_name = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(PodSpecError::io("stat", &path))?;
            if meta.is_dir() {
                stack.push((path, rel_name));
            } else if meta.is_file() {
                let data = fs::read(&path).map_err(PodSpecError::io("read", &path))?;
                let mode = meta.permissions().mode() & 0o7777;
                gids.insert(std::os::unix::fs::MetadataExt::gid(&meta));
                out.insert(rel_name, FileProjection { data, mode });
            }
        }
    }
    Ok((out, gids))
}

fn timestamp_name() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Creates a fresh `..<timestamp>.<n>` directory under `target` (like Go's `os.MkdirTemp`).
fn make_ts_dir(target: &Path) -> Result<PathBuf, PodSpecError> {
    let base = timestamp_name();
    let seed = time::OffsetDateTime::now_utc().nanosecond();
    for n in 0..10_000u32 {
        let path = target.join(format!("{base}.{}", seed.wrapping_add(n)));
        match fs::create_dir(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .map_err(PodSpecError::io("chmod", &path))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(PodSpecError::io("create dir", &path)(e)),
        }
    }
    Err(PodSpecError::invalid(format!(
        "no free timestamped directory name under {}",
        target.display()
    )))
}

/// Gives the files group `gid` and group read (dirs: setgid and group execute), as
/// Kubernetes' `SetVolumeOwnership` does for read-only volumes with an fsGroup.
fn set_group(dir: &Path, gid: u32) -> Result<(), PodSpecError> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).map_err(PodSpecError::io("stat", &p))?;
        std::os::unix::fs::lchown(&p, None, Some(gid)).map_err(PodSpecError::io("chown", &p))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mut mode = meta.permissions().mode() & 0o7777 | 0o440;
        if meta.is_dir() {
            mode |= 0o2000 | 0o110;
            for entry in fs::read_dir(&p).map_err(PodSpecError::io("read dir", &p))? {
                stack.push(entry.map_err(PodSpecError::io("read dir", &p))?.path());
            }
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(PodSpecError::io("chmod", &p))?;
    }
    Ok(())
}

/// Makes `target` hold exactly `payload` in the atomic writer layout; `fs_group` sets the files'
/// group. Returns whether anything changed (nothing is written when the content, modes and
/// file set are already the same).
pub fn write_atomic(
    target: &Path,
    payload: &BTreeMap<String, FileProjection>,
    fs_group: Option<u32>,
) -> Result<bool, PodSpecError> {
    let mut clean_payload = BTreeMap::new();
    for (p, f) in payload {
        validate_path(p)?;
        clean_payload.insert(clean(p), f.clone());
    }
    let data_link = target.join(DATA_DIR);
    let old_ts = fs::read_link(&data_link).ok().map(|l| target.join(l));
    let (old_files, old_gids) = match &old_ts {
        Some(dir) if dir.is_dir() => read_tree(dir)?,
        _ => Default::default(),
    };
    let old_visible: BTreeSet<String> =
        old_files.keys().map(|k| top_level(k).to_string()).collect();
    let new_visible: BTreeSet<String> = clean_payload
        .keys()
        .map(|k| top_level(k).to_string())
        .collect();
    let expected: BTreeMap<String, FileProjection> = clean_payload
        .iter()
        .map(|(k, f)| {
            let mode = f.mode & 0o7777 | if fs_group.is_some() { 0o440 } else { 0 };
            (
                k.clone(),
                FileProjection {
                    data: f.data.clone(),
                    mode,
                },
            )
        })
        .collect();
    let owned = fs_group.is_none_or(|g| old_gids.iter().all(|&x| x == g));
    if old_ts.is_some() && old_files == expected && owned {
        // Still make sure every visible link exists (a crash may have interrupted a write).
        create_visible(target, &new_visible)?;
        return Ok(false);
    }

    let ts_dir = make_ts_dir(target)?;
    for (rel, file) in &clean_payload {
        let path = ts_dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(PodSpecError::io("create dir", parent))?;
        }
        fs::write(&path, &file.data).map_err(PodSpecError::io("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(PodSpecError::io("chmod", &path))?;
    }
    if let Some(gid) = fs_group {
        set_group(&ts_dir, gid)?;
    }
    let ts_name = ts_dir.file_name().map(PathBuf::from).unwrap_or_default();
    let tmp_link = target.join(DATA_TMP);
    let _ = fs::remove_file(&tmp_link);
    symlink(&ts_name, &tmp_link).map_err(PodSpecError::io("symlink", &tmp_link))?;
    fs::rename(&tmp_link, &data_link).map_err(PodSpecError::io("rename", &tmp_link))?;
    create_visible(target, &new_visible)?;
    for gone in old_visible.difference(&new_visible) {
        let p = target.join(gone);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&p).map_err(PodSpecError::io("remove", &p))?;
        }
    }
    if let Some(old) = old_ts.filter(|o| *o != ts_dir) {
        fs::remove_dir_all(&old).map_err(PodSpecError::io("remove dir", &old))?;
    }
    Ok(true)
}

fn create_visible(target: &Path, names: &BTreeSet<String>) -> Result<(), PodSpecError> {
    for name in names {
        let link = target.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(name), &link)
                .map_err(PodSpecError::io("symlink", &link))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &str, u32)]) -> BTreeMap<String, FileProjection> {
        entries
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn layout_and_update() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let changed = write_atomic(
            t,
            &payload(&[("key", "v1", 0o644), ("dir/nested", "n", 0o400)]),
            None,
        )
        .unwrap();
        assert!(changed);
        // What a user of the volume reads.
        assert_eq!(fs::read_to_string(t.join("key")).unwrap(), "v1");
        assert_eq!(fs::read_to_string(t.join("dir/nested")).unwrap(), "n");
        assert_eq!(
            fs::read_link(t.join("key")).unwrap(),
            Path::new("..data/key")
        );
        assert_eq!(
            fs::read_link(t.join("dir")).unwrap(),
            Path::new("..data/dir")
        );
        let ts = fs::read_link(t.join("..data")).unwrap();
        let ts = ts.to_str().unwrap().to_string();
        assert!(
            ts.starts_with("..") && ts.len() > "..2006_01_02_15_04_05.".len(),
            "{ts}"
        );
        assert_eq!(
            fs::metadata(t.join("dir/nested"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o400
        );
        assert_eq!(
            names(t),
            BTreeSet::from(["..data".into(), ts.clone(), "dir".into(), "key".into()])
        );

        // Same content: nothing changes.
        assert!(!write_atomic(
            t,
            &payload(&[("key", "v1", 0o644), ("dir/nested", "n", 0o400)]),
            None
        )
        .unwrap());
        assert_eq!(
            fs::read_link(t.join("..data")).unwrap().to_str().unwrap(),
            ts
        );

        // Update: new content, a removed key, a new key; the old timestamped dir is gone.
        assert!(write_atomic(
            t,
            &payload(&[("key", "v2", 0o644), ("other", "o", 0o600)]),
            None
        )
        .unwrap());
        assert_eq!(fs::read_to_string(t.join("key")).unwrap(), "v2");
        assert_eq!(fs::read_to_string(t.join("other")).unwrap(), "o");
        let ts2 = fs::read_link(t.join("..data"))
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_ne!(ts, ts2);
        assert_eq!(
            names(t),
            BTreeSet::from(["..data".into(), ts2, "key".into(), "other".into()])
        );
    }

    #[test]
    fn fs_group_ownership() {
        let tmp = tempfile::tempdir().unwrap();
        let gid = nix::unistd::getegid().as_raw();
        write_atomic(tmp.path(), &payload(&[("k", "v", 0o600)]), Some(gid)).unwrap();
        let meta = fs::metadata(tmp.path().join("k")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        // Already owned and moded: a refresh writes nothing.
        assert!(!write_atomic(tmp.path(), &payload(&[("k", "v", 0o600)]), Some(gid)).unwrap());
    }

    #[test]
    fn rejects_bad_paths() {
        let tmp = tempfile::tempdir().unwrap();
        for (p, msg) in [
            ("/abs", "invalid path: must be relative path: /abs"),
            ("a/../b", "invalid path: must not contain '..': a/../b"),
            ("..data", "invalid path: must not start with '..': ..data"),
            ("", "invalid path: must not be empty: \"\""),
        ] {
            let err = write_atomic(tmp.path(), &payload(&[(p, "x", 0o644)]), None).unwrap_err();
            assert_eq!(err.to_string(), msg);
        }
    }
}
