//! JSON patch (RFC 6902, `application/json-patch+json`) with JSON pointers (RFC 6901).
//!
//! Operations apply in order to a copy of the document; the first failure aborts the patch, so a
//! failed patch changes nothing. Like Kubernetes (evanphx/json-patch v4), negative array indices
//! count from the end. Error texts follow that library's, lowercased.

use serde_json::{Map, Value};

use super::PatchError;

/// Kubernetes refuses JSON patches with more operations than this (413).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Applies the RFC 6902 `patch` (an array of operations) to `original`.
pub fn apply_json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::MalformedJsonPatch {
            detail: format!("expected an array of operations, got {}", type_name(patch)),
        });
    };
    if let Some(i) = ops.iter().position(|op| !op.is_object()) {
        return Err(PatchError::MalformedJsonPatch {
            detail: format!("operation {i} is not an object"),
        });
    }
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            max: MAX_JSON_PATCH_OPERATIONS,
            count: ops.len(),
        });
    }
    let mut doc = original.clone();
    for (index, op) in ops.iter().enumerate() {
        let Value::Object(op) = op else { continue };
        apply_op(&mut doc, op, index)?;
    }
    Ok(doc)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn apply_op(doc: &mut Value, op: &Map<String, Value>, index: usize) -> Result<(), PatchError> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or("unknown");
    let fail = |message: String| PatchError::JsonPatchOperation {
        index,
        op: kind.to_string(),
        message,
    };
    let member = |name: &str| -> Result<&str, PatchError> {
        match op.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(fail(format!(
                "{kind} operation has a non-string {name} field"
            ))),
            None => Err(fail(format!("{kind} operation missing {name} field"))),
        }
    };
    let value = || {
        op.get("value")
            .ok_or_else(|| fail(format!("{kind} operation missing value field")))
    };
    match kind {
        "add" => {
            let path = member("path")?;
            add(doc, &parse(path).map_err(fail)?, value()?.clone())
                .map_err(|e| fail(e.describe("add", path)))
        }
        "remove" => {
            let path = member("path")?;
            remove(doc, &parse(path).map_err(fail)?)
                .map(drop)
                .map_err(|e| fail(e.describe("remove", path)))
        }
        "replace" => {
            let path = member("path")?;
            let target = get_mut(doc, &parse(path).map_err(fail)?)
                .map_err(|e| fail(e.describe("replace", path)))?;
            *target = value()?.clone();
            Ok(())
        }
        "move" => {
            let from = member("from")?;
            let path = member("path")?;
            let from_tokens = parse(from).map_err(fail)?;
            let path_tokens = parse(path).map_err(fail)?;
            if path_tokens.len() > from_tokens.len() && path_tokens.starts_with(&from_tokens) {
                return Err(fail(format!(
                    "move operation cannot move {from} into its own child {path}"
                )));
            }
            let moved = remove(doc, &from_tokens).map_err(|e| fail(e.describe("move", from)))?;
            add(doc, &path_tokens, moved).map_err(|e| fail(e.describe("move", path)))
        }
        "copy" => {
            let from = member("from")?;
            let path = member("path")?;
            let copied = get_mut(doc, &parse(from).map_err(fail)?)
                .map_err(|e| fail(e.describe("copy", from)))?
                .clone();
            add(doc, &parse(path).map_err(fail)?, copied)
                .map_err(|e| fail(e.describe("copy", path)))
        }
        "test" => {
            let path = member("path")?;
            let expected = value()?;
            let actual = get_mut(doc, &parse(path).map_err(fail)?)
                .map_err(|e| fail(e.describe("test", path)))?;
            if json_equal(actual, expected) {
                Ok(())
            } else {
                Err(PatchError::JsonPatchTestFailed {
                    index,
                    path: path.to_string(),
                })
            }
        }
        other => Err(fail(format!("unexpected kind: {other}"))),
    }
}

/// Splits a JSON pointer into unescaped reference tokens.
fn parse(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "invalid JSON pointer {pointer:?}: must be empty or start with \"/\""
        ));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return Err(format!("invalid JSON pointer {pointer:?}: bad ~ escape")),
                }
            }
            Ok(out)
        })
        .collect()
}

