//! Strategic merge patch (`application/strategic-merge-patch+json`), the patch kubectl sends for
//! built-in kinds: maps merge recursively, `null` deletes, lists are replaced unless their field
//! has the merge strategy, in which case items merge by merge key (or union, for primitives).
//!
//! This follows the apply side of apimachinery's `pkg/util/strategicpatch/patch.go` (server-side
//! options: parallel lists merged, unmatched nulls ignored) step by step, including its list
//! ordering. Where Kubernetes would copy a directive into the stored object (a new value holding
//! `$setElementOrder/…`, `$retainKeys` or `$deleteFromPrimitiveList/…`), directives are dropped
//! instead, and a `$`-key that is no directive is rejected instead of stored.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::order::{normalize_element_order, require_merge_key, ItemKey};
use super::patch_meta::{field_meta, is_known_definition, Strategy};
use super::PatchError;

/// `$patch`: `replace`, `delete` (and `merge`, which Kubernetes rejects on apply).
pub(super) const DIRECTIVE_MARKER: &str = "$patch";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const RETAIN_KEYS: &str = "$retainKeys";

/// Applies a strategic merge `patch` to `original`, an object of the kind whose OpenAPI
/// definition is `root_definition` (e.g. `io.k8s.api.apps.v1.Deployment`).
pub fn apply_strategic_merge_patch(
    original: &Value,
    patch: &Value,
    root_definition: &str,
) -> Result<Value, PatchError> {
    if !is_known_definition(root_definition) {
        return Err(PatchError::UnsupportedStrategicMergePatch {
            definition: root_definition.to_string(),
        });
    }
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            document: "strategic merge patch",
        });
    };
    let Value::Object(original) = original else {
        return Err(PatchError::NotAnObject {
            document: "original object",
        });
    };
    let merged = merge_map(
        Some(original.clone()),
        patch.clone(),
        Schema::Definition(root_definition),
    )?;
    Ok(Value::Object(merged))
}

/// Where in the type graph a value sits.
#[derive(Clone, Copy, Debug)]
enum Schema<'a> {
    /// An object of this OpenAPI definition.
    Definition(&'a str),
    /// A map whose values are of this definition.
    MapOf(&'a str),
    /// Free-form or unknown: maps merge, lists are replaced.
    Unknown,
}

/// What merging one field needs: the schema of its value (or list items), strategy, merge key.
struct FieldPlan<'a> {
    schema: Schema<'a>,
    strategy: Strategy,
    merge_key: Option<&'static str>,
}

impl<'a> Schema<'a> {
    fn name(self) -> &'a str {
        match self {
            Schema::Definition(d) | Schema::MapOf(d) => d,
            Schema::Unknown => "unknown",
        }
    }

    fn field(self, key: &str) -> FieldPlan<'a> {
        let default = |schema| FieldPlan {
            schema,
            strategy: Strategy::Replace,
            merge_key: None,
        };
        match self {
            Schema::Definition(definition) => match field_meta(definition, key) {
                Some(meta) => FieldPlan {
                    schema: match meta.child {
                        Some(child) if meta.map_values => Schema::MapOf(child),
                        Some(child) => Schema::Definition(child),
                        None => Schema::Unknown,
                    },
                    strategy: meta.strategy,
                    merge_key: meta.merge_key,
                },
                None => default(Schema::Unknown),
            },
            Schema::MapOf(values) => default(Schema::Definition(values)),
            Schema::Unknown => default(Schema::Unknown),
        }
    }
}

/// Go's dynamic type of a decoded JSON value, which decides whether two values merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    String,
    Array,
    Object,
}

fn kind(value: &Value) -> Kind {
    match value {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_i64() => Kind::Int,
        Value::Number(_) => Kind::Float,
        Value::String(_) => Kind::String,
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
    }
}

