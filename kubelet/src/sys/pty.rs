//! Pseudo-terminal window size, which nix has no safe call for.

use std::os::fd::{AsRawFd, BorrowedFd};

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// Sets the window size of the terminal behind `fd` (a pty master or slave).
pub fn set_window_size(fd: BorrowedFd<'_>, cols: u16, rows: u16) -> nix::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is open for the borrow's lifetime, and TIOCSWINSZ only reads the `winsize`
    // that `size` holds for the whole call; a wrong kind of descriptor fails with ENOTTY.
    unsafe { tiocswinsz(fd.as_raw_fd(), &size) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn window_size_reaches_the_slave() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        set_window_size(pty.master.as_fd(), 132, 43).expect("set");
        // Read back through the slave, as the process in the terminal would.
        nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);
        let mut got = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: the slave is open and `got` is a valid winsize the ioctl writes into.
        unsafe { tiocgwinsz(pty.slave.as_raw_fd(), &mut got) }.expect("get");
        assert_eq!((got.ws_col, got.ws_row), (132, 43));
        let file = tempfile::tempfile().unwrap();
        assert!(set_window_size(file.as_fd(), 1, 1).is_err());
    }
}
