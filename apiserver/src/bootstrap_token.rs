//! Bootstrap tokens (kubeadm's TLS bootstrap): bearer tokens `<id>.<secret>` checked against
//! `kube-system/bootstrap-token-<id>` Secrets of type `bootstrap.kubernetes.io/token`, and the
//! authorization rule that confines their holders to asking for certificates.
//!
//! Authorization rule (there is no RBAC yet): a user in `system:bootstrappers` may only do what
//! Kubernetes' `system:node-bootstrapper` ClusterRole plus `system:discovery` allow —
//! create/get/list/watch `certificatesigningrequests.certificates.k8s.io` and GET non-resource
//! discovery paths. Everyone else authenticated is still allowed everything.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::auth::{Attributes, Authorizer, UserInfo};
use crate::cache::Caches;
use crate::object;
use crate::registry;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Name prefix of bootstrap token Secrets in kube-system.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// The group every bootstrap token user is in.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The user name prefix of bootstrap token users.
pub const USER_PREFIX: &str = "system:bootstrap:";

/// Splits `<id>.<secret>`: a 6-character id and a 16-character secret, both `[a-z0-9]`.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// One `data` entry of a stored Secret, base64-decoded.
fn secret_data(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine as _;
    let raw = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    String::from_utf8(bytes).ok()
}

