//! The kubelet end to end: `berth up` with its kubelet, a real OCI registry (Debian's
//! docker-registry) on loopback holding a busybox image the test builds and pushes, and real
//! kubectl. Containers are real: namespaces, overlayfs, cgroups, a veth per pod.

mod common;
#[path = "support/kubelet.rs"]
mod kubelet_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::{can_run_kubelet, Cluster};
use common::{apply, kubectl, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kubelet_support::{registry, setup, IMAGE_REPO};
use registry::Registry;

fn pod_manifest(name: &str, image: &str, policy: &str, command: &str, resources: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}"}},
            "spec": {{"restartPolicy": "{policy}", "terminationGracePeriodSeconds": 5,
              "containers": [{{"name": "c", "image": "{image}",
                "command": ["sh", "-c", {command:?}], "resources": {resources}}}]}}}}"#
    )
}

fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn waiting_reason(pod: &Pod) -> Option<&str> {
    container_status(pod)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .as_deref()
}

fn terminated(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStateTerminated> {
    container_status(pod)?.state.as_ref()?.terminated.as_ref()
}

/// What the pods and their events say, for a failure message.
fn diagnose(server: &common::Server) -> String {
    let k = server.kubectl();
    let pods = k.run(&["get", "pods", "-o", "yaml"]);
    let events = k.run(&["get", "events"]);
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&pods.stdout),
        String::from_utf8_lossy(&events.stdout)
    )
}

