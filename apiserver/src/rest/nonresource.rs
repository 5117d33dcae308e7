//! Non-resource endpoints: health, version, metrics, discovery and OpenAPI.

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::json;

use super::{error_response, Api, ApiResult, Route};
use crate::discovery::{self, DiscoveryFormat};
use crate::http::{Request, Response};
use crate::openapi;
use crate::status::ApiError;

/// The Kubernetes version Berth speaks.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";

/// The OpenAPI v3 documents, built on first use and then served from memory.
#[derive(Default)]
pub struct OpenApiDocs {
    docs: OnceLock<Docs>,
}

struct Docs {
    index: Bytes,
    /// (index path such as "apis/apps/v1", bytes, hash)
    group_versions: Vec<(String, Bytes, String)>,
}

fn patch_meta(definition: &str, field: &str) -> Option<openapi::PatchMeta> {
    let meta = crate::patch::field_meta(definition, field)?;
    let strategy = meta.strategy.extension_value()?;
    Some((strategy, meta.merge_key))
}

impl OpenApiDocs {
    fn get(&self) -> &Docs {
        self.docs.get_or_init(|| {
            let mut group_versions = Vec::new();
            let mut hashes = Vec::new();
            for (path, group, version) in openapi::served_group_versions() {
                let doc = openapi::generate_group_version(group, version, &patch_meta);
                let bytes = Bytes::from(doc.to_string());
                let hash = openapi::content_hash(&bytes);
                hashes.push((path.clone(), hash.clone()));
                group_versions.push((path, bytes, hash));
            }
            let index = Bytes::from(openapi::index(&hashes).to_string());
            Docs {
                index,
                group_versions,
            }
        })
    }
}

fn version_info() -> serde_json::Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-berth.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

impl Api {
    pub(crate) fn non_resource(&self, req: &Request, route: Route) -> Response {
        match self.non_resource_inner(req, route) {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    }

    fn non_resource_inner(&self, req: &Request, route: Route) -> ApiResult {
        let accept = req.header("accept").unwrap_or("");
        match route {
            Route::Group(group) => {
                let doc = discovery::legacy_group(&group).ok_or_else(ApiError::not_found_path)?;
                Ok(Response::json(200, &doc))
            }
            Route::GroupVersion { group, version } => {
                let doc = discovery::legacy_group_resources(&group, &version)
                    .ok_or_else(ApiError::not_found_path)?;
                Ok(Response::json(200, &doc))
            }
            Route::NonResource(path) => match path.as_str() {
                "/healthz" | "/livez" | "/readyz" => {
                    Ok(Response::new(200, "text/plain; charset=utf-8", "ok"))
                }
                "/version" => Ok(Response::json(200, &version_info())),
                "/metrics" => {
                    for (info, count) in self.caches.watcher_counts() {
                        self.metrics.set_watchers(info.plural, count);
                    }
                    Ok(Response::new(
                        200,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        self.metrics.encode(),
                    ))
                }
                "/api" | "/apis" => {
                    let core = path == "/api";
                    match discovery::negotiate_discovery(accept) {
                        DiscoveryFormat::Aggregated(v) => {
                            let doc = discovery::aggregated(core, v);
                            Ok(Response::new(200, v.content_type(), doc.to_string()))
                        }
                        DiscoveryFormat::Legacy if core => Ok(Response::json(
                            200,
                            &discovery::legacy_api_versions(&self.advertise),
                        )),
                        DiscoveryFormat::Legacy => {
                            Ok(Response::json(200, &discovery::legacy_group_list()))
                        }
                    }
                }
                "/openapi/v3" => Ok(Response::new(
                    200,
                    openapi::CONTENT_TYPE,
                    self.openapi.get().index.clone(),
                )),
                "/openapi/v2" => {
                    if accept.contains("protobuf") {
                        Ok(Response::new(
                            200,
                            openapi::V2_PROTOBUF_CONTENT_TYPE,
                            openapi::minimal_v2_protobuf(),
                        ))
                    } else {
                        Ok(Response::json(200, &openapi::minimal_v2_json()))
                    }
                }
                p if p.starts_with("/openapi/v3/") => {
                    let key = &p["/openapi/v3/".len()..];
                    let docs = self.openapi.get();
                    let (_, bytes, hash) = docs
                        .group_versions
                        .iter()
                        .find(|(path, _, _)| path == key)
                        .ok_or_else(ApiError::not_found_path)?;
                    let mut r = Response::new(200, openapi::CONTENT_TYPE, bytes.clone())
                        .with_header("Etag", format!("\"{hash}\""));
                    // A hash-pinned URL never changes: let clients cache it for good.
                    if req.query.contains("hash=") {
                        r = r.with_header("Cache-Control", "public, immutable");
                    }
                    Ok(r)
                }
                "/" => Ok(Response::json(
                    200,
                    &json!({"paths": ["/api", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]}),
                )),
                _ => Err(ApiError::not_found_path()),
            },
            Route::Resource(_) => Err(ApiError::not_found_path()),
        }
    }
}
