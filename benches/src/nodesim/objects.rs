//! The JSON the simulator sends: Node objects and their status, Leases and their renewals, and a
//! started pod's status. Pure functions of their inputs (times are passed in), so every field can
//! be checked in unit tests.

use std::collections::BTreeMap;

use berth_api::well_known::labels;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

/// Namespace that node heartbeat Leases live in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The kubelet's port, reported in `status.daemonEndpoints` (nothing listens on it).
const KUBELET_PORT: u16 = 10250;
/// The largest node index whose addresses fit the fake ranges below.
pub const MAX_NODES: usize = 40_000;

/// What every simulated node reports, apart from its name and index.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeShape {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    /// Extra labels on top of hostname, os, arch and zone.
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`, each `{"key", "value"?, "effect"}`.
    pub taints: Vec<Value>,
    /// Zones the nodes are spread over round-robin (`zone-0` …).
    pub zones: usize,
    pub kubelet_version: String,
}

/// The node's InternalIP: `10.255.x.y` from index + 1, never contacted.
pub fn node_ip(index: usize) -> String {
    let n = index + 1;
    format!("10.255.{}.{}", (n >> 8) & 0xff, n & 0xff)
}

/// The `host`-th address (1..=254) of the node's fake pod range `10.(64 + i/256).(i%256).0/24`.
pub fn pod_ip(index: usize, host: u8) -> String {
    format!("10.{}.{}.{host}", 64 + index / 256, index % 256)
}

pub use berth_api::time::{format_micro_time as micro_time, format_time as rfc3339};

/// The Node object to create (status follows through the status subresource).
pub fn node(name: &str, index: usize, shape: &NodeShape) -> Value {
    let mut node_labels = shape.labels.clone();
    node_labels.insert(labels::HOSTNAME.into(), name.into());
    node_labels.insert(labels::OS.into(), "linux".into());
    node_labels.insert(labels::ARCH.into(), "amd64".into());
    node_labels.insert(
        labels::TOPOLOGY_ZONE.into(),
        format!("zone-{}", index % shape.zones.max(1)),
    );
    let mut spec = json!({});
    if !shape.taints.is_empty() {
        spec["taints"] = json!(shape.taints);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels},
        "spec": spec,
    })
}

/// The node's conditions as a healthy kubelet posts them, all stamped `now`.
pub fn node_conditions(now: &str) -> Value {
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    json!([
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

/// The merge patch for `nodes/<name>/status`: capacity, conditions, addresses, node info.
pub fn node_status(name: &str, index: usize, shape: &NodeShape, now: &str) -> Value {
    let resources = json!({
        "cpu": shape.cpu,
        "memory": shape.memory,
        "pods": shape.pods.to_string(),
        "ephemeral-storage": shape.ephemeral_storage,
    });
    // Stable per node, so a restarted simulator reports the same machine.
    let machine = format!("{:032x}", 0x5151_0000_u128 + index as u128);
    json!({
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": node_conditions(now),
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index)},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "nodeInfo": {
                "machineID": machine,
                "systemUUID": machine,
                "bootID": machine,
                "kernelVersion": "6.0.0-sim",
                "osImage": "Berth simulated node",
                "containerRuntimeVersion": "sim://0.1.0",
                "kubeletVersion": shape.kubelet_version,
                "kubeProxyVersion": shape.kubelet_version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "phase": "Running",
        }
    })
}

/// The node's heartbeat Lease, owned by the Node so it goes when the Node does.
pub fn lease(node: &str, node_uid: &str, duration_seconds: i32, now: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}],
        },
        "spec": lease_spec(node, duration_seconds, now),
    })
}

/// The merge patch that renews a Lease.
pub fn lease_renewal(node: &str, duration_seconds: i32, now: &str) -> Value {
    json!({"spec": lease_spec(node, duration_seconds, now)})
}

fn lease_spec(node: &str, duration_seconds: i32, now: &str) -> Value {
    json!({"holderIdentity": node, "leaseDurationSeconds": duration_seconds, "renewTime": now})
}

/// Whether the pod already shows what [`running_status`] would make it show.
pub fn is_running(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    status.phase.as_deref() == Some("Running")
        && ready
        && status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
}

/// A stable fake container ID for one container of one pod.
fn container_id(uid: &str, container: &str) -> String {
    // FNV-1a: stable across runs and processes, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes().chain([b'/']).chain(container.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("sim://{h:016x}")
}

fn image_id(image: &str) -> String {
    format!("sim://{image}")
}

fn running_container(uid: &str, c: &Container, now: &str) -> Value {
    let image = c.image.clone().unwrap_or_default();
    json!({
        "name": c.name,
        "image": image,
        "imageID": image_id(&image),
        "containerID": container_id(uid, &c.name),
        "ready": true,
        "started": true,
        "restartCount": 0,
        "state": {"running": {"startedAt": now}},
        "lastState": {},
    })
}

/// Init containers ran to completion, except restartable ones (sidecars), which keep running.
fn init_container(uid: &str, c: &Container, now: &str) -> Value {
    if c.restart_policy.as_deref() == Some("Always") {
        return running_container(uid, c, now);
    }
    let image = c.image.clone().unwrap_or_default();
    json!({
        "name": c.name,
        "image": image,
        "imageID": image_id(&image),
        "containerID": container_id(uid, &c.name),
        "ready": true,
        "started": false,
        "restartCount": 0,
        "state": {"terminated": {
            "exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
            "containerID": container_id(uid, &c.name),
        }},
        "lastState": {},
    })
}

/// The merge patch for `pods/<name>/status` that makes a pod Running and Ready, as a kubelet
/// reports it once every container has started. Lists are replaced whole by a merge patch,
/// which is what we want: the conditions and statuses end up exactly these.
pub fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str, now: &str) -> Value {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let containers: Vec<Value> = spec
        .map(|s| s.containers.iter())
        .into_iter()
        .flatten()
        .map(|c| running_container(uid, c, now))
        .collect();
    let inits: Vec<Value> = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| init_container(uid, c, now))
        .collect();
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| json!(now));
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "containerStatuses": containers,
    });
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits);
    }
    json!({"status": status})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> NodeShape {
        NodeShape {
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 250,
            ephemeral_storage: "1Ti".into(),
            labels: BTreeMap::from([("pool".to_string(), "a".to_string())]),
            taints: vec![json!({"key": "k", "value": "v", "effect": "NoSchedule"})],
            zones: 3,
            kubelet_version: "v1.33.0-sim".into(),
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(node_ip(0), "10.255.0.1");
        assert_eq!(node_ip(255), "10.255.1.0");
        assert_eq!(node_ip(MAX_NODES - 1), "10.255.156.64");
        assert_eq!(pod_ip(0, 2), "10.64.0.2");
        assert_eq!(pod_ip(257, 9), "10.65.1.9");
        assert_eq!(pod_ip(MAX_NODES - 1, 254), "10.220.63.254");
    }

    #[test]
    fn times() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.123456789 UTC);
        assert_eq!(rfc3339(t), "2026-01-02T03:04:05Z");
        assert_eq!(micro_time(t), "2026-01-02T03:04:05.123456Z");
        let other = time::macros::datetime!(2026-01-02 04:04:05 +01:00);
        assert_eq!(rfc3339(other), "2026-01-02T03:04:05Z");
    }

    #[test]
    fn node_labels_zone_and_taints() {
        let n = node("sim-4", 4, &shape());
        assert_eq!(
            n["metadata"]["labels"],
            json!({
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": "sim-4",
                "kubernetes.io/os": "linux",
                "pool": "a",
                "topology.kubernetes.io/zone": "zone-1",
            })
        );
        assert_eq!(
            n["spec"]["taints"],
            json!([{"key": "k", "value": "v", "effect": "NoSchedule"}])
        );
        let plain = NodeShape {
            taints: vec![],
            zones: 0,
            ..shape()
        };
        let n = node("sim-4", 4, &plain);
        assert_eq!(n["spec"], json!({}));
        assert_eq!(
            n["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "zone-0"
        );
    }

    #[test]
    fn node_status_fields() {
        let s = node_status("sim-0", 0, &shape(), "2026-01-01T00:00:00Z");
        let status = &s["status"];
        assert_eq!(
            status["capacity"],
            json!({"cpu": "32", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti"})
        );
        assert_eq!(status["allocatable"], status["capacity"]);
        let types: Vec<(&str, &str)> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            types,
            [
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False"),
                ("Ready", "True")
            ]
        );
        assert_eq!(status["addresses"][0]["address"], "10.255.0.1");
        assert_eq!(status["nodeInfo"]["kubeletVersion"], "v1.33.0-sim");
        // Every field NodeSystemInfo requires is there, so typed clients can decode it.
        let info: k8s_openapi::api::core::v1::NodeSystemInfo =
            serde_json::from_value(status["nodeInfo"].clone()).expect("a NodeSystemInfo");
        assert_eq!(info.machine_id.len(), 32);
    }

    #[test]
    fn lease_and_renewal() {
        let l = lease("sim-1", "uid-1", 40, "2026-01-01T00:00:00.000001Z");
        assert_eq!(l["metadata"]["namespace"], LEASE_NAMESPACE);
        assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(
            l["spec"],
            json!({"holderIdentity": "sim-1", "leaseDurationSeconds": 40,
                   "renewTime": "2026-01-01T00:00:00.000001Z"})
        );
        assert_eq!(
            lease_renewal("sim-1", 40, "t"),
            json!({"spec": {"holderIdentity": "sim-1", "leaseDurationSeconds": 40, "renewTime": "t"}})
        );
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {
                "nodeName": "sim-0",
                "initContainers": [
                    {"name": "setup", "image": "busybox"},
                    {"name": "proxy", "image": "envoy", "restartPolicy": "Always"},
                ],
                "containers": [{"name": "app", "image": "nginx:1.25"}],
            },
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }))
        .unwrap()
    }

    #[test]
    fn pod_becomes_running() {
        let p = pod();
        assert!(!is_running(&p));
        let patch = running_status(&p, "10.255.0.1", "10.64.0.2", "2026-01-01T00:00:00Z");
        let s = &patch["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(
            (s["podIP"].as_str(), s["hostIP"].as_str()),
            (Some("10.64.0.2"), Some("10.255.0.1"))
        );
        assert_eq!(s["startTime"], "2026-01-01T00:00:00Z");
        let conds: Vec<&str> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            conds,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        let app = &s["containerStatuses"][0];
        assert_eq!(
            (
                &app["name"],
                &app["ready"],
                &app["started"],
                &app["restartCount"],
                &app["imageID"]
            ),
            (
                &json!("app"),
                &json!(true),
                &json!(true),
                &json!(0),
                &json!("sim://nginx:1.25")
            )
        );
        assert_eq!(app["containerID"], container_id("u1", "app"));
        assert!(app["containerID"].as_str().unwrap().starts_with("sim://"));
        assert_ne!(container_id("u1", "app"), container_id("u2", "app"));
        let inits = s["initContainerStatuses"].as_array().unwrap();
        assert_eq!(inits[0]["state"]["terminated"]["reason"], "Completed");
        assert_eq!(inits[0]["started"], false);
        assert_eq!(
            inits[1]["state"]["running"]["startedAt"],
            "2026-01-01T00:00:00Z"
        );

        // What the server would store after the merge patch reads as running.
        let mut merged = serde_json::to_value(&p).unwrap();
        merged["status"] = s.clone();
        let merged: Pod = serde_json::from_value(merged).unwrap();
        assert!(is_running(&merged));
    }

    #[test]
    fn start_time_is_kept() {
        let mut p = pod();
        p.status.as_mut().unwrap().start_time =
            serde_json::from_value(json!("2025-05-05T05:05:05Z")).unwrap();
        let patch = running_status(&p, "h", "i", "2026-01-01T00:00:00Z");
        assert_eq!(patch["status"]["startTime"], "2025-05-05T05:05:05Z");
        assert!(patch["status"].get("initContainerStatuses").is_some());
    }
}