fn merge_map(
    original: Option<Map<String, Value>>,
    mut patch: Map<String, Value>,
    schema: Schema<'_>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE_MARKER) {
        return match directive.as_str() {
            Some("replace") => match strip_directives(Value::Object(patch))? {
                Some(Value::Object(replacement)) => Ok(replacement),
                _ => Ok(Map::new()),
            },
            Some("delete") => Ok(Map::new()),
            _ => {
                patch.insert(DIRECTIVE_MARKER.to_string(), directive.clone());
                Err(PatchError::UnknownPatchType {
                    directive: display_scalar(&directive),
                    item: Value::Object(patch).to_string(),
                })
            }
        };
    }
    let mut original = original.unwrap_or_default();
    apply_retain_keys(&mut original, &mut patch)?;
    merge_ordered_lists(&mut original, &mut patch, schema)?;

    for (key, patch_value) in patch {
        let (key, delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            (extract_key(&key, DELETE_FROM_PRIMITIVE_LIST)?, true)
        } else if key.starts_with('$') {
            return Err(PatchError::UnknownDirectiveKey { key });
        } else {
            (key, false)
        };
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let same_kind = original
            .get(&key)
            .is_some_and(|current| kind(current) == kind(&patch_value));
        if !same_kind {
            // Absent or of another type: the patch value is taken as it is, minus nulls.
            if !delete_list {
                match new_value(patch_value)? {
                    Some(value) => original.insert(key, value),
                    None => original.remove(&key),
                };
            }
            continue;
        }
        let Some(current) = original.get_mut(&key) else {
            continue;
        };
        let merged = match (current.take(), patch_value) {
            (Value::Object(current), Value::Object(patch_map)) => {
                // Maps always merge; a `retainKeys` strategy only matters through `$retainKeys`.
                let plan = schema.field(&key);
                Value::Object(merge_map(Some(current), patch_map, plan.schema)?)
            }
            (Value::Array(current), Value::Array(patch_list)) => {
                let plan = schema.field(&key);
                Value::Array(merge_list_field(current, patch_list, &plan, delete_list)?)
            }
            // Same scalar type: the patch wins, even in a deletion list (as in Kubernetes).
            (_, patch_value) => patch_value,
        };
        *current = merged;
    }
    Ok(original)
}

/// Kubernetes' `mergeSliceHandler`: merge lists merge, other lists are replaced.
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    plan: &FieldPlan<'_>,
    delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if plan.strategy.merges_lists() || delete_list {
        merge_list(original, patch, plan, delete_list)
    } else {
        Ok(strip_list(patch)?)
    }
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    plan: &FieldPlan<'_>,
    delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let element = element_kind(&[&original, &patch])?;
    if element != Kind::Object {
        if delete_list {
            let doomed: HashSet<String> = patch.iter().map(Value::to_string).collect();
            return Ok(original
                .into_iter()
                .filter(|v| !doomed.contains(&v.to_string()))
                .collect());
        }
        let mut seen = HashSet::new();
        let merged: Vec<Value> = original
            .iter()
            .chain(&patch)
            .filter(|v| seen.insert(v.to_string()))
            .cloned()
            .collect();
        let key = ItemKey {
            merge_key: None,
            maps: false,
        };
        let (patch_items, server_only) = partition(merged, &patch, key)?;
        return normalize_element_order(patch_items, server_only, &patch, &original, key);
    }

    let Some(merge_key) = plan.merge_key else {
        return Err(PatchError::NoMergeKey {
            definition: plan.schema.name().to_string(),
        });
    };
    let (original, patch) = apply_list_directives(original, patch, merge_key)?;
    let mut merged = original.clone();
    let mut index = KeyIndex::new(&merged, merge_key);
    for item in &patch {
        let Value::Object(item_map) = item else {
            return Err(PatchError::type_mismatch("map[string]interface {}", item));
        };
        let Some(wanted) = item_map.get(merge_key) else {
            return Err(PatchError::MissingMergeKey {
                item: item.to_string(),
                merge_key: merge_key.to_string(),
            });
        };
        match index.find(wanted)? {
            Some(i) => {
                let Value::Object(current) = merged[i].take() else {
                    return Err(PatchError::type_mismatch(
                        "map[string]interface {}",
                        &merged[i],
                    ));
                };
                merged[i] = Value::Object(merge_map(Some(current), item_map.clone(), plan.schema)?);
            }
            None => {
                if let Some(added) = strip_directives(item.clone())? {
                    index.record(&added, merged.len());
                    merged.push(added);
                }
            }
        }
    }
    let key = ItemKey {
        merge_key: Some(merge_key),
        maps: true,
    };
    let (patch_items, server_only) = partition(merged, &patch, key)?;
    normalize_element_order(patch_items, server_only, &patch, &original, key)
}

