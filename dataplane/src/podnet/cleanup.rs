//! `berth cleanup` for one node's pod network: the host veth of every pod its allocator knows,
//! and the allocator's state — and nothing of any other Berth instance on the host.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use super::ifname::host_ifname;
use super::ipam::IpamError;
use super::netlink::Netns;
use super::PodNetError;

/// Deletes the host veth of each pod with an address in `state_dir` (whatever podCIDR it came
/// from), then the state itself. Returns how many links it deleted. A missing `state_dir` is
/// nothing to do.
pub async fn cleanup_state(state_dir: &Path) -> Result<usize, PodNetError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| PodNetError::Ipam(IpamError::Io { op, path, source })
    };
    let entries = match fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("read state directory", state_dir)(e)),
    };
    let mut uids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("read state directory", state_dir))?;
        let is_ip = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.parse::<Ipv4Addr>().is_ok());
        if is_ip {
            let uid =
                fs::read_to_string(entry.path()).map_err(io("read allocation", &entry.path()))?;
            let uid = uid.trim();
            if !uid.is_empty() {
                uids.push(uid.to_owned());
            }
        }
    }
    let host = Netns::host()?;
    let mut deleted = 0;
    for uid in uids {
        let Some(link) = host.link(&host_ifname(&uid)).await? else {
            continue;
        };
        // Only a veth whose alias names this pod: never another instance's link.
        if link.alias.as_deref() == Some(uid.as_str()) && host.delete_link(&link).await? {
            deleted += 1;
        }
    }
    fs::remove_dir_all(state_dir).map_err(io("remove state directory", state_dir))?;
    Ok(deleted)
}
