//! The benchmark's topology, built from inside the inner process's own network namespace (the
//! router): a client and a server namespace, each held only by a file descriptor, joined to the
//! router by `berth*` veths. Everything here dies with the inner process.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, unshare, CloneFlags};

use super::{io_err, run_command, DataplaneError};

/// The router's veth towards the client (tcx ingress for Berth's tc path goes here).
pub const IF_CLIENT: &str = "berthbc0";
/// The router's veth towards the servers (tcx ingress here reverses the replies).
pub const IF_SERVER: &str = "berthbs0";
pub const ROUTER_C: Ipv4Addr = Ipv4Addr::new(10, 210, 1, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 210, 1, 2);
pub const ROUTER_S: Ipv4Addr = Ipv4Addr::new(10, 210, 2, 1);
/// What kube-proxy would call the cluster CIDR: client and servers are "pods" in it, so the
/// masquerade-marking rules never match (pod → service traffic keeps its source).
pub const CLUSTER_CIDR: &str = "10.210.0.0/16";
pub const BACKEND_PORT: u16 = 8080;

/// Backend `i`'s address in the server namespace.
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 210, 2, 10 + i as u8)
}

/// A network namespace held only by this file.
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    pub fn new() -> Result<Self, DataplaneError> {
        let file = std::thread::spawn(|| -> Result<File, DataplaneError> {
            // Only this thread moves, and it ends right after.
            unshare(CloneFlags::CLONE_NEWNET).map_err(|source| DataplaneError::Sys {
                op: "unshare a network namespace",
                source,
            })?;
            let path = Path::new("/proc/thread-self/ns/net");
            File::open(path).map_err(io_err("open", path))
        })
        .join()
        .map_err(|_| DataplaneError::Bad {
            what: "creating a network namespace",
            message: "the thread panicked".into(),
        })??;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        Ok(Self { file, path })
    }

    /// `/proc/<pid>/fd/<n>`: what `ip … netns` and `nsenter --net=` take.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ip(&self, args: &[&str]) -> Result<(), DataplaneError> {
        let net = format!("--net={}", self.path.display());
        let mut all = vec![net.as_str(), "ip"];
        all.extend_from_slice(args);
        run_command("nsenter", &all, None).map(drop)
    }

    /// Runs `f` on a new thread inside this namespace: sockets it makes live here.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, DataplaneError>>, DataplaneError> {
        let file = self
            .file
            .try_clone()
            .map_err(io_err("duplicate", &self.path))?;
        std::thread::Builder::new()
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| DataplaneError::Sys {
                    op: "setns into a benchmark namespace",
                    source,
                })?;
                Ok(f())
            })
            .map_err(io_err("spawn a thread for", &self.path))
    }

    /// Runs `f` inside this namespace and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DataplaneError> {
        self.spawn(f)?.join().map_err(|_| DataplaneError::Bad {
            what,
            message: "the thread panicked".into(),
        })?
    }

    /// Writes a sysctl of this namespace (`/proc/sys/net` is the opener's namespace's).
    pub fn sysctl(&self, key: &'static str, value: &'static str) -> Result<(), DataplaneError> {
        self.run("writing a sysctl", move || {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value).map_err(io_err("write", &path))
        })?
    }
}

fn ip(args: &[&str]) -> Result<(), DataplaneError> {
    run_command("ip", args, None).map(drop)
}

/// Writes a sysctl of the calling thread's network namespace.
pub(super) fn sysctl(key: &str, value: &str) -> Result<(), DataplaneError> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(io_err("write", &path))
}

/// The client and server namespaces, wired to this (the router's) namespace.
pub struct Topology {
    pub client: Netns,
    pub server: Netns,
}

impl Topology {
    /// Builds it: forwarding on in the router, `backends` addresses on the server's veth.
    /// Must run in the inner process's own namespace (checked by the caller).
    pub fn build(backends: usize) -> Result<Self, DataplaneError> {
        ip(&["link", "set", "lo", "up"])?;
        sysctl("net.ipv4.ip_forward", "1")?;
        // Replies after Berth's reverse NAT carry the VIP as source; strict reverse-path
        // filtering would drop them.
        sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        let client = Netns::new()?;
        let server = Netns::new()?;
        wire(&client, IF_CLIENT, ROUTER_C, &[CLIENT])?;
        let addrs: Vec<Ipv4Addr> = (0..backends).map(backend_addr).collect();
        wire(&server, IF_SERVER, ROUTER_S, &addrs)?;
        // New connection per request: the client needs many ports (no TIME_WAIT is left, the
        // client resets, but a wide range keeps reuse rare).
        client.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
        Ok(Self { client, server })
    }
}

/// Joins `ns` to the router: `host_if` here with `router_addr`/24, `eth0` there with `addrs`
/// (/24) and a default route back through the router.
fn wire(
    ns: &Netns,
    host_if: &str,
    router_addr: Ipv4Addr,
    addrs: &[Ipv4Addr],
) -> Result<(), DataplaneError> {
    let path = ns.path().to_string_lossy().into_owned();
    ip(&[
        "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &path,
    ])?;
    ip(&["addr", "add", &format!("{router_addr}/24"), "dev", host_if])?;
    ip(&["link", "set", host_if, "up"])?;
    sysctl(&format!("net.ipv4.conf.{host_if}.rp_filter"), "0")?;
    ns.ip(&["link", "set", "lo", "up"])?;
    for addr in addrs {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
    }
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["route", "add", "default", "via", &router_addr.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses_stay_in_the_server_subnet() {
        assert_eq!(backend_addr(0), Ipv4Addr::new(10, 210, 2, 10));
        assert_eq!(backend_addr(199), Ipv4Addr::new(10, 210, 2, 209));
        assert!(IF_CLIENT.starts_with("berth") && IF_SERVER.starts_with("berth"));
    }
}
