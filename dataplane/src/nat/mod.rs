//! NAT for pods with nftables: masquerading of pod traffic leaving the cluster, and hostPorts.
//!
//! Everything lives in one table, `ip berth` (or another `berth*` name, [`Nat::with_table`]); no
//! other table is ever read or written, so Berth coexists with the host's firewall (nftables runs
//! every table's base chains). The table holds:
//!
//! - `map hostports`: `protocol . hostPort : podIP . containerPort`, changed one element at a
//!   time ([`Nat::add_hostport`], [`Nat::remove_hostport`]) — adding a pod's ports never
//!   rewrites another pod's.
//! - `chain prerouting` (hook prerouting, dstnat) and `chain output` (hook output, -100): a
//!   connection to one of the node's own addresses (`fib daddr type local`) on a mapped port is
//!   DNATed to the pod; `output` covers connections made on the node itself.
//! - `chain postrouting` (hook postrouting, srcnat): pod connections to addresses outside the
//!   cluster CIDR, not leaving through a pod veth (device group
//!   [`POD_LINK_GROUP`](crate::podnet::POD_LINK_GROUP)), are masqueraded to the node's address.
//!
//! The changes go through the `nft` binary (package `nftables`): `nft -f -` with a script, one
//! transaction each, and `nft -j list` to read the map back. Like the rest of the crate it acts
//! on the calling thread's network namespace (`nft` inherits it). Calls block on `nft`; from
//! async code use `spawn_blocking`.
//!
//!   Pods' connections to a hostPort on this node (hairpin) leave through a pod veth and are
//!   masqueraded to the gateway address, so a pod can reach even its own hostPort.
//!
//! Not done: hostIP (every mapping listens on all node addresses), and 127.0.0.1:hostPort
//! (would need `route_localnet`; loopback destinations are left alone).

mod json;
mod script;

use std::fmt;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::Mutex;

use crate::podnet::Ipv4Cidr;

/// The table's family: `table ip berth`.
pub const FAMILY: &str = "ip";
/// The table's name unless [`Nat::with_table`] chose another.
pub const DEFAULT_TABLE: &str = "berth";
/// The hostPort map in the table.
pub const HOSTPORT_MAP: &str = "hostports";

/// A hostPort's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

impl FromStr for Protocol {
    type Err = NatError;

    /// nft's names (`tcp`) and Kubernetes' (`TCP`).
    fn from_str(s: &str) -> Result<Self, NatError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(NatError::UnknownProtocol {
                protocol: s.to_string(),
            }),
        }
    }
}

/// One hostPort: connections to any node address on `protocol`/`host_port` go to
/// `pod_ip:container_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: Protocol,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

