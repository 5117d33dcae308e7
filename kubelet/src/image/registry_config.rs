//! Which registries are plain HTTP, which have mirrors, and the credentials for them: the node's
//! registries file and the pods' `imagePullSecrets`.
//!
//! The registries file is JSON (every key optional):
//!
//! ```json
//! {
//!   "insecure": ["127.0.0.1:5000"],
//!   "mirrors": { "docker.io": ["mirror.internal:5000"] },
//!   "credentials": { "registry.example.com": { "username": "u", "password": "p" } }
//! }
//! ```
//!
//! `insecure` hosts are spoken to over plain HTTP; `mirrors` are tried in order before the
//! upstream registry; `credentials` apply to every pull from (or through a mirror for) that host.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::error::ImageError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// `host:port` spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Registry host (`docker.io`) → mirror hosts, tried in order before the registry itself.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Registry host → credentials (the node's own; pull secrets come per pull).
    pub credentials: BTreeMap<String, Credentials>,
}

impl RegistryConfig {
    /// Reads the JSON registries file described in the module docs.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let bytes = std::fs::read(path).map_err(ImageError::io("read registries config", path))?;
        let mut config: RegistryConfig =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                op: "parse registries config",
                path: path.to_path_buf(),
                source,
            })?;
        config.credentials = config
            .credentials
            .into_iter()
            .map(|(host, mut cred)| {
                cred.registry = normalize_registry_host(&host);
                (cred.registry.clone(), cred)
            })
            .collect();
        config.mirrors = config
            .mirrors
            .into_iter()
            .map(|(host, mirrors)| (normalize_registry_host(&host), mirrors))
            .collect();
        Ok(config)
    }

    /// The hosts to try for `registry`, in order: its mirrors, then itself.
    pub fn hosts_for(&self, registry: &str) -> Vec<String> {
        let mut hosts = self.mirrors.get(registry).cloned().unwrap_or_default();
        hosts.push(registry.to_string());
        hosts
    }

    /// Credentials for `host`: the pod's pull secrets first (in order), then the node's.
    pub fn credentials_for(&self, host: &str, secrets: &[Credentials]) -> Vec<Credentials> {
        let host = normalize_registry_host(host);
        let mut out: Vec<Credentials> = secrets
            .iter()
            .filter(|c| normalize_registry_host(&c.registry) == host)
            .cloned()
            .collect();
        if let Some(c) = self.credentials.get(&host) {
            out.push(c.clone());
        }
        out
    }
}

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The registry host these are for (`docker.io`, `127.0.0.1:5000`).
    #[serde(default)]
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The host part of a docker config key (`https://index.docker.io/v1/` → `docker.io`,
/// `http://127.0.0.1:5000` → `127.0.0.1:5000`).
pub fn normalize_registry_host(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials from a `kubernetes.io/dockerconfigjson` secret's `.dockerconfigjson` (or a legacy
/// `.dockercfg`, which is the `auths` map without the wrapper). `auth` (base64 `user:pass`) wins
/// over `username`/`password`, as in Docker.
pub fn credentials_from_docker_config(json: &[u8]) -> Result<Vec<Credentials>, ImageError> {
    let malformed = |message: String| ImageError::Malformed {
        what: "docker config",
        object: "pull secret".into(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| malformed(e.to_string()))?;
    let auths = match value.get("auths") {
        Some(a) => a.clone(),
        None => value,
    };
    let auths: BTreeMap<String, DockerAuth> =
        serde_json::from_value(auths).map_err(|e| malformed(e.to_string()))?;
    let mut out = Vec::new();
    for (key, entry) in auths {
        let (username, password) = match entry.auth.filter(|a| !a.is_empty()) {
            Some(auth) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| malformed(format!("auth for {key}: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| malformed(format!("auth for {key} is not UTF-8")))?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| malformed(format!("auth for {key} is not user:password")))?;
                (u.to_string(), p.to_string())
            }
            None => match (entry.username, entry.password) {
                (Some(u), Some(p)) => (u, p),
                // An entry with neither (e.g. only `identitytoken`) gives us nothing to send.
                _ => continue,
            },
        };
        out.push(Credentials {
            registry: normalize_registry_host(&key),
            username,
            password,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerconfigjson_auth_and_username_password() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}","email":"a@b"}},
                "127.0.0.1:5000":{{"username":"bob","password":"pw"}},
                "token.only":{{"identitytoken":"x"}}}}}}"#
        );
        let creds = credentials_from_docker_config(json.as_bytes()).unwrap();
        assert_eq!(creds.len(), 2);
        let hub = creds.iter().find(|c| c.registry == "docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "pa:ss")
        );
        let local = creds
            .iter()
            .find(|c| c.registry == "127.0.0.1:5000")
            .unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("bob", "pw")
        );
        assert!(!format!("{local:?}").contains("pw"));
    }

    #[test]
    fn legacy_dockercfg_and_errors() {
        let creds = credentials_from_docker_config(
            br#"{"http://reg.example:8080/v2/":{"username":"u","password":"p"}}"#,
        )
        .unwrap();
        assert_eq!(creds[0].registry, "reg.example:8080");
        assert!(credentials_from_docker_config(b"not json").is_err());
        assert!(credentials_from_docker_config(br#"{"auths":{"h":{"auth":"!!!"}}}"#).is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        let json = format!(r#"{{"auths":{{"h":{{"auth":"{no_colon}"}}}}}}"#);
        assert!(credentials_from_docker_config(json.as_bytes()).is_err());
    }

    #[test]
    fn load_config_and_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.json");
        std::fs::write(
            &path,
            br#"{"insecure":["127.0.0.1:5000"],"mirrors":{"index.docker.io":["m1:5000","m2"]},
                "credentials":{"https://reg.example":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let config = RegistryConfig::load(&path).unwrap();
        assert_eq!(config.insecure, vec!["127.0.0.1:5000"]);
        assert_eq!(
            config.hosts_for("docker.io"),
            vec!["m1:5000", "m2", "docker.io"]
        );
        assert_eq!(config.hosts_for("quay.io"), vec!["quay.io"]);
        let secret = Credentials {
            registry: "reg.example".into(),
            username: "s".into(),
            password: "x".into(),
        };
        let found = config.credentials_for("reg.example", std::slice::from_ref(&secret));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].username, "s");
        assert_eq!(found[1].username, "u");
        assert!(config.credentials_for("other", &[secret]).is_empty());
        std::fs::write(&path, b"{").unwrap();
        assert!(matches!(
            RegistryConfig::load(&path),
            Err(ImageError::Json { .. })
        ));
        assert_eq!(
            RegistryConfig::load(&dir.path().join("none"))
                .unwrap_err()
                .to_string()
                .split(' ')
                .next(),
            Some("read")
        );
    }
}
