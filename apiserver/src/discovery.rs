//! API discovery documents, as kubectl 1.32 reads them: the legacy form (`/api`, `/api/v1`,
//! `/apis`, `/apis/<group>/<version>`) and aggregated discovery (apidiscovery.k8s.io v2 and
//! v2beta1), where `/api` and `/apis` carry every resource in one response.
//!
//! All functions are pure over the resource table. client-go asks for aggregated discovery first
//! (`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...`) and
//! trusts the answer's `Content-Type`, not its body: an aggregated document served as plain
//! `application/json` is parsed as legacy and yields no resources. Responses vary on `Accept`.

use serde_json::{json, Map, Value};

use crate::registry::resources::{groups, ResourceInfo, Subresource, RESOURCES};

/// The content type of every legacy discovery document.
pub const LEGACY_CONTENT_TYPE: &str = "application/json";

/// Which apidiscovery.k8s.io version an aggregated document is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregatedVersion {
    V2,
    /// Deprecated in Kubernetes 1.30, still accepted by kubectl 1.32 (as a second choice).
    V2Beta1,
}

impl AggregatedVersion {
    fn name(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => "v2",
            AggregatedVersion::V2Beta1 => "v2beta1",
        }
    }

    /// The `Content-Type` the aggregated answer must carry for clients to read it as such.
    pub fn content_type(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            AggregatedVersion::V2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }
}

/// The form of discovery a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryFormat {
    Legacy,
    Aggregated(AggregatedVersion),
}

impl DiscoveryFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::Legacy => LEGACY_CONTENT_TYPE,
            DiscoveryFormat::Aggregated(v) => v.content_type(),
        }
    }
}

/// Picks the discovery form from an `Accept` header: the acceptable media range with the highest
/// `q` (ties: first listed) wins; anything that is not an aggregated-discovery media type means
/// legacy. An empty or unparsable header means legacy.
pub fn negotiate_discovery(accept: &str) -> DiscoveryFormat {
    let mut best: Option<(f32, DiscoveryFormat)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        let (mut q, mut g, mut v, mut r#as) = (1.0f32, None, None, None);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse().unwrap_or(0.0),
                "g" => g = Some(value),
                "v" => v = Some(value),
                "as" => r#as = Some(value),
                _ => {}
            }
        }
        let format = if g.is_none() && v.is_none() && r#as.is_none() {
            DiscoveryFormat::Legacy
        } else {
            let json = matches!(media.as_str(), "application/json" | "application/*" | "*/*");
            match (json, g, v, r#as) {
                (true, Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => {
                    DiscoveryFormat::Aggregated(AggregatedVersion::V2)
                }
                (
                    true,
                    Some("apidiscovery.k8s.io"),
                    Some("v2beta1"),
                    Some("APIGroupDiscoveryList"),
                ) => DiscoveryFormat::Aggregated(AggregatedVersion::V2Beta1),
                // Some other typed media type (e.g. `as=Table`): not one we serve here.
                _ => continue,
            }
        };
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, format));
        }
    }
    best.map_or(DiscoveryFormat::Legacy, |(_, f)| f)
}

fn verbs(r: &ResourceInfo) -> &'static [&'static str] {
    // Namespaces are deleted one by one (their finalizer empties them); Kubernetes serves no
    // deletecollection for them.
    if r.group.is_empty() && r.plural == "namespaces" {
        &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ]
    } else {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// What a subresource answers with, and what may be done to it.
struct SubInfo {
    /// (group, version, kind); the group and version are the parent's unless given.
    kind: (Option<&'static str>, Option<&'static str>, &'static str),
    verbs: &'static [&'static str],
}

fn sub_info(r: &ResourceInfo, sub: Subresource) -> SubInfo {
    match sub {
        Subresource::Status => SubInfo {
            kind: (None, None, r.kind),
            verbs: &["get", "patch", "update"],
        },
        Subresource::Scale => SubInfo {
            kind: (Some("autoscaling"), Some("v1"), "Scale"),
            verbs: &["get", "patch", "update"],
        },
        Subresource::Finalize => SubInfo {
            kind: (None, None, r.kind),
            verbs: &["update"],
        },
        Subresource::Binding => SubInfo {
            kind: (None, None, "Binding"),
            verbs: &["create"],
        },
        Subresource::Log => SubInfo {
            kind: (None, None, "Pod"),
            verbs: &["get"],
        },
        Subresource::Exec => SubInfo {
            kind: (None, None, "PodExecOptions"),
            verbs: &["create", "get"],
        },
        Subresource::Approval => SubInfo {
            kind: (None, None, r.kind),
            verbs: &["get", "patch", "update"],
        },
    }
}

/// A short, stable fingerprint of the storage version (`storageVersionHash`): 8 bytes of FNV-1a
/// over "<group>/<version>/<kind>", base64. Clients only compare it for equality.
fn storage_version_hash(r: &ResourceInfo) -> String {
    use base64::Engine;
    let text = format!("{}/{}/{}", r.group, r.version, r.kind);
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    base64::engine::general_purpose::STANDARD.encode(hash.to_be_bytes())
}

fn strings(list: &[&str]) -> Value {
    Value::Array(
        list.iter()
            .map(|s| Value::String((*s).to_string()))
            .collect(),
    )
}

/// The legacy `APIResource` entries of one resource: itself, then "<plural>/<sub>" entries.
fn legacy_resources(r: &ResourceInfo) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": strings(verbs(r)),
        "storageVersionHash": storage_version_hash(r),
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = strings(r.short_names);
    }
    if !r.categories.is_empty() {
        main["categories"] = strings(r.categories);
    }
    let mut out = vec![main];
    for sub in r.subresources {
        let info = sub_info(r, *sub);
        let mut entry = json!({
            "name": format!("{}/{}", r.plural, sub.name()),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": info.kind.2,
            "verbs": strings(info.verbs),
        });
        // Legacy discovery names a group and version only where they differ from the list's.
        if let (Some(g), Some(v)) = (info.kind.0, info.kind.1) {
            entry["group"] = g.into();
            entry["version"] = v.into();
        }
        out.push(entry);
    }
    out
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(legacy_resources)
        .collect();
    resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// `GET /api`: the core group's versions and where clients reach the server.
