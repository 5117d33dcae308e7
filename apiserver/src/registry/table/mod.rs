//! Server-side Table printing: what `kubectl get` shows.
//!
//! kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the
//! columns the server chooses, hiding those of priority > 0 unless `-o wide`. The columns, cell
//! values and their formats follow Kubernetes' `pkg/printers/internalversion` for each served
//! kind; like Kubernetes' table convertor, the server always fills the wide cells too. Cells are
//! computed from the stored JSON leniently: a missing field reads as Go's zero value, so a
//! printer never fails.

mod apps;
mod batch;
mod certificates;
mod coordination;
mod core;
mod discovery;
mod event;
mod format;
mod pod;
mod storage;

pub use format::human_duration;

use crate::status::ApiError;
use serde_json::{json, Map, Value};
use std::time::SystemTime;

/// `metav1.ObjectMeta` swagger doc of `name`: the NAME column's description.
const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// `metav1.ObjectMeta` swagger doc of `creationTimestamp`: the AGE column's description.
const CREATED_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

/// One column of a Table (`meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnDefinition {
    /// Human-readable name; kubectl upper-cases it for the header.
    pub name: &'static str,
    /// OpenAPI type of the cells: "string", "integer", "date", "boolean".
    pub type_: &'static str,
    /// "name" for the column holding the object's name, else "".
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: shown only with `-o wide`.
    pub priority: i32,
}

impl ColumnDefinition {
    const fn new(name: &'static str, type_: &'static str, description: &'static str) -> Self {
        ColumnDefinition {
            name,
            type_,
            format: "",
            description,
            priority: 0,
        }
    }

    const fn string(name: &'static str, description: &'static str) -> Self {
        Self::new(name, "string", description)
    }

    const fn integer(name: &'static str, description: &'static str) -> Self {
        Self::new(name, "integer", description)
    }

    /// The same column, shown only with `-o wide`.
    const fn wide(self) -> Self {
        ColumnDefinition {
            priority: 1,
            ..self
        }
    }

    /// The NAME column (format "name").
    const fn name() -> Self {
        ColumnDefinition {
            format: "name",
            ..Self::string("Name", NAME_DOC)
        }
    }

    const fn age() -> Self {
        Self::string("Age", CREATED_DOC)
    }

    const fn containers() -> Self {
        Self::string("Containers", CONTAINERS_DOC).wide()
    }

