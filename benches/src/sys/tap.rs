//! A tap device of one queue: `/dev/net/tun` and `TUNSETIFF`. The device lives as long as the
//! returned file; what the kernel transmits on it is read from the file, and what is written to
//! the file arrives on the device as if from a wire.
//!
//! The file is non-blocking: tun then builds each written frame in a page fragment and runs a
//! native XDP program on it before any socket buffer exists (`tun_build_skb`), as a NIC driver
//! does with its receive ring.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Creates the tap device `ifname` (Ethernet frames, no packet-info header) in the calling
/// thread's network namespace.
pub fn open(ifname: &str) -> io::Result<File> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid (empty) value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: `request` is a valid, NUL-terminated ifreq that outlives the call; TUNSETIFF
    // reads it and writes the device's name back into it, nothing beyond it.
    let ret = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF as _,
            &mut request as *mut libc::ifreq,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_the_kernel() {
        for name in ["", "a-name-far-too-long", "nul\0in"] {
            let error = open(name).expect_err(name);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }
}
