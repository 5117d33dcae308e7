//! Interface names: the host side of a pod's veth is named after the pod, the pod side is `eth0`.

/// Every host-side link Berth creates starts with this; `berth cleanup` removes them all.
pub const HOST_IFNAME_PREFIX: &str = "berth";

/// The pod's interface, as every Kubernetes network plugin names it.
pub const POD_IFNAME: &str = "eth0";

/// The host-side veth of pod `pod_uid`: `berth` + 10 hex digits of a hash of the uid, 15 bytes,
/// the most `IFNAMSIZ` allows.
///
/// The hash is FNV-1a (64 bit), written out here rather than taken from `std`, whose hasher may
/// change between Rust releases: a renamed interface would orphan every running pod's veth after
/// an upgrade. 40 bits make a collision between a node's pods negligible; one is still caught,
/// because each veth carries its pod uid as its alias.
pub fn host_ifname(pod_uid: &str) -> String {
    format!(
        "{HOST_IFNAME_PREFIX}{:010x}",
        fnv1a64(pod_uid.as_bytes()) >> 24
    )
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn names_fit_ifnamsiz_and_are_stable() {
        let uid = "6f1c2a3e-8d4b-4c1e-9f0a-2b3c4d5e6f70";
        let name = host_ifname(uid);
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("berth"));
        assert!(name[5..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(name, host_ifname(uid));
        assert_eq!(host_ifname(""), "berthcbf29ce484");
        assert_ne!(name, host_ifname("6f1c2a3e-8d4b-4c1e-9f0a-2b3c4d5e6f71"));
    }
}
