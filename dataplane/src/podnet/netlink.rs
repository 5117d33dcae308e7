//! The few rtnetlink operations pod networking needs, on a connection bound to one network
//! namespace.
//!
//! A netlink socket belongs to the namespace of the thread that created it, whichever thread
//! later drives it. So a pod's connection is created on a short-lived thread that `setns`es into
//! the pod's namespace and exits; the socket is then driven by the caller's tokio runtime, and no
//! runtime worker thread ever leaves the host namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use futures::TryStreamExt;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage, State,
};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::PodNetError;

/// What pod networking needs to know about a link.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub alias: Option<String>,
    /// For a veth: its peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// The operational state is up: the kernel passes traffic (for a veth: both ends are up and
    /// the link watcher has activated its queue; until then packets are dropped).
    pub oper_up: bool,
}

impl Link {
    fn from_message(msg: LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: Vec::new(),
            alias: None,
            peer_index: None,
            oper_up: false,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Address(mac) => link.mac = mac,
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
                LinkAttribute::Link(peer) => link.peer_index = Some(peer),
                LinkAttribute::OperState(state) => link.oper_up = state == State::Up,
                _ => {}
            }
        }
        link
    }
}

/// A netlink connection into one network namespace, and a socket there for ethtool's ioctls;
/// `label` names it in errors.
pub struct Netns {
    handle: Handle,
    ioctl: OwnedFd,
    label: String,
}

impl Netns {
    /// A connection in the calling thread's namespace: the host's, on a runtime worker.
    pub fn host() -> Result<Self, PodNetError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| PodNetError::Connect {
                netns: "host".to_string(),
                source,
            })?;
        tokio::spawn(conn);
        let ioctl = ioctl_socket().map_err(|source| PodNetError::Connect {
            netns: "host".to_string(),
            source,
        })?;
        Ok(Self {
            handle,
            ioctl,
            label: "host".to_string(),
        })
    }

    /// A connection in the namespace `netns` (opened from `path`).
    pub async fn enter(netns: &File, path: &Path) -> Result<Self, PodNetError> {
        let label = path.display().to_string();
        let fd = netns.try_clone().map_err(|source| PodNetError::OpenNetns {
            path: path.to_path_buf(),
            source,
        })?;
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("berth-netns".to_string())
            .spawn(move || {
                // This thread ends right after, so it never runs anything else in the pod's
                // namespace.
                let result = setns(&fd, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| PodNetError::EnterNetns {
                        path: thread_path.clone(),
                        source,
                    })
                    .and_then(|()| {
                        // The socket registers with the runtime's reactor, so it needs its context.
                        let _guard = runtime.enter();
                        let connect_error = |source| PodNetError::Connect {
                            netns: thread_path.display().to_string(),
                            source,
                        };
                        let connection = rtnetlink::new_connection().map_err(connect_error)?;
                        let ioctl = ioctl_socket().map_err(connect_error)?;
                        Ok((connection, ioctl))
                    });
                let _ = tx.send(result);
            })
            .map_err(|source| PodNetError::SpawnThread {
                path: path.to_path_buf(),
                source,
            })?;
        let ((conn, handle, _), ioctl) = rx.await.map_err(|_| PodNetError::SpawnThread {
            path: path.to_path_buf(),
            source: std::io::Error::other("the namespace thread ended without an answer"),
        })??;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            ioctl,
            label,
        })
    }

    /// Turns generic receive offload on for `link`. On a pod's `eth0` this gives the veth NAPI,
    /// which NodePort XDP needs to redirect packets into the pod (and which batches what the
    /// pod receives).
    pub fn enable_gro(&self, link: &Link) -> Result<(), PodNetError> {
        crate::sys::set_gro(self.ioctl.as_fd(), &link.name, true).map_err(|source| {
            PodNetError::Ethtool {
                op: "turn GRO on for",
                name: link.name.clone(),
                netns: self.label.clone(),
                source,
            }
        })
    }

    fn err(
        &self,
        op: &'static str,
        object: impl ToString,
    ) -> impl FnOnce(rtnetlink::Error) -> PodNetError {
        let netns = self.label.clone();
        let object = object.to_string();
        move |source| PodNetError::Netlink {
            op,
            object,
            netns,
            source: Box::new(source),
        }
    }

    /// The link called `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, PodNetError> {
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.map(Link::from_message)),
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(self.err("get link", name)(e)),
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, PodNetError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(self.err("list links", "all"))?;
        Ok(messages.into_iter().map(Link::from_message).collect())
    }

    /// Creates the veth `host_name` here, its peer `peer_name` directly inside `peer_netns`, both
    /// with `mtu`: the peer never exists under its pod-side name in the host namespace.
    pub async fn create_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns: &File,
        mtu: u32,
    ) -> Result<(), PodNetError> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name)
            .mtu(mtu)
            .setns_by_fd(peer_netns.as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_name)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(self.err("create veth", host_name))
    }

    /// Sets link `index` up, and its alias and device group when given.
    pub async fn set_up(
        &self,
        link: &Link,
        alias: Option<&str>,
        group: Option<u32>,
    ) -> Result<(), PodNetError> {
        let mut message = LinkUnspec::new_with_index(link.index).up();
        if let Some(alias) = alias {
            message = message.alias(alias);
        }
        if let Some(group) = group {
            message = message.append_extra_attribute(LinkAttribute::Group(group));
        }
        self.handle
            .link()
            .set(message.build())
            .execute()
            .await
            .map_err(self.err("set link up", &link.name))
    }

    /// Deletes link `index`; false if it was already gone.
    pub async fn delete_link(&self, link: &Link) -> Result<bool, PodNetError> {
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(self.err("delete link", &link.name)(e)),
        }
    }

    /// Adds (or keeps) `ip/prefix` on the link.
    pub async fn add_address(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), PodNetError> {
        self.handle
            .address()
            .add(link.index, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(self.err("add address", format!("{ip}/{prefix} on {}", link.name)))
    }

    /// A permanent neighbour entry: `ip` is at `mac` behind the link, so nothing ARPs for it.
    pub async fn add_neighbour(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        mac: &[u8],
    ) -> Result<(), PodNetError> {
        self.handle
            .neighbours()
            .add(link.index, IpAddr::V4(ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(self.err("add neighbour", format!("{ip} on {}", link.name)))
    }

    /// `ip/32 dev <link> scope link src <src>`: the host's route to a pod.
    pub async fn add_host_route(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        src: Ipv4Addr,
    ) -> Result<(), PodNetError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .output_interface(link.index)
            .scope(RouteScope::Link)
            .pref_source(src)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(self.err("add route", format!("{ip}/32 dev {}", link.name)))
    }

    /// `default via <gateway> dev <link> onlink`: the pod's only route out.
    pub async fn add_default_route(
        &self,
        link: &Link,
        gateway: Ipv4Addr,
    ) -> Result<(), PodNetError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(link.index)
            .onlink()
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(self.err(
                "add route",
                format!("default via {gateway} dev {}", link.name),
            ))
    }
}

/// The errno of a netlink error answer, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(Errno::from_raw(msg.raw_code().abs())),
        _ => None,
    }
}

/// A UDP socket in the calling thread's network namespace, for ioctls on that namespace's links.
fn ioctl_socket() -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)
}
