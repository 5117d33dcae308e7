//! The downward API: `fieldRef` and `resourceFieldRef` values, shared by env and volumes
//! (Kubernetes' pkg/fieldpath and pkg/api/v1/resource).

use std::collections::BTreeMap;

use berth_api::Quantity;
use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use super::{PodFacts, PodSpecError};

fn field_err(message: String) -> PodSpecError {
    PodSpecError::FieldRef { message }
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (head, key) = inner.split_once("['")?;
    Some((head, key))
}

/// A `fieldRef` value. The `status.*` and `spec.nodeName` paths come from `facts` (the pod
/// object may not carry them yet when the container starts).
pub(crate) fn field_value(
    sel: &ObjectFieldSelector,
    pod: &Pod,
    facts: &PodFacts,
) -> Result<String, PodSpecError> {
    if let Some(v) = sel.api_version.as_deref() {
        if !v.is_empty() && v != "v1" {
            return Err(field_err(format!("unsupported pod version: {v}")));
        }
    }
    let path = sel.field_path.as_str();
    let spec = pod.spec.as_ref();
    let meta = &pod.metadata;
    match path {
        "spec.nodeName" => {
            let from_pod = spec.and_then(|s| s.node_name.clone()).unwrap_or_default();
            return Ok(if from_pod.is_empty() {
                facts.node_name.clone()
            } else {
                from_pod
            });
        }
        "spec.serviceAccountName" => {
            return Ok(spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default())
        }
        "status.hostIP" | "status.hostIPs" => return Ok(facts.host_ip.clone()),
        "status.podIP" | "status.podIPs" => return Ok(facts.pod_ip.clone().unwrap_or_default()),
        _ => {}
    }
    if let Some((head, key)) = split_subscript(path) {
        let map = match head {
            "metadata.annotations" => meta.annotations.as_ref(),
            "metadata.labels" => meta.labels.as_ref(),
            _ => {
                return Err(field_err(format!(
                    "fieldPath {path:?} does not support subscript"
                )))
            }
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        _ => return Err(field_err(format!("unsupported fieldPath: {path}"))),
    })
}

/// Kubernetes' `FormatMap`: `key="value"` lines in key order, values quoted as Go's `%q` does.
pub(crate) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let Some(map) = map else {
        return String::new();
    };
    let lines: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    lines.join("\n")
}

/// Go's `strconv.Quote` for valid UTF-8: printable characters as is, the usual escapes, `\x`,
/// `\u` and `\U` for the rest.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quantity(
    q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<Quantity, PodSpecError> {
    match q {
        None => Ok(Quantity::default()),
        Some(q) => Quantity::parse(&q.0)
            .map_err(|e| PodSpecError::invalid(format!("invalid quantity {:?}: {e}", q.0))),
    }
}

fn div_ceil(value: i128, divisor: i128) -> i128 {
    if divisor == 0 {
        return 0;
    }
    // Kubernetes divides as float64 and takes the ceiling; values here are integral, so
    // integer ceiling division gives the same result without rounding error.
    let q = value / divisor;
    if value % divisor != 0 && ((value > 0) == (divisor > 0)) {
        q + 1
    } else {
        q
    }
}

/// A `resourceFieldRef` value for `container`, whose unset limits are defaulted to the node's
/// allocatable (Kubernetes' `defaultPodLimitsForDownwardAPI`).
pub(crate) fn resource_value(
    sel: &ResourceFieldSelector,
    container: &Container,
    facts: &PodFacts,
) -> Result<String, PodSpecError> {
    let divisor = quantity(sel.divisor.as_ref())?;
    let divisor = if divisor.is_zero() {
        Quantity::from_int(1, Default::default())
    } else {
        divisor
    };
    let res = container.resources.as_ref();
    let (kind, name) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| field_err(format!("unsupported container resource : {}", sel.resource)))?;
    let list = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => None,
    };
    let set = list
        .and_then(|l| l.get(name))
        .map(|q| quantity(Some(q)))
        .transpose()?;
    let set = set.filter(|q| !q.is_zero());
    let node_default = |v: u64, milli: bool| {
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        if milli {
            Quantity::from_milli(v, Default::default())
        } else {
            Quantity::from_int(v, Default::default())
        }
    };
    let value = match (kind, name) {
        ("limits", "cpu") => {
            set.unwrap_or_else(|| node_default(facts.node_allocatable_cpu_millis, true))
        }
        ("limits", "memory") => {
            set.unwrap_or_else(|| node_default(facts.node_allocatable_memory, false))
        }
        ("limits", "ephemeral-storage") => {
            set.unwrap_or_else(|| node_default(facts.node_allocatable_ephemeral_storage, false))
        }
        ("requests", "cpu" | "memory" | "ephemeral-storage") => set.unwrap_or_default(),
        ("limits" | "requests", n) if n.starts_with("hugepages-") => set.unwrap_or_default(),
        _ => {
            return Err(field_err(format!(
                "unsupported container resource : {}",
                sel.resource
            )))
        }
    };
    let result = if name == "cpu" {
        div_ceil(value.as_milli(), divisor.as_milli())
    } else {
        div_ceil(value.as_value(), divisor.as_value())
    };
    Ok(result.to_string())
}

