//! Attaching the programs with pinned bpf_links: a link lives as long as its pin, so an agent
//! restart (which drops every fd) detaches nothing, and attaching again keeps what is pinned.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{CgroupAttachMode, LinkOrder, SchedClassifier, TcAttachType};
use aya::sys::SyscallError;
use aya::util::KernelVersion;

use super::{
    program_error, remove_tree, sock_program, tc_program, Datapath, DatapathError, PROG_CONNECT4,
    PROG_GETPEERNAME4, PROG_RECVMSG4, PROG_SENDMSG4, PROG_TC_INGRESS,
};

/// The socket LB programs and the pin name of each one's link in a cgroup's link directory.
const SOCK_LINKS: [(&str, &str); 4] = [
    (PROG_CONNECT4, "connect4"),
    (PROG_SENDMSG4, "sendmsg4"),
    (PROG_RECVMSG4, "recvmsg4"),
    (PROG_GETPEERNAME4, "getpeername4"),
];

/// What an attach call did: links it created and pinned, and pinned links it found and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attached {
    pub new: usize,
    pub kept: usize,
}

impl Datapath {
    /// Attaches connect4, sendmsg4, recvmsg4 and getpeername4 to the cgroup2 directory
    /// `cgroup_dir` (they apply to its whole subtree). Idempotent: links already pinned for this
    /// cgroup are kept, so an agent restart never leaves a window without socket LB.
    pub fn attach_socket_lb(&mut self, cgroup_dir: &Path) -> Result<Attached, DatapathError> {
        let dir = self.cgroup_links_dir(cgroup_dir)?;
        create_dir(&dir)?;
        let cgroup = File::open(cgroup_dir).map_err(|source| DatapathError::Io {
            op: "open cgroup",
            path: cgroup_dir.to_path_buf(),
            source,
        })?;
        let mut attached = Attached::default();
        for (name, file) in SOCK_LINKS {
            let pin = dir.join(file);
            if open_pinned(&pin)?.is_some() {
                attached.kept += 1;
                continue;
            }
            let program = sock_program(&mut self.ebpf, name)?;
            let id = program
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|source| program_error("attach", name, source))?;
            let link = program
                .take_link(id)
                .map_err(|source| program_error("take link of", name, source))?;
            let link =
                FdLink::try_from(link).map_err(|source| link_error("convert", &pin, source))?;
            pin_link(link, &pin)?;
            attached.new += 1;
        }
        Ok(attached)
    }

    /// Detaches the socket LB from `cgroup_dir` and removes its pinned links. Returns how many
    /// it removed (0 when none were attached).
    pub fn detach_socket_lb(&mut self, cgroup_dir: &Path) -> Result<usize, DatapathError> {
        let dir = self.cgroup_links_dir(cgroup_dir)?;
        remove_tree(&dir)
    }

    /// Attaches the per-packet program as tcx ingress on `ifname` (in the calling thread's
    /// network namespace), after any programs already there. Idempotent: a pinned link whose
    /// program is still attached to `ifname` is kept; a stale pin (the interface was deleted
    /// and made again) is replaced. Needs Linux 6.6.
    pub fn attach_tc(&mut self, ifname: &str) -> Result<Attached, DatapathError> {
        let pin = self.tc_link_pin(ifname)?;
        if !tcx_supported() {
            return Err(DatapathError::TcxUnsupported);
        }
        create_dir(&self.links_dir())?;
        if let Some(link) = open_pinned(&pin)? {
            let program_id = FdLink::from(link)
                .info()
                .map_err(|source| link_error("inspect", &pin, source))?
                .program_id();
            let (_, programs) = SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
                .map_err(|source| program_error("query tcx for", PROG_TC_INGRESS, source))?;
            if programs.iter().any(|program| program.id() == program_id) {
                return Ok(Attached { new: 0, kept: 1 });
            }
            detach(&pin)?;
        }
        let program = tc_program(&mut self.ebpf)?;
        let id = program
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|source| program_error("attach tcx", PROG_TC_INGRESS, source))?;
        let link = program
            .take_link(id)
            .map_err(|source| program_error("take link of", PROG_TC_INGRESS, source))?;
        let link = FdLink::try_from(link).map_err(|source| link_error("convert", &pin, source))?;
        pin_link(link, &pin)?;
        Ok(Attached { new: 1, kept: 0 })
    }

    /// Detaches the tcx program from `ifname` and removes its pinned link; whether one was
    /// there.
    pub fn detach_tc(&mut self, ifname: &str) -> Result<bool, DatapathError> {
        let pin = self.tc_link_pin(ifname)?;
        detach(&pin)
    }

    /// `links/cgroup-<inode>`: the cgroup2 inode is its id, unique while it exists and short
    /// enough for any nesting depth.
    fn cgroup_links_dir(&self, cgroup_dir: &Path) -> Result<PathBuf, DatapathError> {
        let meta = std::fs::metadata(cgroup_dir).map_err(|source| DatapathError::Io {
            op: "stat cgroup",
            path: cgroup_dir.to_path_buf(),
            source,
        })?;
        Ok(self.links_dir().join(format!("cgroup-{}", meta.ino())))
    }

    fn tc_link_pin(&self, ifname: &str) -> Result<PathBuf, DatapathError> {
        if !valid_ifname(ifname) {
            return Err(DatapathError::InvalidIfname {
                name: ifname.to_string(),
            });
        }
        Ok(self.links_dir().join(format!("tc-{ifname}")))
    }
}

/// tcx links arrived in Linux 6.6. Older kernels would need aya's netlink (clsact) attach,
/// whose filters cannot be pinned as links, so they are not offered.
fn tcx_supported() -> bool {
    KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 6, 0))
}

/// Linux interface names: 1..=15 bytes, no '/', whitespace or NUL, not "." or "..".
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
}

/// The link pinned at `pin`, if any.
fn open_pinned(pin: &Path) -> Result<Option<PinnedLink>, DatapathError> {
    match PinnedLink::from_pin(pin) {
        Ok(link) => Ok(Some(link)),
        Err(LinkError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(source) => Err(link_error("open pinned", pin, source)),
    }
}

fn pin_link(link: FdLink, pin: &Path) -> Result<(), DatapathError> {
    // The returned PinnedLink only closes our fd when dropped; the pin keeps the link.
    link.pin(pin)
        .map(drop)
        .map_err(|source| link_error("pin", pin, source))
}

/// Detaches the link pinned at `pin` at once (removing the pin alone detaches it only after
/// an RCU grace period); whether one was there.
fn detach(pin: &Path) -> Result<bool, DatapathError> {
    crate::sys::detach_pinned_link(pin).map_err(|source| DatapathError::Io {
        op: "detach pinned link",
        path: pin.to_path_buf(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), DatapathError> {
    std::fs::create_dir_all(dir).map_err(|source| DatapathError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

fn link_error(
    op: &'static str,
    path: &Path,
    source: impl std::error::Error + Send + Sync + 'static,
) -> DatapathError {
    DatapathError::Link {
        op,
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_that_cannot_become_pin_paths_are_refused() {
        for name in ["berth0", "veth-abc", "a", "123456789012345"] {
            assert!(valid_ifname(name), "{name}");
        }
        for name in ["", ".", "..", "a/b", "1234567890123456", "a b", "a\0"] {
            assert!(!valid_ifname(name), "{name:?}");
        }
    }
}
