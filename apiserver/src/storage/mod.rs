//! Storage with etcd's semantics, whatever the backend.
//!
//! One global revision counts every write. Every key carries the revision that created it and the
//! revision that last modified it; writes are compare-and-swap on the modification revision; reads
//! range over a key prefix with a limit and a start key, optionally at a past revision; watches
//! start from a revision; history older than the compacted revision is gone (`Compacted`).
//!
//! The trait is object-safe and executor-agnostic (futures are boxed and `Send`), so a real etcd
//! backend can implement it later without changing callers.

mod error;
mod mvcc;
mod reads;
mod redb_store;
mod watch;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use error::StorageError;
pub use redb_store::{CommitObserver, RedbOptions, RedbStore};

/// A storage revision: etcd's int64 revision, monotonically increasing from 1.
pub type Revision = i64;

/// A boxed, `Send` future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One key and its value at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Arc<[u8]>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the write that produced this value.
    pub mod_revision: Revision,
}

/// Condition a write must meet, checked atomically with the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// The key must not exist (create).
    MustNotExist,
    /// The key must exist with exactly this modification revision (update / delete with CAS).
    ModRevision(Revision),
    /// The key must exist, whatever its revision.
    MustExist,
}

/// A range read over every key that starts with `prefix`, in key order.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    pub prefix: Vec<u8>,
    /// Inclusive start key (must itself start with `prefix`); used by continue tokens.
    pub start: Option<Vec<u8>>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read the state as of this revision; `None` means the latest.
    /// A revision at or below the compacted one gives [`StorageError::Compacted`];
    /// one above the current revision gives [`StorageError::FutureRevision`].
    pub revision: Option<Revision>,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// True when keys past the limit remain.
    pub more: bool,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put`: the new key/value. For `Delete`: the key with its last value, `mod_revision`
    /// set to the revision of the deletion.
    pub kv: KeyValue,
    /// The previous value, if the key existed before this event.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A stream of watch events in revision order. Each item is one batch (one revision or more).
/// The stream ends (`None`) only when the store shuts down; a watcher that is too slow receives
/// `Err(StorageError::Compacted { .. })` and is closed.
pub type WatchStream = tokio::sync::mpsc::UnboundedReceiver<Result<Vec<Event>, StorageError>>;

/// The storage contract shared by the embedded (redb) and etcd backends.
pub trait Storage: Send + Sync + 'static {
    /// The latest value of one key.
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>, StorageError>>;

    /// A prefix range read; see [`RangeRequest`].
    fn range(&self, req: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, StorageError>>;

    /// Writes `value` under `key` if `pre` holds. Returns the new key/value. The future completes
    /// only once the write is durable (fsync'd).
    fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        pre: Precondition,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>>;

    /// Deletes `key` if `pre` holds. Returns the deleted key/value with `mod_revision` set to the
    /// deletion's revision. Durable before the future completes.
    fn delete(
        &self,
        key: Vec<u8>,
        pre: Precondition,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>>;

    /// Watches every key under `prefix`, delivering events with revision `>= start_revision`
    /// (etcd semantics: inclusive). `start_revision` 0 means "from now on".
    /// Gives [`StorageError::Compacted`] when `start_revision` is at or below the compacted revision.
    fn watch(&self, prefix: Vec<u8>, start_revision: Revision)
        -> Result<WatchStream, StorageError>;

    /// The latest revision (0 for an empty store).
    fn current_revision(&self) -> Revision;

    /// The compacted revision: history at or below it is gone.
    fn compacted_revision(&self) -> Revision;

    /// Drops history at or below `revision` (keeps the latest value of every live key).
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StorageError>>;
}
