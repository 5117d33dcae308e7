//! The HTTPS front end: HTTP/1.1 over rustls, with its network I/O on io_uring (compio), or on
//! epoll when io_uring is unavailable or disabled.

mod parse;
mod server;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub use parse::{
    body_framing, decode_chunked, parse_head, BodyFraming, ParseError, RequestHead, MAX_HEAD,
};
pub use server::{serve, IoMode, ServerConfig, ServerError, ServerHandle, IDLE_TIMEOUT};

use crate::auth::UserInfo;

/// One request, fully read.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded is the caller's job (Kubernetes names need none).
    pub path: String,
    /// The raw query string, without '?'.
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The identity from the client certificate, if one was presented and verified.
    pub peer_user: Option<UserInfo>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A stream of body chunks, written with chunked transfer coding as they come.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Bytes>>>;

pub enum Body {
    Full(Bytes),
    Stream(ChunkStream),
    /// The response is `101 Switching Protocols`: after its head the connection belongs to this
    /// function (pods/exec).
    Upgrade(OnUpgrade),
}

/// A connection handed over after a `101 Switching Protocols` response.
pub struct Upgraded {
    pub reader: Box<dyn futures::io::AsyncRead + Unpin>,
    pub writer: Box<dyn futures::io::AsyncWrite + Unpin>,
    /// What the client sent after its request head, already read off the connection.
    pub buffered: Vec<u8>,
}

/// Takes over an upgraded connection; the connection closes when the future ends.
pub type OnUpgrade = Box<dyn FnOnce(Upgraded) -> Pin<Box<dyn Future<Output = ()>>>>;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Body::Full(body.into()),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::new(
            status,
            "application/json",
            serde_json::to_vec(value).unwrap_or_default(),
        )
    }

    pub fn stream(status: u16, content_type: &str, stream: ChunkStream) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Body::Stream(stream),
        }
    }

    /// `101 Switching Protocols` with `headers`; `on_upgrade` then owns the connection.
    pub fn upgrade(headers: Vec<(&'static str, String)>, on_upgrade: OnUpgrade) -> Self {
        Response {
            status: 101,
            headers,
            body: Body::Upgrade(on_upgrade),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the server calls for each request. Futures run on the connection's I/O thread.
pub trait Service: Send + Sync + 'static {
    fn call(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + '_>>;
}

/// The reason phrase for a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
