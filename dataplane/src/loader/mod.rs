//! Loads Berth's Service programs (`bpf/lb.bpf.o`, embedded) with aya, keeps their maps and
//! links pinned on bpffs so an agent restart neither loses state nor detaches anything, and
//! offers typed handles on the maps.
//!
//! Pin layout under `pin_dir` (a bpffs, see [`Bpffs`]):
//! - `berth_*`: the maps, pinned by name (`LIBBPF_PIN_BY_NAME`), reused by every later open;
//! - `links/cgroup-<inode>/{connect4,sendmsg4,recvmsg4,getpeername4}`: socket LB per cgroup;
//! - `links/tc-<ifname>`: the tcx ingress link per interface;
//! - `links/xdp-<ifname>`, `links/nodeport-tc-<ifname>`: NodePort on the uplink (xdp.rs).
//!
//! The classifier attaches only as tcx (Linux 6.6+); aya's netlink fallback for older kernels
//! yields links that cannot be pinned, so [`Datapath::attach_tc`] fails there instead.

mod attach;
mod bpffs;
mod links;
mod maps;
mod tables;
mod xdp;
mod xdp_devs;

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::{CgroupSockAddr, ProgramError, SchedClassifier};
use aya::{Ebpf, EbpfLoader};

pub use attach::Attached;
pub use bpffs::{is_bpffs, Bpffs, BpffsError};
pub use maps::{LbMap, LbMaps};
pub use tables::ServiceMaps;
pub use xdp::{XdpAttached, XdpMode};
pub use xdp_devs::XdpDevs;

use crate::abi::{
    MAP_AFFINITY, MAP_BACKENDS, MAP_CT, MAP_MAGLEV, MAP_NODE_ADDRS, MAP_SK_REVNAT, MAP_SLOTS,
    MAP_SVC, MAP_XDP_DEVS,
};

/// The Service object, byte for byte as committed (`make -C bpf` rebuilds it).
static LB_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../bpf/lb.bpf.o");

const PROG_CONNECT4: &str = "berth_connect4";
const PROG_SENDMSG4: &str = "berth_sendmsg4";
const PROG_RECVMSG4: &str = "berth_recvmsg4";
const PROG_GETPEERNAME4: &str = "berth_getpeer4";
const PROG_TC_INGRESS: &str = "berth_tc_ingress";

