//! Builds the OpenAPI v3 document of one group-version, as served at
//! `/openapi/v3/apis/<group>/<version>` (or `/openapi/v3/api/v1`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::paths::{add_resource_paths, add_root_path};
use super::schemas::{
    catalog, closure, API_RESOURCE_LIST, BINDING, DELETE_OPTIONS, PATCH, SCALE, STATUS, WATCH_EVENT,
};
use crate::registry::resources::{Subresource, RESOURCES};

/// Patch metadata of one field: (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`).
pub type PatchMeta = (&'static str, Option<&'static str>);

/// The OpenAPI v3 document of one group-version: every endpoint of its resources and every
/// schema they reference, each kind's schema carrying `x-kubernetes-group-version-kind`.
///
/// `patch_meta(definition, field)` supplies strategic-merge metadata (e.g. for
/// ("io.k8s.api.core.v1.PodSpec", "containers") → ("merge", Some("name"))); kubectl's
/// `apply` reads it from this document. A group-version that is not served yields a document
/// with no paths and no schemas. The document is deterministic: build it once and cache it.
pub fn generate_group_version(
    group: &str,
    version: &str,
    patch_meta: &dyn Fn(&str, &str) -> Option<PatchMeta>,
) -> Value {
    let cat = catalog();
    let mut paths = Map::new();
    let mut roots: Vec<&str> = Vec::new();
    let served: Vec<_> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    for r in &served {
        let Some(def) = cat.kind_definition(r.group, r.kind) else {
            continue;
        };
        add_resource_paths(&mut paths, r, def);
        roots.push(def);
        if r.has_subresource(Subresource::Scale) {
            roots.push(SCALE);
        }
        if r.has_subresource(Subresource::Binding) {
            roots.push(BINDING);
        }
    }
    let lists: Vec<String> = roots
        .iter()
        .filter(|d| **d != SCALE && **d != BINDING)
        .map(|d| format!("{d}List"))
        .collect();
    if !served.is_empty() {
        add_root_path(&mut paths, group, version, API_RESOURCE_LIST);
        roots.extend([
            STATUS,
            DELETE_OPTIONS,
            WATCH_EVENT,
            PATCH,
            API_RESOURCE_LIST,
        ]);
    }
    roots.extend(lists.iter().map(String::as_str));

    let mut schemas = Map::new();
    for name in closure(&cat.definitions, roots) {
        if let Some(schema) = cat.definitions.get(&name) {
            let mut schema = schema.clone();
            add_patch_meta(&name, &mut schema, patch_meta);
            schemas.insert(name, schema);
        }
    }

    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn add_patch_meta(
    definition: &str,
    schema: &mut Value,
    patch_meta: &dyn Fn(&str, &str) -> Option<PatchMeta>,
) {
    let Some(Value::Object(props)) = schema.get_mut("properties") else {
        return;
    };
    for (field, prop) in props.iter_mut() {
        let Some((strategy, merge_key)) = patch_meta(definition, field) else {
            continue;
        };
        if let Value::Object(prop) = prop {
            prop.insert("x-kubernetes-patch-strategy".into(), strategy.into());
            if let Some(key) = merge_key {
                prop.insert("x-kubernetes-patch-merge-key".into(), key.into());
            }
        }
    }
}

/// "api/v1" or "apis/<group>/<version>": the key of a document in the `/openapi/v3` index.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every served group-version as (index path, group, version), in discovery order.
pub fn served_group_versions() -> Vec<(String, &'static str, &'static str)> {
    crate::registry::resources::groups()
        .into_iter()
        .map(|(g, v)| (group_version_path(g, v), g, v))
        .collect()
}

/// The `/openapi/v3` index: each document's server-relative URL, pinned by its content hash.
pub fn index(hashes: &[(String, String)]) -> Value {
    let paths: BTreeMap<&str, Value> = hashes
        .iter()
        .map(|(path, hash)| {
            (
                path.as_str(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::resources::groups;
    use std::collections::BTreeSet;

    fn no_meta(_: &str, _: &str) -> Option<PatchMeta> {
        None
    }

    fn all_documents() -> Vec<(String, Value)> {
        groups()
            .into_iter()
            .map(|(g, v)| {
                (
                    group_version_path(g, v),
                    generate_group_version(g, v, &no_meta),
                )
            })
            .collect()
    }

    fn refs_of(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        out.insert(v.as_str().expect("$ref is a string").to_string());
                    } else {
                        refs_of(v, out);
                    }
                }
            }
            Value::Array(list) => list.iter().for_each(|v| refs_of(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_inside_its_document() {
        for (path, doc) in all_documents() {
            let text = serde_json::to_string(&doc).expect("serializes");
            let doc: Value = serde_json::from_str(&text).expect("valid JSON");
            let mut refs = BTreeSet::new();
            refs_of(&doc, &mut refs);
            assert!(!refs.is_empty(), "{path}");
            for r in refs {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("{path}: foreign ref {r}"));
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{path}: dangling {r}"
                );
            }
        }
    }

    #[test]
    fn every_kind_has_its_gvk_and_writes_take_field_validation() {
        for (path, doc) in all_documents() {
            let schemas = &doc["components"]["schemas"];
            for r in RESOURCES
                .iter()
                .filter(|r| group_version_path(r.group, r.version) == path)
            {
                let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
                let with_gvk: Vec<&String> = schemas
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(_, s)| {
                        s["x-kubernetes-group-version-kind"]
                            .as_array()
                            .is_some_and(|l| l.contains(&gvk))
                    })
                    .map(|(n, _)| n)
                    .collect();
                assert_eq!(with_gvk.len(), 1, "{path} {}", r.kind);
            }
            let mut patches = 0;
            for (p, item) in doc["paths"].as_object().unwrap() {
                for method in ["post", "put", "patch"] {
                    let Some(op) = item.get(method) else { continue };
                    let names: Vec<&str> = op["parameters"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{p} {method} has parameters"))
                        .iter()
                        .map(|p| p["name"].as_str().unwrap())
                        .collect();
                    if p.ends_with("/exec") {
                        continue;
                    }
                    assert!(names.contains(&"fieldValidation"), "{p} {method}");
                    assert!(names.contains(&"dryRun"), "{p} {method}");
                    assert!(op["x-kubernetes-action"].is_string());
                    assert!(op["x-kubernetes-group-version-kind"]["kind"].is_string());
                    if method == "patch" {
                        patches += 1;
                        assert!(op["requestBody"]["content"]
                            .get("application/strategic-merge-patch+json")
                            .is_some());
                    }
                }
            }
            assert!(patches > 0, "{path}");
        }
    }

    #[test]
    fn apps_document_has_deployment_paths_and_scale() {
        let doc = generate_group_version("apps", "v1", &no_meta);
        assert_eq!(doc["openapi"], "3.0.0");
        let paths = &doc["paths"];
        let item = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(item["patch"]["x-kubernetes-action"], "patch");
        assert_eq!(
            item["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert_eq!(item["get"]["operationId"], "readAppsV1NamespacedDeployment");
        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["put"]["x-kubernetes-group-version-kind"]["group"],
            "autoscaling"
        );
        assert!(paths.get("/apis/apps/v1/deployments").is_some());
        assert!(paths.get("/apis/apps/v1/").is_some());
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"],
            json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}])
        );
        assert!(schemas.get("io.k8s.api.core.v1.PodSpec").is_some());
        assert!(schemas.get("io.k8s.api.core.v1.Node").is_none());
    }

    #[test]
    fn core_document_has_pod_subresources_and_cluster_scoped_nodes() {
        let doc = generate_group_version("", "v1", &no_meta);
        let paths = &doc["paths"];
        let pod = "/api/v1/namespaces/{namespace}/pods/{name}";
        assert_eq!(
            paths[format!("{pod}/binding")]["post"]["x-kubernetes-group-version-kind"]["kind"],
            "Binding"
        );
        // log and exec are proxied to the kubelet.
        assert_eq!(
            paths[format!("{pod}/log")]["get"]["operationId"],
            "readCoreV1NamespacedPodLog"
        );
        assert_eq!(
            paths[format!("{pod}/exec")]["post"]["operationId"],
            "connectCoreV1PostNamespacedPodExec"
        );
        assert!(paths[format!("{pod}/exec")].get("get").is_some());
        assert_eq!(
            paths[format!("{pod}/status")]["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Pod"
        );
        assert_eq!(
            paths["/api/v1/nodes/{name}"]["get"]["operationId"],
            "readCoreV1Node"
        );
        assert!(paths.get("/api/v1/namespaces/{namespace}/nodes").is_none());
    }

    #[test]
    fn patch_meta_hook_annotates_properties() {
        let meta = |def: &str, field: &str| match (def, field) {
            ("io.k8s.api.core.v1.PodSpec", "containers") => Some(("merge", Some("name"))),
            ("io.k8s.api.core.v1.PodSpec", "volumes") => Some(("merge,retainKeys", Some("name"))),
            _ => None,
        };
        let doc = generate_group_version("apps", "v1", &meta);
        let spec = &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"];
        assert_eq!(spec["containers"]["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(spec["containers"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            spec["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        assert!(spec["nodeName"]
            .get("x-kubernetes-patch-strategy")
            .is_none());
    }

    #[test]
    fn unserved_group_version_is_empty() {
        let doc = generate_group_version("nope", "v9", &no_meta);
        assert_eq!(doc["paths"], json!({}));
        assert_eq!(doc["components"]["schemas"], json!({}));
    }

    #[test]
    fn index_lists_documents_with_hashes() {
        let idx = index(&[
            ("api/v1".to_string(), "AB12".to_string()),
            ("apis/apps/v1".to_string(), "CD34".to_string()),
        ]);
        assert_eq!(
            idx,
            json!({"paths": {
                "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=AB12"},
                "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=CD34"},
            }})
        );
        assert_eq!(served_group_versions()[0], ("api/v1".to_string(), "", "v1"));
    }
}
