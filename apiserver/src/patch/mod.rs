//! The patch engines behind PATCH requests, over `serde_json::Value`: JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902) and Kubernetes' strategic merge patch.
//!
//! They only transform documents; decoding, defaulting and validation of the result are the
//! caller's job. [`PatchError::status_code`] / [`PatchError::to_api_error`] give the HTTP answer
//! Kubernetes gives for each failure.

mod json_patch;
mod merge_patch;
mod order;
pub mod patch_meta;
#[cfg(test)]
mod props;
mod strategic;

pub use json_patch::{apply_json_patch, MAX_JSON_PATCH_OPERATIONS};
pub use merge_patch::apply_merge_patch;
pub use patch_meta::{all_patch_meta, definition_name, field_meta, FieldMeta, Strategy};
pub use strategic::apply_strategic_merge_patch;

use serde_json::Value;

use crate::status::{ApiError, Cause, Details};

/// Why a patch could not be applied. Messages follow Kubernetes' (lowercased).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// A merge patch that is `null` or a scalar.
    #[error("invalid JSON patch")]
    InvalidMergePatch,
    /// The patch (or the object it applies to) is not a JSON object.
    #[error("{document} must be a JSON object")]
    NotAnObject { document: &'static str },
    /// A JSON patch that is not an array of operation objects.
    #[error("error decoding patch: {detail}")]
    MalformedJsonPatch { detail: String },
    #[error("the allowed maximum operations in a JSON patch is {max}, got {count}")]
    TooManyOperations { max: usize, count: usize },
    /// A JSON patch operation that is invalid or does not apply to the document.
    #[error("{message}")]
    JsonPatchOperation {
        /// Position of the operation in the patch.
        index: usize,
        op: String,
        message: String,
    },
    #[error("testing value {path} failed: test failed")]
    JsonPatchTestFailed { index: usize, path: String },

    /// Strategic merge patch on a kind without patch metadata (Kubernetes: custom resources).
    #[error("strategic merge patch format is not supported")]
    UnsupportedStrategicMergePatch { definition: String },
    #[error("invalid patch format of primitive list")]
    BadPrimitiveListFormat { key: String },
    #[error("invalid patch format of retainKeys")]
    BadRetainKeysFormat,
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrderFormat { key: String },
    /// A `$`-prefixed key that is no strategic merge patch directive.
    #[error("unknown patch directive {key:?}")]
    UnknownDirectiveKey { key: String },
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// `$patch` with a value other than `replace` or `delete`.
    #[error("unknown patch type: {directive} in map: {item}")]
    UnknownPatchType { directive: String, item: String },
    #[error("merging lists cannot yet be specified in the patch")]
    ListMergeDirective,
    #[error("map: {item} does not contain declared merge key: {merge_key}")]
    MissingMergeKey { item: String, merge_key: String },
    #[error("cannot merge lists without merge key for {definition}")]
    NoMergeKey { definition: String },
    /// A value of the wrong JSON type where a map or list was required (Go type names).
    #[error("expected a {expected}, but received a {actual}")]
    TypeMismatch {
        expected: &'static str,
        actual: &'static str,
    },
    #[error("list element types are not identical: {lists}")]
    MixedListElements { lists: String },
    #[error("no elements in any of the given slices")]
    EmptyLists,
    #[error("the order in patch list {patch} doesn't match $setElementOrder list {order}")]
    OrderMismatch { patch: String, order: String },
}

