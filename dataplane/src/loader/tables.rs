//! The service maps as the [`ServiceTables`] the services programmer writes, opened from their
//! pins so the programmer owns them apart from the loaded programs.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use aya::Pod;

use super::{DatapathError, LbMap};
use crate::abi::{
    Backend, BackendKey, MaglevValue, SlotKey, SlotValue, SvcKey, SvcValue, MAP_BACKENDS,
    MAP_MAGLEV, MAP_SLOTS, MAP_SVC,
};
use crate::services::{ServiceTables, Snapshot, TableError};

/// `berth_svc`, `berth_slots`, `berth_backends` and `berth_maglev`, opened from `pin_dir`.
pub struct ServiceMaps {
    svc: LbMap<SvcKey, SvcValue>,
    slots: LbMap<SlotKey, SlotValue>,
    backends: LbMap<BackendKey, Backend>,
    maglev: LbMap<u32, MaglevValue>,
}

impl ServiceMaps {
    /// Opens the maps a [`super::Datapath`] pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, DatapathError> {
        Ok(Self {
            svc: pinned(pin_dir, MAP_SVC)?,
            slots: pinned(pin_dir, MAP_SLOTS)?,
            backends: pinned(pin_dir, MAP_BACKENDS)?,
            maglev: pinned(pin_dir, MAP_MAGLEV)?,
        })
    }

    /// Everything the maps hold, for [`crate::services::Programmer::adopt`] after a restart.
    pub fn snapshot(&self) -> Result<Snapshot, DatapathError> {
        Ok(Snapshot {
            svc: self.svc.entries()?,
            slots: self.slots.entries()?,
            backends: self.backends.entries()?,
            maglev: self
                .maglev
                .entries()?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
        })
    }
}

fn pinned<K: Pod, V: Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<LbMap<K, V>, DatapathError> {
    let open = |source| DatapathError::Map {
        op: "open pinned",
        name,
        source,
    };
    let data = MapData::from_pin(pin_dir.join(name)).map_err(open)?;
    let map = HashMap::try_from(Map::from_map_data(data).map_err(open)?).map_err(open)?;
    Ok(LbMap::new(name, map))
}

fn table_error(op: &'static str, map: &'static str) -> impl FnOnce(DatapathError) -> TableError {
    move |e| TableError {
        op,
        map,
        source: Box::new(e),
    }
}

impl ServiceTables for ServiceMaps {
    fn insert_svc(&mut self, key: &SvcKey, value: &SvcValue) -> Result<(), TableError> {
        self.svc
            .insert(key, value)
            .map_err(table_error("insert", MAP_SVC))
    }
    fn remove_svc(&mut self, key: &SvcKey) -> Result<(), TableError> {
        self.svc
            .remove(key)
            .map(drop)
            .map_err(table_error("remove", MAP_SVC))
    }
    fn insert_slot(&mut self, key: &SlotKey, value: &SlotValue) -> Result<(), TableError> {
        self.slots
            .insert(key, value)
            .map_err(table_error("insert", MAP_SLOTS))
    }
    fn remove_slot(&mut self, key: &SlotKey) -> Result<(), TableError> {
        self.slots
            .remove(key)
            .map(drop)
            .map_err(table_error("remove", MAP_SLOTS))
    }
    fn insert_backend(&mut self, key: &BackendKey, value: &Backend) -> Result<(), TableError> {
        self.backends
            .insert(key, value)
            .map_err(table_error("insert", MAP_BACKENDS))
    }
    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), TableError> {
        self.backends
            .remove(key)
            .map(drop)
            .map_err(table_error("remove", MAP_BACKENDS))
    }
    fn insert_maglev(&mut self, svc_id: u32, value: &MaglevValue) -> Result<(), TableError> {
        self.maglev
            .insert(&svc_id, value)
            .map_err(table_error("insert", MAP_MAGLEV))
    }
    fn remove_maglev(&mut self, svc_id: u32) -> Result<(), TableError> {
        self.maglev
            .remove(&svc_id)
            .map(drop)
            .map_err(table_error("remove", MAP_MAGLEV))
    }
}
