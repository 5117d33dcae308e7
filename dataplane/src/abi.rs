//! The BPF ABI: `#[repr(C)]` mirrors of `bpf/include/berth_abi.h`, field for field.
//!
//! Addresses and ports are stored in network byte order, as the programs read them from packets
//! and sockets; the constructors take host-order values so callers never swap by hand. The tests
//! pin every size and offset to the header's, so a change on one side fails until the other
//! follows.

use std::net::Ipv4Addr;

pub const MAP_SVC: &str = "berth_svc";
pub const MAP_SLOTS: &str = "berth_slots";
pub const MAP_BACKENDS: &str = "berth_backends";
pub const MAP_MAGLEV: &str = "berth_maglev";
pub const MAP_AFFINITY: &str = "berth_affinity";
pub const MAP_SK_REVNAT: &str = "berth_sk_revnat";
pub const MAP_CT: &str = "berth_ct";
pub const MAP_NODE_ADDRS: &str = "berth_nodeaddrs";
/// The devices NodePort XDP may redirect into (a `DEVMAP_HASH`, ifindex → itself).
pub const MAP_XDP_DEVS: &str = "berth_xdp_devs";

pub const MAX_SERVICES: u32 = 65536;
pub const MAX_BACKENDS: u32 = 262_144;
pub const MAGLEV_SIZE: usize = 1021;
pub const MAX_MAGLEV: u32 = 1024;

pub const SVC_AFFINITY: u16 = 1 << 0;
pub const SVC_NODEPORT: u16 = 1 << 1;
pub const SVC_MAGLEV: u16 = 1 << 2;

pub const PROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
pub const PROTO_UDP: u8 = libc::IPPROTO_UDP as u8;

pub const CT_FORWARD: u8 = 0;
pub const CT_REVERSE: u8 = 1;
pub const CT_SNAT_OUT: u8 = 2;
pub const CT_SNAT_IN: u8 = 3;
pub const SNAT_PORT_MIN: u16 = 61000;
pub const SNAT_PORT_MAX: u16 = 65535;
pub const CT_F_CLOSING: u16 = 1 << 0;

fn be_addr(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

fn host_addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

/// A frontend: ClusterIP (or external address) and port, or `addr` 0 for a NodePort.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

impl SvcKey {
    pub fn new(addr: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self {
            addr: be_addr(addr),
            port: port.to_be(),
            proto,
            pad: 0,
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        host_addr(self.addr)
    }

    pub fn host_port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvcValue {
    pub id: u32,
    pub count: u16,
    pub flags: u16,
    pub affinity_timeout: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotKey {
    pub svc_id: u32,
    pub slot: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotValue {
    pub backend_id: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub id: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

impl Backend {
    pub fn new(addr: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self {
            addr: be_addr(addr),
            port: port.to_be(),
            proto,
            flags: 0,
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        host_addr(self.addr)
    }

    pub fn host_port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevValue {
    pub backend_ids: [u32; MAGLEV_SIZE],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityKey {
    pub client: u64,
    pub svc_id: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityValue {
    pub backend_id: u32,
    pub pad: u32,
    pub last_used_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkRevnatKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkRevnatValue {
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
    pub svc_id: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtValue {
    pub nat_addr: u32,
    pub nat_port: u16,
    pub flags: u16,
    pub backend_id: u32,
    pub svc_id: u32,
    pub last_seen_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeAddrKey {
    pub addr: u32,
}

impl NodeAddrKey {
    pub fn new(addr: Ipv4Addr) -> Self {
        Self {
            addr: be_addr(addr),
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAddrValue {
    pub ifindex: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn nodeport_constants_match_the_header() {
        let header = include_str!("../../bpf/include/berth_abi.h");
        let define = |name: &str| -> u32 {
            let line = header
                .lines()
                .find(|line| line.split_whitespace().nth(1) == Some(name))
                .unwrap_or_else(|| panic!("no #define {name}"));
            let value = line
                .split_once(name)
                .and_then(|(_, rest)| rest.split("/*").next())
                .expect("value")
                .trim();
            match value.strip_prefix("(1 << ") {
                Some(shift) => 1 << shift.trim_end_matches(')').parse::<u32>().expect("shift"),
                None => value.parse().expect("number"),
            }
        };
        assert_eq!(define("BERTH_CT_FORWARD"), u32::from(CT_FORWARD));
        assert_eq!(define("BERTH_CT_REVERSE"), u32::from(CT_REVERSE));
        assert_eq!(define("BERTH_CT_SNAT_OUT"), u32::from(CT_SNAT_OUT));
        assert_eq!(define("BERTH_CT_SNAT_IN"), u32::from(CT_SNAT_IN));
        assert_eq!(define("BERTH_SNAT_PORT_MIN"), u32::from(SNAT_PORT_MIN));
        assert_eq!(define("BERTH_SNAT_PORT_MAX"), u32::from(SNAT_PORT_MAX));
        assert_eq!(define("BERTH_CT_F_CLOSING"), u32::from(CT_F_CLOSING));
    }

    #[test]
    fn layouts_match_the_header() {
        assert_eq!(size_of::<SvcKey>(), 8);
        assert_eq!(size_of::<SvcValue>(), 16);
        assert_eq!(offset_of!(SvcValue, affinity_timeout), 8);
        assert_eq!(size_of::<SlotKey>(), 8);
        assert_eq!(size_of::<SlotValue>(), 4);
        assert_eq!(size_of::<Backend>(), 8);
        assert_eq!(size_of::<MaglevValue>(), 4 * 1021);
        assert_eq!(size_of::<AffinityKey>(), 16);
        assert_eq!(size_of::<AffinityValue>(), 16);
        assert_eq!(size_of::<SkRevnatKey>(), 16);
        assert_eq!(offset_of!(SkRevnatKey, addr), 8);
        assert_eq!(size_of::<SkRevnatValue>(), 12);
        assert_eq!(size_of::<CtKey>(), 16);
        assert_eq!(offset_of!(CtKey, proto), 12);
        assert_eq!(size_of::<CtValue>(), 24);
        assert_eq!(offset_of!(CtValue, last_seen_ns), 16);
        assert_eq!(size_of::<NodeAddrValue>(), 4);
    }

    #[test]
    fn addresses_and_ports_are_network_order() {
        let key = SvcKey::new(Ipv4Addr::new(10, 96, 0, 1), 443, PROTO_TCP);
        let bytes: [u8; 8] = key_bytes(&key);
        assert_eq!(&bytes[..6], &[10, 96, 0, 1, 0x01, 0xbb]);
        assert_eq!(key.ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(key.host_port(), 443);
        let backend = Backend::new(Ipv4Addr::new(10, 244, 0, 7), 8080, PROTO_UDP);
        assert_eq!(
            (backend.ip(), backend.host_port()),
            (Ipv4Addr::new(10, 244, 0, 7), 8080)
        );
    }

    fn key_bytes(key: &SvcKey) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&key.addr.to_ne_bytes());
        out[4..6].copy_from_slice(&key.port.to_ne_bytes());
        out[6] = key.proto;
        out[7] = key.pad;
        out
    }
}
