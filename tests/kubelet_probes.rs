//! Probes, lifecycle hooks and sidecars end to end: `berth up` with its kubelet, the busybox
//! test image from a real registry on loopback, and real kubectl. All scenarios run as pods on
//! one cluster at once, with 1 s probe periods, to keep the wall time short.

mod common;
#[path = "support/kubelet.rs"]
mod kubelet_support;

use std::path::Path;
use std::time::Duration;

use common::{apply, kubectl, wait_for, Server};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::api::Api;
use kubelet_support::setup;

fn status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let s = pod.status.as_ref()?;
    s.container_statuses
        .iter()
        .chain(s.init_container_statuses.iter())
        .flatten()
        .find(|c| c.name == name)
}

fn running(c: &ContainerStatus) -> bool {
    c.state.as_ref().is_some_and(|s| s.running.is_some())
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == type_)?;
    Some(c.status.clone())
}

/// The (reason, message) of every event about pod `name`.
async fn events_of(server: &Server, name: &str) -> Vec<(String, String)> {
    let out = kubectl(server, &["get", "events", "-o", "json"]).await;
    let list: serde_json::Value = serde_json::from_str(&out).expect("events as JSON");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits, on a watch of the pod's events, until one matches (up to 60 s).
async fn wait_event(server: &Server, pod: &str, reason: &str, message: impl Fn(&str) -> bool) {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let api: Api<Event> = Api::default_namespaced(server.client().await);
    let selector = format!("involvedObject.name={pod}");
    let mut events = watcher(api, watcher::Config::default().fields(&selector))
        .applied_objects()
        .boxed();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.next().await {
            let event = event.expect("watching events");
            let ok = event.reason.as_deref() == Some(reason)
                && message(event.message.as_deref().unwrap_or_default());
            if ok {
                return;
            }
        }
    });
    if found.await.is_err() {
        panic!(
            "{pod}: no {reason} event in {:#?}",
            events_of(server, pod).await
        );
    }
}

/// A pod with this spec.
fn pod(name: &str, spec: serde_json::Value) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn sh(image: &str, name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "image": image, "command": ["sh", "-c", script]})
}

fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// A container that stops at SIGTERM after writing `word` to /hook/stop (a host directory).
const TRAP: &str = "trap 'echo WORD >> /hook/stop; exit 0' TERM; while true; do sleep 0.2; done";

fn hook_volume(dir: &Path) -> serde_json::Value {
    serde_json::json!([{"name": "hook", "hostPath": {"path": dir.display().to_string(), "type": "Directory"}}])
}

const HOOK_MOUNT: &str = r#"[{"name": "hook", "mountPath": "/hook"}]"#;

/// Prints what the pods and their events say when the test fails.
struct Diagnose<'a>(&'a Server);

