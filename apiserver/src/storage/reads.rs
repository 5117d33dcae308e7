//! Reads of the redb backend's MVCC tables (see `mvcc.rs` for the layout): the latest value,
//! ranges at the latest or a past revision, and the events of a revision range for watches.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable};

use super::mvcc::{
    backend, decode_current, decode_version, prefix_end, read_meta, RecordError, CURRENT, LOG,
    VERSIONS,
};
use super::{Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, StorageError};

/// The latest value of `key`.
pub(crate) fn get(txn: &ReadTransaction, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
    let current = txn.open_table(CURRENT).map_err(backend("open current"))?;
    let found = current.get(key).map_err(backend("get"))?;
    found
        .map(|v| decode_current(key, v.value()))
        .transpose()
        .map_err(backend("decode current"))
}

/// A range read at the latest revision or, with `req.revision`, at a past one.
/// `Some(r)` with `r <= 0` reads the latest, as etcd's revision 0 does.
pub(crate) fn range(
    txn: &ReadTransaction,
    req: &RangeRequest,
) -> Result<RangeResponse, StorageError> {
    let (current, compacted) = read_meta(txn)?;
    let at = match req.revision {
        Some(r) if r > current => {
            return Err(StorageError::FutureRevision {
                requested: r,
                current,
            })
        }
        Some(r) if r > 0 && r <= compacted => {
            return Err(StorageError::Compacted {
                requested: r,
                compacted,
            })
        }
        Some(r) if r > 0 => r,
        _ => current,
    };
    let lower = match &req.start {
        Some(start) if start.as_slice() > req.prefix.as_slice() => start.clone(),
        _ => req.prefix.clone(),
    };
    let upper = prefix_end(&req.prefix);
    let mut resp = RangeResponse {
        revision: at,
        ..RangeResponse::default()
    };
    if upper.as_ref().is_some_and(|u| lower >= *u) {
        return Ok(resp);
    }
    let limit = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit
    };
    // Pushes one key and reports whether the limit is exceeded (which sets `more`).
    let push = |resp: &mut RangeResponse, kv: KeyValue| {
        if resp.kvs.len() == limit {
            resp.more = true;
            false
        } else {
            resp.kvs.push(kv);
            true
        }
    };
    if at == current {
        let table = txn.open_table(CURRENT).map_err(backend("open current"))?;
        let upper_bound = upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let iter = table
            .range::<&[u8]>((Bound::Included(lower.as_slice()), upper_bound))
            .map_err(backend("range"))?;
        for entry in iter {
            let (k, v) = entry.map_err(backend("range"))?;
            let kv = decode_current(k.value(), v.value()).map_err(backend("decode current"))?;
            if !push(&mut resp, kv) {
                break;
            }
        }
        return Ok(resp);
    }
    let table = txn.open_table(VERSIONS).map_err(backend("open versions"))?;
    let upper_bound = upper
        .as_deref()
        .map_or(Bound::Unbounded, |u| Bound::Excluded((u, i64::MIN)));
    let iter = table
        .range::<(&[u8], i64)>((Bound::Included((lower.as_slice(), i64::MIN)), upper_bound))
        .map_err(backend("range versions"))?;
    // Versions come in (key, revision) order: the last one at or below `at` is the key's state.
    let mut key: Option<Vec<u8>> = None;
    let mut visible: Option<KeyValue> = None;
    for entry in iter {
        let (k, v) = entry.map_err(backend("range versions"))?;
        let (k, rev) = k.value();
        if key.as_deref() != Some(k) {
            if let Some(kv) = visible.take() {
                if !push(&mut resp, kv) {
                    return Ok(resp);
                }
            }
            key = Some(k.to_vec());
        }
        if rev <= at {
            visible = decode_version(k, rev, v.value()).map_err(backend("decode version"))?;
        }
    }
    if let Some(kv) = visible {
        push(&mut resp, kv);
    }
    Ok(resp)
}

/// Calls `f` with every event under `prefix` with a revision in `from..=to`, in order.
pub(crate) fn read_events(
    txn: &ReadTransaction,
    prefix: &[u8],
    from: Revision,
    to: Revision,
    mut f: impl FnMut(Event),
) -> Result<(), StorageError> {
    if from > to {
        return Ok(());
    }
    let log = txn.open_table(LOG).map_err(backend("open log"))?;
    let versions = txn.open_table(VERSIONS).map_err(backend("open versions"))?;
    for entry in log.range(from..=to).map_err(backend("read log"))? {
        let (rev, key) = entry.map_err(backend("read log"))?;
        let key = key.value();
        if key.starts_with(prefix) {
            f(load_event(&versions, key, rev.value())?);
        }
    }
    Ok(())
}

