//! The OCI (and Docker v2) manifest, index and image config documents, as much of them as the
//! store reads, and picking the host's manifest out of an index.

use serde::{Deserialize, Serialize};

use super::config::ImageConfig;
use super::error::ImageError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What we accept from a registry's manifest endpoint.
pub const MANIFEST_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A manifest or an index: registries answer either for a tag.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnyManifest {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl AnyManifest {
    pub fn parse(bytes: &[u8], object: &str) -> Result<Self, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
            what: "manifest",
            object: object.to_string(),
            message: e.to_string(),
        })
    }

    pub fn is_index(&self, content_type: Option<&str>) -> bool {
        let ty = self.media_type.as_deref().or(content_type);
        matches!(ty, Some(OCI_INDEX) | Some(DOCKER_LIST))
            || (self.config.is_none() && !self.manifests.is_empty())
    }
}

/// The image config blob (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ImageConfigFile {
    pub fn parse(bytes: &[u8], object: &str) -> Result<Self, ImageError> {
        let file: ImageConfigFile =
            serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
                what: "image config",
                object: object.to_string(),
                message: e.to_string(),
            })?;
        for d in &file.rootfs.diff_ids {
            check_digest(d, "diff id", object)?;
        }
        Ok(file)
    }

    pub fn image_config(&self) -> ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
        }
    }
}

/// The hex of a `sha256:<64 hex>` digest; anything else is refused, since digests become file
/// names in the store.
pub fn check_digest<'a>(
    digest: &'a str,
    what: &'static str,
    object: &str,
) -> Result<&'a str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => Err(ImageError::Malformed {
            what,
            object: object.to_string(),
            message: format!("{digest:?} is not a sha256 digest"),
        }),
    }
}

/// The entry of an index for `arch`/`variant` on linux. An entry without a variant matches any
/// variant; among several, the exact variant wins.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    arch: &str,
    variant: Option<&str>,
) -> Option<&'a Descriptor> {
    let candidates = manifests.iter().filter(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    });
    let mut fallback = None;
    for d in candidates {
        let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        match (v, variant) {
            (Some(a), Some(b)) if a == b => return Some(d),
            (None, _) | (_, None) if fallback.is_none() => fallback = Some(d),
            _ => {}
        }
    }
    fallback
}

/// How a layer blob is compressed, from its first bytes (media types lie more often than magic
/// numbers do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
            annotations: None,
        }
    }

    #[test]
    fn platform_selection() {
        let idx = vec![
            entry("arm", Some("v6"), "a6"),
            entry("arm", Some("v7"), "a7"),
            entry("amd64", None, "x"),
            entry("arm64", None, "b"),
        ];
        assert_eq!(select_platform(&idx, "amd64", None).unwrap().digest, "x");
        assert_eq!(
            select_platform(&idx, "arm", Some("v7")).unwrap().digest,
            "a7"
        );
        assert_eq!(
            select_platform(&idx, "arm64", Some("v8")).unwrap().digest,
            "b"
        );
        assert!(select_platform(&idx, "s390x", None).is_none());
        let mut windows = entry("amd64", None, "w");
        windows.platform.as_mut().unwrap().os = "windows".into();
        assert!(select_platform(&[windows], "amd64", None).is_none());
    }

    #[test]
    fn manifest_kinds_and_config() {
        let index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:00","size":1}]}"#;
        assert!(AnyManifest::parse(index, "x").unwrap().is_index(None));
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(!AnyManifest::parse(m, "x").unwrap().is_index(None));
        let hex = "ab".repeat(32);
        let cfg = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["A=1"],"Cmd":["sh"],"User":"1:2"}},
               "rootfs":{{"type":"layers","diff_ids":["sha256:{hex}"]}}}}"#
        );
        let c = ImageConfigFile::parse(cfg.as_bytes(), "x").unwrap();
        let ic = c.image_config();
        assert_eq!(ic.cmd, vec!["sh"]);
        assert_eq!(ic.env, vec!["A=1"]);
        assert_eq!(ic.user, "1:2");
        assert!(ic.entrypoint.is_empty());
        let bad = r#"{"rootfs":{"diff_ids":["sha256:../../etc"]}}"#;
        assert!(ImageConfigFile::parse(bad.as_bytes(), "x").is_err());
    }

    #[test]
    fn compression_magic() {
        assert_eq!(sniff_compression(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(sniff_compression(b"bin/"), Compression::None);
        assert_eq!(sniff_compression(b""), Compression::None);
    }
}
