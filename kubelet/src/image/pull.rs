//! `ensure`: the pull policy, one pull per reference however many callers, and the pull itself
//! over the OCI distribution API: mirrors then upstream, each credential then anonymous, the
//! host's manifest out of an index, layers fetched in parallel and verified as they stream.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::try_join_all;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use super::error::{error_chain, ImageError};
use super::manifest::{
    check_digest, select_platform, AnyManifest, Descriptor, ImageConfigFile, MANIFEST_TYPES,
};
use super::reference::{host_platform, ImageRef, PullPolicy};
use super::registry_config::Credentials;
use super::store::{now_secs, Image, ImageRecord, ImageStore};

impl ImageStore {
    /// Makes `reference` present as `policy` says and returns it: `IfNotPresent` and `Never`
    /// answer from the store when they can; `Always` asks the registry (one manifest request
    /// when nothing changed). Concurrent calls for one reference share a single pull; layers
    /// download in parallel, are digest-checked while streaming and unpacked once, shared with
    /// every image that has them. `auth` are the pod's pull-secret credentials.
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
        auth: &[Credentials],
    ) -> Result<Image, ImageError> {
        let r = ImageRef::parse(reference)?;
        if policy != PullPolicy::Always {
            if let Some(img) = self.get(reference) {
                self.touch(&img.id);
                return Ok(img);
            }
        }
        if policy == PullPolicy::Never {
            return Err(ImageError::NeverPullMissing {
                reference: reference.to_string(),
            });
        }
        let key = r.key();
        let ticket = self.inner.tickets.fetch_add(1, Ordering::SeqCst);
        let slot = self.pull_slot(&key);
        let result = {
            let mut done = slot.lock().await;
            match &*done {
                // A pull that finished after we arrived is as fresh as one we would start.
                Some((seq, result)) if *seq > ticket => match result {
                    Ok(img) => Ok(Image {
                        reference: reference.to_string(),
                        ..img.clone()
                    }),
                    Err(e) => Err(e.share(reference)),
                },
                _ => {
                    let result = self.pull(&r, reference, auth).await;
                    let seq = self.inner.tickets.fetch_add(1, Ordering::SeqCst);
                    let shared = match &result {
                        Ok(img) => Ok(img.clone()),
                        Err(e) => Err(e.share(reference)),
                    };
                    *done = Some((seq, shared));
                    result
                }
            }
        };
        self.release_pull_slot(&key, slot);
        if let Ok(img) = &result {
            self.touch(&img.id);
        }
        result
    }

    async fn pull(
        &self,
        r: &ImageRef,
        reference: &str,
        auth: &[Credentials],
    ) -> Result<Image, ImageError> {
        self.inner.registry_pulls.fetch_add(1, Ordering::Relaxed);
        let hosts = self.registry_config().hosts_for(&r.registry);
        let mut result = Err(ImageError::Pull {
            reference: reference.to_string(),
            message: "no registry to pull from".into(),
        });
        for host in hosts {
            result = self.pull_from(&host, r, reference, auth).await;
            match &result {
                Ok(_) => break,
                Err(e) if host != r.registry => {
                    tracing::warn!(%reference, mirror = %host, error = %e, "mirror failed, trying the next host");
                }
                Err(_) => {}
            }
        }
        result
    }

    fn client(&self) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.registry_config().insecure.clone()),
            // We pick the platform from an index ourselves.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        })
    }

    /// The manifest, trying each credential for `host` and then anonymous access. A fresh
    /// client per attempt: oci-client keeps the first auth it saw per registry. When all are
    /// refused, the error is the last credential's (a token server's words when it gave any).
    async fn fetch_manifest(
        &self,
        host: &str,
        oci_ref: &Reference,
        reference: &str,
        auth: &[Credentials],
    ) -> Result<(Client, Vec<u8>, String), ImageError> {
        let mut auths: Vec<RegistryAuth> = self
            .registry_config()
            .credentials_for(host, auth)
            .into_iter()
            .map(|c| RegistryAuth::Basic(c.username, c.password))
            .collect();
        auths.push(RegistryAuth::Anonymous);
        let mut last = None;
        for a in auths {
            let anonymous = matches!(a, RegistryAuth::Anonymous);
            let client = self.client();
            // oci-client fetches a bearer token lazily and drops the token server's refusal
            // ("invalid username or password"); asking first keeps its words for the pod.
            // Anything else goes on to the pull, which reports it as before.
            let result = match client.auth(oci_ref, &a, RegistryOperation::Pull).await {
                Err(OciDistributionError::AuthenticationFailure(reason)) => {
                    Err(ImageError::Unauthorized {
                        reference: reference.to_string(),
                        message: format!("token server refused: {}", reason.trim()),
                    })
                }
                _ => client
                    .pull_manifest_raw(oci_ref, &a, MANIFEST_TYPES)
                    .await
                    .map_err(|e| map_oci_error(reference, e)),
            };
            match result {
                Ok((bytes, digest)) => return Ok((client, bytes.to_vec(), digest)),
                Err(err) => {
                    if !matches!(err, ImageError::Unauthorized { .. }) {
                        return Err(err);
                    }
                    // Why a pull secret was refused says more than the anonymous fallback.
                    if !anonymous || last.is_none() {
                        last = Some(err);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ImageError::Unauthorized {
            reference: reference.to_string(),
            message: "no credentials accepted".into(),
        }))
    }

    async fn pull_from(
        &self,
        host: &str,
        r: &ImageRef,
        reference: &str,
        auth: &[Credentials],
    ) -> Result<Image, ImageError> {
        let oci_ref = r.on_registry(host);
        let (client, bytes, top_digest) =
            self.fetch_manifest(host, &oci_ref, reference, auth).await?;
        check_digest(&top_digest, "manifest digest", reference)?;
        let mut manifest = AnyManifest::parse(&bytes, reference)?;
        let mut manifest_digest = top_digest.clone();
        if manifest.is_index(None) {
            let (arch, variant) = host_platform();
            let entry = select_platform(&manifest.manifests, arch, variant).ok_or_else(|| {
                ImageError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    platform: format!(
                        "linux/{arch}{}",
                        variant.map(|v| format!("/{v}")).unwrap_or_default()
                    ),
                }
            })?;
            let platform_ref = oci_ref.clone_with_digest(entry.digest.clone());
            let (bytes, digest) = client
                .pull_manifest_raw(&platform_ref, &RegistryAuth::Anonymous, MANIFEST_TYPES)
                .await
                .map_err(|e| map_oci_error(reference, e))?;
            manifest = AnyManifest::parse(&bytes, &entry.digest)?;
            if manifest.is_index(None) {
                return Err(ImageError::Unsupported {
                    what: "nested image index in",
                    value: reference.to_string(),
                });
            }
            manifest_digest = digest;
        }
        let repo = r.repo();
        let mut names: Vec<String> = r.tagged().into_iter().collect();
        names.push(format!("{repo}@{top_digest}"));
        let mut repo_digests = vec![format!("{repo}@{top_digest}")];
        if manifest_digest != top_digest {
            names.push(format!("{repo}@{manifest_digest}"));
            repo_digests.push(format!("{repo}@{manifest_digest}"));
        }

        // Unchanged since the last pull: nothing more to fetch.
        if let Some(rec) = self.record_by_manifest(&manifest_digest) {
            if rec.diff_ids.iter().all(|d| self.layer_present(d)) {
                let rec = self.commit(
                    ImageRecord {
                        repo_tags: r.tagged().into_iter().collect(),
                        repo_digests,
                        last_used: now_secs(),
                        ..rec
                    },
                    &names,
                )?;
                return Ok(self.image_of(&rec, reference));
            }
        }

        let config_desc = manifest
            .config
            .clone()
            .ok_or_else(|| ImageError::Malformed {
                what: "manifest",
                object: reference.to_string(),
                message: "no config".into(),
            })?;
        check_digest(&config_desc.digest, "config digest", reference)?;
        let mut config_bytes = Vec::new();
        client
            .pull_blob(&oci_ref, config_desc.digest.as_str(), &mut config_bytes)
            .await
            .map_err(|e| map_oci_error(reference, e))?;
        verify(&config_desc.digest, &config_bytes)?;
        let config = ImageConfigFile::parse(&config_bytes, &config_desc.digest)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Malformed {
                what: "image",
                object: reference.to_string(),
                message: format!(
                    "{} layers but {} diff ids",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        self.write_atomic(&self.blob_path(&config_desc.digest), &config_bytes)?;

        let diff_ids = config.rootfs.diff_ids.clone();
        self.pin(&diff_ids);
        let layers = try_join_all(
            manifest
                .layers
                .iter()
                .zip(&diff_ids)
                .map(|(desc, diff_id)| {
                    self.fetch_layer(&client, &oci_ref, reference, desc, diff_id)
                }),
        )
        .await;
        let committed = layers.and_then(|_| {
            self.commit(
                ImageRecord {
                    id: config_desc.digest.clone(),
                    repo_tags: r.tagged().into_iter().collect(),
                    repo_digests,
                    manifest_digest,
                    diff_ids: diff_ids.clone(),
                    config: config.image_config(),
                    size: manifest.layers.iter().map(|l| l.size.max(0) as u64).sum(),
                    last_used: now_secs(),
                },
                &names,
            )
        });
        self.unpin(&diff_ids);
        Ok(self.image_of(&committed?, reference))
    }

    async fn fetch_layer(
        &self,
        client: &Client,
        oci_ref: &Reference,
        reference: &str,
        desc: &Descriptor,
        diff_id: &str,
    ) -> Result<(), ImageError> {
        check_digest(&desc.digest, "layer digest", reference)?;
        let lock = self.layer_lock(diff_id);
        let result = async {
            let _held = lock.lock().await;
            if self.layer_present(diff_id) {
                return Ok(());
            }
            let blob = self.blob_path(&desc.digest);
            if !blob.is_file() {
                self.download(client, oci_ref, reference, desc).await?;
            }
            let store = self.clone();
            let diff = diff_id.to_string();
            let blob_for_unpack = blob.clone();
            tokio::task::spawn_blocking(move || store.install_layer(&blob_for_unpack, &diff))
                .await
                .map_err(|e| ImageError::Pull {
                    reference: reference.to_string(),
                    message: format!("unpack task failed: {e}"),
                })??;
            // The unpacked directory is what we keep; the compressed copy would double the disk use.
            let _ = std::fs::remove_file(&blob);
            Ok(())
        }
        .await;
        self.release_layer_lock(diff_id, lock);
        result
    }

    /// Streams a blob to `tmp/`, hashing as it goes, and renames it to `blobs/sha256/<hex>` only
    /// if digest and size match.
    async fn download(
        &self,
        client: &Client,
        oci_ref: &Reference,
        reference: &str,
        desc: &Descriptor,
    ) -> Result<(), ImageError> {
        let tmp = self.tmp_path("blob");
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(ImageError::io("create blob", &tmp))?;
        let mut writer = HashingWriter {
            inner: file,
            hasher: Sha256::new(),
            size: 0,
        };
        let result = async {
            client
                .pull_blob(oci_ref, desc.digest.as_str(), &mut writer)
                .await
                .map_err(|e| map_oci_error(reference, e))?;
            writer
                .inner
                .sync_all()
                .await
                .map_err(ImageError::io("write blob", &tmp))?;
            let actual = format!("sha256:{}", hex::encode(writer.hasher.clone().finalize()));
            if actual != desc.digest {
                return Err(ImageError::DigestMismatch {
                    digest: desc.digest.clone(),
                    expected: desc.digest.clone(),
                    actual,
                });
            }
            if desc.size > 0 && writer.size != desc.size as u64 {
                return Err(ImageError::Malformed {
                    what: "blob",
                    object: desc.digest.clone(),
                    message: format!("{} bytes, manifest says {}", writer.size, desc.size),
                });
            }
            let dest = self.blob_path(&desc.digest);
            tokio::fs::rename(&tmp, &dest)
                .await
                .map_err(ImageError::io("rename blob into place", &dest))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

fn verify(digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if actual == digest {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            digest: digest.to_string(),
            expected: digest.to_string(),
            actual,
        })
    }
}

struct HashingWriter {
    inner: tokio::fs::File,
    hasher: Sha256,
    size: u64,
}

impl AsyncWrite for HashingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.size += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The registry's own words where it gave any (`manifest unknown`), sorted into the cases a
/// kubelet reports differently.
pub(crate) fn map_oci_error(reference: &str, e: OciDistributionError) -> ImageError {
    let reference = reference.to_string();
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let message = envelope
                .errors
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        format!("{:?}", e.code)
                    } else {
                        e.message.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let code = envelope.errors.first().map(|e| &e.code);
            match code {
                Some(OciErrorCode::ManifestUnknown)
                | Some(OciErrorCode::NameUnknown)
                | Some(OciErrorCode::NotFound)
                | Some(OciErrorCode::BlobUnknown) => ImageError::NotFound { reference, message },
                Some(OciErrorCode::Unauthorized) | Some(OciErrorCode::Denied) => {
                    ImageError::Unauthorized { reference, message }
                }
                _ => ImageError::Pull { reference, message },
            }
        }
        OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthorized {
            reference,
            message: "unauthorized".into(),
        },
        OciDistributionError::AuthenticationFailure(message) => {
            ImageError::Unauthorized { reference, message }
        }
        OciDistributionError::ImageManifestNotFoundError(message) => {
            ImageError::NotFound { reference, message }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let message = if message.is_empty() {
                format!("registry answered HTTP {code}")
            } else {
                message
            };
            match code {
                404 => ImageError::NotFound { reference, message },
                401 | 403 => ImageError::Unauthorized { reference, message },
                _ => ImageError::Pull { reference, message },
            }
        }
        other => ImageError::Pull {
            reference,
            message: error_chain(&other),
        },
    }
}
