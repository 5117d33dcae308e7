//! `berth image import`: images from an OCI image layout tar or a `docker save` tar, for nodes
//! that cannot reach a registry.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ImageError;
use super::manifest::{check_digest, select_platform, AnyManifest, Descriptor, ImageConfigFile};
use super::reference::{host_platform, ImageRef};
use super::store::{now_secs, remove_any, Image, ImageRecord, ImageStore};
use super::unpack::clean_path;

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One entry of `docker save`'s `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

impl ImageStore {
    /// Imports every image in the archive at `path` (plain or gzip/zstd-compressed tar): an OCI
    /// image layout (`oci-layout`, `index.json`, `blobs/`) or a `docker save` archive
    /// (`manifest.json`; preferred when both are present, since it carries the tags).
    pub fn import_archive(&self, path: &Path) -> Result<Vec<Image>, ImageError> {
        let work = self.tmp_path("import");
        fs::create_dir(&work).map_err(ImageError::io("create directory", &work))?;
        let result = (|| {
            extract(path, &work)?;
            if work.join("manifest.json").is_file() {
                self.import_docker(path, &work)
            } else if work.join("index.json").is_file() {
                self.import_oci(path, &work)
            } else {
                Err(archive_error(
                    path,
                    "neither manifest.json (docker save) nor index.json (OCI layout)",
                ))
            }
        })();
        let _ = remove_any(&work);
        result
    }

