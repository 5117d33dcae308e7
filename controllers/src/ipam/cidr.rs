//! IPv4 CIDRs and the per-node range allocator: the cluster CIDR cut into equal blocks (a /24
//! each by default), handed out lowest-free first.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("invalid CIDR {text:?}: {reason}")]
    Parse { text: String, reason: &'static str },
    #[error("node mask /{node_prefix} does not fit cluster CIDR {cluster} (needs /{min}../{max})")]
    MaskSize {
        cluster: Ipv4Cidr,
        node_prefix: u8,
        min: u8,
        max: u8,
    },
    #[error("cluster CIDR {cluster} has no free /{node_prefix} left")]
    Full { cluster: Ipv4Cidr, node_prefix: u8 },
    #[error("{cidr} of node {node} is not a /{node_prefix} block of cluster CIDR {cluster}")]
    Outside {
        node: String,
        cidr: Ipv4Cidr,
        cluster: Ipv4Cidr,
        node_prefix: u8,
    },
    #[error("{cidr} of node {node} is already allocated to node {owner}")]
    Taken {
        node: String,
        cidr: Ipv4Cidr,
        owner: String,
    },
}

/// An IPv4 network: its first address and prefix length (host bits zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    /// `10.244.0.0/16`. Host bits must be zero, as Go's `net.ParseCIDR` callers in Kubernetes
    /// require of a cluster CIDR.
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let err = |reason| CidrError::Parse {
            text: text.to_string(),
            reason,
        };
        let (addr, prefix) = text.split_once('/').ok_or(err("no /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("prefix is not a number"))?;
        if prefix > 32 {
            return Err(err("prefix is longer than 32"));
        }
        if u32::from(addr) & !Ipv4Cidr::mask(prefix) != 0 {
            return Err(err("host bits are set"));
        }
        Ok(Ipv4Cidr {
            network: addr,
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which block each node holds. Rebuilt from the Nodes at start; never persisted.
#[derive(Debug)]
pub struct CidrAllocator {
    cluster: Ipv4Cidr,
    node_prefix: u8,
    /// Block index → the node holding it.
    used: BTreeMap<u32, String>,
    by_node: HashMap<String, u32>,
}

/// Kubernetes refuses node masks more than 16 bits longer than the cluster mask.
const MAX_EXTRA_BITS: u8 = 16;

impl CidrAllocator {
    pub fn new(cluster: Ipv4Cidr, node_prefix: u8) -> Result<Self, CidrError> {
        let max = cluster.prefix.saturating_add(MAX_EXTRA_BITS).min(32);
        if node_prefix < cluster.prefix || node_prefix > max {
            return Err(CidrError::MaskSize {
                cluster,
                node_prefix,
                min: cluster.prefix,
                max,
            });
        }
        Ok(CidrAllocator {
            cluster,
            node_prefix,
            used: BTreeMap::new(),
            by_node: HashMap::new(),
        })
    }

    fn blocks(&self) -> u32 {
        1 << (self.node_prefix - self.cluster.prefix)
    }

    fn block(&self, index: u32) -> Ipv4Cidr {
        let step = 1u64 << (32 - u32::from(self.node_prefix));
        let base = u64::from(u32::from(self.cluster.network)) + u64::from(index) * step;
        Ipv4Cidr {
            network: Ipv4Addr::from(base as u32),
            prefix: self.node_prefix,
        }
    }

    fn index_of(&self, cidr: Ipv4Cidr) -> Option<u32> {
        let inside = cidr.prefix == self.node_prefix
            && u32::from(cidr.network) & Ipv4Cidr::mask(self.cluster.prefix)
                == u32::from(self.cluster.network);
        inside.then(|| {
            (u32::from(cidr.network) - u32::from(self.cluster.network))
                >> (32 - u32::from(self.node_prefix))
        })
    }

    /// The block `node` holds, allocating the lowest free one if it holds none.
    pub fn allocate(&mut self, node: &str) -> Result<Ipv4Cidr, CidrError> {
        if let Some(&i) = self.by_node.get(node) {
            return Ok(self.block(i));
        }
        let mut candidate = 0u32;
        for &u in self.used.keys() {
            if u != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate >= self.blocks() {
            return Err(CidrError::Full {
                cluster: self.cluster,
                node_prefix: self.node_prefix,
            });
        }
        self.used.insert(candidate, node.to_string());
        self.by_node.insert(node.to_string(), candidate);
        Ok(self.block(candidate))
    }

    /// Records that `node` holds `cidr` (found on the Node). A node moving to another block
    /// releases its old one.
    pub fn occupy(&mut self, node: &str, cidr: Ipv4Cidr) -> Result<(), CidrError> {
        let index = self.index_of(cidr).ok_or_else(|| CidrError::Outside {
            node: node.to_string(),
            cidr,
            cluster: self.cluster,
            node_prefix: self.node_prefix,
        })?;
        if let Some(owner) = self.used.get(&index).filter(|o| o.as_str() != node) {
            return Err(CidrError::Taken {
                node: node.to_string(),
                cidr,
                owner: owner.clone(),
            });
        }
        if let Some(old) = self.by_node.insert(node.to_string(), index) {
            self.used.remove(&old);
        }
        self.used.insert(index, node.to_string());
        Ok(())
    }

    /// Frees the block `node` held, if any.
    pub fn release(&mut self, node: &str) -> Option<Ipv4Cidr> {
        let index = self.by_node.remove(node)?;
        self.used.remove(&index);
        Some(self.block(index))
    }

    /// The block `node` holds, if any.
    pub fn held_by(&self, node: &str) -> Option<Ipv4Cidr> {
        self.by_node.get(node).map(|&i| self.block(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(cidr("10.244.0.0/16").to_string(), "10.244.0.0/16");
        assert_eq!(cidr("0.0.0.0/0").prefix(), 0);
        for (text, reason) in [
            ("10.244.0.0", "no /prefix"),
            ("10.244.0.1/16", "host bits are set"),
            ("10.244.0.0/33", "prefix is longer than 32"),
            ("fd00::/8", "not an IPv4 address"),
            ("10.0.0.0/x", "prefix is not a number"),
        ] {
            assert_eq!(
                text.parse::<Ipv4Cidr>(),
                Err(CidrError::Parse {
                    text: text.into(),
                    reason
                })
            );
        }
    }

    #[test]
    fn allocates_lowest_free_and_reuses_released_blocks() {
        let mut a = CidrAllocator::new(cidr("10.244.0.0/16"), 24).unwrap();
        assert_eq!(a.allocate("n1").unwrap(), cidr("10.244.0.0/24"));
        assert_eq!(a.allocate("n2").unwrap(), cidr("10.244.1.0/24"));
        assert_eq!(a.allocate("n3").unwrap(), cidr("10.244.2.0/24"));
        // Asking again for a node that holds a block returns the same block.
        assert_eq!(a.allocate("n2").unwrap(), cidr("10.244.1.0/24"));
        assert_eq!(a.release("n2"), Some(cidr("10.244.1.0/24")));
        assert_eq!(a.release("n2"), None);
        assert_eq!(a.allocate("n4").unwrap(), cidr("10.244.1.0/24"));
        assert_eq!(a.allocate("n5").unwrap(), cidr("10.244.3.0/24"));
        assert_eq!(a.held_by("n4"), Some(cidr("10.244.1.0/24")));
    }

    #[test]
    fn rebuilds_from_existing_blocks() {
        let mut a = CidrAllocator::new(cidr("10.244.0.0/16"), 24).unwrap();
        a.occupy("old1", cidr("10.244.0.0/24")).unwrap();
        a.occupy("old2", cidr("10.244.2.0/24")).unwrap();
        assert_eq!(a.allocate("new").unwrap(), cidr("10.244.1.0/24"));
        assert_eq!(a.allocate("newer").unwrap(), cidr("10.244.3.0/24"));
        assert_eq!(
            a.occupy("other", cidr("10.244.2.0/24")),
            Err(CidrError::Taken {
                node: "other".into(),
                cidr: cidr("10.244.2.0/24"),
                owner: "old2".into()
            })
        );
        // Occupying again what a node already holds is fine; moving frees the old block.
        a.occupy("old2", cidr("10.244.2.0/24")).unwrap();
        a.occupy("old2", cidr("10.244.9.0/24")).unwrap();
        assert_eq!(a.allocate("next").unwrap(), cidr("10.244.2.0/24"));
        for outside in ["10.245.0.0/24", "10.244.0.0/25"] {
            assert!(matches!(
                a.occupy("x", cidr(outside)),
                Err(CidrError::Outside { .. })
            ));
        }
    }

    #[test]
    fn a_full_range_says_so() {
        let mut a = CidrAllocator::new(cidr("10.0.0.0/23"), 24).unwrap();
        assert_eq!(a.allocate("a").unwrap(), cidr("10.0.0.0/24"));
        assert_eq!(a.allocate("b").unwrap(), cidr("10.0.1.0/24"));
        assert_eq!(
            a.allocate("c"),
            Err(CidrError::Full {
                cluster: cidr("10.0.0.0/23"),
                node_prefix: 24
            })
        );
    }

    #[test]
    fn node_masks_must_fit() {
        assert!(CidrAllocator::new(cidr("10.0.0.0/24"), 16).is_err());
        assert!(CidrAllocator::new(cidr("10.0.0.0/8"), 25).is_err());
        assert!(CidrAllocator::new(cidr("10.0.0.0/8"), 24).is_ok());
        let mut all = CidrAllocator::new(cidr("0.0.0.0/0"), 16).unwrap();
        assert_eq!(all.allocate("a").unwrap(), cidr("0.0.0.0/16"));
    }
}
