use super::*;
use serde_json::json;

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const POD: &str = "io.k8s.api.core.v1.Pod";

fn smp(original: Value, patch: Value, definition: &str) -> Value {
    apply_strategic_merge_patch(&original, &patch, definition).expect("patch applies")
}

fn smp_err(original: Value, patch: Value, definition: &str) -> PatchError {
    apply_strategic_merge_patch(&original, &patch, definition).expect_err("patch must fail")
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": containers}}
        }
    })
}

fn pod_spec(spec: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": spec})
}

#[test]
fn kubectl_apply_changes_one_container_image() {
    let original = deployment(json!([
        {"name": "a", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "redis:7"}
    ]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"image": "nginx:1.26", "name": "a"}]
    }}}});
    assert_eq!(
        smp(original, patch, DEPLOYMENT),
        deployment(json!([
            {"name": "a", "image": "nginx:1.26", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "redis:7"}
        ]))
    );
}

#[test]
fn kubectl_apply_removes_a_container() {
    let original = deployment(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}],
        "containers": [{"$patch": "delete", "name": "b"}]
    }}}});
    assert_eq!(
        smp(original, patch, DEPLOYMENT),
        deployment(json!([{"name": "a", "image": "x"}]))
    );
}

#[test]
fn kubectl_apply_adds_a_container_at_the_ordered_place() {
    let original = deployment(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}, {"name": "b"}],
        "containers": [{"image": "z", "name": "c"}]
    }}}});
    assert_eq!(
        smp(original, patch, DEPLOYMENT),
        deployment(json!([
            {"name": "a", "image": "x"},
            {"name": "c", "image": "z"},
            {"name": "b", "image": "y"}
        ]))
    );
}

#[test]
fn new_items_without_order_go_first_as_in_kubernetes() {
    let original = deployment(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]));
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "z"}]}}}});
    assert_eq!(
        smp(original, patch, DEPLOYMENT),
        deployment(json!([
            {"name": "c", "image": "z"},
            {"name": "a", "image": "x"},
            {"name": "b", "image": "y"}
        ]))
    );
}

#[test]
fn env_merges_by_name_and_null_deletes_inside_an_item() {
    let original = deployment(json!([{"name": "a", "image": "x", "env": [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [
        {"name": "B", "value": "2", "valueFrom": null}
    ]}]}}}});
    assert_eq!(
        smp(original, patch, DEPLOYMENT),
        deployment(json!([{"name": "a", "image": "x", "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "2"}
        ]}]))
    );
}

#[test]
fn non_merge_lists_are_replaced() {
    let original = pod_spec(json!({
        "containers": [{"name": "a", "image": "x", "args": ["1", "2"]}],
        "tolerations": [{"key": "k1", "operator": "Exists"}]
    }));
    let patch = json!({"spec": {
        "containers": [{"name": "a", "args": ["3"]}],
        "tolerations": [{"key": "k2", "operator": "Exists"}]
    }});
    assert_eq!(
        smp(original, patch, POD),
        pod_spec(json!({
            "containers": [{"name": "a", "image": "x", "args": ["3"]}],
            "tolerations": [{"key": "k2", "operator": "Exists"}]
        }))
    );
}

#[test]
fn finalizers_union_delete_and_order() {
    let original = json!({"metadata": {"name": "n", "finalizers": ["a", "b"]}});
    assert_eq!(
        smp(
            original.clone(),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
            POD
        ),
        json!({"metadata": {"name": "n", "finalizers": ["a", "b", "c"]}})
    );
    assert_eq!(
        smp(
            original.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]}}),
            POD
        ),
        json!({"metadata": {"name": "n", "finalizers": ["b"]}})
    );
    // What kubectl apply sends when the manifest's finalizers change from [a, b] to [c, b].
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["c", "b"],
        "$deleteFromPrimitiveList/finalizers": ["a"],
        "finalizers": ["c"]
    }});
    assert_eq!(
        smp(original, patch, POD),
        json!({"metadata": {"name": "n", "finalizers": ["c", "b"]}})
    );
}

#[test]
fn delete_from_absent_primitive_list_adds_nothing() {
    let original = json!({"metadata": {"name": "n"}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}});
    assert_eq!(smp(original.clone(), patch, POD), original);
}

#[test]
fn replace_directive_in_list_and_map() {
    let original = deployment(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "z"},
        {"$patch": "replace"}
    ]}}}});
    assert_eq!(
        smp(original, patch, DEPLOYMENT),
        deployment(json!([{"name": "c", "image": "z"}]))
    );

    let original =
        json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let patch = json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}});
    assert_eq!(
        smp(original, patch, DEPLOYMENT),
        json!({"spec": {"strategy": {"type": "Recreate"}}})
    );
}

