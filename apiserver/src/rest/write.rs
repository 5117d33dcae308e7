//! CREATE, UPDATE, PATCH, DELETE and DELETECOLLECTION.

use serde_json::{json, Value};

use super::list::{encode_list, list_meta, Filter, Item};
use super::negotiate::{self, Output, PatchType};
use super::read::{namespace_of, storage_error};
use super::strategy::{prepare_create, prepare_update};
use super::{decode_json, typed, Api, ApiResult, Query, ResourceRoute};
use crate::alloc;
use crate::http::{Request, Response};
use crate::object;
use crate::registry::{defaults, validation, ResourceInfo};
use crate::status::{ApiError, Cause};
use crate::storage::{KeyValue, Precondition, StorageError};

/// How an update treats the incoming object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The main resource: `.status` is ignored, defaults and update validation apply.
    Main,
    /// The status subresource: only `.status` changes.
    Status,
    /// A server-side change (binding): written as given after the immutability checks are skipped.
    Raw,
}

/// Attempts at an update that races with other writers before giving up with 409.
const UPDATE_ATTEMPTS: usize = 8;

/// The OpenAPI definition name of a kind, e.g. `io.k8s.api.apps.v1.Deployment`.
pub(crate) fn definition_name(info: &ResourceInfo) -> String {
    crate::patch::definition_name(info.group, info.version, info.kind)
}

fn warning_header(text: &str) -> String {
    format!(
        "299 - \"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        r = r.with_header("Warning", warning_header(w));
    }
    r
}

/// The answer to a write: the object in the representation the client accepts (JSON when it
/// asks for something a write cannot give), with any warnings.
pub(crate) fn object_response(
    req: &Request,
    info: &ResourceInfo,
    q: &Query,
    code: u16,
    obj: &Value,
    warnings: &[String],
) -> Response {
    let output = negotiate::output(req.header("accept")).unwrap_or(Output::Json);
    let body = super::list::encode_object(info, output, q, obj);
    with_warnings(Response::new(code, "application/json", body), warnings)
}

/// Options of a DELETE, from its body and query.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
    policy: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    fn parse(body: &[u8], q: &Query) -> Result<DeleteOptions, ApiError> {
        let mut o = DeleteOptions {
            grace_period: q.grace_period_seconds,
            dry_run: q.dry_run,
            ..Default::default()
        };
        o.policy = q.propagation_policy.clone();
        if q.orphan_dependents == Some(true) && o.policy.is_none() {
            o.policy = Some("Orphan".into());
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v = decode_json(body)?;
            typed::check_kind("DeleteOptions", &v)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
            if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace_period = Some(g);
            }
            if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                o.policy = Some(p.to_string());
            }
            if v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
                && o.policy.is_none()
            {
                o.policy = Some("Orphan".into());
            }
            if let Some(pre) = v.get("preconditions") {
                o.uid = pre.get("uid").and_then(Value::as_str).map(String::from);
                o.resource_version = pre
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from);
            }
            if let Some(dry) = v.get("dryRun").and_then(Value::as_array) {
                o.dry_run |= dry.iter().any(|d| d == "All");
            }
        }
        if let Some(p) = &o.policy {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::invalid(
                    "",
                    "DeleteOptions",
                    "",
                    vec![Cause::not_supported(
                        "propagationPolicy",
                        &json!(p),
                        &["Foreground", "Background", "Orphan"],
                    )],
                ));
            }
        }
        Ok(o)
    }
}

