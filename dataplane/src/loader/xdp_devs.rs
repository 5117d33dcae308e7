//! The devmap of the devices NodePort XDP may redirect into (`berth_xdp_devs`).

use aya::maps::xdp::XdpMapError;
use aya::maps::{DevMapHash, Map, MapData, MapError};
use aya::Ebpf;

use super::DatapathError;
use crate::abi::MAP_XDP_DEVS;

/// The devices NodePort XDP may redirect frames into (`berth_xdp_devs`), by ifindex. A native
/// redirect into a device that cannot take XDP frames (a veth whose peer has no NAPI, a driver
/// without `ndo_xdp_xmit`) is dropped where nobody sees it, so only devices known to take
/// them go in. The kernel removes a device's entry when the device goes away.
pub struct XdpDevs {
    map: DevMapHash<MapData>,
}

impl XdpDevs {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        let name = MAP_XDP_DEVS;
        let map: Map = ebpf
            .take_map(name)
            .ok_or(DatapathError::MissingMap { name })?;
        let map = DevMapHash::try_from(map).map_err(|source| DatapathError::Map {
            op: "open",
            name,
            source,
        })?;
        Ok(Self { map })
    }

    /// Lets XDP redirect into `ifindex`.
    pub fn allow(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        self.map
            .insert(ifindex, ifindex, None, 0)
            .map_err(|source| DatapathError::Map {
                op: "update",
                name: MAP_XDP_DEVS,
                source: match source {
                    XdpMapError::MapError(error) => error,
                    // Only with a chained program, which is never passed.
                    XdpMapError::ChainedProgramNotSupported => MapError::ProgIdNotSupported,
                },
            })
    }

    /// Takes `ifindex` out; whether it was there.
    pub fn forbid(&mut self, ifindex: u32) -> Result<bool, DatapathError> {
        match self.map.remove(ifindex) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(DatapathError::Map {
                op: "delete",
                name: MAP_XDP_DEVS,
                source,
            }),
        }
    }

    /// Every allowed ifindex.
    pub fn ifindexes(&self) -> Result<Vec<u32>, DatapathError> {
        self.map
            .keys()
            .filter(|key| !matches!(key, Err(MapError::KeyNotFound)))
            .collect::<Result<_, _>>()
            .map_err(|source| DatapathError::Map {
                op: "iterate",
                name: MAP_XDP_DEVS,
                source,
            })
    }
}
