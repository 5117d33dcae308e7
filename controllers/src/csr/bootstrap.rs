//! The node side of TLS bootstrap (kubeadm's, as the kubelet does it): with a bootstrap token,
//! ask for a node client certificate through a CertificateSigningRequest, wait for it to be
//! issued, and write `<data-dir>/kubelet.kubeconfig`; then, as the node, ask for the kubelet's
//! serving certificate the same way. Existing credentials are reused while they are valid.
//!
//! Files in the data directory: `kubelet.kubeconfig` (server, CA, node client certificate and
//! key; mode 0600), `kubelet-serving.crt` and `kubelet-serving.key` (0600).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use super::{KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER, NODES_GROUP, NODE_PREFIX};

/// Credentials this close to expiry are replaced rather than reused.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("building a client for {server}")]
    Client {
        server: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("creating a certificatesigningrequest for {signer}")]
    Create {
        signer: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("waiting for certificatesigningrequest {name}")]
    Wait {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error("certificatesigningrequest {name} was not issued within {timeout:?}")]
    Timeout { name: String, timeout: Duration },
    #[error("{kubeconfig} holds no valid node credentials and no bootstrap token was given")]
    NoToken { kubeconfig: PathBuf },
    #[error("discovering the cluster CA from {server}: {message}")]
    Discovery { server: String, message: String },
    #[error("the cluster CA's public key hash is {found}, not the expected {expected}")]
    CaHashMismatch { expected: String, found: String },
    #[error("certificatesigningrequest {name} was {outcome}: {message}")]
    Refused {
        name: String,
        outcome: String,
        message: String,
    },
}

/// What `berth agent` is told.
#[derive(Clone, Debug)]
pub struct BootstrapConfig {
    /// The API server's URL.
    pub server: String,
    /// The cluster CA (PEM) the server's certificate is checked against.
    pub ca_pem: String,
    /// A bootstrap token `<id>.<secret>`; needed only when there are no valid credentials yet.
    pub token: Option<String>,
    pub node_name: String,
    /// The addresses put in the serving certificate besides the node name.
    pub node_ips: Vec<IpAddr>,
    pub data_dir: PathBuf,
    /// How long to wait for each certificate.
    pub timeout: Duration,
}

/// What the kubelet runs with after bootstrap.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    /// The node's kubeconfig (`<data-dir>/kubelet.kubeconfig`).
    pub kubeconfig: PathBuf,
    pub serving_cert_pem: Vec<u8>,
    pub serving_key_pem: Vec<u8>,
}

impl BootstrapConfig {
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("kubelet.kubeconfig")
    }

    fn serving_paths(&self) -> (PathBuf, PathBuf) {
        (
            self.data_dir.join("kubelet-serving.crt"),
            self.data_dir.join("kubelet-serving.key"),
        )
    }
}

