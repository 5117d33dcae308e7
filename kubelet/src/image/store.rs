//! The on-disk image store and its in-memory index.
//!
//! Layout under the root (everything content-addressed by sha256 hex):
//!
//! - `layers/<diffid hex>/fs`: one unpacked layer, an overlayfs lowerdir; `layer.json` next to it
//!   records its diffID and size. A layer directory appears only by `rename` from `tmp/`, whole.
//! - `images/<config hex>.json`: one [`ImageRecord`] per image (its names, layers, config,
//!   last use); the store's index is rebuilt from these at [`ImageStore::open`].
//! - `blobs/sha256/<hex>`: image configs; layer blobs only while they are being unpacked.
//! - `tmp/`: work in progress, emptied at open.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::ImageConfig;
use super::error::ImageError;
use super::reference::ImageRef;
use super::registry_config::RegistryConfig;
use super::unpack::unpack_layer;

/// An image ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `sha256:<config digest>`, the image ID (Kubernetes' `imageID` is `repo_digest`).
    pub id: String,
    /// The reference it was asked for by.
    pub reference: String,
    /// `registry/repo@sha256:<manifest digest>` (the index's digest for multi-platform images);
    /// empty for an image imported from a `docker save` archive.
    pub repo_digest: String,
    /// Unpacked layer directories, topmost first (overlayfs `lowerdir` order).
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
    /// Compressed size of the layers, as registries and `Node.status.images` count it.
    pub size: u64,
}

/// One image for `Node.status.images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub id: String,
    /// `repo:tag` and `repo@digest` names.
    pub names: Vec<String>,
    pub size: u64,
}

/// `images/<hex>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    pub repo_tags: Vec<String>,
    /// The first is reported as the image's repo digest; the rest (a platform manifest's own
    /// digest) only resolve references.
    pub repo_digests: Vec<String>,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Bottom layer first, as in the config's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    pub config: ImageConfig,
    pub size: u64,
    /// Unix seconds of the last `ensure`; image GC removes the least recently used first.
    pub last_used: u64,
}

const TOUCH_PERSIST_SECS: u64 = 60;

#[derive(Serialize, Deserialize)]
pub(crate) struct LayerMeta {
    pub diff_id: String,
    pub size: u64,
}

#[derive(Default)]
pub(crate) struct State {
    pub images: HashMap<String, ImageRecord>,
    /// Every name (`repo:tag`, `repo@digest`) → image id.
    pub names: HashMap<String, String>,
    /// Layers an in-flight pull or import will reference: GC leaves them alone.
    pub pinned: HashMap<String, usize>,
}

type PullSlot = Arc<tokio::sync::Mutex<Option<(u64, Result<Image, ImageError>)>>>;

pub(crate) struct Inner {
    pub root: PathBuf,
    pub config: RegistryConfig,
    pub state: Mutex<State>,
    /// One slot per reference being pulled: concurrent `ensure`s queue on it and take the
    /// result of a pull that finished after they arrived.
    pub pulls: Mutex<HashMap<String, PullSlot>>,
    /// One lock per layer being fetched, so two images sharing it download it once.
    pub layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Orders `ensure` arrivals against pull completions (see [`Inner::pulls`]).
    pub tickets: AtomicU64,
    /// Pulls that went to a registry (for metrics, and tests proving deduplication).
    pub registry_pulls: AtomicU64,
    tmp_counter: AtomicU64,
}

