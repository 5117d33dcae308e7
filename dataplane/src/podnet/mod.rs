//! Pod networking: veth pairs, addresses and routes over rtnetlink, and pod IPs from the node's podCIDR.
//!
//! # Design
//!
//! Routed, not bridged (as the CNI `ptp` plugin, Calico and Cilium do it), so that every packet
//! to or from a pod crosses that pod's own host-side veth — the place design §6 attaches a tcx
//! program to ([`PodAddress::host_ifname`]).
//!
//! - **Links.** One veth pair per pod. The host side is [`host_ifname`]`(uid)` (`berth` + a hash,
//!   15 bytes) with the pod uid as its alias and [`POD_LINK_GROUP`] as its device group (what
//!   `nat` matches pod veths by: a name pattern would also match other `berth*` links); the pod
//!   side is created directly inside the pod's namespace as `eth0`, so it never appears in the
//!   host namespace under a clashing name.
//! - **Pod side.** `lo` up; `eth0` up with `<ip>/32` and GRO on (the veth then has NAPI, so
//!   NodePort XDP can redirect packets straight into the pod); `default via <gateway> dev eth0
//!   onlink`; a permanent neighbour entry gateway → host veth MAC, so the pod never has to ARP
//!   and the host's `arp_ignore` setting does not matter. With a /32, traffic to other pods
//!   also goes through the gateway, hence through the host veth.
//! - **Gateway.** The podCIDR's first address. Every pod's host veth carries it as a /32 (the same
//!   address on each, as CNI `ptp` does), so the pod reaches the host at its gateway.
//! - **Host side.** `<ip>/32 dev <veth> scope link src <gateway>` and a permanent neighbour entry
//!   pod IP → pod MAC. Host processes therefore reach pods from the gateway address, and pods
//!   reach every host address (the node's InternalIP included) by local delivery.
//! - **Sysctls.** Only `forwarding=1` on the pod's host veth, so the pod's packets to other pods
//!   and beyond are routed although the host's global `ip_forward` stays as it is (the kernel
//!   checks the *ingress* device; see `sysctl.rs`). Replies and other nodes' packets enter
//!   through the uplink, which the agent enables with [`enable_forwarding`]; cross-node routes
//!   and masquerading live in `routes` and `nat`.
//! - **MTU.** No encapsulation, so pods may use the uplink's MTU: [`pod_mtu`].
//! - **IPAM.** Host-local, one file per address under [`PodNetConfig::state_dir`]; see `ipam.rs`.
//! - **Namespaces.** The pod namespace is entered by a short-lived thread only to open a netlink
//!   socket (and a socket for ethtool's ioctl) there; see `netlink.rs`. Host-side operations use
//!   the caller's namespace: call from a runtime whose threads are in the host namespace.
//!
//! [`PodNetwork::attach`] is idempotent and repairs: after a kubelet restart it returns the same
//! address, recreates the veth if it is gone or its peer lives in another namespace (a new
//! sandbox for the same pod), and reapplies every address, route and neighbour entry. On error
//! the address stays allocated, so a retry gets the same one; [`PodNetwork::detach`] releases it.

mod cidr;
mod cleanup;
mod ifname;
mod ipam;
mod mtu;
mod netlink;
mod sysctl;

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use cidr::{CidrError, Ipv4Cidr};
pub use cleanup::cleanup_state;
pub use ifname::{host_ifname, HOST_IFNAME_PREFIX, POD_IFNAME};
pub use ipam::IpamError;
pub use mtu::pod_mtu;
pub use sysctl::{enable_forwarding, set_interface_sysctl, SysctlError, IPV4_CONF_ROOT};

use ipam::Ipam;
use netlink::{Link, Netns};

/// How long [`PodNetwork::attach`] waits for a new veth to pass traffic, and how often it looks.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(3);
const LINK_UP_POLL: Duration = Duration::from_millis(5);

/// The device group (`ip link set group`) of every pod's host veth: "bert" in ASCII.
pub const POD_LINK_GROUP: u32 = 0x6265_7274;

/// How this node's pods are networked.
#[derive(Debug, Clone)]
pub struct PodNetConfig {
    /// The node's podCIDR (`Node.spec.podCIDR`); a /30 or larger.
    pub pod_cidr: Ipv4Cidr,
    /// Where allocated addresses are recorded; must survive kubelet restarts.
    pub state_dir: PathBuf,
    /// MTU of both ends of every pod veth.
    pub mtu: u32,
}

