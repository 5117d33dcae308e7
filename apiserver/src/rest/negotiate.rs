//! Content negotiation: what the client accepts back, and what it sent.

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

/// The body of a create or update must be JSON.
pub fn require_json(content_type: Option<&str>) -> Result<(), ApiError> {
    match mime(content_type) {
        "application/json" | "" => Ok(()),
        other => Err(ApiError::unsupported_media_type(other)),
    }
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

    #[test]
    fn body_types() {
        assert!(require_json(Some("application/json; charset=utf-8")).is_ok());
        assert_eq!(require_json(Some("text/plain")).unwrap_err().code, 415);
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
