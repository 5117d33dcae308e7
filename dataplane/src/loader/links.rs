//! Pinned bpf_links, shared by every attach: the pin path of an interface's link, pinning a
//! new link, opening a pinned one, detaching it, and the tcx reuse-or-replace rule.

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::sys::SyscallError;
use aya::util::KernelVersion;

use super::attach::Attached;
use super::{program_error, Datapath, DatapathError};

impl Datapath {
    /// `links/<prefix>-<ifname>`, for an `ifname` that can become a pin name.
    pub(super) fn link_pin(&self, prefix: &str, ifname: &str) -> Result<PathBuf, DatapathError> {
        if !valid_ifname(ifname) {
            return Err(DatapathError::InvalidIfname {
                name: ifname.to_string(),
            });
        }
        Ok(self.links_dir().join(format!("{prefix}-{ifname}")))
    }
}

/// Attaches `program` (named `name`) as tcx ingress on `ifname`, pinned at `pin` under
/// `links_dir`. Idempotent: a pinned link whose program is still attached to `ifname` is
/// kept; a stale pin (the interface was deleted and made again) is replaced. `program` is
/// asked for only when a new link is needed. Needs Linux 6.6.
pub(super) fn attach_tcx_pinned<'a>(
    links_dir: &Path,
    pin: &Path,
    ifname: &str,
    name: &'static str,
    program: impl FnOnce() -> Result<&'a mut SchedClassifier, DatapathError>,
) -> Result<Attached, DatapathError> {
    if !tcx_supported() {
        return Err(DatapathError::TcxUnsupported);
    }
    create_dir(links_dir)?;
    if let Some(link) = open_pinned(pin)? {
        let program_id = FdLink::from(link)
            .info()
            .map_err(|source| link_error("inspect", pin, source))?
            .program_id();
        let (_, programs) = SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
            .map_err(|source| program_error("query tcx for", name, source))?;
        if programs.iter().any(|program| program.id() == program_id) {
            return Ok(Attached { new: 0, kept: 1 });
        }
        detach(pin)?;
    }
    let program = program()?;
    let id = program
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|source| program_error("attach tcx", name, source))?;
    let link = program
        .take_link(id)
        .map_err(|source| program_error("take link of", name, source))?;
    pin_link(link, pin)?;
    Ok(Attached { new: 1, kept: 0 })
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
pub(super) fn open_pinned(pin: &Path) -> Result<Option<PinnedLink>, DatapathError> {
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

/// Pins a link just taken from its program at `pin`.
pub(super) fn pin_link<L>(link: L, pin: &Path) -> Result<(), DatapathError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let link = FdLink::try_from(link).map_err(|source| link_error("convert", pin, source))?;
    // The returned PinnedLink only closes our fd when dropped; the pin keeps the link.
    link.pin(pin)
        .map(drop)
        .map_err(|source| link_error("pin", pin, source))
}

/// Detaches the link pinned at `pin` at once (removing the pin alone detaches it only after
/// an RCU grace period); whether one was there.
pub(super) fn detach(pin: &Path) -> Result<bool, DatapathError> {
    crate::sys::detach_pinned_link(pin).map_err(|source| DatapathError::Io {
        op: "detach pinned link",
        path: pin.to_path_buf(),
        source,
    })
}

pub(super) fn create_dir(dir: &Path) -> Result<(), DatapathError> {
    std::fs::create_dir_all(dir).map_err(|source| DatapathError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

pub(super) fn link_error(
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
