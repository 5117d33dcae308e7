//! A minimal HTTP/1.1 keep-alive client over rustls: one request at a time per connection, bearer
//! token auth, Content-Length or chunked bodies, and a line reader for watch streams. Kept small
//! so the client's cost per request is low and identical whichever I/O mode the server uses.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Most headers a response may carry.
const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading the CA certificate {path}")]
    ReadCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {path} holds no usable certificate")]
    NoCa { path: String },
    #[error("building the TLS client configuration")]
    Tls(#[source] rustls::Error),
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} on a connection to the API server")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("the server closed the connection")]
    Closed,
}

/// What a connection needs to reach the server: address, TLS roots and credentials.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub token: String,
    connector: TlsConnector,
}

impl Target {
    /// Trusts only the CA in `ca_pem` (the server's own CA).
    pub fn new(addr: SocketAddr, ca_pem: &Path, token: String) -> Result<Self, ClientError> {
        let pem = std::fs::read(ca_pem).map_err(|source| ClientError::ReadCa {
            path: ca_pem.display().to_string(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
            .filter_map(Result::ok)
            .collect();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ClientError::NoCa {
                path: ca_pem.display().to_string(),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ClientError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Target {
            addr,
            token,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    pub async fn connect(&self) -> Result<Conn, ClientError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr,
                source,
            })?;
        tcp.set_nodelay(true).map_err(|source| ClientError::Io {
            op: "setting TCP_NODELAY",
            source,
        })?;
        let stream = self
            .connector
            .connect(ServerName::from(self.addr.ip()), tcp)
            .await
            .map_err(|source| ClientError::Io {
                op: "TLS handshake",
                source,
            })?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            auth: format!("Authorization: Bearer {}\r\n", self.token),
            host: format!("Host: {}\r\n", self.addr),
        })
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(400)]).into_owned()
    }
}

enum Framing {
    Length(usize),
    Chunked,
}

struct Head {
    status: u16,
    framing: Framing,
    len: usize,
}

/// Parses a response head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Malformed(e.to_string())),
    };
    let status = resp
        .code
        .ok_or_else(|| ClientError::Malformed("no status code".into()))?;
    let mut framing = Framing::Length(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| ClientError::Malformed("bad Content-Length".into()))?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value.eq_ignore_ascii_case(b"chunked")
        {
            framing = Framing::Chunked;
        }
    }
    Ok(Some(Head {
        status,
        framing,
        len,
    }))
}

/// Decodes one chunk at the start of `buf`: `Some((data range, bytes used))`, a zero-length
/// range for the last chunk, `None` while incomplete. Chunk extensions and trailers are not sent
/// by the server and are not supported.
fn decode_chunk(buf: &[u8]) -> Result<Option<(std::ops::Range<usize>, usize)>, ClientError> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let size_text = std::str::from_utf8(&buf[..line_end])
        .map_err(|_| ClientError::Malformed("chunk size is not text".into()))?;
    let size = usize::from_str_radix(size_text.trim(), 16)
        .map_err(|_| ClientError::Malformed(format!("bad chunk size {size_text:?}")))?;
    let start = line_end + 2;
    let end = start + size;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ClientError::Malformed("chunk not followed by CRLF".into()));
    }
    Ok(Some((start..end, end + 2)))
}

/// One keep-alive connection.
pub struct Conn {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
    auth: String,
    host: String,
}

impl Conn {
    async fn fill(&mut self) -> Result<(), ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|source| ClientError::Io {
                op: "reading",
                source,
            })?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let mut out = format!("{method} {path} HTTP/1.1\r\n{}{}", self.host, self.auth);
        out.push_str("Accept: application/json\r\n");
        if !body.is_empty() {
            out.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|source| ClientError::Io {
                op: "writing",
                source,
            })?;
        self.stream.flush().await.map_err(|source| ClientError::Io {
            op: "flushing",
            source,
        })
    }

    async fn read_head(&mut self) -> Result<Head, ClientError> {
        loop {
            if let Some(head) = parse_head(&self.buf)? {
                self.buf.drain(..head.len);
                return Ok(head);
            }
            self.fill().await?;
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, ClientError> {
        self.send(method, path, content_type, body).await?;
        let head = self.read_head().await?;
        let body = match head.framing {
            Framing::Length(n) => {
                while self.buf.len() < n {
                    self.fill().await?;
                }
                self.buf.drain(..n).collect()
            }
            Framing::Chunked => {
                let mut body = Vec::new();
                loop {
                    match decode_chunk(&self.buf)? {
                        Some((range, used)) => {
                            let last = range.is_empty();
                            body.extend_from_slice(&self.buf[range]);
                            self.buf.drain(..used);
                            if last {
                                break body;
                            }
                        }
                        None => self.fill().await?,
                    }
                }
            }
        };
        Ok(Response {
            status: head.status,
            body,
        })
    }

    /// Starts a streaming GET (a watch) and returns its status once the head has arrived; the
    /// server subscribes the watcher before it sends the head.
    pub async fn start_stream(mut self, path: &str) -> Result<(u16, Stream), ClientError> {
        self.send("GET", path, "", b"").await?;
        let head = self.read_head().await?;
        Ok((
            head.status,
            Stream {
                conn: self,
                data: Vec::new(),
            },
        ))
    }
}

/// The body of a chunked streaming response, read line by line.
pub struct Stream {
    conn: Conn,
    /// De-chunked bytes not yet returned as lines.
    data: Vec<u8>,
}

impl Stream {
    /// The next newline-terminated line (without the newline).
    pub async fn next_line(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(pos) = self.data.iter().position(|&b| b == b'\n') {
                let line = self.data[..pos].to_vec();
                self.data.drain(..=pos);
                return Ok(line);
            }
            match decode_chunk(&self.conn.buf)? {
                Some((range, _)) if range.is_empty() => return Err(ClientError::Closed),
                Some((range, used)) => {
                    self.data.extend_from_slice(&self.conn.buf[range]);
                    self.conn.buf.drain(..used);
                }
                None => self.conn.fill().await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_content_length_head() {
        let buf = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"a\":1}";
        let head = parse_head(buf).unwrap().unwrap();
        assert_eq!(head.status, 201);
        assert!(matches!(head.framing, Framing::Length(12)));
        assert_eq!(&buf[head.len..], b"{\"a\":1}");
    }

    #[test]
    fn partial_head_is_none_and_chunked_is_seen() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-")
            .unwrap()
            .is_none());
        let head = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(head.framing, Framing::Chunked));
    }

    #[test]
    fn decodes_chunks_and_waits_for_incomplete_ones() {
        let buf = b"5\r\nhello\r\n0\r\n\r\n";
        let (range, used) = decode_chunk(buf).unwrap().unwrap();
        assert_eq!(&buf[range], b"hello");
        assert_eq!(used, 10);
        let (last, used2) = decode_chunk(&buf[used..]).unwrap().unwrap();
        assert!(last.is_empty());
        assert_eq!(used2, 5);
        assert!(decode_chunk(b"a\r\nhello").unwrap().is_none());
        assert!(decode_chunk(b"zz\r\n").is_err());
        assert!(decode_chunk(b"2\r\nabXY").is_err());
    }
}
