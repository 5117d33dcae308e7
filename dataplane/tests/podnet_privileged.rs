//! Privileged: `podnet` against real network namespaces, veths, routes and traffic.
//!
//! The test re-executes itself under `unshare --net`, so its "host" is a throwaway network
//! namespace: it never sees or touches the machine's own links and routes, may run
//! `cleanup_all`, and everything it creates (links, routes, pod namespaces held only by file
//! descriptors) disappears with the process even if it is killed. Its loopback carries
//! 192.0.2.10 as a stand-in for the node's InternalIP.

use std::env;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_dataplane::podnet::{host_ifname, PodAddress, PodNetConfig, PodNetError, PodNetwork};
use nix::sched::{setns, unshare, CloneFlags};

const TEST_NAME: &str = "podnet_in_isolated_host_namespace";
/// Set for the re-executed test: the file it writes when it got to the end.
const INNER_ENV: &str = "BERTH_PODNET_INNER_MARKER";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn skip(reason: &str) {
    if env::var("BERTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("BERTH_REQUIRE_PRIVILEGED=1 but cannot run: {reason}");
    }
    eprintln!("skipping: {reason}");
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn can_run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root".to_string());
    }
    for program in ["unshare", "nsenter", "ip", "busybox"] {
        if !on_path(program) {
            return Err(format!("{program} is not installed"));
        }
    }
    Ok(())
}

#[test]
fn podnet_in_isolated_host_namespace() {
    if let Some(marker) = env::var_os(INNER_ENV) {
        run_inner(Path::new(&marker));
        return;
    }
    if let Err(reason) = can_run() {
        skip(&reason);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("done");
    let status = Command::new("unshare")
        .args(["--net", "--"])
        .arg(env::current_exe().expect("current exe"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, &marker)
        .status()
        .expect("run the test under unshare --net");
    assert!(
        status.success(),
        "the test in its own namespace failed: {status}"
    );
    // Guards against the inner run silently matching no test.
    assert!(
        marker.exists(),
        "the test in its own namespace did not run to the end"
    );
}

fn run_inner(marker: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario());
    fs::write(marker, "ok").expect("write marker");
}

/// A network namespace held only by the returned file, and a path other processes can open it by.
struct PodNs {
    file: File,
    path: PathBuf,
}

fn new_pod_ns() -> PodNs {
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
    PodNs { file, path }
}

/// Runs `f` on a thread inside `ns`; sockets it creates stay in `ns` wherever they are used.
fn in_ns<T: Send>(ns: &PodNs, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns.file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in pod netns")
    })
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"))
}

