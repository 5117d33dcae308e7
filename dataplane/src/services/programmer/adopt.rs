//! Taking over the maps a previous agent left pinned, so that a restart rewrites nothing that is
//! still right and connections keep flowing: frontends keep their ids, slots and backends, and
//! the first apply of each service claims its frontends with the usual minimal writes.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{BackendState, FrontendState, Programmer, ServiceTables};
use crate::abi::{self, Backend, BackendKey, SlotKey, SlotValue, SvcKey, SvcValue};
use crate::services::BackendAddr;

/// Every entry of the four service maps, as read from them (order does not matter).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub svc: Vec<(SvcKey, SvcValue)>,
    pub slots: Vec<(SlotKey, SlotValue)>,
    pub backends: Vec<(BackendKey, Backend)>,
    /// The keys (frontend ids) present in `berth_maglev`.
    pub maglev: Vec<u32>,
}

impl<T: ServiceTables> Programmer<T> {
    /// A programmer that owns what `snapshot` says `tables` hold. Nothing is written here;
    /// frontends no service claims, and entries no frontend accounts for, go at
    /// [`Programmer::remove_unclaimed`].
    pub fn adopt(tables: T, snapshot: Snapshot) -> Self {
        Self::adopt_with_limits(tables, snapshot, abi::MAX_SERVICES, abi::MAX_BACKENDS)
    }

    /// As [`Programmer::adopt`] with the id spaces of [`Programmer::with_limits`].
    pub fn adopt_with_limits(
        tables: T,
        snapshot: Snapshot,
        max_frontends: u32,
        max_backends: u32,
    ) -> Self {
        let mut p = Self::with_limits(tables, max_frontends, max_backends);
        let Snapshot {
            mut svc,
            slots,
            mut backends,
            maglev,
        } = snapshot;

        backends.sort_by_key(|(k, _)| k.id);
        for (key, b) in backends {
            // An id outside the range is never handed out again, so it cannot collide; it
            // stays until no slot names it.
            p.backends.ids.claim(key.id);
            let addr = BackendAddr::new(b.ip(), b.host_port(), b.proto);
            p.backends.by_addr.entry(addr).or_insert(key.id);
            p.backends
                .by_id
                .insert(key.id, BackendState { addr, refs: 0 });
        }

        let mut by_frontend: HashMap<u32, BTreeMap<u32, u32>> = HashMap::new();
        for (key, value) in slots {
            by_frontend
                .entry(key.svc_id)
                .or_default()
                .insert(key.slot, value.backend_id);
        }
        let maglev: HashSet<u32> = maglev.into_iter().collect();
        let mut adopted: HashSet<u32> = HashSet::new();
        svc.sort_by_key(|(k, _)| *k);
        for (key, value) in svc {
            let state = if p.svc_ids.claim(value.id) {
                adopted.insert(value.id);
                let mut own = by_frontend.remove(&value.id).unwrap_or_default();
                let mut list = Vec::new();
                while let Some(backend) = own.remove(&(list.len() as u32 + 1)) {
                    list.push(backend);
                }
                p.stray_slots.extend(own.keys().map(|slot| SlotKey {
                    svc_id: value.id,
                    slot: *slot,
                }));
                FrontendState {
                    id: value.id,
                    owner: None,
                    value: Some(value),
                    slots: list,
                    // Unknown input: an empty list never matches, so the first apply rewrites
                    // the table once.
                    maglev: maglev.contains(&value.id).then(Vec::new),
                }
            } else {
                // A duplicate or out-of-range id: the frontend moves to a fresh id on its
                // first apply (slots first, then the svc entry), or goes if unclaimed.
                let Some(id) = p.svc_ids.alloc() else {
                    tracing::warn!(addr = %key.ip(), port = key.host_port(), "services: no id left to adopt frontend");
                    continue;
                };
                FrontendState {
                    id,
                    owner: None,
                    value: Some(value),
                    slots: Vec::new(),
                    maglev: None,
                }
            };
            for backend in &state.slots {
                p.backends.add_ref(*backend);
            }
            p.frontends.insert(key, state);
        }
        // Ids that only strays use stay taken until the strays are gone, so that a new
        // frontend's slots are never among the keys `remove_unclaimed` deletes.
        for (svc_id, rest) in by_frontend {
            if p.svc_ids.claim(svc_id) {
                p.stray_ids.push(svc_id);
            }
            p.stray_slots.extend(rest.keys().map(|slot| SlotKey {
                svc_id,
                slot: *slot,
            }));
        }
        for id in maglev.difference(&adopted) {
            if p.svc_ids.claim(*id) {
                p.stray_ids.push(*id);
            }
            p.stray_maglev.push(*id);
        }
        for (id, b) in &p.backends.by_id {
            if b.refs == 0 {
                p.backends.unreferenced.insert(*id);
            }
        }
        p
    }
}
