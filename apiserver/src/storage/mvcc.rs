//! The on-disk MVCC layout of the redb backend, and its reads and writes inside transactions.
//!
//! Four tables:
//! - `current`: key → (create_revision, mod_revision, value): the latest state, so reads at the
//!   latest revision never walk history.
//! - `versions`: (key, revision) → a put (create_revision, value) or a tombstone: every version
//!   since the compacted revision, for reads at a past revision and for events' `prev`.
//! - `log`: revision → key: the order of writes, for watch replay and compaction.
//! - `meta`: the current and the compacted revision.
//!
//! Reads live in `reads.rs`.
//!
//! Compaction at `c` keeps, per key, the newest version at or below `c` when it is a put (it is
//! still visible above `c`, and it is the `prev` of the key's next event), and every version
//! above `c`. So any event above the compacted revision can be rebuilt from `versions`.

use std::collections::BTreeSet;
use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{Event, EventKind, KeyValue, Precondition, Revision, StorageError};

pub(super) const CURRENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("current");
pub(super) const VERSIONS: TableDefinition<(&[u8], i64), &[u8]> = TableDefinition::new("versions");
pub(super) const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

const TAG_TOMBSTONE: u8 = 0;
const TAG_PUT: u8 = 1;

/// A stored record that cannot be decoded: the file is damaged or was written by something else.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("record in table {table} is truncated ({len} bytes)")]
    Truncated { table: &'static str, len: usize },
    #[error("record in table {table} has unknown tag {tag}")]
    UnknownTag { table: &'static str, tag: u8 },
    #[error("version of key {key:?} at revision {revision} is missing")]
    MissingVersion { key: Vec<u8>, revision: Revision },
}

/// Wraps a backend failure with the operation that hit it.
pub(crate) fn backend<E>(op: &'static str) -> impl FnOnce(E) -> StorageError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| StorageError::Backend {
        op,
        source: Box::new(source),
    }
}

/// Creates the tables when missing and returns (current revision, compacted revision).
pub(crate) fn init(txn: &WriteTransaction) -> Result<(Revision, Revision), StorageError> {
    txn.open_table(CURRENT).map_err(backend("open current"))?;
    txn.open_table(VERSIONS).map_err(backend("open versions"))?;
    txn.open_table(LOG).map_err(backend("open log"))?;
    let meta = txn.open_table(META).map_err(backend("open meta"))?;
    let get = |name| -> Result<Revision, StorageError> {
        Ok(meta
            .get(name)
            .map_err(backend("read meta"))?
            .map_or(0, |v| v.value()))
    };
    Ok((get(META_REVISION)?, get(META_COMPACTED)?))
}

/// (current revision, compacted revision) as of a read transaction.
pub(crate) fn read_meta(txn: &ReadTransaction) -> Result<(Revision, Revision), StorageError> {
    let meta = txn.open_table(META).map_err(backend("open meta"))?;
    let get = |name| -> Result<Revision, StorageError> {
        Ok(meta
            .get(name)
            .map_err(backend("read meta"))?
            .map_or(0, |v| v.value()))
    };
    Ok((get(META_REVISION)?, get(META_COMPACTED)?))
}

fn read_i64(bytes: &[u8], at: usize, table: &'static str) -> Result<i64, RecordError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .ok_or(RecordError::Truncated {
            table,
            len: bytes.len(),
        })
}

fn encode_current(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(value);
    out
}

pub(super) fn decode_current(key: &[u8], bytes: &[u8]) -> Result<KeyValue, RecordError> {
    Ok(KeyValue {
        key: key.to_vec(),
        create_revision: read_i64(bytes, 0, "current")?,
        mod_revision: read_i64(bytes, 8, "current")?,
        value: Arc::from(&bytes[16..]),
    })
}

