//! The only module with `unsafe`: thin wrappers over the syscalls nix lacks. Every block says why it is sound.
pub(crate) mod pty;