pub fn legacy_api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address},
        ],
    })
}

/// `GET /api/v1`.
pub fn legacy_core_resources() -> Value {
    resource_list("", "v1")
}

fn legacy_group_value(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `GET /apis`: every named group (the core group is at `/api`).
pub fn legacy_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| legacy_group_value(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`: one named group, or `None` when it is not served.
pub fn legacy_group(group: &str) -> Option<Value> {
    let (g, v) = groups()
        .into_iter()
        .find(|(g, _)| !g.is_empty() && *g == group)?;
    let mut value = legacy_group_value(g, v);
    value["kind"] = "APIGroup".into();
    value["apiVersion"] = "v1".into();
    Some(value)
}

/// `GET /apis/<group>/<version>` (and `/api/v1` for group ""), or `None` when not served.
pub fn legacy_group_resources(group: &str, version: &str) -> Option<Value> {
    if !groups().contains(&(group, version)) {
        return None;
    }
    Some(resource_list(group, version))
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut out = json!({
        "resource": r.plural,
        "responseKind": gvk(r.group, r.version, r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": strings(verbs(r)),
    });
    if !r.short_names.is_empty() {
        out["shortNames"] = strings(r.short_names);
    }
    if !r.categories.is_empty() {
        out["categories"] = strings(r.categories);
    }
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let info = sub_info(r, *sub);
            json!({
                "subresource": sub.name(),
                "responseKind": gvk(
                    info.kind.0.unwrap_or(r.group),
                    info.kind.1.unwrap_or(r.version),
                    info.kind.2,
                ),
                "verbs": strings(info.verbs),
            })
        })
        .collect();
    if !subs.is_empty() {
        out["subresources"] = Value::Array(subs);
    }
    out
}

fn aggregated_group(group: &str, version: &str) -> Value {
    let mut resources: Vec<&ResourceInfo> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    resources.sort_by_key(|r| r.plural);
    let mut metadata = Map::new();
    if !group.is_empty() {
        metadata.insert("name".into(), group.into());
    }
    metadata.insert("creationTimestamp".into(), Value::Null);
    json!({
        "metadata": metadata,
        "versions": [{
            "version": version,
            "resources": resources.into_iter().map(aggregated_resource).collect::<Vec<_>>(),
            "freshness": "Current",
        }],
    })
}

/// The aggregated discovery document: for `/api` (`core`) the core group, for `/apis` every
/// named group. Serve it with [`AggregatedVersion::content_type`].
pub fn aggregated(core: bool, version: AggregatedVersion) -> Value {
    let items: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, v)| aggregated_group(g, v))
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{}", version.name()),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    const V2B1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

    #[test]
    fn negotiation_follows_client_go_accept_header() {
        let kubectl = format!("{V2},{V2B1},application/json");
        assert_eq!(
            negotiate_discovery(&kubectl),
            DiscoveryFormat::Aggregated(AggregatedVersion::V2)
        );
        assert_eq!(
            negotiate_discovery(&format!("{V2B1},application/json")),
            DiscoveryFormat::Aggregated(AggregatedVersion::V2Beta1)
        );
        let nopeer = format!("{V2};profile=nopeer,{kubectl}");
        assert_eq!(
            negotiate_discovery(&nopeer),
            DiscoveryFormat::Aggregated(AggregatedVersion::V2)
        );
        assert_eq!(
            negotiate_discovery("application/json"),
            DiscoveryFormat::Legacy
        );
        assert_eq!(negotiate_discovery(""), DiscoveryFormat::Legacy);
        assert_eq!(negotiate_discovery("*/*"), DiscoveryFormat::Legacy);
        // Parameter order and spacing do not matter; q does.
        assert_eq!(
            negotiate_discovery(
                "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
            ),
            DiscoveryFormat::Aggregated(AggregatedVersion::V2)
        );
        assert_eq!(
            negotiate_discovery(&format!("{V2};q=0.5,application/json")),
            DiscoveryFormat::Legacy
        );
        assert_eq!(
            negotiate_discovery("application/json;as=Table;v=v1;g=meta.k8s.io"),
            DiscoveryFormat::Legacy
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            DiscoveryFormat::Aggregated(AggregatedVersion::V2).content_type(),
            V2
        );
        assert_eq!(AggregatedVersion::V2Beta1.content_type(), V2B1);
        assert_eq!(DiscoveryFormat::Legacy.content_type(), "application/json");
    }

    #[test]
    fn api_versions() {
        assert_eq!(
            legacy_api_versions("10.0.0.1:6443"),
            json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}
                ],
            })
        );
    }

    fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn core_resources_with_subresources() {
        let list = legacy_core_resources();
        assert_eq!(list["groupVersion"], "v1");
        let pods = find(&list, "pods");
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(
            pods["verbs"],
            json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ])
        );
        assert_eq!(
            find(&list, "pods/status")["verbs"],
            json!(["get", "patch", "update"])
        );
        assert_eq!(find(&list, "pods/binding")["verbs"], json!(["create"]));
        assert_eq!(find(&list, "pods/binding")["kind"], "Binding");
        // log and exec are proxied to the kubelet, with the kinds and verbs Kubernetes lists.
        assert_eq!(find(&list, "pods/log")["verbs"], json!(["get"]));
        assert_eq!(find(&list, "pods/log")["kind"], "Pod");
        assert_eq!(find(&list, "pods/exec")["verbs"], json!(["create", "get"]));
        assert_eq!(find(&list, "pods/exec")["kind"], "PodExecOptions");
        let ns = find(&list, "namespaces");
        assert_eq!(ns["namespaced"], false);
        assert!(ns.get("categories").is_none());
        assert!(!ns["verbs"]
            .as_array()
            .unwrap()
            .contains(&json!("deletecollection")));
        assert!(find(&list, "secrets").get("shortNames").is_none());
        // Every served core resource and subresource is listed once.
        let expected: usize = RESOURCES
            .iter()
            .filter(|r| r.group.is_empty())
            .map(|r| 1 + r.subresources.len())
            .sum();
        assert_eq!(list["resources"].as_array().unwrap().len(), expected);
    }

    #[test]
    fn scale_subresource_is_autoscaling_v1() {
        let apps = legacy_group_resources("apps", "v1").expect("apps/v1 served");
        assert_eq!(apps["groupVersion"], "apps/v1");
        let scale = find(&apps, "deployments/scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["version"], "v1");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["verbs"], json!(["get", "patch", "update"]));
        assert!(find(&apps, "deployments/status").get("group").is_none());
        assert_eq!(find(&apps, "deployments")["shortNames"], json!(["deploy"]));
        assert!(legacy_group_resources("apps", "v2").is_none());
        assert!(legacy_group_resources("nope", "v1").is_none());
    }

    #[test]
    fn group_list_has_named_groups_only() {
        let list = legacy_group_list();
        let names: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "batch",
                "certificates.k8s.io",
                "coordination.k8s.io",
                "discovery.k8s.io"
            ]
        );
        assert_eq!(
            list["groups"][0]["preferredVersion"],
            json!({"groupVersion": "apps/v1", "version": "v1"})
        );
        assert_eq!(legacy_group("batch").unwrap()["kind"], "APIGroup");
        assert!(legacy_group("").is_none());
    }

    #[test]
    fn aggregated_documents_cover_every_resource() {
        let core = aggregated(true, AggregatedVersion::V2);
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert!(core["items"][0]["metadata"].get("name").is_none());
        let apis = aggregated(false, AggregatedVersion::V2Beta1);
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        for r in RESOURCES {
            let doc = if r.group.is_empty() { &core } else { &apis };
            let group = doc["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["metadata"]["name"].as_str().unwrap_or("") == r.group)
                .unwrap_or_else(|| panic!("group {} missing", r.group));
            let version = &group["versions"][0];
            assert_eq!(version["version"], r.version);
            assert_eq!(version["freshness"], "Current");
            let res = version["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["resource"] == r.plural)
                .unwrap_or_else(|| panic!("{} missing", r.plural));
            assert_eq!(
                res["responseKind"],
                json!({"group": r.group, "version": r.version, "kind": r.kind})
            );
            assert_eq!(
                res["scope"],
                if r.namespaced {
                    "Namespaced"
                } else {
                    "Cluster"
                }
            );
            assert_eq!(res["singularResource"], r.singular);
            assert_eq!(
                res["shortNames"],
                if r.short_names.is_empty() {
                    Value::Null
                } else {
                    strings(r.short_names)
                }
            );
            let subs: Vec<&str> = res["subresources"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .map(|s| s["subresource"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            let expected: Vec<&str> = r.subresources.iter().map(|s| s.name()).collect();
            assert_eq!(subs, expected, "{}", r.plural);
        }
        let deploy = apis["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["resource"] == "deployments")
            .unwrap();
        assert_eq!(
            deploy["subresources"][1],
            json!({
                "subresource": "scale",
                "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                "verbs": ["get", "patch", "update"],
            })
        );
        assert_eq!(deploy["categories"], json!(["all"]));
    }
}
