//! The pods' MTU. Pods are routed, not encapsulated, so a pod packet is exactly as large on the
//! uplink as in the pod: pods may use the uplink's whole MTU.

/// The MTU for pod veths on a node whose uplink (the link holding the node's InternalIP) has
/// `uplink_mtu`; `default` (the configured MTU) when the uplink's is unknown or not a valid MTU.
pub fn pod_mtu(uplink_mtu: Option<u32>, default: u32) -> u32 {
    match uplink_mtu {
        Some(mtu) if (68..=65535).contains(&mtu) => mtu,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_uplink() {
        assert_eq!(pod_mtu(Some(9001), 1500), 9001);
        assert_eq!(pod_mtu(Some(1450), 1500), 1450);
        assert_eq!(pod_mtu(None, 1500), 1500);
        assert_eq!(pod_mtu(Some(0), 1400), 1400);
        // Loopback's MTU, when the node IP sits on lo.
        assert_eq!(pod_mtu(Some(65536), 1400), 1400);
    }
}
