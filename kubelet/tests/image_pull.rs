//! The image store against a real registry (Debian's docker-registry on loopback).

#[path = "support/registry.rs"]
mod registry;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_kubelet::image::unpack::is_opaque;
use berth_kubelet::image::{Credentials, ImageError, ImageStore, PullPolicy, RegistryConfig};
use registry::*;

fn insecure(hosts: &[&str]) -> RegistryConfig {
    RegistryConfig {
        insecure: hosts.iter().map(|h| h.to_string()).collect(),
        ..RegistryConfig::default()
    }
}

fn store_for(dir: &Path, host: &str) -> ImageStore {
    ImageStore::open(&dir.join("images"), insecure(&[host])).expect("open store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_busybox_then_serve_it_offline_and_after_reopen() {
    let Some(mut reg) = Registry::start_or_skip() else {
        return;
    };
    let host = reg.host();
    let built = push_busybox(&host, "busybox:1").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(dir.path(), &host);
    let reference = format!("{host}/busybox:1");

    let img = store
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .expect("pull busybox");
    assert_eq!(img.id, built.id());
    assert_eq!(img.reference, reference);
    assert_eq!(
        img.repo_digest,
        format!("{host}/busybox@{}", built.manifest_digest())
    );
    assert_eq!(img.config.cmd, vec!["sh"]);
    assert_eq!(img.config.env, vec![PATH_ENV]);
    assert_eq!(img.layers.len(), 1);
    let root = &img.layers[0];
    assert!(std::fs::metadata(root.join("bin/busybox")).unwrap().len() > 100_000);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert!(std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("nobody:x:65534"));
    assert_eq!(img.size, built.layers[0].blob.len() as u64);
    let listed = store.list();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].names.contains(&reference));
    assert!(listed[0].names.contains(&img.repo_digest));
    assert_eq!(store.registry_pulls(), 1);

    // The registry is gone: IfNotPresent and Never answer from the store, Always must fail.
    reg.stop();
    let again = store
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .expect("cached");
    assert_eq!(again.id, img.id);
    store
        .ensure(&reference, PullPolicy::Never, &[])
        .await
        .expect("never, but present");
    let err = store
        .ensure(&reference, PullPolicy::Always, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Pull { .. }), "{err}");
    assert_eq!(store.registry_pulls(), 2);
    let by_digest = store.get(&img.repo_digest).expect("by repo digest");
    assert_eq!(by_digest.id, img.id);
    let missing = store
        .ensure(&format!("{host}/other:1"), PullPolicy::Never, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ImageError::NeverPullMissing { .. }),
        "{missing}"
    );

    // A restarted kubelet finds its images.
    drop(store);
    let reopened = store_for(dir.path(), &host);
    let back = reopened.get(&reference).expect("image survives reopen");
    assert_eq!(back.id, img.id);
    assert_eq!(back.layers, img.layers);
    reopened
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .expect("no pull needed");
    assert_eq!(reopened.registry_pulls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_are_shared_and_whiteouts_become_overlay_whiteouts() {
    let Some(reg) = Registry::start_or_skip() else {
        return;
    };
    let host = reg.host();
    push_busybox(&host, "busybox:1").await;
    let layered = layered_image();
    push(&host, "layered:1", &layered, None).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(dir.path(), &host);
    // Pulled concurrently: the shared busybox layer is fetched by one of them only.
    let bb_ref = format!("{host}/busybox:1");
    let layered_ref = format!("{host}/layered:1");
    let (bb, img) = tokio::join!(
        store.ensure(&bb_ref, PullPolicy::IfNotPresent, &[]),
        store.ensure(&layered_ref, PullPolicy::IfNotPresent, &[]),
    );
    let (bb, img) = (bb.unwrap(), img.unwrap());
    assert_eq!(img.layers.len(), 3);
    assert_eq!(
        img.layers[2], bb.layers[0],
        "the busybox layer is unpacked once and shared"
    );
    let layer_dirs = std::fs::read_dir(dir.path().join("images/layers"))
        .unwrap()
        .count();
    assert_eq!(layer_dirs, 3);
    // Compressed layer blobs are not kept once unpacked.
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("images/blobs/sha256"))
        .unwrap()
        .collect();
    assert_eq!(blobs.len(), 2, "only the two configs remain");

    let top = &img.layers[0];
    let wh = std::fs::symlink_metadata(top.join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0:0 char device"
    );
    assert!(
        is_opaque(&top.join("opaque")).unwrap(),
        "opaque directory marked for overlayfs"
    );
    assert!(!is_opaque(&top.join("data")).unwrap());
    assert!(!top.join("opaque/.wh..wh..opq").exists());
    assert_eq!(
        std::fs::metadata(top.join("data/hardlink")).unwrap().ino(),
        std::fs::metadata(top.join("data/linked")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(top.join("data/symlink")).unwrap(),
        Path::new("/data/linked")
    );
    let middle = std::fs::metadata(img.layers[1].join("data/file")).unwrap();
    assert_eq!(
        (middle.uid(), middle.gid(), middle.mode() & 0o777),
        (1000, 1000, 0o640)
    );

    // GC: the layered image goes, the busybox layer it shared stays.
    let in_use: HashSet<String> = [bb.id.clone()].into();
    let freed = store.remove_unused(&in_use, u64::MAX).unwrap();
    assert!(freed > 0);
    assert!(store.get(&format!("{host}/layered:1")).is_none());
    assert!(bb.layers[0].join("bin/busybox").exists());
    assert!(!img.layers[0].exists() && !img.layers[1].exists());
    assert_eq!(store.list().len(), 1);
    assert_eq!(store.remove_unused(&in_use, u64::MAX).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_pull_once() {
    let Some(reg) = Registry::start_or_skip() else {
        return;
    };
    let host = reg.host();
    let built = push_busybox(&host, "busybox:1").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(dir.path(), &host);
    let reference = format!("{host}/busybox:1");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let reference = reference.clone();
            tokio::spawn(async move { store.ensure(&reference, PullPolicy::Always, &[]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("ensure").id, built.id());
    }
    assert_eq!(
        store.registry_pulls(),
        1,
        "eight concurrent ensures, one pull"
    );
    // A later Always asks the registry again, and finds nothing new to fetch.
    store
        .ensure(&reference, PullPolicy::Always, &[])
        .await
        .unwrap();
    assert_eq!(store.registry_pulls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_carries_the_registry_message() {
    let Some(reg) = Registry::start_or_skip() else {
        return;
    };
    let host = reg.host();
    push_busybox(&host, "busybox:1").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(dir.path(), &host);
    let err = store
        .ensure(
            &format!("{host}/busybox:nope"),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .unwrap_err();
    match &err {
        ImageError::NotFound { message, .. } => {
            assert!(message.contains("manifest unknown"), "{message}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(err.to_string().contains("manifest unknown"));
    let err = store
        .ensure(
            &format!("{host}/nobody/here:1"),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    let err = store
        .ensure("UPPER", PullPolicy::IfNotPresent, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::InvalidReference { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_pull_secrets_and_node_config() {
    let Some(reg) = Registry::start_with_basic_auth_or_skip() else {
        return;
    };
    let host = reg.host();
    let image = busybox_image();
    push(&host, "private:1", &image, Some((AUTH_USER, AUTH_PASSWORD))).await;
    let reference = format!("{host}/private:1");
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(dir.path(), &host);

    let err = store
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Unauthorized { .. }),
        "anonymous: {err:?}"
    );
    let wrong = Credentials {
        registry: host.clone(),
        username: AUTH_USER.into(),
        password: "wrong".into(),
    };
    let err = store
        .ensure(
            &reference,
            PullPolicy::IfNotPresent,
            std::slice::from_ref(&wrong),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Unauthorized { .. }),
        "wrong password: {err:?}"
    );

    // A wrong secret first, then the right one: the right one wins.
    let right = Credentials {
        registry: host.clone(),
        username: AUTH_USER.into(),
        password: AUTH_PASSWORD.into(),
    };
    let img = store
        .ensure(
            &reference,
            PullPolicy::IfNotPresent,
            &[wrong, right.clone()],
        )
        .await
        .expect("authorized pull");
    assert_eq!(img.id, image.id());

    // The node's own credentials, from the registries config.
    let dir2 = tempfile::tempdir().unwrap();
    let mut config = insecure(&[&host]);
    config.credentials.insert(host.clone(), right);
    let store2 = ImageStore::open(dir2.path(), config).unwrap();
    store2
        .ensure(&reference, PullPolicy::Always, &[])
        .await
        .expect("pull with node credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_to_the_host_platform() {
    let Some(reg) = Registry::start_or_skip() else {
        return;
    };
    let host = reg.host();
    let tar = busybox_tar();
    let other_arch = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let mine = BuiltImage::new(vec![Layer::gzip(&tar)], &[PATH_ENV, "ARCH=mine"], &["sh"]);
    let other = BuiltImage::for_arch(
        vec![Layer::gzip(&tar)],
        &[PATH_ENV, "ARCH=other"],
        &["sh"],
        other_arch,
    );
    let index_digest = push_index(&host, "multi:1", &[&other, &mine]).await;
    let only_other = push_index(&host, "foreign:1", &[&other]).await;
    assert_ne!(index_digest, only_other);

    let dir = tempfile::tempdir().unwrap();
    let store = store_for(dir.path(), &host);
    let img = store
        .ensure(&format!("{host}/multi:1"), PullPolicy::IfNotPresent, &[])
        .await
        .unwrap();
    assert_eq!(img.id, mine.id());
    assert!(img.config.env.contains(&"ARCH=mine".to_string()));
    assert_eq!(img.repo_digest, format!("{host}/multi@{index_digest}"));
    assert!(store
        .get(&format!("{host}/multi@{}", mine.manifest_digest()))
        .is_some());
    let by_digest = store
        .ensure(
            &format!("{host}/multi@{index_digest}"),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(by_digest.id, mine.id());

    let err = store
        .ensure(&format!("{host}/foreign:1"), PullPolicy::IfNotPresent, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::NoMatchingPlatform { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_and_uncompressed_layers() {
    let Some(reg) = Registry::start_or_skip() else {
        return;
    };
    let host = reg.host();
    let mut extra = LayerBuilder::new();
    extra.file("hello.txt", b"zstd!", 0o644);
    let extra = extra.finish();
    let zstd_layer = Layer {
        blob: zstd::encode_all(&extra[..], 3).unwrap(),
        media_type: LAYER_ZSTD,
        diff_id: sha256(&extra),
    };
    let mut plain = LayerBuilder::new();
    plain.file("plain.txt", b"plain", 0o600);
    let image = BuiltImage::new(
        vec![
            Layer::gzip(&busybox_tar()),
            zstd_layer,
            Layer::plain(&plain.finish()),
        ],
        &[PATH_ENV],
        &["sh"],
    );
    push(&host, "mixed:1", &image, None).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(dir.path(), &host);
    let img = store
        .ensure(&format!("{host}/mixed:1"), PullPolicy::IfNotPresent, &[])
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(img.layers[1].join("hello.txt")).unwrap(),
        b"zstd!"
    );
    assert_eq!(
        std::fs::read(img.layers[0].join("plain.txt")).unwrap(),
        b"plain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_first_then_upstream() {
    let Some(reg) = Registry::start_or_skip() else {
        return;
    };
    let host = reg.host();
    let built = push_busybox(&host, "library/busybox:1").await;
    let dir = tempfile::tempdir().unwrap();
    // docker.io is served by the local mirror: no request leaves the machine.
    let mut config = insecure(&[&host]);
    config.mirrors = BTreeMap::from([("docker.io".to_string(), vec![host.clone()])]);
    let store = ImageStore::open(&dir.path().join("a"), config).unwrap();
    let img = store
        .ensure("busybox:1", PullPolicy::IfNotPresent, &[])
        .await
        .expect("pull via mirror");
    assert_eq!(img.id, built.id());
    assert!(store.get("docker.io/library/busybox:1").is_some());

    // A dead mirror falls back to the registry itself.
    let mut config = insecure(&[&host, "127.0.0.1:1"]);
    config.mirrors = BTreeMap::from([(host.clone(), vec!["127.0.0.1:1".to_string()])]);
    let store = ImageStore::open(&dir.path().join("b"), config).unwrap();
    let img = store
        .ensure(
            &format!("{host}/library/busybox:1"),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(img.id, built.id());
}

#[test]
fn import_oci_and_docker_archives() {
    if !Path::new(BUSYBOX_BIN).exists() {
        skip("busybox-static is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("store"), RegistryConfig::default()).unwrap();

    let layered = layered_image();
    let oci = write_file(
        dir.path(),
        "oci.tar",
        &oci_archive("example.com/app:v1", &layered),
    );
    let images = store.import_archive(&oci).expect("import OCI layout");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, layered.id());
    let img = store.get("example.com/app:v1").expect("imported by name");
    assert_eq!(img.layers.len(), 3);
    assert_eq!(
        img.repo_digest,
        format!("example.com/app@{}", layered.manifest_digest())
    );
    assert!(img.layers[0].join("data/linked").exists());

    let mut extra = LayerBuilder::new();
    extra.file("docker.txt", b"saved", 0o644);
    let tars = vec![busybox_tar(), extra.finish()];
    let docker_image = BuiltImage::new(
        tars.iter().map(|t| Layer::plain(t)).collect(),
        &[PATH_ENV],
        &["sh"],
    );
    let saved = write_file(
        dir.path(),
        "docker.tar",
        &docker_archive("tools:2", &docker_image, &tars),
    );
    let images = store.import_archive(&saved).expect("import docker save");
    assert_eq!(images[0].id, docker_image.id());
    let img = store
        .get("docker.io/library/tools:2")
        .expect("imported tag");
    assert_eq!(
        std::fs::read(img.layers[0].join("docker.txt")).unwrap(),
        b"saved"
    );
    assert_eq!(
        img.layers[1],
        store.get("example.com/app:v1").unwrap().layers[2],
        "busybox layer shared"
    );
    assert_eq!(store.list().len(), 2);

    // A blob whose content does not match its digest is refused, and nothing is filed.
    let image = busybox_image();
    let mut tampered = image.config.clone();
    tampered.extend_from_slice(b" ");
    let mut blobs = vec![
        (image.manifest_digest(), image.manifest.clone()),
        (image.id(), tampered),
    ];
    blobs.extend(image.layers.iter().map(|l| (l.digest(), l.blob.clone())));
    let bad = write_file(
        dir.path(),
        "bad.tar",
        &oci_archive_raw(
            "example.com/bad:v1",
            &image.manifest_digest(),
            image.manifest.len(),
            &blobs,
        ),
    );
    let err = store.import_archive(&bad).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(store.get("example.com/bad:v1").is_none());
    let garbage = write_file(dir.path(), "garbage.tar", b"not a tar at all");
    assert!(store.import_archive(&garbage).is_err());
    assert!(
        std::fs::read_dir(dir.path().join("store/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no leftovers"
    );
}

/// Mounts the layered image's layers as a read-only overlay and reads through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_mount_as_overlayfs() {
    if !nix::unistd::geteuid().is_root() {
        skip("mounting overlayfs needs root");
        return;
    }
    let Some(reg) = Registry::start_or_skip() else {
        return;
    };
    let host = reg.host();
    push(&host, "layered:1", &layered_image(), None).await;
    let dir = tempfile::Builder::new()
        .prefix("berth-overlay")
        .tempdir()
        .unwrap();
    let store = store_for(dir.path(), &host);
    let img = store
        .ensure(&format!("{host}/layered:1"), PullPolicy::IfNotPresent, &[])
        .await
        .unwrap();
    let target = dir.path().join("merged");
    std::fs::create_dir(&target).unwrap();
    let lower = img
        .layers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    nix::mount::mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={lower}").as_str()),
    )
    .expect("mount overlay");
    let _guard = Unmount(target.clone());
    assert!(
        !target.join("etc/group").exists(),
        "whiteout hides the lower file"
    );
    assert!(target.join("etc/passwd").exists());
    assert!(
        !target.join("opaque/old").exists() && !target.join("opaque/keep").exists(),
        "opaque dir"
    );
    assert_eq!(std::fs::read(target.join("opaque/new")).unwrap(), b"new");
    assert_eq!(std::fs::read(target.join("data/file")).unwrap(), b"payload");
    assert_eq!(
        std::fs::read(target.join("data/hardlink")).unwrap(),
        b"shared inode"
    );
    assert!(target.join("bin/busybox").exists());
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
