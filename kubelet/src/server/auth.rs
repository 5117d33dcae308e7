//! Who may call the kubelet: TLS with client certificates from the cluster CA, then a fixed rule
//! (the API server's kubelet client, or `system:masters`), as a kubelet with webhook
//! authorization would decide for those two.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::http::Request;

/// The user name in the API server's client certificate for kubelets (as kubeadm names it).
pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// The group whose members may do anything.
const MASTERS: &str = "system:masters";

/// Why the server's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} PEM holds no usable {what}")]
    Pem { what: &'static str },
    #[error("tls configuration rejected")]
    Config(#[source] rustls::Error),
    #[error("client certificate verifier rejected the CA")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// The identity in a verified client certificate: CN is the user, each O a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// Reads the identity from a DER certificate.
pub fn identity(der: &CertificateDer<'_>) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(Identity { user, groups })
}

/// The server configuration: `cert_pem`/`key_pem` are the kubelet's serving certificate and
/// key, `client_ca_pem` the cluster CA that signs client certificates. Clients without a
/// certificate still connect (and get 401), as with Kubernetes' kubelet.
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut &client_ca_pem[..]).flatten() {
        roots.add(ca).map_err(TlsError::Config)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
        });
    }
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .flatten()
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .ok()
        .flatten()
        .ok_or(TlsError::Pem { what: "key" })?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(TlsError::Verifier)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// 401 without a certificate, 403 for anyone but the API server and admins.
pub(super) fn authorize(who: Option<&Identity>, req: &Request) -> Result<(), (u16, String)> {
    let Some(who) = who else {
        return Err((401, "Unauthorized".into()));
    };
    if who.user == APISERVER_KUBELET_CLIENT || who.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let sub = req
        .path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    let (verb, subresource) = match sub {
        "containerLogs" | "pods" => ("get", "proxy"),
        "exec" => ("create", "proxy"),
        "metrics" => ("get", "metrics"),
        _ => ("get", "proxy"),
    };
    Err((
        403,
        format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource={subresource})",
            who.user
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn only_the_apiserver_and_admins_get_in() {
        let id = |user: &str, groups: &[&str]| Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let logs = req("/containerLogs/a/b/c");
        assert_eq!(authorize(None, &logs).unwrap_err().0, 401);
        assert!(authorize(Some(&id(APISERVER_KUBELET_CLIENT, &[])), &logs).is_ok());
        assert!(authorize(Some(&id("admin", &["system:masters"])), &logs).is_ok());
        let (code, msg) =
            authorize(Some(&id("mallory", &["devs"])), &req("/exec/a/b/c")).unwrap_err();
        assert_eq!(code, 403);
        assert_eq!(
            msg,
            "Forbidden (user=mallory, verb=create, resource=nodes, subresource=proxy)"
        );
    }

    #[test]
    fn bad_pem_is_an_error() {
        assert!(matches!(
            tls_config(b"", b"", b"junk"),
            Err(TlsError::Pem { .. })
        ));
    }
}
