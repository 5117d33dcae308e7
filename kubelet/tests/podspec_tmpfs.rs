//! Privileged: memory-backed volumes (emptyDir medium Memory, secrets) really are tmpfs
//! mounts named `berth-tmpfs`, mounting is idempotent, and `unmount_pod_volumes` removes them.
//!
//! The mounts are made in a private mount namespace of a child process (this test binary
//! re-executed), so nothing leaks into the host's namespace even if the child panics.

use std::fs;
use std::path::Path;
use std::process::Command;

use berth_kubelet::podspec::{
    mount_memory_volume, prepare_volumes, unmount_pod_volumes, HostMounter, ObjectSource, PodFacts,
    PodSpecError, VolumeKind,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};

const CHILD_ENV: &str = "BERTH_PODSPEC_TMPFS_CHILD";

fn skip(reason: &str) {
    if std::env::var("BERTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("BERTH_REQUIRE_PRIVILEGED=1 but cannot run: {reason}");
    }
    println!("skipping: {reason}");
}

#[test]
fn memory_volumes_are_tmpfs() {
    if std::env::var(CHILD_ENV).is_ok() {
        child();
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root to create a mount namespace and mount tmpfs");
    }
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args([
            "--exact",
            "memory_volumes_are_tmpfs",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("child: ok"), "child did not run:\n{stdout}");
}

struct Objects;

impl ObjectSource for Objects {
    async fn config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, PodSpecError> {
        Ok(None)
    }
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, PodSpecError> {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns}, "data": {"token": "c2VjcmV0"}
        }))
        .expect("secret");
        Ok(Some(s))
    }
    async fn services(&self, _: &str) -> Result<Vec<Service>, PodSpecError> {
        Ok(Vec::new())
    }
}

fn mounts_under(dir: &Path) -> Vec<(String, String)> {
    // This thread's namespace: unshare(CLONE_NEWNS) applies to the calling thread only.
    let info = fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let point = f.get(4)?.to_string();
            let source = f.get(sep + 2)?.to_string();
            point.starts_with(dir.to_str()?).then_some((point, source))
        })
        .collect()
}

fn child() {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mount namespace");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make mounts private");

    let tmp = tempfile::tempdir().expect("tempdir");
    let pod_dir = tmp.path().join("pod");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"containers": [{"name": "c"}], "volumes": [
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}},
            {"name": "tok", "secret": {"secretName": "s"}}
        ]}
    }))
    .expect("pod");
    let facts = PodFacts {
        node_allocatable_memory: 1 << 30,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let volumes = rt
        .block_on(prepare_volumes(
            &Objects,
            &pod,
            &pod_dir,
            &facts,
            &HostMounter,
        ))
        .expect("prepare volumes");
    let mem = volumes.get("mem").expect("mem");
    assert_eq!(mem.kind, VolumeKind::MemoryEmptyDir);
    let tok = volumes.get("tok").expect("tok");
    assert_eq!(
        fs::read_to_string(tok.path.join("token")).expect("token"),
        "secret"
    );

    let found = mounts_under(&pod_dir);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|(_, s)| s == "berth-tmpfs"), "{found:?}");
    let st = nix::sys::statfs::statfs(&mem.path).expect("statfs");
    assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    // sizeLimit becomes the tmpfs size.
    assert_eq!(st.blocks() * st.block_size() as u64, 4 << 20);

    // Again: no second mount stacked on the first.
    rt.block_on(prepare_volumes(
        &Objects,
        &pod,
        &pod_dir,
        &facts,
        &HostMounter,
    ))
    .expect("prepare again");
    mount_memory_volume(&mem.path, None).expect("mount again");
    assert_eq!(mounts_under(&pod_dir).len(), 2);

    unmount_pod_volumes(&pod_dir, Path::new("/proc/thread-self/mountinfo")).expect("unmount");
    assert!(mounts_under(&pod_dir).is_empty());
    assert!(
        !tok.path.join("token").exists(),
        "the secret went with its tmpfs"
    );
    println!("child: ok");
}
