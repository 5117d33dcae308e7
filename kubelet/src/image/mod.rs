//! Pulling and storing OCI images.

pub mod config;

pub use config::ImageConfig;