    const fn images() -> Self {
        Self::string("Images", IMAGES_DOC).wide()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// What each row carries besides its cells (the `includeObject` query parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object: `"object": null`.
    None,
    /// A `PartialObjectMetadata` holding the object's metadata. Kubernetes' default, and what
    /// plain `kubectl get` receives (it sends no `includeObject`).
    #[default]
    Metadata,
    /// The whole object (kubectl asks for this with `--sort-by`).
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter; empty means the default, Metadata.
    pub fn parse(value: &str) -> Result<Self, TableError> {
        match value {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "Object" => Ok(IncludeObject::Object),
            "None" => Ok(IncludeObject::None),
            other => Err(TableError::UnknownIncludeObject {
                value: other.to_string(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("unrecognized includeObject value: {value:?}")]
    UnknownIncludeObject { value: String },
}

impl From<TableError> for ApiError {
    fn from(e: TableError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// How to build a table beyond its rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    pub include_object: IncludeObject,
    /// Leave out the column definitions (`"columnDefinitions": null`). Kubernetes does this for
    /// every watch event after the first, so kubectl prints the header once.
    pub no_headers: bool,
}

/// One printed row: its cells and, for finished pods, a `Completed` row condition.
struct Row {
    cells: Vec<Value>,
    conditions: Vec<Value>,
}

impl Row {
    fn new(cells: Vec<Value>) -> Self {
        Row {
            cells,
            conditions: Vec::new(),
        }
    }
}

/// The columns Kubernetes prints for `kind`. A kind without a printer gets Kubernetes' default
/// table: Name and "Created At" (a date).
pub fn columns(kind: &str) -> Vec<ColumnDefinition> {
    match kind {
        "Pod" => pod::columns(),
        "Namespace" => core::namespace_columns(),
        "Node" => core::node_columns(),
        "Service" => core::service_columns(),
        "Endpoints" => core::endpoints_columns(),
        "ConfigMap" => core::config_map_columns(),
        "Secret" => core::secret_columns(),
        "ServiceAccount" => core::service_account_columns(),
        "Event" => event::event_columns(),
        "PersistentVolumeClaim" => storage::persistent_volume_claim_columns(),
        "PersistentVolume" => storage::persistent_volume_columns(),
        "Deployment" => apps::deployment_columns(),
        "ReplicaSet" => apps::replica_set_columns(),
        "DaemonSet" => apps::daemon_set_columns(),
        "StatefulSet" => apps::stateful_set_columns(),
        "ControllerRevision" => apps::controller_revision_columns(),
        "Job" => batch::job_columns(),
        "CertificateSigningRequest" => certificates::csr_columns(),
        "Lease" => coordination::lease_columns(),
        "EndpointSlice" => discovery::endpoint_slice_columns(),
        _ => vec![
            ColumnDefinition::name(),
            ColumnDefinition::new("Created At", "date", CREATED_DOC),
        ],
    }
}

fn row(kind: &str, obj: &Value, now: SystemTime) -> Row {
    let now = format::millis(now);
    match kind {
        "Pod" => pod::row(obj, now),
        "Namespace" => Row::new(core::namespace_cells(obj, now)),
        "Node" => Row::new(core::node_cells(obj, now)),
        "Service" => Row::new(core::service_cells(obj, now)),
        "Endpoints" => Row::new(core::endpoints_cells(obj, now)),
        "ConfigMap" => Row::new(core::config_map_cells(obj, now)),
        "Secret" => Row::new(core::secret_cells(obj, now)),
        "ServiceAccount" => Row::new(core::service_account_cells(obj, now)),
        "Event" => Row::new(event::event_cells(obj, now)),
        "PersistentVolumeClaim" => Row::new(storage::persistent_volume_claim_cells(obj, now)),
        "PersistentVolume" => Row::new(storage::persistent_volume_cells(obj, now)),
        "Deployment" => Row::new(apps::deployment_cells(obj, now)),
        "ReplicaSet" => Row::new(apps::replica_set_cells(obj, now)),
        "DaemonSet" => Row::new(apps::daemon_set_cells(obj, now)),
        "StatefulSet" => Row::new(apps::stateful_set_cells(obj, now)),
        "ControllerRevision" => Row::new(apps::controller_revision_cells(obj, now)),
        "Job" => Row::new(batch::job_cells(obj, now)),
        "CertificateSigningRequest" => Row::new(certificates::csr_cells(obj, now)),
        "Lease" => Row::new(coordination::lease_cells(obj, now)),
        "EndpointSlice" => Row::new(discovery::endpoint_slice_cells(obj, now)),
        _ => Row::new(default_cells(obj)),
    }
}

/// The cells of one object, one per entry of [`columns`] (wide ones included).
pub fn row_cells(kind: &str, obj: &Value, now: SystemTime) -> Vec<Value> {
    row(kind, obj, now).cells
}

/// Kubernetes' default table cells: the name and the creation time in RFC 3339, UTC, seconds.
fn default_cells(obj: &Value) -> Vec<Value> {
    let name = format::str_at(obj, &["metadata", "name"]);
    let created = format::time_at(obj, &["metadata", "creationTimestamp"])
        .and_then(|ms| time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok())
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![json!(name), json!(created)]
}

/// The `PartialObjectMetadata` Kubernetes puts in a row for `includeObject=Metadata`.
fn partial_metadata(obj: &Value) -> Value {
    let metadata = match obj.get("metadata") {
        Some(m @ Value::Object(_)) => m.clone(),
        _ => Value::Object(Map::new()),
    };
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    })
}

/// A whole `meta.k8s.io/v1` Table of `objects` (all of kind `kind`), with `list_meta` as its
/// metadata (`resourceVersion`, `continue`, `remainingItemCount`; for a single GET, the object's
/// resourceVersion), with the default options but `include_object`.
pub fn build_table(
    kind: &str,
    objects: &[&Value],
    include_object: IncludeObject,
    list_meta: Value,
    now: SystemTime,
) -> Value {
    let options = TableOptions {
        include_object,
        no_headers: false,
    };
    build_table_with(kind, objects, options, list_meta, now)
}

/// [`build_table`] with every option.
pub fn build_table_with(
    kind: &str,
    objects: &[&Value],
    options: TableOptions,
    list_meta: Value,
    now: SystemTime,
) -> Value {
    let column_definitions = if options.no_headers {
        Value::Null
    } else {
        Value::Array(
            columns(kind)
                .iter()
                .map(ColumnDefinition::to_json)
                .collect(),
        )
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let Row { cells, conditions } = row(kind, obj, now);
            let object = match options.include_object {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => partial_metadata(obj),
                IncludeObject::Object => (*obj).clone(),
            };
            let mut r = Map::new();
            r.insert("cells".into(), Value::Array(cells));
            if !conditions.is_empty() {
                r.insert("conditions".into(), Value::Array(conditions));
            }
            r.insert("object".into(), object);
            Value::Object(r)
        })
        .collect();
    // ListMeta's fields are all omitempty.
    let metadata = match list_meta {
        Value::Object(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null() && v.as_str() != Some(""))
            .collect(),
        _ => Map::new(),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": Value::Object(metadata),
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn now() -> SystemTime {
        // 2024-05-01T12:00:00Z
        UNIX_EPOCH + Duration::from_secs(1_714_564_800)
    }

    fn lease(name: &str, rv: &str) -> Value {
        json!({
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {"name": name, "namespace": "kube-node-lease", "resourceVersion": rv,
                         "uid": "u-1", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"holderIdentity": name}
        })
    }

    #[test]
    fn whole_table_with_metadata_rows() {
        let a = lease("node-a", "41");
        let b = lease("node-b", "42");
        let table = build_table(
            "Lease",
            &[&a, &b],
            IncludeObject::Metadata,
            json!({"resourceVersion": "42", "continue": "tok"}),
            now(),
        );
        let want = json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "42", "continue": "tok"},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": NAME_DOC,
                 "priority": 0},
                {"name": "Holder", "type": "string", "format": "",
                 "description": columns("Lease")[1].description, "priority": 0},
                {"name": "Age", "type": "string", "format": "", "description": CREATED_DOC,
                 "priority": 0}
            ],
            "rows": [
                {"cells": ["node-a", "node-a", "60s"],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": a["metadata"].clone()}},
                {"cells": ["node-b", "node-b", "60s"],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": b["metadata"].clone()}}
            ]
        });
        assert_eq!(table, want);
    }

    #[test]
    fn include_object_variants_and_no_headers() {
        let a = lease("node-a", "7");
        let full = build_table(
            "Lease",
            &[&a],
            IncludeObject::Object,
            json!({"resourceVersion": "", "continue": "", "remainingItemCount": null}),
            now(),
        );
        assert_eq!(full["rows"][0]["object"], a);
        assert_eq!(full["metadata"], json!({}));

        let none = build_table_with(
            "Lease",
            &[&a],
            TableOptions {
                include_object: IncludeObject::None,
                no_headers: true,
            },
            Value::Null,
            now(),
        );
        assert_eq!(
            none,
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
                   "columnDefinitions": null,
                   "rows": [{"cells": ["node-a", "node-a", "60s"], "object": null}]})
        );