/// A pod's address as [`PodNetwork::attach`] configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    pub ip: Ipv4Addr,
    /// Always 32: pods are routed, not on a shared subnet.
    pub prefix: u8,
    /// The pod's default gateway, the podCIDR's first address, held by the host.
    pub gateway: Ipv4Addr,
    /// The host-side veth, where per-pod programs attach.
    pub host_ifname: String,
}

/// Why pod networking failed.
#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error("mtu {mtu} is outside 68..=65535")]
    InvalidMtu { mtu: u32 },
    #[error("open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("network namespace {path} is the host's own")]
    HostNetns { path: PathBuf },
    #[error("spawn a thread to enter network namespace {path}")]
    SpawnThread {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("enter network namespace {path}")]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("open a netlink socket in network namespace {netns}")]
    Connect {
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("{op} {object} in network namespace {netns}")]
    Netlink {
        op: &'static str,
        object: String,
        netns: String,
        // Boxed: netlink errors carry the whole offending message, and errors should stay small.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("interface {name} in network namespace {netns} is not berth's veth")]
    ForeignInterface { name: String, netns: PathBuf },
    #[error("host interface {ifname} belongs to pod {owner}, not to pod {pod_uid}")]
    IfnameTaken {
        ifname: String,
        owner: String,
        pod_uid: String,
    },
    #[error("interface {name} vanished from network namespace {netns} while being configured")]
    LinkVanished { name: String, netns: String },
    #[error("{op} {name} in network namespace {netns}")]
    Ethtool {
        op: &'static str,
        name: String,
        netns: String,
        #[source]
        source: io::Error,
    },
}

/// Pod networking on this node. Cheap to clone; clones share the address allocator.
#[derive(Clone)]
pub struct PodNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    mtu: u32,
    gateway: Ipv4Addr,
    ipam: Mutex<Ipam>,
}

impl PodNetwork {
    /// Loads the allocations recorded under `config.state_dir` (created if missing). Touches no
    /// network state.
    pub fn new(config: PodNetConfig) -> Result<Self, PodNetError> {
        if !(68..=65535).contains(&config.mtu) {
            return Err(PodNetError::InvalidMtu { mtu: config.mtu });
        }
        let ipam = Ipam::open(&config.state_dir, config.pod_cidr)?;
        Ok(Self {
            inner: Arc::new(Inner {
                mtu: config.mtu,
                gateway: ipam::gateway(config.pod_cidr),
                ipam: Mutex::new(ipam),
            }),
        })
    }

    fn ipam(&self) -> MutexGuard<'_, Ipam> {
        // The allocator's truth is on disk and every change is written before memory is updated,
        // so a panic elsewhere while holding the lock leaves nothing to repair.
        self.inner.ipam.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects the pod's network namespace (`netns`, e.g. `/proc/<shim pid>/ns/net`) to the
    /// host. Idempotent per pod uid: a second call (after a kubelet restart) returns the same
    /// address and repairs whatever is missing. Returns once the veth passes traffic (needs a
    /// runtime with the time driver).
    pub async fn attach(&self, pod_uid: &str, netns: &Path) -> Result<PodAddress, PodNetError> {
        let ip = self.ipam().allocate(pod_uid)?;
        let gateway = self.inner.gateway;
        let ifname = host_ifname(pod_uid);
        let netns_file = File::open(netns).map_err(|source| PodNetError::OpenNetns {
            path: netns.to_path_buf(),
            source,
        })?;
        ensure_not_host(&netns_file, netns)?;
        let host = Netns::host()?;
        let pod = Netns::enter(&netns_file, netns).await?;
        let (veth, eth0) = self
            .ensure_veth(&host, &pod, &netns_file, netns, pod_uid, &ifname)
            .await?;

        host.set_up(&veth, Some(pod_uid), Some(POD_LINK_GROUP))
            .await?;
        enable_forwarding(&veth.name)?;
        // NodePort replies leave the pod's tc program with the node's own address as their
        // source (reverse NAT); without this the kernel drops them as martians.
        set_interface_sysctl(Path::new(IPV4_CONF_ROOT), &veth.name, "accept_local", "1")?;
        host.add_address(&veth, gateway, 32).await?;
        if let Some(lo) = pod.link("lo").await? {
            pod.set_up(&lo, None, None).await?;
        }
        pod.set_up(&eth0, None, None).await?;
        // NAPI on the pod's end, for NodePort XDP's redirects into the pod (loader::Datapath::
        // allow_xdp_redirect).
        pod.enable_gro(&eth0)?;
        pod.add_address(&eth0, ip, 32).await?;
        pod.add_neighbour(&eth0, gateway, &veth.mac).await?;
        pod.add_default_route(&eth0, gateway).await?;
        host.add_neighbour(&veth, ip, &eth0.mac).await?;
        host.add_host_route(&veth, ip, gateway).await?;
        wait_until_running(&host, &pod, &ifname, netns).await?;
        Ok(PodAddress {
            ip,
            prefix: 32,
            gateway,
            host_ifname: ifname,
        })
    }

