//! Ordering of merged lists: the precedence `$setElementOrder` > order in the patch > order in
//! the live object, as Kubernetes' strategic merge patch computes it.
//!
//! Kubernetes sorts with Go's `sort.SliceStable` and a comparator that is not a strict weak
//! order when an item is missing from the order list (it then reports "less" both ways). The
//! result then depends on the exact sequence of comparisons, so [`go_stable_sort`] follows the
//! algorithm of Go's stable sort (insertion-sorted blocks of 20, then SymMerge) rather than
//! using Rust's `sort_by`, which could order such items differently.

use std::collections::HashMap;

use serde_json::Value;

use super::PatchError;

/// How list items are identified: by the value of a merge key (lists of maps) or by themselves.
#[derive(Clone, Copy, Debug)]
pub(super) struct ItemKey<'a> {
    /// The merge key; only meaningful when `maps` is set.
    pub merge_key: Option<&'a str>,
    /// The list holds maps (identified by merge key), not primitives.
    pub maps: bool,
}

impl ItemKey<'_> {
    /// A string that is equal for two items exactly when Kubernetes considers them the same item.
    /// A map without the merge key has the key `null`, as Go's lookup of a missing key does.
    fn of(&self, item: &Value) -> String {
        if self.maps {
            let value = match (item, self.merge_key) {
                (Value::Object(m), Some(k)) => m.get(k).unwrap_or(&Value::Null),
                _ => &Value::Null,
            };
            value.to_string()
        } else {
            item.to_string()
        }
    }

    /// Position of the first item of `list` with each key.
    fn positions(&self, list: &[Value]) -> HashMap<String, usize> {
        let mut positions = HashMap::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            positions.entry(self.of(item)).or_insert(i);
        }
        positions
    }
}

/// Sorts `patch_items` by `patch_order` and `server_only` by `server_order`, then interleaves
/// them (Kubernetes' `normalizeElementOrder`).
pub(super) fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: ItemKey<'_>,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = normalize_slice_order(patch_items, patch_order, key)?;
    let server_only = normalize_slice_order(server_only, server_order, key)?;
    Ok(merge_sorted(server_only, patch_items, server_order, key))
}

/// Sorts `to_sort` by the position of each item in `order`; items marked `$patch: delete` go last.
fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    key: ItemKey<'_>,
) -> Result<Vec<Value>, PatchError> {
    let (mut keep, delete) = if key.maps {
        let merge_key = key.merge_key.unwrap_or("");
        for item in to_sort.iter().chain(order) {
            require_merge_key(item, merge_key)?;
        }
        to_sort.into_iter().partition(|item| {
            item.get(super::strategic::DIRECTIVE_MARKER)
                .and_then(Value::as_str)
                != Some("delete")
        })
    } else {
        (to_sort, Vec::new())
    };
    let positions = key.positions(order);
    let mut ranked: Vec<(Option<usize>, Value)> = keep
        .drain(..)
        .map(|item| (positions.get(&key.of(&item)).copied(), item))
        .collect();
    go_stable_sort(&mut ranked, |a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x < y,
        _ => true,
    });
    let mut sorted: Vec<Value> = ranked.into_iter().map(|(_, item)| item).collect();
    sorted.extend(delete);
    Ok(sorted)
}

/// `item` must be a map holding `merge_key`.
pub(super) fn require_merge_key(item: &Value, merge_key: &str) -> Result<(), PatchError> {
    match item {
        Value::Object(m) if m.contains_key(merge_key) => Ok(()),
        Value::Object(_) => Err(PatchError::MissingMergeKey {
            item: item.to_string(),
            merge_key: merge_key.to_string(),
        }),
        other => Err(PatchError::type_mismatch("map[string]interface {}", other)),
    }
}