/// Makes sure the node has a client certificate and a serving certificate, asking the cluster
/// for whichever is missing or about to expire.
pub async fn bootstrap(config: &BootstrapConfig) -> Result<NodeCredentials, BootstrapError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BootstrapError::Io {
        op: "creating",
        path: config.data_dir.clone(),
        source,
    })?;
    let kubeconfig = config.kubeconfig_path();
    let user = format!("{NODE_PREFIX}{}", config.node_name);
    let reusable = std::fs::read_to_string(&kubeconfig)
        .ok()
        .and_then(|text| kubeconfig_client_cert(&text))
        .is_some_and(|pem| cert_usable(&pem, &user, &[]));
    if reusable {
        tracing::info!(path = %kubeconfig.display(), "reusing the node's client certificate");
    } else {
        let token = config
            .token
            .as_deref()
            .ok_or_else(|| BootstrapError::NoToken {
                kubeconfig: kubeconfig.clone(),
            })?;
        let client = client_for(
            &kubeconfig_text(config, &Auth::Token(token)),
            &config.server,
        )
        .await?;
        let key = generate_key("node client key")?;
        let cert = request_certificate(
            client,
            &key,
            &user,
            &[],
            KUBELET_CLIENT_SIGNER,
            &["digital signature", "client auth"],
            config.timeout,
        )
        .await?;
        let text = kubeconfig_text(
            config,
            &Auth::Cert {
                cert_pem: &cert,
                key_pem: &key.serialize_pem(),
            },
        );
        write_private(&kubeconfig, text.as_bytes())?;
        tracing::info!(path = %kubeconfig.display(), "wrote the node's kubeconfig");
    }

    let (cert_path, key_path) = config.serving_paths();
    let mut names = vec![config.node_name.clone()];
    names.extend(config.node_ips.iter().map(IpAddr::to_string));
    let existing = std::fs::read(&cert_path)
        .ok()
        .zip(std::fs::read(&key_path).ok())
        .filter(|(cert, _)| cert_usable(cert, &user, &names));
    let (serving_cert_pem, serving_key_pem) = match existing {
        Some(pair) => pair,
        None => {
            let text =
                std::fs::read_to_string(&kubeconfig).map_err(|source| BootstrapError::Io {
                    op: "reading",
                    path: kubeconfig.clone(),
                    source,
                })?;
            let client = client_for(&text, &config.server).await?;
            let key = generate_key("kubelet serving key")?;
            let cert = request_certificate(
                client,
                &key,
                &user,
                &names,
                KUBELET_SERVING_SIGNER,
                &["digital signature", "server auth"],
                config.timeout,
            )
            .await?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            write_private(&cert_path, cert.as_bytes())?;
            (cert.into_bytes(), key.serialize_pem().into_bytes())
        }
    };
    Ok(NodeCredentials {
        kubeconfig,
        serving_cert_pem,
        serving_key_pem,
    })
}

/// The `sha256:<hex>` pin of a CA certificate (PEM): kubeadm's `--discovery-token-ca-cert-hash`,
/// a SHA-256 of the certificate's DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca_pem: &str) -> Option<String> {
    use sha2::Digest as _;
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Some(format!("sha256:{}", hex::encode(digest)))
}

/// Reads the cluster CA from the `kube-public/cluster-info` ConfigMap (readable without
/// credentials) over a connection that cannot be verified yet, and accepts it only if its
/// public key matches `expected_hash` (`sha256:<hex>`): kubeadm's token discovery, pinned by
/// the CA hash.
pub async fn discover_ca(server: &str, expected_hash: &str) -> Result<String, BootstrapError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let failed = |message: String| BootstrapError::Discovery {
        server: server.to_string(),
        message,
    };
    let url = server
        .parse()
        .map_err(|e| failed(format!("bad server URL: {e}")))?;
    let mut config = kube::Config::new(url);
    // Nothing secret is sent, and what comes back is checked against the pin below.
    config.accept_invalid_certs = true;
    let client = Client::try_from(config).map_err(|e| failed(e.to_string()))?;
    let api = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, "kube-public");
    let info = api
        .get(CLUSTER_INFO)
        .await
        .map_err(|e| failed(format!("reading kube-public/{CLUSTER_INFO}: {e}")))?;
    let kubeconfig = info
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .ok_or_else(|| failed(format!("{CLUSTER_INFO} has no kubeconfig")))?;
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| failed(format!("{CLUSTER_INFO}'s kubeconfig: {e}")))?;
    let ca_data = parsed
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or_else(|| failed(format!("{CLUSTER_INFO} names no CA")))?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_data)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| failed(format!("{CLUSTER_INFO}'s CA is not base64 PEM")))?;
    let found = ca_cert_hash(&ca_pem).ok_or_else(|| failed("the CA does not parse".into()))?;
    if !found.eq_ignore_ascii_case(expected_hash.trim()) {
        return Err(BootstrapError::CaHashMismatch {
            expected: expected_hash.trim().to_string(),
            found,
        });
    }
    Ok(ca_pem)
}

/// The ConfigMap in kube-public that tells joining nodes where the cluster is.
pub const CLUSTER_INFO: &str = "cluster-info";

