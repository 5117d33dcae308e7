//! The programmed state of the service maps and the writes that move one service to its new
//! desired frontends.
//!
//! The in-memory state mirrors the maps write by write: each successful write updates it at
//! once, so a failed write leaves a state that still describes the maps exactly, and applying
//! the same service again finishes the job. Writes are ordered so that the BPF programs, which
//! read the maps concurrently, only ever see a frontend whose slots `1..=count` exist and point
//! at existing backends:
//! 1. new backends are inserted before any slot refers to them;
//! 2. changed slots below the old count are overwritten in place (a freed slot takes the last
//!    slot's backend, so the list stays dense), new slots are appended past the count;
//! 3. the Maglev table and then the frontend's count are written;
//! 4. slots past the new count are deleted, and backends no slot refers to any more go last.
//!
//! A frontend whose service still exists but has no endpoints stays with count 0: the programs
//! refuse its connections at once instead of letting them time out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::error::Error;

use thiserror::Error;

use self::ids::Ids;
use super::{maglev, BackendAddr, Frontend, ServiceKey};
use crate::abi::{self, Backend, BackendKey, MaglevValue, SlotKey, SlotValue, SvcKey, SvcValue};

/// A failed map write, as a [`ServiceTables`] implementation reports it.
#[derive(Debug, Error)]
#[error("{op} in map {map}")]
pub struct TableError {
    /// "insert" or "remove".
    pub op: &'static str,
    /// The map's name, one of the `abi::MAP_*` constants.
    pub map: &'static str,
    #[source]
    pub source: Box<dyn Error + Send + Sync>,
}

#[derive(Debug, Error)]
pub enum ProgramError {
    #[error("programming service {service}")]
    Write {
        service: ServiceKey,
        #[source]
        source: TableError,
    },
    #[error("removing entries no service claimed")]
    Cleanup {
        #[source]
        source: TableError,
    },
    #[error("no free {kind} id for service {service}: all {max} are in use")]
    IdsExhausted {
        service: ServiceKey,
        kind: &'static str,
        max: u32,
    },
}

/// The four service maps. `insert_*` creates or overwrites (BPF_ANY); `remove_*` of an absent
/// key may fail, the programmer never asks for one.
pub trait ServiceTables {
    fn insert_svc(&mut self, key: &SvcKey, value: &SvcValue) -> Result<(), TableError>;
    fn remove_svc(&mut self, key: &SvcKey) -> Result<(), TableError>;
    fn insert_slot(&mut self, key: &SlotKey, value: &SlotValue) -> Result<(), TableError>;
    fn remove_slot(&mut self, key: &SlotKey) -> Result<(), TableError>;
    fn insert_backend(&mut self, key: &BackendKey, value: &Backend) -> Result<(), TableError>;
    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), TableError>;
    /// `svc_id` is the frontend's id (`SvcValue::id`), the key of `berth_maglev`.
    fn insert_maglev(&mut self, svc_id: u32, value: &MaglevValue) -> Result<(), TableError>;
    fn remove_maglev(&mut self, svc_id: u32) -> Result<(), TableError>;
}

/// What is programmed: counts of map entries the programmer owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub services: usize,
    pub frontends: usize,
    pub backends: usize,
}

#[derive(Debug)]
struct FrontendState {
    id: u32,
    /// `None` for a frontend adopted from the maps that no service has claimed yet.
    owner: Option<ServiceKey>,
    /// As written to `berth_svc`; `None` until the first write.
    value: Option<SvcValue>,
    /// The backend id in slot `i + 1`, for every slot written.
    slots: Vec<u32>,
    /// The sorted backend ids the written Maglev table was built from.
    maglev: Option<Vec<u32>>,
}

#[derive(Debug)]
struct BackendState {
    addr: BackendAddr,
    /// Slots (over all frontends) holding this backend.
    refs: u32,
}

/// The backends in `berth_backends`, with their slot reference counts.
#[derive(Debug)]
struct Backends {
    by_id: HashMap<u32, BackendState>,
    by_addr: HashMap<BackendAddr, u32>,
    /// In the map but in no slot: removed at the end of an apply unless a slot takes them.
    unreferenced: BTreeSet<u32>,
    ids: Ids,
}

impl Backends {
    fn add_ref(&mut self, id: u32) {
        if let Some(b) = self.by_id.get_mut(&id) {
            b.refs += 1;
            self.unreferenced.remove(&id);
        }
    }

    fn drop_ref(&mut self, id: u32) {
        if let Some(b) = self.by_id.get_mut(&id) {
            b.refs = b.refs.saturating_sub(1);
            if b.refs == 0 {
                self.unreferenced.insert(id);
            }
        }
    }
}