/// Handles `$patch` items of a keyed list: `delete` removes every item with that key, `replace`
/// makes the rest of the patch list the whole list. Returns (original, patch) without them.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE_MARKER) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(doomed) = item.get(merge_key) else {
                    return Err(PatchError::MissingMergeKey {
                        item: item.to_string(),
                        merge_key: merge_key.to_string(),
                    });
                };
                // Every item is a map here: the list's element type was checked.
                original.retain(|kept| kept.get(merge_key) != Some(doomed));
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(PatchError::ListMergeDirective),
            _ => {
                return Err(PatchError::UnknownPatchType {
                    directive: display_scalar(directive),
                    item: item.to_string(),
                })
            }
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// Finds list items by merge key value in constant time, answering exactly as a linear scan
/// would (Kubernetes' `findMapInSliceBasedOnKeyValue`): the first match, or an error when a
/// non-map item comes before any match.
struct KeyIndex<'k> {
    merge_key: &'k str,
    first: HashMap<String, usize>,
    /// The first item that is not a map, and the error a scan reaching it reports.
    first_non_map: Option<(usize, PatchError)>,
}

impl<'k> KeyIndex<'k> {
    fn new(list: &[Value], merge_key: &'k str) -> Self {
        let mut index = KeyIndex {
            merge_key,
            first: HashMap::with_capacity(list.len()),
            first_non_map: None,
        };
        for (i, item) in list.iter().enumerate() {
            index.record(item, i);
        }
        index
    }

    fn record(&mut self, item: &Value, position: usize) {
        match item {
            Value::Object(map) => {
                if let Some(value) = map.get(self.merge_key) {
                    self.first.entry(value.to_string()).or_insert(position);
                }
            }
            other => {
                if self.first_non_map.is_none() {
                    let error = PatchError::type_mismatch("map[string]interface {}", other);
                    self.first_non_map = Some((position, error));
                }
            }
        }
    }

    fn find(&self, wanted: &Value) -> Result<Option<usize>, PatchError> {
        let found = self.first.get(&wanted.to_string()).copied();
        match (&self.first_non_map, found) {
            (Some((bad, _)), Some(at)) if at < *bad => Ok(Some(at)),
            (Some((_, error)), _) => Err(error.clone()),
            (None, found) => Ok(found),
        }
    }
}

/// Splits `merged` into the items present in `by` and the rest (server-only), keeping order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: ItemKey<'_>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    if key.maps {
        let merge_key = key.merge_key.unwrap_or("");
        let index = KeyIndex::new(by, merge_key);
        let mut present = Vec::new();
        let mut server_only = Vec::new();
        for item in merged {
            require_merge_key(&item, merge_key)?;
            let found = index.find(&item[merge_key])?.is_some();
            if found {
                present.push(item);
            } else {
                server_only.push(item);
            }
        }
        return Ok((present, server_only));
    }
    let wanted: HashSet<String> = by.iter().map(Value::to_string).collect();
    Ok(merged
        .into_iter()
        .partition(|item| wanted.contains(&item.to_string())))
}

/// The common element type of the lists (Kubernetes' `sliceElementType`).
fn element_kind(lists: &[&[Value]]) -> Result<Kind, PatchError> {
    let mut found: Option<Kind> = None;
    for value in lists.iter().flat_map(|l| l.iter()) {
        let k = kind(value);
        match found {
            None if k == Kind::Array => return Err(PatchError::ListOfLists),
            None if k == Kind::Null => return Err(mixed(lists)),
            None => found = Some(k),
            Some(prev) if prev != k => return Err(mixed(lists)),
            Some(_) => {}
        }
    }
    found.ok_or(PatchError::EmptyLists)
}

fn mixed(lists: &[&[Value]]) -> PatchError {
    let rendered: Vec<String> = lists
        .iter()
        .map(|l| Value::Array(l.to_vec()).to_string())
        .collect();
    PatchError::MixedListElements {
        lists: rendered.join(" "),
    }
}

/// `$retainKeys: [..]`: every other key of `original` is cleared; the patch may only set
/// retained keys.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::BadRetainKeysFormat);
    };
    let retained: HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
    for (key, value) in patch.iter() {
        let exempt = value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER);
        if !exempt && !retained.contains(key.as_str()) {
            return Err(PatchError::BadRetainKeysFormat);
        }
    }
    original.retain(|key, _| retained.contains(key.as_str()));
    Ok(())
}