const LINKS_DIR: &str = "links";
const MAP_NAMES: [&str; 9] = [
    MAP_SVC,
    MAP_SLOTS,
    MAP_BACKENDS,
    MAP_MAGLEV,
    MAP_AFFINITY,
    MAP_SK_REVNAT,
    MAP_CT,
    MAP_NODE_ADDRS,
    MAP_XDP_DEVS,
];

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{name:?} is not an interface name")]
    InvalidIfname { name: String },
    #[error("tcx attach needs Linux 6.6 or later")]
    TcxUnsupported,
    #[error("{pin_dir} is not on bpffs")]
    NotBpffs { pin_dir: PathBuf },
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error("load bpf object {object} pinning maps in {pin_dir}")]
    Load {
        object: &'static str,
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("bpf object has no map {name}")]
    MissingMap { name: &'static str },
    #[error("bpf object has no program {name}")]
    MissingProgram { name: &'static str },
    #[error("{op} program {name}")]
    Program {
        op: &'static str,
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("{op} map {name}")]
    Map {
        op: &'static str,
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{op} link {path}")]
    Link {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The loaded Service programs and their pinned maps.
pub struct Datapath {
    pin_dir: PathBuf,
    ebpf: Ebpf,
    maps: LbMaps,
    /// nodeport.bpf.o, loaded by the first NodePort attach.
    nodeport: Option<Ebpf>,
}

impl Datapath {
    /// Loads the object, creating the maps under `pin_dir` or reusing the ones pinned there,
    /// and loads (verifies) every program. Attaches nothing.
    pub fn open(pin_dir: &Path) -> Result<Self, DatapathError> {
        if !is_bpffs(pin_dir)? {
            return Err(DatapathError::NotBpffs {
                pin_dir: pin_dir.to_path_buf(),
            });
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(LB_OBJECT)
            .map_err(|source| DatapathError::Load {
                object: "lb.bpf.o",
                pin_dir: pin_dir.to_path_buf(),
                source: Box::new(source),
            })?;
        for name in [
            PROG_CONNECT4,
            PROG_SENDMSG4,
            PROG_RECVMSG4,
            PROG_GETPEERNAME4,
        ] {
            sock_program(&mut ebpf, name)?
                .load()
                .map_err(|source| program_error("load", name, source))?;
        }
        tc_program(&mut ebpf)?
            .load()
            .map_err(|source| program_error("load", PROG_TC_INGRESS, source))?;
        let maps = LbMaps::take(&mut ebpf)?;
        Ok(Self {
            pin_dir: pin_dir.to_path_buf(),
            ebpf,
            maps,
            nodeport: None,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn maps(&self) -> &LbMaps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut LbMaps {
        &mut self.maps
    }

    fn links_dir(&self) -> PathBuf {
        self.pin_dir.join(LINKS_DIR)
    }
}

/// Removes every pin [`Datapath`] makes under `pin_dir`: detaches and unpins the links, then
/// unpins the maps (freed once no program or process holds them). Returns how many pins it removed.
pub fn cleanup(pin_dir: &Path) -> Result<usize, DatapathError> {
    let mut removed = 0;
    let links = pin_dir.join(LINKS_DIR);
    removed += remove_tree(&links)?;
    for name in MAP_NAMES {
        let path = pin_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DatapathError::Io {
                    op: "remove pinned map",
                    path,
                    source,
                })
            }
        }
    }
    Ok(removed)
}

/// Detaches every link pinned in `dir` and removes the pins and the directory (bpffs has no
/// recursive unlink); how many links it removed.
fn remove_tree(dir: &Path) -> Result<usize, DatapathError> {
    let io_error = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| DatapathError::Io { op, path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io_error("read", dir)(source)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_error("read", dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error("stat", &path))?;
        if file_type.is_dir() {
            removed += remove_tree(&path)?;
        } else if crate::sys::detach_pinned_link(&path)
            .map_err(io_error("detach pinned link", &path))?
        {
            removed += 1;
        }
    }
    std::fs::remove_dir(dir).map_err(io_error("remove", dir))?;
    Ok(removed)
}

fn program_error(op: &'static str, name: &'static str, source: ProgramError) -> DatapathError {
    DatapathError::Program { op, name, source }
}

/// The program `name` of `ebpf`, as the kind `P` it must be.
fn find_program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram { name })?
        .try_into()
        .map_err(|source| program_error("find", name, source))
}

fn sock_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    find_program(ebpf, name)
}

fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DatapathError> {
    find_program(ebpf, PROG_TC_INGRESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_refuses_a_directory_that_is_not_bpffs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = Datapath::open(dir.path()).err().expect("not bpffs");
        assert!(matches!(error, DatapathError::NotBpffs { .. }), "{error}");
    }

    #[test]
    fn cleanup_removes_map_pins_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in MAP_NAMES.iter().chain(&["unrelated"]) {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        assert_eq!(cleanup(dir.path()).expect("cleanup"), MAP_NAMES.len());
        assert!(dir.path().join("unrelated").exists());
        assert_eq!(cleanup(dir.path()).expect("cleanup again"), 0);
    }

    #[test]
    fn the_embedded_object_names_every_program_and_map() {
        let has = |name: &str| {
            LB_OBJECT
                .windows(name.len() + 1)
                .any(|window| window[..name.len()] == *name.as_bytes() && window[name.len()] == 0)
        };
        for name in [
            PROG_CONNECT4,
            PROG_SENDMSG4,
            PROG_RECVMSG4,
            PROG_GETPEERNAME4,
            PROG_TC_INGRESS,
        ]
        .iter()
        .chain(&MAP_NAMES)
        {
            assert!(has(name), "lb.bpf.o has no symbol {name}");
        }
    }
}
