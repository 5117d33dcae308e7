//! Privileged: the socket LB programs on a test-made cgroup2 directory, driven by a client
//! process placed in it. Runs isolated (own network and mount namespaces, own bpffs): only
//! the `berth-test-*` cgroup is shared with the host, and it is removed afterwards.

mod support;

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_dataplane::abi::{
    NodeAddrKey, NodeAddrValue, SvcKey, PROTO_TCP, PROTO_UDP, SVC_AFFINITY, SVC_NODEPORT,
};
use berth_dataplane::loader::{Attached, Datapath};
use support::bpf::{add_service, pins_under, TestBpffs};
use support::echo::{echo_tcp, echo_udp};
use support::{can_run_privileged, inner_run, ip, run_isolated, skip};

const TEST_NAME: &str = "socket_lb_translates_refuses_and_survives_restart";
const INNER_ENV: &str = "BERTH_SOCKLB_INNER_MARKER";
/// Set for the client process: the cgroup.procs file it moves itself into.
const CLIENT_ENV: &str = "BERTH_SOCKLB_CLIENT_PROCS";
const BACKEND_B_ENV: &str = "BERTH_SOCKLB_BACKEND_B";

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 77, 1);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 96, 77, 2);
const VIP_AFFINE: Ipv4Addr = Ipv4Addr::new(10, 96, 77, 3);
const NOT_A_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 77, 9);
const NODE_PORT: u16 = 30080;
/// Stands in for the node's InternalIP (TEST-NET-1), on this namespace's loopback.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn socket_lb_translates_refuses_and_survives_restart() {
    if let Ok(procs) = env::var(CLIENT_ENV) {
        run_client(Path::new(&procs));
        return;
    }
    if inner_run(INNER_ENV, run_inner) {
        return;
    }
    if let Err(reason) = can_run_privileged(&["unshare", "ip"]) {
        skip(&reason);
        return;
    }
    if cgroup2_mount().is_none() {
        skip("no cgroup2 mount in /proc/self/mountinfo");
        return;
    }
    run_isolated(TEST_NAME, INNER_ENV);
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next() != Some("cgroup2") {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

/// A `berth-test-*` cgroup, removed on drop (its processes must have exited by then).
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> Self {
        let root = cgroup2_mount().expect("cgroup2 mount");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let dir = root.join(format!("berth-test-{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).expect("create test cgroup");
        Self(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir(&self.0) {
            eprintln!("removing {}: {error}", self.0.display());
        }
    }
}

/// A TCP echo server that prefixes every reply with its name, so clients see which backend
/// answered.
fn tcp_echo(name: &'static str) -> SocketAddrV4 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = match listener.local_addr().expect("local addr") {
        SocketAddr::V4(addr) => addr,
        other => panic!("unexpected {other}"),
    };
    std::thread::spawn(move || echo_tcp(listener, move |_| format!("{name}:"), None));
    addr
}

fn udp_echo() -> SocketAddrV4 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = match socket.local_addr().expect("local addr") {
        SocketAddr::V4(addr) => addr,
        other => panic!("unexpected {other}"),
    };
    std::thread::spawn(move || echo_udp(socket, |_| String::new()));
    addr
}

fn run_inner() {
    ip(&["link", "set", "lo", "up"]);
    ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]);
    let bpffs = TestBpffs::new();
    let pin_dir = bpffs.path();
    let cgroup = TestCgroup::new();
    let backend_a = tcp_echo("a");
    let backend_b = tcp_echo("b");
    let udp = udp_echo();

    let mut datapath = Datapath::open(&pin_dir).expect("open datapath");
    let maps = datapath.maps_mut();
    add_service(
        maps,
        SvcKey::new(VIP, 80, PROTO_TCP),
        1,
        0,
        0,
        1,
        &[(*backend_a.ip(), backend_a.port())],
    );
    add_service(
        maps,
        SvcKey::new(VIP, 53, PROTO_UDP),
        2,
        0,
        0,
        2,
        &[(*udp.ip(), udp.port())],
    );
    add_service(maps, SvcKey::new(VIP_EMPTY, 80, PROTO_TCP), 3, 0, 0, 3, &[]);
    add_service(
        maps,
        SvcKey::new(Ipv4Addr::UNSPECIFIED, NODE_PORT, PROTO_TCP),
        4,
        SVC_NODEPORT,
        0,
        4,
        &[(*backend_a.ip(), backend_a.port())],
    );
    add_service(
        maps,
        SvcKey::new(VIP_AFFINE, 80, PROTO_TCP),
        5,
        SVC_AFFINITY,
        3600,
        5,
        &[
            (*backend_a.ip(), backend_a.port()),
            (*backend_b.ip(), backend_b.port()),
        ],
    );
    maps.node_addrs
        .insert(
            &NodeAddrKey {
                addr: u32::from_ne_bytes(NODE_IP.octets()),
            },
            &NodeAddrValue { ifindex: 0 },
        )
        .expect("insert node address");
    let attached = datapath
        .attach_socket_lb(&cgroup.0)
        .expect("attach socket lb");
    assert_eq!(attached, Attached { new: 4, kept: 0 });

    let mut client = ClientGuard(spawn_client(&cgroup.0, backend_b));
    let mut lines = BufReader::new(client.0.stdout.take().expect("client stdout")).lines();
    wait_for_line(&mut lines, "BERTH:ESTABLISHED");

    // Simulated agent restart: every fd closes, the pins keep maps and links.
    drop(datapath);
    let mut datapath = Datapath::open(&pin_dir).expect("reopen datapath");
    let frontend = datapath
        .maps()
        .svc
        .get(&SvcKey::new(VIP, 80, PROTO_TCP))
        .expect("lookup frontend");
    assert_eq!(
        frontend.map(|value| value.id),
        Some(1),
        "frontend survives a restart"
    );
    assert!(
        !datapath
            .maps()
            .sk_revnat
            .entries()
            .expect("revnat entries")
            .is_empty(),
        "the programs recorded reverse translations"
    );
    let again = datapath.attach_socket_lb(&cgroup.0).expect("attach again");
    assert_eq!(again, Attached { new: 0, kept: 4 }, "pinned links are kept");

    let mut stdin = client.0.stdin.take().expect("client stdin");
    stdin.write_all(b"go\n").expect("tell the client to go on");
    wait_for_line(&mut lines, "BERTH:DONE");
    let status = client.0.wait().expect("wait for client");
    assert!(status.success(), "client failed: {status}");

    assert_eq!(datapath.detach_socket_lb(&cgroup.0).expect("detach"), 4);
    assert_eq!(
        datapath.detach_socket_lb(&cgroup.0).expect("detach again"),
        0
    );
    drop(datapath);
    let removed = berth_dataplane::loader::cleanup(&pin_dir).expect("cleanup");
    assert_eq!(removed, 9, "every map pin");
    assert!(
        pins_under(&pin_dir).is_empty(),
        "pins left: {:?}",
        pins_under(&pin_dir)
    );
}

