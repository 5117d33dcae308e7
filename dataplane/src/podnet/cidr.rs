//! An IPv4 prefix such as a node's podCIDR (`10.244.0.0/24`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: the address with its host bits cleared, and the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a string is not an IPv4 CIDR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("cidr {value:?} has no '/<prefix>'")]
    MissingPrefix { value: String },
    #[error("cidr {value:?} has an invalid address")]
    InvalidAddress { value: String },
    #[error("cidr {value:?} has a prefix length that is not 0..=32")]
    InvalidPrefix { value: String },
    #[error("cidr {value:?} has host bits set")]
    HostBitsSet { value: String },
}

impl Ipv4Cidr {
    /// The network with host bits cleared; errors if `prefix > 32` or `addr` has host bits set,
    /// since a podCIDR like `10.244.0.5/24` is almost certainly a typo.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        let value = || format!("{addr}/{prefix}");
        if prefix > 32 {
            return Err(CidrError::InvalidPrefix { value: value() });
        }
        let network = u32::from(addr) & mask(prefix);
        if network != u32::from(addr) {
            return Err(CidrError::HostBitsSet { value: value() });
        }
        Ok(Self {
            network: Ipv4Addr::from(network),
            prefix,
        })
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The broadcast address (all host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// Whether `addr` lies inside this network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// The number of addresses in the network, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

fn mask(prefix: u8) -> u32 {
    // `u32::MAX << 32` overflows, so a /0 is special-cased.
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = || s.to_string();
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingPrefix { value: value() })?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrError::InvalidAddress { value: value() })?;
        // `u8::from_str` accepts a leading '+', which no CIDR notation does.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::InvalidPrefix { value: value() });
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| CidrError::InvalidPrefix { value: value() })?;
        Self::new(addr, prefix).map_err(|e| match e {
            CidrError::InvalidPrefix { .. } => CidrError::InvalidPrefix { value: value() },
            CidrError::HostBitsSet { .. } => CidrError::HostBitsSet { value: value() },
            other => other,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let cidr: Ipv4Cidr = "10.244.0.0/24".parse().unwrap();
        assert_eq!(cidr.network(), Ipv4Addr::new(10, 244, 0, 0));
        assert_eq!(cidr.prefix(), 24);
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(10, 244, 0, 255));
        assert_eq!(cidr.size(), 256);
        assert_eq!(cidr.to_string(), "10.244.0.0/24");
    }

    #[test]
    fn edge_prefixes() {
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.broadcast(), Ipv4Addr::BROADCAST);
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(all.size(), 1 << 32);
        let host: Ipv4Cidr = "10.1.2.3/32".parse().unwrap();
        assert_eq!(host.broadcast(), Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(host.size(), 1);
    }

    #[test]
    fn contains() {
        let cidr: Ipv4Cidr = "10.244.1.0/24".parse().unwrap();
        assert!(cidr.contains(Ipv4Addr::new(10, 244, 1, 7)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 244, 2, 7)));
    }

    #[test]
    fn rejects_bad_input() {
        let err = |s: &str| s.parse::<Ipv4Cidr>().unwrap_err();
        assert!(matches!(err("10.244.0.0"), CidrError::MissingPrefix { .. }));
        assert!(matches!(
            err("10.244.0/24"),
            CidrError::InvalidAddress { .. }
        ));
        assert!(matches!(err("fd00::/64"), CidrError::InvalidAddress { .. }));
        assert!(matches!(
            err("10.244.0.0/33"),
            CidrError::InvalidPrefix { .. }
        ));
        assert!(matches!(
            err("10.244.0.0/"),
            CidrError::InvalidPrefix { .. }
        ));
        assert!(matches!(
            err("10.244.0.0/+8"),
            CidrError::InvalidPrefix { .. }
        ));
        assert!(matches!(
            err("10.244.0.0/2x"),
            CidrError::InvalidPrefix { .. }
        ));
        assert!(matches!(
            err("10.244.0.5/24"),
            CidrError::HostBitsSet { .. }
        ));
        assert_eq!(
            err("10.244.0.5/24").to_string(),
            "cidr \"10.244.0.5/24\" has host bits set"
        );
    }
}
