//! Detaching a pinned bpf_link at once.
//!
//! Removing a link's pin only drops a reference: the bpffs inode is freed after an RCU grace
//! period and the link released from a workqueue, so the program stays attached for a moment
//! after `unlink`. BPF_LINK_DETACH (Linux 5.9) detaches it synchronously whoever still holds it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `union bpf_attr`, as the prefix these commands use; the kernel requires the rest zero.
#[repr(C, align(8))]
#[derive(Default)]
struct BpfAttr {
    words: [u32; 8],
}

fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, initialised, 8-byte aligned buffer of the size passed; the kernel
    // reads (and for these commands does not write) at most that many bytes of it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BpfAttr,
            std::mem::size_of::<BpfAttr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Detaches the link pinned at `pin` and removes the pin. `Ok(false)` when nothing is pinned
/// there.
pub(crate) fn detach_pinned_link(pin: &Path) -> io::Result<bool> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = BpfAttr::default();
    let pathname = path.as_ptr() as u64;
    attr.words[0] = pathname as u32;
    attr.words[1] = (pathname >> 32) as u32;
    let fd = match bpf(BPF_OBJ_GET, &mut attr) {
        Ok(fd) => fd,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = BpfAttr::default();
    attr.words[0] = fd.as_raw_fd() as u32;
    match bpf(BPF_LINK_DETACH, &mut attr) {
        // ENOLINK: already detached (its interface or cgroup went away).
        Ok(_) => {}
        Err(error) if error.raw_os_error() == Some(libc::ENOLINK) => {}
        Err(error) => return Err(error),
    }
    std::fs::remove_file(pin)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_is_the_kernel_prefix_size() {
        assert_eq!(std::mem::size_of::<BpfAttr>(), 32);
        assert_eq!(std::mem::align_of::<BpfAttr>(), 8);
    }

    #[test]
    fn a_missing_pin_is_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Not bpffs: BPF_OBJ_GET fails, but a missing path is ENOENT before the fs type matters.
        assert!(!detach_pinned_link(&dir.path().join("missing")).expect("missing pin"));
    }
}
