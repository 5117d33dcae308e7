//! BPF fixtures: a bpffs of the test's own, map contents, and the pins left in it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use berth_dataplane::abi::{Backend, BackendKey, SlotKey, SlotValue, SvcKey, SvcValue};
use berth_dataplane::loader::{Bpffs, LbMaps};

/// A temp dir with a bpffs of its own; unmounted (by the guard) before the dir goes.
pub struct TestBpffs {
    pub bpffs: Option<Bpffs>,
    pub dir: tempfile::TempDir,
}

impl TestBpffs {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-bpffs-")
            .tempdir()
            .expect("tempdir");
        let bpffs = Bpffs::ensure(dir.path()).expect("mount bpffs");
        assert!(bpffs.mounted(), "a fresh temp dir is not bpffs yet");
        Self {
            bpffs: Some(bpffs),
            dir,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if let Some(bpffs) = self.bpffs.take() {
            let _ = berth_dataplane::loader::cleanup(bpffs.path());
            drop(bpffs);
        }
    }
}

/// Writes one frontend with `backends` in slots 1..=n (ids from `first_backend_id`).
pub fn add_service(
    maps: &mut LbMaps,
    frontend: SvcKey,
    svc_id: u32,
    flags: u16,
    affinity_timeout: u32,
    first_backend_id: u32,
    backends: &[(Ipv4Addr, u16)],
) {
    for (index, (addr, port)) in backends.iter().enumerate() {
        let id = first_backend_id + index as u32;
        maps.backends
            .insert(
                &BackendKey { id },
                &Backend::new(*addr, *port, frontend.proto),
            )
            .expect("insert backend");
        maps.slots
            .insert(
                &SlotKey {
                    svc_id,
                    slot: index as u32 + 1,
                },
                &SlotValue { backend_id: id },
            )
            .expect("insert slot");
    }
    let value = SvcValue {
        id: svc_id,
        count: backends.len() as u16,
        flags,
        affinity_timeout,
        pad: 0,
    };
    maps.svc.insert(&frontend, &value).expect("insert frontend");
}

/// Berth's pins under `dir`, recursively (the kernel's own `maps.debug` and `progs.debug`
/// preload files in every bpffs are not ours).
pub fn pins_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read pin dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with("maps.debug") && !path.ends_with("progs.debug") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