        let empty = build_table("Pod", &[], IncludeObject::Metadata, json!({}), now());
        assert_eq!(empty["rows"], json!([]));
        assert_eq!(empty["columnDefinitions"].as_array().map(Vec::len), Some(9));
    }

    #[test]
    fn include_object_parsing() {
        assert_eq!(IncludeObject::parse(""), Ok(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::parse("Metadata"),
            Ok(IncludeObject::Metadata)
        );
        assert_eq!(IncludeObject::parse("Object"), Ok(IncludeObject::Object));
        assert_eq!(IncludeObject::parse("None"), Ok(IncludeObject::None));
        let err = IncludeObject::parse("object").expect_err("case matters");
        assert_eq!(
            err.to_string(),
            "unrecognized includeObject value: \"object\""
        );
        let api: ApiError = err.into();
        assert_eq!(api.to_status()["code"], json!(400));
        assert_eq!(api.to_status()["reason"], json!("BadRequest"));
    }

    #[test]
    fn finished_pod_rows_carry_a_completed_condition() {
        let pod = json!({"metadata": {"name": "job-x"}, "spec": {"containers": [{"name": "c"}]},
                         "status": {"phase": "Succeeded"}});
        let table = build_table("Pod", &[&pod], IncludeObject::None, json!({}), now());
        assert_eq!(
            table["rows"][0]["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                    "message": "The pod has completed successfully."}])
        );
    }

    #[test]
    fn every_kind_has_a_cell_per_column_and_wide_columns_after_name() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        for info in crate::registry::RESOURCES {
            let cols = columns(info.kind);
            let cells = row_cells(info.kind, &obj, now());
            assert_eq!(cols.len(), cells.len(), "{}", info.kind);
            let names: Vec<_> = cols.iter().filter(|c| c.format == "name").collect();
            assert_eq!(names.len(), 1, "{} has one name column", info.kind);
            assert_eq!(names[0].name, "Name");
            if info.kind != "Event" {
                assert_eq!(cols[0].format, "name", "{}", info.kind);
                assert_eq!(cells[0], json!("x"), "{}", info.kind);
            }
        }
        assert_eq!(row_cells("Event", &obj, now())[9], json!("x"));
    }

    #[test]
    fn wide_priorities_match_kubernetes() {
        let wide = |kind: &str| -> Vec<&str> {
            columns(kind)
                .into_iter()
                .filter(|c| c.priority == 1)
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(
            wide("Pod"),
            ["IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        assert_eq!(
            wide("Node"),
            [
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(wide("Service"), ["Selector"]);
        assert_eq!(wide("Deployment"), ["Containers", "Images", "Selector"]);
        assert_eq!(wide("StatefulSet"), ["Containers", "Images"]);
        assert_eq!(
            wide("Event"),
            ["Subobject", "Source", "First Seen", "Count", "Name"]
        );
        assert!(wide("ConfigMap").is_empty());
        let types: Vec<_> = columns("ReplicaSet").iter().map(|c| c.type_).collect();
        assert_eq!(
            types,
            ["string", "integer", "integer", "integer", "string", "string", "string", "string"]
        );
    }

    #[test]
    fn unknown_kind_gets_the_default_table() {
        let obj = json!({"metadata": {"name": "admin",
                                      "creationTimestamp": "2024-04-30T08:15:00Z"}});
        let cols = columns("ClusterRole");
        assert_eq!(
            cols.iter().map(|c| (c.name, c.type_)).collect::<Vec<_>>(),
            [("Name", "string"), ("Created At", "date")]
        );
        assert_eq!(
            row_cells("ClusterRole", &obj, now()),
            vec![json!("admin"), json!("2024-04-30T08:15:00Z")]
        );
        assert_eq!(
            row_cells("ClusterRole", &json!({}), now()),
            vec![json!(""), json!("0001-01-01T00:00:00Z")]
        );
    }
}
