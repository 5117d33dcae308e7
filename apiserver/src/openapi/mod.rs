//! OpenAPI v3 as kubectl 1.32 reads it: the `/openapi/v3` index and one document per
//! group-version, generated from k8s-openapi's schemas, plus unknown-field checks against
//! those schemas (`fieldValidation=Strict|Warn|Ignore`).
//!
//! Everything here is a pure function of the resource table: the caller builds each document
//! once, caches its bytes with [`content_hash`] as ETag and `?hash=` pin, and serves it with
//! [`CONTENT_TYPE`]. `/openapi/v2` must not 404: kubectl 1.32 uses v3 everywhere except
//! client-side validation of `kind: List` files, which fails `apply` when v2 cannot be fetched;
//! [`minimal_v2_protobuf`] is a valid, empty v2 document for that.

mod generate;
mod paths;
mod schemas;
pub mod unknown_fields;
mod v2;

pub use generate::{
    generate_group_version, group_version_path, index, served_group_versions, PatchMeta,
};
pub use unknown_fields::{
    find_unknown_fields, prune_unknown_fields, strict_decoding_error, unknown_field_message,
};
pub use v2::{minimal_v2_json, minimal_v2_protobuf, V2_PROTOBUF_CONTENT_TYPE};

/// What the index and every group-version document are served as.
pub const CONTENT_TYPE: &str = "application/json";

/// The definition name of a served kind's schema ("io.k8s.api.apps.v1.Deployment"), or of
/// autoscaling/v1 Scale and core/v1 Binding; `None` for kinds without a schema.
pub fn definition_for(group: &str, kind: &str) -> Option<&'static str> {
    schemas::catalog().kind_definition(group, kind)
}

/// A stable content hash (64-bit FNV-1a, 16 upper-case hex digits) for the `?hash=` pin and the
/// ETag of a document. Not cryptographic: it only has to change when the bytes do.
pub fn content_hash(bytes: &[u8]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    format!("{hash:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_fnv1a() {
        assert_eq!(content_hash(b""), "CBF29CE484222325");
        assert_eq!(content_hash(b"a"), "AF63DC4C8601EC8C");
        assert_ne!(content_hash(b"{}"), content_hash(b"{ }"));
    }

    #[test]
    fn definitions_for_served_kinds() {
        assert_eq!(
            definition_for("", "ConfigMap"),
            Some("io.k8s.api.core.v1.ConfigMap")
        );
        assert_eq!(
            definition_for("autoscaling", "Scale"),
            Some("io.k8s.api.autoscaling.v1.Scale")
        );
        assert_eq!(definition_for("apps", "Nope"), None);
    }
}