    fn import_docker(&self, archive: &Path, work: &Path) -> Result<Vec<Image>, ImageError> {
        let entries: Vec<DockerSaveEntry> = read_json(archive, work, "manifest.json")?;
        let mut out = Vec::new();
        for entry in entries {
            let config_bytes = read_member(archive, work, &entry.config)?;
            let id = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
            let layers = entry
                .layers
                .iter()
                .map(|l| member_path(archive, work, l))
                .collect::<Result<Vec<_>, _>>()?;
            let names: Vec<String> = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| ImageRef::parse(t).ok().map(|r| r.key()))
                .collect();
            let size = layers
                .iter()
                .map(|l| fs::metadata(l).map(|m| m.len()).unwrap_or(0))
                .sum();
            let rec = self.import_image(
                archive,
                id,
                &config_bytes,
                &layers,
                names.clone(),
                Vec::new(),
                String::new(),
                size,
            )?;
            let reference = names.first().cloned().unwrap_or_else(|| rec.id.clone());
            out.push(self.image_of(&rec, &reference));
        }
        Ok(out)
    }

    fn import_oci(&self, archive: &Path, work: &Path) -> Result<Vec<Image>, ImageError> {
        let index: OciIndex = read_json(archive, work, "index.json")?;
        let mut out = Vec::new();
        for top in index.manifests {
            let name = image_name(&top);
            let mut desc = top.clone();
            let mut manifest =
                AnyManifest::parse(&read_blob(archive, work, &desc.digest)?, &desc.digest)?;
            if manifest.is_index(Some(&desc.media_type)) {
                let (arch, variant) = host_platform();
                desc = select_platform(&manifest.manifests, arch, variant)
                    .cloned()
                    .ok_or_else(|| ImageError::NoMatchingPlatform {
                        reference: name
                            .as_ref()
                            .map(ImageRef::key)
                            .unwrap_or_else(|| top.digest.clone()),
                        platform: format!("linux/{arch}"),
                    })?;
                manifest =
                    AnyManifest::parse(&read_blob(archive, work, &desc.digest)?, &desc.digest)?;
            }
            let config = manifest.config.as_ref().ok_or_else(|| {
                archive_error(archive, &format!("manifest {} has no config", desc.digest))
            })?;
            let config_bytes = read_blob(archive, work, &config.digest)?;
            let layers = manifest
                .layers
                .iter()
                .map(|l| {
                    read_blob_path(archive, work, &l.digest)
                        .and_then(|p| verify_file(&p, &l.digest).map(|_| p))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut names = Vec::new();
            let mut repo_digests = Vec::new();
            if let Some(n) = &name {
                names.push(n.key());
                repo_digests.push(format!("{}@{}", n.repo(), top.digest));
                if desc.digest != top.digest {
                    repo_digests.push(format!("{}@{}", n.repo(), desc.digest));
                }
            }
            names.extend(repo_digests.iter().cloned());
            let size = manifest.layers.iter().map(|l| l.size.max(0) as u64).sum();
            let rec = self.import_image(
                archive,
                config.digest.clone(),
                &config_bytes,
                &layers,
                names.clone(),
                repo_digests,
                desc.digest.clone(),
                size,
            )?;
            let reference = names.first().cloned().unwrap_or_else(|| rec.id.clone());
            out.push(self.image_of(&rec, &reference));
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn import_image(
        &self,
        archive: &Path,
        id: String,
        config_bytes: &[u8],
        layers: &[PathBuf],
        names: Vec<String>,
        repo_digests: Vec<String>,
        manifest_digest: String,
        size: u64,
    ) -> Result<ImageRecord, ImageError> {
        let config = ImageConfigFile::parse(config_bytes, &id)?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(archive_error(
                archive,
                &format!(
                    "image {id}: {} layers but {} diff ids",
                    layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        self.write_atomic(&self.blob_path(&id), config_bytes)?;
        let diff_ids = config.rootfs.diff_ids.clone();
        self.pin(&diff_ids);
        let result = layers
            .iter()
            .zip(&diff_ids)
            .try_for_each(|(layer, diff_id)| self.install_layer(layer, diff_id))
            .and_then(|_| {
                let tags = names.iter().filter(|n| !n.contains('@')).cloned().collect();
                self.commit(
                    ImageRecord {
                        id,
                        repo_tags: tags,
                        repo_digests,
                        manifest_digest,
                        diff_ids: diff_ids.clone(),
                        config: config.image_config(),
                        size,
                        last_used: now_secs(),
                    },
                    &names,
                )
            });
        self.unpin(&diff_ids);
        result
    }
}

/// The name an OCI layout gives a manifest: containerd's full-name annotation, or the
/// standard `ref.name` when it is a full reference rather than a bare tag.
fn image_name(desc: &Descriptor) -> Option<ImageRef> {
    let ann = desc.annotations.as_ref()?;
    let name = ann.get(CONTAINERD_NAME).or_else(|| {
        ann.get(OCI_REF_NAME)
            .filter(|n| n.contains('/') || n.contains(':'))
    })?;
    ImageRef::parse(name).ok()
}

fn archive_error(path: &Path, message: &str) -> ImageError {
    ImageError::Archive {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Unpacks the archive's regular files and directories into `work`; links and devices have no
/// business in an image archive, and no member may land outside `work`.
fn extract(archive: &Path, work: &Path) -> Result<(), ImageError> {
    let file = File::open(archive).map_err(ImageError::io("open archive", archive))?;
    let mut buffered = BufReader::new(file);
    let head = buffered
        .fill_buf()
        .map_err(ImageError::io("read archive", archive))?;
    let reader: Box<dyn Read> = match super::manifest::sniff_compression(head) {
        super::manifest::Compression::Gzip => {
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
        }
        super::manifest::Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(ImageError::io("read archive", archive))?,
        ),
        super::manifest::Compression::None => Box::new(buffered),
    };
    let mut tar = tar::Archive::new(reader);
    for entry in tar
        .entries()
        .map_err(ImageError::io("read archive", archive))?
    {
        let mut entry = entry.map_err(ImageError::io("read archive", archive))?;
        let rel = clean_path(
            &entry
                .path()
                .map_err(ImageError::io("read archive", archive))?,
        )?;
        if rel.is_empty() {
            continue;
        }
        let dest: PathBuf = rel.iter().fold(work.to_path_buf(), |p, c| p.join(c));
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&dest).map_err(ImageError::io("create directory", &dest))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)
                        .map_err(ImageError::io("create directory", parent))?;
                }
                let mut out = File::create(&dest).map_err(ImageError::io("create file", &dest))?;
                io::copy(&mut entry, &mut out).map_err(ImageError::io("write file", &dest))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn member_path(archive: &Path, work: &Path, member: &str) -> Result<PathBuf, ImageError> {
    let rel = clean_path(Path::new(member))?;
    let path = rel.iter().fold(work.to_path_buf(), |p, c| p.join(c));
    if path.is_file() {
        Ok(path)
    } else {
        Err(archive_error(archive, &format!("missing member {member}")))
    }
}

fn read_member(archive: &Path, work: &Path, member: &str) -> Result<Vec<u8>, ImageError> {
    let path = member_path(archive, work, member)?;
    fs::read(&path).map_err(ImageError::io("read", &path))
}

fn read_json<T: serde::de::DeserializeOwned>(
    archive: &Path,
    work: &Path,
    member: &str,
) -> Result<T, ImageError> {
    let bytes = read_member(archive, work, member)?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
        op: "parse archive member",
        path: archive.join(member),
        source,
    })
}

fn read_blob_path(archive: &Path, work: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let hex = check_digest(digest, "digest", &archive.display().to_string())?;
    member_path(archive, work, &format!("blobs/sha256/{hex}"))
}

/// A blob of the layout, checked against its digest.
fn read_blob(archive: &Path, work: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = read_blob_path(archive, work, digest)?;
    let bytes = fs::read(&path).map_err(ImageError::io("read", &path))?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            digest: digest.to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

fn verify_file(path: &Path, digest: &str) -> Result<(), ImageError> {
    let mut file = File::open(path).map_err(ImageError::io("open", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(ImageError::io("read", path))?;
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            digest: digest.to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}
