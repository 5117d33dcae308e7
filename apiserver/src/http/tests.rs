//! The connection server against a real TLS client on loopback, on both I/O drivers.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;

use super::{serve, IoMode, Request, Response, ServerConfig, Service};

/// Answers `/stream` with three chunks, everything else with `<method> <path> <body length>`.
struct Echo;

impl Service for Echo {
    fn call(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + '_>> {
        Box::pin(async move {
            if req.path == "/stream" {
                let chunks = ["a", "b", "c"].map(|c| Bytes::from_static(c.as_bytes()));
                return Response::stream(
                    200,
                    "text/plain",
                    Box::pin(futures::stream::iter(chunks)),
                );
            }
            let text = format!("{} {} {}", req.method, req.path, req.body.len());
            Response::new(200, "text/plain", text)
        })
    }
}

type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

struct Fixture {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
}

fn start(io: IoMode, idle: Duration) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = crate::pki::Pki::load_or_create(dir.path()).expect("pki");
    let (cert, key) = pki
        .serving_cert("test", &["127.0.0.1".to_string()])
        .expect("cert");
    let tls = crate::tls::server_config(&cert, &key, &pki.ca_cert_path()).expect("tls");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        io,
        tls,
        body_limit: 1024,
        idle_timeout: idle,
    };
    let handle = serve(config, Arc::new(Echo)).expect("serve");
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut pki.ca_cert_pem().as_bytes()) {
        roots.add(ca.expect("ca pem")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Fixture {
        _dir: dir,
        addr: handle.local_addr,
        client: Arc::new(client),
    }
}

impl Fixture {
    fn connect(&self) -> Client {
        let tcp = TcpStream::connect(self.addr).expect("connect");
        // Bounds a hung server; the tests wait on events, never on this.
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(self.client.clone(), name).expect("client");
        rustls::StreamOwned::new(conn, tcp)
    }
}

/// Reads one response: (status, body), de-chunking if needed.
fn read_response(c: &mut Client) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).expect("response head");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap().to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    if head.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                c.read_exact(&mut byte).expect("chunk size");
                line.push(byte[0]);
            }
            let size =
                usize::from_str_radix(std::str::from_utf8(&line).unwrap().trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            c.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                return (status, body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).expect("body");
    (status, body)
}

fn each_driver(test: impl Fn(IoMode)) {
    test(IoMode::Auto);
    test(IoMode::Epoll);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    each_driver(|io| {
        let f = start(io, Duration::from_secs(60));
        let mut c = f.connect();
        c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz")
            .unwrap();
        assert_eq!(read_response(&mut c), (200, b"GET /a 0".to_vec()));
        assert_eq!(read_response(&mut c), (200, b"POST /b 3".to_vec()));
        c.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut c), (200, b"abc".to_vec()));
        // Still open after a streamed response.
        c.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut c), (200, b"GET /c 0".to_vec()));
    });
}

#[test]
fn an_oversize_body_gets_a_readable_413() {
    each_driver(|io| {
        let f = start(io, Duration::from_secs(60));
        let mut c = f.connect();
        let mut req = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n".to_vec();
        req.extend(std::iter::repeat_n(b'x', 65536));
        c.write_all(&req).unwrap();
        let (status, body) = read_response(&mut c);
        assert_eq!(status, 413);
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["reason"], "RequestEntityTooLarge");
    });
}

#[test]
fn idle_connections_are_closed() {
    each_driver(|io| {
        let f = start(io, Duration::from_millis(200));
        let mut c = f.connect();
        c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut c).0, 200);
        let waited = Instant::now();
        let mut rest = Vec::new();
        // The server closes the idle connection: the read ends (EOF or a TLS close error).
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "closed after {:?}",
            waited.elapsed()
        );
    });
}

#[test]
fn malformed_requests_get_400_and_close() {
    each_driver(|io| {
        let f = start(io, Duration::from_secs(60));
        let mut c = f.connect();
        c.write_all(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut c).0, 400);
    });
}