/// The node's images. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ImageStore {
    /// Opens (creating) the store at `root`, reloading the images a previous run stored and
    /// dropping half-finished work.
    pub fn open(root: &Path, config: RegistryConfig) -> Result<Self, ImageError> {
        for dir in ["layers", "images", "blobs/sha256", "tmp"] {
            let d = root.join(dir);
            fs::create_dir_all(&d).map_err(ImageError::io("create store directory", &d))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(ImageError::io("read directory", &tmp))? {
            let path = entry
                .map_err(ImageError::io("read directory", &tmp))?
                .path();
            let _ = remove_any(&path);
        }
        let mut state = State::default();
        let images = root.join("images");
        for entry in fs::read_dir(&images).map_err(ImageError::io("read directory", &images))? {
            let path = entry
                .map_err(ImageError::io("read directory", &images))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let record: Option<ImageRecord> = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let usable = record.filter(|r| {
                r.diff_ids.iter().all(|d| {
                    root.join("layers")
                        .join(hex_of(d))
                        .join("layer.json")
                        .is_file()
                })
            });
            match usable {
                Some(r) => {
                    for n in r.repo_tags.iter().chain(&r.repo_digests) {
                        state.names.insert(n.clone(), r.id.clone());
                    }
                    state.images.insert(r.id.clone(), r);
                }
                None => {
                    tracing::warn!(path = %path.display(), "dropping unreadable or incomplete image record");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                config,
                state: Mutex::new(state),
                pulls: Mutex::default(),
                layer_locks: Mutex::default(),
                tickets: AtomicU64::new(0),
                registry_pulls: AtomicU64::new(0),
                tmp_counter: AtomicU64::new(0),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// How many pulls reached a registry since `open`.
    pub fn registry_pulls(&self) -> u64 {
        self.inner.registry_pulls.load(Ordering::Relaxed)
    }

    pub fn registry_config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// The image `reference` names, if it is on the node.
    pub fn get(&self, reference: &str) -> Option<Image> {
        let r = ImageRef::parse(reference).ok()?;
        let state = lock(&self.inner.state);
        let id = state.names.get(&r.key())?;
        state
            .images
            .get(id)
            .map(|rec| self.image_of(rec, reference))
    }

    /// The image with this id (`sha256:<config digest>`), if present.
    pub fn get_by_id(&self, id: &str) -> Option<Image> {
        let state = lock(&self.inner.state);
        state.images.get(id).map(|rec| self.image_of(rec, id))
    }

    /// Every image with its names, for `Node.status.images`.
    pub fn list(&self) -> Vec<ImageSummary> {
        let state = lock(&self.inner.state);
        let mut out: Vec<ImageSummary> = state
            .images
            .values()
            .map(|r| ImageSummary {
                id: r.id.clone(),
                names: r
                    .repo_tags
                    .iter()
                    .chain(r.repo_digests.iter().take(1))
                    .cloned()
                    .collect(),
                size: r.size,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub(crate) fn image_of(&self, rec: &ImageRecord, reference: &str) -> Image {
        Image {
            id: rec.id.clone(),
            reference: reference.to_string(),
            repo_digest: rec.repo_digests.first().cloned().unwrap_or_default(),
            layers: rec
                .diff_ids
                .iter()
                .rev()
                .map(|d| self.layer_fs(d))
                .collect(),
            config: rec.config.clone(),
            size: rec.size,
        }
    }

    pub(crate) fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.inner.root.join("layers").join(hex_of(diff_id))
    }

    /// The overlayfs lowerdir of a layer.
    pub fn layer_fs(&self, diff_id: &str) -> PathBuf {
        self.layer_dir(diff_id).join("fs")
    }

    pub(crate) fn layer_present(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id).join("layer.json").is_file()
    }

    pub(crate) fn blob_path(&self, digest: &str) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(hex_of(digest))
    }

    /// A fresh name in `tmp/`.
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.inner
            .root
            .join("tmp")
            .join(format!("{what}-{}-{n}-{nanos}", std::process::id()))
    }

    /// Writes `bytes` to `dest` through a temporary file and a rename.
    pub(crate) fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.tmp_path("write");
        fs::write(&tmp, bytes).map_err(ImageError::io("write", &tmp))?;
        fs::rename(&tmp, dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ImageError::Io {
                op: "rename into place",
                path: dest.to_path_buf(),
                source: e,
            }
        })
    }

    /// Unpacks the layer blob at `blob` unless the layer is already present, checking that its
    /// uncompressed digest is `diff_id`. Safe against a concurrent install of the same layer:
    /// whoever renames first wins and the other's copy is discarded.
    pub(crate) fn install_layer(&self, blob: &Path, diff_id: &str) -> Result<(), ImageError> {
        if self.layer_present(diff_id) {
            return Ok(());
        }
        let work = self.tmp_path("layer");
        fs::create_dir(&work).map_err(ImageError::io("create directory", &work))?;
        let result = (|| {
            let unpacked = unpack_layer(blob, &work.join("fs"))?;
            if unpacked.diff_id != diff_id {
                return Err(ImageError::DigestMismatch {
                    digest: diff_id.to_string(),
                    expected: diff_id.to_string(),
                    actual: unpacked.diff_id,
                });
            }
            let meta = serde_json::to_vec(&LayerMeta {
                diff_id: diff_id.to_string(),
                size: unpacked.size,
            })
            .map_err(|source| ImageError::Json {
                op: "encode layer metadata",
                path: work.clone(),
                source,
            })?;
            let meta_path = work.join("layer.json");
            fs::write(&meta_path, meta).map_err(ImageError::io("write", &meta_path))?;
            let dest = self.layer_dir(diff_id);
            match fs::rename(&work, &dest) {
                Ok(()) => Ok(()),
                Err(_) if self.layer_present(diff_id) => Ok(()),
                Err(e) => Err(ImageError::Io {
                    op: "rename layer into place",
                    path: dest,
                    source: e,
                }),
            }
        })();
        if work.exists() {
            let _ = remove_any(&work);
        }
        result
    }

    /// Files `rec` under `names`, taking each name away from whichever image had it, and
    /// persists every record that changed.
    pub(crate) fn commit(
        &self,
        mut rec: ImageRecord,
        names: &[String],
    ) -> Result<ImageRecord, ImageError> {
        let mut state = lock(&self.inner.state);
        if let Some(old) = state.images.get(&rec.id) {
            for n in old.repo_tags.iter() {
                if !rec.repo_tags.contains(n) {
                    rec.repo_tags.push(n.clone());
                }
            }
            for n in old.repo_digests.iter() {
                if !rec.repo_digests.contains(n) {
                    rec.repo_digests.push(n.clone());
                }
            }
        }
        let mut changed = Vec::new();
        for name in names
            .iter()
            .chain(rec.repo_tags.iter())
            .chain(rec.repo_digests.iter())
        {
            if let Some(prev) = state.names.get(name).cloned() {
                if prev != rec.id {
                    if let Some(other) = state.images.get_mut(&prev) {
                        other.repo_tags.retain(|n| n != name);
                        other.repo_digests.retain(|n| n != name);
                        changed.push(other.clone());
                    }
                }
            }
        }
        for name in names
            .iter()
            .chain(rec.repo_tags.iter())
            .chain(rec.repo_digests.iter())
        {
            state.names.insert(name.clone(), rec.id.clone());
        }
        state.images.insert(rec.id.clone(), rec.clone());
        changed.push(rec.clone());
        for r in changed {
            self.persist(&r)?;
        }
        Ok(rec)
    }

    fn persist(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        let path = self
            .inner
            .root
            .join("images")
            .join(format!("{}.json", hex_of(&rec.id)));
        let bytes = serde_json::to_vec_pretty(rec).map_err(|source| ImageError::Json {
            op: "encode image record",
            path: path.clone(),
            source,
        })?;
        self.write_atomic(&path, &bytes)
    }

    /// Marks the image used now (for GC order). Persisted at most once a minute per image: GC
    /// order needs no finer grain, and container starts should not each cost a file write.
    pub(crate) fn touch(&self, id: &str) {
        let rec = {
            let mut state = lock(&self.inner.state);
            let Some(rec) = state.images.get_mut(id) else {
                return;
            };
            let now = now_secs();
            let stale = now.saturating_sub(rec.last_used) >= TOUCH_PERSIST_SECS;
            rec.last_used = now;
            if !stale {
                return;
            }
            rec.clone()
        };
        if let Err(e) = self.persist(&rec) {
            tracing::warn!(image = %id, error = %e, "could not record image use");
        }
    }

    pub(crate) fn pin(&self, diff_ids: &[String]) {
        let mut state = lock(&self.inner.state);
        for d in diff_ids {
            *state.pinned.entry(d.clone()).or_default() += 1;
        }
    }

    pub(crate) fn unpin(&self, diff_ids: &[String]) {
        let mut state = lock(&self.inner.state);
        for d in diff_ids {
            if let Some(n) = state.pinned.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    state.pinned.remove(d);
                }
            }
        }
    }

    pub(crate) fn pull_slot(&self, key: &str) -> PullSlot {
        lock(&self.inner.pulls)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// Forgets the slot once nobody else holds it.
    pub(crate) fn release_pull_slot(&self, key: &str, slot: PullSlot) {
        let mut pulls = lock(&self.inner.pulls);
        drop(slot);
        if pulls.get(key).is_some_and(|s| Arc::strong_count(s) == 1) {
            pulls.remove(key);
        }
    }

    pub(crate) fn layer_lock(&self, diff_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.layer_locks)
            .entry(diff_id.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn release_layer_lock(&self, diff_id: &str, l: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = lock(&self.inner.layer_locks);
        drop(l);
        if locks
            .get(diff_id)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            locks.remove(diff_id);
        }
    }

    pub(crate) fn record_by_manifest(&self, manifest_digest: &str) -> Option<ImageRecord> {
        let state = lock(&self.inner.state);
        state
            .images
            .values()
            .find(|r| r.manifest_digest == manifest_digest)
            .cloned()
    }

    /// Image garbage collection: removes images not in `in_use` (image ids), least recently
    /// used first, until `bytes_to_free` bytes of layers are gone, along with layers no
    /// remaining image shares. Returns the bytes freed (may fall short).
    pub fn remove_unused(
        &self,
        in_use: &HashSet<String>,
        bytes_to_free: u64,
    ) -> Result<u64, ImageError> {
        let mut state = lock(&self.inner.state);
        let mut candidates: Vec<(u64, String)> = state
            .images
            .values()
            .filter(|r| !in_use.contains(&r.id))
            .map(|r| (r.last_used, r.id.clone()))
            .collect();
        candidates.sort();
        let mut freed = 0u64;
        for (_, id) in candidates {
            if freed >= bytes_to_free {
                break;
            }
            let Some(rec) = state.images.remove(&id) else {
                continue;
            };
            state.names.retain(|_, v| *v != id);
            let record = self
                .inner
                .root
                .join("images")
                .join(format!("{}.json", hex_of(&id)));
            fs::remove_file(&record).map_err(ImageError::io("remove image record", &record))?;
            let _ = fs::remove_file(self.blob_path(&id));
            let still_used: HashSet<&String> = state
                .images
                .values()
                .flat_map(|r| r.diff_ids.iter())
                .chain(state.pinned.keys())
                .collect();
            for d in rec.diff_ids.iter().filter(|d| !still_used.contains(d)) {
                let dir = self.layer_dir(d);
                let size = fs::read(dir.join("layer.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).ok())
                    .map(|m| m.size)
                    .unwrap_or(0);
                // Out of `layers/` in one step, so no half-deleted layer is ever taken as whole.
                let trash = self.tmp_path("gc");
                match fs::rename(&dir, &trash) {
                    Ok(()) => {
                        remove_any(&trash).map_err(ImageError::io("remove layer", &trash))?;
                        freed += size;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ImageError::Io {
                            op: "remove layer",
                            path: dir,
                            source: e,
                        })
                    }
                }
            }
            tracing::info!(image = %id, "removed unused image");
        }
        Ok(freed)
    }
}

pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
