//! Extended attributes without following symlinks (nix has no wrapper for them).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "xattr name contains a NUL byte",
        )
    })
}

/// `lsetxattr(2)`: sets `name` on `path` itself, never on a symlink's target.
pub(crate) fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let path = c_path(path)?;
    let name = c_name(name)?;
    // SAFETY: `path` and `name` are NUL-terminated C strings that outlive the call; `value` is a
    // valid slice whose pointer and length are passed together; the kernel only reads them.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lgetxattr(2)`: the value of `name` on `path` itself, `None` when it is not set.
pub(crate) fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let path = c_path(path)?;
    let name = c_name(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `path` and `name` are valid C strings; `buf` is a writable buffer of exactly
        // `buf.len()` bytes, and the kernel writes at most that many.
        let rc = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 64 * 1024 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_xattr_round_trips_or_is_unsupported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        match lsetxattr(&file, "user.berth.test", b"v") {
            Ok(()) => {
                assert_eq!(
                    lgetxattr(&file, "user.berth.test").expect("get"),
                    Some(b"v".to_vec())
                );
                assert_eq!(lgetxattr(&file, "user.berth.none").expect("get"), None);
            }
            // tmpfs without user xattrs
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP)),
        }
    }
}
