//! Every schema the OpenAPI documents can reference, in OpenAPI 3.0 form, built once.
//!
//! The schemas come from k8s-openapi's `schemars` impls, whose definition names are already
//! Kubernetes' own ("io.k8s.api.apps.v1.Deployment"). schemars emits JSON Schema 2020-12
//! (`$defs`, `$ref` with siblings, `null` types); [`to_openapi`] rewrites that into the dialect
//! the Kubernetes API server publishes and kubectl's `explain` and strategic-merge code read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::registry::resources::{groups, ResourceInfo, RESOURCES};

/// Where schemars puts definitions, and where OpenAPI 3 wants them.
const JSON_SCHEMA_DEFS: &str = "#/$defs/";
pub(crate) const COMPONENTS: &str = "#/components/schemas/";

pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(crate) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub(crate) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
pub(crate) const BINDING: &str = "io.k8s.api.core.v1.Binding";
const EVENT: &str = "io.k8s.api.core.v1.Event";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// Adds the schema of one Rust type to the generator and returns its definition name.
type AddSchema = fn(&mut SchemaGenerator) -> String;

fn add<T: JsonSchema>(gen: &mut SchemaGenerator) -> String {
    gen.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The Rust type behind each served kind. A kind added to the resource table without a line
/// here has no schema; `every_served_kind_has_a_schema` fails loudly when that happens.
static KIND_TYPES: &[(&str, &str, AddSchema)] = &[
    ("", "Namespace", add::<core::v1::Namespace>),
    ("", "Pod", add::<core::v1::Pod>),
    ("", "Node", add::<core::v1::Node>),
    ("", "Service", add::<core::v1::Service>),
    ("", "Endpoints", add::<core::v1::Endpoints>),
    ("", "ConfigMap", add::<core::v1::ConfigMap>),
    ("", "Secret", add::<core::v1::Secret>),
    ("", "ServiceAccount", add::<core::v1::ServiceAccount>),
    ("", "Event", add::<core::v1::Event>),
    (
        "",
        "PersistentVolumeClaim",
        add::<core::v1::PersistentVolumeClaim>,
    ),
    ("", "PersistentVolume", add::<core::v1::PersistentVolume>),
    ("apps", "Deployment", add::<apps::v1::Deployment>),
    ("apps", "ReplicaSet", add::<apps::v1::ReplicaSet>),
    ("apps", "DaemonSet", add::<apps::v1::DaemonSet>),
    ("apps", "StatefulSet", add::<apps::v1::StatefulSet>),
    (
        "apps",
        "ControllerRevision",
        add::<apps::v1::ControllerRevision>,
    ),
    ("batch", "Job", add::<batch::v1::Job>),
    (
        "certificates.k8s.io",
        "CertificateSigningRequest",
        add::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>,
    ),
    (
        "coordination.k8s.io",
        "Lease",
        add::<coordination::v1::Lease>,
    ),
    (
        "discovery.k8s.io",
        "EndpointSlice",
        add::<discovery::v1::EndpointSlice>,
    ),
];

/// All definitions, converted, with GVK extensions; no patch metadata (that is per document).
pub(crate) struct Catalog {
    pub definitions: BTreeMap<String, Value>,
    /// (group, kind) → definition name, for served kinds and the extra kinds below.
    pub kinds: BTreeMap<(String, String), String>,
}

impl Catalog {
    pub fn kind_definition(&self, group: &str, kind: &str) -> Option<&str> {
        self.kinds
            .get(&(group.to_string(), kind.to_string()))
            .map(String::as_str)
    }
}

/// The catalog, built on first use.
pub(crate) fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(build_catalog)
}