/// Processes each `$setElementOrder/<field>` with its list: merges the list, then orders it as
/// the directive says (Kubernetes' `mergePatchIntoOriginal`). Both keys leave `patch`.
fn merge_ordered_lists(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Schema<'_>,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let order = patch.remove(&directive).unwrap_or_default();
        let Value::Array(order) = order else {
            return Err(PatchError::type_mismatch("[]interface {}", &order));
        };
        let field = extract_key(&directive, SET_ELEMENT_ORDER)?;
        let original_list = take_list(original, &field)?;
        let patch_list = take_list(patch, &field)?;
        let plan = schema.field(&field);
        let merge_key = plan.merge_key;
        validate_order(patch_list.as_deref().unwrap_or(&[]), &order, merge_key)?;

        let server_order = original_list.clone().unwrap_or_default();
        let merged = match (original_list, patch_list.clone()) {
            (Some(current), None) => current,
            (None, Some(added)) => strip_list(added)?,
            (Some(current), Some(changes)) => merge_list_field(current, changes, &plan, false)?,
            (None, None) => continue,
        };
        let key = ItemKey {
            merge_key,
            maps: merge_key.is_some(),
        };
        let (patch_items, server_only) = partition(merged, &order, key)?;
        let element = element_kind(&[&server_order, patch_list.as_deref().unwrap_or(&[])])?;
        let key = ItemKey {
            merge_key,
            maps: element == Kind::Object,
        };
        let ordered =
            normalize_element_order(patch_items, server_only, &order, &server_order, key)?;
        original.insert(field, Value::Array(ordered));
    }
    Ok(())
}

/// Removes `field` from `map` when it is a list; absent is `None`, anything else an error.
fn take_list(map: &mut Map<String, Value>, field: &str) -> Result<Option<Vec<Value>>, PatchError> {
    match map.remove(field) {
        None => Ok(None),
        Some(Value::Array(list)) => Ok(Some(list)),
        Some(other) => Err(PatchError::type_mismatch("[]interface {}", &other)),
    }
}

/// The items of the patch list (deletions aside) must appear in `$setElementOrder` in the same
/// relative order.
fn validate_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut candidates = Vec::with_capacity(patch_list.len());
    for item in patch_list {
        if merge_key.is_some() {
            if !item.is_object() {
                return Err(PatchError::type_mismatch("map[string]interface {}", item));
            }
            if item.get(DIRECTIVE_MARKER).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        candidates.push(item);
    }
    let mut p = 0;
    let mut o = 0;
    while p < candidates.len() && o < order.len() {
        if candidates[p].get(DIRECTIVE_MARKER).is_some() && candidates[p].is_object() {
            p += 1;
            continue;
        }
        if same_item(candidates[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < candidates.len() {
        return Err(PatchError::OrderMismatch {
            patch: Value::Array(patch_list.to_vec()).to_string(),
            order: Value::Array(order.to_vec()).to_string(),
        });
    }
    Ok(())
}

fn same_item(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool, PatchError> {
    let Some(merge_key) = merge_key else {
        return Ok(left == right);
    };
    require_merge_key(left, merge_key)?;
    require_merge_key(right, merge_key)?;
    Ok(left[merge_key] == right[merge_key])
}

/// `$prefix/field` → `field`; anything else is a malformed directive.
fn extract_key(key: &str, prefix: &'static str) -> Result<String, PatchError> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(field.to_string()),
        _ if prefix == SET_ELEMENT_ORDER => Err(PatchError::BadSetElementOrderFormat {
            key: key.to_string(),
        }),
        _ => Err(PatchError::BadPrimitiveListFormat {
            key: key.to_string(),
        }),
    }
}

/// A patch value that has nothing to merge with: nulls are dropped, then directives.
fn new_value(mut value: Value) -> Result<Option<Value>, PatchError> {
    discard_nulls(&mut value);
    strip_directives(value)
}

fn discard_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(discard_nulls);
        }
        Value::Array(list) => list.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// Kubernetes' `removeDirectives`: a map carrying `$patch` disappears (`None`); additionally the
/// parallel-list directives are dropped and unknown `$` keys rejected, so none reaches storage.
fn strip_directives(value: Value) -> Result<Option<Value>, PatchError> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE_MARKER) {
                return Ok(None);
            }
            let mut out = Map::new();
            for (key, v) in map {
                if key.starts_with(SET_ELEMENT_ORDER)
                    || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                    || key == RETAIN_KEYS
                {
                    continue;
                }
                if key.starts_with('$') {
                    return Err(PatchError::UnknownDirectiveKey { key });
                }
                if let Some(v) = strip_directives(v)? {
                    out.insert(key, v);
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Value::Array(list) => Ok(Some(Value::Array(strip_list(list)?))),
        other => Ok(Some(other)),
    }
}

fn strip_list(list: Vec<Value>) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        if let Some(item) = strip_directives(item)? {
            out.push(item);
        }
    }
    Ok(out)
}

/// A directive value as Go's `%s` prints it: strings bare, anything else as JSON.
fn display_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[path = "strategic_tests.rs"]
mod tests;