    /// The pod's veth pair, created unless both ends already exist and are each other's peer.
    async fn ensure_veth(
        &self,
        host: &Netns,
        pod: &Netns,
        netns_file: &File,
        netns: &Path,
        pod_uid: &str,
        ifname: &str,
    ) -> Result<(Link, Link), PodNetError> {
        let veth = host.link(ifname).await?;
        let eth0 = pod.link(POD_IFNAME).await?;
        if let Some(veth) = &veth {
            check_owner(veth, pod_uid)?;
        }
        match (veth, eth0) {
            (Some(veth), Some(eth0))
                if veth.peer_index == Some(eth0.index) && eth0.peer_index == Some(veth.index) =>
            {
                return Ok((veth, eth0));
            }
            (_, Some(_)) => {
                return Err(PodNetError::ForeignInterface {
                    name: POD_IFNAME.to_string(),
                    netns: netns.to_path_buf(),
                });
            }
            // Its peer is in another namespace: an earlier sandbox of this pod that still exists.
            (Some(stale), None) => {
                host.delete_link(&stale).await?;
            }
            (None, None) => {}
        }
        host.create_veth(ifname, POD_IFNAME, netns_file, self.inner.mtu)
            .await?;
        let vanished = |name: &str, netns: &str| PodNetError::LinkVanished {
            name: name.to_string(),
            netns: netns.to_string(),
        };
        let veth = host
            .link(ifname)
            .await?
            .ok_or_else(|| vanished(ifname, "host"))?;
        let eth0 = pod
            .link(POD_IFNAME)
            .await?
            .ok_or_else(|| vanished(POD_IFNAME, &netns.display().to_string()))?;
        Ok((veth, eth0))
    }

    /// Deletes the pod's host-side veth (its peer goes with it, and with them the routes and
    /// neighbour entries) and releases its address. Idempotent.
    pub async fn detach(&self, pod_uid: &str) -> Result<(), PodNetError> {
        let ifname = host_ifname(pod_uid);
        let host = Netns::host()?;
        if let Some(veth) = host.link(&ifname).await? {
            match check_owner(&veth, pod_uid) {
                Ok(()) => {
                    host.delete_link(&veth).await?;
                }
                // A hash collision: the veth is another pod's, leave it alone.
                Err(e) => tracing::warn!(error = %e, "not deleting another pod's veth"),
            }
        }
        self.ipam().release(pod_uid)?;
        Ok(())
    }

    /// The address the pod holds according to the allocator, attached or not (re-adoption after
    /// a restart).
    pub fn address_of(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.ipam().lookup(pod_uid)
    }

    /// `berth cleanup`: deletes every link in the host namespace whose name starts with
    /// [`HOST_IFNAME_PREFIX`] and forgets every allocation. Returns how many links it deleted.
    pub async fn cleanup_all(&self) -> Result<usize, PodNetError> {
        let host = Netns::host()?;
        let mut deleted = 0;
        for link in host.links().await? {
            // Deleting one end of a veth takes the other with it; that one then reports "gone".
            if link.name.starts_with(HOST_IFNAME_PREFIX) && host.delete_link(&link).await? {
                deleted += 1;
            }
        }
        self.ipam().clear()?;
        Ok(deleted)
    }
}