fn build_catalog() -> Catalog {
    let mut gen = SchemaSettings::draft2020_12()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut kinds = BTreeMap::new();
    for (group, kind, add_schema) in KIND_TYPES {
        kinds.insert((group.to_string(), kind.to_string()), add_schema(&mut gen));
    }
    kinds.insert(
        ("autoscaling".to_string(), "Scale".to_string()),
        add::<autoscaling::v1::Scale>(&mut gen),
    );
    kinds.insert(
        (String::new(), "Binding".to_string()),
        add::<core::v1::Binding>(&mut gen),
    );
    add::<meta::Status>(&mut gen);
    add::<meta::DeleteOptions>(&mut gen);
    add::<meta::WatchEvent<()>>(&mut gen);
    add::<meta::ListMeta>(&mut gen);
    add::<meta::Patch>(&mut gen);
    add::<meta::APIResourceList>(&mut gen);

    let mut definitions: BTreeMap<String, Value> = gen
        .take_definitions(true)
        .into_iter()
        .map(|(name, schema)| (name, to_openapi(schema)))
        .collect();
    for (name, schema) in definitions.iter_mut() {
        if name != EVENT {
            drop_required_metadata(schema);
        }
    }
    definitions.insert(INT_OR_STRING.to_string(), int_or_string(&definitions));
    definitions.insert(QUANTITY.to_string(), quantity(&definitions));

    for r in RESOURCES {
        let Some(name) = kinds.get(&(r.group.to_string(), r.kind.to_string())) else {
            continue;
        };
        let name = name.clone();
        set_gvk(&mut definitions, &name, &[(r.group, r.version, r.kind)]);
        let list_name = format!("{name}List");
        definitions.insert(list_name.clone(), list_schema(r, &name, &definitions));
        set_gvk(
            &mut definitions,
            &list_name,
            &[(r.group, r.version, &r.list_kind())],
        );
    }
    set_gvk(&mut definitions, SCALE, &[("autoscaling", "v1", "Scale")]);
    set_gvk(&mut definitions, BINDING, &[("", "v1", "Binding")]);
    set_gvk(&mut definitions, STATUS, &[("", "v1", "Status")]);
    // Kubernetes registers the option and event kinds in every group-version it serves.
    let served = groups();
    for (definition, kind) in [
        (DELETE_OPTIONS, "DeleteOptions"),
        (WATCH_EVENT, "WatchEvent"),
    ] {
        let gvks: Vec<(&str, &str, &str)> = served.iter().map(|(g, v)| (*g, *v, kind)).collect();
        set_gvk(&mut definitions, definition, &gvks);
    }
    Catalog { definitions, kinds }
}

/// k8s-openapi marks `metadata` required wherever its Rust field is not optional; Kubernetes
/// requires it only on core/v1 Event. `explain` prints `-required-` from this list.
fn drop_required_metadata(schema: &mut Value) {
    let Some(Value::Array(required)) = schema.get_mut("required") else {
        return;
    };
    required.retain(|f| f != "metadata");
    if required.is_empty() {
        if let Value::Object(map) = schema {
            map.remove("required");
        }
    }
}

fn set_gvk(definitions: &mut BTreeMap<String, Value>, name: &str, gvks: &[(&str, &str, &str)]) {
    let list: Vec<Value> = gvks
        .iter()
        .map(|(g, v, k)| json!({"group": g, "kind": k, "version": v}))
        .collect();
    if let Some(Value::Object(schema)) = definitions.get_mut(name) {
        schema.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
    }
}

