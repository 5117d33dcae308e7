//! Messages whose JSON form is not an object of their fields: times, durations, quantities,
//! int-or-string, and embedded raw JSON.

use serde_json::Value;
use time::OffsetDateTime;

use super::decode::{fields, last_bytes, last_string, last_varint};
use super::ProtobufError;

/// meta/v1 Time and MicroTime {1: seconds, 2: nanos}. An empty message is Go's zero time,
/// which Kubernetes writes as null. Time drops the nanoseconds, as Kubernetes' decoder does;
/// MicroTime keeps microseconds.
pub(super) fn time(buf: &[u8], micro: bool) -> Result<Value, ProtobufError> {
    if buf.is_empty() {
        return Ok(Value::Null);
    }
    let f = fields(buf)?;
    let seconds = last_varint(&f, 1)?.unwrap_or(0) as i64;
    let nanos = if micro {
        i64::from(last_varint(&f, 2)?.unwrap_or(0) as i32)
    } else {
        0
    };
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    let t = OffsetDateTime::from_unix_timestamp_nanos(total)
        .map_err(|_| ProtobufError::BadTime { seconds })?;
    if !(0..=9999).contains(&t.year()) {
        return Err(ProtobufError::BadTime { seconds });
    }
    Ok(Value::String(if micro {
        berth_api::time::format_micro_time(t)
    } else {
        berth_api::time::format_time(t)
    }))
}

/// meta/v1 Duration {1: nanoseconds}, written as Go's `time.Duration.String()`.
pub(super) fn duration(buf: &[u8]) -> Result<Value, ProtobufError> {
    let nanos = last_varint(&fields(buf)?, 1)?.unwrap_or(0) as i64;
    Ok(Value::String(go_duration(nanos)))
}

fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let u = nanos.unsigned_abs();
    let mut s = String::from(if nanos < 0 { "-" } else { "" });
    if u < 1_000_000_000 {
        let (scale, unit) = match u {
            0..1_000 => (1, "ns"),
            1_000..1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        s.push_str(&fraction(u, scale));
        s.push_str(unit);
        return s;
    }
    let secs = u / 1_000_000_000;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    if h > 0 {
        s.push_str(&format!("{h}h"));
    }
    if secs >= 60 {
        s.push_str(&format!("{m}m"));
    }
    s.push_str(&fraction(u % 60_000_000_000, 1_000_000_000));
    s.push('s');
    s
}

/// `v / scale` with its remainder as trimmed decimal digits ("1.5", "2").
fn fraction(v: u64, scale: u64) -> String {
    let (whole, rem) = (v / scale, v % scale);
    if rem == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// api/resource Quantity {1: string}: already canonical, as the client's encoder wrote it.
pub(super) fn quantity(buf: &[u8]) -> Result<Value, ProtobufError> {
    let s = last_string(&fields(buf)?, 1)?.unwrap_or_default();
    Ok(Value::String(if s.is_empty() { "0".into() } else { s }))
}

/// util/intstr IntOrString {1: type (0 int, 1 string), 2: intVal, 3: strVal}.
pub(super) fn int_or_string(buf: &[u8]) -> Result<Value, ProtobufError> {
    let f = fields(buf)?;
    Ok(match last_varint(&f, 1)?.unwrap_or(0) {
        1 => Value::String(last_string(&f, 3)?.unwrap_or_default()),
        _ => Value::from(last_varint(&f, 2)?.unwrap_or(0) as i32),
    })
}

/// runtime RawExtension and meta/v1 FieldsV1 {1: raw}: the raw bytes are JSON.
pub(super) fn raw_json(buf: &[u8]) -> Result<Value, ProtobufError> {
    match last_bytes(&fields(buf)?, 1)? {
        None | Some([]) => Ok(Value::Null),
        Some(raw) => serde_json::from_slice(raw).map_err(ProtobufError::EmbeddedJson),
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::encode;
    use super::*;
    use serde_json::json;

    fn msg(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = Vec::new();
        build(&mut b);
        b
    }

    #[test]
    fn times() {
        let t = msg(|b| {
            encode::uint(b, 1, 1_704_164_705);
            encode::uint(b, 2, 123_456_789);
        });
        assert_eq!(time(&t, false).unwrap(), json!("2024-01-02T03:05:05Z"));
        assert_eq!(
            time(&t, true).unwrap(),
            json!("2024-01-02T03:05:05.123456Z")
        );
        assert_eq!(time(&[], false).unwrap(), Value::Null);
        let epoch = msg(|b| encode::uint(b, 2, 0));
        assert_eq!(time(&epoch, false).unwrap(), json!("1970-01-01T00:00:00Z"));
        let far = msg(|b| encode::uint(b, 1, i64::MAX as u64));
        assert!(matches!(
            time(&far, false),
            Err(ProtobufError::BadTime { .. })
        ));
        assert!(time(&[0x08], false).is_err());
    }

    #[test]
    fn durations() {
        let d = |n: i64| duration(&msg(|b| encode::uint(b, 1, n as u64))).unwrap();
        assert_eq!(d(0), json!("0s"));
        assert_eq!(d(3_600_000_000_000), json!("1h0m0s"));
        assert_eq!(d(90_500_000_000), json!("1m30.5s"));
        assert_eq!(d(1_500_000), json!("1.5ms"));
        assert_eq!(d(2_000), json!("2µs"));
        assert_eq!(d(7), json!("7ns"));
        assert_eq!(d(-5_000_000_000), json!("-5s"));
        assert_eq!(duration(&[]).unwrap(), json!("0s"));
    }

    #[test]
    fn quantities() {
        let q = msg(|b| encode::string(b, 1, "500m"));
        assert_eq!(quantity(&q).unwrap(), json!("500m"));
        assert_eq!(quantity(&[]).unwrap(), json!("0"));
    }

    #[test]
    fn int_or_strings() {
        let int = msg(|b| {
            encode::uint(b, 1, 0);
            encode::uint(b, 2, 8080);
        });
        assert_eq!(int_or_string(&int).unwrap(), json!(8080));
        let neg = msg(|b| encode::uint(b, 2, -1i64 as u64));
        assert_eq!(int_or_string(&neg).unwrap(), json!(-1));
        let s = msg(|b| {
            encode::uint(b, 1, 1);
            encode::string(b, 3, "25%");
        });
        assert_eq!(int_or_string(&s).unwrap(), json!("25%"));
        assert_eq!(int_or_string(&[]).unwrap(), json!(0));
    }

    #[test]
    fn raw_extensions() {
        let r = msg(|b| encode::string(b, 1, r#"{"f:data":{".":{}}}"#));
        assert_eq!(raw_json(&r).unwrap(), json!({"f:data": {".": {}}}));
        assert_eq!(raw_json(&[]).unwrap(), Value::Null);
        let bad = msg(|b| encode::string(b, 1, "{nope"));
        assert!(matches!(
            raw_json(&bad),
            Err(ProtobufError::EmbeddedJson(_))
        ));
    }
}
