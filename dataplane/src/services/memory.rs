//! [`ServiceTables`] in memory, for tests and benchmarks: it counts writes, can fail a chosen
//! write, and (when asked) checks after every single write what the BPF programs rely on, so a
//! test sees any moment at which a concurrent reader could have found a broken frontend.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;

use super::programmer::{ServiceTables, Snapshot, TableError};
use crate::abi::{self, Backend, BackendKey, MaglevValue, SlotKey, SlotValue, SvcKey, SvcValue};

#[derive(Debug, Default)]
pub struct MemoryTables {
    pub svc: HashMap<SvcKey, SvcValue>,
    pub slots: HashMap<SlotKey, SlotValue>,
    pub backends: HashMap<BackendKey, Backend>,
    pub maglev: HashMap<u32, Box<MaglevValue>>,
    /// Successful writes so far.
    pub writes: u64,
    /// Check the invariants after every write (O(maps) each time).
    pub check: bool,
    /// Fail the write with this number (counting from 1 over all attempts), once.
    pub fail_at: Option<u64>,
    attempts: u64,
    violations: Vec<String>,
}

impl MemoryTables {
    /// Tables that check the invariants after every write.
    pub fn checked() -> Self {
        Self {
            check: true,
            ..Self::default()
        }
    }

    /// Invariant violations seen so far, each with the write that caused it.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Every entry, as an agent restarting over pinned maps reads them.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            svc: self.svc.iter().map(|(k, v)| (*k, *v)).collect(),
            slots: self.slots.iter().map(|(k, v)| (*k, *v)).collect(),
            backends: self.backends.iter().map(|(k, v)| (*k, *v)).collect(),
            maglev: self.maglev.keys().copied().collect(),
        }
    }

    /// Returns the write count and starts counting again from 0.
    pub fn take_writes(&mut self) -> u64 {
        std::mem::take(&mut self.writes)
    }

    /// What a reader of the maps may rely on: every frontend's slots `1..=count` exist and
    /// name existing backends; a Maglev frontend with backends has a table naming only
    /// existing backends; frontend ids are unique.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        for (key, value) in &self.svc {
            let fe = format!("{}:{}/{}", key.ip(), key.host_port(), key.proto);
            if value.id == 0 || !ids.insert(value.id) {
                return Err(format!("{fe}: id {} is 0 or not unique", value.id));
            }
            for slot in 1..=u32::from(value.count) {
                let Some(s) = self.slots.get(&SlotKey {
                    svc_id: value.id,
                    slot,
                }) else {
                    return Err(format!(
                        "{fe}: count {} but slot {slot} missing",
                        value.count
                    ));
                };
                if !self.backends.contains_key(&BackendKey { id: s.backend_id }) {
                    return Err(format!(
                        "{fe}: slot {slot} names missing backend {}",
                        s.backend_id
                    ));
                }
            }
            if value.flags & abi::SVC_MAGLEV != 0 && value.count > 0 {
                let Some(table) = self.maglev.get(&value.id) else {
                    return Err(format!("{fe}: maglev table missing"));
                };
                if let Some(id) = table
                    .backend_ids
                    .iter()
                    .find(|id| !self.backends.contains_key(&BackendKey { id: **id }))
                {
                    return Err(format!("{fe}: maglev names missing backend {id}"));
                }
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        what: &dyn fmt::Debug,
        op: &'static str,
        map: &'static str,
        f: impl FnOnce(&mut Self) -> bool,
    ) -> Result<(), TableError> {
        self.attempts += 1;
        if self.fail_at == Some(self.attempts) {
            return Err(TableError {
                op,
                map,
                source: Box::new(io::Error::other("injected failure")),
            });
        }
        if !f(self) {
            return Err(TableError {
                op,
                map,
                source: Box::new(io::Error::from(io::ErrorKind::NotFound)),
            });
        }
        self.writes += 1;
        if self.check {
            if let Err(v) = self.check_invariants() {
                self.violations
                    .push(format!("after {op} {map} {what:?}: {v}"));
            }
        }
        Ok(())
    }
}

impl ServiceTables for MemoryTables {
    fn insert_svc(&mut self, key: &SvcKey, value: &SvcValue) -> Result<(), TableError> {
        self.write(value, "insert", abi::MAP_SVC, |t| {
            t.svc.insert(*key, *value);
            true
        })
    }

    fn remove_svc(&mut self, key: &SvcKey) -> Result<(), TableError> {
        self.write(key, "remove", abi::MAP_SVC, |t| t.svc.remove(key).is_some())
    }

    fn insert_slot(&mut self, key: &SlotKey, value: &SlotValue) -> Result<(), TableError> {
        self.write(key, "insert", abi::MAP_SLOTS, |t| {
            t.slots.insert(*key, *value);
            true
        })
    }

    fn remove_slot(&mut self, key: &SlotKey) -> Result<(), TableError> {
        self.write(key, "remove", abi::MAP_SLOTS, |t| {
            t.slots.remove(key).is_some()
        })
    }

    fn insert_backend(&mut self, key: &BackendKey, value: &Backend) -> Result<(), TableError> {
        self.write(key, "insert", abi::MAP_BACKENDS, |t| {
            t.backends.insert(*key, *value);
            true
        })
    }

    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), TableError> {
        self.write(key, "remove", abi::MAP_BACKENDS, |t| {
            t.backends.remove(key).is_some()
        })
    }

    fn insert_maglev(&mut self, svc_id: u32, value: &MaglevValue) -> Result<(), TableError> {
        self.write(&svc_id, "insert", abi::MAP_MAGLEV, |t| {
            t.maglev.insert(svc_id, Box::new(*value));
            true
        })
    }

    fn remove_maglev(&mut self, svc_id: u32) -> Result<(), TableError> {
        self.write(&svc_id, "remove", abi::MAP_MAGLEV, |t| {
            t.maglev.remove(&svc_id).is_some()
        })
    }
}