/// One HTTP GET over plain TCP to a pod (an address inside a namespace this test's cluster made).
fn http_get(ip: &str, port: u16) -> String {
    let mut stream = TcpStream::connect((ip, port)).expect("connecting to the pod");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .expect("reading the response");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_real_containers_and_leaves_nothing_behind() {
    let Some((_registry, cluster, image)) = setup(&[]).await else {
        return;
    };
    let server = &cluster.server;
    let deployment = format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web"}},
            "spec": {{"replicas": 2, "selector": {{"matchLabels": {{"app": "web"}}}},
              "template": {{"metadata": {{"labels": {{"app": "web"}}}},
                "spec": {{"terminationGracePeriodSeconds": 5, "containers": [{{"name": "httpd", "image": "{image}",
                  "command": ["sh", "-c", "mkdir -p /www && echo \"$(hostname) $$$$ $(ls /proc | grep -c '^[0-9]') $(test -e {host_dir} && echo visible || echo hidden)\" > /www/index.html && exec httpd -f -p 8080 -h /www"],
                  "readinessProbe": {{"tcpSocket": {{"port": 8080}}, "periodSeconds": 1}}}}]}}}}}}}}"#,
        host_dir = cluster.data_dir.display()
    );
    apply(server, &deployment).await;
    let rollout = server
        .kubectl()
        .run(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(rollout.status.success(), "rollout: {}", diagnose(server));

    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    let list = pods.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    let mut uids = Vec::new();
    for pod in &list.items {
        let name = pod.metadata.name.clone().unwrap();
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"), "{name}");
        assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
        let cs = container_status(pod).unwrap();
        assert!(cs.ready && cs.container_id.as_deref().unwrap().starts_with("berth://"));
        assert!(cs.image_id.contains("@sha256:"), "{}", cs.image_id);
        let ip = status.pod_ip.clone().expect("a pod IP");
        // Served from inside the container: its own hostname, its shell is pid 1 and sees a
        // handful of processes (its own), and not the host's files (the cluster's data dir).
        let body = http_get(&ip, 8080);
        let line = body.lines().last().unwrap_or_default().to_owned();
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{name} at {ip}: {body}");
        assert_eq!(
            (fields[0], fields[1], fields[3]),
            (name.as_str(), "1", "hidden"),
            "{line}"
        );
        let seen: usize = fields[2].parse().unwrap();
        assert!(seen < 10, "the container sees {seen} processes");
        // Its shim is the small `berth-shim` binary, not the whole of `berth`.
        let uid = pod.metadata.uid.clone().unwrap();
        let shim_pid =
            std::fs::read_to_string(cluster.data_dir.join("pods").join(&uid).join("shim.pid"))
                .unwrap();
        let exe = std::fs::read_link(format!("/proc/{}/exe", shim_pid.trim())).unwrap();
        assert_eq!(exe.file_name().unwrap(), "berth-shim", "{}", exe.display());
        uids.push(uid);
    }

    kubectl(server, &["delete", "deployment", "web", "--wait=true"]).await;
    // Each pod is gone once its kubelet has stopped it and deleted it for good (watched).
    for pod in &list.items {
        let name = pod.metadata.name.clone().unwrap();
        wait_for(&pods, &name, "deleted", |p: Option<&Pod>| p.is_none()).await;
    }
    // Nothing left on the host: processes, mounts, cgroups, links.
    for uid in &uids {
        let pod_dir = cluster.data_dir.join("pods").join(uid);
        assert!(!pod_dir.exists(), "{} still exists", pod_dir.display());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(uid.as_str()),
            "a mount of pod {uid} is left"
        );
        let links = std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&links.stdout).contains(uid.as_str()),
            "a link of pod {uid} is left"
        );
        for dir in cluster.cgroup_dirs() {
            let found = std::process::Command::new("find")
                .arg(&dir)
                .args(["-name", &format!("pod{uid}")])
                .output()
                .unwrap();
            assert!(
                found.stdout.is_empty(),
                "a cgroup of pod {uid} is left under {}",
                dir.display()
            );
        }
        let procs = std::process::Command::new("pgrep")
            .args(["-f", uid.as_str()])
            .output()
            .unwrap();
        assert!(
            procs.stdout.is_empty(),
            "processes of pod {uid} are left: {:?}",
            String::from_utf8_lossy(&procs.stdout)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_back_off_limits_are_enforced_and_missing_images_are_reported() {
    let Some((registry, cluster, image)) = setup(&["--pod-pids-limit", "32"]).await else {
        return;
    };
    let server = &cluster.server;
    let none = "{}";
    let manifests = [
        pod_manifest("crash", &image, "Always", "exit 3", none),
        pod_manifest("oom", &image, "Never", "head -c 200m /dev/zero | tail", r#"{"limits": {"memory": "32Mi"}}"#),
        pod_manifest(
            "forkbomb",
            &image,
            "Never",
            "(for i in $(seq 64); do sleep 30 & done) 2>/tmp/err; read -r line < /tmp/err; case $line in *fork*) exit 42;; esac; exit 0",
            none,
        ),
        pod_manifest("cpuhog", &image, "Never", "while :; do :; done", r#"{"limits": {"cpu": "100m"}}"#),
        pod_manifest("missing", &format!("{}/berth-test/missing:1", registry.host()), "Always", "true", none),
    ];
    for m in &manifests {
        apply(server, m).await;
    }
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);

    // The back-off grows: 10 s, then 20 s.
    let crash = wait_for(&pods, "crash", "a second back-off", |p: Option<&Pod>| {
        p.and_then(container_status)
            .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
            .is_some_and(|m| m.starts_with("back-off 20s"))
    })
    .await
    .unwrap();
    assert_eq!(waiting_reason(&crash), Some("CrashLoopBackOff"));
    let cs = container_status(&crash).unwrap();
    assert!(cs.restart_count >= 1);
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));

    let oom = wait_for(&pods, "oom", "the OOM kill", |p: Option<&Pod>| {
        p.and_then(terminated).is_some()
    })
    .await
    .unwrap();
    let t = terminated(&oom).unwrap();
    assert_eq!(
        (t.reason.as_deref(), t.exit_code),
        (Some("OOMKilled"), 137),
        "{t:?}"
    );

    let bomb = wait_for(
        &pods,
        "forkbomb",
        "the fork bomb to stop",
        |p: Option<&Pod>| p.and_then(terminated).is_some(),
    )
    .await
    .unwrap();
    assert_eq!(
        terminated(&bomb).unwrap().exit_code,
        42,
        "pids.max must have refused a fork"
    );

    // The CPU hog is throttled by its cgroup (cpu.stat of the container, v1 or v2).
    let hog = wait_for(&pods, "cpuhog", "running", |p: Option<&Pod>| {
        p.and_then(container_status).is_some_and(|c| c.ready)
    })
    .await
    .unwrap();
    let id = container_status(&hog)
        .unwrap()
        .container_id
        .clone()
        .unwrap();
    let id = id.trim_start_matches("berth://");
    let throttled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            for dir in cluster.cgroup_dirs() {
                let found = std::process::Command::new("find")
                    .arg(&dir)
                    .args(["-type", "d", "-name", id])
                    .output()
                    .unwrap();
                for path in String::from_utf8_lossy(&found.stdout).lines() {
                    let stat =
                        std::fs::read_to_string(format!("{path}/cpu.stat")).unwrap_or_default();
                    let n = stat
                        .lines()
                        .find_map(|l| l.strip_prefix("nr_throttled "))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    if n > 0 {
                        return n;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert!(throttled.await.expect("the CPU hog throttled") > 0);

    let missing = wait_for(&pods, "missing", "ImagePullBackOff", |p: Option<&Pod>| {
        p.and_then(waiting_reason) == Some("ImagePullBackOff")
    })
    .await
    .unwrap();
    assert!(waiting_reason(&missing).is_some());
    let events = kubectl(
        server,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=missing",
        ],
    )
    .await;
    assert!(
        events.contains("Failed to pull image") && events.contains("manifest unknown"),
        "{events}"
    );
}

/// The containers the pod's shim knows, straight from its socket: (id, exit code if exited).
fn shim_state(cluster: &Cluster, uid: &str) -> Vec<(String, Option<i64>)> {
    use std::os::unix::net::UnixStream;
    let socket = cluster.data_dir.join("pods").join(uid).join("shim.sock");
    let mut stream = UnixStream::connect(&socket).expect("connecting to the shim");
    stream.write_all(b"{\"op\":\"state\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut line).unwrap();
    let state: serde_json::Value = serde_json::from_str(&line).unwrap();
    state["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["exit"]["code"].as_i64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_survive_a_kubelet_kill_and_exit_codes_are_not_lost() {
    let Some((_registry, mut cluster, image)) = setup(&[]).await else {
        return;
    };
    let signal = tempfile::tempdir().unwrap();
    apply(
        &cluster.server,
        &pod_manifest("sleeper", &image, "Always", "exec sleep 3600", "{}"),
    )
    .await;
    // Exits 7 once the test lets it: while no kubelet runs.
    let exiter = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "exiter"}},
            "spec": {{"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
              "volumes": [{{"name": "signal", "hostPath": {{"path": "{}", "type": "Directory"}}}}],
              "containers": [{{"name": "c", "image": "{image}",
                "volumeMounts": [{{"name": "signal", "mountPath": "/signal"}}],
                "command": ["sh", "-c", "while [ ! -e /signal/go ]; do sleep 0.1; done; exit 7"]}}]}}}}"#,
        signal.path().display()
    );
    apply(&cluster.server, &exiter).await;
    let pods: Api<Pod> = Api::default_namespaced(cluster.server.client().await);
    let running = |p: Option<&Pod>| p.and_then(container_status).is_some_and(|c| c.ready);
    let before = wait_for(&pods, "sleeper", "running", running)
        .await
        .unwrap();
    let exiter = wait_for(&pods, "exiter", "running", running).await.unwrap();
    let exiter_uid = exiter.metadata.uid.clone().unwrap();
    let id_before = container_status(&before).unwrap().container_id.clone();

    cluster.server.kill9();
    std::fs::write(signal.path().join("go"), "").unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(30), async {
        while !shim_state(&cluster, &exiter_uid)
            .iter()
            .any(|(_, code)| *code == Some(7))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    exited
        .await
        .expect("the container exited while the kubelet was down");
    cluster.restart_stopped();

    let pods: Api<Pod> = Api::default_namespaced(cluster.server.client().await);
    let exiter = wait_for(&pods, "exiter", "its exit reported", |p: Option<&Pod>| {
        p.and_then(terminated).is_some()
    })
    .await
    .unwrap();
    assert_eq!(terminated(&exiter).unwrap().exit_code, 7);
    let after = pods.get("sleeper").await.unwrap();
    let cs = container_status(&after).unwrap();
    assert_eq!(cs.container_id, id_before, "the container kept running");
    assert_eq!(cs.restart_count, 0);
    assert!(cs.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_work_through_the_api_server() {
    let Some((_registry, cluster, image)) = setup(&[]).await else {
        return;
    };
    let server = &cluster.server;
    let none = "{}";
    apply(
        server,
        &pod_manifest("sleeper", &image, "Always", "exec sleep 3600", none),
    )
    .await;
    apply(
        server,
        &pod_manifest(
            "counter",
            &image,
            "Never",
            "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done; echo done >&2",
            none,
        ),
    )
    .await;
    apply(
        server,
        &pod_manifest(
            "restarter",
            &image,
            "Always",
            "echo run at $(date +%s%N); exit 1",
            none,
        ),
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    let running = |p: Option<&Pod>| p.and_then(container_status).is_some_and(|c| c.ready);
    wait_for(&pods, "sleeper", "running", running).await;
    wait_for(&pods, "counter", "running", |p: Option<&Pod>| {
        p.and_then(container_status)
            .is_some_and(|c| c.container_id.is_some())
    })
    .await;

    // Follows the output until the container exits.
    let followed = kubectl(server, &["logs", "-f", "counter"]).await;
    assert_eq!(followed, "line 1\nline 2\nline 3\nline 4\nline 5\ndone\n");
    let tail = kubectl(server, &["logs", "counter", "--tail", "2"]).await;
    assert_eq!(tail, "line 5\ndone\n");

    let exec = server.kubectl().run(&[
        "exec",
        "sleeper",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; cat /proc/1/cmdline | tr '\\0' ' '; exit 3",
    ]);
    assert_eq!(exec.status.code(), Some(3), "{exec:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "out\nsleep 3600 ");
    assert_eq!(
        String::from_utf8_lossy(&exec.stderr),
        "err\ncommand terminated with exit code 3\n"
    );
    let echoed = server
        .kubectl()
        .ok_stdin(&["exec", "-i", "sleeper", "--", "cat"], "hello\n");
    assert_eq!(echoed, "hello\n");
    // A terminal: kubectl wants one on its side too, so it runs under script(1).
    let k = server.kubectl();
    let line = format!(
        "{} --kubeconfig {} --cache-dir {} exec -i -t sleeper -- sh -c 'test -t 0 && echo a-tty'",
        common::kubectl_binary().display(),
        k.kubeconfig.display(),
        k.cache_dir.display()
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tty.stdout).contains("a-tty"),
        "{tty:?}"
    );

    // shareProcessNamespace: the second container is Ready only once it sees the first one's
    // process, and both see each other's.
    let shared = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "shared"}},
            "spec": {{"shareProcessNamespace": true, "terminationGracePeriodSeconds": 1,
              "containers": [
                {{"name": "a", "image": "{image}", "command": ["sleep", "3600"]}},
                {{"name": "b", "image": "{image}", "command": ["sh", "-c",
                  "until ps | grep -q '[s]leep 3600'; do sleep 0.1; done; touch /tmp/sees-a; exec sleep 3601"],
                  "readinessProbe": {{"exec": {{"command": ["test", "-e", "/tmp/sees-a"]}}, "periodSeconds": 1}}}}]}}}}"#
    );
    apply(server, &shared).await;
    wait_for(
        &pods,
        "shared",
        "both containers Ready",
        |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref())
                .is_some_and(|cs| cs.len() == 2 && cs.iter().all(|c| c.ready))
        },
    )
    .await;
    let ps = kubectl(server, &["exec", "shared", "-c", "a", "--", "ps"]).await;
    assert!(
        ps.contains("sleep 3600") && ps.contains("sleep 3601"),
        "{ps}"
    );

    // --previous: the run before the current one.
    wait_for(&pods, "restarter", "a restart", |p: Option<&Pod>| {
        p.and_then(container_status)
            .is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    let previous = kubectl(server, &["logs", "restarter", "--previous"]).await;
    assert!(previous.starts_with("run at "), "{previous}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_evicts_best_effort_pods_first() {
    // A threshold no host meets: the node is always short of memory, as far as this kubelet
    // knows, without the test taking any memory from the machine.
    let Some((_registry, cluster, image)) = setup(&[
        "--eviction-hard",
        "memory.available<1000Ti,nodefs.available<1%",
    ])
    .await
    else {
        return;
    };
    let server = &cluster.server;
    // The node is tainted memory-pressure:NoSchedule; these pods tolerate it to be placed.
    let pod = |name: &str, resources: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
                "spec": {{"terminationGracePeriodSeconds": 1,
                  "tolerations": [{{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists"}}],
                  "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "3600"],
                    "resources": {resources}}}]}}}}"#
        )
    };
    apply(
        server,
        &pod(
            "guaranteed",
            r#"{"limits": {"cpu": "100m", "memory": "64Mi"}}"#,
        ),
    )
    .await;
    apply(server, &pod("besteffort", "{}")).await;
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    let evicted = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.reason.as_deref() == Some("Evicted"))
    };
    let victim = wait_for(&pods, "besteffort", "its eviction", evicted)
        .await
        .unwrap();
    let status = victim.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("The node was low on resource: memory."),
        "{:?}",
        status.message
    );
    let survivor = pods.get("guaranteed").await.unwrap();
    assert!(
        !evicted(Some(&survivor)),
        "the Guaranteed pod goes after the BestEffort one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_run_from_files_with_mirror_pods() {
    if let Err(why) = can_run_kubelet() {
        registry::skip(&why);
        return;
    }
    let Some(registry) = Registry::start_or_skip() else {
        return;
    };
    let host = registry.host();
    registry::push_busybox(&host, IMAGE_REPO).await;
    let manifests = tempfile::tempdir().unwrap();
    let manifest = manifests.path().join("static-web.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  labels:\n    tier: node\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {host}/{IMAGE_REPO}\n    command: [sleep, \"3600\"]\n"
        ),
    )
    .unwrap();
    let dir = manifests.path().display().to_string();
    let cluster = Cluster::up(&["--insecure-registry", &host, "--pod-manifest-path", &dir]);
    let server = &cluster.server;
    let name = format!("static-web-{}", cluster.node);
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    let ready = |p: Option<&Pod>| p.and_then(container_status).is_some_and(|c| c.ready);
    let mirror = wait_for(&pods, &name, "the mirror pod Ready", ready)
        .await
        .unwrap();
    let annotations = mirror.metadata.annotations.clone().unwrap_or_default();
    assert!(
        annotations.contains_key("kubernetes.io/config.mirror"),
        "{annotations:?}"
    );
    assert_eq!(
        mirror.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Node"
    );
    let running_id = container_status(&mirror).unwrap().container_id.clone();

    // Deleting the mirror does not stop the pod: the mirror comes back, same container.
    let old_uid = mirror.metadata.uid.clone();
    kubectl(server, &["delete", "pod", &name, "--wait=true"]).await;
    let back = wait_for(&pods, &name, "the mirror again", |p: Option<&Pod>| {
        p.is_some_and(|p| p.metadata.uid != old_uid) && ready(p)
    })
    .await
    .unwrap();
    assert_eq!(container_status(&back).unwrap().container_id, running_id);

    // Removing the file stops it and removes the mirror.
    std::fs::remove_file(&manifest).unwrap();
    wait_for(&pods, &name, "the mirror gone", |p: Option<&Pod>| {
        p.is_none()
    })
    .await;
}
