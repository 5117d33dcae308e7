//! What can go wrong pulling, importing, storing and unpacking images.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {message}")]
    InvalidReference { reference: String, message: String },
    /// The registry says the repository or tag does not exist (`MANIFEST_UNKNOWN`,
    /// `NAME_UNKNOWN`); `message` is the registry's own words.
    #[error("pull {reference}: {message}")]
    NotFound { reference: String, message: String },
    /// The registry refused every credential tried (and anonymous access).
    #[error("pull {reference}: {message}")]
    Unauthorized { reference: String, message: String },
    /// Any other pull failure: the registry's error message, or the transport's.
    #[error("pull {reference}: {message}")]
    Pull { reference: String, message: String },
    /// `imagePullPolicy: Never` and the image is not on the node.
    #[error("image {reference} is not present and the pull policy is Never")]
    NeverPullMissing { reference: String },
    #[error("no manifest for platform {platform} in the index of {reference}")]
    NoMatchingPlatform { reference: String, platform: String },
    #[error("blob {digest}: expected {expected}, got {actual}")]
    DigestMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("unsupported {what} {value:?}")]
    Unsupported { what: &'static str, value: String },
    #[error("malformed {what} {object}: {message}")]
    Malformed {
        what: &'static str,
        object: String,
        message: String,
    },
    #[error("layer entry {entry:?} escapes the layer directory")]
    PathEscape { entry: PathBuf },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op} {path}")]
    Json {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("archive {path}: {message}")]
    Archive { path: PathBuf, message: String },
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }

    /// The same failure for a caller that waited on someone else's pull: the variants a kubelet
    /// acts on are kept, the rest become `Pull` with the original message.
    pub(crate) fn share(&self, reference: &str) -> ImageError {
        match self {
            ImageError::NotFound { reference, message } => ImageError::NotFound {
                reference: reference.clone(),
                message: message.clone(),
            },
            ImageError::Unauthorized { reference, message } => ImageError::Unauthorized {
                reference: reference.clone(),
                message: message.clone(),
            },
            ImageError::Pull { reference, message } => ImageError::Pull {
                reference: reference.clone(),
                message: message.clone(),
            },
            other => ImageError::Pull {
                reference: reference.to_string(),
                message: error_chain(other),
            },
        }
    }
}

/// An error and its sources on one line, for messages that end up in a pod's status.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
