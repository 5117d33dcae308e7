//! The connection server: one compio runtime per thread, each accepting from its own
//! SO_REUSEPORT listener, so connections spread over cores with no shared accept lock.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compio::driver::{DriverType, ProactorBuilder};
use compio::io::compat::AsyncStream;
use compio::net::{TcpListener, TcpStream};
use compio::runtime::RuntimeBuilder;
use futures::future::{select, Either, FutureExt};
use futures::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use futures::StreamExt;

use super::parse::{body_framing, decode_chunked, parse_head, BodyFraming, ParseError};
use super::{reason_phrase, Body, Request, Response, Service};
use crate::auth::user_from_certificate;
use crate::status::ApiError;

/// Which kernel interface carries the network I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    IoUring,
    Epoll,
}

impl std::str::FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "io-uring" | "io_uring" | "iouring" => Ok(IoMode::IoUring),
            "epoll" => Ok(IoMode::Epoll),
            other => Err(format!(
                "unknown io mode {other:?} (want auto, io-uring or epoll)"
            )),
        }
    }
}

pub struct ServerConfig {
    pub listen: SocketAddr,
    pub threads: usize,
    pub io: IoMode,
    pub tls: Arc<rustls::ServerConfig>,
    /// Largest request body accepted (413 past it).
    pub body_limit: usize,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen on {addr} failed")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("io runtime could not start")]
    Runtime(#[source] io::Error),
    #[error("io_uring was required but is unavailable: the runtime chose {0}")]
    IoUringUnavailable(&'static str),
}

/// The running server.
pub struct ServerHandle {
    pub local_addr: SocketAddr,
    /// "io_uring" or "epoll": what the runtime actually uses.
    pub driver: &'static str,
}

fn driver_name(t: DriverType) -> &'static str {
    match t {
        DriverType::IoUring => "io_uring",
        DriverType::Poll => "epoll",
        _ => "other",
    }
}

/// A listener socket with SO_REUSEPORT, so each I/O thread can have its own.
fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Large enough for a burst of thousands of watch connections.
    socket.listen(8192)?;
    Ok(socket.into())
}

/// Starts the server threads and returns once every thread is accepting.
pub fn serve(config: ServerConfig, service: Arc<dyn Service>) -> Result<ServerHandle, ServerError> {
    let first = listener(config.listen).map_err(|source| ServerError::Listen {
        addr: config.listen,
        source,
    })?;
    let local_addr = first.local_addr().map_err(|source| ServerError::Listen {
        addr: config.listen,
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..config.threads.max(1) {
        listeners.push(listener(local_addr).map_err(|source| ServerError::Listen {
            addr: local_addr,
            source,
        })?);
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    for (i, std_listener) in listeners.into_iter().enumerate() {
        let ready = ready_tx.clone();
        let (tls, service, mode) = (config.tls.clone(), service.clone(), config.io);
        let limits = Limits {
            body: config.body_limit,
            idle: config.idle_timeout,
        };
        std::thread::Builder::new()
            .name(format!("berth-api-io-{i}"))
            .spawn(move || {
                let mut proactor = ProactorBuilder::new();
                if mode == IoMode::Epoll {
                    proactor.driver_type(DriverType::Poll);
                }
                let runtime = match RuntimeBuilder::new().with_proactor(proactor).build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(ServerError::Runtime(e)));
                        return;
                    }
                };
                let driver = driver_name(runtime.driver_type());
                if mode == IoMode::IoUring && driver != "io_uring" {
                    let _ = ready.send(Err(ServerError::IoUringUnavailable(driver)));
                    return;
                }
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready.send(Err(ServerError::Runtime(e)));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(driver));
                    accept_loop(listener, tls, service, limits).await;
                });
            })
            .map_err(ServerError::Runtime)?;
    }
    drop(ready_tx);
    let mut driver = "none";
    // One message per thread; the threads keep their senders for as long as they run.
    for _ in 0..config.threads.max(1) {
        driver = ready_rx.recv().map_err(|_| {
            ServerError::Runtime(io::Error::other("an io thread died while starting"))
        })??;
    }
    tracing::info!(%local_addr, driver, threads = config.threads, "api server listening");
    Ok(ServerHandle { local_addr, driver })
}

