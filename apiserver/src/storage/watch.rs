//! Watchers of the redb backend: replay from the durable log, then live events from the writer.
//!
//! The writer publishes each committed batch to the [`Hub`] under its lock and records the
//! revision it published up to. A new watcher replays history outside the lock first (so a long
//! replay does not stall the writer), then, under the lock, replays the few revisions published
//! meanwhile and joins the live list with a floor revision. A read transaction may see revisions
//! committed but not yet published; the floor makes the writer skip those when it publishes
//! them, so the stream has no gap and no duplicate.

use std::sync::{Mutex, PoisonError};

use redb::{Database, ReadableDatabase};
use tokio::sync::mpsc::{self, UnboundedSender};

use super::mvcc::{self, backend};
use super::{Event, Revision, StorageError, WatchStream};

/// How many events one replayed stream item carries at most.
const REPLAY_BATCH: usize = 512;

/// Beyond this many revisions published during a replay, catch up again outside the lock.
const CATCH_UP_UNDER_LOCK: Revision = 1024;

struct Watcher {
    prefix: Vec<u8>,
    /// Events below this revision were already replayed to this watcher.
    floor: Revision,
    tx: UnboundedSender<Result<Vec<Event>, StorageError>>,
}

/// The live watchers and the last revision published to them.
pub(crate) struct Hub {
    published: Revision,
    watchers: Vec<Watcher>,
    closed: bool,
}

impl Hub {
    pub(crate) fn new(published: Revision) -> Self {
        Hub {
            published,
            watchers: Vec::new(),
            closed: false,
        }
    }

    /// Delivers one committed batch (in revision order) and advances the published revision.
    pub(crate) fn publish(&mut self, events: &[Event], revision: Revision) {
        self.watchers.retain(|w| {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.revision() >= w.floor && e.kv.key.starts_with(&w.prefix))
                .cloned()
                .collect();
            if mine.is_empty() {
                !w.tx.is_closed()
            } else {
                w.tx.send(Ok(mine)).is_ok()
            }
        });
        self.published = revision;
    }

    /// Ends every stream: the store is shutting down.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.watchers.clear();
    }

    #[cfg(test)]
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers.len()
    }
}

/// Locks the hub; a panic elsewhere while holding it leaves consistent state (each publish
/// is one `retain` and one store), so poisoning is ignored.
pub(crate) fn lock(hub: &Mutex<Hub>) -> std::sync::MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a watch; see [`super::Storage::watch`].
pub(crate) fn watch(
    db: &Database,
    hub: &Mutex<Hub>,
    prefix: Vec<u8>,
    start: Revision,
) -> Result<WatchStream, StorageError> {
    let (tx, rx) = mpsc::unbounded_channel();
    if start <= 0 {
        let mut hub = lock(hub);
        if hub.closed {
            return Err(StorageError::Closed);
        }
        let floor = hub.published + 1;
        hub.watchers.push(Watcher { prefix, floor, tx });
        return Ok(rx);
    }
    let mut next = start;
    loop {
        next = replay(db, &prefix, next, &tx)?;
        let mut guard = lock(hub);
        if guard.closed {
            return Err(StorageError::Closed);
        }
        if guard.published - next >= CATCH_UP_UNDER_LOCK {
            continue;
        }
        // Revisions published since the replay's snapshot: few, so read them under the lock.
        next = replay(db, &prefix, next, &tx)?;
        guard.watchers.push(Watcher {
            prefix,
            floor: next,
            tx,
        });
        return Ok(rx);
    }
}

/// Sends the events of `next..=` the latest committed revision; returns the next revision due.
fn replay(
    db: &Database,
    prefix: &[u8],
    next: Revision,
    tx: &UnboundedSender<Result<Vec<Event>, StorageError>>,
) -> Result<Revision, StorageError> {
    let txn = db.begin_read().map_err(backend("begin read"))?;
    let (current, compacted) = mvcc::read_meta(&txn)?;
    if next <= compacted {
        return Err(StorageError::Compacted {
            requested: next,
            compacted,
        });
    }
    let mut batch = Vec::new();
    mvcc::read_events(&txn, prefix, next, current, |event| {
        batch.push(event);
        if batch.len() == REPLAY_BATCH {
            // A dropped receiver just means nobody listens; registration notices later.
            let _ = tx.send(Ok(std::mem::take(&mut batch)));
        }
    })?;
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
    Ok(next.max(current + 1))
}