/// Rebuilds the event that `revision` recorded for `key` out of `versions`.
fn load_event(
    versions: &impl ReadableTable<(&'static [u8], i64), &'static [u8]>,
    key: &[u8],
    revision: Revision,
) -> Result<Event, StorageError> {
    let missing = || {
        backend("load event")(RecordError::MissingVersion {
            key: key.to_vec(),
            revision,
        })
    };
    let record = versions
        .get((key, revision))
        .map_err(backend("load event"))?
        .ok_or_else(missing)?;
    let this = decode_version(key, revision, record.value()).map_err(backend("decode version"))?;
    let prev = versions
        .range((key, i64::MIN)..(key, revision))
        .map_err(backend("load event"))?
        .next_back()
        .transpose()
        .map_err(backend("load event"))?;
    let prev = match prev {
        Some((k, v)) => {
            decode_version(key, k.value().1, v.value()).map_err(backend("decode version"))?
        }
        None => None,
    };
    Ok(match this {
        Some(kv) => Event {
            kind: EventKind::Put,
            kv,
            prev,
        },
        None => {
            let last = prev.clone().ok_or_else(missing)?;
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    mod_revision: revision,
                    ..last
                },
                prev,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::storage::redb_store::testing::{delete, put, req, temp_store};
    use crate::storage::{Precondition, RedbOptions, RedbStore, Storage};

    fn range_keys(
        store: &RedbStore,
        req: RangeRequest,
    ) -> Result<(Vec<String>, bool), StorageError> {
        let resp = block_on(store.range(req))?;
        let keys = resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).expect("utf8 key"))
            .collect();
        Ok((keys, resp.more))
    }

    #[test]
    fn range_honours_prefix_start_limit_and_more() {
        let (_dir, store) = temp_store(RedbOptions::default());
        for key in [
            "/pods/a", "/pods/b", "/pods/c", "/pods0", "/podsx", "/svc/a",
        ] {
            put(&store, key, "v", Precondition::None).expect("put");
        }
        let all = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(
            range_keys(&store, req("/pods/", None, 0, None)).expect("range"),
            (all(&["/pods/a", "/pods/b", "/pods/c"]), false)
        );
        assert_eq!(
            range_keys(&store, req("/pods/", None, 2, None)).expect("range"),
            (all(&["/pods/a", "/pods/b"]), true)
        );
        assert_eq!(
            range_keys(&store, req("/pods/", Some("/pods/b"), 2, None)).expect("range"),
            (all(&["/pods/b", "/pods/c"]), false)
        );
        assert_eq!(
            range_keys(&store, req("/pods/", Some("/pods/c"), 1, None)).expect("range"),
            (all(&["/pods/c"]), false)
        );
        assert_eq!(
            range_keys(&store, req("/pods/", Some("/zzz"), 0, None)).expect("range"),
            (Vec::new(), false)
        );
        assert_eq!(
            range_keys(&store, req("", None, 0, None))
                .expect("range")
                .0
                .len(),
            6
        );
        let resp = block_on(store.range(req("/svc/", None, 0, None))).expect("range");
        assert_eq!(resp.revision, 6);
    }

    #[test]
    fn range_at_past_revision_sees_deleted_and_old_values() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/p/a", "a1", Precondition::None).expect("put"); // 1
        put(&store, "/p/b", "b1", Precondition::None).expect("put"); // 2
        put(&store, "/p/a", "a2", Precondition::None).expect("put"); // 3
        delete(&store, "/p/b", Precondition::None).expect("delete"); // 4
        put(&store, "/p/c", "c1", Precondition::None).expect("put"); // 5
        let at = |rev| block_on(store.range(req("/p/", None, 0, Some(rev)))).expect("range");
        let view = |resp: RangeResponse| {
            resp.kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8(kv.key).expect("utf8"),
                        kv.value.to_vec(),
                        kv.mod_revision,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            view(at(2)),
            [
                ("/p/a".into(), b"a1".to_vec(), 1),
                ("/p/b".into(), b"b1".to_vec(), 2)
            ]
        );
        assert_eq!(
            view(at(3)),
            [
                ("/p/a".into(), b"a2".to_vec(), 3),
                ("/p/b".into(), b"b1".to_vec(), 2)
            ]
        );
        assert_eq!(view(at(4)), [("/p/a".into(), b"a2".to_vec(), 3)]);
        assert_eq!(at(4).revision, 4);
        let limited = block_on(store.range(req("/p/", None, 1, Some(2)))).expect("range");
        assert_eq!((limited.kvs.len(), limited.more), (1, true));
        assert_eq!(
            view(at(5)),
            [
                ("/p/a".into(), b"a2".to_vec(), 3),
                ("/p/c".into(), b"c1".to_vec(), 5)
            ]
        );
        assert!(matches!(
            block_on(store.range(req("/p/", None, 0, Some(6)))),
            Err(StorageError::FutureRevision {
                requested: 6,
                current: 5
            })
        ));
    }
}
