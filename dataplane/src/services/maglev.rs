//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4) for NodePort frontends: a lookup table of
//! [`abi::MAGLEV_SIZE`] entries (prime) filled from per-backend permutations, so every node
//! sends a flow to the same backend and a backend change moves few other flows.
//!
//! The permutations come from the backend's identity (address, port, protocol), never from its
//! id: ids are local to one agent, the identity is the same on every node.

use super::BackendAddr;
use crate::abi;

const OFFSET_SEED: u64 = 0x6265_7274_685f_6f66; // "berth_of"
const SKIP_SEED: u64 = 0x6265_7274_685f_736b; // "berth_sk"

/// The lookup table for `backends` (identity and the id to store), [`abi::MAGLEV_SIZE`] ids
/// long; all zeros when there are no backends. The result depends only on the set of
/// backends, not on their order.
pub fn lookup_table(backends: &[(BackendAddr, u32)]) -> Vec<u32> {
    fill(backends, abi::MAGLEV_SIZE)
}

/// The permutation fill for a table of `size` entries; `size` must be prime so that every
/// `skip` in 1..size visits every entry.
fn fill(backends: &[(BackendAddr, u32)], size: usize) -> Vec<u32> {
    let mut table = vec![0u32; size];
    if backends.is_empty() || size == 0 {
        return table;
    }
    let mut sorted: Vec<(BackendAddr, u32)> = backends.to_vec();
    sorted.sort_unstable();
    sorted.dedup_by_key(|(b, _)| *b);
    let m = size as u64;
    // (offset, skip, next) per backend: the permutation is offset + j*skip mod M.
    let mut perms: Vec<(u64, u64, u64)> = sorted
        .iter()
        .map(|(b, _)| {
            let id = identity(b);
            let offset = hash(&id, OFFSET_SEED) % m;
            let skip = hash(&id, SKIP_SEED) % (m - 1).max(1) + 1;
            (offset, skip, 0)
        })
        .collect();
    let mut filled = vec![false; size];
    let mut n = 0;
    'outer: loop {
        for (i, (offset, skip, next)) in perms.iter_mut().enumerate() {
            let mut c = ((*offset + *next * *skip) % m) as usize;
            while filled[c] {
                *next += 1;
                c = ((*offset + *next * *skip) % m) as usize;
            }
            filled[c] = true;
            table[c] = sorted[i].1;
            *next += 1;
            n += 1;
            if n == size {
                break 'outer;
            }
        }
    }
    table
}

fn identity(b: &BackendAddr) -> [u8; 7] {
    let a = b.addr.octets();
    let p = b.port.to_be_bytes();
    [a[0], a[1], a[2], a[3], p[0], p[1], b.proto]
}

/// FNV-1a with a seed, finished with splitmix64's mixer so that the two seeds give
/// independent-looking values. Fixed here (not std's hasher, whose algorithm may change) so
/// that every node and every release computes the same table.
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn backends(n: u32) -> Vec<(BackendAddr, u32)> {
        (1..=n)
            .map(|i| {
                let addr = Ipv4Addr::new(10, 244, (i / 200) as u8, (i % 200) as u8 + 1);
                (BackendAddr::new(addr, 8080, abi::PROTO_TCP), i)
            })
            .collect()
    }

    fn counts(table: &[u32]) -> HashMap<u32, usize> {
        let mut out = HashMap::new();
        for id in table {
            *out.entry(*id).or_default() += 1;
        }
        out
    }

    #[test]
    fn every_entry_is_filled_and_backends_are_balanced() {
        for n in [1, 2, 3, 7, 10, 100] {
            let table = lookup_table(&backends(n));
            assert_eq!(table.len(), abi::MAGLEV_SIZE);
            let counts = counts(&table);
            assert!(!counts.contains_key(&0), "n={n}: unfilled entry");
            assert_eq!(
                counts.len(),
                n as usize,
                "n={n}: every backend gets entries"
            );
            // Round-robin filling: shares differ by at most one entry.
            let (min, max) = (
                counts.values().min().expect("min"),
                counts.values().max().expect("max"),
            );
            assert!(max - min <= 1, "n={n}: shares {min}..{max}");
        }
    }

    #[test]
    fn no_backends_means_zeros() {
        assert!(lookup_table(&[]).iter().all(|id| *id == 0));
    }

    #[test]
    fn table_ignores_input_order() {
        let mut b = backends(10);
        let table = lookup_table(&b);
        b.reverse();
        assert_eq!(lookup_table(&b), table);
    }

    #[test]
    fn removing_one_backend_moves_few_other_entries() {
        let all = backends(10);
        let before = lookup_table(&all);
        let removed = 4u32;
        let rest: Vec<_> = all
            .iter()
            .copied()
            .filter(|(_, id)| *id != removed)
            .collect();
        let after = lookup_table(&rest);
        let mut moved = 0;
        for (old, new) in before.iter().zip(&after) {
            if *old != removed && old != new {
                moved += 1;
            }
        }
        // The paper measures a few percent of the table for this case; a modulo hash would
        // move ~90%.
        eprintln!("maglev: {moved} of {} entries moved", abi::MAGLEV_SIZE);
        assert!(moved * 100 < abi::MAGLEV_SIZE * 10, "{moved} entries moved");
        // The removed backend's entries went to the others, evenly.
        let counts = counts(&after);
        assert_eq!(counts.len(), 9);
        assert!(!counts.contains_key(&removed));
    }

    #[test]
    fn hashes_are_independent() {
        let b = BackendAddr::new(Ipv4Addr::new(10, 0, 0, 1), 80, abi::PROTO_TCP);
        let id = identity(&b);
        assert_ne!(hash(&id, OFFSET_SEED), hash(&id, SKIP_SEED));
    }
}
