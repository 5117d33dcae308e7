//! The `paths` object of a group-version document: one entry per endpoint, with the operation
//! extensions kubectl keys on.
//!
//! kubectl reads three things here: `x-kubernetes-group-version-kind` on an operation (to find
//! the schema `explain` prints), the `fieldValidation` parameter on the PATCH operation of a kind
//! (to decide that the server validates, rather than validating client-side), and the
//! `application/strategic-merge-patch+json` body of that PATCH (to compute `apply` patches from
//! this document). It takes the first PATCH operation with the kind's GVK it finds, in map order,
//! so every PATCH (the main resource's and `/status`) carries all three.

use serde_json::{json, Map, Value};

use super::schemas::{BINDING, COMPONENTS, DELETE_OPTIONS, PATCH, SCALE, STATUS};
use crate::registry::resources::{ResourceInfo, Subresource};

/// "/api/v1" or "/apis/<group>/<version>".
pub(crate) fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// "CoreV1", "AppsV1", "CoordinationV1": the operationId infix Kubernetes uses.
fn id_infix(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    let mut out: String = group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect();
    out.push_str(&capitalize(version));
    out
}

fn tag(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    format!(
        "{}_{version}",
        group.trim_end_matches(".k8s.io").replace('.', "_")
    )
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn schema_ref(definition: &str) -> Value {
    json!({"$ref": format!("{COMPONENTS}{definition}")})
}

fn param(name: &str, location: &str, description: &str, kind: &str) -> Value {
    let mut p = json!({
        "name": name,
        "in": location,
        "description": description,
        "schema": {"type": kind, "uniqueItems": true},
    });
    if location == "path" {
        p["required"] = Value::Bool(true);
    }
    p
}

fn path_params(namespaced: bool, named: bool) -> Vec<Value> {
    let mut out = Vec::new();
    if named {
        out.push(param("name", "path", "name of the resource", "string"));
    }
    if namespaced {
        out.push(param(
            "namespace",
            "path",
            "object name and auth scope, such as for teams and projects",
            "string",
        ));
    }
    out.push(param(
        "pretty",
        "query",
        "If 'true', then the output is pretty printed.",
        "string",
    ));
    out
}

const DRY_RUN: &str = "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed";
const FIELD_MANAGER: &str = "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.";
const FIELD_VALIDATION: &str = "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.";

/// dryRun, fieldManager, fieldValidation: the parameters of every write with a body.
fn write_params() -> Vec<Value> {
    vec![
        param("dryRun", "query", DRY_RUN, "string"),
        param("fieldManager", "query", FIELD_MANAGER, "string"),
        param("fieldValidation", "query", FIELD_VALIDATION, "string"),
    ]
}

fn patch_params() -> Vec<Value> {
    let mut out = write_params();
    out.push(param(
        "force",
        "query",
        "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        "boolean",
    ));
    out
}

fn delete_params() -> Vec<Value> {
    vec![
        param("dryRun", "query", DRY_RUN, "string"),
        param("gracePeriodSeconds", "query", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used.", "integer"),
        param("orphanDependents", "query", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned.", "boolean"),
        param("propagationPolicy", "query", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. Acceptable values are: 'Orphan', 'Background', 'Foreground'.", "string"),
    ]
}

fn list_params() -> Vec<Value> {
    let p = |name, desc, kind| param(name, "query", desc, kind);
    vec![
        p("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\".", "boolean"),
        p("continue", "The continue option should be set when retrieving more results from the server.", "string"),
        p("fieldSelector", "A selector to restrict the list of returned objects by their fields. Defaults to everything.", "string"),
        p("labelSelector", "A selector to restrict the list of returned objects by their labels. Defaults to everything.", "string"),
        p("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
        p("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from.", "string"),
        p("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to list calls.", "string"),
        p("sendInitialEvents", "`sendInitialEvents=true` may be set together with `watch=true`: the watch stream begins with synthetic events for the current state of the collection.", "boolean"),
        p("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
        p("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.", "boolean"),
    ]
}

fn content(media_types: &[&str], schema: &Value) -> Value {
    let mut map = Map::new();
    for m in media_types {
        map.insert((*m).to_string(), json!({"schema": schema}));
    }
    Value::Object(map)
}

fn responses(codes: &[(&str, &str)], media_types: &[&str], schema: &Value) -> Value {
    let mut map = Map::new();
    for (code, description) in codes {
        map.insert(
            (*code).to_string(),
            json!({"description": description, "content": content(media_types, schema)}),
        );
    }
    map.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(map)
}

const JSON: &[&str] = &["application/json", "application/yaml"];
const OK: &[(&str, &str)] = &[("200", "OK")];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// One operation: who it is for (GVK), what it does (action), and its wire shapes.
struct Op<'a> {
    method: &'a str,
    id: String,
    description: String,
    action: &'a str,
    gvk: (&'a str, &'a str, &'a str),
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Op<'_> {
    fn into_value(self, tag: &str) -> (String, Value) {
        let mut op = json!({
            "tags": [tag],
            "description": self.description,
            "operationId": self.id,
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": {
                "group": self.gvk.0, "version": self.gvk.1, "kind": self.gvk.2,
            },
        });
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some(body) = self.body {
            op["requestBody"] = body;
        }
        (self.method.to_string(), op)
    }
}

fn body(media_types: &[&str], definition: &str) -> Value {
    json!({"content": content(media_types, &schema_ref(definition)), "required": true})
}

/// Adds every path of one resource (collection, item, subresources) to `paths`.
pub(crate) fn add_resource_paths(paths: &mut Map<String, Value>, r: &ResourceInfo, kind_def: &str) {
    let base = prefix(r.group, r.version);
    let infix = id_infix(r.group, r.version);
    let tag = tag(r.group, r.version);
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let gvk = (r.group, r.version, r.kind);
    let kind_schema = schema_ref(kind_def);
    let list_schema = schema_ref(&format!("{kind_def}List"));
    let kind = r.kind;

    let list_op = |id: String| Op {
        method: "get",
        id,
        description: format!("list or watch objects of kind {kind}"),
        action: "list",
        gvk,
        params: list_params(),
        body: None,
        responses: responses(
            OK,
            &[
                "application/json",
                "application/yaml",
                "application/json;stream=watch",
            ],
            &list_schema,
        ),
    };

    let mut ops = vec![
        list_op(format!("list{infix}{scope}{kind}")),
        Op {
            method: "post",
            id: format!("create{infix}{scope}{kind}"),
            description: format!("create a {kind}"),
            action: "post",
            gvk,
            params: write_params(),
            body: Some(body(&["*/*"], kind_def)),
            responses: responses(
                &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                JSON,
                &kind_schema,
            ),
        },
        Op {
            method: "delete",
            id: format!("delete{infix}Collection{scope}{kind}"),
            description: format!("delete collection of {kind}"),
            action: "deletecollection",
            gvk,
            params: [delete_params(), list_params()].concat(),
            body: Some(body(&["*/*"], DELETE_OPTIONS)),
            responses: responses(OK, JSON, &schema_ref(STATUS)),
        },
    ];
    insert_path(
        paths,
        &collection,
        path_params(r.namespaced, false),
        ops.drain(..),
        &tag,
    );

    let item_ops = vec![
        Op {
            method: "get",
            id: format!("read{infix}{scope}{kind}"),
            description: format!("read the specified {kind}"),
            action: "get",
            gvk,
            params: Vec::new(),
            body: None,
            responses: responses(OK, JSON, &kind_schema),
        },
        replace_op(
            format!("replace{infix}{scope}{kind}"),
            kind,
            "",
            gvk,
            kind_def,
        ),
        patch_op(
            format!("patch{infix}{scope}{kind}"),
            kind,
            "",
            gvk,
            kind_def,
        ),
        Op {
            method: "delete",
            id: format!("delete{infix}{scope}{kind}"),
            description: format!("delete a {kind}"),
            action: "delete",
            gvk,
            params: delete_params(),
            body: Some(body(&["*/*"], DELETE_OPTIONS)),
            responses: responses(&[("200", "OK"), ("202", "Accepted")], JSON, &kind_schema),
        },
    ];
    insert_path(
        paths,
        &item,
        path_params(r.namespaced, true),
        item_ops.into_iter(),
        &tag,
    );

    if r.namespaced {
        let all = format!("{base}/{}", r.plural);
        let ops = vec![list_op(format!("list{infix}{kind}ForAllNamespaces"))];
        insert_path(
            paths,
            &all,
            path_params(false, false),
            ops.into_iter(),
            &tag,
        );
    }

    for sub in r.subresources {
        let path = format!("{item}/{}", sub.name());
        let suffix = capitalize(sub.name());
        let id = |verb: &str| format!("{verb}{infix}{scope}{kind}{suffix}");
        let ops = match sub {
            Subresource::Status => vec![
                read_op(id("read"), kind, "status", gvk, kind_def),
                replace_op(id("replace"), kind, "status", gvk, kind_def),
                patch_op(id("patch"), kind, "status", gvk, kind_def),
            ],
            Subresource::Approval => vec![
                read_op(id("read"), kind, "approval", gvk, kind_def),
                replace_op(id("replace"), kind, "approval", gvk, kind_def),
                patch_op(id("patch"), kind, "approval", gvk, kind_def),
            ],
            Subresource::Finalize => {
                vec![replace_op(id("replace"), kind, "finalize", gvk, kind_def)]
            }
            Subresource::Scale => {
                let scale = ("autoscaling", "v1", "Scale");
                vec![
                    read_op(id("read"), kind, "scale", scale, SCALE),
                    replace_op(id("replace"), kind, "scale", scale, SCALE),
                    patch_op(id("patch"), kind, "scale", scale, SCALE),
                ]
            }
            Subresource::Binding => vec![Op {
                method: "post",
                id: id("create"),
                description: format!("create binding of a {kind}"),
                action: "post",
                gvk: ("", "v1", "Binding"),
                params: write_params(),
                body: Some(body(&["*/*"], BINDING)),
                responses: responses(
                    &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                    JSON,
                    &schema_ref(BINDING),
                ),
            }],
            Subresource::Log => vec![Op {
                method: "get",
                id: id("read"),
                description: format!("read log of the specified {kind}"),
                action: "get",
                gvk,
                params: log_params(),
                body: None,
                responses: responses(OK, &["text/plain"], &json!({"type": "string"})),
            }],
            Subresource::Exec => ["get", "post"]
                .into_iter()
                .map(|method| Op {
                    method,
                    id: format!("connect{infix}{}{scope}{kind}Exec", capitalize(method)),
                    description: format!(
                        "connect {} requests to exec of {kind}",
                        method.to_uppercase()
                    ),
                    action: "connect",
                    gvk: (r.group, r.version, "PodExecOptions"),
                    params: exec_params(),
                    body: None,
                    responses: responses(OK, &["*/*"], &json!({"type": "string"})),
                })
                .collect(),
        };
        insert_path(
            paths,
            &path,
            path_params(r.namespaced, true),
            ops.into_iter(),
            &tag,
        );
    }
}

fn read_op<'a>(
    id: String,
    kind: &str,
    sub: &str,
    gvk: (&'a str, &'a str, &'a str),
    def: &str,
) -> Op<'a> {
    Op {
        method: "get",
        id,
        description: format!("read {sub} of the specified {kind}"),
        action: "get",
        gvk,
        params: Vec::new(),
        body: None,
        responses: responses(OK, JSON, &schema_ref(def)),
    }
}

fn replace_op<'a>(
    id: String,
    kind: &str,
    sub: &str,
    gvk: (&'a str, &'a str, &'a str),
    def: &str,
) -> Op<'a> {
    let what = if sub.is_empty() {
        String::new()
    } else {
        format!("{sub} of ")
    };
    Op {
        method: "put",
        id,
        description: format!("replace {what}the specified {kind}"),
        action: "put",
        gvk,
        params: write_params(),
        body: Some(body(&["*/*"], def)),
        responses: responses(&[("200", "OK"), ("201", "Created")], JSON, &schema_ref(def)),
    }
}

fn patch_op<'a>(
    id: String,
    kind: &str,
    sub: &str,
    gvk: (&'a str, &'a str, &'a str),
    def: &str,
) -> Op<'a> {
    let what = if sub.is_empty() {
        String::new()
    } else {
        format!("{sub} of ")
    };
    Op {
        method: "patch",
        id,
        description: format!("partially update {what}the specified {kind}"),
        action: "patch",
        gvk,
        params: patch_params(),
        body: Some(body(PATCH_TYPES, PATCH)),
        responses: responses(&[("200", "OK"), ("201", "Created")], JSON, &schema_ref(def)),
    }
}

fn log_params() -> Vec<Value> {
    let p = |name, desc, kind| param(name, "query", desc, kind);
    vec![
        p("container", "The container for which to stream logs. Defaults to only container if there is one container in the pod.", "string"),
        p("follow", "Follow the log stream of the pod. Defaults to false.", "boolean"),
        p("limitBytes", "If set, the number of bytes to read from the server before terminating the log output.", "integer"),
        p("previous", "Return previous terminated container logs. Defaults to false.", "boolean"),
        p("sinceSeconds", "A relative time in seconds before the current time from which to show logs.", "integer"),
        p("tailLines", "If set, the number of lines from the end of the logs to show.", "integer"),
        p("timestamps", "If true, add an RFC3339 timestamp at the beginning of every line of log output.", "boolean"),
    ]
}

fn exec_params() -> Vec<Value> {
    let p = |name, desc, kind| param(name, "query", desc, kind);
    vec![
        p("command", "Command is the remote command to execute. argv array. Not executed within a shell.", "string"),
        p("container", "Container in which to execute the command. Defaults to only container if there is only one container in the pod.", "string"),
        p("stderr", "Redirect the standard error stream of the pod for this call.", "boolean"),
        p("stdin", "Redirect the standard input stream of the pod for this call. Defaults to false.", "boolean"),
        p("stdout", "Redirect the standard output stream of the pod for this call.", "boolean"),
        p("tty", "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false.", "boolean"),
    ]
}

fn insert_path<'a>(
    paths: &mut Map<String, Value>,
    path: &str,
    params: Vec<Value>,
    ops: impl Iterator<Item = Op<'a>>,
    tag: &str,
) {
    let mut item = Map::new();
    for op in ops {
        let (method, value) = op.into_value(tag);
        item.insert(method, value);
    }
    item.insert("parameters".into(), Value::Array(params));
    paths.insert(path.to_string(), Value::Object(item));
}

/// `GET /apis/<group>/<version>/`: the APIResourceList of the group-version.
pub(crate) fn add_root_path(
    paths: &mut Map<String, Value>,
    group: &str,
    version: &str,
    resource_list: &str,
) {
    let infix = id_infix(group, version);
    paths.insert(
        format!("{}/", prefix(group, version)),
        json!({
            "get": {
                "tags": [tag(group, version)],
                "description": "get available resources",
                "operationId": format!("get{infix}APIResources"),
                "responses": responses(OK, JSON, &schema_ref(resource_list)),
            }
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_follow_kubernetes_naming() {
        assert_eq!(id_infix("", "v1"), "CoreV1");
        assert_eq!(id_infix("apps", "v1"), "AppsV1");
        assert_eq!(id_infix("coordination.k8s.io", "v1"), "CoordinationV1");
        assert_eq!(
            id_infix("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(tag("discovery.k8s.io", "v1"), "discovery_v1");
        assert_eq!(tag("", "v1"), "core_v1");
    }

    #[test]
    fn path_parameters_are_required() {
        let params = path_params(true, true);
        assert_eq!(params[0]["name"], "name");
        assert_eq!(params[0]["required"], true);
        assert_eq!(params[1]["name"], "namespace");
        assert_eq!(params[2]["name"], "pretty");
        assert!(params[2].get("required").is_none());
    }
}
