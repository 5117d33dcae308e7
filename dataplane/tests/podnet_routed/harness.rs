//! The test network: namespaces held by file descriptors, nodes with a pod network, and TCP
//! exchanges between them.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use berth_dataplane::podnet::{Ipv4Cidr, PodAddress, PodNetConfig, PodNetwork};
use berth_dataplane::routes::{NodeRoutes, SyncReport};
use nix::sched::{setns, unshare, CloneFlags};

/// Every LAN host's end of its veth.
pub const UPLINK: &str = "berthup";
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A network namespace held only by the returned file, and a path other processes open it by.
pub struct Ns {
    file: File,
    pub path: PathBuf,
}

impl Ns {
    pub fn new() -> Self {
        let file = std::thread::spawn(|| {
            // Only this thread moves, and it ends right after.
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare netns");
            File::open("/proc/thread-self/ns/net").expect("open new netns")
        })
        .join()
        .expect("netns thread");
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        let ns = Ns { file, path };
        ns.ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread inside this namespace; sockets it creates stay here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns")
        })
    }

    /// Runs the future `f` makes on a single-threaded runtime whose only thread is in this
    /// namespace: what "the caller's namespace" means for podnet, routes and nat.
    pub fn block_on<F: Future>(&self, f: impl FnOnce() -> F + Send) -> F::Output
    where
        F::Output: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
    }

    pub fn cmd(&self, program: &str, args: &[&str]) -> Output {
        let net = format!("--net={}", self.path.display());
        Command::new("nsenter")
            .arg(net)
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"))
    }

    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn sysctl(&self, key: &str) -> String {
        self.ok("cat", &[&format!("/proc/sys/net/ipv4/{key}")])
            .trim()
            .to_string()
    }
}

pub fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host on the LAN: its `berthup` holds `ip/24`, its other end is a bridge port.
pub fn plug(ns: &Ns, port: &str, ip: Ipv4Addr) {
    let netns = ns.path.display().to_string();
    run_ok(
        "ip",
        &[
            "link", "add", port, "type", "veth", "peer", "name", UPLINK, "netns", &netns,
        ],
    );
    run_ok("ip", &["link", "set", port, "master", "berthlan", "up"]);
    ns.ok("ip", &["addr", "add", &format!("{ip}/24"), "dev", UPLINK]);
    ns.ok("ip", &["link", "set", UPLINK, "up"]);
}

/// A node: its namespace and its pod network.
pub struct Node {
    pub ns: Ns,
    net: PodNetwork,
    _state: tempfile::TempDir,
}

impl Node {
    pub fn new(port: &str, ip: Ipv4Addr, pod_cidr: &str) -> Self {
        let ns = Ns::new();
        plug(&ns, port, ip);
        let state = tempfile::tempdir().expect("state dir");
        let net = PodNetwork::new(PodNetConfig {
            pod_cidr: pod_cidr.parse().expect("cidr"),
            state_dir: state.path().join("ipam"),
            mtu: 1500,
        })
        .expect("podnet");
        Node {
            ns,
            net,
            _state: state,
        }
    }

    /// Attaches pod `uid`, whose namespace is `pod`, from a thread in the node's namespace.
    pub fn attach(&self, uid: &str, pod: &Ns) -> PodAddress {
        let net = self.net.clone();
        let path = pod.path.clone();
        self.ns
            .block_on(|| async move { net.attach(uid, &path).await })
            .expect("attach")
    }

    pub fn sync(&self, desired: &[(&str, Ipv4Addr)]) -> SyncReport {
        let desired: Vec<(Ipv4Cidr, Ipv4Addr)> = desired
            .iter()
            .map(|(cidr, via)| (cidr.parse().expect("cidr"), *via))
            .collect();
        self.ns.block_on(|| async move {
            let routes = NodeRoutes::new().expect("node routes");
            routes.sync(&desired).await.expect("sync")
        })
    }

    pub fn berth_routes(&self) -> String {
        self.ns
            .ok("ip", &["-4", "route", "show", "proto", "180"])
            .trim()
            .to_string()
    }
}

/// Listens on `ip:port` (0: any) inside `ns`.
pub fn listen(ns: &Ns, ip: Ipv4Addr, port: u16) -> TcpListener {
    ns.run(|| TcpListener::bind((ip, port)).expect("bind"))
}

pub fn connect(ns: &Ns, target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    ns.run(|| TcpStream::connect_timeout(&target, timeout))
}

/// Connects from `from` to `target`, which `listener` must accept; returns the source address
/// the listener saw, after one line went each way.
pub fn exchange(from: &Ns, target: SocketAddr, listener: &TcpListener) -> IpAddr {
    let mut client =
        connect(from, target, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect to {target}: {e}"));
    let (mut server, peer) = listener.accept().expect("accept");
    server.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.write_all(b"ping\n").expect("write");
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).expect("server read");
    server.write_all(&buf).expect("echo");
    let mut echoed = [0u8; 5];
    client.read_exact(&mut echoed).expect("client read");
    assert_eq!(&echoed, b"ping\n");
    peer.ip()
}

/// The source `to`'s listener sees when `from` connects to `to`'s pod address.
pub fn pod_to_pod(from: &Ns, to: &Ns, to_addr: &PodAddress) -> IpAddr {
    let listener = listen(to, Ipv4Addr::UNSPECIFIED, 0);
    let port = listener.local_addr().expect("addr").port();
    exchange(from, SocketAddr::from((to_addr.ip, port)), &listener)
}
