//! Shared Kubernetes vocabulary for every Berth crate, with no I/O: re-exports of the API types,
//! label and field selectors, quantities, name validation, object-meta helpers and well-known
//! labels. It must not do I/O, spawn threads or depend on any other Berth crate.
#![forbid(unsafe_code)]

pub use k8s_openapi;

mod fields;
mod label_parser;
mod labels;
pub mod names;
mod quantity;
mod quantity_parse;
pub mod time;
pub mod well_known;

pub use fields::{escape_value, FieldRequirement, FieldSelector, FieldSelectorError};
pub use labels::{LabelSelector, Operator, Requirement, RequirementError, SelectorError};
pub use quantity::{Quantity, QuantityError, QuantityFormat};