fn encode_put(create: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + value.len());
    out.push(TAG_PUT);
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a `versions` record: `Some` for a put, `None` for a tombstone.
pub(super) fn decode_version(
    key: &[u8],
    revision: Revision,
    bytes: &[u8],
) -> Result<Option<KeyValue>, RecordError> {
    match bytes.first() {
        Some(&TAG_TOMBSTONE) => Ok(None),
        Some(&TAG_PUT) => Ok(Some(KeyValue {
            key: key.to_vec(),
            create_revision: read_i64(bytes, 1, "versions")?,
            mod_revision: revision,
            value: Arc::from(&bytes[9..]),
        })),
        Some(&tag) => Err(RecordError::UnknownTag {
            table: "versions",
            tag,
        }),
        None => Err(RecordError::Truncated {
            table: "versions",
            len: 0,
        }),
    }
}

/// The first key after every key that starts with `prefix`; `None` when there is no such key.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The tables of one write transaction.
pub(crate) struct WriteTables<'t> {
    current: Table<'t, &'static [u8], &'static [u8]>,
    versions: Table<'t, (&'static [u8], i64), &'static [u8]>,
    log: Table<'t, i64, &'static [u8]>,
    meta: Table<'t, &'static str, i64>,
}

/// What one write did: the caller's answer and, when it happened, its event.
pub(crate) type Outcome = Result<(KeyValue, Event), StorageError>;

impl<'t> WriteTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StorageError> {
        Ok(WriteTables {
            current: txn.open_table(CURRENT).map_err(backend("open current"))?,
            versions: txn.open_table(VERSIONS).map_err(backend("open versions"))?,
            log: txn.open_table(LOG).map_err(backend("open log"))?,
            meta: txn.open_table(META).map_err(backend("open meta"))?,
        })
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        let found = self.current.get(key).map_err(backend("get"))?;
        found
            .map(|v| decode_current(key, v.value()))
            .transpose()
            .map_err(backend("decode current"))
    }

    /// Writes `value` at `revision` if `pre` holds. The outer error is a backend failure that
    /// dooms the whole transaction; the inner one is this write's own failure.
    pub(crate) fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        pre: Precondition,
        revision: Revision,
    ) -> Result<Outcome, StorageError> {
        let prev = self.latest(key)?;
        if let Err(e) = check(key, prev.as_ref(), pre) {
            return Ok(Err(e));
        }
        let create = prev.as_ref().map_or(revision, |p| p.create_revision);
        self.current
            .insert(key, encode_current(create, revision, value).as_slice())
            .map_err(backend("put"))?;
        self.versions
            .insert((key, revision), encode_put(create, value).as_slice())
            .map_err(backend("put"))?;
        self.log.insert(revision, key).map_err(backend("put"))?;
        let kv = KeyValue {
            key: key.to_vec(),
            value: Arc::from(value),
            create_revision: create,
            mod_revision: revision,
        };
        let event = Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev,
        };
        Ok(Ok((kv, event)))
    }

    /// Deletes `key` at `revision` if it exists and `pre` holds.
    pub(crate) fn delete(
        &mut self,
        key: &[u8],
        pre: Precondition,
        revision: Revision,
    ) -> Result<Outcome, StorageError> {
        let prev = self.latest(key)?;
        if let Err(e) = check(key, prev.as_ref(), pre) {
            return Ok(Err(e));
        }
        let Some(prev) = prev else {
            return Ok(Err(not_found(key)));
        };
        self.current.remove(key).map_err(backend("delete"))?;
        self.versions
            .insert((key, revision), [TAG_TOMBSTONE].as_slice())
            .map_err(backend("delete"))?;
        self.log.insert(revision, key).map_err(backend("delete"))?;
        let kv = KeyValue {
            mod_revision: revision,
            ..prev.clone()
        };
        let event = Event {
            kind: EventKind::Delete,
            kv: kv.clone(),
            prev: Some(prev),
        };
        Ok(Ok((kv, event)))
    }

    pub(crate) fn set_revision(&mut self, revision: Revision) -> Result<(), StorageError> {
        self.meta
            .insert(META_REVISION, revision)
            .map_err(backend("write meta"))?;
        Ok(())
    }

    /// Drops the history in `(from, to]`, `from` being the compacted revision so far.
    pub(crate) fn compact(&mut self, from: Revision, to: Revision) -> Result<(), StorageError> {
        let mut revisions = Vec::new();
        let mut keys = BTreeSet::new();
        for entry in self.log.range(from + 1..=to).map_err(backend("compact"))? {
            let (rev, key) = entry.map_err(backend("compact"))?;
            revisions.push(rev.value());
            keys.insert(key.value().to_vec());
        }
        for key in &keys {
            let mut doomed = Vec::new();
            let mut newest_is_put = false;
            let iter = self
                .versions
                .range((key.as_slice(), i64::MIN)..=(key.as_slice(), to))
                .map_err(backend("compact"))?;
            for entry in iter {
                let (k, v) = entry.map_err(backend("compact"))?;
                doomed.push(k.value().1);
                newest_is_put = v.value().first() == Some(&TAG_PUT);
            }
            if newest_is_put {
                doomed.pop();
            }
            for rev in doomed {
                self.versions
                    .remove((key.as_slice(), rev))
                    .map_err(backend("compact"))?;
            }
        }
        for rev in revisions {
            self.log.remove(rev).map_err(backend("compact"))?;
        }
        self.meta
            .insert(META_COMPACTED, to)
            .map_err(backend("write meta"))?;
        Ok(())
    }
}

