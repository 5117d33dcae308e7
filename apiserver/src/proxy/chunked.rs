//! An incremental decoder for chunked transfer coding: bytes arrive in any split, data leaves as
//! soon as it is complete.

#[derive(Debug, Default)]
enum State {
    /// Waiting for a `<hex size>[;ext]\r\n` line.
    #[default]
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(usize),
    /// The `\r\n` after a chunk's data.
    DataEnd,
    /// After the last chunk; trailers are ignored.
    Done,
}

#[derive(Debug, Default)]
pub struct ChunkDecoder {
    state: State,
}

impl ChunkDecoder {
    /// Consumes what it can from `raw`; returns the decoded data and whether the body ended.
    /// `Err` on a malformed size line.
    pub fn decode(&mut self, raw: &mut Vec<u8>) -> Result<(Vec<u8>, bool), ()> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            match self.state {
                State::Size => {
                    let Some(end) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    let line = std::str::from_utf8(&raw[at..at + end]).map_err(|_| ())?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16).map_err(|_| ())?;
                    at += end + 2;
                    self.state = if size == 0 {
                        State::Done
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    let take = left.min(raw.len() - at);
                    if take == 0 {
                        break;
                    }
                    out.extend_from_slice(&raw[at..at + take]);
                    at += take;
                    self.state = if take == left {
                        State::DataEnd
                    } else {
                        State::Data(left - take)
                    };
                }
                State::DataEnd => {
                    if raw.len() - at < 2 {
                        break;
                    }
                    at += 2;
                    self.state = State::Size;
                }
                State::Done => {
                    raw.clear();
                    return Ok((out, true));
                }
            }
        }
        raw.drain(..at);
        Ok((out, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut d = ChunkDecoder::default();
            let mut raw = body[..split].to_vec();
            let (mut out, _) = d.decode(&mut raw).unwrap();
            raw.extend_from_slice(&body[split..]);
            let (more, done) = d.decode(&mut raw).unwrap();
            out.extend(more);
            assert!(done, "split {split}");
            assert_eq!(out, b"hello, world", "split {split}");
        }
    }

    #[test]
    fn a_bad_size_is_an_error() {
        let mut raw = b"zz\r\n".to_vec();
        assert!(ChunkDecoder::default().decode(&mut raw).is_err());
    }
}
