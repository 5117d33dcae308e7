//! What strategic merge patch needs to know about each field: its type, its patch strategy and
//! its merge key.
//!
//! The type graph (which definition a field points to) comes from k8s-openapi's schemars schemas,
//! built once at first use. k8s-openapi's schemas carry no `x-kubernetes-patch-*` extensions, so
//! the strategies and merge keys come from [`PATCH_TABLE`], transcribed from the `patchStrategy` /
//! `patchMergeKey` struct tags in Kubernetes' `types.go` files.

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;

/// How a field is combined with the live value during a strategic merge patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The default: maps merge recursively, lists are replaced as a whole (atomic).
    Replace,
    /// `patchStrategy:"merge"`: list items are merged by merge key (or unioned, for primitives).
    Merge,
    /// `patchStrategy:"retainKeys"`: a map whose keys absent from `$retainKeys` are cleared.
    RetainKeys,
    /// `patchStrategy:"merge,retainKeys"`: a keyed list whose items honour `$retainKeys`.
    MergeRetainKeys,
}

impl Strategy {
    /// The value of the `x-kubernetes-patch-strategy` OpenAPI extension (`None` for the default).
    pub fn extension_value(self) -> Option<&'static str> {
        match self {
            Strategy::Replace => None,
            Strategy::Merge => Some("merge"),
            Strategy::RetainKeys => Some("retainKeys"),
            Strategy::MergeRetainKeys => Some("merge,retainKeys"),
        }
    }

    /// Whether lists under this strategy merge item by item instead of being replaced.
    pub fn merges_lists(self) -> bool {
        matches!(self, Strategy::Merge | Strategy::MergeRetainKeys)
    }
}

/// Patch metadata of one field of one OpenAPI definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldMeta {
    /// The definition of the field's type; for a list, of its items; for a map, of its values.
    pub child: Option<&'static str>,
    pub strategy: Strategy,
    pub merge_key: Option<&'static str>,
    /// The field is a map (`additionalProperties`) whose values are `child`, not a struct.
    pub map_values: bool,
}

/// (definition, field, strategy, merge key): every non-default field reachable from the served
/// kinds, from the `patchStrategy`/`patchMergeKey` tags of Kubernetes' types.
static PATCH_TABLE: &[(&str, &str, Strategy, Option<&str>)] = &[
    // meta/v1
    (META_OBJECT_META, "finalizers", Strategy::Merge, None),
    (
        META_OBJECT_META,
        "ownerReferences",
        Strategy::Merge,
        Some("uid"),
    ),
    // core/v1 PodSpec and containers
    (CORE_POD_SPEC, "containers", Strategy::Merge, Some("name")),
    (
        CORE_POD_SPEC,
        "initContainers",
        Strategy::Merge,
        Some("name"),
    ),
    (
        CORE_POD_SPEC,
        "ephemeralContainers",
        Strategy::Merge,
        Some("name"),
    ),
    (
        CORE_POD_SPEC,
        "volumes",
        Strategy::MergeRetainKeys,
        Some("name"),
    ),
    (
        CORE_POD_SPEC,
        "imagePullSecrets",
        Strategy::Merge,
        Some("name"),
    ),
    (CORE_POD_SPEC, "hostAliases", Strategy::Merge, Some("ip")),
    (
        CORE_POD_SPEC,
        "topologySpreadConstraints",
        Strategy::Merge,
        Some("topologyKey"),
    ),
    (
        CORE_POD_SPEC,
        "schedulingGates",
        Strategy::Merge,
        Some("name"),
    ),
    (
        CORE_POD_SPEC,
        "resourceClaims",
        Strategy::MergeRetainKeys,
        Some("name"),
    ),
    (
        CORE_CONTAINER,
        "ports",
        Strategy::Merge,
        Some("containerPort"),
    ),
    (CORE_CONTAINER, "env", Strategy::Merge, Some("name")),
    (
        CORE_CONTAINER,
        "volumeMounts",
        Strategy::Merge,
        Some("mountPath"),
    ),
    (
        CORE_CONTAINER,
        "volumeDevices",
        Strategy::Merge,
        Some("devicePath"),
    ),
    (
        CORE_EPHEMERAL,
        "ports",
        Strategy::Merge,
        Some("containerPort"),
    ),
    (CORE_EPHEMERAL, "env", Strategy::Merge, Some("name")),
    (
        CORE_EPHEMERAL,
        "volumeMounts",
        Strategy::Merge,
        Some("mountPath"),
    ),
    (
        CORE_EPHEMERAL,
        "volumeDevices",
        Strategy::Merge,
        Some("devicePath"),
    ),
    // core/v1 statuses
    (CORE_POD_STATUS, "conditions", Strategy::Merge, Some("type")),
    (CORE_POD_STATUS, "hostIPs", Strategy::Merge, Some("ip")),
    (CORE_POD_STATUS, "podIPs", Strategy::Merge, Some("ip")),
    (
        CORE_POD_STATUS,
        "resourceClaimStatuses",
        Strategy::MergeRetainKeys,
        Some("name"),
    ),
    (
        CORE_CONTAINER_STATUS,
        "volumeMounts",
        Strategy::Merge,
        Some("mountPath"),
    ),
    (
        CORE_CONTAINER_STATUS,
        "allocatedResourcesStatus",
        Strategy::Merge,
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeSpec",
        "podCIDRs",
        Strategy::Merge,
        None,
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        Strategy::Merge,
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        Strategy::Merge,
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        Strategy::Merge,
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
    // apps/v1
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        Strategy::RetainKeys,
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
    // batch/v1
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        Strategy::Merge,
        Some("type"),
    ),
];

