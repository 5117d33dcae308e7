//! The Berth API server: a Kubernetes-compatible HTTPS front end over a durable store.
//!
//! It serves the Kubernetes REST API (discovery, OpenAPI, CRUD, watch, patch, tables,
//! subresources) to unmodified clients such as kubectl. It owns the API's semantics and nothing
//! else: scheduling, controllers and nodes are API clients in other crates.
#![forbid(unsafe_code)]

pub mod patch;
pub mod registry;
pub mod status;
pub mod storage;
