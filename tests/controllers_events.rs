//! The Events the controllers record, as `kubectl describe` shows them: ScalingReplicaSet on a
//! Deployment, SuccessfulCreate / SuccessfulDelete on its ReplicaSet, Completed and
//! BackoffLimitExceeded on Jobs, SuccessfulCreate on a DaemonSet — with Kubernetes' reasons and
//! messages — and repeats of one Event aggregated into its count.

mod common;

use std::time::Duration;

use berth_bench::nodesim::{self, SimConfig};
use berth_controllers::runtime::{reference, Recorder};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};

use common::{
    kubectl, kubectl_stdin, InProcessControllers, InProcessScheduler, Server, CONVERGE_TIMEOUT,
};

const NS: &str = "default";

/// Watches the Events in `NS` until one satisfies `pred`.
async fn wait_event(client: &kube::Client, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    let mut events = watcher(api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let found = async {
        while let Some(event) = events.next().await {
            match event {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "event watch error; retrying"),
            }
        }
        panic!("the event watch ended before {what}");
    };
    tokio::time::timeout(CONVERGE_TIMEOUT, found)
        .await
        .unwrap_or_else(|_| panic!("no event {what} within {CONVERGE_TIMEOUT:?}"))
}

fn about(e: &Event, kind: &str, name: &str, reason: &str) -> bool {
    e.involved_object.kind.as_deref() == Some(kind)
        && e.involved_object.name.as_deref() == Some(name)
        && e.reason.as_deref() == Some(reason)
}

fn message(e: &Event) -> &str {
    e.message.as_deref().unwrap_or_default()
}

