//! Round trips: realistic messages encoded by `k8s-pb` (prost, an encoder independent of our
//! table) decode to the JSON a JSON client sends, and that JSON reads as the typed object.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::{json, Value};

use super::{decode_request, ProtobufError};

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(raw),
        content_encoding: None,
        content_type: None,
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn decode(api_version: &str, kind: &str, m: &impl prost::Message) -> Value {
    decode_request(&envelope(api_version, kind, m.encode_to_vec())).expect("decodes")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Metadata as Go's encoder writes it: every non-pointer string, empty or not.
fn meta(name: &str, app: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        resource_version: s(""),
        uid: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        labels: labels(&[("app", app)]),
        ..Default::default()
    }
}

#[test]
fn config_map() {
    let cm = core::ConfigMap {
        metadata: Some(meta("c1", "web")),
        data: labels(&[("a", "b")]),
        binary_data: [("bin".to_string(), vec![0u8, 1, 2])].into(),
        immutable: Some(false),
    };
    let v = decode("v1", "ConfigMap", &cm);
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c1", "creationTimestamp": null, "labels": {"app": "web"}},
            "data": {"a": "b"},
            "binaryData": {"bin": "AAEC"},
            "immutable": false,
        })
    );
    serde_json::from_value::<k8s_openapi::api::core::v1::ConfigMap>(v).expect("typed");
}

#[test]
fn secret_bytes_are_base64() {
    let secret = core::Secret {
        metadata: Some(meta("s1", "db")),
        data: [("k".to_string(), b"v".to_vec())].into(),
        r#type: s("Opaque"),
        ..Default::default()
    };
    let v = decode("v1", "Secret", &secret);
    assert_eq!(v["data"], json!({"k": "dg=="}));
    assert_eq!(v["type"], json!("Opaque"));
    assert_eq!(v.get("stringData"), None);
    serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(v).expect("typed");
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity { string: s(v) }))
        .collect()
}

fn container(name: &str, image: &str, port: i32) -> core::Container {
    core::Container {
        name: s(name),
        image: s(image),
        ports: vec![core::ContainerPort {
            container_port: Some(port),
            protocol: s("TCP"),
            host_port: Some(0),
            ..Default::default()
        }],
        env: vec![core::EnvVar {
            name: s("MODE"),
            value: s("prod"),
            value_from: None,
        }],
        resources: Some(core::ResourceRequirements {
            limits: quantities(&[("cpu", "500m"), ("memory", "128Mi")]),
            requests: quantities(&[("cpu", "250m")]),
            claims: vec![],
        }),
        termination_message_path: s(""),
        ..Default::default()
    }
}

#[test]
fn deployment() {
    let d = apps::Deployment {
        metadata: Some(meta("web", "web")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: labels(&[("app", "web")]),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    creation_timestamp: Some(meta::Time::default()),
                    labels: labels(&[("app", "web")]),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![
                        container("nginx", "nginx:1.25", 80),
                        container("sidecar", "busybox", 9090),
                    ],
                    host_network: Some(false),
                    termination_grace_period_seconds: Some(0),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("25%"),
                    }),
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: s(""),
                    }),
                }),
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let v = decode("apps/v1", "Deployment", &d);
    let container = |name: &str, image: &str, port: i64| {
        json!({
            "name": name, "image": image,
            "ports": [{"containerPort": port, "protocol": "TCP"}],
            "env": [{"name": "MODE", "value": "prod"}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
        })
    };
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            container("nginx", "nginx:1.25", 80),
                            container("sidecar", "busybox", 9090),
                        ],
                        "terminationGracePeriodSeconds": 0,
                    },
                },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1},
                },
            },
            "status": {},
        })
    );
    serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(v).expect("typed");
}

#[test]
fn service_target_port_int() {
    let svc = core::Service {
        metadata: Some(meta("svc1", "svc1")),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: s("80-8080"),
                protocol: s("TCP"),
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(8080),
                    str_val: s(""),
                }),
                node_port: Some(0),
                ..Default::default()
            }],
            selector: labels(&[("app", "svc1")]),
            r#type: s("ClusterIP"),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    let v = decode("v1", "Service", &svc);
    assert_eq!(
        v["spec"],
        json!({
            "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "selector": {"app": "svc1"},
            "type": "ClusterIP",
        })
    );
    serde_json::from_value::<k8s_openapi::api::core::v1::Service>(v).expect("typed");
}

