//! Ethernet/IPv4/UDP frames for the NodePort uplink: built whole (both checksums) for the
//! generator to write into the tap, and checked whole when the far end reads them back.

use std::net::{Ipv4Addr, SocketAddrV4};

pub type Mac = [u8; 6];

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const UDP_LEN: usize = 8;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const PROTO_UDP: u8 = 17;

/// What a UDP frame carries, as far as the bench looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// One's-complement sum of `bytes` as big-endian 16-bit words (odd tail padded), unfolded.
fn sum(bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    let mut total: u32 = chunks
        .by_ref()
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        total += u32::from(*last) << 8;
    }
    total
}

fn fold(mut total: u32) -> u16 {
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u16
}

/// The UDP checksum's sum over the pseudo-header and `udp` (header and payload).
fn udp_sum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(PROTO_UDP) + udp.len() as u32 + sum(udp)
}

impl UdpFrame {
    /// The frame carrying `payload`, TTL 64, with both checksums.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let udp_len = UDP_LEN + payload.len();
        let total = IP_LEN + udp_len;
        let mut frame = Vec::with_capacity(ETH_LEN + total);
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        frame.extend_from_slice(&ETHERTYPE_IPV4);
        let ip_at = frame.len();
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(total as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, PROTO_UDP, 0, 0]); // id, DF, TTL, proto
        frame.extend_from_slice(&self.src.ip().octets());
        frame.extend_from_slice(&self.dst.ip().octets());
        let ip_check = !fold(sum(&frame[ip_at..]));
        frame[ip_at + 10..ip_at + 12].copy_from_slice(&ip_check.to_be_bytes());
        let udp_at = frame.len();
        frame.extend_from_slice(&self.src.port().to_be_bytes());
        frame.extend_from_slice(&self.dst.port().to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(payload);
        let udp_check = match !fold(udp_sum(*self.src.ip(), *self.dst.ip(), &frame[udp_at..])) {
            0 => 0xffff, // 0 would mean "no checksum"
            check => check,
        };
        frame[udp_at + 6..udp_at + 8].copy_from_slice(&udp_check.to_be_bytes());
        frame
    }

    /// The frame's addresses when it is IPv4 (no options) carrying one whole UDP datagram whose
    /// IP and UDP checksums are right (a UDP checksum of 0, "none", is allowed); `None` for
    /// anything else.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let mac = |at: usize| -> Mac { frame[at..at + 6].try_into().expect("six bytes") };
        if frame.len() < ETH_LEN + IP_LEN + UDP_LEN || frame[12..14] != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = &frame[ETH_LEN..ETH_LEN + IP_LEN];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[0] != 0x45 || ip[9] != PROTO_UDP || fold(sum(ip)) != 0xffff {
            return None;
        }
        if total < IP_LEN + UDP_LEN || ETH_LEN + total > frame.len() {
            return None;
        }
        let udp = &frame[ETH_LEN + IP_LEN..ETH_LEN + total];
        if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != udp.len() {
            return None;
        }
        let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
        let (src, dst) = (addr(12), addr(16));
        if udp[6..8] != [0, 0] && fold(udp_sum(src, dst, udp)) != 0xffff {
            return None;
        }
        let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
        Some(Self {
            dst_mac: mac(0),
            src_mac: mac(6),
            src: SocketAddrV4::new(src, port(0)),
            dst: SocketAddrV4::new(dst, port(2)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> UdpFrame {
        UdpFrame {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: "10.211.0.2:20000".parse().expect("address"),
            dst: "10.211.0.1:30053".parse().expect("address"),
        }
    }

    #[test]
    fn a_built_frame_is_ethernets_minimum_and_parses_back() {
        let bytes = frame().build(b"berth-nodeport-pps");
        assert_eq!(bytes.len(), 60);
        assert_eq!(UdpFrame::parse(&bytes), Some(frame()));
    }

    #[test]
    fn the_checksums_are_the_internets() {
        // The IPv4 header of RFC 1071's usual worked example: 45 00 00 73 00 00 40 00 40 11
        // …  c0 a8 00 01 → c0 a8 00 c7 has the checksum b861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(!fold(sum(&header)), 0xb861);
        // An odd-length datagram's last byte is padded on the right.
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn any_rewrite_without_a_checksum_fix_is_refused() {
        let good = frame().build(b"payload");
        let mut bad_ip = good.clone();
        bad_ip[ETH_LEN + 16] ^= 1; // the destination address, IP checksum stale
        assert_eq!(UdpFrame::parse(&bad_ip), None);
        let mut bad_udp = good.clone();
        bad_udp[ETH_LEN + IP_LEN + 2] ^= 1; // the destination port, UDP checksum stale
        assert_eq!(UdpFrame::parse(&bad_udp), None);
        let mut no_udp_check = good.clone();
        no_udp_check[ETH_LEN + IP_LEN + 6..ETH_LEN + IP_LEN + 8].fill(0);
        assert!(UdpFrame::parse(&no_udp_check).is_some());
    }

    #[test]
    fn what_is_not_a_whole_ipv4_udp_datagram_is_refused() {
        let good = frame().build(b"payload");
        assert_eq!(UdpFrame::parse(&good[..40]), None);
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(UdpFrame::parse(&arp), None);
        let mut long = good.clone();
        long[ETH_LEN + 3] += 10; // total length beyond the frame, header checksum made right
        long[ETH_LEN + 10..ETH_LEN + 12].fill(0);
        let check = !fold(sum(&long[ETH_LEN..ETH_LEN + IP_LEN]));
        long[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&check.to_be_bytes());
        assert_eq!(UdpFrame::parse(&long), None);
    }
}
