//! Typed handles on the pinned Service maps, in the ABI's types.

use aya::maps::{HashMap, Map, MapData, MapError};
use aya::{Ebpf, Pod};

use super::DatapathError;
use crate::abi::{
    AffinityKey, AffinityValue, Backend, BackendKey, CtKey, CtValue, MaglevValue, NodeAddrKey,
    NodeAddrValue, SkRevnatKey, SkRevnatValue, SlotKey, SlotValue, SvcKey, SvcValue, MAP_AFFINITY,
    MAP_BACKENDS, MAP_CT, MAP_MAGLEV, MAP_NODE_ADDRS, MAP_SK_REVNAT, MAP_SLOTS, MAP_SVC,
};

use super::xdp_devs::XdpDevs;

/// One BPF hash (or LRU hash) map with ABI keys and values.
pub struct LbMap<K, V> {
    name: &'static str,
    map: HashMap<MapData, K, V>,
}

impl<K: Pod, V: Pod> LbMap<K, V> {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, DatapathError> {
        let map: Map = ebpf
            .take_map(name)
            .ok_or(DatapathError::MissingMap { name })?;
        let map = HashMap::try_from(map).map_err(|source| DatapathError::Map {
            op: "open",
            name,
            source,
        })?;
        Ok(Self::new(name, map))
    }

    pub(super) fn new(name: &'static str, map: HashMap<MapData, K, V>) -> Self {
        Self { name, map }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, DatapathError> {
        match self.map.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(self.error("lookup", source)),
        }
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, key: &K, value: &V) -> Result<(), DatapathError> {
        self.map
            .insert(key, value, 0)
            .map_err(|source| self.error("update", source))
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &K) -> Result<bool, DatapathError> {
        match self.map.remove(key) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(self.error("delete", source)),
        }
    }

    /// Every entry. Concurrent writers (the programs, for LRU maps) may add or evict entries
    /// while this walks; an entry deleted under it is skipped, not an error.
    pub fn entries(&self) -> Result<Vec<(K, V)>, DatapathError> {
        let mut out = Vec::new();
        for item in self.map.iter() {
            match item {
                Ok(entry) => out.push(entry),
                Err(MapError::KeyNotFound) => continue,
                Err(source) => return Err(self.error("iterate", source)),
            }
        }
        Ok(out)
    }

    fn error(&self, op: &'static str, source: MapError) -> DatapathError {
        DatapathError::Map {
            op,
            name: self.name,
            source,
        }
    }
}

/// The maps the agent writes (`svc`, `slots`, `backends`, `maglev`, `node_addrs`, `xdp_devs`)
/// and the ones only the programs write, for diagnostics (`affinity`, `sk_revnat`, `ct`).
pub struct LbMaps {
    pub svc: LbMap<SvcKey, SvcValue>,
    pub slots: LbMap<SlotKey, SlotValue>,
    pub backends: LbMap<BackendKey, Backend>,
    pub maglev: LbMap<u32, MaglevValue>,
    pub node_addrs: LbMap<NodeAddrKey, NodeAddrValue>,
    pub xdp_devs: XdpDevs,
    pub affinity: LbMap<AffinityKey, AffinityValue>,
    pub sk_revnat: LbMap<SkRevnatKey, SkRevnatValue>,
    pub ct: LbMap<CtKey, CtValue>,
}

impl LbMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        Ok(Self {
            svc: LbMap::take(ebpf, MAP_SVC)?,
            slots: LbMap::take(ebpf, MAP_SLOTS)?,
            backends: LbMap::take(ebpf, MAP_BACKENDS)?,
            maglev: LbMap::take(ebpf, MAP_MAGLEV)?,
            node_addrs: LbMap::take(ebpf, MAP_NODE_ADDRS)?,
            xdp_devs: XdpDevs::take(ebpf)?,
            affinity: LbMap::take(ebpf, MAP_AFFINITY)?,
            sk_revnat: LbMap::take(ebpf, MAP_SK_REVNAT)?,
            ct: LbMap::take(ebpf, MAP_CT)?,
        })
    }
}
