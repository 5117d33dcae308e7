//! The services every mechanism is loaded with: the measured one (index 0, its endpoints the
//! real backends) and fillers with distinct VIPs and two endpoints each that no packet reaches.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::netns::{backend_addr, BACKEND_PORT};

pub const NAMESPACE: &str = "bench";
pub const SERVICE_PORT: u16 = 80;
/// Room for the largest size plus the services added on top of it (VIPs 10.96.0.1 upwards,
/// filler endpoints 10.220.0.0 upwards, two each).
pub const MAX_SERVICES: usize = 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    pub index: usize,
    pub vip: Ipv4Addr,
    pub endpoints: Vec<SocketAddrV4>,
}

impl Svc {
    pub fn name(&self) -> String {
        format!("svc-{}", self.index)
    }

    /// kube-proxy's service port name, `namespace/name:port`.
    pub fn port_name(&self) -> String {
        format!("{NAMESPACE}/{}:http", self.name())
    }
}

fn offset(base: Ipv4Addr, by: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + by as u32)
}

/// Service `index`; the measured one (0) forwards to the `backends` real servers.
pub fn service(index: usize, backends: usize) -> Svc {
    let endpoints = if index == 0 {
        (0..backends)
            .map(|i| SocketAddrV4::new(backend_addr(i), BACKEND_PORT))
            .collect()
    } else {
        let base = Ipv4Addr::new(10, 220, 0, 0);
        (0..2)
            .map(|e| SocketAddrV4::new(offset(base, 2 * index + e), BACKEND_PORT))
            .collect()
    };
    Svc {
        index,
        vip: offset(Ipv4Addr::new(10, 96, 0, 1), index),
        endpoints,
    }
}

/// `count` services in the order rule lists hold them: the fillers, with the measured service
/// in the middle, so a linear walk (iptables' KUBE-SERVICES) passes half the others before it —
/// the expected position of a service in kube-proxy's map-ordered output.
pub fn services(count: usize, backends: usize) -> Vec<Svc> {
    let mut out: Vec<Svc> = (1..count).map(|i| service(i, backends)).collect();
    out.insert((count - 1) / 2, service(0, backends));
    out
}

/// The order in which round `round` measures `paths`: as given in even rounds, reversed in odd
/// ones, so that no path always runs right after the same other one (whatever the one before
/// leaves behind — warm caches, a busier machine — falls on each side of a pair alike).
pub fn round_order<T: Copy>(paths: &[T], round: usize) -> Vec<T> {
    let mut order = paths.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_rounds_run_the_paths_backwards() {
        assert_eq!(round_order(&[1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(round_order(&[1, 2, 3], 1), [3, 2, 1]);
        assert_eq!(round_order(&[1, 2, 3], 4), [1, 2, 3]);
    }

    #[test]
    fn the_measured_service_sits_in_the_middle_and_vips_are_distinct() {
        let all = services(5, 3);
        assert_eq!(all.len(), 5);
        assert_eq!(all[2].index, 0);
        assert_eq!(all[2].endpoints.len(), 3);
        assert_eq!(all[2].vip, Ipv4Addr::new(10, 96, 0, 1));
        let mut vips: Vec<_> = all.iter().map(|s| s.vip).collect();
        vips.sort();
        vips.dedup();
        assert_eq!(vips.len(), 5);
        assert_eq!(services(1, 2)[0].index, 0);
        let last = service(MAX_SERVICES, 1);
        assert!(last.vip < Ipv4Addr::new(10, 97, 0, 0), "{}", last.vip);
        assert!(last.endpoints[1].ip() < &Ipv4Addr::new(10, 222, 0, 0));
    }
}
