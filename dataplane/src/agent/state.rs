//! `<data-dir>/dataplane.json`: what the data plane made on the host, so `berth cleanup` removes
//! exactly that even when the agent is gone.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "dataplane.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The bpffs the agent mounted itself (none when it used an existing one).
    pub mounted_bpffs: Option<PathBuf>,
    /// Where the maps and links are pinned.
    pub pin_dir: Option<PathBuf>,
    /// The nft table with masquerade and hostPorts.
    pub nft_table: Option<String>,
    /// The cluster network whose node routes are this agent's.
    pub cluster_cidr: Option<String>,
}

impl State {
    pub fn load(data_dir: &Path) -> io::Result<Option<State>> {
        match std::fs::read(data_dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Written to a temporary file and renamed, so a crash leaves the old state or the new.
    pub fn store(&self, data_dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let tmp = data_dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(io::Error::other)?,
        )?;
        std::fs::rename(&tmp, data_dir.join(STATE_FILE))
    }

    pub fn remove(data_dir: &Path) -> io::Result<()> {
        match std::fs::remove_file(data_dir.join(STATE_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), None);
        let state = State {
            mounted_bpffs: Some("/x/bpffs".into()),
            pin_dir: Some("/x/bpffs/berth".into()),
            nft_table: Some("berth".into()),
            cluster_cidr: Some("10.244.0.0/16".into()),
        };
        state.store(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), Some(state));
        State::remove(dir.path()).unwrap();
        State::remove(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), None);
    }
}