fn stdout_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip <args>` inside the pod's namespace.
fn pod_ip_cmd(ns: &PodNs, args: &[&str]) -> String {
    let net = format!("--net={}", ns.path.display());
    let mut full = vec![net.as_str(), "ip"];
    full.extend_from_slice(args);
    stdout_ok("nsenter", &full)
}

fn ping_from_host(ip: Ipv4Addr) {
    stdout_ok("busybox", &["ping", "-c", "1", "-W", "2", &ip.to_string()]);
}

fn ping_from_pod(ns: &PodNs, ip: Ipv4Addr) {
    let net = format!("--net={}", ns.path.display());
    stdout_ok(
        "nsenter",
        &[
            &net,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &ip.to_string(),
        ],
    );
}

fn ifindex(ifname: &str) -> String {
    fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex")).unwrap_or_default()
}

fn host_links() -> String {
    stdout_ok("ip", &["-o", "link"])
}

/// Sends a line over an accepted connection and checks the peer's address.
fn exchange(listener: &TcpListener, client: &mut TcpStream, expected_peer: Ipv4Addr) {
    let (mut server, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), IpAddr::V4(expected_peer));
    client.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    server.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    server.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"hello");
}

fn check_pod_side(ns: &PodNs, addr: &PodAddress) {
    let inet = pod_ip_cmd(ns, &["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(inet.contains(&format!("inet {}/32", addr.ip)), "{inet}");
    let eth0 = pod_ip_cmd(ns, &["-o", "link", "show", "eth0"]);
    assert!(eth0.contains(",UP,") && eth0.contains("mtu 1400"), "{eth0}");
    let lo = pod_ip_cmd(ns, &["-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    let routes = pod_ip_cmd(ns, &["-4", "route", "show", "default"]);
    let default = format!("default via {GATEWAY} dev eth0 ");
    assert!(
        routes.starts_with(&default) && routes.contains(" onlink"),
        "{routes}"
    );
}

fn check_traffic(ns: &PodNs, addr: &PodAddress) {
    ping_from_host(addr.ip);
    ping_from_pod(ns, GATEWAY);
    ping_from_pod(ns, NODE_IP);

    // Host → pod: the host reaches the pod from the gateway address.
    let listener = in_ns(ns, || TcpListener::bind("0.0.0.0:0").expect("bind in pod"));
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect_timeout(&SocketAddr::from((addr.ip, port)), IO_TIMEOUT)
        .expect("host connects to pod");
    exchange(&listener, &mut client, GATEWAY);

    // Pod → host, at the node's address and at the gateway.
    for host_ip in [NODE_IP, GATEWAY] {
        let listener = TcpListener::bind((host_ip, 0)).expect("bind on host");
        let target = listener.local_addr().expect("addr");
        let mut client = in_ns(ns, || {
            TcpStream::connect_timeout(&target, IO_TIMEOUT).expect("pod connects to host")
        });
        exchange(&listener, &mut client, addr.ip);
    }
}

async fn scenario() {
    stdout_ok("ip", &["link", "set", "lo", "up"]);
    stdout_ok(
        "ip",
        &["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"],
    );
    let state = tempfile::tempdir().expect("state dir");
    let config = PodNetConfig {
        pod_cidr: "10.244.0.0/24".parse().expect("cidr"),
        state_dir: state.path().join("ipam"),
        mtu: 1400,
    };
    let net = PodNetwork::new(config.clone()).expect("podnet");

    // Attach: the pod's side and both directions of traffic.
    let ns_a = new_pod_ns();
    let started = std::time::Instant::now();
    let a = net.attach("uid-a", &ns_a.path).await.expect("attach a");
    eprintln!("first attach took {:?}", started.elapsed());
    assert_eq!(a.prefix, 32);
    assert_eq!(a.gateway, GATEWAY);
    assert_eq!(a.host_ifname, host_ifname("uid-a"));
    assert!(config.pod_cidr.contains(a.ip) && a.ip != GATEWAY);
    check_pod_side(&ns_a, &a);
    let veth = stdout_ok("ip", &["-o", "link", "show", &a.host_ifname]);
    assert!(
        veth.contains("mtu 1400") && veth.contains("alias uid-a"),
        "{veth}"
    );
    let route = stdout_ok("ip", &["route", "show", "exact", &a.ip.to_string()]);
    let dev = format!("{} dev {} ", a.ip, a.host_ifname);
    assert!(
        route.starts_with(&dev) && route.contains(&format!("scope link src {GATEWAY}")),
        "{route}"
    );
    check_traffic(&ns_a, &a);

    // Attach again: same address, same links.
    let index = ifindex(&a.host_ifname);
    assert_eq!(
        net.attach("uid-a", &ns_a.path).await.expect("re-attach a"),
        a
    );
    assert_eq!(ifindex(&a.host_ifname), index);

    // A restarted kubelet re-adopts the address, and attach repairs a missing route.
    pod_ip_cmd(&ns_a, &["route", "del", "default"]);
    let restarted = PodNetwork::new(config.clone()).expect("podnet after restart");
    assert_eq!(restarted.address_of("uid-a"), Some(a.ip));
    assert_eq!(
        restarted
            .attach("uid-a", &ns_a.path)
            .await
            .expect("repair a"),
        a
    );
    check_pod_side(&ns_a, &a);
    drop(restarted);

    // A second pod gets another address and its own veth.
    let ns_b = new_pod_ns();
    let b = net.attach("uid-b", &ns_b.path).await.expect("attach b");
    assert_ne!(b.ip, a.ip);
    assert_ne!(b.host_ifname, a.host_ifname);
    check_traffic(&ns_b, &b);

    // A deleted host veth (its peer goes with it) is recreated with the same address.
    stdout_ok("ip", &["link", "del", &b.host_ifname]);
    assert_eq!(net.attach("uid-b", &ns_b.path).await.expect("repair b"), b);
    check_pod_side(&ns_b, &b);
    ping_from_host(b.ip);

    // A new sandbox for pod a: the veth moves to the new namespace, the old one loses eth0.
    let ns_a2 = new_pod_ns();
    assert_eq!(
        net.attach("uid-a", &ns_a2.path)
            .await
            .expect("attach a's new sandbox"),
        a
    );
    check_pod_side(&ns_a2, &a);
    assert!(!pod_ip_cmd(&ns_a, &["-o", "link"]).contains("eth0"));
    ping_from_host(a.ip);

    // An eth0 that is not ours is refused, and nothing is created for it on the host.
    let ns_foreign = new_pod_ns();
    pod_ip_cmd(
        &ns_foreign,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    );
    let err = net
        .attach("uid-c", &ns_foreign.path)
        .await
        .expect_err("foreign eth0");
    assert!(matches!(err, PodNetError::ForeignInterface { .. }), "{err}");
    assert!(!host_links().contains(&host_ifname("uid-c")));
    net.detach("uid-c").await.expect("detach c");

    // Detach: no link, no route, address free; twice is fine.
    net.detach("uid-a").await.expect("detach a");
    net.detach("uid-a").await.expect("detach a again");
    assert!(!host_links().contains(&a.host_ifname));
    assert!(!pod_ip_cmd(&ns_a2, &["-o", "link"]).contains("eth0"));
    assert_eq!(stdout_ok("ip", &["route", "show", &a.ip.to_string()]), "");
    assert_eq!(net.address_of("uid-a"), None);
    assert!(!config.state_dir.join(a.ip.to_string()).exists());

    // Cleanup removes every berth link and all allocations.
    assert_eq!(net.cleanup_all().await.expect("cleanup"), 1);
    assert!(!host_links().contains("berth"), "{}", host_links());
    assert_eq!(net.address_of("uid-b"), None);
    let left: Vec<_> = fs::read_dir(&config.state_dir)
        .expect("state dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