/// Inserts the sorted `left` items into the sorted `right` items: a left item goes before the
/// current right item only when both are in `server_order` and it comes first there.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: ItemKey<'_>,
) -> Vec<Value> {
    let positions = key.positions(server_order);
    let rank = |item: &Value| positions.get(&key.of(item)).copied();
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((rank(l), rank(r)), (Some(a), Some(b)) if a < b),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// Go's `sort.SliceStable`: insertion sort on blocks of 20, then bottom-up SymMerge.
pub(super) fn go_stable_sort<T>(data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = data.len();
    let mut block = 20;
    let mut a = 0;
    while a + block <= n {
        insertion_sort(data, a, a + block, &less);
        a += block;
    }
    insertion_sort(data, a, n, &less);
    while block < n {
        let mut a = 0;
        while a + 2 * block <= n {
            sym_merge(data, a, a + block, a + 2 * block, &less);
            a += 2 * block;
        }
        if a + block < n {
            sym_merge(data, a, a + block, n, &less);
        }
        block *= 2;
    }
}

fn insertion_sort<T>(data: &mut [T], a: usize, b: usize, less: &impl Fn(&T, &T) -> bool) {
    for i in a + 1..b {
        let mut j = i;
        while j > a && less(&data[j], &data[j - 1]) {
            data.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// Merges the sorted runs `data[a..m]` and `data[m..b]` in place (Kim & Kutzner's SymMerge, as
/// Go implements it, including its binary searches' tie-breaking).
fn sym_merge<T>(data: &mut [T], a: usize, m: usize, b: usize, less: &impl Fn(&T, &T) -> bool) {
    if m - a == 1 {
        // Find the first element of the right run that is not less than data[a], and rotate
        // data[a] into place just before it.
        let (mut i, mut j) = (m, b);
        while i < j {
            let h = (i + j) / 2;
            if less(&data[h], &data[a]) {
                i = h + 1;
            } else {
                j = h;
            }
        }
        for k in a..i - 1 {
            data.swap(k, k + 1);
        }
        return;
    }
    if b - m == 1 {
        let (mut i, mut j) = (a, m);
        while i < j {
            let h = (i + j) / 2;
            if !less(&data[m], &data[h]) {
                i = h + 1;
            } else {
                j = h;
            }
        }
        let mut k = m;
        while k > i {
            data.swap(k, k - 1);
            k -= 1;
        }
        return;
    }
    let mid = (a + b) / 2;
    let n = mid + m;
    let (mut start, mut r) = if m > mid { (n - b, mid) } else { (a, m) };
    let p = n - 1;
    while start < r {
        let c = (start + r) / 2;
        if !less(&data[p - c], &data[c]) {
            start = c + 1;
        } else {
            r = c;
        }
    }
    let end = n - start;
    if start < m && m < end {
        rotate(data, start, m, end);
    }
    if a < start && start < mid {
        sym_merge(data, a, start, mid, less);
    }
    if mid < end && end < b {
        sym_merge(data, mid, end, b, less);
    }
}

/// Swaps the consecutive blocks `data[a..m]` and `data[m..b]`.
fn rotate<T>(data: &mut [T], a: usize, m: usize, b: usize) {
    data[a..b].rotate_left(m - a);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(list: &[Value]) -> Vec<&str> {
        list.iter().map(|v| v["name"].as_str().unwrap()).collect()
    }

    const BY_NAME: ItemKey<'static> = ItemKey {
        merge_key: Some("name"),
        maps: true,
    };

    #[test]
    fn stable_sort_matches_a_plain_stable_sort_for_total_orders() {
        let mut data: Vec<(u32, usize)> = (0..100).map(|i| ((i * 37 % 11) as u32, i)).collect();
        let mut expected = data.clone();
        expected.sort_by_key(|x| x.0);
        go_stable_sort(&mut data, |a, b| a.0 < b.0);
        assert_eq!(data, expected);
    }

    #[test]
    fn stable_sort_survives_inconsistent_comparators() {
        for n in [0, 1, 19, 20, 21, 41, 100, 257] {
            for mode in 0..3 {
                let mut data: Vec<usize> = (0..n).collect();
                go_stable_sort(&mut data, |a, b| match mode {
                    0 => true,
                    1 => false,
                    _ => (a * 7 + b * 3) % 5 < 2,
                });
                let mut sorted = data.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "n={n} mode={mode}");
                if mode == 1 {
                    assert_eq!(data, (0..n).collect::<Vec<_>>(), "never less: unchanged");
                }
            }
        }
    }

    #[test]
    fn new_items_go_before_server_only_items() {
        // Kubernetes prepends items the live list did not have when no order is given.
        let server = vec![json!({"name": "a"}), json!({"name": "b"})];
        let merged = normalize_element_order(
            vec![json!({"name": "c"})],
            server.clone(),
            &[json!({"name": "c"})],
            &server,
            BY_NAME,
        )
        .unwrap();
        assert_eq!(names(&merged), ["c", "a", "b"]);
    }

    #[test]
    fn patch_order_wins_and_server_items_interleave() {
        // "preserve the order from the patch in a merging list 2" from Kubernetes' tests.
        let server = vec![json!({"name": 1}), json!({"name": 2}), json!({"name": 3})];
        let patch = vec![json!({"name": 3}), json!({"name": 1})];
        let merged = normalize_element_order(
            vec![json!({"name": 1}), json!({"name": 3})],
            vec![json!({"name": 2})],
            &patch,
            &server,
            BY_NAME,
        )
        .unwrap();
        let keys: Vec<i64> = merged.iter().map(|v| v["name"].as_i64().unwrap()).collect();
        assert_eq!(keys, [2, 3, 1]);
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let err = normalize_element_order(vec![json!({"other": 1})], vec![], &[], &[], BY_NAME)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"map: {"other":1} does not contain declared merge key: name"#
        );
    }

    #[test]
    fn primitives_use_their_own_value() {
        let key = ItemKey {
            merge_key: None,
            maps: false,
        };
        let merged = normalize_element_order(
            vec![json!("x"), json!("z")],
            vec![json!("y")],
            &[json!("z"), json!("x")],
            &[json!("x"), json!("y")],
            key,
        )
        .unwrap();
        assert_eq!(merged, vec![json!("z"), json!("x"), json!("y")]);
    }
}
