//! A pod's volumes on the host (Kubernetes' emptyDir, hostPath, configMap, secret, downwardAPI
//! and projected plugins), under `<pod_dir>/volumes/kubernetes.io~<plugin>/<name>` as on a
//! kubelet.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_api::Quantity;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, HostPathVolumeSource, KeyToPath, Pod, Secret, Volume,
};

use super::atomic_writer::{write_atomic, FileProjection};
use super::env::{not_found, secret_data};
use super::fieldpath::{field_value, resource_container, resource_value};
use super::resources::pod_resources;
use super::tmpfs::Mounter;
use super::{ObjectSource, PodFacts, PodSpecError};

/// The API's default for `defaultMode` (0644) in configMap, secret, downwardAPI and projected.
const DEFAULT_MODE: i32 = 0o644;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir,
    /// `emptyDir.medium: Memory`: a tmpfs mounted by the [`Mounter`].
    MemoryEmptyDir,
    HostPath,
    ConfigMap,
    /// On a tmpfs when the [`Mounter`] mounts one.
    Secret,
    DownwardApi,
    /// On a tmpfs when the [`Mounter`] mounts one.
    Projected,
}

/// One volume, ready to be bound into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVolume {
    pub kind: VolumeKind,
    /// The host directory (or file, for hostPath) to bind.
    pub path: PathBuf,
    /// The plugin forces read-only (configMap, secret, downwardAPI, projected), whatever the
    /// volumeMount says.
    pub readonly: bool,
}

/// The pod's volumes by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedVolumes {
    pub volumes: BTreeMap<String, PreparedVolume>,
}

impl PreparedVolumes {
    pub fn get(&self, name: &str) -> Option<&PreparedVolume> {
        self.volumes.get(name)
    }
}

