//! Selecting and encoding lists: label/field filters, continue tokens, list bodies.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use berth_api::FieldSelector;
use berth_api::LabelSelector;

use super::negotiate::Output;
use super::query::Query;
use crate::registry::{fields, ResourceInfo};
use crate::status::ApiError;
use crate::storage::Revision;

/// The label and field selectors of a request, checked against what the resource supports.
pub struct Filter {
    kind: &'static str,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    pub fn new(info: &'static ResourceInfo, q: &Query) -> Result<Filter, ApiError> {
        let labels = match q.label_selector.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
        };
        let fields = match q.field_selector.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                let sel =
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                let supported = fields::supported_fields(info.kind);
                for req in sel.requirements() {
                    let field = req.field.as_str();
                    if !supported.contains(&field) {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {field}"
                        )));
                    }
                }
                Some(sel)
            }
        };
        Ok(Filter {
            kind: info.kind,
            labels,
            fields,
        })
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(labels) = &self.labels {
            let map = obj
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object);
            if !labels.matches_json(map) {
                return false;
            }
        }
        if let Some(sel) = &self.fields {
            return sel.matches(|f| fields::field_value(self.kind, obj, f));
        }
        true
    }
}

/// Where a paginated list resumes: the revision of its first page and the next key.
#[derive(Debug, PartialEq, Eq)]
pub struct ContinueToken {
    pub revision: Revision,
    pub start: String,
}

impl ContinueToken {
    pub fn encode(&self) -> String {
        let raw = json!({"v": "meta.k8s.io/v1", "rv": self.revision, "start": self.start});
        base64::engine::general_purpose::URL_SAFE.encode(raw.to_string())
    }

    /// Decodes a token, checking that it resumes within `prefix`.
    pub fn decode(token: &str, prefix: &str) -> Result<ContinueToken, ApiError> {
        let bad = || {
            ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        };
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(token)
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
            .map_err(|_| bad())?;
        let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
        if v["v"] != "meta.k8s.io/v1" {
            return Err(bad());
        }
        let revision = v["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
        let start = v["start"].as_str().ok_or_else(bad)?.to_string();
        if !start.starts_with(prefix) {
            return Err(bad());
        }
        Ok(ContinueToken { revision, start })
    }
}

/// `metadata` of a list.
pub fn list_meta(
    revision: Revision,
    cont: Option<&ContinueToken>,
    remaining: Option<usize>,
) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = cont {
        meta["continue"] = Value::String(c.encode());
        if let Some(n) = remaining {
            meta["remainingItemCount"] = json!(n);
        }
    }
    meta
}

/// One object as PartialObjectMetadata.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// An item of a list: the object's JSON, already serialized when it came from the cache.
pub enum Item<'a> {
    Serialized(&'a Value, &'a Bytes),
    Parsed(&'a Value),
}

impl Item<'_> {
    fn value(&self) -> &Value {
        match self {
            Item::Serialized(v, _) | Item::Parsed(v) => v,
        }
    }
}

/// Encodes a list in the requested output.
pub fn encode_list(
    info: &ResourceInfo,
    output: Output,
    q: &Query,
    items: &[Item<'_>],
    meta: Value,
) -> Bytes {
    match output {
        Output::Json => {
            // Splice the cached bytes: a large list is never re-serialized.
            let mut out = Vec::with_capacity(
                64 + items
                    .iter()
                    .map(|i| match i {
                        Item::Serialized(_, b) => b.len() + 1,
                        Item::Parsed(_) => 512,
                    })
                    .sum::<usize>(),
            );
            out.extend_from_slice(b"{\"kind\":\"");
            out.extend_from_slice(info.list_kind().as_bytes());
            out.extend_from_slice(b"\",\"apiVersion\":\"");
            out.extend_from_slice(info.api_version().as_bytes());
            out.extend_from_slice(b"\",\"metadata\":");
            out.extend_from_slice(meta.to_string().as_bytes());
            out.extend_from_slice(b",\"items\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match item {
                    Item::Serialized(_, bytes) => out.extend_from_slice(bytes),
                    Item::Parsed(v) => out.extend_from_slice(v.to_string().as_bytes()),
                }
            }
            out.extend_from_slice(b"]}");
            Bytes::from(out)
        }
        Output::Table => {
            let objects: Vec<&Value> = items.iter().map(Item::value).collect();
            let table = crate::registry::table::build_table(
                info.kind,
                &objects,
                include_object(q),
                meta,
                std::time::SystemTime::now(),
            );
            Bytes::from(table.to_string())
        }
        Output::Metadata => {
            let list = json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items.iter().map(|i| partial_metadata(i.value())).collect::<Vec<_>>(),
            });
            Bytes::from(list.to_string())
        }
    }
}

/// Encodes one object in the requested output.
pub fn encode_object(info: &ResourceInfo, output: Output, q: &Query, obj: &Value) -> Bytes {
    match output {
        Output::Json => Bytes::from(obj.to_string()),
        Output::Metadata => Bytes::from(partial_metadata(obj).to_string()),
        Output::Table => {
            let rv = crate::object::meta_str(obj, "resourceVersion").to_string();
            let table = crate::registry::table::build_table(
                info.kind,
                &[obj],
                include_object(q),
                json!({"resourceVersion": rv}),
                std::time::SystemTime::now(),
            );
            Bytes::from(table.to_string())
        }
    }
}

pub fn include_object(q: &Query) -> crate::registry::table::IncludeObject {
    use crate::registry::table::IncludeObject;
    match q.include_object.as_deref() {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_are_checked() {
        let t = ContinueToken {
            revision: 42,
            start: "/registry/core/pods/default/b\u{0}".into(),
        };
        let enc = t.encode();
        assert_eq!(
            ContinueToken::decode(&enc, "/registry/core/pods/").unwrap(),
            t
        );
        assert_eq!(
            ContinueToken::decode(&enc, "/registry/core/nodes/")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            ContinueToken::decode("garbage!", "/registry/")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn json_lists_splice_cached_bytes() {
        let info = crate::registry::find("", "v1", "configmaps").unwrap();
        let a = json!({"metadata": {"name": "a"}});
        let bytes = Bytes::from(a.to_string());
        let b = json!({"metadata": {"name": "b"}});
        let items = [Item::Serialized(&a, &bytes), Item::Parsed(&b)];
        let out = encode_list(
            info,
            Output::Json,
            &Query::default(),
            &items,
            list_meta(7, None, None),
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kind"], "ConfigMapList");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["items"][1]["metadata"]["name"], "b");
    }
}
