//! The cluster's PKI: a CA, the API server's serving certificate and client certificates, made
//! on first start under `<data-dir>/pki` and reused afterwards.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why the PKI could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("pki file {path} could not be {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed for {what}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

/// The CA and the API server's files, on disk.
pub struct Pki {
    dir: PathBuf,
    ca_cert_pem: String,
    ca_key: KeyPair,
}

/// The user name of the API server's client certificate for kubelets (as kubeadm names it).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 365;

impl Pki {
    /// Loads the CA from `dir`, or makes one. `dir` is created with mode 0700.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        create_private_dir(dir)?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let ca_cert_pem = read(&cert_path)?;
            let ca_key =
                KeyPair::from_pem(&read(&key_path)?).map_err(|source| PkiError::Generate {
                    what: "ca key".into(),
                    source,
                })?;
            return Ok(Pki {
                dir: dir.to_path_buf(),
                ca_cert_pem,
                ca_key,
            });
        }
        let ca_key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: "ca key".into(),
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("berth-ca", &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_DAYS);
        let cert = params
            .self_signed(&ca_key)
            .map_err(|source| PkiError::Generate {
                what: "ca certificate".into(),
                source,
            })?;
        write_private(&key_path, &ca_key.serialize_pem())?;
        write_public(&cert_path, &cert.pem())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_cert_pem: cert.pem(),
            ca_key,
        })
    }

    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key).map_err(|source| {
            PkiError::Generate {
                what: "ca issuer".into(),
                source,
            }
        })
    }

    /// The serving certificate for `names` (DNS names and IP addresses). An existing one is kept
    /// while it covers every name; otherwise it is re-issued. Returns (cert path, key path).
    pub fn serving_cert(
        &self,
        name: &str,
        names: &[String],
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let (cert_path, key_path) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        let sans_path = self.dir.join(format!("{name}.sans"));
        let wanted = names.join("\n");
        if cert_path.exists() && key_path.exists() {
            if let Ok(have) = fs::read_to_string(&sans_path) {
                let have: Vec<&str> = have.lines().collect();
                if names.iter().all(|n| have.contains(&n.as_str())) {
                    return Ok((cert_path, key_path));
                }
            }
        }
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: name.into(),
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name, &[]);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|source| PkiError::Generate {
                        what: format!("SAN {n}"),
                        source,
                    }),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, LEAF_DAYS);
        let cert =
            params
                .signed_by(&key, &self.issuer()?)
                .map_err(|source| PkiError::Generate {
                    what: name.into(),
                    source,
                })?;
        write_private(&key_path, &key.serialize_pem())?;
        write_public(&cert_path, &cert.pem())?;
        write_public(&sans_path, &wanted)?;
        Ok((cert_path, key_path))
    }

    /// A client certificate: CN is the user name, O the groups. Returns (cert PEM, key PEM).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: user.into(),
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(user, groups);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, LEAF_DAYS);
        let cert =
            params
                .signed_by(&key, &self.issuer()?)
                .map_err(|source| PkiError::Generate {
                    what: user.into(),
                    source,
                })?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The API server's client certificate for calling kubelets (CN
    /// [`KUBELET_CLIENT_USER`], group `system:masters`), made once under the PKI directory.
    /// Returns (cert path, key path).
    pub fn apiserver_kubelet_client(&self) -> Result<(PathBuf, PathBuf), PkiError> {
        let (cert_path, key_path) = (
            self.dir.join("apiserver-kubelet-client.crt"),
            self.dir.join("apiserver-kubelet-client.key"),
        );
        if cert_path.exists() && key_path.exists() {
            return Ok((cert_path, key_path));
        }
        let (cert, key) = self.client_cert(KUBELET_CLIENT_USER, &["system:masters"])?;
        write_private(&key_path, &key)?;
        write_public(&cert_path, &cert)?;
        Ok((cert_path, key_path))
    }

    /// A kubelet's serving certificate for port 10250, valid for `node_name`, `localhost`,
    /// 127.0.0.1 and `ips` (the addresses the Node reports), kept under the PKI directory as
    /// `kubelet-<node_name>.{crt,key}` and re-issued when the names change. The API server
    /// verifies it against the CA. Returns (cert path, key path).
    pub fn kubelet_serving_cert(
        &self,
        node_name: &str,
        ips: &[IpAddr],
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let mut names = vec![
            node_name.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        names.extend(ips.iter().map(IpAddr::to_string));
        names.sort();
        names.dedup();
        self.serving_cert(&format!("kubelet-{node_name}"), &names)
    }

    /// Writes a kubeconfig for `user` (client certificate) at `path`, unless one exists.
    pub fn ensure_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(), PkiError> {
        if path.exists() {
            return Ok(());
        }
        let (cert, key) = self.client_cert(user, groups)?;
        write_private(
            path,
            &kubeconfig(server, &self.ca_cert_pem, &cert, &key, user),
        )
    }
}

/// A kubeconfig with one cluster, one user and one context, all named "berth".
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str, user: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: {user}\ncurrent-context: berth\n",
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    )
}

fn dn(common_name: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // Back-date a little so a slightly slow clock elsewhere still accepts the certificate.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        op: "read",
        path: path.into(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::Io {
            op: "created",
            path: dir.into(),
            source,
        })
}

fn write_with_mode(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    // Write to a temporary name and rename, so a crash never leaves a half-written key behind.
    let tmp = path.with_extension("tmp");
    let io = |source| PkiError::Io {
        op: "written",
        path: path.into(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_made_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Pki::load_or_create(dir.path()).expect("create");
        let b = Pki::load_or_create(dir.path()).expect("load");
        assert_eq!(a.ca_cert_pem(), b.ca_cert_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn serving_cert_is_reissued_only_for_new_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path()).expect("create");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert, _) = pki.serving_cert("apiserver", &names).expect("issue");
        let first = fs::read_to_string(&cert).unwrap();
        pki.serving_cert("apiserver", &names[..1]).expect("reuse");
        assert_eq!(first, fs::read_to_string(&cert).unwrap());
        pki.serving_cert("apiserver", &["10.1.2.3".to_string()])
            .expect("reissue");
        assert_ne!(first, fs::read_to_string(&cert).unwrap());
    }

    #[test]
    fn kubelet_certificates_are_made_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path()).expect("create");
        let (cert, key) = pki.apiserver_kubelet_client().expect("issue");
        let first = fs::read_to_string(&cert).unwrap();
        assert_eq!(pki.apiserver_kubelet_client().unwrap(), (cert.clone(), key));
        assert_eq!(first, fs::read_to_string(&cert).unwrap());
        let (serving, _) = pki
            .kubelet_serving_cert("node-1", &["10.0.0.7".parse().unwrap()])
            .expect("issue");
        assert!(serving.ends_with("kubelet-node-1.crt"));
        let sans = fs::read_to_string(dir.path().join("kubelet-node-1.sans")).unwrap();
        assert!(
            sans.contains("10.0.0.7") && sans.contains("node-1"),
            "{sans}"
        );
    }

    #[test]
    fn client_cert_carries_user_and_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path()).expect("create");
        let (cert_pem, _) = pki
            .client_cert("admin", &["system:masters"])
            .expect("issue");
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let o = cert
            .subject()
            .iter_organization()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!((cn.as_str(), o.as_str()), ("admin", "system:masters"));
    }
}
