//! Reading and writing cgroupfs files, with errors that name the file.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Writes one value in one `write(2)`: cgroupfs parses each write as a whole.
pub(super) fn write(path: &Path, value: impl ToString) -> Result<(), CgroupError> {
    let value = value.to_string();
    std::fs::write(path, &value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value,
        source,
    })
}

pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Missing is empty: a controller file that does not exist has nothing in it for us.
pub(super) fn read_or_empty(path: &Path) -> Result<String, CgroupError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(String::new()),
        other => other.map_err(|source| CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        reason: format!("not a number: {:?}", text.trim()),
    })
}

/// A `key value` line of a flat-keyed file (memory.events, memory.stat, cpu.stat, oom_control).
pub(super) fn keyed_u64(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = read(path)?;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            return words
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| CgroupError::Parse {
                    path: path.to_owned(),
                    reason: format!("bad value for {key}: {line:?}"),
                });
        }
    }
    Err(CgroupError::Parse {
        path: path.to_owned(),
        reason: format!("no {key} line"),
    })
}

/// Creates `dir` if missing; reports whether it did.
pub(super) fn mkdir(dir: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Mkdir {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// The pids in `cgroup.procs` (none when the cgroup does not exist).
pub(super) fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let text = read_or_empty(&path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| CgroupError::Parse {
                path: path.clone(),
                reason: format!("bad pid {l:?}"),
            })
        })
        .collect()
}

/// Child cgroups of `dir` (directories; control files are regular files).
pub(super) fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(|source| CgroupError::Read {
            path: dir.to_owned(),
            source,
        })?,
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// `dir` and every cgroup below it, deepest first (the order they can be removed in).
pub(super) fn subtree_post_order(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for child in subdirs(dir)? {
        out.extend(subtree_post_order(&child)?);
    }
    out.push(dir.to_owned());
    Ok(out)
}

/// A single path component Berth may create: not empty, not `.`/`..`, no `/` or NUL, and not
/// starting with a dot, so it can never name a control file or leave its parent.
pub(super) fn check_name(name: &str) -> Result<(), CgroupError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else if name.starts_with('.') {
        "starts with a dot"
    } else if name.contains(['/', '\0']) {
        "contains '/' or NUL"
    } else {
        return Ok(());
    };
    Err(CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["pod1234-abcd", "c1", "berth"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".", "..", ".x", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keyed_and_procs() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(keyed_u64(&f, "oom_kill").unwrap(), 1);
        assert_eq!(keyed_u64(&f, "max").unwrap(), 4);
        assert!(keyed_u64(&f, "nope").is_err());
        std::fs::write(dir.path().join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(procs(dir.path()).unwrap(), vec![12, 34]);
        assert!(procs(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(dir.path().join("cgroup.procs"), "x\n").unwrap();
        assert!(procs(dir.path()).is_err());
    }

    #[test]
    fn post_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("b/c")).unwrap();
        std::fs::create_dir_all(a.join("d")).unwrap();
        std::fs::write(a.join("cpu.max"), "max").unwrap();
        let order = subtree_post_order(&a).unwrap();
        let rel: Vec<_> = order
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(rel, ["a/b/c", "a/b", "a/d", "a"]);
        assert!(subtree_post_order(&dir.path().join("none"))
            .unwrap()
            .is_empty());
    }
}