const META_OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const CORE_POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const CORE_POD_STATUS: &str = "io.k8s.api.core.v1.PodStatus";
const CORE_CONTAINER: &str = "io.k8s.api.core.v1.Container";
const CORE_EPHEMERAL: &str = "io.k8s.api.core.v1.EphemeralContainer";
const CORE_CONTAINER_STATUS: &str = "io.k8s.api.core.v1.ContainerStatus";

/// Every (definition, field, strategy, merge key) with a non-default strategy, for the OpenAPI
/// generator's `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` extensions.
pub fn all_patch_meta(
) -> impl Iterator<Item = (&'static str, &'static str, Strategy, Option<&'static str>)> {
    PATCH_TABLE.iter().copied()
}

/// Patch metadata of `field` in the OpenAPI definition `definition`, or `None` when the
/// definition is unknown or has no such field.
pub fn field_meta(definition: &str, field: &str) -> Option<FieldMeta> {
    let graph = graph();
    let fields = graph.get(definition)?;
    fields.get(field).copied()
}

/// The OpenAPI definition name of a built-in kind, e.g. ("apps", "v1", "Deployment") →
/// `io.k8s.api.apps.v1.Deployment`; the core group ("") is `core`, and a group's first DNS label
/// names its package (`coordination.k8s.io` → `coordination`).
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let package = match group.split('.').next() {
        None | Some("") => "core",
        Some(first) => first,
    };
    format!("io.k8s.api.{package}.{version}.{kind}")
}

/// Whether `definition` is a known OpenAPI definition (a served kind or one reachable from it).
pub fn is_known_definition(definition: &str) -> bool {
    graph().contains_key(definition)
}

/// definition → field → metadata.
type Graph = HashMap<String, HashMap<String, FieldMeta>>;

fn graph() -> &'static Graph {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    GRAPH.get_or_init(build_graph)
}

fn build_graph() -> Graph {
    use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery};

    let mut generator = SchemaGenerator::default();
    // Only the side effect matters: each call registers the kind and everything it references.
    fn add<T: JsonSchema>(generator: &mut SchemaGenerator) {
        let _ = generator.subschema_for::<T>();
    }
    add::<core::v1::Namespace>(&mut generator);
    add::<core::v1::Pod>(&mut generator);
    add::<core::v1::Node>(&mut generator);
    add::<core::v1::Service>(&mut generator);
    add::<core::v1::Endpoints>(&mut generator);
    add::<core::v1::ConfigMap>(&mut generator);
    add::<core::v1::Secret>(&mut generator);
    add::<core::v1::ServiceAccount>(&mut generator);
    add::<core::v1::Event>(&mut generator);
    add::<core::v1::PersistentVolumeClaim>(&mut generator);
    add::<core::v1::PersistentVolume>(&mut generator);
    add::<apps::v1::Deployment>(&mut generator);
    add::<apps::v1::ReplicaSet>(&mut generator);
    add::<apps::v1::DaemonSet>(&mut generator);
    add::<apps::v1::StatefulSet>(&mut generator);
    add::<apps::v1::ControllerRevision>(&mut generator);
    add::<batch::v1::Job>(&mut generator);
    add::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(&mut generator);
    add::<coordination::v1::Lease>(&mut generator);
    add::<discovery::v1::EndpointSlice>(&mut generator);
    add::<autoscaling::v1::Scale>(&mut generator);

    // Built once per process: leaking its few hundred definition names (once each) gives
    // `FieldMeta` plain `&'static str`s.
    let mut names: HashMap<String, &'static str> = HashMap::new();
    let mut intern = |name: &str| -> &'static str {
        if let Some(n) = names.get(name) {
            return n;
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(name.to_owned(), leaked);
        leaked
    };

    let mut graph = Graph::new();
    for (definition, schema) in generator.definitions() {
        let mut fields = HashMap::new();
        if let Some(Value::Object(properties)) = schema.get("properties") {
            for (field, prop) in properties {
                let (child, map_values) = child_of(prop);
                fields.insert(
                    field.clone(),
                    FieldMeta {
                        child: child.map(&mut intern),
                        strategy: Strategy::Replace,
                        merge_key: None,
                        map_values,
                    },
                );
            }
        }
        graph.insert(definition.clone(), fields);
    }
    for &(definition, field, strategy, merge_key) in PATCH_TABLE {
        if let Some(meta) = graph.get_mut(definition).and_then(|f| f.get_mut(field)) {
            meta.strategy = strategy;
            meta.merge_key = merge_key;
        }
    }
    graph
}