/// Programs services into [`ServiceTables`] incrementally; see the module docs for the order
/// of writes.
#[derive(Debug)]
pub struct Programmer<T> {
    tables: T,
    services: HashMap<ServiceKey, BTreeSet<SvcKey>>,
    frontends: HashMap<SvcKey, FrontendState>,
    backends: Backends,
    svc_ids: Ids,
    /// Frontends another service already owned when a service asked for them.
    contested: BTreeMap<SvcKey, BTreeSet<ServiceKey>>,
    /// Services that lost a contest for a frontend that has since been freed.
    released: BTreeSet<ServiceKey>,
    /// Adopted entries no frontend accounts for, removed by `remove_unclaimed`.
    stray_slots: Vec<SlotKey>,
    stray_maglev: Vec<u32>,
    /// Frontend ids held only by strays.
    stray_ids: Vec<u32>,
}

impl<T: ServiceTables> Programmer<T> {
    /// A programmer that assumes `tables` hold none of its entries.
    pub fn new(tables: T) -> Self {
        Self::with_limits(tables, abi::MAX_SERVICES, abi::MAX_BACKENDS)
    }

    /// As [`Programmer::new`] with smaller id spaces (frontend ids, backend ids).
    pub fn with_limits(tables: T, max_frontends: u32, max_backends: u32) -> Self {
        Self {
            tables,
            services: HashMap::new(),
            frontends: HashMap::new(),
            backends: Backends {
                by_id: HashMap::new(),
                by_addr: HashMap::new(),
                unreferenced: BTreeSet::new(),
                ids: Ids::new(max_backends),
            },
            svc_ids: Ids::new(max_frontends),
            contested: BTreeMap::new(),
            released: BTreeSet::new(),
            stray_slots: Vec::new(),
            stray_maglev: Vec::new(),
            stray_ids: Vec::new(),
        }
    }

    pub fn tables(&self) -> &T {
        &self.tables
    }

    pub fn tables_mut(&mut self) -> &mut T {
        &mut self.tables
    }

    pub fn into_tables(self) -> T {
        self.tables
    }

    pub fn stats(&self) -> Stats {
        Stats {
            services: self.services.len(),
            frontends: self.frontends.len(),
            backends: self.backends.by_id.len(),
        }
    }

    /// The services that have programmed state.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// The frontend id programmed for `key`, if any.
    pub fn frontend_id(&self, key: &SvcKey) -> Option<u32> {
        self.frontends.get(key).map(|f| f.id)
    }

    /// Services that were refused a frontend because another service held it, and whose
    /// frontend is free now: apply them again.
    pub fn take_released(&mut self) -> Vec<ServiceKey> {
        std::mem::take(&mut self.released).into_iter().collect()
    }

    /// Makes the maps hold exactly `desired` for `service`: new frontends are added, changed
    /// ones rewritten with the fewest writes, and frontends it no longer has removed. A
    /// frontend owned by another service is skipped (the first owner keeps it).
    pub fn apply(
        &mut self,
        service: &ServiceKey,
        desired: &[Frontend],
    ) -> Result<(), ProgramError> {
        let mut wanted: BTreeSet<SvcKey> = BTreeSet::new();
        for fe in desired {
            if !wanted.insert(fe.key) {
                continue;
            }
            if let Some(state) = self.frontends.get_mut(&fe.key) {
                match &state.owner {
                    Some(owner) if owner != service => {
                        tracing::warn!(service = %service, owner = %owner, addr = %fe.key.ip(), port = fe.key.host_port(), "services: frontend already belongs to another service");
                        self.contested
                            .entry(fe.key)
                            .or_default()
                            .insert(service.clone());
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        state.owner = Some(service.clone());
                        self.services
                            .entry(service.clone())
                            .or_default()
                            .insert(fe.key);
                    }
                }
            }
            self.sync_frontend(service, fe)?;
        }
        let owned: Vec<SvcKey> = self
            .services
            .get(service)
            .map(|s| s.iter().filter(|k| !wanted.contains(k)).copied().collect())
            .unwrap_or_default();
        for key in owned {
            self.remove_frontend(&key)
                .map_err(Self::write_err(service))?;
        }
        self.flush_backends().map_err(Self::write_err(service))
    }