impl Api {
    /// Decodes and checks an incoming object: JSON, apiVersion/kind, types, unknown fields.
    fn decode_object(
        &self,
        info: &ResourceInfo,
        body: &[u8],
        q: &Query,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let mut obj = decode_json(body)?;
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' is missing in '{obj}'"
            )));
        }
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' is missing in '{}'",
                truncate(&obj.to_string())
            )));
        }
        if api_version.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Object 'apiVersion' is missing in '{}'",
                truncate(&obj.to_string())
            )));
        }
        if api_version != info.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
        if kind != info.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                info.kind
            )));
        }
        match self.check_object(info, &mut obj, q) {
            Ok(warnings) => Ok((obj, warnings)),
            // Decoding a whole object reports strict-decoding failures in the decoder's words.
            Err(mut e) if e.message.starts_with("strict decoding error") => {
                e.message = format!(
                    "{} in version \"{}\" cannot be handled as a {}: {}",
                    info.kind, info.version, info.kind, e.message
                );
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Type check and unknown-field handling, shared by every write path.
    fn check_object(
        &self,
        info: &ResourceInfo,
        obj: &mut Value,
        q: &Query,
    ) -> Result<Vec<String>, ApiError> {
        typed::check_kind(info.kind, obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?;
        let definition = definition_name(info);
        let unknown = crate::openapi::find_unknown_fields(&definition, obj);
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let messages: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match q.field_validation() {
            "Strict" => Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                messages.join(", ")
            ))),
            mode => {
                crate::openapi::prune_unknown_fields(&definition, obj);
                Ok(if mode == "Warn" { messages } else { Vec::new() })
            }
        }
    }

    /// Checks that `ns` exists and is not terminating, as Kubernetes' NamespaceLifecycle does.
    async fn check_namespace(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let ns_info = crate::registry::find("", "v1", "namespaces").expect("namespaces are served");
        let (obj, _) = self.read_object(ns_info, "", ns).await?;
        let terminating = !object::meta_str(&obj, "deletionTimestamp").is_empty()
            || obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
        if terminating {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                info.group_resource(),
                name
            )));
        }
        Ok(())
    }

    /// Sets the object's namespace from the request, refusing a mismatch.
    fn scope_namespace(info: &ResourceInfo, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
        let meta = object::meta_mut(obj);
        if info.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        Ok(())
    }

    pub(crate) async fn create(&self, req: &Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        let body = negotiate::json_body(req)?;
        if r.name.is_some() {
            return Err(ApiError::method_not_allowed(
                "POST is not supported on a named object",
            ));
        }
        if r.info.namespaced && r.namespace.is_none() {
            return Err(ApiError::not_found_path());
        }
        let ns = r.namespace.clone().unwrap_or_default();
        let (mut obj, warnings) = self.decode_object(r.info, &body, q)?;
        if r.info.kind == "CertificateSigningRequest" {
            crate::registry::defaults::certificates::set_requestor(
                &mut obj,
                req.peer_user.as_ref(),
            );
        }
        if !object::meta_str(&obj, "resourceVersion").is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let created = self.create_object(r.info, &ns, obj, q.dry_run).await?;
        Ok(object_response(req, r.info, q, 201, &created, &warnings))
    }

    /// Creates an object that has passed decoding. Used by POST and by the server's own objects.
    pub(crate) async fn create_object(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        Self::scope_namespace(info, &mut obj, ns)?;
        let generate = object::name(&obj).is_empty();
        let generate_name = object::meta_str(&obj, "generateName").to_string();
        if generate && generate_name.is_empty() {
            return Err(ApiError::invalid(
                info.group,
                info.kind,
                "",
                vec![Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        if info.namespaced {
            let shown = if generate {
                generate_name.as_str()
            } else {
                object::name(&obj)
            };
            self.check_namespace(info, ns, shown)
                .await
                .map_err(|e| match e.code {
                    404 => ApiError::not_found("", "namespaces", ns),
                    _ => e,
                })?;
        }
        prepare_create(info, &mut obj);
        let mut attempt = 0;
        loop {
            let mut candidate = obj.clone();
            // The name comes first: defaulting derives from it (a Job's selector, for one).
            if generate {
                let name = format!("{generate_name}{}", random_suffix());
                object::meta_mut(&mut candidate).insert("name".into(), json!(name));
            }
            defaults::apply_defaults_with(info.kind, &mut candidate, &self.default_tolerations);
            let name = object::name(&candidate).to_string();
            let causes = validation::validate(info.kind, &candidate, info.namespaced);
            if !causes.is_empty() {
                return Err(ApiError::invalid(info.group, info.kind, &name, causes));
            }
            let held = if info.kind == "Service" {
                self.services
                    .allocate(&mut candidate, &alloc::Held::default())
                    .map_err(|causes| ApiError::invalid(info.group, info.kind, &name, causes))?
            } else {
                alloc::Held::default()
            };
            if dry_run {
                self.services.release(&held);
                return Ok(candidate);
            }
            let key = object::key(info, ns, &name);
            let value =
                serde_json::to_vec(&candidate).map_err(|e| ApiError::internal(e.to_string()))?;
            match self
                .storage
                .put(key.into_bytes(), value, Precondition::MustNotExist)
                .await
            {
                Ok(kv) => {
                    object::set_resource_version(&mut candidate, kv.mod_revision);
                    return Ok(candidate);
                }
                // A generated name that is taken: try another, a few times, as Kubernetes does.
                Err(StorageError::AlreadyExists { .. }) if generate && attempt < 4 => {
                    self.services.release(&held);
                    attempt += 1;
                }
                Err(e) => {
                    self.services.release(&held);
                    return Err(storage_error(e, info, &name));
                }
            }
        }
    }

    pub(crate) async fn update(&self, req: &Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        let body = negotiate::json_body(req)?;
        let name = r.name.clone().unwrap_or_default();
        let ns = namespace_of(r)?.to_string();
        let (mut obj, warnings) = self.decode_object(r.info, &body, q)?;
        check_name(&mut obj, &name)?;
        Self::scope_namespace(r.info, &mut obj, &ns)?;
        let (updated, _) = self
            .update_object(r.info, &ns, &name, q.dry_run, Mode::Main, &mut |_| {
                Ok(obj.clone())
            })
            .await?;
        Ok(object_response(req, r.info, q, 200, &updated, &warnings))
    }

    /// Read, change, compare-and-swap; retried when another writer got in between, unless the
    /// caller pinned a resourceVersion. Returns the object as stored and the previous one.
    pub(crate) async fn update_object(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        dry_run: bool,
        mode: Mode,
        mutate: &mut dyn FnMut(&Value) -> Result<Value, ApiError>,
    ) -> Result<(Value, Value), ApiError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let (current, kv) = self.read_object(info, ns, name).await?;
            let mut new = mutate(&current)?;
            let pinned = object::meta_str(&new, "resourceVersion").to_string();
            if !pinned.is_empty() && pinned != kv.mod_revision.to_string() {
                return Err(conflict(info, name));
            }
            if mode != Mode::Raw {
                prepare_update(info, &mut new, &current, mode == Mode::Status);
                if mode == Mode::Main {
                    defaults::apply_defaults_with(info.kind, &mut new, &self.default_tolerations);
                }
                let causes =
                    validation::validate_update(info.kind, &new, &current, info.namespaced);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(info.group, info.kind, name, causes));
                }
            }
            let old_held = alloc::held_by(&current);
            let taken = if info.kind == "Service" && mode == Mode::Main {
                self.services
                    .allocate(&mut new, &old_held)
                    .map_err(|causes| ApiError::invalid(info.group, info.kind, name, causes))?
            } else {
                alloc::Held::default()
            };
            object::meta_mut(&mut new).remove("resourceVersion");
            let mut unchanged = current.clone();
            object::meta_mut(&mut unchanged).remove("resourceVersion");
            if new == unchanged {
                // A no-op update writes nothing, so the resourceVersion stays.
                return Ok((current.clone(), current));
            }
            if dry_run {
                self.services.release(&taken);
                object::set_resource_version(&mut new, kv.mod_revision);
                return Ok((new, current));
            }
            let result = if !object::meta_str(&new, "deletionTimestamp").is_empty()
                && super::strategy::finalized(info, &new)
            {
                // The last finalizer is gone: the object goes now.
                self.finish_delete(info, name, &kv, &new).await
            } else {
                self.write(info, &kv, &new).await
            };
            match result {
                Ok(stored) => {
                    if info.kind == "Service" {
                        self.release_unheld(&old_held, &alloc::held_by(&stored));
                    }
                    return Ok((stored, current));
                }
                Err(StorageError::Conflict { .. }) if pinned.is_empty() => {
                    self.services.release(&taken);
                    continue;
                }
                Err(e) => {
                    self.services.release(&taken);
                    return Err(storage_error(e, info, name));
                }
            }
        }
        Err(conflict(info, name))
    }

    /// Writes `new` over the stored `kv` (compare-and-swap on its revision).
    async fn write(
        &self,
        info: &ResourceInfo,
        kv: &KeyValue,
        new: &Value,
    ) -> Result<Value, StorageError> {
        let _ = info;
        let value = serde_json::to_vec(new).map_err(|e| StorageError::Backend {
            op: "encode",
            source: Box::new(e),
        })?;
        let stored = self
            .storage
            .put(
                kv.key.clone(),
                value,
                Precondition::ModRevision(kv.mod_revision),
            )
            .await?;
        let mut out = new.clone();
        object::set_resource_version(&mut out, stored.mod_revision);
        Ok(out)
    }

    /// Removes the object for good (compare-and-swap) and gives back what it held.
    async fn finish_delete(
        &self,
        info: &ResourceInfo,
        _name: &str,
        kv: &KeyValue,
        last: &Value,
    ) -> Result<Value, StorageError> {
        let deleted = self
            .storage
            .delete(kv.key.clone(), Precondition::ModRevision(kv.mod_revision))
            .await?;
        if info.kind == "Service" {
            self.services.release(&alloc::held_by(last));
        }
        let mut out = last.clone();
        object::set_resource_version(&mut out, deleted.mod_revision);
        Ok(out)
    }

    fn release_unheld(&self, old: &alloc::Held, new: &alloc::Held) {
        let gone = alloc::Held {
            ip: old.ip.filter(|ip| new.ip != Some(*ip)),
            ports: old
                .ports
                .iter()
                .copied()
                .filter(|p| !new.ports.contains(p))
                .collect(),
        };
        self.services.release(&gone);
    }

    pub(crate) async fn patch(&self, req: &Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        let name = r.name.clone().unwrap_or_default();
        let ns = namespace_of(r)?.to_string();
        let (updated, warnings) = self
            .patch_object(req, r.info, &ns, &name, q, Mode::Main)
            .await?;
        Ok(object_response(req, r.info, q, 200, &updated, &warnings))
    }

    /// Applies a PATCH body to the stored object (main resource or status).
    pub(crate) async fn patch_object(
        &self,
        req: &Request,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        q: &Query,
        mode: Mode,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let patch_type = negotiate::patch_type(req.header("content-type"))?;
        let patch = decode_json(&req.body)?;
        let pins_version = patch
            .pointer("/metadata/resourceVersion")
            .is_some_and(|v| !v.is_null());
        let definition = definition_name(info);
        let mut warnings = Vec::new();
        let (updated, _) = self
            .update_object(info, ns, name, q.dry_run, mode, &mut |current| {
                let mut patched = apply_patch(patch_type, current, &patch, &definition)?;
                if !patched.is_object() {
                    return Err(ApiError::bad_request("the patch did not produce an object"));
                }
                if patched.get("kind") != current.get("kind")
                    || patched.get("apiVersion") != current.get("apiVersion")
                {
                    return Err(ApiError::bad_request(
                        "a patch may not change an object's apiVersion or kind",
                    ));
                }
                if object::name(&patched) != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        object::name(&patched)
                    )));
                }
                warnings = self.check_object(info, &mut patched, q)?;
                if !pins_version {
                    object::meta_mut(&mut patched).remove("resourceVersion");
                }
                Ok(patched)
            })
            .await?;
        Ok((updated, warnings))
    }

    pub(crate) async fn delete(&self, req: &Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        let name = r.name.clone().unwrap_or_default();
        let ns = namespace_of(r)?.to_string();
        let opts = DeleteOptions::parse(&negotiate::delete_body(req)?, q)?;
        let obj = self.delete_one(r.info, &ns, &name, &opts).await?;
        Ok(object_response(req, r.info, q, 200, &obj, &[]))
    }

    async fn delete_one(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let (current, kv) = self.read_object(info, ns, name).await?;
            let uid = object::meta_str(&current, "uid");
            if let Some(want) = opts.uid.as_deref().filter(|u| !u.is_empty() && *u != uid) {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
                ));
            }
            let rv = kv.mod_revision.to_string();
            if let Some(want) = opts
                .resource_version
                .as_deref()
                .filter(|v| !v.is_empty() && **v != rv)
            {
                return Err(ApiError::conflict(info.group, info.plural, name, format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                )));
            }
            let mut obj = current.clone();
            let deleting = !object::meta_str(&obj, "deletionTimestamp").is_empty();
            let now = time::OffsetDateTime::now_utc();
            let mut pending = false;
            if info.kind == "Namespace" {
                let has_spec_finalizers = obj
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
                if has_spec_finalizers {
                    obj["status"]["phase"] = json!("Terminating");
                    pending = true;
                }
            }
            let policy = opts
                .policy
                .clone()
                .unwrap_or_else(|| default_policy(info).to_string());
            let extra = match policy.as_str() {
                "Orphan" => Some("orphan"),
                "Foreground" => Some("foregroundDeletion"),
                _ => None,
            };
            if let Some(f) = extra {
                let mut finalizers = object::finalizers(&obj);
                if !finalizers.iter().any(|x| x == f) {
                    finalizers.push(f.to_string());
                    object::meta_mut(&mut obj).insert("finalizers".into(), json!(finalizers));
                }
            }
            if !object::finalizers(&obj).is_empty() {
                pending = true;
            }
            let mut grace = 0;
            if info.kind == "Pod" {
                let scheduled = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let finished = matches!(
                    obj.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
                let default_grace = obj
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30);
                grace = opts.grace_period.unwrap_or(default_grace).max(0);
                if !scheduled || finished {
                    grace = 0;
                }
                if grace > 0 {
                    pending = true;
                }
            }
            if pending {
                let meta = object::meta_mut(&mut obj);
                if !deleting {
                    let at = now + time::Duration::seconds(grace);
                    meta.insert("deletionTimestamp".into(), json!(object::rfc3339(at)));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                } else if info.kind == "Pod" {
                    // A shorter grace period may cut an ongoing graceful deletion short.
                    let old = meta
                        .get("deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(i64::MAX);
                    if grace < old {
                        meta.insert(
                            "deletionTimestamp".into(),
                            json!(object::rfc3339(now + time::Duration::seconds(grace))),
                        );
                        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                }
                if grace == 0 && info.kind == "Pod" && object::finalizers(&obj).is_empty() {
                    pending = false;
                }
            }
            if opts.dry_run {
                return Ok(obj);
            }
            let result = if pending {
                if obj == current {
                    return Ok(current);
                }
                object::meta_mut(&mut obj).remove("resourceVersion");
                self.write(info, &kv, &obj).await
            } else {
                self.finish_delete(info, name, &kv, &obj).await
            };
            match result {
                Ok(v) => return Ok(v),
                Err(StorageError::Conflict { .. }) if opts.resource_version.is_none() => continue,
                Err(e) => return Err(storage_error(e, info, name)),
            }
        }
        Err(conflict(info, name))
    }

    pub(crate) async fn delete_collection(
        &self,
        req: &Request,
        r: &ResourceRoute,
        q: &Query,
    ) -> ApiResult {
        let filter = Filter::new(r.info, q)?;
        let opts = DeleteOptions::parse(&negotiate::delete_body(req)?, q)?;
        let current = self.storage.current_revision();
        self.caches
            .wait_for(current)
            .await
            .map_err(super::read::cache_error)?;
        let prefix = object::scope_prefix(r.info, r.namespace.as_deref());
        let (objects, revision) = self.caches.get(r.info).list(&prefix);
        let mut deleted = Vec::new();
        for o in objects.iter().filter(|o| filter.matches(&o.value)) {
            let (ns, name) = (
                object::namespace(&o.value).to_string(),
                object::name(&o.value).to_string(),
            );
            match self.delete_one(r.info, &ns, &name, &opts).await {
                Ok(v) => deleted.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let items: Vec<Item<'_>> = deleted.iter().map(Item::Parsed).collect();
        let body = encode_list(
            r.info,
            Output::Json,
            q,
            &items,
            list_meta(revision, None, None),
        );
        Ok(Response::new(200, "application/json", body))
    }
}

/// The garbage-collection policy when the client gives none: batch/v1 Jobs orphan, as in
/// Kubernetes; everything else is background.
fn default_policy(info: &ResourceInfo) -> &'static str {
    if info.group == "batch" {
        "Orphan"
    } else {
        "Background"
    }
}

