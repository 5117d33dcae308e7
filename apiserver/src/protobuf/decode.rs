//! Table-driven decoding of one protobuf message into the JSON Kubernetes would write for it.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::schema::{self, Card, Field, Message, Ty};
use super::wire::{self, Reader, Value as Wire};
use super::ProtobufError;

/// Deeper than any Kubernetes object nests; stops hostile input from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// Decodes `buf` as message `m` into a JSON object.
pub(super) fn message(m: &Message, buf: &[u8]) -> Result<Map<String, Value>, ProtobufError> {
    let mut out = Map::new();
    decode_into(m, buf, &mut out, 0)?;
    Ok(out)
}

fn decode_into(
    m: &Message,
    buf: &[u8],
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let mut r = Reader::new(buf);
    while let Some((number, raw)) = r.next_field()? {
        // Fields newer than our table are skipped, as any protobuf reader does.
        let Some(field) = m.field(number) else {
            continue;
        };
        decode_field(field, raw, out, depth).map_err(|e| e.at(field.1))?;
    }
    Ok(())
}

fn decode_field(
    field: &Field,
    raw: Wire<'_>,
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ProtobufError> {
    let Field(_, name, ty, card) = *field;
    match card {
        Card::Opt => {
            out.insert(name.to_string(), value(ty, raw, depth)?);
        }
        Card::OmitZero => {
            let v = value(ty, raw, depth)?;
            if is_zero(&v) {
                out.remove(name);
            } else {
                out.insert(name.to_string(), v);
            }
        }
        Card::Rep => {
            let items = match (ty, raw) {
                (Ty::Bool | Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64, Wire::Bytes(b)) => {
                    wire::packed_varints(b)?
                        .into_iter()
                        .map(|v| value(ty, Wire::Varint(v), depth))
                        .collect::<Result<Vec<_>, _>>()?
                }
                _ => vec![value(ty, raw, depth)?],
            };
            let slot = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = slot {
                a.extend(items);
            }
        }
        Card::Map => {
            let (key, v) = map_entry(ty, bytes(raw)?, depth)?;
            let slot = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = slot {
                o.insert(key, v);
            }
        }
        Card::Inline => {
            let Ty::Msg(i) = ty else {
                return Err(ProtobufError::Table { field: name });
            };
            let m = schema::message(i).ok_or(ProtobufError::Table { field: name })?;
            decode_into(m, bytes(raw)?, out, depth + 1)?;
        }
    }
    Ok(())
}

/// A map entry {1: key, 2: value}; an absent value is its type's zero value.
fn map_entry(ty: Ty, buf: &[u8], depth: usize) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut v = None;
    let mut r = Reader::new(buf);
    while let Some((number, raw)) = r.next_field()? {
        match number {
            1 => key = string(bytes(raw)?)?,
            2 => v = Some(value(ty, raw, depth).map_err(|e| e.at_key(&key))?),
            _ => {}
        }
    }
    let v = match v {
        Some(v) => v,
        None => zero(ty, depth)?,
    };
    Ok((key, v))
}

fn zero(ty: Ty, depth: usize) -> Result<Value, ProtobufError> {
    match ty {
        Ty::Bool | Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 => value(ty, Wire::Varint(0), depth),
        Ty::F64 => value(ty, Wire::Fixed64(0), depth),
        Ty::F32 => value(ty, Wire::Fixed32(0), depth),
        _ => value(ty, Wire::Bytes(&[]), depth),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn bytes(raw: Wire<'_>) -> Result<&[u8], ProtobufError> {
    match raw {
        Wire::Bytes(b) => Ok(b),
        _ => Err(ProtobufError::WireTypeMismatch),
    }
}

fn varint(raw: Wire<'_>) -> Result<u64, ProtobufError> {
    match raw {
        Wire::Varint(v) => Ok(v),
        _ => Err(ProtobufError::WireTypeMismatch),
    }
}

fn string(b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::InvalidUtf8)
}

fn float(f: f64) -> Result<Value, ProtobufError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or(ProtobufError::NotFinite)
}

/// One value of type `ty`.
fn value(ty: Ty, raw: Wire<'_>, depth: usize) -> Result<Value, ProtobufError> {
    Ok(match ty {
        Ty::Str => Value::String(string(bytes(raw)?)?),
        Ty::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes(raw)?)),
        Ty::Bool => Value::Bool(varint(raw)? != 0),
        // Negative int32s travel sign-extended to 64 bits; the low half is the value.
        Ty::I32 => Value::from(varint(raw)? as i32),
        Ty::I64 => Value::from(varint(raw)? as i64),
        Ty::U32 => Value::from(varint(raw)? as u32),
        Ty::U64 => Value::from(varint(raw)?),
        Ty::F64 => match raw {
            Wire::Fixed64(v) => float(f64::from_bits(v))?,
            _ => return Err(ProtobufError::WireTypeMismatch),
        },
        Ty::F32 => match raw {
            Wire::Fixed32(v) => float(f64::from(f32::from_bits(v)))?,
            _ => return Err(ProtobufError::WireTypeMismatch),
        },
        Ty::Msg(i) => {
            let m = schema::message(i).ok_or(ProtobufError::Table { field: "?" })?;
            let mut out = Map::new();
            decode_into(m, bytes(raw)?, &mut out, depth + 1)?;
            Value::Object(out)
        }
        Ty::Time => super::special::time(bytes(raw)?, false)?,
        Ty::MicroTime => super::special::time(bytes(raw)?, true)?,
        Ty::Duration => super::special::duration(bytes(raw)?)?,
        Ty::Quantity => super::special::quantity(bytes(raw)?)?,
        Ty::IntOrString => super::special::int_or_string(bytes(raw)?)?,
        Ty::RawExtension | Ty::FieldsV1 => super::special::raw_json(bytes(raw)?)?,
    })
}

