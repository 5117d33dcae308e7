//! WebSocket (RFC 6455), the server side, as far as Kubernetes' channel protocols need it:
//! the handshake key, frame encoding and decoding, message reassembly.

use base64::Engine as _;

/// Appended to the client's key before hashing (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted from a client (stdin chunks and resizes are small).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The close code for a normal end (client-go reads it as a clean end of all streams).
pub const CLOSE_NORMAL: u16 = 1000;

/// What a client sent that breaks the protocol.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("client frame is not masked")]
    Unmasked,
    #[error("message of {0} bytes is too large")]
    TooLarge(u64),
    #[error("control frame is fragmented or too long")]
    BadControl,
    #[error("continuation frame without a message to continue")]
    StrayContinuation,
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// One whole, unmasked server frame (FIN set).
pub fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A binary message on a channel: the channel byte, then the data.
pub fn channel_message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    encode(OP_BINARY, &payload)
}

/// A close frame with `code`.
pub fn close_frame(code: u16) -> Vec<u8> {
    encode(OP_CLOSE, &code.to_be_bytes())
}

/// One frame off the wire.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// Takes one whole frame from the front of `buf`, unmasking it; `None` while incomplete.
fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Frame>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0F);
    if buf[1] & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if opcode & 0x8 != 0 && (len > 125 || !fin) {
        return Err(WsError::BadControl);
    }
    if len > MAX_MESSAGE as u64 {
        return Err(WsError::TooLarge(len));
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    buf.drain(..at + len);
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

/// A whole message: data (text or binary, reassembled) or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Reassembles messages from the bytes a client sends.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Opcode and data of a fragmented message in progress.
    partial: Option<(u8, Vec<u8>)>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, if the bytes so far hold one.
    pub fn next_message(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let Some(frame) = take_frame(&mut self.buf)? else {
                return Ok(None);
            };
            let (opcode, payload) = match frame.opcode {
                OP_PING => return Ok(Some(Message::Ping(frame.payload))),
                OP_PONG => return Ok(Some(Message::Pong)),
                OP_CLOSE => return Ok(Some(Message::Close)),
                OP_CONTINUATION => {
                    let (op, mut data) = self.partial.take().ok_or(WsError::StrayContinuation)?;
                    data.extend_from_slice(&frame.payload);
                    (op, data)
                }
                op => (op, frame.payload),
            };
            if payload.len() > MAX_MESSAGE {
                return Err(WsError::TooLarge(payload.len() as u64));
            }
            if !frame.fin {
                self.partial = Some((opcode, payload));
                continue;
            }
            return Ok(Some(if opcode == OP_TEXT {
                Message::Text(payload)
            } else {
                Message::Binary(payload)
            }));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client frame, masked as clients must.
    pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        assert_eq!(encode(OP_BINARY, b"hi"), [0x82, 2, b'h', b'i']);
        let mid = encode(OP_BINARY, &[0; 300]);
        assert_eq!(&mid[..4], &[0x82, 126, 1, 44]);
        let big = encode(OP_BINARY, &[0; 70_000]);
        assert_eq!(&big[..2], &[0x82, 127]);
        assert_eq!(big.len(), 70_000 + 10);
        assert_eq!(channel_message(3, b"{}"), [0x82, 3, 3, b'{', b'}']);
        assert_eq!(close_frame(CLOSE_NORMAL), [0x88, 2, 0x03, 0xe8]);
    }

    #[test]
    fn decodes_fragments_controls_and_partial_input() {
        let mut wire = client_frame(false, OP_BINARY, &[0, b'a', b'b']);
        wire.extend(client_frame(true, OP_PING, b"p"));
        wire.extend(client_frame(true, OP_CONTINUATION, &[b'c'; 200]));
        wire.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        // Byte by byte: nothing is lost or invented across splits.
        for b in wire {
            d.push(&[b]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        let mut data = vec![0, b'a', b'b'];
        data.extend([b'c'; 200]);
        assert_eq!(
            got,
            [
                Message::Ping(b"p".to_vec()),
                Message::Binary(data),
                Message::Close
            ]
        );
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut d = Decoder::default();
        d.push(&encode(OP_BINARY, b"x"));
        assert_eq!(d.next_message(), Err(WsError::Unmasked));
        let mut d = Decoder::default();
        d.push(&client_frame(true, OP_CONTINUATION, b"x"));
        assert_eq!(d.next_message(), Err(WsError::StrayContinuation));
        let mut d = Decoder::default();
        d.push(&client_frame(false, OP_PING, b"x"));
        assert_eq!(d.next_message(), Err(WsError::BadControl));
        let mut d = Decoder::default();
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        d.push(&huge);
        assert_eq!(d.next_message(), Err(WsError::TooLarge(1 << 40)));
    }
}
