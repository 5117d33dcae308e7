//! The crate's only `unsafe`: `Pod` promises for the ABI structs, the two bpf(2) commands
//! aya 0.14 does not expose, and the ethtool ioctl for GRO.

mod ethtool;
mod link;
mod pod;

pub(crate) use ethtool::set_gro;
pub(crate) use link::detach_pinned_link;