impl PatchError {
    /// The HTTP status Kubernetes answers with: malformed patch documents 400, too many JSON
    /// patch operations 413, JSON patch failures (missing paths, failed `test`) and lists of
    /// lists 422, and other strategic merge failures 500 (Kubernetes passes them through as
    /// plain errors).
    pub fn status_code(&self) -> u16 {
        use PatchError::*;
        match self {
            InvalidMergePatch
            | NotAnObject { .. }
            | MalformedJsonPatch { .. }
            | UnsupportedStrategicMergePatch { .. }
            | BadPrimitiveListFormat { .. }
            | BadRetainKeysFormat
            | BadSetElementOrderFormat { .. }
            | UnknownDirectiveKey { .. } => 400,
            TooManyOperations { .. } => 413,
            JsonPatchOperation { .. } | JsonPatchTestFailed { .. } | ListOfLists => 422,
            UnknownPatchType { .. }
            | ListMergeDirective
            | MissingMergeKey { .. }
            | NoMergeKey { .. }
            | TypeMismatch { .. }
            | MixedListElements { .. }
            | EmptyLists
            | OrderMismatch { .. } => 500,
        }
    }

    /// The `Status` Kubernetes returns for this failure.
    pub fn to_api_error(&self) -> ApiError {
        let message = self.to_string();
        match self.status_code() {
            400 => ApiError::bad_request(message),
            413 => ApiError::too_large(format!("Request entity too large: {message}")),
            // Kubernetes wraps these in a generic 422 whose only cause carries the detail.
            422 => {
                let mut e = ApiError::new(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                );
                e.details = Some(Box::new(Details {
                    causes: vec![Cause {
                        reason: "UnexpectedServerResponse",
                        message,
                        field: String::new(),
                    }],
                    ..Details::default()
                }));
                e
            }
            // A plain Go error becomes a Status with an empty (unknown) reason.
            _ => ApiError::new(500, "", message),
        }
    }

    /// A [`PatchError::TypeMismatch`] naming `actual`'s type as Go's `reflect` would.
    pub(crate) fn type_mismatch(expected: &'static str, actual: &Value) -> Self {
        let actual = match actual {
            Value::Null => "<nil>",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_i64() => "int64",
            Value::Number(_) => "float64",
            Value::String(_) => "string",
            Value::Array(_) => "[]interface {}",
            Value::Object(_) => "map[string]interface {}",
        };
        PatchError::TypeMismatch { expected, actual }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_follow_kubernetes() {
        assert_eq!(PatchError::InvalidMergePatch.status_code(), 400);
        assert_eq!(PatchError::BadRetainKeysFormat.status_code(), 400);
        assert_eq!(PatchError::ListOfLists.status_code(), 422);
        let test_failed = PatchError::JsonPatchTestFailed {
            index: 0,
            path: "/a".into(),
        };
        assert_eq!(test_failed.status_code(), 422);
        assert_eq!(PatchError::ListMergeDirective.status_code(), 500);
        let too_many = PatchError::TooManyOperations {
            max: 10000,
            count: 10001,
        };
        assert_eq!(too_many.status_code(), 413);
    }

    #[test]
    fn json_patch_failure_renders_like_kubernetes() {
        let e = PatchError::JsonPatchTestFailed {
            index: 1,
            path: "/metadata/name".into(),
        };
        let status = e.to_api_error().to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(
            status["message"],
            "the server rejected our request due to an error in our request"
        );
        assert_eq!(
            status["details"]["causes"][0],
            serde_json::json!({
                "reason": "UnexpectedServerResponse",
                "message": "testing value /metadata/name failed: test failed",
                "field": ""
            })
        );
    }

    #[test]
    fn bad_request_and_internal() {
        let e = PatchError::BadSetElementOrderFormat {
            key: "$setElementOrder".into(),
        }
        .to_api_error();
        assert_eq!(e.code, 400);
        assert_eq!(e.reason, "BadRequest");
        assert_eq!(e.message, "invalid patch format of setElementOrder list");
        let e = PatchError::MissingMergeKey {
            item: r#"{"image":"x"}"#.into(),
            merge_key: "name".into(),
        }
        .to_api_error();
        assert_eq!(e.code, 500);
        assert_eq!(
            e.message,
            r#"map: {"image":"x"} does not contain declared merge key: name"#
        );
    }
}
