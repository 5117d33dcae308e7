//! Image references as Kubernetes users write them, normalized the way Docker does
//! (`busybox` → `docker.io/library/busybox:latest`), and the pull policy defaulting.

use oci_client::Reference;

use super::error::ImageError;

/// A parsed, normalized reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<Self, ImageError> {
        let invalid = |message: String| ImageError::InvalidReference {
            reference: reference.to_string(),
            message,
        };
        if reference.is_empty() || reference.trim() != reference {
            return Err(invalid("empty or surrounded by spaces".into()));
        }
        let parsed: Reference = reference.parse().map_err(|e| invalid(format!("{e}")))?;
        let digest = parsed.digest().map(str::to_string);
        // oci-spec adds `latest` to a digest-only reference's display but not to its tag.
        let tag = parsed.tag().map(str::to_string);
        if let Some(d) = &digest {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| invalid("only sha256 digests are supported".into()))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid("malformed sha256 digest".into()));
            }
        }
        if parsed.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase".into()));
        }
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag: if digest.is_some() && tag.is_none() {
                None
            } else {
                tag.or(Some("latest".into()))
            },
            digest,
        })
    }

    /// `registry/repository`, the part before `:tag` or `@digest`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name the store files the image under: `repo@digest` when the reference pins a
    /// digest, else `repo:tag`.
    pub fn key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{}", self.repo(), d),
            (None, Some(t)) => format!("{}:{}", self.repo(), t),
            (None, None) => format!("{}:latest", self.repo()),
        }
    }

    /// `repo:tag` when the reference names a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{}", self.repo(), t))
    }

    /// The same repository on another host (a mirror).
    pub(crate) fn on_registry(&self, registry: &str) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => {
                Reference::with_digest(registry.into(), self.repository.clone(), d.clone())
            }
            (None, t) => Reference::with_tag(
                registry.into(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The container's `imagePullPolicy`, or Kubernetes' default when unset: `Always` when the
    /// image's tag is `latest` (or it has neither tag nor digest), else `IfNotPresent`.
    /// Unknown values (the API server rejects them) get the default too.
    pub fn from_k8s(policy: Option<&str>, reference: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => match ImageRef::parse(reference) {
                Ok(r) if r.tag.as_deref() == Some("latest") => PullPolicy::Always,
                Ok(_) => PullPolicy::IfNotPresent,
                Err(_) => PullPolicy::Always,
            },
        }
    }
}

/// The host's platform as OCI spells it (`GOARCH` names): `("amd64", None)`, `("arm64", Some("v8"))`.
pub fn host_platform() -> (&'static str, Option<&'static str>) {
    oci_arch(std::env::consts::ARCH)
}

pub(crate) fn oci_arch(rust_arch: &str) -> (&'static str, Option<&'static str>) {
    match rust_arch {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "riscv64" => ("riscv64", None),
        "s390x" => ("s390x", None),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "loongarch64" => ("loong64", None),
        "mips64" => ("mips64le", None),
        _ => ("unknown", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_are_normalized() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.key(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("user/app:1.2").unwrap();
        assert_eq!(r.key(), "docker.io/user/app:1.2");
        let r = ImageRef::parse("docker.io/library/busybox:1").unwrap();
        assert_eq!(r.key(), "docker.io/library/busybox:1");
    }

    #[test]
    fn registry_with_port_and_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/x/y@{d}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "x/y");
        assert_eq!(r.tag, None);
        assert_eq!(r.key(), format!("127.0.0.1:5000/x/y@{d}"));
        assert_eq!(
            r.on_registry("mirror:1").to_string(),
            format!("mirror:1/x/y@{d}")
        );
        let r = ImageRef::parse("127.0.0.1:5000/x:v1").unwrap();
        assert_eq!(r.tagged().unwrap(), "127.0.0.1:5000/x:v1");
        assert_eq!(r.on_registry("m:2").to_string(), "m:2/x:v1");
    }

    #[test]
    fn invalid_references_are_errors() {
        for bad in ["", " busybox", "UPPER/case", "x@sha256:abc", "a::b"] {
            assert!(
                matches!(
                    ImageRef::parse(bad),
                    Err(ImageError::InvalidReference { .. })
                ),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        use PullPolicy::*;
        assert_eq!(PullPolicy::from_k8s(None, "busybox"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "busybox:latest"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "busybox:1.36"), IfNotPresent);
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            PullPolicy::from_k8s(None, &format!("busybox@{d}")),
            IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_k8s(None, &format!("busybox:latest@{d}")),
            Always
        );
        assert_eq!(PullPolicy::from_k8s(Some("Never"), "busybox"), Never);
        assert_eq!(
            PullPolicy::from_k8s(Some("IfNotPresent"), "busybox"),
            IfNotPresent
        );
        assert_eq!(PullPolicy::from_k8s(Some("Always"), "busybox:1"), Always);
    }

    #[test]
    fn arch_mapping() {
        assert_eq!(oci_arch("x86_64"), ("amd64", None));
        assert_eq!(oci_arch("aarch64").0, "arm64");
        assert_eq!(host_platform().0, oci_arch(std::env::consts::ARCH).0);
    }
}