/// The container a `resourceFieldRef` names, or `own` when it names none.
pub(crate) fn resource_container<'a>(
    sel: &ResourceFieldSelector,
    pod: &'a Pod,
    own: Option<&'a Container>,
) -> Result<&'a Container, PodSpecError> {
    let name = sel.container_name.as_deref().unwrap_or("");
    if name.is_empty() {
        return own.ok_or_else(|| {
            field_err(format!(
                "resourceFieldRef {} needs a containerName",
                sel.resource
            ))
        });
    }
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| field_err(format!("container {name} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1",
                "labels": {"app": "web", "tier": "front\"end"},
                "annotations": {"note": "a\nb"}},
            "spec": {"serviceAccountName": "sa", "containers": [{"name": "c",
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                              "limits": {"memory": "128Mi"}}}]}
        }))
        .unwrap()
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: Some("10.0.0.5".into()),
            host_ip: "192.168.1.2".into(),
            node_name: "node-a".into(),
            node_allocatable_cpu_millis: 2000,
            node_allocatable_memory: 4 << 30,
            node_allocatable_ephemeral_storage: 10 << 30,
        }
    }

    fn field(path: &str) -> Result<String, PodSpecError> {
        let sel = ObjectFieldSelector {
            api_version: Some("v1".into()),
            field_path: path.into(),
        };
        field_value(&sel, &pod(), &facts())
    }

    #[test]
    fn field_paths() {
        assert_eq!(field("metadata.name").unwrap(), "web");
        assert_eq!(field("metadata.namespace").unwrap(), "ns1");
        assert_eq!(field("metadata.uid").unwrap(), "u-1");
        assert_eq!(field("metadata.labels['app']").unwrap(), "web");
        assert_eq!(field("metadata.labels['missing']").unwrap(), "");
        assert_eq!(field("metadata.annotations['note']").unwrap(), "a\nb");
        assert_eq!(field("spec.nodeName").unwrap(), "node-a");
        assert_eq!(field("spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(field("status.hostIP").unwrap(), "192.168.1.2");
        assert_eq!(field("status.podIP").unwrap(), "10.0.0.5");
        assert_eq!(field("status.podIPs").unwrap(), "10.0.0.5");
        assert_eq!(
            field("metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"front\\\"end\""
        );
        assert_eq!(field("metadata.annotations").unwrap(), "note=\"a\\nb\"");
        assert_eq!(
            field("spec.bogus").unwrap_err().to_string(),
            "unsupported fieldPath: spec.bogus"
        );
        assert_eq!(
            field("metadata.name['x']").unwrap_err().to_string(),
            "fieldPath \"metadata.name['x']\" does not support subscript"
        );
    }

    fn res(resource: &str, divisor: Option<&str>) -> Result<String, PodSpecError> {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let sel = ResourceFieldSelector {
            container_name: None,
            divisor: divisor
                .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
            resource: resource.into(),
        };
        resource_value(&sel, c, &facts())
    }

    #[test]
    fn resource_fields() {
        assert_eq!(res("requests.cpu", None).unwrap(), "1");
        assert_eq!(res("requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(
            res("requests.memory", None).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(res("requests.memory", Some("1Mi")).unwrap(), "64");
        assert_eq!(res("limits.memory", Some("1Mi")).unwrap(), "128");
        assert_eq!(res("requests.memory", Some("1M")).unwrap(), "68");
        // Unset limits default to the node's allocatable.
        assert_eq!(res("limits.cpu", None).unwrap(), "2");
        assert_eq!(res("limits.cpu", Some("1m")).unwrap(), "2000");
        assert_eq!(res("limits.ephemeral-storage", Some("1Gi")).unwrap(), "10");
        assert_eq!(res("requests.ephemeral-storage", None).unwrap(), "0");
        assert_eq!(
            res("limits.gpu", None).unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(go_quote("a\tb\u{1}é"), "\"a\\tb\\x01é\"");
    }
}
