//! The crate's only `unsafe`: system calls nix has no safe wrapper for.

pub mod tap;
