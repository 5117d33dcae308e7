//! Maps a request path onto what it names: a resource collection, one object, a subresource, or a
//! non-resource endpoint.

use crate::registry::{self, ResourceInfo, Subresource};
use crate::status::ApiError;

/// What a path names.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// `/healthz`, `/version`, `/api`, `/openapi/v3/...` and the like: the path itself.
    NonResource(String),
    /// `/apis/<group>` (legacy group document).
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`.
    GroupVersion {
        group: String,
        version: String,
    },
    Resource(ResourceRoute),
}

#[derive(Debug, PartialEq)]
pub struct ResourceRoute {
    pub info: &'static ResourceInfo,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<Subresource>,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('%')
}

/// Parses a path. Unknown resources are 404 with Kubernetes' message.
pub fn route(path: &str) -> Result<Route, ApiError> {
    let trimmed = path.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.split('/').skip(1).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] | ["apis"] => return Ok(Route::NonResource(trimmed.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            return Ok(Route::NonResource(if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.to_string()
            }))
        }
    };
    if rest.is_empty() {
        if registry::groups()
            .iter()
            .any(|(g, v)| *g == group && *v == version)
        {
            return Ok(Route::GroupVersion {
                group: group.into(),
                version: version.into(),
            });
        }
        return Err(ApiError::not_found_path());
    }
    if rest.iter().any(|s| !valid_segment(s)) {
        return Err(ApiError::not_found_path());
    }
    // `namespaces/<ns>/<resource>...` scopes a namespaced resource, except that
    // `namespaces/<name>[/status|finalize]` is the Namespace object itself.
    let (namespace, rest) = match rest {
        // `/api/v1/namespaces/<name>/status` is the Namespace's own subresource.
        ["namespaces", _, "status" | "finalize"] if group.is_empty() => (None, rest),
        ["namespaces", ns, _, ..] => (Some(ns.to_string()), &rest[2..]),
        _ => (None, rest),
    };
    let plural = rest[0];
    let info = registry::find(group, version, plural).ok_or_else(ApiError::not_found_path)?;
    if namespace.is_some() && !info.namespaced {
        return Err(ApiError::not_found_path());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = match rest.get(2) {
        None => None,
        Some(sub) => {
            let found = info.subresources.iter().copied().find(|s| s.name() == *sub);
            match found {
                Some(s) if rest.len() == 3 => Some(s),
                _ => return Err(ApiError::not_found_path()),
            }
        }
    };
    Ok(Route::Resource(ResourceRoute {
        info,
        namespace,
        name,
        subresource,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourceRoute {
        match route(path).expect(path) {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let r = res("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (r.info.plural, r.namespace.as_deref(), r.name.as_deref()),
            ("pods", Some("default"), Some("web"))
        );
        assert_eq!(r.subresource, Some(Subresource::Status));
        let r = res("/apis/apps/v1/deployments");
        assert_eq!(
            (r.info.kind, r.namespace, r.name),
            ("Deployment", None, None)
        );
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.info.plural, r.namespace, r.name.as_deref()),
            ("namespaces", None, Some("kube-system"))
        );
        let r = res("/api/v1/namespaces/foo/status");
        assert_eq!(
            (r.info.plural, r.name.as_deref(), r.subresource),
            ("namespaces", Some("foo"), Some(Subresource::Status))
        );
        let r = res("/apis/apps/v1/namespaces/a/deployments/d/scale");
        assert_eq!(r.subresource, Some(Subresource::Scale));
        let r = res("/api/v1/nodes/n1");
        assert_eq!(r.name.as_deref(), Some("n1"));
    }

    #[test]
    fn non_resource_and_groups() {
        assert_eq!(
            route("/healthz").unwrap(),
            Route::NonResource("/healthz".into())
        );
        assert_eq!(route("/api").unwrap(), Route::NonResource("/api".into()));
        assert_eq!(route("/apis/apps").unwrap(), Route::Group("apps".into()));
        assert_eq!(
            route("/apis/apps/v1").unwrap(),
            Route::GroupVersion {
                group: "apps".into(),
                version: "v1".into()
            }
        );
    }

    #[test]
    fn unknown_things_are_404() {
        for p in [
            "/api/v1/widgets",
            "/apis/apps/v2/deployments",
            "/api/v1/namespaces/a/nodes",
            "/api/v1/namespaces/a/pods/p/bogus",
            "/api/v1/namespaces/a/pods/p/status/extra",
            "/apis/nope/v1",
            "/api/v1/namespaces/a/pods/..",
        ] {
            assert_eq!(route(p).unwrap_err().code, 404, "{p}");
        }
    }
}
