//! Services end to end: `berth up` with its data plane, real pods from the busybox test image and
//! real kubectl. ClusterIPs are translated by Berth's BPF socket hooks (from pods, and from host
//! processes in the cgroup the cluster's host socket LB covers), names by its cluster DNS.

mod common;
#[path = "support/kubelet.rs"]
mod kubelet_support;
#[path = "support/netclient.rs"]
mod netclient;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::{apply, kubectl, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kubelet_support::setup;
use netclient::{in_pod, GET};

/// `web`: busybox httpd answering its pod's name on 8080, and an echo server on 9000 that says
/// its pod's name first. Ready while /tmp/ready exists.
fn web_deployment(image: &str, replicas: u32) -> String {
    let script = "mkdir -p /www && hostname > /www/index.html \
        && printf '#!/bin/sh\\nhostname\\nexec cat\\n' > /echo && chmod +x /echo \
        && touch /tmp/ready && (nc -ll -p 9000 -e /echo &) && exec httpd -f -p 8080 -h /www";
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web"}},
            "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "web"}}}},
              "template": {{"metadata": {{"labels": {{"app": "web"}}}},
                "spec": {{"terminationGracePeriodSeconds": 2, "containers": [{{"name": "web", "image": "{image}",
                  "command": ["sh", "-c", {script:?}],
                  "readinessProbe": {{"exec": {{"command": ["test", "-e", "/tmp/ready"]}}, "periodSeconds": 1}}}}]}}}}}}}}"#
    )
}

const SERVICES: &str = r#"
{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
   "spec": {"selector": {"app": "web"}, "ports": [
     {"name": "http", "port": 80, "targetPort": 8080},
     {"name": "echo", "port": 9000, "targetPort": 9000}]}},
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
   "spec": {"selector": {"app": "nothing-matches"}, "ports": [{"port": 80}]}}
]}"#;

fn client_pod(image: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "client"}},
            "spec": {{"terminationGracePeriodSeconds": 1,
              "containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "3600"]}}]}}}}"#
    )
}

async fn cluster_ip(server: &common::Server, name: &str) -> String {
    let services: Api<Service> = Api::default_namespaced(server.client().await);
    let svc = services.get(name).await.expect("the service");
    svc.spec.unwrap().cluster_ip.expect("a ClusterIP")
}

