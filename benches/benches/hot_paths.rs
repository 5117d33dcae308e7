//! Micro-benchmarks of API server hot paths that need no server: strategic merge patch of a
//! Deployment (what every `kubectl apply` costs) and label selector matching over 10,000 pods
//! (what every selector LIST or watch filter costs).

use std::time::Duration;

use berth_api::LabelSelector;
use berth_apiserver::patch::apply_strategic_merge_patch;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const OBJECTS: usize = 10_000;

fn deployment() -> Value {
    let containers: Vec<Value> = (0..4)
        .map(|i| {
            json!({
                "name": format!("c{i}"),
                "image": format!("registry.example/app{i}:1.0"),
                "ports": [{"containerPort": 8080 + i, "protocol": "TCP"}],
                "env": (0..8).map(|e| json!({"name": format!("E{e}"), "value": "v"})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers},
            },
        },
    })
}

/// What `kubectl apply` sends after changing one image and one env value.
fn apply_patch() -> Value {
    json!({"spec": {"replicas": 4, "template": {"spec": {
        "$setElementOrder/containers": [{"name": "c0"}, {"name": "c1"}, {"name": "c2"}, {"name": "c3"}],
        "containers": [{
            "name": "c2",
            "image": "registry.example/app2:1.1",
            "$setElementOrder/env": (0..8).map(|e| json!({"name": format!("E{e}")})).collect::<Vec<_>>(),
            "env": [{"name": "E3", "value": "changed"}],
        }],
    }}}})
}

fn strategic_merge_patch(c: &mut Criterion) {
    let (original, patch) = (deployment(), apply_patch());
    // Fails loudly here rather than benchmarking an error path.
    let patched =
        apply_strategic_merge_patch(&original, &patch, DEPLOYMENT).expect("patch applies");
    assert_eq!(
        patched["spec"]["template"]["spec"]["containers"][2]["image"],
        "registry.example/app2:1.1"
    );
    c.bench_function("strategic_merge_patch/deployment_apply", |b| {
        b.iter(|| apply_strategic_merge_patch(black_box(&original), black_box(&patch), DEPLOYMENT))
    });
}

fn label_selector(c: &mut Criterion) {
    let pods: Vec<Value> = (0..OBJECTS)
        .map(|i| {
            json!({"metadata": {"name": format!("pod-{i}"), "labels": {
                "app": format!("app-{}", i % 50),
                "tier": if i % 3 == 0 { "front" } else { "back" },
                "pod-template-hash": format!("{:08x}", i * 7919),
            }}})
        })
        .collect();
    let selector =
        LabelSelector::parse("app in (app-1,app-2,app-3),tier=front,!canary").expect("valid");
    let count = |s: &LabelSelector| {
        pods.iter()
            .filter(|p| s.matches_json(p["metadata"]["labels"].as_object()))
            .count()
    };
    // app-1..3 are 3 of 50 apps and a third of those are front: 3 * 200 / 3 = 200.
    assert_eq!(count(&selector), 200);
    let mut group = c.benchmark_group("label_selector");
    group.throughput(Throughput::Elements(OBJECTS as u64));
    group.bench_function("match_10000_pods", |b| {
        b.iter(|| count(black_box(&selector)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .noise_threshold(0.03)
}

criterion_group! {
    name = benches;
    config = config();
    targets = strategic_merge_patch, label_selector
}
criterion_main!(benches);
