//! The REST API: authentication, authorization, routing, and the generic handlers that serve
//! every resource in the registry.

mod list;
mod negotiate;
mod nonresource;
mod pod_proxy;
mod query;
mod read;
mod route;
mod strategy;
mod subresource;
mod typed;
mod watch;
mod write;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

pub use query::Query;
pub use route::{route, ResourceRoute, Route};

use crate::alloc::ServiceAllocator;
use crate::auth::{Attributes, Authorizer, TokenAuthenticator, UserInfo};
use crate::cache::Caches;
use crate::http::{Request, Response, Service};
use crate::metrics::Metrics;
use crate::status::ApiError;
use crate::storage::Storage;

/// The API, as an HTTP service.
pub struct Api {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) caches: Arc<Caches>,
    pub(crate) tokens: TokenAuthenticator,
    pub(crate) authorizer: Box<dyn Authorizer>,
    pub(crate) services: ServiceAllocator,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) openapi: nonresource::OpenApiDocs,
    /// `host:port` clients reach us on, for discovery's serverAddressByClientCIDRs.
    pub(crate) advertise: String,
    /// The DefaultTolerationSeconds admission plugin's settings.
    pub(crate) default_tolerations: crate::registry::defaults::DefaultTolerationSeconds,
    /// How pods/log and pods/exec reach kubelets; `None` answers them with 503.
    pub(crate) kubelet: Option<Arc<crate::proxy::KubeletClient>>,
}

/// The result of a handler: a response, or a Status error.
pub(crate) type ApiResult = Result<Response, ApiError>;

/// Paths anyone may read without credentials, as Kubernetes' system:public-info-viewer.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

