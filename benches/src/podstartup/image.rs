//! The benchmark's image, built in-process so a fresh machine needs only busybox-static: one
//! uncompressed layer holding the host's `/bin/busybox` with a symlink per applet, written as an
//! OCI image layout tar (what `skopeo copy ... oci-archive:` writes) for `berth image import`.
//! The same layout as the kubelet tests' `support/registry.rs` busybox image, without panics.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::PodStartupError;

pub const BUSYBOX: &str = "/bin/busybox";
/// What the pods ask for; `berth image import` files the image under this name.
pub const IMAGE: &str = "berth.local/bench/busybox:1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// A fixed mtime so the same busybox always makes the same digests.
const MTIME: u64 = 1_700_000_000;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodStartupError {
    let path = path.to_path_buf();
    move |source| PodStartupError::Io { op, path, source }
}

/// A tar in memory; entries root-owned with a fixed mtime.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, path: &str, mode: u32) -> std::io::Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.0.append_data(&mut h, path, std::io::empty())
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut h, path, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target)
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        self.0.into_inner()
    }
}

/// The busybox root filesystem as one layer tar.
fn busybox_layer() -> Result<Vec<u8>, PodStartupError> {
    let bin = Path::new(BUSYBOX);
    let busybox = std::fs::read(bin).map_err(io_error("read", bin))?;
    let list = Command::new(bin)
        .arg("--list")
        .output()
        .map_err(io_error("run --list of", bin))?;
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    let mut names: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
        .collect();
    names.sort_unstable();
    names.dedup();
    let build = || -> std::io::Result<Vec<u8>> {
        let mut t = Tar::new();
        t.dir("bin/", 0o755)?;
        t.file("bin/busybox", &busybox, 0o755)?;
        for applet in &names {
            t.symlink(&format!("bin/{applet}"), "busybox")?;
        }
        t.dir("etc/", 0o755)?;
        t.file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        )?;
        t.file("etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644)?;
        for (dir, mode) in [
            ("proc/", 0o555),
            ("sys/", 0o555),
            ("dev/", 0o755),
            ("tmp/", 0o1777),
            ("root/", 0o700),
        ] {
            t.dir(dir, mode)?;
        }
        t.finish()
    };
    build().map_err(|source| PodStartupError::Io {
        op: "build the busybox layer from",
        path: bin.to_path_buf(),
        source,
    })
}

/// The OCI architecture name of this host.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Writes an OCI image layout tar holding busybox named [`IMAGE`] to `path`.
pub fn write_busybox_archive(path: &Path) -> Result<(), PodStartupError> {
    let layer = busybox_layer()?;
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    }))
    .unwrap_or_default();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": LAYER_TAR, "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap_or_default();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": IMAGE,
                "org.opencontainers.image.ref.name": "1",
            },
        }],
    }))
    .unwrap_or_default();
    let build = || -> std::io::Result<Vec<u8>> {
        let mut t = Tar::new();
        t.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
        t.file("index.json", &index, 0o644)?;
        t.dir("blobs/", 0o755)?;
        t.dir("blobs/sha256/", 0o755)?;
        for blob in [&manifest, &config, &layer] {
            let digest = sha256(blob);
            t.file(
                &format!("blobs/sha256/{}", &digest["sha256:".len()..]),
                blob,
                0o644,
            )?;
        }
        t.finish()
    };
    let archive = build().map_err(io_error("build the archive", path))?;
    std::fs::write(path, archive).map_err(io_error("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_an_oci_layout_naming_the_image() {
        if !Path::new(BUSYBOX).exists() {
            eprintln!("skipping: no {BUSYBOX}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busybox.tar");
        write_busybox_archive(&path).unwrap();
        let mut archive = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let mut names = Vec::new();
        let mut index = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name == "index.json" {
                std::io::Read::read_to_string(&mut entry, &mut index).unwrap();
            }
            names.push(name);
        }
        assert!(names.contains(&"oci-layout".to_string()));
        let blobs = names
            .iter()
            .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 20);
        assert_eq!(blobs.count(), 3, "{names:?}");
        assert!(index.contains(IMAGE), "{index}");
    }
}
