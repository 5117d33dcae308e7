//! Generic receive offload on a link, through the legacy ethtool ioctl (`SIOCETHTOOL` with
//! `ETHTOOL_SGRO`): one `ethtool_value`, where ethtool's netlink interface would need a generic
//! netlink family and bitsets for the same bit.
//!
//! For a veth, GRO gives the receiving end NAPI, which native XDP needs to redirect frames into
//! its peer (`veth_xdp_xmit` drops them otherwise).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const ETHTOOL_SGRO: u32 = 0x0000_002c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Runs one ethtool_value command on `ifname`, through `socket` (any socket of the link's
/// network namespace), and returns `data` as the kernel left it.
fn ethtool_value(socket: BorrowedFd<'_>, ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain old data; all zeroes is a valid (empty) value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: `request` is a valid, NUL-terminated ifreq whose ifru_data points at `value`,
    // which outlives the call; SIOCETHTOOL reads and writes no more than an ethtool_value
    // there for these commands.
    let ret = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCETHTOOL as _,
            &mut request as *mut libc::ifreq,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Turns GRO on or off for `ifname`.
pub(crate) fn set_gro(socket: BorrowedFd<'_>, ifname: &str, on: bool) -> io::Result<()> {
    ethtool_value(socket, ifname, ETHTOOL_SGRO, u32::from(on)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_value_is_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<EthtoolValue>(), 8);
    }

    #[test]
    fn bad_names_are_refused_before_the_kernel() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        for name in ["", "a-name-far-too-long", "nul\0in"] {
            let error = set_gro(socket.as_fd(), name, true).expect_err(name);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn a_missing_link_is_no_such_device() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        let error = set_gro(socket.as_fd(), "berthnone0", true).expect_err("no such link");
        assert_eq!(error.raw_os_error(), Some(libc::ENODEV));
    }
}