/// Names of the `web` pods whose Ready condition is `ready`.
async fn web_pods(server: &common::Server) -> Vec<String> {
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    let list = pods
        .list(&kube::api::ListParams::default().labels("app=web"))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// Runs `script` in the client pod.
fn in_client(server: &common::Server, script: &str) -> Result<String, String> {
    in_pod(server, "client", script)
}

/// A host shell in the cgroup the cluster's host socket LB covers, running `script` with
/// busybox's applets.
fn host_client(cgroup: &std::path::Path, script: &str) -> Command {
    let mut cmd = Command::new("/bin/busybox");
    cmd.env("PATH", "/bin:/usr/bin")
        .args(["sh", "-c"])
        .arg(format!(
            "echo $$ > {}/cgroup.procs && {GET}{script}",
            cgroup.display()
        ));
    cmd
}

async fn deploy(server: &common::Server, image: &str, replicas: u32) {
    apply(server, &web_deployment(image, replicas)).await;
    apply(server, SERVICES).await;
    apply(server, &client_pod(image)).await;
    let rollout = server
        .kubectl()
        .run(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(rollout.status.success(), "rollout: {rollout:?}");
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    wait_for(&pods, "client", "running", |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Running")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_host_reach_services_by_cluster_ip_and_by_name() {
    let Some((_registry, cluster, image)) = setup(&[]).await else {
        return;
    };
    let server = &cluster.server;
    deploy(server, &image, 2).await;
    let web_ip = cluster_ip(server, "web").await;
    let all: BTreeSet<String> = web_pods(server).await.into_iter().collect();
    assert_eq!(all.len(), 2);

    // pod → ClusterIP over TCP: spread over both ready backends.
    let many = in_client(
        server,
        &format!("for i in $(seq 24); do get {web_ip}; done"),
    )
    .expect("wget through the ClusterIP");
    let seen: BTreeSet<String> = many.lines().map(str::to_owned).collect();
    assert_eq!(seen, all, "backends answering through {web_ip}");

    // pod → service by name: the full name and the short one (resolv.conf search path), over
    // the kube-dns ClusterIP (UDP, translated by sendmsg4/recvmsg4).
    for name in ["web.default.svc.cluster.local", "web"] {
        let body = in_client(server, &format!("get {name}"))
            .unwrap_or_else(|e| panic!("GET http://{name}/: {e}"));
        assert!(all.contains(body.trim()), "{name}: {body}");
    }
    let lookup = in_client(server, "nslookup web.default.svc.cluster.local").expect("nslookup");
    assert!(lookup.contains(&web_ip), "{lookup}");

    // A service without endpoints refuses at once instead of black-holing.
    let empty_ip = cluster_ip(server, "empty").await;
    let started = Instant::now();
    let refused = in_client(server, &format!("nc -w 10 {empty_ip} 80 </dev/null"));
    let took = started.elapsed();
    assert!(refused.is_err(), "{refused:?}");
    assert!(took < Duration::from_secs(3), "refusing took {took:?}");

    // host → ClusterIP, TCP and (DNS) UDP.
    let out = host_client(&cluster.host_cgroup(), &format!("get {web_ip}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        all.contains(String::from_utf8_lossy(&out.stdout).trim()),
        "{out:?}"
    );
    let dns_ip = cluster_ip_in(server, "kube-system", "kube-dns").await;
    let out = host_client(
        &cluster.host_cgroup(),
        &format!("busybox nslookup web.default.svc.cluster.local {dns_ip}"),
    )
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&web_ip),
        "{out:?}"
    );
}

async fn cluster_ip_in(server: &common::Server, ns: &str, name: &str) -> String {
    let services: Api<Service> = Api::namespaced(server.client().await, ns);
    let svc = services.get(name).await.expect("the service");
    svc.spec.unwrap().cluster_ip.expect("a ClusterIP")
}

/// A long-running connection through a ClusterIP from a host process.
struct Echo {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    backend: String,
}

impl Echo {
    fn connect(cgroup: &std::path::Path, ip: &str) -> Echo {
        let mut child = host_client(cgroup, &format!("exec busybox nc {ip} 9000"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let backend = lines.next().expect("the backend's name").unwrap();
        Echo {
            child,
            stdin,
            lines,
            backend,
        }
    }

    fn round_trip(&mut self, word: &str) {
        writeln!(self.stdin, "{word}").unwrap();
        let back = self.lines.next().map(Result::unwrap);
        assert_eq!(back.as_deref(), Some(word), "echo through {}", self.backend);
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_connections_survive_scaling_readiness_flips_and_a_restart() {
    let Some((_registry, mut cluster, image)) = setup(&[]).await else {
        return;
    };
    deploy(&cluster.server, &image, 2).await;
    let web_ip = cluster_ip(&cluster.server, "web").await;
    let mut echo = Echo::connect(&cluster.host_cgroup(), &web_ip);
    echo.round_trip("one");

    // Scale up, then take every other backend out of service: new connections go only to the
    // one left, the established one keeps flowing.
    kubectl(
        &cluster.server,
        &["scale", "deployment/web", "--replicas=3"],
    )
    .await;
    let rollout =
        cluster
            .server
            .kubectl()
            .run(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(rollout.status.success(), "{rollout:?}");
    let pods: Api<Pod> = Api::default_namespaced(cluster.server.client().await);
    for other in web_pods(&cluster.server).await {
        if other == echo.backend {
            continue;
        }
        kubectl(&cluster.server, &["exec", &other, "--", "rm", "/tmp/ready"]).await;
        wait_for(&pods, &other, "not ready", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "False"))
        })
        .await;
    }
    echo.round_trip("two");
    // The endpoints change reaches the maps shortly after the pods' Ready conditions change; no
    // watch shows the maps, so look until only the one backend answers, or fail on the deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let batch = in_client(
            &cluster.server,
            &format!("for i in $(seq 10); do get {web_ip}; done"),
        )
        .expect("wget after the readiness flips");
        let answered: BTreeSet<&str> = batch.lines().collect();
        if answered == BTreeSet::from([echo.backend.as_str()]) {
            break;
        }
        assert!(Instant::now() < deadline, "still answering: {answered:?}");
    }

    // kill -9 of `berth up` (its data plane included) and a restart: the connection is not
    // touched, the maps and attachments stay pinned, and new services are programmed again.
    cluster.restart();
    cluster.wait_node_ready().await;
    echo.round_trip("three");
    let fresh = Echo::connect(&cluster.host_cgroup(), &web_ip);
    assert_eq!(fresh.backend, echo.backend);
    drop(fresh);
    echo.round_trip("four");
}