/// The `kubeconfig` of `kube-public/cluster-info`: the server and its CA, no credentials.
pub fn cluster_info_kubeconfig(server: &str, ca_pem: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: {server}\n    certificate-authority-data: {b64}\ncontexts: []\nusers: []\n"
    )
}

fn generate_key(what: &'static str) -> Result<KeyPair, BootstrapError> {
    KeyPair::generate().map_err(|source| BootstrapError::Generate { what, source })
}

/// Creates a CSR for `user` (`O=system:nodes`) with `sans`, and waits for its certificate.
async fn request_certificate(
    client: Client,
    key: &KeyPair,
    user: &str,
    sans: &[String],
    signer: &'static str,
    usages: &[&str],
    timeout: Duration,
) -> Result<String, BootstrapError> {
    let generate = |source| BootstrapError::Generate {
        what: "certificate request",
        source,
    };
    let mut params = CertificateParams::new(sans.to_vec()).map_err(generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, NODES_GROUP);
    dn.push(DnType::CommonName, user);
    params.distinguished_name = dn;
    let request = params
        .serialize_request(key)
        .and_then(|r| r.pem())
        .map_err(generate)?;
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let api = Api::<CertificateSigningRequest>::all(client);
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|source| BootstrapError::Create { signer, source })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer, "waiting for the certificate");
    let done = |c: Option<&CertificateSigningRequest>| c.is_some_and(|c| outcome(c).is_some());
    let waited = tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api, &name, done),
    )
    .await
    .map_err(|_| BootstrapError::Timeout {
        name: name.clone(),
        timeout,
    })?
    .map_err(|source| BootstrapError::Wait {
        name: name.clone(),
        source,
    })?;
    match waited.as_ref().and_then(outcome) {
        Some(Ok(cert)) => Ok(cert),
        Some(Err((outcome, message))) => Err(BootstrapError::Refused {
            name,
            outcome,
            message,
        }),
        None => Err(BootstrapError::Refused {
            name,
            outcome: "deleted".into(),
            message: "the request is gone".into(),
        }),
    }
}

/// The certificate, or why there will be none; `None` while pending.
fn outcome(csr: &CertificateSigningRequest) -> Option<Result<String, (String, String)>> {
    let status = csr.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        if c.type_ == "Denied" || c.type_ == "Failed" {
            return Some(Err((
                c.type_.to_lowercase(),
                c.message.clone().unwrap_or_default(),
            )));
        }
    }
    let cert = status.certificate.as_ref().filter(|c| !c.0.is_empty())?;
    Some(Ok(String::from_utf8_lossy(&cert.0).into_owned()))
}

enum Auth<'a> {
    Token(&'a str),
    Cert { cert_pem: &'a str, key_pem: &'a str },
}

/// A kubeconfig for the API server, authenticating as `auth` says.
fn kubeconfig_text(config: &BootstrapConfig, auth: &Auth<'_>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match auth {
        Auth::Token(token) => format!("    token: {token}\n"),
        Auth::Cert { cert_pem, key_pem } => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: node\ncurrent-context: berth\nusers:\n- name: node\n  user:\n{user}",
        config.server,
        b64(&config.ca_pem),
    )
}

/// The client certificate (PEM) embedded in a kubeconfig.
fn kubeconfig_client_cert(text: &str) -> Option<Vec<u8>> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text).ok()?;
    let data = kubeconfig
        .auth_infos
        .first()?
        .auth_info
        .as_ref()?
        .client_certificate_data
        .clone()?;
    base64::engine::general_purpose::STANDARD.decode(data).ok()
}

/// Whether `pem` is a certificate for `user`, covering `names`, valid for a while yet.
fn cert_usable(pem: &[u8], user: &str, names: &[String]) -> bool {
    let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem) else {
        return false;
    };
    let Ok(cert) = p.parse_x509() else {
        return false;
    };
    let cn_ok = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        == Some(user);
    let margin = i64::try_from(RENEW_BEFORE.as_secs()).unwrap_or(i64::MAX);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fresh = cert.validity().not_after.timestamp() > now.saturating_add(margin);
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                        4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                        16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    cn_ok && fresh && names.iter().all(|n| sans.contains(n))
}

