//! The Berth API server: a Kubernetes-compatible HTTPS front end over a durable store.
//!
//! It serves the Kubernetes REST API (discovery, OpenAPI, CRUD, watch, patch, tables,
//! subresources) to unmodified clients such as kubectl. It owns the API's semantics and nothing
//! else: scheduling, controllers and nodes are API clients in other crates.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod auth;
pub mod bootstrap_token;
mod cache;
pub mod discovery;
pub mod http;
mod metrics;
mod object;
pub mod openapi;
pub mod patch;
pub mod pki;
mod protobuf;
pub mod proxy;
pub mod registry;
mod rest;
mod start;
pub mod status;
pub mod storage;
pub mod tls;

pub use http::IoMode;
pub use start::{cleanup, start, Config, Running, StartError, MAX_BODY, SYSTEM_NAMESPACES};
