//! Subresources: `status`, `scale` (autoscaling/v1 Scale) and pods' `binding`.

use serde_json::{json, Value};

use super::negotiate;
use super::read::namespace_of;
use super::write::{apply_patch, Mode};
use super::{decode_json, typed, Api, ApiResult, Query, ResourceRoute};
use crate::http::{Request, Response};
use crate::object;
use crate::status::{ApiError, Cause};

/// What a write to `scale` brings.
enum ScaleInput {
    Whole(Value),
    Patch(negotiate::PatchType, Value),
}

/// The Scale view of a scalable object.
fn scale_of(obj: &Value) -> Value {
    let meta = object::meta(obj).cloned().unwrap_or_default();
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .and_then(|s| berth_api::LabelSelector::from_structured(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0))},
    });
    if !selector.is_empty() {
        scale["status"]["selector"] = json!(selector);
    }
    scale
}

fn replicas_of(name: &str, scale: &Value) -> Result<i64, ApiError> {
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    match replicas.as_i64() {
        Some(n) if (0..=i32::MAX as i64).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![Cause::invalid(
                "spec.replicas",
                &replicas,
                "must be greater than or equal to 0",
            )],
        )),
    }
}

impl Api {
    pub(crate) async fn status_subresource(
        &self,
        req: Request,
        r: &ResourceRoute,
        q: &Query,
    ) -> ApiResult {
        let name = r.name.clone().unwrap_or_default();
        let ns = namespace_of(r)?.to_string();
        let updated = match req.method.as_str() {
            "GET" => self.read_object(r.info, &ns, &name).await?.0,
            "PUT" => {
                let obj = decode_json(&negotiate::json_body(&req)?)?;
                typed::check_kind(r.info.kind, &obj).map_err(ApiError::bad_request)?;
                if !object::name(&obj).is_empty() && object::name(&obj) != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        object::name(&obj)
                    )));
                }
                self.update_object(r.info, &ns, &name, q.dry_run, Mode::Status, &mut |_| {
                    Ok(obj.clone())
                })
                .await?
                .0
            }
            "PATCH" => {
                self.patch_object(&req, r.info, &ns, &name, q, Mode::Status)
                    .await?
                    .0
            }
            m => {
                return Err(ApiError::method_not_allowed(format!(
                    "{m} is not supported on status"
                )))
            }
        };
        Ok(super::write::object_response(
            &req,
            r.info,
            q,
            200,
            &updated,
            &[],
        ))
    }

    pub(crate) async fn scale_subresource(
        &self,
        req: Request,
        r: &ResourceRoute,
        q: &Query,
    ) -> ApiResult {
        let name = r.name.clone().unwrap_or_default();
        let ns = namespace_of(r)?.to_string();
        let info = r.info;
        // A PUT brings a whole Scale (its resourceVersion is a precondition); a PATCH applies to
        // the current Scale.
        let input = match req.method.as_str() {
            "GET" => {
                let (obj, _) = self.read_object(info, &ns, &name).await?;
                return Ok(Response::json(200, &scale_of(&obj)));
            }
            "PUT" => {
                let scale = decode_json(&negotiate::json_body(&req)?)?;
                typed::check_kind("Scale", &scale).map_err(ApiError::bad_request)?;
                ScaleInput::Whole(scale)
            }
            "PATCH" => ScaleInput::Patch(
                negotiate::patch_type(req.header("content-type"))?,
                decode_json(&req.body)?,
            ),
            m => {
                return Err(ApiError::method_not_allowed(format!(
                    "{m} is not supported on scale"
                )))
            }
        };
        let (updated, _) = self
            .update_object(info, &ns, &name, q.dry_run, Mode::Main, &mut |current| {
                let scale = match &input {
                    ScaleInput::Whole(s) => s.clone(),
                    ScaleInput::Patch(t, p) => {
                        apply_patch(*t, &scale_of(current), p, "io.k8s.api.autoscaling.v1.Scale")?
                    }
                };
                let replicas = replicas_of(&name, &scale)?;
                let mut next = current.clone();
                next["spec"]["replicas"] = json!(replicas);
                // The Scale's resourceVersion, if any, is the precondition.
                match scale
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                {
                    Some(rv) if matches!(input, ScaleInput::Whole(_)) => {
                        object::meta_mut(&mut next).insert("resourceVersion".into(), json!(rv))
                    }
                    _ => object::meta_mut(&mut next).remove("resourceVersion"),
                };
                Ok(next)
            })
            .await?;
        Ok(Response::json(200, &scale_of(&updated)))
    }

    /// POST pods/<name>/binding: assigns the pod to a node, once.
    pub(crate) async fn binding(&self, req: Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        if req.method != "POST" {
            return Err(ApiError::method_not_allowed("binding only supports POST"));
        }
        let name = r.name.clone().unwrap_or_default();
        let ns = namespace_of(r)?.to_string();
        let binding = decode_json(&negotiate::json_body(&req)?)?;
        typed::check_kind("Binding", &binding).map_err(ApiError::bad_request)?;
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = binding
            .pointer("/target/kind")
            .and_then(Value::as_str)
            .unwrap_or("Node");
        if node.is_empty() || (kind != "Node" && !kind.is_empty()) {
            return Err(ApiError::invalid(
                "",
                "Binding",
                &name,
                vec![Cause::invalid(
                    "target",
                    &binding["target"],
                    "must name a Node",
                )],
            ));
        }
        let wanted_uid = binding
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(String::from);
        self.update_object(r.info, &ns, &name, q.dry_run, Mode::Raw, &mut |current| {
            if let Some(uid) = &wanted_uid {
                if object::meta_str(current, "uid") != uid {
                    return Err(ApiError::conflict(
                        "",
                        "pods",
                        &name,
                        format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object::meta_str(current, "uid")
                    ),
                    ));
                }
            }
            if !object::meta_str(current, "deletionTimestamp").is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            let assigned = current
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !assigned.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    format!("pod {name} is already assigned to node \"{assigned}\""),
                ));
            }
            let mut next = current.clone();
            next["spec"]["nodeName"] = json!(node);
            set_condition(&mut next, "PodScheduled", "True");
            object::meta_mut(&mut next).remove("resourceVersion");
            Ok(next)
        })
        .await?;
        Ok(Response::json(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}

impl Api {
    /// PUT namespaces/<name>/finalize: replaces `spec.finalizers`, nothing else. When a
    /// terminating namespace's last finalizer goes, the namespace goes with it.
    pub(crate) async fn finalize(&self, req: Request, r: &ResourceRoute, q: &Query) -> ApiResult {
        if req.method != "PUT" {
            return Err(ApiError::method_not_allowed("finalize only supports PUT"));
        }
        let name = r.name.clone().unwrap_or_default();
        let ns = decode_json(&negotiate::json_body(&req)?)?;
        typed::check_kind("Namespace", &ns).map_err(ApiError::bad_request)?;
        let finalizers = ns
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
        let mut causes = Vec::new();
        for (i, f) in finalizers.as_array().into_iter().flatten().enumerate() {
            let text = f.as_str().unwrap_or_default();
            for msg in berth_api::names::is_qualified_name(text) {
                causes.push(Cause::invalid(format!("spec.finalizers[{i}]"), f, msg));
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("", "Namespace", &name, causes));
        }
        let pinned = object::meta_str(&ns, "resourceVersion").to_string();
        let (updated, _) = self
            .update_object(r.info, "", &name, q.dry_run, Mode::Raw, &mut |current| {
                let mut next = current.clone();
                next["spec"]["finalizers"] = finalizers.clone();
                if pinned.is_empty() {
                    object::meta_mut(&mut next).remove("resourceVersion");
                } else {
                    object::meta_mut(&mut next).insert("resourceVersion".into(), json!(pinned));
                }
                Ok(next)
            })
            .await?;
        Ok(super::write::object_response(
            &req,
            r.info,
            q,
            200,
            &updated,
            &[],
        ))
    }
}

/// Sets a pod condition, keeping its transition time when the status does not change.
fn set_condition(pod: &mut Value, kind: &str, status: &str) {
    let now = object::now_rfc3339();
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let conditions = pod["status"]
        .as_object_mut()
        .expect("made an object above")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made an array above");
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(c) if c["status"] == status => {}
        Some(c) => {
            c["status"] = json!(status);
            c["lastTransitionTime"] = json!(now);
        }
        None => list.push(json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view_of_a_deployment() {
        let d = json!({"metadata": {"name": "web", "namespace": "a", "uid": "u", "resourceVersion": "5"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}});
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web");
        assert_eq!(s["metadata"]["resourceVersion"], "5");
    }

    #[test]
    fn negative_replicas_are_invalid() {
        let e = replicas_of("web", &json!({"spec": {"replicas": -1}})).unwrap_err();
        assert_eq!(e.code, 422);
    }

    #[test]
    fn conditions_are_set_once() {
        let mut pod = json!({"status": {"phase": "Pending"}});
        set_condition(&mut pod, "PodScheduled", "True");
        let first = pod.clone();
        set_condition(&mut pod, "PodScheduled", "True");
        assert_eq!(pod, first);
        assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
    }
}
