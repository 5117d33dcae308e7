//! The embedded backend: [`Storage`] on one redb file.
//!
//! Reads run on the caller's thread in redb read transactions (cheap, concurrent with the
//! writer). Writes and compaction go through the single writer thread (see `writer.rs`), which
//! group-commits them durably.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use futures::channel::oneshot;
use redb::{Database, ReadableDatabase};

use super::mvcc::{self, backend};
use super::reads;
use super::watch::{self, Hub};
use super::writer::{Request, WriteOp, Writer};
use super::{
    BoxFuture, KeyValue, Precondition, RangeRequest, RangeResponse, Revision, Storage,
    StorageError, WatchStream,
};

/// Called after each durable commit of a write batch with the transaction's duration (from
/// begin to the end of the fsync) and the number of writes in the batch.
pub type CommitObserver = Arc<dyn Fn(Duration, usize) + Send + Sync>;

/// Tuning of [`RedbStore`].
#[derive(Clone)]
pub struct RedbOptions {
    /// Revisions of history kept: the writer compacts automatically once the history exceeds
    /// this by a tenth. 0 disables automatic compaction.
    pub history: Revision,
    /// Revisions compacted per transaction, so compaction never holds writers back for long.
    pub compaction_chunk: Revision,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Commit latency hook (for metrics).
    pub commit_observer: Option<CommitObserver>,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            history: 100_000,
            compaction_chunk: 1_000,
            max_batch: 4_096,
            commit_observer: None,
        }
    }
}

impl fmt::Debug for RedbOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbOptions")
            .field("history", &self.history)
            .field("compaction_chunk", &self.compaction_chunk)
            .field("max_batch", &self.max_batch)
            .field("commit_observer", &self.commit_observer.is_some())
            .finish()
    }
}

/// What the store's handle and its writer thread share.
pub(crate) struct Shared {
    pub(crate) db: Database,
    pub(crate) hub: Mutex<Hub>,
    pub(crate) revision: AtomicI64,
    pub(crate) compacted: AtomicI64,
    pub(crate) commits: AtomicU64,
}

/// The redb-backed [`Storage`]. Dropping the last handle stops the writer and ends watches.
pub struct RedbStore {
    shared: Arc<Shared>,
    requests: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl RedbStore {
    /// Opens (or creates) the store in the file at `path`, restoring its revisions and data.
    pub fn open(path: &Path, opts: RedbOptions) -> Result<Arc<RedbStore>, StorageError> {
        let db = Database::create(path).map_err(backend("open database"))?;
        let txn = db.begin_write().map_err(backend("begin write"))?;
        let (revision, compacted) = mvcc::init(&txn)?;
        txn.commit().map_err(backend("commit"))?;
        let shared = Arc::new(Shared {
            db,
            hub: Mutex::new(Hub::new(revision)),
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            commits: AtomicU64::new(0),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer::new(Arc::clone(&shared), opts, rx, revision, compacted);
        let handle = std::thread::Builder::new()
            .name("berth-storage-writer".into())
            .spawn(move || writer.run())
            .map_err(backend("spawn writer"))?;
        Ok(Arc::new(RedbStore {
            shared,
            requests: Some(tx),
            writer: Some(handle),
        }))
    }

    /// Durable write transactions committed since open (each may hold many writes).
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn begin_read_for_test(&self) -> redb::ReadTransaction {
        self.shared.db.begin_read().expect("begin read")
    }

    #[cfg(test)]
    pub(crate) fn db_for_test(&self) -> &Database {
        &self.shared.db
    }

    #[cfg(test)]
    pub(crate) fn hub_for_test(&self) -> &Mutex<Hub> {
        &self.shared.hub
    }

    #[cfg(test)]
    pub(crate) fn watcher_count(&self) -> usize {
        watch::lock(&self.shared.hub).watcher_count()
    }

    /// Queues a request; the future resolves with the writer's answer.
    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Request,
    ) -> Result<T, StorageError> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or(StorageError::Closed)?;
        requests
            .send(make(reply))
            .map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    fn write(&self, op: WriteOp) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        Box::pin(self.send(move |reply| Request::Write { op, reply }))
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit.
        self.requests.take();
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("storage writer panicked");
            }
        }
    }
}

