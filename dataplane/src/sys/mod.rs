//! The crate's only `unsafe`: `Pod` promises for the ABI structs and the two bpf(2) commands
//! aya 0.14 does not expose.

mod link;
mod pod;

pub(crate) use link::detach_pinned_link;