/// Creates or refreshes every volume of `pod` under `pod_dir`. Safe to call again (the kubelet
/// does so to propagate ConfigMap and Secret updates): unchanged content is not rewritten and
/// mounts are not repeated. A failing volume fails the call, naming the volume.
pub async fn prepare_volumes(
    src: &impl ObjectSource,
    pod: &Pod,
    pod_dir: &Path,
    facts: &PodFacts,
    mounter: &impl Mounter,
) -> Result<PreparedVolumes, PodSpecError> {
    let mut out = PreparedVolumes::default();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[]);
    for v in volumes {
        let prepared = prepare_one(src, pod, pod_dir, facts, mounter, v).await?;
        out.volumes.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

fn plugin_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

fn make_dir(path: &Path, mode: u32) -> Result<(), PodSpecError> {
    fs::create_dir_all(path).map_err(PodSpecError::io("create dir", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(PodSpecError::io("chmod", path))
}

fn fs_group(pod: &Pod) -> Option<u32> {
    let g = pod.spec.as_ref()?.security_context.as_ref()?.fs_group?;
    u32::try_from(g).ok()
}

/// Kubernetes' size for memory-backed volumes: the smallest positive of node allocatable, the
/// pod's memory limit and the volume's `sizeLimit`.
fn memory_size(pod: &Pod, facts: &PodFacts, size_limit: Option<u64>) -> Option<u64> {
    let mut size = facts.node_allocatable_memory;
    if let Some(l) = pod_resources(pod, None).memory_limit_bytes {
        if l > 0 && l <= size {
            size = l;
        }
    }
    if let Some(l) = size_limit {
        if l > 0 && l <= size {
            size = l;
        }
    }
    (size > 0).then_some(size)
}

async fn prepare_one(
    src: &impl ObjectSource,
    pod: &Pod,
    pod_dir: &Path,
    facts: &PodFacts,
    mounter: &impl Mounter,
    v: &Volume,
) -> Result<PreparedVolume, PodSpecError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = v.name.as_str();
    let atomic = |path: &Path, payload: BTreeMap<String, FileProjection>| {
        write_atomic(path, &payload, fs_group(pod)).map(|_| ())
    };
    if let Some(e) = &v.empty_dir {
        let path = plugin_dir(pod_dir, "empty-dir", name);
        make_dir(&path, 0o777)?;
        let kind = match e.medium.as_deref().unwrap_or("") {
            "" => VolumeKind::EmptyDir,
            "Memory" => {
                let limit = e
                    .size_limit
                    .as_ref()
                    .map(|q| quantity_bytes(&q.0))
                    .transpose()?;
                mounter.mount_tmpfs(&path, memory_size(pod, facts, limit))?;
                VolumeKind::MemoryEmptyDir
            }
            other => {
                return Err(PodSpecError::invalid(format!(
                    "volume {name}: emptyDir medium {other} is not supported"
                )))
            }
        };
        if let Some(gid) = fs_group(pod) {
            std::os::unix::fs::chown(&path, None, Some(gid))
                .map_err(PodSpecError::io("chown", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o2777))
                .map_err(PodSpecError::io("chmod", &path))?;
        }
        return Ok(PreparedVolume {
            kind,
            path,
            readonly: false,
        });
    }
    if let Some(h) = &v.host_path {
        check_host_path(h)?;
        return Ok(PreparedVolume {
            kind: VolumeKind::HostPath,
            path: PathBuf::from(&h.path),
            readonly: false,
        });
    }
    if let Some(c) = &v.config_map {
        let path = plugin_dir(pod_dir, "configmap", name);
        make_dir(&path, 0o777)?;
        let cm_name = c.name.as_str();
        let optional = c.optional.unwrap_or(false);
        let cm = fetch_config_map(src, ns, cm_name, optional).await?;
        let mode = c.default_mode.unwrap_or(DEFAULT_MODE);
        atomic(
            &path,
            config_map_payload(&cm, c.items.as_deref(), mode, optional)?,
        )?;
        return Ok(PreparedVolume {
            kind: VolumeKind::ConfigMap,
            path,
            readonly: true,
        });
    }
    if let Some(s) = &v.secret {
        let path = plugin_dir(pod_dir, "secret", name);
        make_dir(&path, 0o777)?;
        mounter.mount_tmpfs(&path, memory_size(pod, facts, None))?;
        let s_name = s.secret_name.as_deref().unwrap_or("");
        let optional = s.optional.unwrap_or(false);
        let secret = fetch_secret(src, ns, s_name, optional).await?;
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        atomic(
            &path,
            secret_payload(&secret, s.items.as_deref(), mode, optional)?,
        )?;
        return Ok(PreparedVolume {
            kind: VolumeKind::Secret,
            path,
            readonly: true,
        });
    }
    if let Some(d) = &v.downward_api {
        let path = plugin_dir(pod_dir, "downward-api", name);
        make_dir(&path, 0o777)?;
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        atomic(
            &path,
            downward_payload(pod, facts, d.items.as_deref().unwrap_or(&[]), mode)?,
        )?;
        return Ok(PreparedVolume {
            kind: VolumeKind::DownwardApi,
            path,
            readonly: true,
        });
    }
    if let Some(p) = &v.projected {
        let path = plugin_dir(pod_dir, "projected", name);
        make_dir(&path, 0o777)?;
        mounter.mount_tmpfs(&path, memory_size(pod, facts, None))?;
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        let mut payload = BTreeMap::new();
        for source in p.sources.iter().flatten() {
            if let Some(c) = &source.config_map {
                let optional = c.optional.unwrap_or(false);
                let cm = fetch_config_map(src, ns, &c.name, optional).await?;
                payload.extend(config_map_payload(&cm, c.items.as_deref(), mode, optional)?);
            } else if let Some(s) = &source.secret {
                let optional = s.optional.unwrap_or(false);
                let secret = fetch_secret(src, ns, &s.name, optional).await?;
                payload.extend(secret_payload(&secret, s.items.as_deref(), mode, optional)?);
            } else if let Some(d) = &source.downward_api {
                let items = d.items.as_deref().unwrap_or(&[]);
                payload.extend(downward_payload(pod, facts, items, mode)?);
            } else if source.service_account_token.is_some() {
                return Err(PodSpecError::invalid(format!(
                    "volume {name}: projected serviceAccountToken is not supported yet"
                )));
            } else {
                return Err(PodSpecError::invalid(format!(
                    "volume {name}: projected source is not supported"
                )));
            }
        }
        atomic(&path, payload)?;
        return Ok(PreparedVolume {
            kind: VolumeKind::Projected,
            path,
            readonly: true,
        });
    }
    Err(PodSpecError::invalid(format!(
        "volume {name}: volume type is not supported (emptyDir, hostPath, configMap, secret, downwardAPI and projected are)"
    )))
}

fn quantity_bytes(s: &str) -> Result<u64, PodSpecError> {
    let q = Quantity::parse(s)
        .map_err(|e| PodSpecError::invalid(format!("invalid quantity {s:?}: {e}")))?;
    Ok(u64::try_from(q.as_value()).unwrap_or(0))
}

async fn fetch_config_map(
    src: &impl ObjectSource,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<ConfigMap, PodSpecError> {
    match src.config_map(ns, name).await? {
        Some(cm) => Ok(cm),
        None if optional => Ok(ConfigMap::default()),
        None => Err(not_found("configmap", ns, name)),
    }
}

async fn fetch_secret(
    src: &impl ObjectSource,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Secret, PodSpecError> {
    match src.secret(ns, name).await? {
        Some(s) => Ok(s),
        None if optional => Ok(Secret::default()),
        None => Err(not_found("secret", ns, name)),
    }
}

fn mode_bits(m: i32) -> u32 {
    u32::try_from(m).unwrap_or(0o644) & 0o7777
}

/// Kubernetes' `configmap.MakePayload`: every key (data and binaryData), or the listed items.
fn config_map_payload(
    cm: &ConfigMap,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<BTreeMap<String, FileProjection>, PodSpecError> {
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        all.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        all.entry(k.clone()).or_insert_with(|| v.0.clone());
    }
    project(all, items, default_mode, optional, |key| {
        PodSpecError::MissingConfigMapVolumeKey {
            name: cm.metadata.name.clone().unwrap_or_default(),
            key: key.to_string(),
        }
    })
}

/// Kubernetes' `secret.MakePayload`.
fn secret_payload(
    secret: &Secret,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<BTreeMap<String, FileProjection>, PodSpecError> {
    project(secret_data(secret), items, default_mode, optional, |key| {
        PodSpecError::MissingSecretVolumeKey {
            name: secret.metadata.name.clone().unwrap_or_default(),
            key: key.to_string(),
        }
    })
}

fn project(
    all: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    missing: impl Fn(&str) -> PodSpecError,
) -> Result<BTreeMap<String, FileProjection>, PodSpecError> {
    let mut out = BTreeMap::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, data) in all {
                out.insert(
                    k,
                    FileProjection {
                        data,
                        mode: mode_bits(default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(data) = all.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing(&item.key));
                };
                let mode = mode_bits(item.mode.unwrap_or(default_mode));
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: data.clone(),
                        mode,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Kubernetes' downwardapi `CollectData`.
fn downward_payload(
    pod: &Pod,
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
) -> Result<BTreeMap<String, FileProjection>, PodSpecError> {
    let mut out = BTreeMap::new();
    for item in items {
        let data = if let Some(f) = &item.field_ref {
            field_value(f, pod, facts)?
        } else if let Some(r) = &item.resource_field_ref {
            let c = resource_container(r, pod, None)?;
            resource_value(r, c, facts)?
        } else {
            String::new()
        };
        let mode = mode_bits(item.mode.unwrap_or(default_mode));
        out.insert(
            item.path.clone(),
            FileProjection {
                data: data.into_bytes(),
                mode,
            },
        );
    }
    Ok(out)
}

/// Kubernetes' hostPath `type` checks; `DirectoryOrCreate` and `FileOrCreate` create what is
/// missing (0755 directories, an empty 0644 file whose parent must exist), and so does an unset
/// type (a directory, like containerd).
fn check_host_path(h: &HostPathVolumeSource) -> Result<(), PodSpecError> {
    let path = Path::new(&h.path);
    let ty = h.type_.as_deref().unwrap_or("");
    let meta = fs::metadata(path).ok();
    let fail = |what| {
        Err(PodSpecError::HostPathType {
            path: h.path.clone(),
            what,
        })
    };
    let ft = meta.as_ref().map(|m| m.file_type());
    match ty {
        // No type: no check, but a missing path becomes a directory, as containerd's CRI does.
        "" if meta.is_none() => {
            fs::create_dir_all(path).map_err(PodSpecError::io("create dir", path))
        }
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => {
            fs::create_dir_all(path).map_err(PodSpecError::io("create dir", path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                .map_err(PodSpecError::io("chmod", path))
        }
        "DirectoryOrCreate" | "Directory" => match ft {
            Some(t) if t.is_dir() => Ok(()),
            _ => fail("a directory"),
        },
        "FileOrCreate" if meta.is_none() => {
            let file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(PodSpecError::io("create", path))?;
            file.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(PodSpecError::io("chmod", path))
        }
        "FileOrCreate" | "File" => match ft {
            Some(t) if t.is_file() => Ok(()),
            _ => fail("a file"),
        },
        "Socket" => match ft {
            Some(t) if t.is_socket() => Ok(()),
            _ => fail("a socket file"),
        },
        "CharDevice" => match ft {
            Some(t) if t.is_char_device() => Ok(()),
            _ => fail("a character device"),
        },
        "BlockDevice" => match ft {
            Some(t) if t.is_block_device() => Ok(()),
            _ => fail("a block device"),
        },
        other => Err(PodSpecError::invalid(format!(
            "{other} is an invalid volume type"
        ))),
    }
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