async fn client_for(kubeconfig: &str, server: &str) -> Result<Client, BootstrapError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| BootstrapError::Client {
        server: server.to_string(),
        source,
    };
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| failed(e.into()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(|e| failed(e.into()))?;
    Client::try_from(config).map_err(|e| failed(e.into()))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |op, source| BootstrapError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("creating", e))?;
    f.write_all(data).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming into", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::request::tests::request;
    use crate::csr::sign::tests::ca;
    use crate::csr::Signer;

    fn config(dir: &Path) -> BootstrapConfig {
        BootstrapConfig {
            server: "https://127.0.0.1:6443".into(),
            ca_pem: ca().0,
            token: Some("abcdef.0123456789abcdef".into()),
            node_name: "n1".into(),
            node_ips: vec!["10.0.0.1".parse().unwrap()],
            data_dir: dir.to_path_buf(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn kubeconfigs_parse_and_carry_the_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        let token = kubeconfig_text(&cfg, &Auth::Token("abcdef.0123456789abcdef"));
        let parsed = kube::config::Kubeconfig::from_yaml(&token).expect("token kubeconfig");
        assert_eq!(
            parsed.clusters[0]
                .cluster
                .as_ref()
                .unwrap()
                .server
                .as_deref(),
            Some("https://127.0.0.1:6443")
        );
        assert!(kubeconfig_client_cert(&token).is_none());
        let cert = kubeconfig_text(
            &cfg,
            &Auth::Cert {
                cert_pem: "CERT",
                key_pem: "KEY",
            },
        );
        assert_eq!(kubeconfig_client_cert(&cert).unwrap(), b"CERT");
    }

    #[test]
    fn only_fresh_certificates_for_the_node_and_its_names_are_reused() {
        let (ca_cert, ca_key) = ca();
        let signer = Signer::from_pem(&ca_cert, &ca_key).unwrap();
        let (req, _) = request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.1"]);
        let usages = ["digital signature".to_string(), "server auth".to_string()];
        let long = signer.sign(&req, &usages, None).unwrap();
        let names = ["n1".to_string(), "10.0.0.1".to_string()];
        assert!(cert_usable(long.as_bytes(), "system:node:n1", &names));
        assert!(!cert_usable(long.as_bytes(), "system:node:n2", &names));
        assert!(!cert_usable(
            long.as_bytes(),
            "system:node:n1",
            &["10.0.0.2".to_string()]
        ));
        let short = signer
            .sign(&req, &usages, Some(Duration::from_secs(3600)))
            .unwrap();
        assert!(
            !cert_usable(short.as_bytes(), "system:node:n1", &names),
            "expires within a day"
        );
        assert!(!cert_usable(b"junk", "system:node:n1", &[]));
    }

    #[test]
    fn ca_hashes_pin_the_public_key() {
        let (ca_pem, _) = ca();
        let hash = ca_cert_hash(&ca_pem).expect("hash");
        assert!(
            hash.starts_with("sha256:") && hash.len() == 7 + 64,
            "{hash}"
        );
        assert_eq!(ca_cert_hash(&ca_pem), Some(hash.clone()));
        assert_ne!(ca_cert_hash(&ca().0), Some(hash));
        assert!(ca_cert_hash("junk").is_none());
        let info = cluster_info_kubeconfig("https://10.0.0.1:6443", &ca_pem);
        let parsed = kube::config::Kubeconfig::from_yaml(&info).expect("cluster-info kubeconfig");
        assert_eq!(
            parsed.clusters[0]
                .cluster
                .as_ref()
                .unwrap()
                .server
                .as_deref(),
            Some("https://10.0.0.1:6443")
        );
    }

    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        write_private(&path, b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
