//! Attaching the programs with pinned bpf_links: a link lives as long as its pin, so an agent
//! restart (which drops every fd) detaches nothing, and attaching again keeps what is pinned.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::CgroupAttachMode;

use super::links::{attach_tcx_pinned, create_dir, detach, open_pinned, pin_link};
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
        let pin = self.link_pin("tc", ifname)?;
        let links_dir = self.links_dir();
        attach_tcx_pinned(&links_dir, &pin, ifname, PROG_TC_INGRESS, || {
            tc_program(&mut self.ebpf)
        })
    }

    /// Detaches the tcx program from `ifname` and removes its pinned link; whether one was
    /// there.
    pub fn detach_tc(&mut self, ifname: &str) -> Result<bool, DatapathError> {
        detach(&self.link_pin("tc", ifname)?)
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
}