/// Why the NAT table could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("run {program} to {op}")]
    Spawn {
        op: &'static str,
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op}: nft exited with {status}: {stderr}")]
    Nft {
        op: &'static str,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{op}: unexpected nft output: {detail}")]
    Output { op: &'static str, detail: String },
    #[error("protocol {protocol:?} is not tcp, udp or sctp")]
    UnknownProtocol { protocol: String },
    #[error("host port 0 is not a port")]
    ZeroPort,
    #[error("table name {table:?} does not start with \"berth\" or is not [A-Za-z0-9_-]{{1,32}}")]
    InvalidTable { table: String },
}

/// The `ip berth` table for a cluster whose pods have addresses in `cluster_cidr`.
pub struct Nat {
    cluster_cidr: Ipv4Cidr,
    table: String,
    nft: PathBuf,
    // Read-then-write of the map must not interleave between this process's callers.
    lock: Mutex<()>,
}

impl Nat {
    /// Table [`DEFAULT_TABLE`], `nft` from `PATH`.
    pub fn new(cluster_cidr: Ipv4Cidr) -> Self {
        Self {
            cluster_cidr,
            table: DEFAULT_TABLE.to_string(),
            nft: PathBuf::from("nft"),
            lock: Mutex::new(()),
        }
    }

    /// Another table, e.g. for one of several Berth instances sharing a network namespace (each
    /// [`Nat::ensure`] rewrites its table's rules, and [`Nat::cleanup`] deletes it). The name must
    /// start with `berth`.
    pub fn with_table(mut self, table: &str) -> Result<Self, NatError> {
        check_table(table)?;
        self.table = table.to_string();
        Ok(self)
    }

    /// The `nft` binary to run.
    pub fn with_nft(mut self, nft: PathBuf) -> Self {
        self.nft = nft;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the table (or repairs its chains and rules); keeps the hostPort map's elements.
    /// Idempotent.
    pub fn ensure(&self) -> Result<(), NatError> {
        let _guard = self.locked();
        run_script(
            &self.nft,
            "ensure nat table",
            &script::ensure(&self.table, self.cluster_cidr),
        )
    }

    /// The hostPorts in the map; none if the table does not exist.
    pub fn hostports(&self) -> Result<Vec<HostPort>, NatError> {
        let _guard = self.locked();
        self.read_hostports()
    }

    fn read_hostports(&self) -> Result<Vec<HostPort>, NatError> {
        const OP: &str = "list hostports";
        let output = Command::new(&self.nft)
            .args(["-j", "list", "map", FAMILY, &self.table, HOSTPORT_MAP])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| NatError::Spawn {
                op: OP,
                program: self.nft.clone(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            // No table, no map: nothing is mapped.
            if stderr.contains("No such file or directory") {
                return Ok(Vec::new());
            }
            return Err(NatError::Nft {
                op: OP,
                status: output.status,
                stderr,
            });
        }
        json::hostports(&String::from_utf8_lossy(&output.stdout))
            .map_err(|detail| NatError::Output { op: OP, detail })
    }

    /// Maps `port.protocol`/`port.host_port` to the pod, replacing whatever that key mapped to.
    /// Returns false if it was already mapped so. Needs [`Nat::ensure`] first.
    pub fn add_hostport(&self, port: &HostPort) -> Result<bool, NatError> {
        if port.host_port == 0 {
            return Err(NatError::ZeroPort);
        }
        let _guard = self.locked();
        let current = self.read_hostports()?;
        let old = current
            .iter()
            .find(|p| p.protocol == port.protocol && p.host_port == port.host_port);
        if old == Some(port) {
            return Ok(false);
        }
        let script = script::add_hostport(&self.table, port, old);
        run_script(&self.nft, "add hostport", &script)?;
        Ok(true)
    }

    /// Unmaps `protocol`/`host_port`; false if it was not mapped.
    pub fn remove_hostport(&self, protocol: Protocol, host_port: u16) -> Result<bool, NatError> {
        let _guard = self.locked();
        let mapped = self
            .read_hostports()?
            .iter()
            .any(|p| p.protocol == protocol && p.host_port == host_port);
        if !mapped {
            return Ok(false);
        }
        run_script(
            &self.nft,
            "remove hostport",
            &script::delete_hostport(&self.table, protocol, host_port),
        )?;
        Ok(true)
    }

    /// Deletes the table, map and rules included. Idempotent.
    pub fn cleanup(&self) -> Result<(), NatError> {
        let _guard = self.locked();
        cleanup_with(&self.nft, &self.table)
    }
}

/// `berth cleanup`: deletes table `ip <table>` (see [`Nat::with_table`]) with `nft` from `PATH`.
/// Idempotent.
pub fn cleanup(table: &str) -> Result<(), NatError> {
    check_table(table)?;
    cleanup_with(Path::new("nft"), table)
}

fn cleanup_with(nft: &Path, table: &str) -> Result<(), NatError> {
    run_script(nft, "delete nat table", &script::cleanup(table))
}

/// Berth only ever names its own tables, and never anything nft would parse as more than a name.
fn check_table(table: &str) -> Result<(), NatError> {
    let valid = table.starts_with(DEFAULT_TABLE)
        && table.len() <= 32
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(NatError::InvalidTable {
            table: table.to_string(),
        })
    }
}

/// `nft -f -` with `script` on stdin: one atomic transaction.
fn run_script(nft: &Path, op: &'static str, script: &str) -> Result<(), NatError> {
    let spawn_err = |source| NatError::Spawn {
        op,
        program: nft.to_path_buf(),
        source,
    };
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(script.as_bytes()));
    let output = child.wait_with_output().map_err(spawn_err)?;
    if !output.status.success() {
        return Err(NatError::Nft {
            op,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    // nft succeeded, so it read the whole script; a failed write would have made it fail.
    if let Some(Err(source)) = written {
        return Err(spawn_err(source));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!("udp".parse::<Protocol>().unwrap(), Protocol::Udp);
        assert_eq!(Protocol::Sctp.to_string(), "sctp");
        assert_eq!(
            "icmp".parse::<Protocol>().unwrap_err().to_string(),
            "protocol \"icmp\" is not tcp, udp or sctp"
        );
    }

    #[test]
    fn table_names() {
        let nat = Nat::new("10.244.0.0/16".parse().unwrap());
        assert_eq!(nat.table(), "berth");
        let nat = nat.with_table("berth-test_1").unwrap();
        assert_eq!(nat.table(), "berth-test_1");
        for bad in [
            "filter",
            "berth x",
            "berth;flush ruleset",
            &"berth".repeat(7),
        ] {
            let nat = Nat::new("10.244.0.0/16".parse().unwrap());
            assert!(
                matches!(nat.with_table(bad), Err(NatError::InvalidTable { .. })),
                "{bad}"
            );
            assert!(cleanup(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_nft_is_reported() {
        let nat = Nat::new("10.244.0.0/16".parse().unwrap())
            .with_nft(PathBuf::from("/nonexistent/berth-nft"));
        let err = nat.ensure().unwrap_err();
        assert!(matches!(err, NatError::Spawn { .. }), "{err}");
        let port = HostPort {
            protocol: Protocol::Tcp,
            host_port: 0,
            pod_ip: Ipv4Addr::new(10, 244, 0, 2),
            container_port: 80,
        };
        assert!(matches!(nat.add_hostport(&port), Err(NatError::ZeroPort)));
    }
}