/// Per-connection limits.
#[derive(Clone, Copy)]
struct Limits {
    body: usize,
    idle: Duration,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<dyn Service>,
    limits: Limits,
) {
    loop {
        match listener.accept().await {
            Ok((tcp, _peer)) => {
                let _ = tcp.set_nodelay(true);
                let (tls, service) = (tls.clone(), service.clone());
                compio::runtime::spawn(async move {
                    if let Err(e) = connection(tcp, tls, service, limits).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                })
                .detach();
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                compio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

type Reader = ReadHalf<futures_rustls::server::TlsStream<AsyncStream<TcpStream>>>;
type Writer = WriteHalf<futures_rustls::server::TlsStream<AsyncStream<TcpStream>>>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a keep-alive connection may sit between requests by default (Go clients drop theirs
/// after 90 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a started request head may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

async fn connection(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<dyn Service>,
    limits: Limits,
) -> io::Result<()> {
    let Limits { body: limit, idle } = limits;
    let acceptor = futures_rustls::TlsAcceptor::from(tls);
    let stream = compio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(AsyncStream::new(tcp)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))??;
    let peer_user = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| user_from_certificate(cert));
    let (mut rd, mut wr) = stream.split();
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let (head, head_len) = loop {
            match parse_head(&buf) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {
                    // An idle keep-alive connection, or a head that trickles in, is closed.
                    let wait = if buf.is_empty() { idle } else { HEAD_TIMEOUT };
                    match compio::time::timeout(wait, read_more(&mut rd, &mut buf)).await {
                        Ok(Ok(true)) => {}
                        Ok(Ok(false)) | Err(_) => return Ok(()),
                        Ok(Err(e)) => return Err(e),
                    }
                }
                Err(e) => {
                    refuse(&mut wr, &e).await?;
                    let _ = wr.close().await;
                    return Ok(());
                }
            }
        };
        buf.drain(..head_len);
        let framing = match body_framing(&head, limit) {
            Ok(f) => f,
            Err(e) => {
                // Read what the client is still sending before closing, or its kernel sees a
                // reset and the client never reads the 413.
                let announced = head
                    .header("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                refuse(&mut wr, &e).await?;
                drain(&mut rd, announced.saturating_sub(buf.len())).await;
                let _ = wr.close().await;
                return Ok(());
            }
        };
        if head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            wr.flush().await?;
        }
        let body = match framing {
            BodyFraming::Length(n) => {
                while buf.len() < n {
                    if !read_more(&mut rd, &mut buf).await? {
                        return Ok(());
                    }
                }
                buf.drain(..n).collect()
            }
            BodyFraming::Chunked => loop {
                match decode_chunked(&buf, limit) {
                    Ok(Some((body, used))) => {
                        buf.drain(..used);
                        break body;
                    }
                    Ok(None) => {
                        if !read_more(&mut rd, &mut buf).await? {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        refuse(&mut wr, &e).await?;
                        drain(&mut rd, DRAIN_LIMIT).await;
                        let _ = wr.close().await;
                        return Ok(());
                    }
                }
            },
        };
        let keep_alive = head.keep_alive();
        let (path, query) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (head.target.clone(), String::new()),
        };
        let request = Request {
            method: head.method,
            path,
            query,
            headers: head.headers,
            body,
            peer_user: peer_user.clone(),
        };
        let Response {
            status,
            headers,
            body,
        } = service.call(request).await;
        let body = match body {
            Body::Upgrade(on_upgrade) => {
                wr.write_all(&response_head(status, &headers, "", true))
                    .await?;
                wr.flush().await?;
                on_upgrade(super::Upgraded {
                    reader: Box::new(rd),
                    writer: Box::new(wr),
                    buffered: buf,
                })
                .await;
                return Ok(());
            }
            other => other,
        };
        let response = Response {
            status,
            headers,
            body,
        };
        if !write_response(&mut rd, &mut wr, &mut buf, response, keep_alive).await? || !keep_alive {
            let _ = wr.close().await;
            return Ok(());
        }
    }
}

/// Reads more bytes into `buf`; false at end of stream.
async fn read_more(rd: &mut Reader, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let n = rd.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Most bytes, and longest time, spent draining a refused request body.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads and discards up to `len` bytes (bounded), so closing does not reset the connection.
async fn drain(rd: &mut Reader, len: usize) {
    let mut left = len.min(DRAIN_LIMIT);
    let mut chunk = vec![0u8; 64 * 1024];
    let work = async {
        while left > 0 {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = compio::time::timeout(DRAIN_TIMEOUT, work).await;
}

/// Answers a request that could not be parsed with a Status; the caller closes the connection.
async fn refuse(wr: &mut Writer, e: &ParseError) -> io::Result<()> {
    let err = match e.status_code() {
        413 => ApiError::too_large(e.to_string()),
        code => ApiError::new(
            code,
            if code == 400 { "BadRequest" } else { "" },
            e.to_string(),
        ),
    };
    let body = serde_json::to_vec(&err.to_status()).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        err.code,
        reason_phrase(err.code),
        body.len()
    );
    wr.write_all(head.as_bytes()).await?;
    wr.write_all(&body).await?;
    wr.flush().await
}

fn response_head(
    status: u16,
    headers: &[(&'static str, String)],
    framing: &str,
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str(framing);
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Writes a response; false when the connection must close.
async fn write_response(
    rd: &mut Reader,
    wr: &mut Writer,
    buf: &mut Vec<u8>,
    response: Response,
    keep_alive: bool,
) -> io::Result<bool> {
    let Response {
        status,
        headers,
        body,
    } = response;
    match body {
        Body::Full(bytes) => {
            let framing = format!("Content-Length: {}\r\n", bytes.len());
            let mut out = response_head(status, &headers, &framing, keep_alive);
            out.extend_from_slice(&bytes);
            wr.write_all(&out).await?;
            wr.flush().await?;
            Ok(true)
        }
        Body::Stream(mut stream) => {
            let head = response_head(
                status,
                &headers,
                "Transfer-Encoding: chunked\r\n",
                keep_alive,
            );
            wr.write_all(&head).await?;
            wr.flush().await?;
            let mut scratch = [0u8; 4096];
            loop {
                // Watch for the client going away while waiting for the next chunk, so an idle
                // watch on a dead connection does not linger.
                match select(stream.next(), rd.read(&mut scratch)).await {
                    Either::Left((Some(chunk), _)) => {
                        let mut out = Vec::with_capacity(chunk.len() + 16);
                        push_chunk(&mut out, &chunk);
                        // Coalesce whatever else is ready into the same write.
                        while let Some(Some(more)) = stream.next().now_or_never() {
                            push_chunk(&mut out, &more);
                        }
                        wr.write_all(&out).await?;
                        wr.flush().await?;
                    }
                    Either::Left((None, _)) => {
                        wr.write_all(b"0\r\n\r\n").await?;
                        wr.flush().await?;
                        return Ok(true);
                    }
                    Either::Right((Ok(0), _)) | Either::Right((Err(_), _)) => return Ok(false),
                    Either::Right((Ok(n), _)) => buf.extend_from_slice(&scratch[..n]),
                }
            }
        }
        // Answered in `connection` before this is called.
        Body::Upgrade(_) => Ok(false),
    }
}

fn push_chunk(out: &mut Vec<u8>, chunk: &Bytes) {
    if chunk.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
    out.extend_from_slice(chunk);
    out.extend_from_slice(b"\r\n");
}
