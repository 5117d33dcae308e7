//! A whole single-node cluster for end-to-end tests: `berth up` with its kubelet, on a fresh data
//! directory, with a node name, cgroup base and cluster CIDR of its own so clusters of parallel
//! tests never meet. Dropping it kills `berth up` and runs `berth cleanup`, which stops the pods'
//! shims and containers and removes their cgroups, links and mounts.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

use super::Server;

pub struct Cluster {
    pub server: Server,
    pub data_dir: PathBuf,
    pub node: String,
    pub cgroup_base: String,
    /// Its `--cluster-cidr`.
    pub cluster_cidr: String,
    /// A cgroup2 directory whose processes the cluster's host socket LB covers.
    host_cgroup: Option<PathBuf>,
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

/// A /16 of its own for each cluster: pod routes on the host must not collide. The clusters of
/// one test binary run at once, so each takes the next of 100. (Derived from a random tag, two
/// could match, and a pod's address would then be routed to the other cluster's pod or, once
/// that one is gone, off the machine.)
pub fn cluster_cidr() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let octet = 100 + (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed)) % 100;
    format!("10.{octet}.0.0/16")
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
        let cidr = cluster_cidr();
        let mut all: Vec<String> = vec![
            "--node-name".into(),
            node.clone(),
            "--cgroup-base".into(),
            cgroup_base.clone(),
            "--cluster-cidr".into(),
            cidr.clone(),
            "--kubelet-port".into(),
            "0".into(),
        ];
        // Defaults the caller may replace: loopback as the node IP (not a link of Berth's, so
        // its forwarding stays off and no XDP program goes on it), and small eviction thresholds (the tests' own pods are tiny;
        // a developer's nearly full disk must not taint the node).
        let defaults = [
            ("--node-ip", "127.0.0.1"),
            ("--uplink-forwarding", "false"),
            ("--nodeport-devices", "none"),
            (
                "--eviction-hard",
                "memory.available<100Mi,nodefs.available<1%,nodefs.inodesFree<1%",
            ),
        ];
        for (flag, value) in defaults {
            if !args.iter().any(|a| a.starts_with(flag)) {
                all.push(format!("{flag}={value}"));
            }
        }
        // The data plane: its own bpffs (pins) in the data directory, and host processes are
        // covered by the socket LB only inside a cgroup of this cluster's (never the host's root).
        let host_cgroup = cgroup2_mount().map(|m| m.join(format!("{cgroup_base}-host")));
        if let Some(dir) = &host_cgroup {
            std::fs::create_dir_all(dir).expect("creating the host socket LB cgroup");
            all.push("--host-socket-lb-cgroup".into());
            all.push(dir.display().to_string());
        }
        all.push("--bpffs".into());
        all.push(data_dir.join("bpffs").display().to_string());
        // Its own nft table.
        all.push("--nft-table".into());
        all.push(cgroup_base.clone());
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let server = Server::spawn("up", &data_dir, &refs);
        Cluster {
            server,
            data_dir,
            node,
            cgroup_base,
            cluster_cidr: cidr,
            host_cgroup,
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

    /// Where a host process must be to reach ClusterIPs (see [`Cluster::up`]).
    pub fn host_cgroup(&self) -> PathBuf {
        self.host_cgroup
            .clone()
            .expect("this host has a cgroup2 mount")
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
        berth_cleanup(
            Command::new(env!("CARGO_BIN_EXE_berth")),
            &self.data_dir,
            &self.cgroup_base,
        );
        if let Some(dir) = &self.host_cgroup {
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("removing {}: {e}", dir.display());
            }
        }
    }
}

/// `berth cleanup` of `data_dir` and `cgroup_base`, through `berth` (the binary itself, or a
/// command that runs it elsewhere, such as nsenter into a node's namespace). Reports a failure
/// rather than panicking: it runs from Drop.
pub fn berth_cleanup(mut berth: Command, data_dir: &std::path::Path, cgroup_base: &str) {
    let status = berth
        .arg("cleanup")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--cgroup-base", cgroup_base])
        .env("RUST_LOG", "warn")
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("berth cleanup of {} failed: {status:?}", data_dir.display());
    }
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones), from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}
