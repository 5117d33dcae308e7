//! GET and LIST.

use serde_json::Value;

use super::list::{encode_list, encode_object, list_meta, ContinueToken, Filter, Item};
use super::negotiate::{self, Output};
use super::{Api, ApiResult, Query, ResourceRoute};
use crate::http::{Request, Response};
use crate::object;
use crate::registry::ResourceInfo;
use crate::status::ApiError;
use crate::storage::{KeyValue, RangeRequest, Revision, StorageError};

/// Parses a stored value and sets its resourceVersion.
pub(crate) fn from_kv(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    object::set_resource_version(&mut v, kv.mod_revision);
    Ok(v)
}

/// Maps a storage failure onto the Status a client should see.
pub(crate) fn storage_error(e: StorageError, info: &ResourceInfo, name: &str) -> ApiError {
    match e {
        StorageError::NotFound { .. } => ApiError::not_found(info.group, info.plural, name),
        StorageError::AlreadyExists { .. } => ApiError::already_exists(info.group, info.plural, name),
        StorageError::Conflict { .. } => ApiError::conflict(
            info.group,
            info.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        StorageError::Compacted { .. } => ApiError::gone(
            "The resourceVersion for the provided list is too old. You can start a new list without the continue parameter.",
        ),
        StorageError::FutureRevision { requested, current } => {
            let mut e = ApiError::timeout(format!("Too large resource version: {requested}, current: {current}"));
            e.retry_after = Some(1);
            e
        }
        other => ApiError::internal(format!("storage: {other}")),
    }
}

pub(crate) fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// The namespace a request acts in, or "" for cluster-scoped resources.
pub(crate) fn namespace_of(r: &ResourceRoute) -> Result<&str, ApiError> {
    match (r.info.namespaced, r.namespace.as_deref()) {
        (true, Some(ns)) => Ok(ns),
        (true, None) if r.name.is_some() => Err(ApiError::not_found_path()),
        (_, _) => Ok(""),
    }
}

impl Api {
    /// The latest stored object (a strongly consistent read).
    pub(crate) async fn read_object(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
    ) -> Result<(Value, KeyValue), ApiError> {
        let key = object::key(info, ns, name);
        match self.storage.get(key.as_bytes()).await {
            Ok(Some(kv)) => Ok((from_kv(&kv)?, kv)),
            Ok(None) => Err(ApiError::not_found(info.group, info.plural, name)),
            Err(e) => Err(storage_error(e, info, name)),
        }
    }

    pub(crate) async fn get(&self, req: &Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        let output = negotiate::output(req.header("accept"))?;
        let name = r.name.as_deref().unwrap_or("");
        let ns = namespace_of(r)?;
        let obj = match q.resource_version.as_deref() {
            None | Some("") => self.read_object(r.info, ns, name).await?.0,
            Some(rv) => {
                let rv = parse_rv(rv)?;
                if rv > 0 {
                    self.caches.wait_for(rv).await.map_err(cache_error)?;
                }
                let key = object::key(r.info, ns, name);
                let cached = self.caches.get(r.info).get(&key);
                cached
                    .ok_or_else(|| ApiError::not_found(r.info.group, r.info.plural, name))?
                    .value
                    .clone()
            }
        };
        Ok(Response::new(
            200,
            "application/json",
            encode_object(r.info, output, q, &obj),
        ))
    }

    pub(crate) async fn list(&self, req: &Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        let output = negotiate::output(req.header("accept"))?;
        let filter = Filter::new(r.info, q)?;
        let prefix = object::scope_prefix(r.info, r.namespace.as_deref());
        if let Some(token) = &q.continue_token {
            let token = ContinueToken::decode(token, &prefix)?;
            return self
                .list_from_storage(
                    r.info,
                    &prefix,
                    Some(token.start),
                    token.revision,
                    &filter,
                    output,
                    q,
                )
                .await;
        }
        match q.resource_version.as_deref() {
            None | Some("") => {
                // A consistent list: wait until the cache has every write acknowledged so far.
                let current = self.storage.current_revision();
                self.caches.wait_for(current).await.map_err(cache_error)?;
            }
            Some("0") => {}
            Some(rv) => {
                let rv = parse_rv(rv)?;
                if q.resource_version_match.as_deref() == Some("Exact") {
                    return self
                        .list_from_storage(r.info, &prefix, None, rv, &filter, output, q)
                        .await;
                }
                self.caches.wait_for(rv).await.map_err(cache_error)?;
            }
        }
        let (objects, revision) = self.caches.get(r.info).list(&prefix);
        let matched: Vec<_> = objects
            .iter()
            .filter(|o| filter.matches(&o.value))
            .collect();
        let (page, cont, remaining) = if q.limit > 0 && matched.len() > q.limit {
            let last = &matched[q.limit - 1];
            let token = ContinueToken {
                revision,
                start: format!("{}\u{0}", last.key),
            };
            let remaining = filter.is_everything().then(|| matched.len() - q.limit);
            (&matched[..q.limit], Some(token), remaining)
        } else {
            (&matched[..], None, None)
        };
        let items: Vec<Item<'_>> = page
            .iter()
            .map(|o| Item::Serialized(&o.value, &o.json))
            .collect();
        let body = encode_list(
            r.info,
            output,
            q,
            &items,
            list_meta(revision, cont.as_ref(), remaining),
        );
        Ok(Response::new(200, "application/json", body))
    }

    /// A list read from storage at a fixed revision: continued pages and Exact reads.
    #[allow(clippy::too_many_arguments)]
    async fn list_from_storage(
        &self,
        info: &'static ResourceInfo,
        prefix: &str,
        start: Option<String>,
        revision: Revision,
        filter: &Filter,
        output: Output,
        q: &Query,
    ) -> ApiResult {
        let mut items: Vec<Value> = Vec::new();
        let mut next = start;
        let mut cont = None;
        loop {
            let want = if q.limit > 0 {
                (q.limit - items.len()).max(1)
            } else {
                0
            };
            let page = self
                .storage
                .range(RangeRequest {
                    prefix: prefix.as_bytes().to_vec(),
                    start: next.as_ref().map(|s| s.as_bytes().to_vec()),
                    limit: want,
                    revision: Some(revision),
                })
                .await
                .map_err(|e| match e {
                    StorageError::Compacted { .. } => ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."),
                    other => storage_error(other, info, ""),
                })?;
            let count = page.kvs.len();
            for (i, kv) in page.kvs.iter().enumerate() {
                let obj = from_kv(kv)?;
                if filter.matches(&obj) {
                    items.push(obj);
                }
                if q.limit > 0 && items.len() == q.limit {
                    if i + 1 < count || page.more {
                        cont = Some(ContinueToken {
                            revision,
                            start: format!("{}\u{0}", String::from_utf8_lossy(&kv.key)),
                        });
                    }
                    break;
                }
            }
            if cont.is_some() || !page.more || count == 0 || (q.limit > 0 && items.len() >= q.limit)
            {
                break;
            }
            let last = page
                .kvs
                .last()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .unwrap_or_default();
            next = Some(format!("{last}\u{0}"));
        }
        let refs: Vec<Item<'_>> = items.iter().map(Item::Parsed).collect();
        let body = encode_list(
            info,
            output,
            q,
            &refs,
            list_meta(revision, cont.as_ref(), None),
        );
        Ok(Response::new(200, "application/json", body))
    }
}

pub(crate) fn cache_error(e: crate::cache::CacheError) -> ApiError {
    use crate::cache::CacheError;
    match e {
        CacheError::TooOld { .. } => ApiError::gone(e.to_string()),
        CacheError::TooLarge { .. } => {
            let mut err = ApiError::timeout(e.to_string());
            err.retry_after = Some(1);
            err
        }
        CacheError::Load(inner) => ApiError::internal(inner.to_string()),
    }
}
