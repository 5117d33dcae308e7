//! HTTP/1.1 request parsing: the head (via `httparse`), then a body by Content-Length or chunked
//! transfer coding, with limits. Pure functions over a buffer, so they can be fuzzed.

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// A request head: method, target, headers (names lower-cased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after this request.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        match self.minor_version {
            0 => conn.is_some_and(|c| c.contains("keep-alive")),
            _ => !conn.is_some_and(|c| c.contains("close")),
        }
    }
}

/// What is wrong with a request, with the status code to answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("unsupported transfer encoding {0:?}")]
    UnsupportedEncoding(String),
}

impl ParseError {
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::Malformed(_) => 400,
            ParseError::HeadTooLarge => 431,
            ParseError::BodyTooLarge { .. } => 413,
            ParseError::UnsupportedEncoding(_) => 501,
        }
    }
}

/// Parses a request head from the front of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((head, len)))` gives the head and how many bytes it used.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                Err(ParseError::HeadTooLarge)
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Complete(len)) => {
            if len > MAX_HEAD {
                return Err(ParseError::HeadTooLarge);
            }
            let headers = req
                .headers
                .iter()
                .map(|h| {
                    let value = std::str::from_utf8(h.value).map_err(|_| {
                        ParseError::Malformed(format!("header {} is not UTF-8", h.name))
                    })?;
                    Ok((h.name.to_ascii_lowercase(), value.trim().to_string()))
                })
                .collect::<Result<Vec<_>, ParseError>>()?;
            let head = RequestHead {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                minor_version: req.version.unwrap_or(1),
                headers,
            };
            Ok(Some((head, len)))
        }
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::HeadTooLarge),
        Err(e) => Err(ParseError::Malformed(e.to_string())),
    }
}

/// How the body of a request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Length(usize),
    Chunked,
}

/// The framing of the body that follows `head`, refusing bodies over `limit` bytes up front.
pub fn body_framing(head: &RequestHead, limit: usize) -> Result<BodyFraming, ParseError> {
    if let Some(te) = head.header("transfer-encoding") {
        if te.eq_ignore_ascii_case("chunked") {
            return Ok(BodyFraming::Chunked);
        }
        return Err(ParseError::UnsupportedEncoding(te.to_string()));
    }
    let mut lengths = head.headers.iter().filter(|(n, _)| n == "content-length");
    let Some((_, first)) = lengths.next() else {
        return Ok(BodyFraming::Length(0));
    };
    if lengths.any(|(_, v)| v != first) {
        return Err(ParseError::Malformed(
            "conflicting Content-Length headers".into(),
        ));
    }
    let len: usize = first
        .parse()
        .map_err(|_| ParseError::Malformed(format!("invalid Content-Length {first:?}")))?;
    if len > limit {
        return Err(ParseError::BodyTooLarge { limit });
    }
    Ok(BodyFraming::Length(len))
}

/// Decodes a chunked body at the front of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((body, len)))` gives the body and how many bytes of `buf` it used (trailers included).
pub fn decode_chunked(buf: &[u8], limit: usize) -> Result<Option<(Vec<u8>, usize)>, ParseError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_end) = find_crlf(&buf[pos..]) else {
            return if buf.len() - pos > 1024 {
                Err(ParseError::Malformed("chunk size line too long".into()))
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&buf[pos..pos + line_end])
            .map_err(|_| ParseError::Malformed("chunk size is not ASCII".into()))?;
        // Chunk extensions (";name=value") are allowed and ignored.
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ParseError::Malformed(format!("invalid chunk size {size_text:?}")))?;
        pos += line_end + 2;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            loop {
                let Some(end) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len().saturating_add(size) > limit {
            return Err(ParseError::BodyTooLarge { limit });
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(ParseError::Malformed("chunk not followed by CRLF".into()));
        }
        pos += 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn head_parses_in_pieces() {
        let raw =
            b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\nrest";
        assert_eq!(parse_head(&raw[..20]).unwrap(), None);
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 4);
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/api/v1/pods?watch=1");
        assert_eq!(head.header("authorization"), Some("Bearer t"));
        assert!(head.keep_alive());
    }

    #[test]
    fn keep_alive_rules() {
        let h10 = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().0;
        assert!(!h10.keep_alive());
        let close = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert!(!close.keep_alive());
    }

    #[test]
    fn framing_and_limits() {
        let head = |h: &str| {
            parse_head(format!("POST / HTTP/1.1\r\n{h}\r\n").as_bytes())
                .unwrap()
                .unwrap()
                .0
        };
        assert_eq!(
            body_framing(&head("Content-Length: 10\r\n"), 100),
            Ok(BodyFraming::Length(10))
        );
        assert_eq!(body_framing(&head(""), 100), Ok(BodyFraming::Length(0)));
        assert_eq!(
            body_framing(&head("Content-Length: 101\r\n"), 100),
            Err(ParseError::BodyTooLarge { limit: 100 })
        );
        assert_eq!(
            body_framing(&head("Transfer-Encoding: chunked\r\n"), 100),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            body_framing(&head("Content-Length: x\r\n"), 100)
                .unwrap_err()
                .status_code(),
            400
        );
        assert_eq!(
            body_framing(&head("Content-Length: 1\r\nContent-Length: 2\r\n"), 100)
                .unwrap_err()
                .status_code(),
            400
        );
        assert_eq!(
            body_framing(&head("Transfer-Encoding: gzip\r\n"), 100)
                .unwrap_err()
                .status_code(),
            501
        );
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, used) = decode_chunked(raw, 100).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&raw[used..], b"NEXT");
        assert_eq!(decode_chunked(&raw[..10], 100).unwrap(), None);
        assert_eq!(
            decode_chunked(raw, 5),
            Err(ParseError::BodyTooLarge { limit: 5 })
        );
        assert!(decode_chunked(b"zz\r\n", 100).is_err());
        assert!(decode_chunked(b"2\r\nabXX", 100).is_err());
    }

    #[test]
    fn oversized_head_is_refused() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        while raw.len() <= MAX_HEAD {
            raw.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse_head(&raw).unwrap_err().status_code(), 431);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]
        /// The parsers never panic, whatever the bytes.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some((head, len))) = parse_head(&bytes) {
                prop_assert!(len <= bytes.len());
                let _ = body_framing(&head, 1 << 20);
            }
            if let Ok(Some((body, len))) = decode_chunked(&bytes, 1 << 20) {
                prop_assert!(len <= bytes.len());
                prop_assert!(body.len() <= len);
            }
        }

        /// Any body, cut into any chunks, decodes back to itself.
        #[test]
        fn chunked_round_trip(body in proptest::collection::vec(any::<u8>(), 0..300), cut in 1usize..40) {
            let mut raw = Vec::new();
            for chunk in body.chunks(cut) {
                raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                raw.extend_from_slice(chunk);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            let (decoded, used) = decode_chunked(&raw, 1 << 20).unwrap().unwrap();
            prop_assert_eq!(decoded, body);
            prop_assert_eq!(used, raw.len());
        }
    }
}
