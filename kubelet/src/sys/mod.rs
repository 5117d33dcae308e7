//! The only module with `unsafe`: thin wrappers over the syscalls nix lacks. Every block says why it is sound.

pub(crate) mod child;
pub(crate) mod pty;
pub(crate) mod raw;
pub(crate) mod residency;
pub(crate) mod xattr;