    /// Removes what was adopted from the maps but no service claimed: call it once every
    /// service has been applied after [`Programmer::adopt`].
    pub fn remove_unclaimed(&mut self) -> Result<(), ProgramError> {
        let cleanup = |source| ProgramError::Cleanup { source };
        let unclaimed: Vec<SvcKey> = self
            .frontends
            .iter()
            .filter(|(_, f)| f.owner.is_none())
            .map(|(k, _)| *k)
            .collect();
        for key in unclaimed {
            self.remove_frontend(&key).map_err(cleanup)?;
        }
        // A stray slot past an adopted frontend's list may have become one of its slots since.
        let live: HashMap<u32, usize> = self
            .frontends
            .values()
            .map(|f| (f.id, f.slots.len()))
            .collect();
        while let Some(key) = self.stray_slots.last() {
            // Strays are garbage no reader follows: a failure to delete one is not worth
            // failing (or retrying) the cleanup for.
            if live
                .get(&key.svc_id)
                .is_none_or(|len| key.slot as usize > *len)
            {
                if let Err(e) = self.tables.remove_slot(key) {
                    tracing::debug!(error = %e, ?key, "services: removing stray slot");
                }
            }
            self.stray_slots.pop();
        }
        for id in std::mem::take(&mut self.stray_maglev) {
            if let Err(e) = self.tables.remove_maglev(id) {
                tracing::debug!(error = %e, id, "services: removing stray maglev table");
            }
        }
        for id in std::mem::take(&mut self.stray_ids) {
            self.svc_ids.free(id);
        }
        self.flush_backends().map_err(cleanup)
    }

    /// Removes everything `service` programmed.
    pub fn remove(&mut self, service: &ServiceKey) -> Result<(), ProgramError> {
        for waiting in self.contested.values_mut() {
            waiting.remove(service);
        }
        self.released.remove(service);
        self.apply(service, &[])
    }

    fn write_err(service: &ServiceKey) -> impl FnOnce(TableError) -> ProgramError + '_ {
        move |source| ProgramError::Write {
            service: service.clone(),
            source,
        }
    }

    /// The backend's id, inserting it into `berth_backends` first if it is new.
    fn ensure_backend(
        &mut self,
        service: &ServiceKey,
        addr: BackendAddr,
    ) -> Result<u32, ProgramError> {
        if let Some(id) = self.backends.by_addr.get(&addr) {
            return Ok(*id);
        }
        let id = self
            .backends
            .ids
            .alloc()
            .ok_or_else(|| ProgramError::IdsExhausted {
                service: service.clone(),
                kind: "backend",
                max: self.backends.ids.max,
            })?;
        if let Err(e) = self
            .tables
            .insert_backend(&BackendKey { id }, &addr.to_abi())
        {
            self.backends.ids.free(id);
            return Err(Self::write_err(service)(e));
        }
        self.backends.by_addr.insert(addr, id);
        self.backends
            .by_id
            .insert(id, BackendState { addr, refs: 0 });
        self.backends.unreferenced.insert(id);
        Ok(id)
    }

    fn sync_frontend(&mut self, service: &ServiceKey, fe: &Frontend) -> Result<(), ProgramError> {
        // count is a u16: a frontend holds at most 65535 backends.
        let mut want = Vec::with_capacity(fe.backends.len());
        let mut seen = HashSet::with_capacity(fe.backends.len());
        for addr in &fe.backends {
            if want.len() == usize::from(u16::MAX) {
                break;
            }
            if seen.insert(*addr) {
                want.push(self.ensure_backend(service, *addr)?);
            }
        }
        if !self.frontends.contains_key(&fe.key) {
            let id = self
                .svc_ids
                .alloc()
                .ok_or_else(|| ProgramError::IdsExhausted {
                    service: service.clone(),
                    kind: "frontend",
                    max: self.svc_ids.max,
                })?;
            let state = FrontendState {
                id,
                owner: Some(service.clone()),
                value: None,
                slots: Vec::new(),
                maglev: None,
            };
            self.frontends.insert(fe.key, state);
            self.services
                .entry(service.clone())
                .or_default()
                .insert(fe.key);
        }
        let Some(state) = self.frontends.get_mut(&fe.key) else {
            return Ok(());
        };
        let target = target_slots(&state.slots, &want);
        let id = state.id;

        let old_len = state.slots.len();
        for (i, backend) in target.iter().enumerate() {
            if state.slots.get(i) == Some(backend) {
                continue;
            }
            let key = SlotKey {
                svc_id: id,
                slot: i as u32 + 1,
            };
            let value = SlotValue {
                backend_id: *backend,
            };
            self.tables
                .insert_slot(&key, &value)
                .map_err(Self::write_err(service))?;
            self.backends.add_ref(*backend);
            if i < old_len {
                self.backends.drop_ref(state.slots[i]);
                state.slots[i] = *backend;
            } else {
                state.slots.push(*backend);
            }
        }

        // A table exists only while the frontend has backends: it is written before the count
        // goes up from 0 and removed after the count goes down to 0, so a reader never finds
        // a Maglev frontend with backends but no table (or a table of zeros).
        let maglev = fe.flags & abi::SVC_MAGLEV != 0 && !want.is_empty();
        if maglev {
            let mut ids = want.clone();
            ids.sort_unstable();
            if state.maglev.as_ref() != Some(&ids) {
                let members: Vec<(BackendAddr, u32)> = ids
                    .iter()
                    .filter_map(|id| self.backends.by_id.get(id).map(|b| (b.addr, *id)))
                    .collect();
                let mut value = Box::new(MaglevValue {
                    backend_ids: [0; abi::MAGLEV_SIZE],
                });
                value
                    .backend_ids
                    .copy_from_slice(&maglev::lookup_table(&members));
                self.tables
                    .insert_maglev(id, &value)
                    .map_err(Self::write_err(service))?;
                state.maglev = Some(ids);
            }
        }

        let value = SvcValue {
            id,
            count: target.len() as u16,
            flags: fe.flags,
            affinity_timeout: fe.affinity_timeout,
            pad: 0,
        };
        if state.value != Some(value) {
            self.tables
                .insert_svc(&fe.key, &value)
                .map_err(Self::write_err(service))?;
            state.value = Some(value);
        }

        if !maglev && state.maglev.is_some() {
            self.tables
                .remove_maglev(id)
                .map_err(Self::write_err(service))?;
            state.maglev = None;
        }
        while state.slots.len() > target.len() {
            let key = SlotKey {
                svc_id: id,
                slot: state.slots.len() as u32,
            };
            self.tables
                .remove_slot(&key)
                .map_err(Self::write_err(service))?;
            if let Some(backend) = state.slots.pop() {
                self.backends.drop_ref(backend);
            }
        }
        Ok(())
    }

    fn remove_frontend(&mut self, key: &SvcKey) -> Result<(), TableError> {
        let Some(state) = self.frontends.get_mut(key) else {
            return Ok(());
        };
        if state.value.is_some() {
            self.tables.remove_svc(key)?;
            state.value = None;
        }
        while let Some(backend) = state.slots.last().copied() {
            let slot = SlotKey {
                svc_id: state.id,
                slot: state.slots.len() as u32,
            };
            self.tables.remove_slot(&slot)?;
            state.slots.pop();
            self.backends.drop_ref(backend);
        }
        if state.maglev.is_some() {
            self.tables.remove_maglev(state.id)?;
            state.maglev = None;
        }
        self.svc_ids.free(state.id);
        let owner = self.frontends.remove(key).and_then(|f| f.owner);
        if let Some(service) = owner {
            if let Some(owned) = self.services.get_mut(&service) {
                owned.remove(key);
                if owned.is_empty() {
                    self.services.remove(&service);
                }
            }
        }
        if let Some(waiting) = self.contested.remove(key) {
            self.released.extend(waiting);
        }
        Ok(())
    }

    fn flush_backends(&mut self) -> Result<(), TableError> {
        while let Some(id) = self.backends.unreferenced.first().copied() {
            self.tables.remove_backend(&BackendKey { id })?;
            self.backends.unreferenced.remove(&id);
            if let Some(b) = self.backends.by_id.remove(&id) {
                // Adopted maps may hold two ids for one address; only the first is indexed.
                if self.backends.by_addr.get(&b.addr) == Some(&id) {
                    self.backends.by_addr.remove(&b.addr);
                }
            }
            self.backends.ids.free(id);
        }
        Ok(())
    }
}