fn conflict(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(
        info.group,
        info.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

fn check_name(obj: &mut Value, url_name: &str) -> Result<(), ApiError> {
    let name = object::name(obj).to_string();
    if name.is_empty() {
        object::meta_mut(obj).insert("name".into(), json!(url_name));
    } else if name != url_name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({url_name})"
        )));
    }
    Ok(())
}

pub(crate) fn apply_patch(
    t: PatchType,
    current: &Value,
    patch: &Value,
    definition: &str,
) -> Result<Value, ApiError> {
    let result = match t {
        PatchType::Json => crate::patch::apply_json_patch(current, patch),
        PatchType::Merge => crate::patch::apply_merge_patch(current, patch),
        PatchType::Strategic => {
            crate::patch::apply_strategic_merge_patch(current, patch, definition)
        }
    };
    result.map_err(|e| e.to_api_error())
}

/// Kubernetes' generateName suffix: five characters from an alphabet without vowels or
/// look-alikes, so no words are spelled by accident.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect()
}

fn truncate(s: &str) -> String {
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    #[test]
    fn definitions_follow_kubernetes_names() {
        assert_eq!(
            definition_name(find("apps", "v1", "deployments").unwrap()),
            "io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            definition_name(find("", "v1", "pods").unwrap()),
            "io.k8s.api.core.v1.Pod"
        );
        assert_eq!(
            definition_name(find("coordination.k8s.io", "v1", "leases").unwrap()),
            "io.k8s.api.coordination.v1.Lease"
        );
        assert_eq!(
            definition_name(find("discovery.k8s.io", "v1", "endpointslices").unwrap()),
            "io.k8s.api.discovery.v1.EndpointSlice"
        );
    }

    #[test]
    fn generated_suffixes_use_the_alphabet() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }

    #[test]
    fn delete_options_from_body_and_query() {
        let q = Query::parse("gracePeriodSeconds=5").unwrap();
        let body = br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Foreground","preconditions":{"uid":"u1"}}"#;
        let o = DeleteOptions::parse(body, &q).unwrap();
        assert_eq!(
            (o.grace_period, o.policy.as_deref(), o.uid.as_deref()),
            (Some(5), Some("Foreground"), Some("u1"))
        );
        let bad = br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Sideways"}"#;
        assert_eq!(
            DeleteOptions::parse(bad, &Query::default())
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(
            DeleteOptions::parse(b"{nope", &Query::default())
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn warnings_are_quoted() {
        assert_eq!(
            warning_header("unknown field \"spec.x\""),
            "299 - \"unknown field \\\"spec.x\\\"\""
        );
    }
}
