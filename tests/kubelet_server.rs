//! The kubelet's HTTPS server in-process, over a fake container lookup (log files in a temporary
//! directory, exec as host processes), behind a real `berth apiserver`: real kubectl's `logs`
//! and `exec` go through the API server's pods/log and pods/exec proxies to it.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_kubelet::server::{self, ContainerLookup, ExecError, ExecProcess};
use common::{kubectl, kubectl_fails, raw, LineReader, Server};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const NODE: &str = "node-1";

/// Containers of pod `default/web`: `app` (logs in `<root>/app`) and `sidecar` (no logs yet).
struct FakeContainers {
    root: PathBuf,
    running: AtomicBool,
}

impl ContainerLookup for FakeContainers {
    fn log_dir(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
        (namespace == "default" && pod == "web" && matches!(container, "app" | "sidecar"))
            .then(|| self.root.join(container))
    }

    fn is_running(&self, _: &str, _: &str, _: &str) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    fn exec(
        &self,
        _: &str,
        _: &str,
        _: &str,
        command: Vec<String>,
        tty: bool,
    ) -> Result<ExecProcess, ExecError> {
        server::host_exec(command, tty)
    }

    fn pods(&self) -> Vec<Pod> {
        Vec::new()
    }
}

fn record(time: &str, stream: &str, tag: &str, text: &str) -> String {
    format!("{time} {stream} {tag} {text}\n")
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Attempt 0 (previous), attempt 1 rotated once (old records) and current (recent records).
fn write_logs(dir: &Path) {
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::create_dir_all(dir.join("sidecar")).unwrap();
    let old = "2020-01-01T00:00:00.000000001Z";
    std::fs::write(
        app.join("0.log"),
        record(old, "stdout", "F", "previous one") + &record(old, "stderr", "F", "previous two"),
    )
    .unwrap();
    std::fs::write(
        app.join("1.log.1577836800000000000"),
        record(old, "stdout", "F", "rotated one") + &record(old, "stdout", "F", "rotated two"),
    )
    .unwrap();
    let now = now_rfc3339();
    std::fs::write(
        app.join("1.log"),
        record(&now, "stdout", "F", "current one")
            + &record(&now, "stdout", "P", "joined ")
            + &record(&now, "stdout", "F", "line")
            + &record(&now, "stderr", "F", "current err"),
    )
    .unwrap();
}

/// The kubelet server on a free port, its Node and a Pod bound to it.
struct Cluster {
    server: Server,
    fake: Arc<FakeContainers>,
    kubelet_port: u16,
    _logs: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

async fn cluster() -> Cluster {
    let server = Server::start();
    let logs = tempfile::tempdir().unwrap();
    write_logs(logs.path());
    let fake = Arc::new(FakeContainers {
        root: logs.path().to_path_buf(),
        running: AtomicBool::new(true),
    });
    let pki = berth_apiserver::pki::Pki::load_or_create(&server.data_dir.join("pki")).unwrap();
    let (cert, key) = pki
        .kubelet_serving_cert(NODE, &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .unwrap();
    let tls = server::tls_config(
        &std::fs::read(cert).unwrap(),
        &std::fs::read(key).unwrap(),
        pki.ca_cert_pem().as_bytes(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kubelet_port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(server::serve(listener, tls, fake.clone()));

    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
    }});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"nodeName": NODE, "containers": [
            {"name": "app", "image": "busybox"},
            {"name": "sidecar", "image": "busybox"},
        ]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {
        "phase": "Running",
        "containerStatuses": [
            {"name": "app", "ready": true, "restartCount": 1, "image": "busybox", "imageID": "",
             "containerID": "berth://app-1", "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
             "lastState": {"terminated": {"exitCode": 1, "containerID": "berth://app-0"}}},
            {"name": "sidecar", "ready": false, "restartCount": 0, "image": "busybox", "imageID": "",
             "state": {"waiting": {"reason": "ContainerCreating"}}},
        ],
    }});
    pods.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    Cluster {
        server,
        fake,
        kubelet_port,
        _logs: logs,
        _task: task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_through_the_api_server() {
    let c = cluster().await;
    let s = &c.server;
    let all = "rotated one\nrotated two\ncurrent one\njoined line\ncurrent err\n";
    assert_eq!(kubectl(s, &["logs", "web", "-c", "app"]).await, all);
    assert_eq!(
        kubectl(s, &["logs", "web", "-c", "app", "--tail", "2"]).await,
        "joined line\ncurrent err\n"
    );
    assert_eq!(
        kubectl(s, &["logs", "web", "-c", "app", "--since", "1h"]).await,
        "current one\njoined line\ncurrent err\n"
    );
    assert_eq!(
        kubectl(s, &["logs", "web", "-c", "app", "--previous"]).await,
        "previous one\nprevious two\n"
    );
    let stamped = kubectl(s, &["logs", "web", "-c", "app", "--timestamps", "--tail=1"]).await;
    let (stamp, text) = stamped.split_once(' ').expect("a timestamp and the line");
    assert!(
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).is_ok(),
        "{stamped}"
    );
    assert_eq!(text, "current err\n");
    assert_eq!(
        kubectl(s, &["logs", "web", "-c", "app", "--limit-bytes", "8"]).await,
        "rotated "
    );

    // Errors come back as the Status kubectl prints.
    let err = kubectl_fails(s, &["logs", "web", "-c", "sidecar"]).await;
    assert!(
        err.contains("container \"sidecar\" in pod \"web\" is waiting to start: ContainerCreating"),
        "{err}"
    );
    let err = kubectl_fails(s, &["logs", "web", "-c", "nope"]).await;
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );
    let err = kubectl_fails(s, &["logs", "missing"]).await;
    assert!(err.contains("pods \"missing\" not found"), "{err}");
    let client = s.client().await;
    let res = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/pods/web/log",
        None,
        vec![],
    )
    .await;
    let status = res.assert_status(400, "BadRequest");
    assert_eq!(
        status["message"],
        "a container name must be specified for pod web, choose one of: [app sidecar]"
    );

    // Follow: new records show up as they are written; the stream ends when the container stops.
    let mut child = s
        .kubectl()
        .command()
        .args(["logs", "-f", "web", "-c", "app", "--tail", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = LineReader::new(child.stdout.take().unwrap());
    let wait = Duration::from_secs(20);
    lines.wait_for(wait, |l| l == "current err");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(c.fake.root.join("app/1.log"))
        .unwrap();
    file.write_all(record(&now_rfc3339(), "stdout", "F", "followed one").as_bytes())
        .unwrap();
    lines.wait_for(wait, |l| l == "followed one");
    file.write_all(record(&now_rfc3339(), "stdout", "F", "last words").as_bytes())
        .unwrap();
    c.fake.running.store(false, Ordering::SeqCst);
    lines.wait_for(wait, |l| l == "last words");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "kubectl logs -f ended with {status}");
}