/// The lines of `kubectl describe`'s Events section.
fn events_section(describe: &str) -> &str {
    let at = describe
        .find("\nEvents:")
        .unwrap_or_else(|| panic!("no Events section in:\n{describe}"));
    &describe[at..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_record_kubernetes_events_that_describe_shows() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = Server::start();
    let client = server.client().await;
    let sim = nodesim::start(
        client.clone(),
        SimConfig {
            count: 2,
            prefix: "ev-".into(),
            lease_period: Duration::from_secs(1),
            ..SimConfig::default()
        },
    )
    .await
    .expect("starting simulated nodes");
    let mut config = berth_controllers::Config::default();
    config.job.backoff_base = Duration::ZERO;
    let controllers = InProcessControllers::start(client.clone(), config);
    let scheduler = InProcessScheduler::start(client.clone(), Default::default());

    // A Deployment scales its new ReplicaSet up from 0; the ReplicaSet creates its pods.
    kubectl(
        &server,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
        ],
    )
    .await;
    let scaled = wait_event(&client, "ScalingReplicaSet on web", |e| {
        about(e, "Deployment", "web", "ScalingReplicaSet")
    })
    .await;
    let rses = Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("listing replicasets")
        .items;
    assert_eq!(rses.len(), 1, "one ReplicaSet for one template");
    let rs = rses[0].metadata.name.clone().expect("a named replicaset");
    assert_eq!(
        message(&scaled),
        format!("Scaled up replica set {rs} from 0 to 2")
    );
    assert_eq!(scaled.type_.as_deref(), Some("Normal"));
    assert_eq!(
        scaled.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("deployment-controller")
    );
    let describe = kubectl(&server, &["describe", "deployment", "web"]).await;
    let events = events_section(&describe);
    assert!(events.contains("ScalingReplicaSet"), "{describe}");
    assert!(
        events.contains(&format!("Scaled up replica set {rs} from 0 to 2")),
        "{describe}"
    );
    assert!(events.contains("deployment-controller"), "{describe}");

    // The pod named in the ReplicaSet's event is the one the server named (generateName).
    let created = wait_event(&client, "SuccessfulCreate on the replicaset", |e| {
        about(e, "ReplicaSet", &rs, "SuccessfulCreate")
    })
    .await;
    let pod = message(&created)
        .strip_prefix("Created pod: ")
        .unwrap_or_else(|| panic!("unexpected message {:?}", created.message))
        .to_string();
    assert!(pod.starts_with(&format!("{rs}-")), "{pod}");
    Api::<Pod>::namespaced(client.clone(), NS)
        .get(&pod)
        .await
        .expect("the pod the event names exists");
    let describe = kubectl(&server, &["describe", "rs", &rs]).await;
    let events = events_section(&describe);
    assert!(events.contains("SuccessfulCreate"), "{describe}");
    assert!(events.contains("Created pod: "), "{describe}");
    assert!(events.contains("replicaset-controller"), "{describe}");

    // Scaling down: the Deployment says so, and the ReplicaSet deletes a pod.
    kubectl(&server, &["scale", "deployment", "web", "--replicas=1"]).await;
    let down = format!("Scaled down replica set {rs} from 2 to 1");
    wait_event(&client, "the scale-down", |e| {
        about(e, "Deployment", "web", "ScalingReplicaSet") && message(e) == down
    })
    .await;
    let deleted = wait_event(&client, "SuccessfulDelete on the replicaset", |e| {
        about(e, "ReplicaSet", &rs, "SuccessfulDelete")
    })
    .await;
    assert!(
        message(&deleted).starts_with(&format!("Deleted pod: {rs}-")),
        "{deleted:?}"
    );

    // A Job whose pod succeeds: Created pod, then Completed.
    let job = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  template:
    metadata:
      annotations:
        sim.berth.dev/exit-code: "0"
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], job).await;
    let done = wait_event(&client, "Completed on the job", |e| {
        about(e, "Job", "once", "Completed")
    })
    .await;
    assert_eq!(message(&done), "Job completed");
    let describe = kubectl(&server, &["describe", "job", "once"]).await;
    let events = events_section(&describe);
    assert!(events.contains("Completed"), "{describe}");
    assert!(events.contains("Job completed"), "{describe}");
    assert!(events.contains("SuccessfulCreate"), "{describe}");
    assert!(events.contains("Created pod: once-"), "{describe}");

    // A Job whose pod fails with backoffLimit 0 fails at once, with a Warning saying why.
    let failing = job
        .replace("name: once", "name: doomed")
        .replace(
            "spec:\n  template:",
            "spec:\n  backoffLimit: 0\n  template:",
        )
        .replace("exit-code: \"0\"", "exit-code: \"1\"");
    kubectl_stdin(&server, &["apply", "-f", "-"], &failing).await;
    let failed = wait_event(&client, "BackoffLimitExceeded on the job", |e| {
        about(e, "Job", "doomed", "BackoffLimitExceeded")
    })
    .await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        message(&failed),
        "Job has reached the specified backoff limit"
    );

    // A DaemonSet creates one pod per node, each reported.
    let ds = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: busybox:1.36
"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], ds).await;
    let created = wait_event(&client, "SuccessfulCreate on the daemonset", |e| {
        about(e, "DaemonSet", "agent", "SuccessfulCreate")
    })
    .await;
    assert!(
        message(&created).starts_with("Created pod: agent-"),
        "{created:?}"
    );
    assert_eq!(
        created.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("daemonset-controller")
    );

    // The same warning twice about one object: one Event, count 2.
    let cm = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some("settings".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("creating a configmap");
    let recorder = Recorder::new(client.clone(), "events-test");
    recorder.warning(&reference(&cm), "BadSetting", "setting x is invalid");
    recorder.warning(&reference(&cm), "BadSetting", "setting x is invalid");
    let twice = wait_event(&client, "the repeated warning counted twice", |e| {
        about(e, "ConfigMap", "settings", "BadSetting") && e.count == Some(2)
    })
    .await;
    assert_eq!(twice.type_.as_deref(), Some("Warning"));
    let all = Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default().fields("involvedObject.name=settings"))
        .await
        .expect("listing events")
        .items;
    assert_eq!(all.len(), 1, "repeats aggregate into one Event: {all:?}");
    assert!(twice.last_timestamp >= twice.first_timestamp);
    let describe = kubectl(&server, &["describe", "configmap", "settings"]).await;
    assert!(events_section(&describe).contains("(x2 over"), "{describe}");

    sim.shutdown().await;
    scheduler.stop().await;
    controllers.stop().await;
}