#[test]
fn delete_directive_on_map_and_whole_document() {
    let original =
        json!({"metadata": {"name": "n", "labels": {"a": "1"}}, "spec": {"replicas": 1}});
    assert_eq!(
        smp(
            original.clone(),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
            DEPLOYMENT
        ),
        json!({"metadata": {"name": "n", "labels": {}}, "spec": {"replicas": 1}})
    );
    assert_eq!(
        smp(
            original.clone(),
            json!({"$patch": "replace", "kind": "X"}),
            DEPLOYMENT
        ),
        json!({"kind": "X"})
    );
    assert_eq!(
        smp(original, json!({"$patch": "delete"}), DEPLOYMENT),
        json!({})
    );
}

#[test]
fn delete_every_item_with_a_key() {
    let original = pod_spec(json!({"containers": [
        {"name": "a"}, {"name": "a", "image": "dup"}, {"name": "b"}
    ]}));
    let patch = json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
    assert_eq!(
        smp(original, patch, POD),
        pod_spec(json!({"containers": [{"name": "b"}]}))
    );
}

#[test]
fn retain_keys_on_deployment_strategy() {
    let original = json!({"spec": {"strategy": {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
    }}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    assert_eq!(
        smp(original.clone(), patch, DEPLOYMENT),
        json!({"spec": {"strategy": {"type": "Recreate"}}})
    );
    let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
    let err = smp_err(original.clone(), bad, DEPLOYMENT);
    assert_eq!(err, PatchError::BadRetainKeysFormat);
    assert_eq!(err.status_code(), 400);
    let bad = json!({"spec": {"strategy": {"$retainKeys": "type"}}});
    assert_eq!(
        smp_err(original, bad, DEPLOYMENT),
        PatchError::BadRetainKeysFormat
    );
}

#[test]
fn retain_keys_on_a_volume_switches_its_source() {
    let original = pod_spec(json!({"volumes": [
        {"name": "v", "emptyDir": {}},
        {"name": "w", "secret": {"secretName": "s"}}
    ]}));
    let patch = json!({"spec": {
        "$setElementOrder/volumes": [{"name": "v"}, {"name": "w"}],
        "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "v"}]
    }});
    assert_eq!(
        smp(original, patch, POD),
        pod_spec(json!({"volumes": [
            {"name": "v", "configMap": {"name": "cm"}},
            {"name": "w", "secret": {"secretName": "s"}}
        ]}))
    );
}

#[test]
fn keyed_lists_across_kinds() {
    let service =
        json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
    assert_eq!(
        smp(
            service,
            json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
            "io.k8s.api.core.v1.Service"
        ),
        json!({"spec": {"ports": [
            {"port": 80, "name": "http"},
            {"port": 443, "name": "https", "targetPort": 8443}
        ]}})
    );
    let node = json!({"status": {"addresses": [
        {"type": "InternalIP", "address": "10.0.0.1"},
        {"type": "Hostname", "address": "n1"}
    ]}});
    assert_eq!(
        smp(
            node,
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
            "io.k8s.api.core.v1.Node"
        ),
        json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.2"},
            {"type": "Hostname", "address": "n1"}
        ]}})
    );
    let pod = json!({"status": {"conditions": [
        {"type": "Ready", "status": "False"},
        {"type": "PodScheduled", "status": "True"}
    ]}});
    assert_eq!(
        smp(
            pod,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            POD
        ),
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "PodScheduled", "status": "True"}
        ]}})
    );
    let owned =
        json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "rs", "controller": true}]}});
    assert_eq!(
        smp(
            owned,
            json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": null}]}}),
            POD
        ),
        json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "rs"}]}})
    );
}

#[test]
fn set_element_order_ignores_unknown_items_and_reorders() {
    // From Kubernetes' tests: "$setElementOrder contains item that is not present".
    let original = pod_spec(json!({"containers": [{"name": "1"}, {"name": "3"}]}));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
        "containers": [{"name": "3", "image": "3"}, {"name": "1", "image": "1"}]
    }});
    assert_eq!(
        smp(original, patch, POD),
        pod_spec(json!({"containers": [{"name": "3", "image": "3"}, {"name": "1", "image": "1"}]}))
    );
}

#[test]
fn set_element_order_must_agree_with_the_patch_list() {
    let original = pod_spec(json!({"containers": [{"name": "1"}, {"name": "3"}, {"name": "2"}]}));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
        "containers": [{"name": "3", "image": "3"}, {"name": "1", "image": "1"}]
    }});
    let err = smp_err(original, patch, POD);
    assert!(matches!(err, PatchError::OrderMismatch { .. }), "{err:?}");
    assert_eq!(err.status_code(), 500);
}