/// A kube client to the kubelet itself, presenting a certificate for `user` in `groups`
/// (`None`: no certificate).
async fn kubelet_client(c: &Cluster, user: Option<(&str, &[&str])>) -> kube::Client {
    let pki = berth_apiserver::pki::Pki::load_or_create(&c.server.data_dir.join("pki")).unwrap();
    let url = format!("https://127.0.0.1:{}", c.kubelet_port);
    let (cert, key) = match user {
        Some((name, groups)) => pki.client_cert(name, groups).unwrap(),
        None => pki.client_cert("unused", &[]).unwrap(),
    };
    let text = berth_apiserver::pki::kubeconfig(&url, pki.ca_cert_pem(), &cert, &key, "u");
    let mut kubeconfig = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    if user.is_none() {
        for auth in &mut kubeconfig.auth_infos {
            auth.auth_info = None;
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_api_server_and_admins_may_call_the_kubelet() {
    let c = cluster().await;
    let path = "/containerLogs/default/web/app?tailLines=1";
    let anonymous = kubelet_client(&c, None).await;
    assert_eq!(raw(&anonymous, "GET", path, None, vec![]).await.code, 401);
    assert_eq!(
        raw(&anonymous, "GET", "/healthz", None, vec![]).await.code,
        200
    );
    let mallory = kubelet_client(&c, Some(("mallory", &["devs"]))).await;
    let res = raw(&mallory, "GET", path, None, vec![]).await;
    assert_eq!(res.code, 403, "{}", String::from_utf8_lossy(&res.body));
    let admin = kubelet_client(&c, Some(("admin", &["system:masters"]))).await;
    let res = raw(&admin, "GET", path, None, vec![]).await;
    assert_eq!(
        (res.code, String::from_utf8_lossy(&res.body).as_ref()),
        (200, "current err\n")
    );
    let apiserver = kubelet_client(&c, Some(("kube-apiserver-kubelet-client", &[]))).await;
    let res = raw(&apiserver, "GET", "/pods", None, vec![]).await;
    assert_eq!(res.json()["kind"], "PodList");
    let res = raw(&apiserver, "GET", "/metrics", None, vec![]).await;
    assert!(String::from_utf8_lossy(&res.body).contains("kubelet_running_pods 0"));
}

/// Runs kubectl with `args` off the async runtime; returns (exit code, stdout, stderr).
async fn kubectl_output(s: &Server, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let kubectl = s.kubectl();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(String::from);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = match stdin {
            Some(input) => kubectl.run_with_stdin(&args, &input),
            None => kubectl.run(&args),
        };
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_through_the_api_server() {
    let c = cluster().await;
    let s = &c.server;
    let script = "echo out; echo err >&2; exit 3";
    let (code, stdout, stderr) = kubectl_output(
        s,
        &["exec", "web", "-c", "app", "--", "sh", "-c", script],
        None,
    )
    .await;
    assert_eq!((code, stdout.as_str()), (3, "out\n"), "stderr: {stderr}");
    assert!(stderr.starts_with("err\n"), "{stderr}");
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "{stderr}"
    );

    // stdin flows in, and its end reaches the process (v5's close signal).
    let (code, stdout, stderr) = kubectl_output(
        s,
        &["exec", "-i", "web", "-c", "app", "--", "tr", "a-z", "A-Z"],
        Some("hello\nworld\n"),
    )
    .await;
    assert_eq!((code, stdout.as_str()), (0, "HELLO\nWORLD\n"), "{stderr}");

    // -t on a real terminal (script gives kubectl one): the process gets a pty of its own.
    let kubectl = s.kubectl();
    let line = format!(
        "{} --kubeconfig {} --cache-dir {} exec -it web -c app -- sh -c 'tty; echo done'",
        common::kubectl_binary().display(),
        kubectl.kubeconfig.display(),
        kubectl.cache_dir.display()
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running script");
        // Kept open until kubectl is done: its terminal must not see an early end of input.
        let stdin = child.stdin.take();
        let out = child.wait_with_output().expect("waiting for script");
        drop(stdin);
        out
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("/dev/pts/") && text.contains("done"),
        "{text:?}"
    );

    // Errors: from the API server before the upgrade, and from the kubelet after it.
    let (code, _, stderr) =
        kubectl_output(s, &["exec", "web", "-c", "nope", "--", "true"], None).await;
    assert!(
        code != 0 && stderr.contains("container nope is not valid for pod web"),
        "{stderr}"
    );
    let (code, _, stderr) = kubectl_output(
        s,
        &["exec", "web", "-c", "app", "--", "/nonexistent/binary"],
        None,
    )
    .await;
    assert!(
        code != 0 && stderr.contains("/nonexistent/binary"),
        "{stderr}"
    );
}