/// The user a bootstrap token Secret vouches for, if `secret` (the token's secret half) matches
/// and the Secret is usable for authentication and not expired at `now`.
pub fn user_from_secret(
    stored: &Value,
    id: &str,
    secret: &str,
    now: OffsetDateTime,
) -> Option<UserInfo> {
    if stored.get("type").and_then(Value::as_str) != Some(SECRET_TYPE)
        || !object::meta_str(stored, "deletionTimestamp").is_empty()
    {
        return None;
    }
    if secret_data(stored, "token-id").as_deref() != Some(id) {
        return None;
    }
    let stored_secret = secret_data(stored, "token-secret")?;
    if !constant_time_eq(stored_secret.as_bytes(), secret.as_bytes()) {
        return None;
    }
    if secret_data(stored, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(expiration) = secret_data(stored, "expiration") {
        // An unparseable expiration counts as expired, as in Kubernetes.
        match OffsetDateTime::parse(&expiration, &Rfc3339) {
            Ok(t) if t > now => {}
            _ => return None,
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    if let Some(extra) = secret_data(stored, "auth-extra-groups") {
        for g in extra.split(',').map(str::trim) {
            // Kubernetes rejects a token whose extra groups leave the bootstrappers' namespace.
            if !g.starts_with("system:bootstrappers:") {
                return None;
            }
            groups.push(g.to_string());
        }
    }
    Some(UserInfo {
        name: format!("{USER_PREFIX}{id}"),
        uid: String::new(),
        groups: {
            groups.push("system:authenticated".into());
            groups
        },
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates `Authorization: Bearer <id>.<secret>` against the Secrets in the watch cache.
pub(crate) fn authenticate(caches: &Caches, authorization: &str) -> Option<UserInfo> {
    let token = authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))?
        .trim();
    let (id, secret) = parse_token(token)?;
    let info = registry::find("", "v1", "secrets")?;
    let key = object::key(info, "kube-system", &format!("{SECRET_PREFIX}{id}"));
    let stored = caches.get(info).get(&key)?;
    user_from_secret(&stored.value, id, secret, OffsetDateTime::now_utc())
}

/// Where joining nodes find the server and its CA before they have credentials.
const CLUSTER_INFO_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// Whether an anonymous request may go ahead: reading `kube-public/cluster-info` only (what
/// kubeadm grants `system:anonymous` for token discovery; nodes pin its CA by hash).
pub(crate) fn anonymous_may(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD") && path == CLUSTER_INFO_PATH
}

/// Wraps an authorizer: bootstrap token users get only what node bootstrapping needs.
pub struct BootstrapLimited<A>(pub A);

/// Whether `attrs` is within what `system:node-bootstrapper` and `system:discovery` allow.
fn bootstrapper_may(attrs: &Attributes<'_>) -> bool {
    if !attrs.path.is_empty() {
        return attrs.verb == "get";
    }
    attrs.group == "certificates.k8s.io"
        && attrs.resource == "certificatesigningrequests"
        && attrs.subresource.is_empty()
        && matches!(attrs.verb, "create" | "get" | "list" | "watch")
}

impl<A: Authorizer> Authorizer for BootstrapLimited<A> {
    fn authorize(&self, attrs: &Attributes<'_>) -> Result<(), String> {
        if attrs.user.groups.iter().any(|g| g == BOOTSTRAPPERS) && !bootstrapper_may(attrs) {
            let what = if attrs.path.is_empty() {
                format!(
                    "{} resource \"{}\" in API group \"{}\"",
                    attrs.verb, attrs.resource, attrs.group
                )
            } else {
                format!("{} path \"{}\"", attrs.verb, attrs.path)
            };
            return Err(format!(
                "User \"{}\" cannot {what}: bootstrap tokens may only request certificates",
                attrs.user.name
            ));
        }
        self.0.authorize(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AllowAuthenticated;
    use serde_json::json;

    fn b64(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(expiration: Option<&str>) -> Value {
        let mut data = json!({
            "token-id": b64("abcdef"),
            "token-secret": b64("0123456789abcdef"),
            "usage-bootstrap-authentication": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token"),
        });
        if let Some(e) = expiration {
            data["expiration"] = json!(b64(e));
        }
        json!({"metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": SECRET_TYPE, "data": data})
    }

    #[test]
    fn tokens_parse_only_in_kubeadm_form() {
        assert_eq!(
            parse_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for bad in [
            "abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn secret_vouches_for_a_bootstrapper() {
        let now = OffsetDateTime::now_utc();
        let user = user_from_secret(&secret(None), "abcdef", "0123456789abcdef", now)
            .expect("valid token");
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:kubeadm:default-node-token",
                "system:authenticated"
            ]
        );
        assert!(user_from_secret(&secret(None), "abcdef", "0123456789abcdeX", now).is_none());
        assert!(
            user_from_secret(
                &secret(Some("2000-01-01T00:00:00Z")),
                "abcdef",
                "0123456789abcdef",
                now
            )
            .is_none(),
            "expired"
        );
        assert!(user_from_secret(
            &secret(Some("2999-01-01T00:00:00Z")),
            "abcdef",
            "0123456789abcdef",
            now
        )
        .is_some());
        let mut wrong_type = secret(None);
        wrong_type["type"] = json!("Opaque");
        assert!(user_from_secret(&wrong_type, "abcdef", "0123456789abcdef", now).is_none());
        let mut escalating = secret(None);
        escalating["data"]["auth-extra-groups"] = json!(b64("system:masters"));
        assert!(user_from_secret(&escalating, "abcdef", "0123456789abcdef", now).is_none());
    }

    #[test]
    fn anonymous_users_may_only_read_cluster_info() {
        assert!(anonymous_may("GET", CLUSTER_INFO_PATH));
        assert!(!anonymous_may("PUT", CLUSTER_INFO_PATH));
        assert!(!anonymous_may("DELETE", CLUSTER_INFO_PATH));
        assert!(!anonymous_may(
            "GET",
            "/api/v1/namespaces/kube-public/configmaps"
        ));
        assert!(!anonymous_may(
            "GET",
            "/api/v1/namespaces/kube-system/configmaps/cluster-info"
        ));
    }

    #[test]
    fn bootstrappers_may_only_request_certificates() {
        let user = UserInfo {
            name: "system:bootstrap:abcdef".into(),
            uid: String::new(),
            groups: vec![BOOTSTRAPPERS.into(), "system:authenticated".into()],
        };
        let authz = BootstrapLimited(AllowAuthenticated);
        let attrs = |verb, group, resource, sub, path| Attributes {
            user: &user,
            verb,
            group,
            resource,
            subresource: sub,
            namespace: "",
            name: "",
            path,
        };
        let csr = "certificatesigningrequests";
        let cert = "certificates.k8s.io";
        assert!(authz.authorize(&attrs("create", cert, csr, "", "")).is_ok());
        assert!(authz.authorize(&attrs("watch", cert, csr, "", "")).is_ok());
        assert!(authz.authorize(&attrs("get", "", "", "", "/apis")).is_ok());
        assert!(authz
            .authorize(&attrs("update", cert, csr, "approval", ""))
            .is_err());
        assert!(authz
            .authorize(&attrs("delete", cert, csr, "", ""))
            .is_err());
        assert!(authz
            .authorize(&attrs("list", "", "secrets", "", ""))
            .is_err());
        assert!(authz
            .authorize(&attrs("create", "", "nodes", "", ""))
            .is_err());
        let admin = UserInfo {
            name: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        let mut a = attrs("list", "", "secrets", "", "");
        a.user = &admin;
        assert!(authz.authorize(&a).is_ok());
    }
}
