//! The protobuf wire format: varints, fixed-width numbers and length-delimited fields.

use super::ProtobufError;

/// A field's value as it appears on the wire, before the schema gives it a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads `(field number, value)` pairs from one message's bytes.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn truncated(&self) -> ProtobufError {
        ProtobufError::Truncated { offset: self.pos }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated())?;
            self.pos += 1;
            // The tenth byte may only carry the top bit of a 64-bit value.
            if i == 9 && b > 1 {
                return Err(ProtobufError::VarintOverflow { offset: self.pos });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::VarintOverflow { offset: self.pos })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.truncated())?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field, or None at the end of the message.
    pub(super) fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, ProtobufError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let offset = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|&n| n != 0)
            .ok_or(ProtobufError::BadFieldNumber { offset })?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(fixed(self.take(8)?))),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.truncated())?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(fixed(self.take(4)?))),
            wire_type => {
                return Err(ProtobufError::BadWireType {
                    number,
                    wire_type: wire_type as u8,
                })
            }
        };
        Ok(Some((number, value)))
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

/// Every varint in a packed repeated field's bytes.
pub(super) fn packed_varints(buf: &[u8]) -> Result<Vec<u64>, ProtobufError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while r.pos < buf.len() {
        out.push(r.varint()?);
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod encode {
    //! A minimal encoder, so tests can build messages by hand.

    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn uint(out: &mut Vec<u8>, number: u32, v: u64) {
        varint(out, u64::from(number) << 3);
        varint(out, v);
    }

    pub fn bytes(out: &mut Vec<u8>, number: u32, b: &[u8]) {
        varint(out, (u64::from(number) << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    pub fn string(out: &mut Vec<u8>, number: u32, s: &str) {
        bytes(out, number, s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, ProtobufError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while let Some(f) = r.next_field()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn reads_each_wire_type() {
        let buf = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 0, 0, 0, 0, 0, 0, 0x80, // 2: fixed64
            0x1a, 0x03, b'a', b'b', b'c', // 3: bytes "abc"
            0x25, 0x01, 0x02, 0x03, 0x04, // 4: fixed32
        ];
        assert_eq!(
            all(&buf).unwrap(),
            vec![
                (1, Value::Varint(150)),
                (2, Value::Fixed64(0x8000_0000_0000_0001)),
                (3, Value::Bytes(b"abc")),
                (4, Value::Fixed32(0x0403_0201)),
            ]
        );
    }

    #[test]
    fn large_field_numbers_and_max_varint() {
        let mut buf = Vec::new();
        encode::uint(&mut buf, 1000, u64::MAX);
        assert_eq!(all(&buf).unwrap(), vec![(1000, Value::Varint(u64::MAX))]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(matches!(
            all(&[0x08]),
            Err(ProtobufError::Truncated { offset: 1 })
        ));
        assert!(matches!(
            all(&[0x0a, 0x05, b'a']),
            Err(ProtobufError::Truncated { .. })
        ));
        assert!(matches!(
            all(&[0x0b]),
            Err(ProtobufError::BadWireType {
                number: 1,
                wire_type: 3
            })
        ));
        assert!(matches!(
            all(&[0x00, 0x01]),
            Err(ProtobufError::BadFieldNumber { offset: 0 })
        ));
        assert!(matches!(
            all(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(ProtobufError::VarintOverflow { .. })
        ));
        // A length past usize::MAX on 64-bit, or past the buffer: never a panic.
        assert!(all(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn packed() {
        assert_eq!(packed_varints(&[0x01, 0x96, 0x01]).unwrap(), vec![1, 150]);
        assert!(packed_varints(&[0x96]).is_err());
    }
}
