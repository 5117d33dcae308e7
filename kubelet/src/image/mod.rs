//! Pulling and storing OCI images: a content-addressed store under one root directory, each
//! layer unpacked once into its own directory (an overlayfs lowerdir) and shared by every image
//! that has it.

pub mod config;
pub mod error;
pub mod manifest;
pub mod reference;
pub mod registry_config;
pub mod unpack;

pub use config::ImageConfig;
pub use error::ImageError;
pub use reference::{ImageRef, PullPolicy};
pub use registry_config::{credentials_from_docker_config, Credentials, RegistryConfig};
