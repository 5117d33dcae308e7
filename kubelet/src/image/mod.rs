//! Pulling and storing OCI images: a content-addressed store under one root directory, each
//! layer unpacked once into its own directory (an overlayfs lowerdir) and shared by every image
//! that has it. [`ImageStore`] is the entry point; the file layout is described in [`store`].

pub mod config;
pub mod error;
pub mod import;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod registry_config;
pub mod store;
pub mod unpack;

pub use config::ImageConfig;
pub use error::ImageError;
pub use reference::{ImageRef, PullPolicy};
pub use registry_config::{credentials_from_docker_config, Credentials, RegistryConfig};
pub use store::{Image, ImageStore, ImageSummary};
