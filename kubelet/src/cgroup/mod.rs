//! cgroup drivers: v2, v1 and hybrid, detected at runtime.

pub mod resources;

pub use resources::Resources;