/// The definition a property refers to, directly, through its items or through its map values.
fn child_of(prop: &Value) -> (Option<&str>, bool) {
    if let Some(name) = ref_name(prop) {
        return (Some(name), false);
    }
    if let Some(name) = prop.get("items").and_then(ref_name) {
        return (Some(name), false);
    }
    if let Some(name) = prop.get("additionalProperties").and_then(ref_name) {
        return (Some(name), true);
    }
    (None, false)
}

fn ref_name(schema: &Value) -> Option<&str> {
    let reference = schema.get("$ref")?.as_str()?;
    reference.rsplit('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_reaches_containers_by_name() {
        let spec = field_meta("io.k8s.api.apps.v1.Deployment", "spec").expect("spec");
        assert_eq!(spec.child, Some("io.k8s.api.apps.v1.DeploymentSpec"));
        assert_eq!(spec.strategy, Strategy::Replace);
        let template = field_meta("io.k8s.api.apps.v1.DeploymentSpec", "template").unwrap();
        assert_eq!(template.child, Some("io.k8s.api.core.v1.PodTemplateSpec"));
        let containers = field_meta(CORE_POD_SPEC, "containers").unwrap();
        assert_eq!(
            containers,
            FieldMeta {
                child: Some(CORE_CONTAINER),
                strategy: Strategy::Merge,
                merge_key: Some("name"),
                map_values: false,
            }
        );
    }

    #[test]
    fn strategies_and_keys_of_well_known_fields() {
        let cases = [
            (META_OBJECT_META, "finalizers", Strategy::Merge, None),
            (
                META_OBJECT_META,
                "ownerReferences",
                Strategy::Merge,
                Some("uid"),
            ),
            (
                CORE_POD_SPEC,
                "volumes",
                Strategy::MergeRetainKeys,
                Some("name"),
            ),
            (CORE_POD_SPEC, "tolerations", Strategy::Replace, None),
            (CORE_CONTAINER, "envFrom", Strategy::Replace, None),
            (CORE_CONTAINER, "args", Strategy::Replace, None),
            (
                "io.k8s.api.core.v1.NodeStatus",
                "addresses",
                Strategy::Merge,
                Some("type"),
            ),
            (
                "io.k8s.api.core.v1.ServiceSpec",
                "ports",
                Strategy::Merge,
                Some("port"),
            ),
            (
                "io.k8s.api.apps.v1.DeploymentSpec",
                "strategy",
                Strategy::RetainKeys,
                None,
            ),
            (
                "io.k8s.api.discovery.v1.EndpointSlice",
                "endpoints",
                Strategy::Replace,
                None,
            ),
        ];
        for (definition, field, strategy, key) in cases {
            let meta = field_meta(definition, field)
                .unwrap_or_else(|| panic!("{definition}.{field} missing"));
            assert_eq!(
                (meta.strategy, meta.merge_key),
                (strategy, key),
                "{definition}.{field}"
            );
        }
    }

    #[test]
    fn every_table_entry_names_a_real_field() {
        for (definition, field, strategy, _) in all_patch_meta() {
            let meta = field_meta(definition, field)
                .unwrap_or_else(|| panic!("{definition}.{field} not in the type graph"));
            assert_eq!(meta.strategy, strategy);
        }
    }

    #[test]
    fn every_served_kind_has_a_definition() {
        for r in crate::registry::resources::RESOURCES {
            let definition = definition_name(r.group, r.version, r.kind);
            assert!(is_known_definition(&definition), "{definition}");
        }
        assert_eq!(definition_name("", "v1", "Pod"), "io.k8s.api.core.v1.Pod");
        assert_eq!(
            definition_name("discovery.k8s.io", "v1", "EndpointSlice"),
            "io.k8s.api.discovery.v1.EndpointSlice"
        );
        assert!(is_known_definition(&definition_name(
            "autoscaling",
            "v1",
            "Scale"
        )));
    }

    #[test]
    fn maps_and_unknowns() {
        let labels = field_meta(META_OBJECT_META, "labels").unwrap();
        assert_eq!(labels.child, None);
        assert!(field_meta(META_OBJECT_META, "nope").is_none());
        assert!(field_meta("io.example.Nope", "spec").is_none());
        assert!(is_known_definition("io.k8s.api.coordination.v1.Lease"));
        assert!(is_known_definition(
            "io.k8s.api.core.v1.PersistentVolumeClaimStatus"
        ));
        assert_eq!(
            Strategy::MergeRetainKeys.extension_value(),
            Some("merge,retainKeys")
        );
    }
}