/// Why a pointer does not resolve.
enum PathError {
    /// A parent of the target does not exist (or is a scalar).
    MissingParent,
    /// The last token names no existing member.
    MissingKey(String),
    /// An array index that is malformed or out of range.
    BadIndex(String),
    /// The whole document cannot be removed.
    Root,
}

impl PathError {
    fn describe(&self, op: &str, path: &str) -> String {
        match self {
            PathError::MissingParent => {
                format!("{op} operation does not apply: doc is missing path: {path:?}")
            }
            PathError::MissingKey(key) => {
                format!("{op} operation does not apply: doc is missing key {key:?} at {path:?}")
            }
            PathError::BadIndex(token) => {
                format!("error in {op} for path: '{path}': unable to access invalid index: {token}")
            }
            PathError::Root => {
                format!("{op} operation does not apply: cannot {op} the whole document")
            }
        }
    }
}

/// The container holding the target of `tokens` and the target's last token.
fn parent_mut<'a, 't>(
    doc: &'a mut Value,
    tokens: &'t [String],
) -> Result<(&'a mut Value, &'t str), PathError> {
    let Some((last, parents)) = tokens.split_last() else {
        return Err(PathError::Root);
    };
    let mut current = doc;
    for token in parents {
        current = match current {
            Value::Object(map) => map.get_mut(token).ok_or(PathError::MissingParent)?,
            Value::Array(list) => {
                let i = existing_index(token, list.len()).ok_or(PathError::MissingParent)?;
                &mut list[i]
            }
            _ => return Err(PathError::MissingParent),
        };
    }
    if !current.is_object() && !current.is_array() {
        return Err(PathError::MissingParent);
    }
    Ok((current, last))
}

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, PathError> {
    if tokens.is_empty() {
        return Ok(doc);
    }
    let (parent, last) = parent_mut(doc, tokens)?;
    match parent {
        Value::Object(map) => map
            .get_mut(last)
            .ok_or_else(|| PathError::MissingKey(last.to_string())),
        Value::Array(list) => {
            let i = existing_index(last, list.len())
                .ok_or_else(|| PathError::BadIndex(last.to_string()))?;
            Ok(&mut list[i])
        }
        _ => Err(PathError::MissingParent),
    }
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), PathError> {
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, tokens)?;
    match parent {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
            Ok(())
        }
        Value::Array(list) => {
            let i = if last == "-" {
                list.len()
            } else {
                // One past the end is a valid insertion point.
                insertion_index(last, list.len()).ok_or_else(|| PathError::BadIndex(last.into()))?
            };
            list.insert(i, value);
            Ok(())
        }
        _ => Err(PathError::MissingParent),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, PathError> {
    let (parent, last) = parent_mut(doc, tokens)?;
    match parent {
        Value::Object(map) => map
            .remove(last)
            .ok_or_else(|| PathError::MissingKey(last.to_string())),
        Value::Array(list) => {
            let i = existing_index(last, list.len())
                .ok_or_else(|| PathError::BadIndex(last.to_string()))?;
            Ok(list.remove(i))
        }
        _ => Err(PathError::MissingParent),
    }
}

/// A decimal index, optionally negative (from the end, as Kubernetes' library allows).
fn signed_index(token: &str) -> Option<i64> {
    let digits = token.strip_prefix('-').unwrap_or(token);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Index of an existing element of a list of `len` elements.
fn existing_index(token: &str, len: usize) -> Option<usize> {
    let i = signed_index(token)?;
    let len = i64::try_from(len).ok()?;
    let i = if i < 0 { i + len } else { i };
    if (0..len).contains(&i) {
        usize::try_from(i).ok()
    } else {
        None
    }
}

/// Index at which to insert into a list of `len` elements (`0..=len`).
fn insertion_index(token: &str, len: usize) -> Option<usize> {
    let i = signed_index(token)?;
    let len = i64::try_from(len).ok()? + 1;
    let i = if i < 0 { i + len } else { i };
    if (0..len).contains(&i) {
        usize::try_from(i).ok()
    } else {
        None
    }
}

/// RFC 6902 equality: structural, with numbers compared by value (`1` equals `1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
#[path = "json_patch_tests.rs"]
mod tests;