impl Api {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        caches: Arc<Caches>,
        tokens: TokenAuthenticator,
        authorizer: Box<dyn Authorizer>,
        services: ServiceAllocator,
        metrics: Arc<Metrics>,
        advertise: String,
    ) -> Api {
        Api {
            storage,
            caches,
            tokens,
            authorizer,
            services,
            metrics,
            openapi: nonresource::OpenApiDocs::default(),
            advertise,
            default_tolerations: Default::default(),
            kubelet: None,
        }
    }

    /// Sets the client pods/log and pods/exec use to reach kubelets.
    pub(crate) fn with_kubelet_client(mut self, client: crate::proxy::KubeletClient) -> Api {
        self.kubelet = Some(Arc::new(client));
        self
    }

    /// Sets the tolerationSeconds the DefaultTolerationSeconds admission plugin adds to pods.
    pub(crate) fn with_default_tolerations(
        mut self,
        tolerations: crate::registry::defaults::DefaultTolerationSeconds,
    ) -> Api {
        self.default_tolerations = tolerations;
        self
    }

    fn authenticate(&self, req: &Request) -> Option<UserInfo> {
        if let Some(user) = &req.peer_user {
            return Some(user.clone());
        }
        let authorization = req.header("authorization")?;
        self.tokens
            .authenticate(authorization)
            .or_else(|| crate::bootstrap_token::authenticate(&self.caches, authorization))
    }

    async fn handle(&self, mut req: Request) -> (ApiResult, &'static str, String) {
        let public =
            is_public(&req.path) || crate::bootstrap_token::anonymous_may(&req.method, &req.path);
        let user = self.authenticate(&req);
        // Handlers that record the requester (a CSR's spec.username) read it from the request.
        req.peer_user.clone_from(&user);
        if user.is_none() && !public {
            return (Err(ApiError::unauthorized()), "", String::new());
        }
        let query = match Query::parse(&req.query) {
            Ok(q) => q,
            Err(e) => return (Err(e), "", String::new()),
        };
        let route = match route(&req.path) {
            Ok(r) => r,
            Err(e) => return (Err(e), "", String::new()),
        };
        match route {
            Route::Resource(r) => {
                let verb = verb(&req.method, &r, &query);
                let resource = r.info.plural.to_string();
                if let Some(user) = &user {
                    let attrs = Attributes {
                        user,
                        verb,
                        group: r.info.group,
                        resource: r.info.plural,
                        subresource: r.subresource.map(|s| s.name()).unwrap_or(""),
                        namespace: r.namespace.as_deref().unwrap_or(""),
                        name: r.name.as_deref().unwrap_or(""),
                        path: "",
                    };
                    if let Err(reason) = self.authorizer.authorize(&attrs) {
                        return (Err(ApiError::forbidden(reason)), verb, resource);
                    }
                }
                (self.resource(req, r, query, verb).await, verb, resource)
            }
            other => {
                if let Some(user) = &user {
                    let attrs = Attributes {
                        user,
                        verb: "get",
                        group: "",
                        resource: "",
                        subresource: "",
                        namespace: "",
                        name: "",
                        path: &req.path,
                    };
                    if let Err(reason) = self.authorizer.authorize(&attrs) {
                        return (Err(ApiError::forbidden(reason)), "get", String::new());
                    }
                }
                if req.method != "GET" && req.method != "HEAD" {
                    return (
                        Err(ApiError::method_not_allowed("only GET is served here")),
                        "",
                        String::new(),
                    );
                }
                (Ok(self.non_resource(&req, other)), "get", String::new())
            }
        }
    }

    async fn resource(
        &self,
        req: Request,
        r: ResourceRoute,
        query: Query,
        verb: &'static str,
    ) -> ApiResult {
        use crate::registry::Subresource;
        if let Some(sub) = r.subresource {
            return match sub {
                // A CSR's approval is a write of its status conditions, like status.
                Subresource::Status | Subresource::Approval => {
                    self.status_subresource(req, &r, &query).await
                }
                Subresource::Scale => self.scale_subresource(req, &r, &query).await,
                Subresource::Binding => self.binding(req, &r, &query).await,
                Subresource::Finalize => self.finalize(req, &r, &query).await,
                Subresource::Log => self.pod_log(&req, &r).await,
                Subresource::Exec => self.pod_exec(&req, &r).await,
            };
        }
        match verb {
            "get" => self.get(&req, &r, &query).await,
            "list" => self.list(&req, &r, &query).await,
            "watch" => self.watch(&req, &r, &query).await,
            "create" => self.create(&req, &r, &query).await,
            "update" => self.update(&req, &r, &query).await,
            "patch" => self.patch(&req, &r, &query).await,
            "delete" => self.delete(&req, &r, &query).await,
            "deletecollection" => self.delete_collection(&req, &r, &query).await,
            _ => Err(ApiError::method_not_allowed(format!(
                "method {} is not supported on this path",
                req.method
            ))),
        }
    }
}

/// The Kubernetes verb of a request.
fn verb(method: &str, r: &ResourceRoute, q: &Query) -> &'static str {
    match (method, r.name.is_some()) {
        ("GET" | "HEAD", true) if q.watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if q.watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unsupported",
    }
}

impl Service for Api {
    fn call(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + '_>> {
        Box::pin(async move {
            let start = Instant::now();
            let method = req.method.clone();
            let path = req.path.clone();
            let (result, verb, resource) = self.handle(req).await;
            let response = match result {
                Ok(r) => r,
                Err(e) => error_response(&e),
            };
            let verb_label = if verb.is_empty() {
                method.as_str()
            } else {
                verb
            };
            self.metrics
                .observe_request(verb_label, &resource, response.status, start.elapsed());
            tracing::debug!(%method, %path, status = response.status, elapsed_us = start.elapsed().as_micros() as u64, "request");
            response
        })
    }
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    let mut r = Response::json(e.code, &e.to_status());
    if let Some(secs) = e.retry_after {
        r = r.with_header("Retry-After", secs.to_string());
    }
    r
}

/// A JSON body as a Value; malformed JSON is 400 with the decoder's message.
pub(crate) fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}
