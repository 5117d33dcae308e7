//! Content negotiation: what the client accepts back, and what it sent.

use std::borrow::Cow;

use crate::http::Request;
use crate::protobuf;
use crate::status::ApiError;

/// The shape of a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    /// `as=Table` (meta.k8s.io v1 or v1beta1).
    Table,
    /// `as=PartialObjectMetadata` / `as=PartialObjectMetadataList`.
    Metadata,
}

/// Picks the first acceptable representation from an Accept header.
pub fn output(accept: Option<&str>) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("");
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        if !matches!(mime, "application/json" | "*/*" | "application/*") {
            continue;
        }
        match (param("as"), param("g")) {
            (None, _) => return Ok(Output::Json),
            (Some("Table"), Some("meta.k8s.io")) => return Ok(Output::Table),
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io")) => {
                return Ok(Output::Metadata)
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io (got {accept:?})"
    )))
}

/// How a PATCH body is to be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

fn mime(content_type: Option<&str>) -> &str {
    content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("")
}

/// The body of a create, update or subresource write as JSON bytes: JSON as sent, or a
/// Kubernetes protobuf body decoded to the JSON a JSON client would have sent.
pub fn json_body(req: &Request) -> Result<Cow<'_, [u8]>, ApiError> {
    match mime(req.header("content-type")) {
        "application/json" | "" => Ok(Cow::Borrowed(&req.body)),
        protobuf::MEDIA_TYPE => decode_protobuf(&req.body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// The DeleteOptions body of a DELETE: protobuf is decoded; anything else is read as JSON,
/// whatever its Content-Type, as DELETE has always done.
pub fn delete_body(req: &Request) -> Result<Cow<'_, [u8]>, ApiError> {
    match mime(req.header("content-type")) {
        protobuf::MEDIA_TYPE if !req.body.is_empty() => decode_protobuf(&req.body),
        _ => Ok(Cow::Borrowed(&req.body)),
    }
}

fn decode_protobuf(body: &[u8]) -> Result<Cow<'static, [u8]>, ApiError> {
    let v = protobuf::decode_request(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding protobuf request body: {e}")))?;
    Ok(Cow::Owned(v.to_string().into_bytes()))
}

pub fn patch_type(content_type: Option<&str>) -> Result<PatchType, ApiError> {
    match mime(content_type) {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_headers() {
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(output(Some(table)).unwrap(), Output::Table);
        assert_eq!(output(Some("application/json")).unwrap(), Output::Json);
        assert_eq!(output(None).unwrap(), Output::Json);
        assert_eq!(
            output(Some("application/vnd.kubernetes.protobuf, */*")).unwrap(),
            Output::Json
        );
        assert_eq!(
            output(Some(
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
            ))
            .unwrap(),
            Output::Metadata
        );
        assert_eq!(
            output(Some("application/vnd.kubernetes.protobuf"))
                .unwrap_err()
                .code,
            406
        );
        assert_eq!(
            output(Some("application/json;as=Widget;g=x"))
                .unwrap_err()
                .code,
            406
        );
    }

    fn request(content_type: &str, body: &[u8]) -> Request {
        Request {
            method: "POST".into(),
            path: "/api/v1/namespaces/default/configmaps".into(),
            query: String::new(),
            headers: vec![("content-type".into(), content_type.into())],
            body: body.to_vec(),
            peer_user: None,
        }
    }

    #[test]
    fn body_types() {
        let json = request("application/json; charset=utf-8", b"{}");
        assert_eq!(&*json_body(&json).unwrap(), b"{}");
        assert_eq!(
            json_body(&request("text/plain", b"{}")).unwrap_err().code,
            415
        );
        // k8s\0 + Unknown{typeMeta{apiVersion: v1, kind: ConfigMap}, raw: {data{a: b}}}.
        let pb = b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x08\x12\x06\x0a\x01a\x12\x01b";
        let pb = request(protobuf::MEDIA_TYPE, pb);
        let decoded = json_body(&pb).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&decoded).unwrap(),
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}})
        );
        let truncated = request(protobuf::MEDIA_TYPE, b"k8s\0\x0a\x09");
        let bad = json_body(&truncated).unwrap_err();
        assert_eq!(bad.code, 400);
        assert!(
            bad.message
                .contains("error decoding protobuf request body: message truncated"),
            "{}",
            bad.message
        );
        let plain_delete = request("application/x-www-form-urlencoded", b"{}");
        assert_eq!(&*delete_body(&plain_delete).unwrap(), b"{}");
        let empty_delete = request(protobuf::MEDIA_TYPE, b"");
        assert_eq!(&*delete_body(&empty_delete).unwrap(), b"");
        assert_eq!(
            patch_type(Some("application/strategic-merge-patch+json")).unwrap(),
            PatchType::Strategic
        );
        assert_eq!(
            patch_type(Some("application/apply-patch+yaml"))
                .unwrap_err()
                .code,
            415
        );
    }
}
