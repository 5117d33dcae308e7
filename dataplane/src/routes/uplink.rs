//! The node's uplink: the link holding its InternalIP, which must forward (other nodes' pod
//! traffic and replies to masqueraded connections enter there) and whose MTU pods inherit.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;

use super::RoutesError;

/// The link holding the node's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub index: u32,
    pub mtu: Option<u32>,
}

/// The link in the calling thread's namespace that holds `node_ip`, if any. Needs a tokio
/// runtime.
pub async fn uplink_for(node_ip: Ipv4Addr) -> Result<Option<Uplink>, RoutesError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|source| RoutesError::Connect { source })?;
    let conn = tokio::spawn(conn);
    let result = async {
        let addresses: Vec<_> = handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| RoutesError::Netlink {
                op: "list addresses",
                object: "ipv4".to_string(),
                source: Box::new(source),
            })?;
        let holds = |attrs: &[AddressAttribute]| {
            attrs.iter().any(|a| {
                matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) if *ip == node_ip)
            })
        };
        let Some(index) = addresses
            .iter()
            .find(|m| holds(&m.attributes))
            .map(|m| m.header.index)
        else {
            return Ok(None);
        };
        let link = handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .map_err(|source| RoutesError::Netlink {
                op: "get link",
                object: index.to_string(),
                source: Box::new(source),
            })?;
        Ok(link.map(|msg| {
            let mut uplink = Uplink {
                name: String::new(),
                index,
                mtu: None,
            };
            for attr in msg.attributes {
                match attr {
                    LinkAttribute::IfName(name) => uplink.name = name,
                    LinkAttribute::Mtu(mtu) => uplink.mtu = Some(mtu),
                    _ => {}
                }
            }
            uplink
        }))
    }
    .await;
    conn.abort();
    result
}
