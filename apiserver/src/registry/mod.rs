//! The registry: what each served resource is and how its objects are defaulted, validated,
//! printed and selected.

pub mod defaults;
pub mod fields;
pub mod resources;
pub mod table;
pub mod validation;

pub use resources::{find, find_kind, groups, ResourceInfo, Subresource, RESOURCES};