impl Storage for RedbStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>, StorageError>> {
        Box::pin(async move {
            let txn = self.shared.db.begin_read().map_err(backend("begin read"))?;
            reads::get(&txn, key)
        })
    }

    fn range(&self, req: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, StorageError>> {
        Box::pin(async move {
            let txn = self.shared.db.begin_read().map_err(backend("begin read"))?;
            reads::range(&txn, &req)
        })
    }

    fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        pre: Precondition,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        self.write(WriteOp::Put { key, value, pre })
    }

    fn delete(
        &self,
        key: Vec<u8>,
        pre: Precondition,
    ) -> BoxFuture<'_, Result<KeyValue, StorageError>> {
        self.write(WriteOp::Delete { key, pre })
    }

    fn watch(
        &self,
        prefix: Vec<u8>,
        start_revision: Revision,
    ) -> Result<WatchStream, StorageError> {
        watch::watch(&self.shared.db, &self.shared.hub, prefix, start_revision)
    }

    fn current_revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(self.send(move |reply| Request::Compact { revision, reply }))
    }
}

/// Helpers shared by the storage tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use futures::executor::block_on;

    use super::{RedbOptions, RedbStore};
    use crate::storage::{KeyValue, Precondition, RangeRequest, Revision, Storage, StorageError};

    /// A range request over `prefix`.
    pub(crate) fn req(
        prefix: &str,
        start: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> RangeRequest {
        RangeRequest {
            prefix: prefix.into(),
            start: start.map(Into::into),
            limit,
            revision,
        }
    }

    /// A store in a fresh temporary directory (kept alive by the returned guard).
    pub(crate) fn temp_store(opts: RedbOptions) -> (tempfile::TempDir, Arc<RedbStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("berth.redb"), opts).expect("open store");
        (dir, store)
    }

    pub(crate) fn put(
        store: &RedbStore,
        key: &str,
        value: &str,
        pre: Precondition,
    ) -> Result<KeyValue, StorageError> {
        block_on(store.put(key.into(), value.into(), pre))
    }

    pub(crate) fn delete(
        store: &RedbStore,
        key: &str,
        pre: Precondition,
    ) -> Result<KeyValue, StorageError> {
        block_on(store.delete(key.into(), pre))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::executor::block_on;

    use super::testing::{delete, put, temp_store};
    use super::*;

    fn value(kv: &KeyValue) -> &[u8] {
        &kv.value
    }

    #[test]
    fn create_then_create_again_is_already_exists() {
        let (_dir, store) = temp_store(RedbOptions::default());
        let kv = put(&store, "/a", "1", Precondition::MustNotExist).expect("create");
        assert_eq!((kv.create_revision, kv.mod_revision), (1, 1));
        let err = put(&store, "/a", "2", Precondition::MustNotExist).expect_err("exists");
        assert!(matches!(err, StorageError::AlreadyExists { key } if key == "/a"));
        assert_eq!(store.current_revision(), 1);
        let got = block_on(store.get(b"/a")).expect("get").expect("present");
        assert_eq!(value(&got), b"1");
    }

    #[test]
    fn compare_and_swap_on_mod_revision() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/a", "1", Precondition::None).expect("put");
        let kv = put(&store, "/a", "2", Precondition::ModRevision(1)).expect("cas");
        assert_eq!((kv.create_revision, kv.mod_revision), (1, 2));
        let err = put(&store, "/a", "3", Precondition::ModRevision(1)).expect_err("stale");
        match err {
            StorageError::Conflict { key, current } => {
                assert_eq!(key, "/a");
                let current = current.expect("current value");
                assert_eq!((current.mod_revision, value(&current)), (2, &b"2"[..]));
            }
            other => panic!("expected conflict, got {other:?}"),
        }
        let err = put(&store, "/b", "1", Precondition::ModRevision(1)).expect_err("absent");
        assert!(matches!(err, StorageError::NotFound { key } if key == "/b"));
        let err = put(&store, "/b", "1", Precondition::MustExist).expect_err("absent");
        assert!(matches!(err, StorageError::NotFound { .. }));
        assert_eq!(store.current_revision(), 2);
    }

    #[test]
    fn delete_semantics_and_recreate_gets_new_create_revision() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/a", "1", Precondition::None).expect("put");
        put(&store, "/a", "2", Precondition::None).expect("put");
        let err = delete(&store, "/a", Precondition::ModRevision(1)).expect_err("stale");
        assert!(matches!(err, StorageError::Conflict { .. }));
        let gone = delete(&store, "/a", Precondition::ModRevision(2)).expect("delete");
        assert_eq!((gone.create_revision, gone.mod_revision), (1, 3));
        assert_eq!(value(&gone), b"2");
        assert_eq!(block_on(store.get(b"/a")).expect("get"), None);
        let err = delete(&store, "/a", Precondition::None).expect_err("absent");
        assert!(matches!(err, StorageError::NotFound { .. }));
        let again = put(&store, "/a", "3", Precondition::MustNotExist).expect("recreate");
        assert_eq!((again.create_revision, again.mod_revision), (4, 4));
        assert_eq!(store.current_revision(), 4);
    }

    #[test]
    fn reopen_restores_revisions_and_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.redb");
        {
            let store = RedbStore::open(&path, RedbOptions::default()).expect("open");
            for i in 0..5 {
                put(&store, &format!("/k{i}"), "v", Precondition::None).expect("put");
            }
            put(&store, "/k0", "w", Precondition::None).expect("put");
            delete(&store, "/k1", Precondition::None).expect("delete");
            block_on(store.compact(3)).expect("compact");
        }
        let store = RedbStore::open(&path, RedbOptions::default()).expect("reopen");
        assert_eq!(store.current_revision(), 7);
        assert_eq!(store.compacted_revision(), 3);
        let k0 = block_on(store.get(b"/k0")).expect("get").expect("k0");
        assert_eq!(
            (k0.create_revision, k0.mod_revision, value(&k0)),
            (1, 6, &b"w"[..])
        );
        assert_eq!(block_on(store.get(b"/k1")).expect("get"), None);
        let old = block_on(store.range(RangeRequest {
            prefix: b"/k".to_vec(),
            revision: Some(5),
            ..RangeRequest::default()
        }))
        .expect("range at 5");
        let keys: Vec<&[u8]> = old.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [b"/k0", b"/k1", b"/k2", b"/k3", b"/k4"]);
        let next = put(&store, "/k9", "v", Precondition::None).expect("put");
        assert_eq!(next.mod_revision, 8);
    }

    #[test]
    fn commit_observer_sees_each_commit() {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        let opts = RedbOptions {
            commit_observer: Some(Arc::new(move |_, batch| {
                counter.fetch_add(batch, Ordering::SeqCst);
            })),
            ..RedbOptions::default()
        };
        let (_dir, store) = temp_store(opts);
        put(&store, "/a", "1", Precondition::None).expect("put");
        put(&store, "/b", "1", Precondition::None).expect("put");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert_eq!(store.commit_count(), 2);
    }

    #[test]
    fn failed_preconditions_alone_commit_nothing() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/a", "1", Precondition::None).expect("put");
        put(&store, "/a", "1", Precondition::MustNotExist).expect_err("exists");
        assert_eq!(store.commit_count(), 1);
        assert_eq!(store.current_revision(), 1);
    }

    #[test]
    fn drop_ends_watch_streams() {
        let (_dir, store) = temp_store(RedbOptions::default());
        let mut stream = store.watch(b"/".to_vec(), 0).expect("watch");
        drop(store);
        assert!(block_on(stream.recv()).is_none());
    }
}
