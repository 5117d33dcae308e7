//! Two nodes on one machine: `berth up` in the host's network namespace and a `berth agent` in a
//! network namespace of its own, joined by a veth pair whose addresses (198.18.0.0/15, the
//! benchmarking range) are the nodes' InternalIPs. The registry listens on node 1's end, so
//! both nodes pull from it. Cross-node traffic crosses the pair for real: routes to each other's
//! podCIDR, forwarding on each uplink, the other node's pod veths. A third namespace, "outside",
//! hangs off node 2 (198.19.0.0/16) as a client of its NodePorts; both nodes serve NodePorts
//! through XDP in driver mode on their veths (checksum offload off on every end, since XDP
//! cannot finish a partial checksum; GRO on where XDP redirects frames in).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::cluster::{can_run_kubelet, Cluster};
use crate::kubelet_support::registry::{self, Registry};
use crate::kubelet_support::IMAGE_REPO;

/// A network namespace (`ip netns add`), deleted with everything in it on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn add(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        Netns { name: name.into() }
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `program args…` inside this namespace (network only; mounts are the host's, so cgroups
    /// and bpffs paths stay the same).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `ethtool args…` in `ns` (the host's namespace for None).
fn ethtool(ns: Option<&Netns>, args: &[&str]) {
    let mut cmd = match ns {
        Some(ns) => ns.command("ethtool"),
        None => Command::new("ethtool"),
    };
    let out = cmd.args(args).output().expect("running ethtool");
    assert!(out.status.success(), "ethtool {args:?}: {out:?}");
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// `berth agent` in the second node's namespace; dropping it kills it and runs `berth cleanup`
/// there.
struct Agent {
    child: Child,
    data_dir: PathBuf,
    cgroup_base: String,
    netns: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut berth = Command::new("nsenter");
        berth
            .arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_berth"));
        crate::common::cluster::berth_cleanup(berth, &self.data_dir, &self.cgroup_base);
    }
}

/// The two nodes. Fields drop in order: the agent (and its cleanup), node 1's cluster, the
/// registry, then the namespace with the other end of the pair.
pub struct TwoNodes {
    _node2_agent: Agent,
    pub cluster: Cluster,
    _registry: Registry,
    _node2_netns: Netns,
    /// A client namespace behind node 2, reaching it at `node2_ip` through `outside_gw`.
    pub outside: Netns,
    /// Node 1's side of the pair (in the host namespace).
    pub uplink1: String,
    pub node2_ip: String,
    pub node2: String,
    pub image: String,
    _root: tempfile::TempDir,
}

impl TwoNodes {
    /// Both nodes Ready, with the busybox test image in a registry both reach; None when the
    /// test can't run here.
    pub async fn up() -> Option<TwoNodes> {
        if let Err(why) = can_run_kubelet() {
            registry::skip(&why);
            return None;
        }
        for tool in ["ip", "nsenter", "ethtool"] {
            if Command::new(tool).arg("-V").output().is_err() {
                registry::skip(&format!("{tool} is not installed"));
                return None;
            }
        }
        let tag = format!("{:x}", rand_u32() & 0xfff_ffff);
        let k = rand_u32() % 250;
        let (node1_ip, node2_ip) = (format!("198.18.{k}.1"), format!("198.18.{k}.2"));
        let netns = Netns::add(&format!("berth-mn-{tag}"));
        let (up1, up2) = (format!("berthu{tag}"), format!("berthn{tag}"));
        ip(&[
            "link",
            "add",
            &up1,
            "type",
            "veth",
            "peer",
            "name",
            &up2,
            "netns",
            &netns.name,
        ]);
        ip(&["addr", "add", &format!("{node1_ip}/30"), "dev", &up1]);
        ip(&["link", "set", &up1, "up"]);
        let node2_cidr = format!("{node2_ip}/30");
        for args in [
            ["addr", "add", &node2_cidr, "dev", &up2],
            ["link", "set", &up2, "up", ""],
            ["link", "set", "lo", "up", ""],
        ] {
            let mut all = vec!["-n", netns.name.as_str()];
            all.extend(args.iter().copied().filter(|a| !a.is_empty()));
            ip(&all);
        }

        let outside = Netns::add(&format!("berth-mo-{tag}"));
        let (x2, xo) = (format!("berthx{tag}"), format!("bertho{tag}"));
        ip(&[
            "link",
            "add",
            &x2,
            "netns",
            &netns.name,
            "type",
            "veth",
            "peer",
            "name",
            &xo,
            "netns",
            &outside.name,
        ]);
        let (outside_gw, outside_ip) = (format!("198.19.{k}.1"), format!("198.19.{k}.2"));
        let in_ns = |ns: &Netns, args: &[&str]| {
            let mut all = vec!["-n", ns.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        in_ns(
            &netns,
            &["addr", "add", &format!("{outside_gw}/30"), "dev", &x2],
        );
        in_ns(&netns, &["link", "set", &x2, "up"]);
        in_ns(
            &outside,
            &["addr", "add", &format!("{outside_ip}/30"), "dev", &xo],
        );
        in_ns(&outside, &["link", "set", &xo, "up"]);
        in_ns(&outside, &["link", "set", "lo", "up"]);
        in_ns(
            &outside,
            &[
                "route",
                "add",
                &format!("198.18.{k}.0/30"),
                "via",
                &outside_gw,
            ],
        );
        for (ns, link) in [
            (None, &up1),
            (Some(&netns), &up2),
            (Some(&netns), &x2),
            (Some(&outside), &xo),
        ] {
            ethtool(ns, &["-K", link, "tx", "off", "gro", "on"]);
        }

        let registry = Registry::start_on_or_skip(node1_ip.parse().unwrap())?;
        let host = registry.host();
        registry::push_busybox(&host, IMAGE_REPO).await;
        let cluster = Cluster::up(&[
            "--insecure-registry",
            &host,
            &format!("--listen={node1_ip}:0"),
            &format!("--node-ip={node1_ip}"),
            "--uplink-forwarding=true",
            &format!("--nodeport-devices={up1}"),
        ]);
        cluster.wait_node_ready().await;

        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("node2");
        let node2 = format!("berth-mn-{tag}");
        let cgroup_base = format!("berth-mn-{tag}");
        let token_file = root.path().join("token");
        let token = std::fs::read_to_string(cluster.data_dir.join("join-token"))
            .expect("berth up wrote its join token");
        std::fs::write(&token_file, token.trim()).unwrap();
        let child = netns
            .command(env!("CARGO_BIN_EXE_berth"))
            .arg("agent")
            .args(["--server", &cluster.server.url])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--ca-file")
            .arg(cluster.data_dir.join("pki/ca.crt"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--node-name", &node2, "--node-ip", &node2_ip])
            .args(["--cgroup-base", &cgroup_base, "--kubelet-port", "0"])
            .args(["--insecure-registry", &host])
            .args(["--cluster-cidr", &cluster.cluster_cidr])
            .arg("--bpffs")
            .arg(data_dir.join("bpffs"))
            .args([
                "--host-socket-lb-cgroup",
                "none",
                "--nft-table",
                &cgroup_base,
            ])
            .arg(format!("--nodeport-devices={up2},{x2}"))
            .args([
                "--eviction-hard",
                "memory.available<100Mi,nodefs.available<1%,nodefs.inodesFree<1%",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning berth agent");
        let agent = Agent {
            child,
            data_dir,
            cgroup_base,
            netns: netns.path(),
        };
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(cluster.server.client().await);
        crate::common::wait_for(
            &nodes,
            &node2,
            "node 2 Ready",
            |n: Option<&k8s_openapi::api::core::v1::Node>| {
                n.and_then(|n| n.status.as_ref()?.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            },
        )
        .await;
        let image = format!("{host}/{IMAGE_REPO}");
        Some(TwoNodes {
            _node2_agent: agent,
            cluster,
            _registry: registry,
            _node2_netns: netns,
            outside,
            uplink1: up1,
            node2_ip,
            node2,
            image,
            _root: root,
        })
    }
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos ^ (std::process::id() << 16)
}
