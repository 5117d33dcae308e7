//! A minimal, valid `/openapi/v2` document with no definitions.
//!
//! kubectl 1.32 reads v3 for everything except one path: client-side validation of a
//! `kind: List` file (what `kubectl get -o yaml` writes), which fetches v2 as protobuf and fails
//! the whole `apply` if that fetch fails. An empty document makes kubectl find no schema for the
//! items and skip client-side checks (the server still validates each object it receives).

/// The `Content-Type` of the protobuf answer. kubectl asks for
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, but `@` is not a token
/// character and client-go rejects a response typed that way ("mime: unexpected content after
/// media subtype"); Kubernetes answers that request with this dotted form.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const SWAGGER: &str = "2.0";
const TITLE: &str = "Kubernetes";
const VERSION: &str = "v1.32.0";

/// The v2 document in protobuf: `swagger: "2.0"`, `info {title, version}` and empty `paths`.
///
/// Hand-encoded (three length-delimited fields of `openapi.v2.Document`: 1 swagger, 2 info,
/// 8 paths) rather than pulling in a protobuf stack for twenty-odd bytes.
pub fn minimal_v2_protobuf() -> Vec<u8> {
    let mut info = Vec::new();
    field(&mut info, 1, TITLE.as_bytes());
    field(&mut info, 2, VERSION.as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, SWAGGER.as_bytes());
    field(&mut doc, 2, &info);
    field(&mut doc, 8, &[]);
    doc
}

/// The same document as JSON, for clients that ask for `application/json`.
pub fn minimal_v2_json() -> serde_json::Value {
    serde_json::json!({
        "swagger": SWAGGER,
        "info": {"title": TITLE, "version": VERSION},
        "paths": {},
    })
}

/// One length-delimited protobuf field (wire type 2). Lengths here are far below 128, but the
/// varint is written in full so the helper stays correct for any length.
fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push((number << 3) | 2);
    let mut len = bytes.len();
    loop {
        let low = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_encoding_is_exact() {
        let mut expected = vec![0x0a, 3];
        expected.extend_from_slice(b"2.0");
        expected.extend_from_slice(&[0x12, 21, 0x0a, 10]);
        expected.extend_from_slice(b"Kubernetes");
        expected.extend_from_slice(&[0x12, 7]);
        expected.extend_from_slice(b"v1.32.0");
        expected.extend_from_slice(&[0x42, 0]);
        assert_eq!(minimal_v2_protobuf(), expected);
    }

    #[test]
    fn long_fields_use_multi_byte_varints() {
        let mut out = Vec::new();
        field(&mut out, 1, &[0u8; 300]);
        assert_eq!(&out[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(out.len(), 303);
    }

    #[test]
    fn json_form() {
        assert_eq!(minimal_v2_json()["swagger"], "2.0");
        assert_eq!(minimal_v2_json()["paths"], serde_json::json!({}));
    }
}
