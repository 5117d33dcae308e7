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
use super::reads;
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
    watch_with(db, hub, prefix, start, || {})
}

/// [`watch`], calling `after_replay` between the replay and the registration (tests use it to
/// commit writes in that window).
fn watch_with(
    db: &Database,
    hub: &Mutex<Hub>,
    prefix: Vec<u8>,
    start: Revision,
    mut after_replay: impl FnMut(),
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
        after_replay();
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
    reads::read_events(&txn, prefix, next, current, |event| {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use futures::executor::block_on;

    use super::*;
    use crate::storage::redb_store::testing::{delete, put, temp_store};
    use crate::storage::{EventKind, Precondition, RedbOptions, RedbStore, Storage};

    /// Receives until the event at `last` arrives; returns every event's revision in order.
    fn revisions_until(stream: &mut WatchStream, last: Revision) -> Vec<Revision> {
        let mut seen = Vec::new();
        while seen.last() != Some(&last) {
            let batch = block_on(stream.recv())
                .expect("stream open")
                .expect("no error");
            seen.extend(batch.iter().map(Event::revision));
        }
        seen
    }

    #[test]
    fn replays_history_then_streams_live_events() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/p/a", "1", Precondition::None).expect("put"); // 1
        put(&store, "/q/x", "1", Precondition::None).expect("put"); // 2
        put(&store, "/p/a", "2", Precondition::None).expect("put"); // 3
        let mut stream = store.watch(b"/p/".to_vec(), 2).expect("watch");
        delete(&store, "/p/a", Precondition::None).expect("delete"); // 4
        put(&store, "/q/y", "1", Precondition::None).expect("put"); // 5
        put(&store, "/p/b", "1", Precondition::None).expect("put"); // 6

        let mut events = Vec::new();
        while events.len() < 3 {
            events.extend(block_on(stream.recv()).expect("open").expect("ok"));
        }
        let put3 = &events[0];
        assert_eq!(
            (put3.kind, put3.kv.mod_revision, put3.kv.create_revision),
            (EventKind::Put, 3, 1)
        );
        assert_eq!(
            put3.prev
                .as_ref()
                .map(|p| (p.mod_revision, p.value.to_vec())),
            Some((1, b"1".to_vec()))
        );
        let del = &events[1];
        assert_eq!(
            (del.kind, del.kv.mod_revision, del.kv.create_revision),
            (EventKind::Delete, 4, 1)
        );
        assert_eq!(&*del.kv.value, b"2");
        assert_eq!(del.prev.as_ref().map(|p| p.mod_revision), Some(3));
        let put6 = &events[2];
        assert_eq!(
            (put6.kind, put6.revision(), put6.prev.is_none()),
            (EventKind::Put, 6, true)
        );
    }

    #[test]
    fn replayed_events_match_live_events() {
        let (_dir, store) = temp_store(RedbOptions::default());
        let mut live = store.watch(b"/".to_vec(), 0).expect("watch live");
        put(&store, "/a", "1", Precondition::None).expect("put");
        put(&store, "/a", "2", Precondition::None).expect("put");
        delete(&store, "/a", Precondition::None).expect("delete");
        put(&store, "/a", "3", Precondition::None).expect("put");
        let mut replayed = store.watch(b"/".to_vec(), 1).expect("watch replay");
        let collect = |s: &mut WatchStream| {
            let mut all = Vec::new();
            while all.len() < 4 {
                all.extend(block_on(s.recv()).expect("open").expect("ok"));
            }
            all
        };
        let live = collect(&mut live);
        assert_eq!(live, collect(&mut replayed));
        assert_eq!(live[3].kv.create_revision, 4);
    }

    #[test]
    fn watch_from_now_skips_history() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/a", "1", Precondition::None).expect("put");
        let mut stream = store.watch(b"/".to_vec(), 0).expect("watch");
        put(&store, "/b", "1", Precondition::None).expect("put");
        assert_eq!(revisions_until(&mut stream, 2), [2]);
    }

    #[test]
    fn watch_at_or_below_compacted_revision_fails() {
        let (_dir, store) = temp_store(RedbOptions::default());
        for i in 0..4 {
            put(&store, "/a", &i.to_string(), Precondition::None).expect("put");
        }
        let mut before = store
            .watch(b"/".to_vec(), 1)
            .expect("watch before compaction");
        block_on(store.compact(2)).expect("compact");
        for start in [1, 2] {
            assert!(matches!(
                store.watch(b"/".to_vec(), start),
                Err(StorageError::Compacted { requested, compacted: 2 }) if requested == start
            ));
        }
        let mut after = store
            .watch(b"/".to_vec(), 3)
            .expect("watch after compaction");
        put(&store, "/a", "x", Precondition::None).expect("put");
        assert_eq!(revisions_until(&mut after, 5), [3, 4, 5]);
        // A live watcher keeps its stream across compaction.
        assert_eq!(revisions_until(&mut before, 5), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn revisions_committed_but_not_yet_published_are_not_sent_twice() {
        let (_dir, store) = temp_store(RedbOptions::default());
        for key in ["/a", "/b", "/c", "/d"] {
            put(&store, key, "v", Precondition::None).expect("put");
        }
        let events = |from, to| {
            let mut all = Vec::new();
            let txn = store.begin_read_for_test();
            reads::read_events(&txn, b"/", from, to, |e| all.push(e)).expect("read events");
            all
        };
        // A hub that has published up to 2 while revisions 3 and 4 are already committed: the
        // window between the writer's commit and its publication.
        let hub = Mutex::new(Hub::new(2));
        let mut stream = watch(store.db_for_test(), &hub, b"/".to_vec(), 1).expect("watch");
        lock(&hub).publish(&events(3, 4), 4);
        let mut later = events(4, 4);
        later[0].kv.mod_revision = 5;
        lock(&hub).publish(&later, 5);
        assert_eq!(revisions_until(&mut stream, 5), [1, 2, 3, 4, 5]);
        assert!(stream.try_recv().is_err());
    }

    #[test]
    fn revisions_published_during_the_replay_are_caught_up() {
        let (_dir, store) = temp_store(RedbOptions::default());
        put(&store, "/a", "v", Precondition::None).expect("put");
        let mut round = 0;
        let mut stream = watch_with(
            store.db_for_test(),
            store.hub_for_test(),
            b"/".to_vec(),
            1,
            || {
                round += 1;
                if round == 1 {
                    put(&store, "/b", "v", Precondition::None).expect("put in the window");
                }
            },
        )
        .expect("watch");
        put(&store, "/c", "v", Precondition::None).expect("put");
        assert_eq!(revisions_until(&mut stream, 3), [1, 2, 3]);
    }

    #[test]
    fn dropped_watchers_are_forgotten() {
        let (_dir, store) = temp_store(RedbOptions::default());
        let stream = store.watch(b"/".to_vec(), 0).expect("watch");
        let _other = store.watch(b"/other/".to_vec(), 0).expect("watch");
        assert_eq!(store.watcher_count(), 2);
        drop(stream);
        put(&store, "/a", "1", Precondition::None).expect("put");
        assert_eq!(store.watcher_count(), 1);
    }

    #[test]
    fn no_gap_no_duplicate_when_writes_race_with_registration() {
        const WRITERS: usize = 4;
        const PUTS: usize = 150;
        let (_dir, store) = temp_store(RedbOptions::default());
        let barrier = Arc::new(Barrier::new(WRITERS + 1));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store: Arc<RedbStore> = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..PUTS {
                        put(&store, &format!("/w{w}/{}", i % 7), "v", Precondition::None)
                            .expect("put");
                    }
                })
            })
            .collect();
        barrier.wait();
        // Register while the writers run: from now, from a moment ago, from the beginning.
        let mut streams = Vec::new();
        for round in 0..30 {
            let current = store.current_revision();
            let start = match round % 3 {
                0 => 0,
                1 => (current - 3).max(1),
                _ => 1,
            };
            streams.push((start, store.watch(b"/".to_vec(), start).expect("watch")));
        }
        for w in writers {
            w.join().expect("writer thread");
        }
        let last = (WRITERS * PUTS) as Revision;
        assert_eq!(store.current_revision(), last);
        for (start, mut stream) in streams {
            let seen = revisions_until(&mut stream, last);
            let first = if start == 0 { seen[0] } else { start };
            let expected: Vec<Revision> = (first..=last).collect();
            assert_eq!(seen, expected, "watch from {start}");
        }
    }
}