#[test]
fn embedded_structs_are_inlined() {
    let pod = core::Pod {
        metadata: Some(meta("p", "p")),
        spec: Some(core::PodSpec {
            volumes: vec![core::Volume {
                name: s("cfg"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference { name: s("c1") }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            containers: vec![core::Container {
                name: s("c"),
                liveness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: s("/healthz"),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: Some(0),
                                str_val: s("http"),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(10),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let v = decode("v1", "Pod", &pod);
    assert_eq!(
        v["spec"]["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "c1"}}])
    );
    assert_eq!(
        v["spec"]["containers"][0]["livenessProbe"],
        json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10})
    );
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(v).expect("typed");
}

#[test]
fn times_and_managed_fields() {
    let mut m = meta("e", "e");
    m.creation_timestamp = Some(meta::Time {
        seconds: Some(1_704_164_705),
        nanos: Some(0),
    });
    m.managed_fields = vec![meta::ManagedFieldsEntry {
        manager: s("kubectl-create"),
        operation: s("Update"),
        api_version: s("v1"),
        time: Some(meta::Time {
            seconds: Some(1_704_164_705),
            nanos: None,
        }),
        fields_type: s("FieldsV1"),
        fields_v1: Some(meta::FieldsV1 {
            raw: Some(br#"{"f:reason":{}}"#.to_vec()),
        }),
        subresource: s(""),
    }];
    let event = core::Event {
        metadata: Some(m),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            name: s("p"),
            ..Default::default()
        }),
        reason: s("Started"),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_704_164_705),
            nanos: Some(5_000),
        }),
        ..Default::default()
    };
    let v = decode("v1", "Event", &event);
    assert_eq!(
        v["metadata"]["creationTimestamp"],
        json!("2024-01-02T03:05:05Z")
    );
    assert_eq!(v["eventTime"], json!("2024-01-02T03:05:05.000005Z"));
    assert_eq!(
        v["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
            "time": "2024-01-02T03:05:05Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:reason": {}},
        }])
    );
    serde_json::from_value::<k8s_openapi::api::core::v1::Event>(v).expect("typed");
}

#[test]
fn delete_options_scale_binding() {
    let opts = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("u-1"),
            resource_version: None,
        }),
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    assert_eq!(
        decode("apps/v1", "DeleteOptions", &opts),
        json!({
            "apiVersion": "apps/v1", "kind": "DeleteOptions",
            "gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"},
            "propagationPolicy": "Foreground", "dryRun": ["All"],
        })
    );
    let scale = k8s_pb::api::autoscaling::v1::Scale {
        metadata: Some(meta("web", "web")),
        spec: Some(k8s_pb::api::autoscaling::v1::ScaleSpec { replicas: Some(3) }),
        status: None,
    };
    assert_eq!(
        decode("autoscaling/v1", "Scale", &scale)["spec"],
        json!({"replicas": 3})
    );
    let binding = core::Binding {
        metadata: Some(meta("p", "p")),
        target: Some(core::ObjectReference {
            kind: s("Node"),
            name: s("n1"),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode("v1", "Binding", &binding)["target"],
        json!({"kind": "Node", "name": "n1"})
    );
}

#[test]
fn envelope_errors() {
    assert!(matches!(
        decode_request(b"{\"kind\":\"Pod\"}"),
        Err(ProtobufError::MissingMagic)
    ));
    let err = decode_request(&envelope("v1", "Widget", vec![])).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"no protobuf schema for apiVersion "v1", kind "Widget""#
    );
    let mut gzip = envelope("v1", "ConfigMap", vec![]);
    gzip.extend(
        Unknown {
            content_encoding: s("gzip"),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert!(matches!(
        decode_request(&gzip),
        Err(ProtobufError::ContentEncoding { .. })
    ));
    // spec (2) → replicas (1) sent as a length-delimited field: the path names it.
    let bad = envelope("apps/v1", "Deployment", vec![0x12, 0x03, 0x0a, 0x01, 0x00]);
    assert_eq!(
        decode_request(&bad).unwrap_err().to_string(),
        "spec.replicas: wire type does not match the field's type"
    );
    let truncated = envelope("v1", "ConfigMap", vec![0x0a, 0x10, 0x0a]);
    assert_eq!(
        decode_request(&truncated).unwrap_err().to_string(),
        "message truncated at byte 2"
    );
}

#[test]
fn embedded_json_content_type() {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("ConfigMap"),
        }),
        raw: Some(br#"{"data":{"a":"b"}}"#.to_vec()),
        content_encoding: None,
        content_type: s("application/json"),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    assert_eq!(
        decode_request(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}})
    );
}
