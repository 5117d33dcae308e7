//! The single writer thread of the redb backend: group commit, publication, compaction.
//!
//! Callers queue requests; the writer takes everything queued, applies it in one redb write
//! transaction (each write checked in order, a failed precondition failing only that write),
//! commits durably (fsync), publishes the events to watchers and only then answers. Concurrent
//! writers thus share one fsync, and an answered write is on disk.
//!
//! Compaction runs on the same thread between batches, a bounded number of revisions per
//! transaction, so a large compaction never holds writers back for long.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};
use futures::channel::oneshot;
use redb::Durability;

use super::mvcc::{backend, Outcome, WriteTables};
use super::redb_store::{RedbOptions, Shared};
use super::watch;
use super::{Event, KeyValue, Precondition, Revision, StorageError};

/// One queued request.
pub(crate) enum Request {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<KeyValue, StorageError>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

/// A write, applied at the next revision if its precondition holds.
pub(crate) enum WriteOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        pre: Precondition,
    },
    Delete {
        key: Vec<u8>,
        pre: Precondition,
    },
}

type Reply = oneshot::Sender<Result<KeyValue, StorageError>>;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    opts: RedbOptions,
    rx: Receiver<Request>,
    revision: Revision,
    compacted: Revision,
    /// Compaction goes on, chunk by chunk, until the compacted revision reaches this.
    compact_target: Revision,
    compact_waiters: Vec<(Revision, oneshot::Sender<Result<(), StorageError>>)>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        opts: RedbOptions,
        rx: Receiver<Request>,
        revision: Revision,
        compacted: Revision,
    ) -> Self {
        Writer {
            shared,
            opts,
            rx,
            revision,
            compacted,
            compact_target: compacted,
            compact_waiters: Vec::new(),
        }
    }

    /// Serves requests until every sender is gone, then ends the watch streams.
    pub(crate) fn run(mut self) {
        loop {
            let first = if self.compact_target > self.compacted {
                match self.rx.try_recv() {
                    Ok(req) => Some(req),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.recv() {
                    Ok(req) => Some(req),
                    Err(_) => break,
                }
            };
            if let Some(first) = first {
                let max = self.opts.max_batch.max(1);
                let batch: Vec<Request> = std::iter::once(first)
                    .chain(self.rx.try_iter().take(max - 1))
                    .collect();
                self.serve(batch);
            }
            if self.compact_target > self.compacted {
                self.compact_chunk();
            }
        }
        watch::lock(&self.shared.hub).close();
    }

    fn serve(&mut self, batch: Vec<Request>) {
        let mut writes = Vec::with_capacity(batch.len());
        let mut compactions = Vec::new();
        for req in batch {
            match req {
                Request::Write { op, reply } => writes.push((op, reply)),
                Request::Compact { revision, reply } => compactions.push((revision, reply)),
            }
        }
        if !writes.is_empty() {
            self.commit(writes);
        }
        for (revision, reply) in compactions {
            self.request_compaction(revision, reply);
        }
        let history = self.opts.history;
        if history > 0 && self.revision - self.compacted > history + (history / 10).max(1) {
            self.compact_target = self.compact_target.max(self.revision - history);
        }
    }

    fn commit(&mut self, writes: Vec<(WriteOp, Reply)>) {
        let started = Instant::now();
        let count = writes.len();
        match self.apply(&writes) {
            Ok((outcomes, events, revision)) => {
                if revision > self.revision {
                    self.revision = revision;
                    self.shared.revision.store(revision, Ordering::Release);
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                    if let Some(observe) = &self.opts.commit_observer {
                        observe(started.elapsed(), count);
                    }
                    watch::lock(&self.shared.hub).publish(&events, revision);
                }
                for ((_, reply), outcome) in writes.into_iter().zip(outcomes) {
                    // The caller may have given up waiting; the write stands either way.
                    let _ = reply.send(outcome.map(|(kv, _)| kv));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, writes = count, "storage batch failed");
                let err = Arc::new(err);
                for (_, reply) in writes {
                    let _ = reply.send(Err(StorageError::Backend {
                        op: "commit batch",
                        source: Box::new(Arc::clone(&err)),
                    }));
                }
            }
        }
    }

    /// Applies `writes` in one durable transaction; returns each write's outcome, the events in
    /// revision order and the revision after the batch.
    fn apply(
        &self,
        writes: &[(WriteOp, Reply)],
    ) -> Result<(Vec<Outcome>, Vec<Event>, Revision), StorageError> {
        let mut txn = self
            .shared
            .db
            .begin_write()
            .map_err(backend("begin write"))?;
        txn.set_durability(Durability::Immediate)
            .map_err(backend("set durability"))?;
        let mut revision = self.revision;
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut events = Vec::with_capacity(writes.len());
        {
            let mut tables = WriteTables::open(&txn)?;
            for (op, _) in writes {
                let outcome = match op {
                    WriteOp::Put { key, value, pre } => {
                        tables.put(key, value, *pre, revision + 1)?
                    }
                    WriteOp::Delete { key, pre } => tables.delete(key, *pre, revision + 1)?,
                };
                if let Ok((_, event)) = &outcome {
                    revision += 1;
                    events.push(event.clone());
                }
                outcomes.push(outcome);
            }
            if revision > self.revision {
                tables.set_revision(revision)?;
            }
        }
        if revision == self.revision {
            // Nothing changed: no fsync to pay for.
            txn.abort().map_err(backend("abort"))?;
        } else {
            txn.commit().map_err(backend("commit"))?;
        }
        Ok((outcomes, events, revision))
    }

    fn request_compaction(
        &mut self,
        revision: Revision,
        reply: oneshot::Sender<Result<(), StorageError>>,
    ) {
        if revision > self.revision {
            let _ = reply.send(Err(StorageError::FutureRevision {
                requested: revision,
                current: self.revision,
            }));
        } else if revision <= self.compacted {
            let _ = reply.send(Err(StorageError::Compacted {
                requested: revision,
                compacted: self.compacted,
            }));
        } else {
            self.compact_target = self.compact_target.max(revision);
            self.compact_waiters.push((revision, reply));
        }
    }

    /// Compacts one chunk towards the target; durable only when a caller waits on this chunk.
    fn compact_chunk(&mut self) {
        let to = self
            .compact_target
            .min(self.compacted + self.opts.compaction_chunk.max(1));
        let durable = self.compact_waiters.iter().any(|(r, _)| *r <= to);
        match self.compact_txn(to, durable) {
            Ok(()) => {
                self.compacted = to;
                self.shared.compacted.store(to, Ordering::Release);
                let (done, waiting) = std::mem::take(&mut self.compact_waiters)
                    .into_iter()
                    .partition(|(r, _)| *r <= to);
                self.compact_waiters = waiting;
                for (_, reply) in done {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, to, "storage compaction failed");
                // Stop trying until asked again; writes go on regardless.
                self.compact_target = self.compacted;
                let err = Arc::new(err);
                for (_, reply) in self.compact_waiters.drain(..) {
                    let _ = reply.send(Err(StorageError::Backend {
                        op: "compact",
                        source: Box::new(Arc::clone(&err)),
                    }));
                }
            }
        }
    }

    fn compact_txn(&self, to: Revision, durable: bool) -> Result<(), StorageError> {
        let mut txn = self
            .shared
            .db
            .begin_write()
            .map_err(backend("begin write"))?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(backend("set durability"))?;
        WriteTables::open(&txn)?.compact(self.compacted, to)?;
        txn.commit().map_err(backend("commit"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    use crate::storage::redb_store::testing::{put, temp_store};
    use crate::storage::{Precondition, RedbOptions, RedbStore, Revision, Storage};

    /// Runs `threads` × `puts` concurrent puts; returns each thread's revisions.
    fn concurrent_puts(store: &Arc<RedbStore>, threads: usize, puts: usize) -> Vec<Vec<Revision>> {
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = Arc::clone(store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..puts)
                        .map(|i| {
                            put(&store, &format!("/t{t}/{i}"), "v", Precondition::None)
                                .expect("put")
                                .mod_revision
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    }

    #[test]
    fn concurrent_writers_share_commits() {
        const THREADS: usize = 8;
        const PUTS: usize = 200;
        let (_dir, store) = temp_store(RedbOptions::default());
        let per_thread = concurrent_puts(&store, THREADS, PUTS);
        let mut all = BTreeSet::new();
        for revisions in &per_thread {
            assert!(
                revisions.windows(2).all(|w| w[0] < w[1]),
                "increasing per caller"
            );
            all.extend(revisions.iter().copied());
        }
        let total = (THREADS * PUTS) as Revision;
        assert_eq!(all, (1..=total).collect::<BTreeSet<_>>());
        assert_eq!(store.current_revision(), total);
        assert!(
            store.commit_count() < total as u64,
            "{} commits for {total} writes",
            store.commit_count()
        );
    }

    #[test]
    fn a_failed_precondition_fails_only_its_own_write() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/taken", "v", Precondition::None).expect("put");
        // Many creates of the same key race: exactly one wins, the others get AlreadyExists,
        // and unrelated writes in the same batches succeed.
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let create = put(&store, "/race", "v", Precondition::MustNotExist);
                    let mine = put(
                        &store,
                        &format!("/own/{t}"),
                        "v",
                        Precondition::MustNotExist,
                    );
                    (create.is_ok(), mine.is_ok())
                })
            })
            .collect();
        let results: Vec<(bool, bool)> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(results.iter().filter(|(won, _)| *won).count(), 1);
        assert!(results.iter().all(|(_, mine)| *mine));
        assert_eq!(store.current_revision(), 1 + 1 + 8);
    }

    /// Latency sanity check, not a benchmark: `cargo test -p berth-apiserver --release
    /// write_latency_report -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn write_latency_report() {
        let (_dir, store) = temp_store(RedbOptions::default());
        let started = Instant::now();
        for i in 0..1_000 {
            put(&store, &format!("/seq/{i}"), "v", Precondition::None).expect("put");
        }
        let sequential = started.elapsed();
        let commits_before = store.commit_count();
        let started = Instant::now();
        concurrent_puts(&store, 64, 100);
        let concurrent = started.elapsed();
        let commits = store.commit_count() - commits_before;
        println!(
            "1000 sequential puts: {sequential:?} ({:?}/put); 64x100 concurrent puts: \
             {concurrent:?} in {commits} commits ({:.0} puts/s)",
            sequential / 1_000,
            6_400.0 / concurrent.as_secs_f64().max(f64::from_bits(1)),
        );
    }
}