impl Drop for Diagnose<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let k = self.0.kubectl();
        let pods = k.run(&["get", "pods", "-o", "yaml"]);
        let events = k.run(&["get", "events"]);
        eprintln!(
            "{}\n{}",
            String::from_utf8_lossy(&pods.stdout),
            String::from_utf8_lossy(&events.stdout)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_hooks_and_sidecars() {
    let Some((_registry, cluster, image)) = setup(&[]).await else {
        return;
    };
    let server = &cluster.server;
    let _diagnose = Diagnose(server);
    let mount: serde_json::Value = serde_json::from_str(HOOK_MOUNT).unwrap();
    let hooks_dir = tempfile::tempdir().unwrap();
    let sidecar_dir = tempfile::tempdir().unwrap();

    let liveness_exec = with(
        sh(&image, "c", "exec sleep 3600"),
        serde_json::json!({"livenessProbe": {
            "exec": {"command": ["sh", "-c", "echo dead; exit 1"]},
            "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 2,
            "terminationGracePeriodSeconds": 1}}),
    );
    let liveness_http = with(
        sh(&image, "c", "exec sleep 3600"),
        serde_json::json!({"ports": [{"name": "health", "containerPort": 8081}],
            "livenessProbe": {"httpGet": {"port": "health", "path": "/healthz"},
            "periodSeconds": 1, "failureThreshold": 1}}),
    );
    let slow_probe = with(
        sh(&image, "c", "exec sleep 3600"),
        serde_json::json!({"readinessProbe": {"exec": {"command": ["sleep", "5"]},
            "timeoutSeconds": 1, "periodSeconds": 1}}),
    );
    let readiness = with(
        sh(&image, "c", "sleep 5; touch /tmp/ready; exec sleep 3600"),
        serde_json::json!({"readinessProbe": {
            "exec": {"command": ["test", "-e", "/tmp/ready"]}, "periodSeconds": 1}}),
    );
    let startup = with(
        sh(
            &image,
            "c",
            "sleep 5; mkdir -p /www; echo ok > /www/index.html; exec httpd -f -p 8080 -h /www",
        ),
        serde_json::json!({"ports": [{"name": "web", "containerPort": 8080}],
            "startupProbe": {"httpGet": {"port": "web", "path": "/index.html"},
                             "periodSeconds": 1, "failureThreshold": 30},
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}),
    );
    let hooks = with(
        sh(&image, "c", &TRAP.replace("WORD", "term")),
        serde_json::json!({"volumeMounts": mount, "lifecycle": {
            "postStart": {"exec": {"command": ["sh", "-c", "echo started > /hook/poststart"]}},
            "preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /hook/stop"]}}}}),
    );
    let sidecar = with(
        sh(
            &image,
            "side",
            &format!("touch /hook/side-up; {}", TRAP.replace("WORD", "side")),
        ),
        serde_json::json!({"restartPolicy": "Always", "volumeMounts": mount,
            "startupProbe": {"exec": {"command": ["test", "-e", "/hook/side-up"]},
                             "periodSeconds": 1}}),
    );
    let main = with(
        sh(
            &image,
            "main",
            &format!(
                "test -e /hook/side-up && echo saw-sidecar; {}",
                TRAP.replace("WORD", "main")
            ),
        ),
        serde_json::json!({"volumeMounts": mount}),
    );
    let finite_sidecar = with(
        sh(
            &image,
            "side",
            "trap 'exit 0' TERM; while true; do sleep 0.2; done",
        ),
        serde_json::json!({"restartPolicy": "Always"}),
    );
    // Exits a second after each start; the pod's restartPolicy Never does not apply to it.
    let crashing_sidecar = with(
        sh(&image, "side", "sleep 1; exit 1"),
        serde_json::json!({"restartPolicy": "Always"}),
    );
    let manifests = [
        pod(
            "liveness-exec",
            serde_json::json!({"containers": [liveness_exec]}),
        ),
        pod(
            "liveness-http",
            serde_json::json!({"terminationGracePeriodSeconds": 1,
            "containers": [liveness_http]}),
        ),
        pod("readiness", serde_json::json!({"containers": [readiness]})),
        pod(
            "startup",
            serde_json::json!({"terminationGracePeriodSeconds": 1,
            "containers": [startup]}),
        ),
        pod(
            "hooks",
            serde_json::json!({"terminationGracePeriodSeconds": 20,
            "volumes": hook_volume(hooks_dir.path()), "containers": [hooks]}),
        ),
        pod(
            "sidecar",
            serde_json::json!({"terminationGracePeriodSeconds": 20,
            "volumes": hook_volume(sidecar_dir.path()),
            "initContainers": [sidecar], "containers": [main]}),
        ),
        pod(
            "sidecar-done",
            serde_json::json!({"restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5, "initContainers": [finite_sidecar],
            "containers": [sh(&image, "main", "sleep 1")]}),
        ),
        pod(
            "slow-probe",
            serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [slow_probe]}),
        ),
        pod(
            "sidecar-restarts",
            serde_json::json!({"restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1, "initContainers": [crashing_sidecar],
            "containers": [sh(&image, "main", "exec sleep 3600")]}),
        ),
    ];
    for m in &manifests {
        apply(server, m).await;
    }
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);

    let liveness = async {
        for name in ["liveness-exec", "liveness-http"] {
            let restarted = |p: Option<&Pod>| {
                p.and_then(|p| status(p, "c"))
                    .is_some_and(|c| c.restart_count >= 1)
            };
            wait_for(&pods, name, "a restart after failed liveness", restarted).await;
            wait_event(server, name, "Killing", |m| {
                m == "Container c failed liveness probe, will be restarted"
            })
            .await;
        }
        wait_event(server, "liveness-exec", "Unhealthy", |m| {
            m == "Liveness probe failed: dead\n"
        })
        .await;
        let ip = pods
            .get("liveness-http")
            .await
            .unwrap()
            .status
            .unwrap()
            .pod_ip
            .unwrap();
        let expected = format!(
            "Liveness probe failed: Get \"http://{ip}:8081/healthz\": dial tcp {ip}:8081: connect: connection refused"
        );
        wait_event(server, "liveness-http", "Unhealthy", |m| m == expected).await;
    };

    let readiness = async {
        // Runs, but is not ready until the file exists.
        let unready = wait_for(&pods, "readiness", "running unready", |p: Option<&Pod>| {
            p.and_then(|p| status(p, "c")).is_some_and(running)
        })
        .await
        .unwrap();
        assert!(!status(&unready, "c").unwrap().ready);
        assert_eq!(condition(&unready, "Ready").as_deref(), Some("False"));
        kubectl(
            server,
            &[
                "wait",
                "--for=condition=Ready",
                "pod/readiness",
                "--timeout=30s",
            ],
        )
        .await;
        let ready = pods.get("readiness").await.unwrap();
        assert_eq!(
            condition(&ready, "ContainersReady").as_deref(),
            Some("True")
        );
        wait_event(server, "readiness", "Unhealthy", |m| {
            m.starts_with("Readiness probe failed")
        })
        .await;
        wait_event(server, "slow-probe", "Unhealthy", |m| {
            m == "Readiness probe failed: command \"sleep 5\" timed out"
        })
        .await;
    };

    let startup = async {
        let starting = wait_for(&pods, "startup", "running", |p: Option<&Pod>| {
            p.and_then(|p| status(p, "c")).is_some_and(running)
        })
        .await
        .unwrap();
        let c = status(&starting, "c").unwrap();
        assert_eq!((c.started, c.ready), (Some(false), false), "{c:?}");
        kubectl(
            server,
            &[
                "wait",
                "--for=condition=Ready",
                "pod/startup",
                "--timeout=30s",
            ],
        )
        .await;
        let c = pods.get("startup").await.unwrap();
        assert_eq!(status(&c, "c").unwrap().started, Some(true));
        wait_event(server, "startup", "Unhealthy", |m| {
            m.starts_with("Startup probe failed: Get \"http://")
        })
        .await;
    };

    let hooks = async {
        kubectl(
            server,
            &[
                "wait",
                "--for=condition=Ready",
                "pod/hooks",
                "--timeout=30s",
            ],
        )
        .await;
        let started = std::fs::read_to_string(hooks_dir.path().join("poststart"));
        assert_eq!(started.unwrap(), "started\n", "postStart ran before Ready");
        kubectl(server, &["delete", "pod", "hooks", "--wait=true"]).await;
        let stop = std::fs::read_to_string(hooks_dir.path().join("stop")).unwrap();
        assert_eq!(stop, "prestop\nterm\n", "preStop ran before SIGTERM");
    };

    let sidecars = async {
        kubectl(
            server,
            &[
                "wait",
                "--for=condition=Ready",
                "pod/sidecar",
                "--timeout=30s",
            ],
        )
        .await;
        let p = pods.get("sidecar").await.unwrap();
        let side = status(&p, "side").unwrap();
        assert!(
            running(side) && side.started == Some(true) && side.ready,
            "{side:?}"
        );
        let logs = kubectl(server, &["logs", "sidecar", "-c", "main"]).await;
        assert_eq!(logs.trim(), "saw-sidecar", "the sidecar started first");
        kubectl(server, &["delete", "pod", "sidecar", "--wait=true"]).await;
        let stop = std::fs::read_to_string(sidecar_dir.path().join("stop")).unwrap();
        assert_eq!(
            stop, "main\nside\n",
            "the sidecar stops after the main container"
        );

        let done = wait_for(&pods, "sidecar-done", "Succeeded", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.phase.clone()).as_deref() == Some("Succeeded")
        })
        .await
        .unwrap();
        let side = status(&done, "side").unwrap();
        assert!(!running(side), "the sidecar was stopped: {side:?}");
    };

    let sidecar_restarts = async {
        let restarted = |p: Option<&Pod>| {
            p.and_then(|p| status(p, "side"))
                .is_some_and(|c| c.restart_count >= 1)
        };
        let p = wait_for(
            &pods,
            "sidecar-restarts",
            "the sidecar restarted",
            restarted,
        )
        .await
        .unwrap();
        let main = status(&p, "main").unwrap();
        assert!(running(main) && main.restart_count == 0, "{main:?}");
        assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    };

    let all = async {
        tokio::join!(
            liveness,
            readiness,
            startup,
            hooks,
            sidecars,
            sidecar_restarts
        )
    };

    tokio::time::timeout(Duration::from_secs(80), all)
        .await
        .expect("the scenarios finish in time");
}
