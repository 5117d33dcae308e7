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
