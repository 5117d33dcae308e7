//! A whole single-node cluster for end-to-end tests: `berth up` with its kubelet, on a fresh data
//! directory, with a node name, cgroup base and cluster CIDR of its own so clusters of parallel
//! tests never meet. Dropping it kills `berth up` and runs `berth cleanup`, which stops the pods'
//! shims and containers and removes their cgroups, links and mounts.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

use super::Server;

pub struct Cluster {
    pub server: Server,
    pub data_dir: PathBuf,
    pub node: String,
    pub cgroup_base: String,
    args: Vec<String>,
    _root: TempDir,
}

/// Root, overlayfs and cgroups are what a kubelet needs; without them the test skips (or fails
/// under BERTH_REQUIRE_PRIVILEGED=1).
pub fn can_run_kubelet() -> Result<(), String> {
    if !nix_is_root() {
        return Err("the kubelet needs root".into());
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") {
        return Err("no overlayfs in this kernel".into());
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// A short random tag for names.
fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id() & 0xfff, nanos & 0xffff)
}

impl Cluster {
    /// `berth up` plus `args` (e.g. `--insecure-registry`).
    pub fn up(args: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("creating a temporary directory");
        let data_dir = root.path().join("data");
        let tag = tag();
        let node = format!("berth-e2e-{tag}");
        let cgroup_base = format!("berth-e2e-{tag}");
        // A /16 of its own per cluster: pod routes on the host must not collide.
        let octet = 100 + (u32::from_str_radix(&tag[tag.len() - 2..], 16).unwrap_or(0) % 100);
        let cidr = format!("10.{octet}.0.0/16");
        let mut all: Vec<String> = vec![
            "--node-name".into(),
            node.clone(),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--cgroup-base".into(),
            cgroup_base.clone(),
            "--cluster-cidr".into(),
            cidr,
            "--kubelet-port".into(),
            "0".into(),
        ];
        if !args.contains(&"--eviction-hard") {
            // The tests' own pods are tiny; a developer's nearly full disk must not taint the node.
            all.push("--eviction-hard".into());
            all.push("memory.available<100Mi,nodefs.available<1%,nodefs.inodesFree<1%".into());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let server = Server::spawn("up", &data_dir, &refs);
        Cluster {
            server,
            data_dir,
            node,
            cgroup_base,
            args: all,
            _root: root,
        }
    }

    /// kill -9 of `berth up` (API server, controllers and kubelet alike; not the shims), then
    /// `berth up` again on the same data directory.
    pub fn restart(&mut self) {
        self.server.kill9();
        self.restart_stopped();
    }

    /// `berth up` again after [`Server::kill9`].
    pub fn restart_stopped(&mut self) {
        let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server = Server::spawn("up", &self.data_dir, &refs);
    }

    /// Waits (on a watch) until the kubelet has registered the Node and it is Ready.
    pub async fn wait_node_ready(&self) {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(self.server.client().await);
        super::wait_for(
            &nodes,
            &self.node,
            "the node Ready",
            |n: Option<&k8s_openapi::api::core::v1::Node>| {
                n.and_then(|n| n.status.as_ref()?.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            },
        )
        .await;
    }

    /// Host objects whose names carry this cluster's cgroup base, for leak checks.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return out;
        };
        for h in hierarchies.flatten() {
            let dir = h.path().join(&self.cgroup_base);
            if dir.exists() {
                out.push(dir);
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.stop();
        let status = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("cleanup")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cgroup-base")
            .arg(&self.cgroup_base)
            .env("RUST_LOG", "warn")
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "berth cleanup of {} failed: {status:?}",
                self.data_dir.display()
            );
        }
    }
}
