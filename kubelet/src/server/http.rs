//! Just enough HTTP/1.1 for the kubelet's endpoints: one request per connection, no request
//! bodies, responses with a length or chunked.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One request head.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Query parameters, percent-decoded, in order (repeated keys such as `command` kept).
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter as Kubernetes reads them: absent is false, present-but-empty is true.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("" | "true" | "1" | "True" | "TRUE"))
    }
}

/// Reads one request head; `Ok(None)` when the peer closed or sent something unparsable.
pub async fn read_request<R: AsyncRead + Unpin>(rd: &mut R) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let target = req.path.unwrap_or("/");
                let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
                return Ok(Some(Request {
                    method: req.method.unwrap_or("GET").to_string(),
                    path: percent_decode(path),
                    query: parse_query(raw_query),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                }));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Ok(None),
        }
    }
}

/// Splits and decodes `a=1&b=x%20y&b=z`.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` and `+`; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(code: u16) -> &'static str {
    match code {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// The status line and headers, ending with the blank line.
pub fn head(code: u16, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Writes a whole response and closes the connection's write side.
pub async fn respond<W: AsyncWrite + Unpin>(
    wr: &mut W,
    code: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let len = body.len().to_string();
    let mut out = head(
        code,
        &[
            ("Content-Type", content_type),
            ("Content-Length", &len),
            ("Connection", "close"),
        ],
    );
    out.extend_from_slice(body);
    wr.write_all(&out).await?;
    wr.flush().await?;
    wr.shutdown().await
}

/// A chunked response body being written.
pub struct Chunked<'a, W> {
    wr: &'a mut W,
}

impl<'a, W: AsyncWrite + Unpin> Chunked<'a, W> {
    /// Writes the head of a chunked 200 response.
    pub async fn start(wr: &'a mut W, content_type: &str) -> std::io::Result<Self> {
        let out = head(
            200,
            &[
                ("Content-Type", content_type),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "close"),
            ],
        );
        wr.write_all(&out).await?;
        wr.flush().await?;
        Ok(Chunked { wr })
    }

    /// Sends `data` as one chunk, at once.
    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.wr.write_all(&out).await?;
        self.wr.flush().await
    }

    pub async fn finish(self) -> std::io::Result<()> {
        self.wr.write_all(b"0\r\n\r\n").await?;
        self.wr.flush().await?;
        self.wr.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_request_with_repeated_query_keys() {
        let raw = b"GET /exec/ns/p/c?command=sh&command=-c&command=echo+a%20b&tty=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        let req = read_request(&mut &raw[..])
            .await
            .unwrap()
            .expect("a request");
        assert_eq!(req.path, "/exec/ns/p/c");
        let commands: Vec<&str> = req
            .query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(commands, ["sh", "-c", "echo a b"]);
        assert!(req.flag("tty") && !req.flag("stdin"));
        assert_eq!(req.header("upgrade"), Some("websocket"));
    }

    #[tokio::test]
    async fn garbage_and_eof_are_no_request() {
        assert!(read_request(&mut &b""[..]).await.unwrap().is_none());
        assert!(read_request(&mut &b"\x00\x01 nonsense\r\n\r\n"[..])
            .await
            .unwrap()
            .is_none());
    }
}