/// Waits, at most [`LINK_UP_TIMEOUT`], until both ends of the veth pass traffic: right after
/// they are set up, the kernel's link watcher has yet to activate their queues and drops what is
/// sent — a pod's first DNS query, say. Polls, since it is a matter of milliseconds; a link that
/// stays down past the timeout is logged, not an error (the kernel may only be slow).
async fn wait_until_running(
    host: &Netns,
    pod: &Netns,
    ifname: &str,
    netns: &Path,
) -> Result<(), PodNetError> {
    let deadline = Instant::now() + LINK_UP_TIMEOUT;
    loop {
        let host_up = host.link(ifname).await?.is_some_and(|l| l.oper_up);
        let pod_up = pod.link(POD_IFNAME).await?.is_some_and(|l| l.oper_up);
        if host_up && pod_up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                ifname,
                netns = %netns.display(),
                host_up,
                pod_up,
                "pod veth is not running yet"
            );
            return Ok(());
        }
        tokio::time::sleep(LINK_UP_POLL).await;
    }
}

/// Fails if the veth's alias names another pod (an interface-name hash collision).
fn check_owner(veth: &Link, pod_uid: &str) -> Result<(), PodNetError> {
    match &veth.alias {
        Some(owner) if owner != pod_uid => Err(PodNetError::IfnameTaken {
            ifname: veth.name.clone(),
            owner: owner.clone(),
            pod_uid: pod_uid.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Refuses the caller's own namespace: moving `eth0` into it would configure the host.
fn ensure_not_host(netns_file: &File, netns: &Path) -> Result<(), PodNetError> {
    let open_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PodNetError::OpenNetns { path, source }
    };
    let target = netns_file.metadata().map_err(open_err(netns))?;
    let own_path = Path::new("/proc/thread-self/ns/net");
    let own = std::fs::metadata(own_path).map_err(open_err(own_path))?;
    if (target.dev(), target.ino()) == (own.dev(), own.ino()) {
        return Err(PodNetError::HostNetns {
            path: netns.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, cidr: &str, mtu: u32) -> PodNetConfig {
        PodNetConfig {
            pod_cidr: cidr.parse().unwrap(),
            state_dir: dir.join("ipam"),
            mtu,
        }
    }

    #[test]
    fn new_validates_and_loads_state() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            PodNetwork::new(config(dir.path(), "10.244.0.0/24", 20)),
            Err(PodNetError::InvalidMtu { mtu: 20 })
        ));
        assert!(matches!(
            PodNetwork::new(config(dir.path(), "10.244.0.0/31", 1500)),
            Err(PodNetError::Ipam(IpamError::TooSmall { .. }))
        ));
        std::fs::create_dir_all(dir.path().join("ipam")).unwrap();
        std::fs::write(dir.path().join("ipam/10.244.0.7"), "pod-a").unwrap();
        let net = PodNetwork::new(config(dir.path(), "10.244.0.0/24", 1500)).unwrap();
        assert_eq!(net.address_of("pod-a"), Some(Ipv4Addr::new(10, 244, 0, 7)));
        assert_eq!(net.clone().address_of("pod-b"), None);
        assert_eq!(net.inner.gateway, Ipv4Addr::new(10, 244, 0, 1));
    }

    #[tokio::test]
    async fn attach_refuses_the_host_namespace_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let net = PodNetwork::new(config(dir.path(), "10.244.0.0/24", 1500)).unwrap();
        let err = net
            .attach("pod-a", Path::new("/proc/thread-self/ns/net"))
            .await
            .unwrap_err();
        assert!(matches!(err, PodNetError::HostNetns { .. }), "{err}");
        let err = net
            .attach("pod-b", &dir.path().join("no-such-netns"))
            .await
            .unwrap_err();
        assert!(matches!(err, PodNetError::OpenNetns { .. }), "{err}");
        // The address stays allocated for a retry; detach gives it back.
        assert!(net.address_of("pod-a").is_some());
        net.ipam().release("pod-a").unwrap();
        assert_eq!(net.address_of("pod-a"), None);
    }

    #[test]
    fn owner_check() {
        let link = |alias: Option<&str>| Link {
            index: 7,
            name: "berth0123456789".to_string(),
            mac: vec![0; 6],
            alias: alias.map(str::to_string),
            peer_index: Some(2),
            oper_up: true,
        };
        assert!(check_owner(&link(Some("a")), "a").is_ok());
        assert!(check_owner(&link(None), "a").is_ok());
        let err = check_owner(&link(Some("b")), "a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "host interface berth0123456789 belongs to pod b, not to pod a"
        );
    }
}