/// Kills and reaps the client if the test fails first: the test cgroup can only be removed
/// once its process is gone.
struct ClientGuard(Child);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_client(cgroup: &Path, backend_b: SocketAddrV4) -> Child {
    Command::new(env::current_exe().expect("current exe"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CLIENT_ENV, cgroup.join("cgroup.procs"))
        .env(BACKEND_B_ENV, backend_b.to_string())
        .env_remove(INNER_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn client")
}

fn wait_for_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, want: &str) {
    for line in lines {
        let line = line.expect("read client output");
        // libtest prints "test <name> ... " without a newline before the test's own output.
        if line.ends_with(want) {
            return;
        }
    }
    panic!("client exited before printing {want}");
}

// ---- the client, inside the test cgroup ----

fn run_client(procs: &Path) {
    fs::write(procs, std::process::id().to_string()).expect("join the test cgroup");
    let backend_b: SocketAddrV4 = env::var(BACKEND_B_ENV)
        .expect("backend b")
        .parse()
        .expect("addr");
    let vip = SocketAddrV4::new(VIP, 80);

    // TCP: data flows to the backend, the peer looks like the VIP.
    let mut established = connect(vip);
    assert_eq!(established.peer_addr().expect("peer"), SocketAddr::V4(vip));
    assert_eq!(round_trip(&mut established, "one"), "a:one");

    // UDP, unconnected: the reply's source is the VIP.
    let udp_vip = SocketAddrV4::new(VIP, 53);
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
    socket.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    socket.send_to(b"ping", udp_vip).expect("send_to vip");
    let mut buf = [0u8; 64];
    let (n, from) = socket.recv_from(&mut buf).expect("udp reply");
    assert_eq!((&buf[..n], from), (&b"ping"[..], SocketAddr::V4(udp_vip)));
    // UDP, connected: connect4 translates, getpeername shows the VIP.
    let connected = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
    connected
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("timeout");
    connected.connect(udp_vip).expect("connect udp");
    assert_eq!(
        connected.peer_addr().expect("peer"),
        SocketAddr::V4(udp_vip)
    );
    connected.send(b"pong").expect("send");
    let n = connected.recv(&mut buf).expect("udp reply");
    assert_eq!(&buf[..n], b"pong");

    // No ready endpoints: refused at once (EPERM), not left to time out.
    let started = Instant::now();
    let error = TcpStream::connect_timeout(
        &SocketAddr::V4(SocketAddrV4::new(VIP_EMPTY, 80)),
        IO_TIMEOUT,
    )
    .expect_err("frontend without backends");
    assert_eq!(error.raw_os_error(), Some(libc::EPERM), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Not a service: untouched (only loopback exists here, so it is unreachable, not EPERM).
    let error = TcpStream::connect_timeout(
        &SocketAddr::V4(SocketAddrV4::new(NOT_A_SERVICE, 80)),
        IO_TIMEOUT,
    )
    .expect_err("no route");
    assert_eq!(error.kind(), ErrorKind::NetworkUnreachable, "{error}");
    let mut direct = connect(backend_b);
    assert_eq!(direct.peer_addr().expect("peer"), SocketAddr::V4(backend_b));
    assert_eq!(round_trip(&mut direct, "direct"), "b:direct");

    // NodePort on loopback and on a node address; not on other local addresses.
    for node_ip in [Ipv4Addr::LOCALHOST, NODE_IP] {
        let node_port = SocketAddrV4::new(node_ip, NODE_PORT);
        let mut stream = connect(node_port);
        assert_eq!(stream.peer_addr().expect("peer"), SocketAddr::V4(node_port));
        assert_eq!(round_trip(&mut stream, "np"), "a:np");
    }
    let error = TcpStream::connect_timeout(
        &SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), NODE_PORT)),
        IO_TIMEOUT,
    )
    .expect_err("nothing listens there");
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}");

    // sessionAffinity: ClientIP: every connection from this pod (netns) hits one backend.
    let affine = SocketAddrV4::new(VIP_AFFINE, 80);
    let first = round_trip(&mut connect(affine), "x");
    for _ in 0..8 {
        assert_eq!(round_trip(&mut connect(affine), "x"), first);
    }

    println!("BERTH:ESTABLISHED");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("wait for the restart");
    assert_eq!(line.trim(), "go");

    // After the agent restart: the old connection and new ones work.
    assert_eq!(round_trip(&mut established, "two"), "a:two");
    let mut fresh = connect(vip);
    assert_eq!(fresh.peer_addr().expect("peer"), SocketAddr::V4(vip));
    assert_eq!(round_trip(&mut fresh, "three"), "a:three");
    println!("BERTH:DONE");
}

fn connect(addr: SocketAddrV4) -> TcpStream {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(addr), IO_TIMEOUT)
        .unwrap_or_else(|error| panic!("connect {addr}: {error}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

fn round_trip(stream: &mut TcpStream, message: &str) -> String {
    stream.write_all(message.as_bytes()).expect("write");
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).expect("read echo");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
