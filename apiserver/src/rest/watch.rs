//! WATCH: a chunked stream of events from the watch cache, filtered per watcher, with bookmarks
//! and a timeout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{select, Either};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::list::{partial_metadata, Filter};
use super::negotiate::{self, Output};
use super::read::{cache_error, namespace_of, parse_rv};
use super::{Api, ApiResult, Query, ResourceRoute};
use crate::cache::{watch_line, CacheEvent, EventType, WatchStart};
use crate::http::{Request, Response};
use crate::object;
use crate::registry::ResourceInfo;

/// How often an idle watch with bookmarks enabled gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// Kubernetes' --min-request-timeout: watches without timeoutSeconds end between 1 and 2 times it.
const MIN_REQUEST_TIMEOUT: u64 = 1800;

struct Watcher {
    info: &'static ResourceInfo,
    prefix: String,
    filter: Filter,
    output: Output,
    q: Query,
    pending: VecDeque<Bytes>,
    live: tokio::sync::broadcast::Receiver<Arc<CacheEvent>>,
    deadline: Instant,
    bookmarks: bool,
    last_revision: i64,
    table_headers_sent: bool,
    closed: bool,
}

impl Watcher {
    /// The event this watcher should see for `e`, if any: objects entering or leaving the
    /// selection become ADDED or DELETED, as Kubernetes does.
    fn render(&mut self, e: &CacheEvent) -> Option<Bytes> {
        if !e.object.key.starts_with(&self.prefix) {
            return None;
        }
        let now_in = self.filter.matches(&e.object.value);
        let was_in = e
            .prev
            .as_ref()
            .is_some_and(|p| self.filter.matches(&p.value));
        let kind = match (e.kind, was_in, now_in) {
            (EventType::Deleted, _, true) => EventType::Deleted,
            (EventType::Deleted, _, false) => return None,
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            _ => return None,
        };
        self.last_revision = e.revision;
        match self.output {
            Output::Json if kind == e.kind => Some(e.line.clone()),
            Output::Json => Some(watch_line(kind.as_str(), &e.object.json)),
            Output::Metadata => Some(watch_line(
                kind.as_str(),
                partial_metadata(&e.object.value).to_string().as_bytes(),
            )),
            Output::Table => {
                let mut table = crate::registry::table::build_table(
                    self.info.kind,
                    &[&e.object.value],
                    super::list::include_object(&self.q),
                    json!({"resourceVersion": e.revision.to_string()}),
                    std::time::SystemTime::now(),
                );
                // Column definitions go with the first event only, as Kubernetes sends them.
                if self.table_headers_sent {
                    table["columnDefinitions"] = json!([]);
                }
                self.table_headers_sent = true;
                Some(watch_line(kind.as_str(), table.to_string().as_bytes()))
            }
        }
    }

    fn bookmark(&self, revision: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta});
        watch_line("BOOKMARK", obj.to_string().as_bytes())
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.closed {
                return None;
            }
            let now = Instant::now();
            if now >= self.deadline {
                return None;
            }
            let wait = (self.deadline - now).min(if self.bookmarks {
                BOOKMARK_EVERY
            } else {
                Duration::MAX
            });
            let received = {
                let recv = Box::pin(self.live.recv());
                match select(recv, Box::pin(compio::time::sleep(wait))).await {
                    Either::Left((r, _)) => Some(r),
                    Either::Right(_) => None,
                }
            };
            match received {
                Some(Ok(e)) => {
                    if let Some(b) = self.render(&e) {
                        return Some(b);
                    }
                }
                Some(Err(RecvError::Lagged(n))) => {
                    // Too slow to keep up: end the watch; the client re-lists, as with Kubernetes.
                    tracing::info!(
                        resource = self.info.plural,
                        skipped = n,
                        "closing a watcher that fell behind"
                    );
                    self.closed = true;
                    return Some(error_event(410, "Expired", "watcher fell behind; re-list"));
                }
                Some(Err(RecvError::Closed)) => return None,
                None => {
                    if Instant::now() < self.deadline && self.bookmarks {
                        return Some(self.bookmark(self.last_revision, false));
                    }
                }
            }
        }
    }
}

fn error_event(code: u16, reason: &str, message: &str) -> Bytes {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    watch_line("ERROR", status.to_string().as_bytes())
}

impl Api {
    pub(crate) async fn watch(&self, req: &Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        let output = negotiate::output(req.header("accept"))?;
        let mut q = q.clone();
        // A watch on one object is a watch on the collection with metadata.name=<name>.
        if let Some(name) = &r.name {
            let by_name = format!("metadata.name={name}");
            q.field_selector = Some(match q.field_selector.as_deref() {
                Some(s) if !s.is_empty() => format!("{s},{by_name}"),
                _ => by_name,
            });
        }
        let filter = Filter::new(r.info, &q)?;
        let ns = if r.name.is_some() {
            Some(namespace_of(r)?).filter(|n| !n.is_empty())
        } else {
            r.namespace.as_deref()
        };
        let prefix = object::scope_prefix(r.info, ns);
        let rv = q.resource_version.as_deref().unwrap_or("");
        let start = match rv {
            "" | "0" => WatchStart::Now,
            rv => {
                let rv = parse_rv(rv)?;
                self.caches.wait_for(rv).await.map_err(cache_error)?;
                WatchStart::After(rv)
            }
        };
        let initial_events = match start {
            WatchStart::Now => q.send_initial_events.unwrap_or(true),
            WatchStart::After(_) => true,
        };
        let cache = self.caches.get(r.info);
        let timeout = q
            .timeout_seconds
            .unwrap_or_else(|| MIN_REQUEST_TIMEOUT + rand::random::<u64>() % MIN_REQUEST_TIMEOUT);
        let (sub, last_revision) = match cache.subscribe(&prefix, start) {
            Ok(sub) => {
                let rev = sub.revision;
                (sub, rev)
            }
            Err(e) => {
                // Kubernetes answers 200 and sends the error as the first and only event.
                let line = error_event(410, "Expired", &e.to_string());
                let stream = futures::stream::iter([line]);
                return Ok(Response::stream(200, "application/json", Box::pin(stream)));
            }
        };
        self.metrics.set_watchers(r.info.plural, cache.watchers());
        let mut w = Watcher {
            info: r.info,
            prefix,
            filter,
            output,
            q: q.clone(),
            pending: VecDeque::new(),
            live: sub.live,
            deadline: Instant::now() + Duration::from_secs(timeout),
            bookmarks: q.allow_watch_bookmarks,
            last_revision: match start {
                WatchStart::After(rv) => rv,
                WatchStart::Now => last_revision,
            },
            table_headers_sent: false,
            closed: false,
        };
        if initial_events {
            for e in &sub.initial {
                if let Some(b) = w.render(e) {
                    w.pending.push_back(b);
                }
            }
        }
        if matches!(start, WatchStart::Now) {
            w.last_revision = last_revision;
        }
        if q.send_initial_events == Some(true) && q.allow_watch_bookmarks {
            let b = w.bookmark(w.last_revision, true);
            w.pending.push_back(b);
        }
        let stream =
            futures::stream::unfold(w, |mut w| async move { w.next().await.map(|b| (b, w)) });
        Ok(Response::stream(200, "application/json", Box::pin(stream)))
    }
}
