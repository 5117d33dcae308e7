//! One scheduling cycle (filter every node, score every feasible node, pick one) at 500, 5,000
//! and 15,000 nodes with ~10 pods placed on each, for (a) a plain pod with resource requests
//! and (b) a pod with required anti-affinity, a zone spread constraint and preferred node
//! affinity. Before criterion runs, a fixed number of cycles per case is timed one by one and
//! the percentiles printed from an HDR histogram (criterion reports means, the target is p99).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_api::k8s_openapi::api::core::v1 as core;
use berth_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use berth_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use berth_scheduler::{PodInfo, Scheduler, SchedulerConfig, Snapshot};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use hdrhistogram::Histogram;

const SIZES: [usize; 3] = [500, 5_000, 15_000];
const PODS_PER_NODE: usize = 10;
const ZONES: usize = 3;

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Q> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Q(v.to_string())))
        .collect()
}

fn node(i: usize) -> core::Node {
    let name = format!("node-{i:05}");
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("topology.kubernetes.io/region", "eu-west"),
        (
            "topology.kubernetes.io/zone",
            ["zone-a", "zone-b", "zone-c"][i % ZONES],
        ),
        (
            "node.kubernetes.io/instance-type",
            if i.is_multiple_of(4) {
                "m6.4xlarge"
            } else {
                "m6.2xlarge"
            },
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // One node in 20 is dedicated (NoSchedule), one in 10 is spot (PreferNoSchedule).
    let mut taints = Vec::new();
    if i.is_multiple_of(20) {
        taints.push(core::Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
    }
    if i % 10 == 5 {
        taints.push(core::Taint {
            key: "spot".into(),
            value: None,
            effect: "PreferNoSchedule".into(),
            time_added: None,
        });
    }
    let images = (0..5)
        .map(|k| core::ContainerImage {
            names: Some(vec![format!("registry.example/app-{}:1.0", (i + k) % 50)]),
            size_bytes: Some(((k as i64) + 1) * 80 * 1024 * 1024),
        })
        .collect();
    core::Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(core::NodeSpec {
            taints: Some(taints),
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            allocatable: Some(quantities(&[
                ("cpu", "32"),
                ("memory", "128Gi"),
                ("pods", "110"),
                ("ephemeral-storage", "500Gi"),
            ])),
            images: Some(images),
            ..Default::default()
        }),
    }
}

fn pod(name: &str, app: &str, node: Option<&str>, cpu: &str, memory: &str) -> core::Pod {
    core::Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("bench".into()),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        },
        spec: Some(core::PodSpec {
            node_name: node.map(Into::into),
            containers: vec![core::Container {
                name: "main".into(),
                image: Some(format!("registry.example/{app}:1.0")),
                resources: Some(core::ResourceRequirements {
                    requests: Some(quantities(&[("cpu", cpu), ("memory", memory)])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn snapshot(nodes: usize) -> Snapshot {
    let mut s = Snapshot::new();
    for i in 0..nodes {
        let n = node(i);
        s.add_node(&n).expect("node");
        let name = n.metadata.name.as_deref().expect("name");
        for j in 0..PODS_PER_NODE {
            // Every 8th node runs one replica of the affinity workload already.
            let app = if j == 0 && i.is_multiple_of(8) {
                "web".to_string()
            } else {
                format!("app-{}", (i * PODS_PER_NODE + j) % 50)
            };
            let cpu = ["100m", "250m", "500m", "1"][j % 4];
            let memory = ["256Mi", "512Mi", "1Gi", "2Gi"][j % 4];
            s.add_pod(&pod(&format!("p-{i}-{j}"), &app, Some(name), cpu, memory))
                .expect("pod");
        }
    }
    s
}

fn plain_pod() -> PodInfo {
    PodInfo::from_pod(&pod("incoming", "app-7", None, "500m", "1Gi")).expect("pod")
}

fn constrained_pod() -> PodInfo {
    let mut p = pod("incoming-web", "web", None, "500m", "1Gi");
    let selector = Some(LabelSelector {
        match_labels: Some([("app".to_string(), "web".to_string())].into()),
        match_expressions: None,
    });
    let spec = p.spec.as_mut().expect("spec");
    spec.affinity = Some(core::Affinity {
        pod_anti_affinity: Some(core::PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![
                core::PodAffinityTerm {
                    label_selector: selector.clone(),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                },
            ]),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        node_affinity: Some(core::NodeAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                core::PreferredSchedulingTerm {
                    weight: 20,
                    preference: core::NodeSelectorTerm {
                        match_expressions: Some(vec![core::NodeSelectorRequirement {
                            key: "node.kubernetes.io/instance-type".into(),
                            operator: "In".into(),
                            values: Some(vec!["m6.4xlarge".into()]),
                        }]),
                        match_fields: None,
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Default::default()
    });
    spec.topology_spread_constraints = Some(vec![core::TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "topology.kubernetes.io/zone".into(),
        when_unsatisfiable: "DoNotSchedule".into(),
        label_selector: selector,
        ..Default::default()
    }]);
    PodInfo::from_pod(&p).expect("pod")
}

fn scheduler() -> Scheduler {
    Scheduler::new(SchedulerConfig {
        deterministic: false,
        seed: Some(42),
    })
}

/// Times `iterations` cycles one by one and prints p50/p99/max.
fn percentiles(label: &str, pod: &PodInfo, snapshot: &Snapshot, iterations: usize) {
    let mut sched = scheduler();
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..iterations.min(20) {
        black_box(sched.schedule(pod, snapshot).ok());
    }
    for _ in 0..iterations {
        let start = Instant::now();
        black_box(sched.schedule(pod, snapshot).ok());
        hist.record(start.elapsed().as_nanos() as u64)
            .expect("record");
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "scheduler/{label}: {iterations} cycles  mean {:.1} µs  p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
        hist.mean() / 1000.0,
        us(0.5),
        us(0.99),
        hist.max() as f64 / 1000.0
    );
}

fn scheduling_cycle(c: &mut Criterion) {
    let (plain, constrained) = (plain_pod(), constrained_pod());
    let mut group = c.benchmark_group("scheduler_cycle");
    for nodes in SIZES {
        let snapshot = snapshot(nodes);
        // Fail loudly rather than measure an error path; every node but the tainted ones fits.
        let mut sched = scheduler();
        let r = sched
            .schedule(&plain, &snapshot)
            .expect("plain pod schedulable");
        assert_eq!(r.feasible_nodes, nodes - nodes / 20);
        let r = sched
            .schedule(&constrained, &snapshot)
            .expect("constrained pod schedulable");
        assert!(r.feasible_nodes > 0 && r.feasible_nodes < nodes);

        percentiles(&format!("plain/{nodes}"), &plain, &snapshot, 2_000);
        percentiles(
            &format!("affinity_spread/{nodes}"),
            &constrained,
            &snapshot,
            100,
        );

        group.bench_with_input(BenchmarkId::new("plain", nodes), &snapshot, |b, s| {
            b.iter(|| sched.schedule(black_box(&plain), s))
        });
        group.bench_with_input(
            BenchmarkId::new("affinity_spread", nodes),
            &snapshot,
            |b, s| b.iter(|| sched.schedule(black_box(&constrained), s)),
        );
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = scheduling_cycle
}
criterion_main!(benches);
