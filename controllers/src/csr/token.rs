//! The control plane's join token (`kubeadm token create`): a bootstrap token Secret in
//! kube-system, made once and reused while it exists, and its `<id>.<secret>` in
//! `<data-dir>/join-token` (mode 0600) for `berth agent --token-file`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use rand::Rng;

/// The groups a join token's users get besides `system:bootstrappers` (kubeadm's).
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading bootstrap token secret {name}")]
    Get {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating bootstrap token secret {name}")]
    Create {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing configmap kube-public/{name}")]
    ClusterInfo {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `<data-dir>/join-token`.
pub fn join_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("join-token")
}

fn random(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The bootstrap token Secret for `id`/`secret`, without expiry, usable for authentication.
pub fn token_secret(id: &str, secret: &str) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("token-id", id),
        ("token-secret", secret),
        ("usage-bootstrap-authentication", "true"),
        ("auth-extra-groups", NODE_TOKEN_GROUP),
        (
            "description",
            "berth agent join token, made by berth server",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..ObjectMeta::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Returns the join token, reusing `<data-dir>/join-token` while its Secret still exists, else
/// making a new token and Secret.
pub async fn ensure_join_token(client: Client, data_dir: &Path) -> Result<String, TokenError> {
    let api = Api::<Secret>::namespaced(client, "kube-system");
    let path = join_token_path(data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_string();
        if let Some((id, _)) = token.split_once('.') {
            let name = format!("bootstrap-token-{id}");
            match api.get_opt(&name).await {
                Ok(Some(_)) => return Ok(token),
                Ok(None) => {}
                Err(source) => return Err(TokenError::Get { name, source }),
            }
        }
    }
    let (id, secret) = (random(6), random(16));
    let name = format!("bootstrap-token-{id}");
    api.create(&PostParams::default(), &token_secret(&id, &secret))
        .await
        .map_err(|source| TokenError::Create { name, source })?;
    let token = format!("{id}.{secret}");
    write_token(&path, &token).map_err(|source| TokenError::Write { path, source })?;
    Ok(token)
}

/// Creates or refreshes `kube-public/cluster-info` (the server's URL and CA), which joining
/// nodes read without credentials and pin by the CA's hash.
pub async fn ensure_cluster_info(
    client: Client,
    server: &str,
    ca_pem: &str,
) -> Result<(), TokenError> {
    use super::bootstrap::{cluster_info_kubeconfig, CLUSTER_INFO};
    use k8s_openapi::api::core::v1::ConfigMap;
    let api = Api::<ConfigMap>::namespaced(client, "kube-public");
    let wanted = cluster_info_kubeconfig(server, ca_pem);
    let failed = |source| TokenError::ClusterInfo {
        name: CLUSTER_INFO.to_string(),
        source,
    };
    let current = api.get_opt(CLUSTER_INFO).await.map_err(failed)?;
    let mut cm = current.clone().unwrap_or_else(|| ConfigMap {
        metadata: ObjectMeta {
            name: Some(CLUSTER_INFO.into()),
            namespace: Some("kube-public".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    });
    let data = cm.data.get_or_insert_with(Default::default);
    if data.get("kubeconfig") == Some(&wanted) {
        return Ok(());
    }
    data.insert("kubeconfig".into(), wanted);
    match current {
        Some(_) => api
            .replace(CLUSTER_INFO, &PostParams::default(), &cm)
            .await
            .map(|_| ())
            .map_err(failed),
        None => api
            .create(&PostParams::default(), &cm)
            .await
            .map(|_| ())
            .map_err(failed),
    }
}

fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{token}")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_kubeadms_shape() {
        let (id, secret) = (random(6), random(16));
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(format!("{id}{secret}")
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let s = token_secret(&id, &secret);
        assert_eq!(s.metadata.name.unwrap(), format!("bootstrap-token-{id}"));
        let data = s.data.unwrap();
        assert_eq!(data["usage-bootstrap-authentication"].0, b"true");
        assert_eq!(data["token-secret"].0, secret.as_bytes());
    }
}