/// The fields of a special message, by number: for the decoders in `special`.
pub(super) fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, ProtobufError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(f) = r.next_field()? {
        out.push(f);
    }
    Ok(out)
}

pub(super) fn last_varint(
    fields: &[(u32, Wire<'_>)],
    number: u32,
) -> Result<Option<u64>, ProtobufError> {
    match fields.iter().rev().find(|(n, _)| *n == number) {
        Some((_, raw)) => varint(*raw).map(Some),
        None => Ok(None),
    }
}

pub(super) fn last_bytes<'a>(
    fields: &[(u32, Wire<'a>)],
    number: u32,
) -> Result<Option<&'a [u8]>, ProtobufError> {
    match fields.iter().rev().find(|(n, _)| *n == number) {
        Some((_, raw)) => bytes(*raw).map(Some),
        None => Ok(None),
    }
}

pub(super) fn last_string(
    fields: &[(u32, Wire<'_>)],
    number: u32,
) -> Result<Option<String>, ProtobufError> {
    last_bytes(fields, number)?.map(string).transpose()
}

#[cfg(test)]
mod tests {
    use super::super::wire::encode;
    use super::*;
    use serde_json::json;

    fn deployment(build: impl FnOnce(&mut Vec<u8>)) -> Result<Value, ProtobufError> {
        let mut b = Vec::new();
        build(&mut b);
        let m = schema::root("apps/v1", "Deployment").expect("deployment");
        message(m, &b).map(Value::Object)
    }

    fn spec(build: impl FnOnce(&mut Vec<u8>)) -> Result<Value, ProtobufError> {
        let mut inner = Vec::new();
        build(&mut inner);
        deployment(|b| encode::bytes(b, 2, &inner))
    }

    #[test]
    fn present_zero_kept_omitempty_zero_dropped() {
        let v = spec(|b| {
            encode::uint(b, 1, 0); // replicas: *int32
            encode::uint(b, 5, 0); // minReadySeconds: int32,omitempty
            encode::uint(b, 7, 0); // paused: bool,omitempty
        })
        .unwrap();
        assert_eq!(v, json!({"spec": {"replicas": 0}}));
        let v = spec(|b| encode::uint(b, 5, 30)).unwrap();
        assert_eq!(v, json!({"spec": {"minReadySeconds": 30}}));
    }

    #[test]
    fn negative_int32_and_unknown_fields() {
        let v = spec(|b| {
            encode::uint(b, 1, -2i64 as u64);
            encode::string(b, 500, "from the future");
            encode::uint(b, 501, 7);
        })
        .unwrap();
        assert_eq!(v, json!({"spec": {"replicas": -2}}));
    }

    #[test]
    fn maps_and_repeated() {
        // metadata (1): labels (11) twice, one entry without a value; finalizers (14) twice.
        let mut meta = Vec::new();
        let mut entry = Vec::new();
        encode::string(&mut entry, 1, "a");
        encode::string(&mut entry, 2, "b");
        encode::bytes(&mut meta, 11, &entry);
        let mut keyless = Vec::new();
        encode::string(&mut keyless, 1, "empty");
        encode::bytes(&mut meta, 11, &keyless);
        encode::string(&mut meta, 14, "f1");
        encode::string(&mut meta, 14, "f2");
        let v = deployment(|b| encode::bytes(b, 1, &meta)).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"labels": {"a": "b", "empty": ""}, "finalizers": ["f1", "f2"]}})
        );
    }

    #[test]
    fn packed_and_unpacked_repeated_numbers() {
        // PodFailurePolicyOnExitCodesRequirement.values (3) is repeated int32.
        let m = schema::MESSAGES_FOR_TEST
            .iter()
            .position(|m| m.0 == "k8s.io.api.batch.v1.PodFailurePolicyOnExitCodesRequirement")
            .expect("message") as u16;
        let m = schema::message(m).unwrap();
        let mut b = Vec::new();
        encode::bytes(&mut b, 3, &[1, 2]);
        encode::uint(&mut b, 3, 42);
        assert_eq!(
            Value::Object(message(m, &b).unwrap()),
            json!({"values": [1, 2, 42]})
        );
    }

    #[test]
    fn errors_name_their_field() {
        let err = spec(|b| encode::string(b, 1, "x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.replicas: wire type does not match the field's type"
        );
        let err = deployment(|b| encode::bytes(b, 1, &[0x0a, 0x01, 0xff])).unwrap_err();
        assert_eq!(err.to_string(), "metadata.name: string is not valid UTF-8");
    }

    #[test]
    fn deep_nesting_is_refused() {
        // No served kind's schema nests that deep, so enter the decoder past the limit.
        let m = schema::root("v1", "ConfigMap").unwrap();
        let mut out = Map::new();
        assert!(matches!(
            decode_into(m, &[], &mut out, MAX_DEPTH + 1),
            Err(ProtobufError::TooDeep)
        ));
    }
}