fn not_found(key: &[u8]) -> StorageError {
    StorageError::NotFound {
        key: String::from_utf8_lossy(key).into_owned(),
    }
}

/// Checks a precondition against the key's latest value. `ModRevision` on a missing key gives
/// `NotFound` (as Kubernetes' guaranteed update does), not `Conflict`.
fn check(key: &[u8], latest: Option<&KeyValue>, pre: Precondition) -> Result<(), StorageError> {
    let name = || String::from_utf8_lossy(key).into_owned();
    match (pre, latest) {
        (Precondition::None, _) => Ok(()),
        (Precondition::MustNotExist, None) => Ok(()),
        (Precondition::MustNotExist, Some(_)) => Err(StorageError::AlreadyExists { key: name() }),
        (Precondition::MustExist | Precondition::ModRevision(_), None) => Err(not_found(key)),
        (Precondition::MustExist, Some(_)) => Ok(()),
        (Precondition::ModRevision(r), Some(kv)) if kv.mod_revision == r => Ok(()),
        (Precondition::ModRevision(_), Some(kv)) => Err(StorageError::Conflict {
            key: name(),
            current: Some(Box::new(kv.clone())),
        }),
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::storage::redb_store::testing::{delete, put, req, temp_store};
    use crate::storage::{RedbOptions, Storage};

    #[test]
    fn compaction_keeps_what_is_visible_after_it() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/p/a", "a1", Precondition::None).expect("put"); // 1
        put(&store, "/p/b", "b1", Precondition::None).expect("put"); // 2
        put(&store, "/p/a", "a2", Precondition::None).expect("put"); // 3
        delete(&store, "/p/b", Precondition::None).expect("delete"); // 4
        put(&store, "/p/a", "a3", Precondition::None).expect("put"); // 5
        block_on(store.compact(4)).expect("compact");
        assert_eq!(store.compacted_revision(), 4);
        for rev in [1, 4] {
            assert!(matches!(
                block_on(store.range(req("/p/", None, 0, Some(rev)))),
                Err(StorageError::Compacted { requested, compacted: 4 }) if requested == rev
            ));
        }
        let at5 = block_on(store.range(req("/p/", None, 0, Some(5)))).expect("range");
        assert_eq!(at5.kvs.len(), 1);
        assert_eq!(&*at5.kvs[0].value, b"a3");
        assert!(matches!(
            block_on(store.compact(4)),
            Err(StorageError::Compacted {
                requested: 4,
                compacted: 4
            })
        ));
        assert!(matches!(
            block_on(store.compact(9)),
            Err(StorageError::FutureRevision {
                requested: 9,
                current: 5
            })
        ));
        // Only /p/a's version 3 (the prev of revision 5) and 5 remain; /p/b is gone entirely.
        let txn = store.begin_read_for_test();
        let versions = txn.open_table(VERSIONS).expect("versions");
        let left: Vec<(Vec<u8>, i64)> = versions
            .range::<(&[u8], i64)>(..)
            .expect("range")
            .map(|e| {
                let (k, _) = e.expect("entry");
                let (key, rev) = k.value();
                (key.to_vec(), rev)
            })
            .collect();
        assert_eq!(left, [(b"/p/a".to_vec(), 3), (b"/p/a".to_vec(), 5)]);
        let log = txn.open_table(LOG).expect("log");
        assert_eq!(redb::ReadableTableMetadata::len(&log).expect("len"), 1);
    }

    #[test]
    fn automatic_compaction_keeps_the_history_bound() {
        let opts = RedbOptions {
            history: 10,
            compaction_chunk: 3,
            ..RedbOptions::default()
        };
        let (_dir, store) = temp_store(opts);
        for i in 0..40 {
            put(&store, "/k", &i.to_string(), Precondition::None).expect("put");
        }
        // The writer compacts a chunk after every batch, so the history never exceeds
        // 10 + 10/10 revisions by more than the write in flight, and never drops below 10.
        let compacted = store.compacted_revision();
        assert!((28..=30).contains(&compacted), "compacted {compacted}");
        let kv = block_on(store.get(b"/k")).expect("get").expect("present");
        assert_eq!(&*kv.value, b"39");
        let resp = block_on(store.range(req("/k", None, 0, Some(31)))).expect("range at 31");
        assert_eq!(&*resp.kvs[0].value, b"30");
    }

    #[test]
    fn prefix_end_increments_last_byte_below_max() {
        assert_eq!(prefix_end(b"/pods/"), Some(b"/pods0".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let kv = decode_current(b"k", &encode_current(3, 7, b"v")).expect("decode");
        assert_eq!((kv.create_revision, kv.mod_revision), (3, 7));
        assert_eq!(&*kv.value, b"v");
        let put = decode_version(b"k", 9, &encode_put(4, b"x")).expect("decode");
        assert_eq!(
            put.map(|kv| (kv.create_revision, kv.mod_revision)),
            Some((4, 9))
        );
        assert_eq!(
            decode_version(b"k", 9, &[TAG_TOMBSTONE]).expect("decode"),
            None
        );
        assert!(matches!(
            decode_version(b"k", 9, &[7]),
            Err(RecordError::UnknownTag { tag: 7, .. })
        ));
        assert!(matches!(
            decode_current(b"k", &[1, 2]),
            Err(RecordError::Truncated { len: 2, .. })
        ));
    }

    #[test]
    fn preconditions() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: Arc::from(&b"v"[..]),
            create_revision: 2,
            mod_revision: 5,
        };
        assert!(check(b"k", Some(&kv), Precondition::ModRevision(5)).is_ok());
        assert!(matches!(
            check(b"k", Some(&kv), Precondition::ModRevision(4)),
            Err(StorageError::Conflict { current: Some(c), .. }) if c.mod_revision == 5
        ));
        assert!(matches!(
            check(b"k", None, Precondition::ModRevision(4)),
            Err(StorageError::NotFound { .. })
        ));
        assert!(matches!(
            check(b"k", Some(&kv), Precondition::MustNotExist),
            Err(StorageError::AlreadyExists { .. })
        ));
        assert!(matches!(
            check(b"k", None, Precondition::MustExist),
            Err(StorageError::NotFound { .. })
        ));
        assert!(check(b"k", None, Precondition::None).is_ok());
    }
}