/// The slot list that holds exactly `want` (as a set) with the fewest slot writes from `old`:
/// slots of backends that stay keep their place, a freed slot first takes a new backend, new
/// backends beyond that are appended, and leftover holes take the last slots' backends.
fn target_slots(old: &[u32], want: &[u32]) -> Vec<u32> {
    let want_set: HashSet<u32> = want.iter().copied().collect();
    let mut kept: HashSet<u32> = HashSet::with_capacity(old.len());
    let mut holes = Vec::new();
    for (i, id) in old.iter().enumerate() {
        // A duplicate (left by an interrupted compaction) is a hole too.
        if !want_set.contains(id) || !kept.insert(*id) {
            holes.push(i);
        }
    }
    let mut target = old.to_vec();
    let mut added = want.iter().filter(|id| !kept.contains(id));
    let mut left = Vec::new();
    for hole in holes {
        match added.next() {
            Some(id) => target[hole] = *id,
            None => left.push(hole),
        }
    }
    target.extend(added);
    if left.is_empty() {
        return target;
    }
    let new_len = target.len() - left.len();
    let holes: HashSet<usize> = left.iter().copied().collect();
    let mut donors = (new_len..target.len()).rev().filter(|p| !holes.contains(p));
    for hole in left.into_iter().filter(|h| *h < new_len) {
        if let Some(donor) = donors.next() {
            target[hole] = target[donor];
        }
    }
    target.truncate(new_len);
    target
}

mod adopt;
mod ids;

pub use adopt::Snapshot;

#[cfg(test)]
#[path = "programmer_tests.rs"]
mod tests;