fn description_of(definitions: &BTreeMap<String, Value>, name: &str) -> Value {
    definitions
        .get(name)
        .and_then(|s| s.get("description"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Kubernetes publishes IntOrString as a oneOf so `explain` prints `<IntOrString>`;
/// `x-kubernetes-int-or-string` is the marker validators key on.
fn int_or_string(definitions: &BTreeMap<String, Value>) -> Value {
    json!({
        "description": description_of(definitions, INT_OR_STRING),
        "format": "int-or-string",
        "oneOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": true,
    })
}

/// A quantity is a string ("500m", "1Gi") or a plain number; unlike IntOrString it accepts
/// fractions, so it is not marked int-or-string.
fn quantity(definitions: &BTreeMap<String, Value>) -> Value {
    json!({
        "description": description_of(definitions, QUANTITY),
        "oneOf": [{"type": "string"}, {"type": "number"}],
    })
}

fn property_description(definitions: &BTreeMap<String, Value>, name: &str, field: &str) -> Value {
    definitions
        .get(name)
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.get(field))
        .and_then(|f| f.get("description"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// k8s-openapi models lists generically, without a schema; Kubernetes publishes one per kind.
fn list_schema(r: &ResourceInfo, item: &str, definitions: &BTreeMap<String, Value>) -> Value {
    json!({
        "description": format!("{} is a list of {} objects.", r.list_kind(), r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": property_description(definitions, item, "apiVersion"),
                "type": "string",
            },
            "items": {
                "description": format!("Items is the list of {} objects.", r.kind),
                "type": "array",
                "items": {"allOf": [{"$ref": format!("{COMPONENTS}{item}")}], "default": {}},
            },
            "kind": {
                "description": property_description(definitions, item, "kind"),
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [{"$ref": format!("{COMPONENTS}{LIST_META}")}],
                "default": {},
            },
        },
    })
}

/// Rewrites one JSON Schema 2020-12 schema into the OpenAPI 3.0 dialect Kubernetes serves.
pub(crate) fn to_openapi(schema: Value) -> Value {
    match schema {
        // OpenAPI 3.0 has no boolean schemas; `true` accepts anything.
        Value::Bool(true) => json!({}),
        Value::Bool(false) => json!({"not": {}}),
        Value::Object(map) => Value::Object(object_to_openapi(map)),
        other => other,
    }
}

fn object_to_openapi(map: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut nullable = false;
    for (key, value) in map {
        match key.as_str() {
            "$schema" | "$id" | "examples" => {}
            "$ref" => {
                let target = value.as_str().unwrap_or_default();
                let name = target.strip_prefix(JSON_SCHEMA_DEFS).unwrap_or(target);
                out.insert(key, Value::String(format!("{COMPONENTS}{name}")));
            }
            "const" => {
                out.insert("enum".into(), Value::Array(vec![value]));
            }
            "type" => match value {
                Value::Array(types) => {
                    let mut rest: Vec<Value> = types
                        .into_iter()
                        .filter(|t| {
                            let is_null = t == "null";
                            nullable |= is_null;
                            !is_null
                        })
                        .collect();
                    if rest.len() == 1 {
                        out.insert(key, rest.remove(0));
                    } else if !rest.is_empty() {
                        // 3.0 has no type unions; leave the value unconstrained.
                    }
                }
                other => {
                    out.insert(key, other);
                }
            },
            "properties" | "patternProperties" | "$defs" | "definitions" => {
                let converted = match value {
                    Value::Object(props) => {
                        Value::Object(props.into_iter().map(|(k, v)| (k, to_openapi(v))).collect())
                    }
                    other => other,
                };
                out.insert(key, converted);
            }
            "items" | "not" => {
                out.insert(key, to_openapi(value));
            }
            "additionalProperties" => {
                let converted = match value {
                    Value::Bool(b) => Value::Bool(b),
                    other => to_openapi(other),
                };
                out.insert(key, converted);
            }
            "allOf" | "anyOf" | "oneOf" => {
                if let Value::Array(list) = value {
                    let mut kept = Vec::new();
                    for s in list {
                        if s.get("type").is_some_and(|t| t == "null")
                            && s.as_object().map(Map::len) == Some(1)
                        {
                            nullable = true;
                        } else {
                            kept.push(to_openapi(s));
                        }
                    }
                    if !kept.is_empty() {
                        out.insert(key, Value::Array(kept));
                    }
                }
            }
            _ => {
                out.insert(key, value);
            }
        }
    }
    if nullable {
        out.insert("nullable".into(), Value::Bool(true));
    }
    // OpenAPI 3.0 ignores siblings of `$ref`; Kubernetes wraps the reference in `allOf` so a
    // field's own description (what `kubectl explain` prints) survives.
    if out.contains_key("$ref") && out.len() > 1 {
        if let Some(reference) = out.remove("$ref") {
            out.insert("allOf".into(), json!([{ "$ref": reference }]));
        }
    }
    out
}

/// Every definition name referenced (transitively) from `roots`.
pub(crate) fn closure<'a>(
    definitions: &'a BTreeMap<String, Value>,
    roots: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = roots.into_iter().map(str::to_string).collect();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = definitions.get(&name) {
            collect_refs(schema, &mut |target| {
                if !seen.contains(target) {
                    stack.push(target.to_string());
                }
            });
        }
    }
    seen
}

/// Calls `found` with the definition name of every `$ref` inside `value`.
pub(crate) fn collect_refs(value: &Value, found: &mut dyn FnMut(&str)) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    if let Some(name) = v.as_str().and_then(|s| s.strip_prefix(COMPONENTS)) {
                        found(name);
                    }
                } else {
                    collect_refs(v, found);
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| collect_refs(v, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_has_a_schema_with_its_gvk() {
        let cat = catalog();
        for r in RESOURCES {
            let name = cat
                .kind_definition(r.group, r.kind)
                .unwrap_or_else(|| panic!("no schema for {}", r.kind));
            let gvk = &cat.definitions[name]["x-kubernetes-group-version-kind"];
            assert_eq!(
                gvk,
                &json!([{"group": r.group, "kind": r.kind, "version": r.version}])
            );
            let list = &cat.definitions[&format!("{name}List")];
            assert_eq!(
                list["x-kubernetes-group-version-kind"][0]["kind"],
                r.list_kind()
            );
        }
        assert_eq!(
            cat.kind_definition("apps", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
    }

    #[test]
    fn refs_with_descriptions_become_all_of() {
        let spec = &catalog().definitions["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
        assert_eq!(
            spec["allOf"],
            json!([{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}])
        );
        assert!(spec["description"]
            .as_str()
            .unwrap()
            .starts_with("Specification"));
        assert!(spec.get("$ref").is_none());
    }

    #[test]
    fn metadata_is_required_only_on_events() {
        let defs = &catalog().definitions;
        assert!(defs["io.k8s.api.apps.v1.Deployment"]
            .get("required")
            .is_none());
        assert_eq!(
            defs["io.k8s.api.discovery.v1.EndpointSlice"]["required"],
            json!(["addressType", "endpoints"])
        );
        assert_eq!(
            defs[EVENT]["required"],
            json!(["involvedObject", "metadata"])
        );
    }

    #[test]
    fn int_or_string_and_quantity_use_kubernetes_shapes() {
        let defs = &catalog().definitions;
        let ios = &defs[INT_OR_STRING];
        assert_eq!(ios["x-kubernetes-int-or-string"], true);
        assert_eq!(ios["format"], "int-or-string");
        assert!(ios.get("type").is_none());
        let q = &defs[QUANTITY];
        assert_eq!(q["oneOf"], json!([{"type": "string"}, {"type": "number"}]));
    }

    #[test]
    fn conversion_handles_null_types_const_and_bool_schemas() {
        let converted = to_openapi(json!({
            "$schema": "x",
            "type": ["string", "null"],
            "properties": {
                "a": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]},
                "b": {"const": "x"},
                "c": true,
            },
        }));
        assert_eq!(
            converted,
            json!({
                "type": "string",
                "nullable": true,
                "properties": {
                    "a": {"anyOf": [{"$ref": "#/components/schemas/A"}], "nullable": true},
                    "b": {"enum": ["x"]},
                    "c": {},
                },
            })
        );
    }

    #[test]
    fn closure_follows_refs_transitively() {
        let defs = &catalog().definitions;
        let names = closure(defs, ["io.k8s.api.apps.v1.Deployment"]);
        for expected in [
            "io.k8s.api.core.v1.PodSpec",
            "io.k8s.api.core.v1.Container",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            INT_OR_STRING,
            QUANTITY,
        ] {
            assert!(names.contains(expected), "{expected}");
        }
        assert!(!names.contains("io.k8s.api.batch.v1.Job"));
    }
}