#[test]
fn directives_never_reach_the_result() {
    // A new container carrying its own ordering directive, and a new map with a nested delete.
    let original = pod_spec(json!({"containers": [{"name": "a"}]}));
    let patch = json!({"spec": {
        "containers": [{"name": "b", "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": "1"}]}],
        "securityContext": {"runAsUser": 1, "seLinuxOptions": {"$patch": "delete"}, "sysctls": null}
    }});
    assert_eq!(
        smp(original, patch, POD),
        pod_spec(json!({
            "containers": [{"name": "b", "env": [{"name": "X", "value": "1"}]}, {"name": "a"}],
            "securityContext": {"runAsUser": 1}
        }))
    );
}

#[test]
fn invalid_directives_are_errors() {
    let original = deployment(json!([{"name": "a"}]));
    let err = smp_err(
        original.clone(),
        json!({"metadata": {"labels": {"$patch": "frobnicate"}}}),
        DEPLOYMENT,
    );
    assert_eq!(
        err.to_string(),
        r#"unknown patch type: frobnicate in map: {"$patch":"frobnicate"}"#
    );
    assert_eq!(err.status_code(), 500);
    let err = smp_err(
        original.clone(),
        json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}}),
        DEPLOYMENT,
    );
    assert_eq!(err, PatchError::ListMergeDirective);
    let err = smp_err(
        original.clone(),
        json!({"metadata": {"$frob": 1}}),
        DEPLOYMENT,
    );
    assert_eq!(err.status_code(), 400);
    let err = smp_err(
        original.clone(),
        json!({"metadata": {"$setElementOrder": []}}),
        DEPLOYMENT,
    );
    assert_eq!(
        err.to_string(),
        "invalid patch format of setElementOrder list"
    );
    let err = smp_err(
        original.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
        DEPLOYMENT,
    );
    assert_eq!(err.to_string(), "invalid patch format of primitive list");
    let err = smp_err(
        original,
        json!({"spec": {"template": {"spec": {"containers": [{"image": "b"}]}}}}),
        DEPLOYMENT,
    );
    assert_eq!(
        err.to_string(),
        r#"map: {"image":"b"} does not contain declared merge key: name"#
    );
}

#[test]
fn documents_must_be_objects_of_a_known_kind() {
    let err = smp_err(json!({}), json!([1]), POD);
    assert_eq!(err.status_code(), 400);
    let err = smp_err(json!({}), json!({}), "io.example.v1.Widget");
    assert_eq!(
        err.to_string(),
        "strategic merge patch format is not supported"
    );
    assert_eq!(err.status_code(), 400);
}

#[test]
fn lists_of_lists_and_mixed_lists() {
    let original = json!({"metadata": {"finalizers": [["a"]]}});
    let err = smp_err(original, json!({"metadata": {"finalizers": [["b"]]}}), POD);
    assert_eq!(err, PatchError::ListOfLists);
    assert_eq!(err.status_code(), 422);
    let original = json!({"metadata": {"finalizers": ["a"]}});
    let err = smp_err(original, json!({"metadata": {"finalizers": [1]}}), POD);
    assert!(
        matches!(err, PatchError::MixedListElements { .. }),
        "{err:?}"
    );
}

#[test]
fn type_changes_take_the_patch_value() {
    let original = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
    let patch = json!({"metadata": {"labels": "oops"}, "spec": {"replicas": {"x": null, "y": 1}}});
    assert_eq!(
        smp(original, patch, DEPLOYMENT),
        json!({"metadata": {"labels": "oops"}, "spec": {"replicas": {"y": 1}}})
    );
}

#[test]
fn large_keyed_lists_merge_in_near_linear_time() {
    // Guards against quadratic lookups: 10k items each side would take minutes if quadratic.
    let n = 10_000;
    let env: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("V{i}"), "value": "old"}))
        .collect();
    let order: Vec<Value> = (0..n)
        .rev()
        .map(|i| json!({"name": format!("V{i}")}))
        .collect();
    let changes: Vec<Value> = (0..n)
        .rev()
        .step_by(2)
        .map(|i| json!({"name": format!("V{i}"), "value": "new"}))
        .collect();
    let original = pod_spec(json!({"containers": [{"name": "a", "env": env}]}));
    let patch = json!({"spec": {"containers": [{"name": "a", "$setElementOrder/env": order, "env": changes}]}});
    let got = smp(original, patch, POD);
    let env = got["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(env.len(), n);
    assert_eq!(
        env[0],
        json!({"name": format!("V{}", n - 1), "value": "new"})
    );
    assert_eq!(
        env[1],
        json!({"name": format!("V{}", n - 2), "value": "old"})
    );
    assert_eq!(env[n - 1], json!({"name": "V0", "value": "old"}));
}
