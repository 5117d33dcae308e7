//! Real kubectl, with the kubeconfig `berth apiserver` writes and kubectl's default flags, against
//! the API server: what a user types and what a user sees.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{header, row, ChildGuard, LineReader, Server};

const APP_V1: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: e2e
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: e2e
data:
  mode: fast
  level: "1"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: e2e
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
      - name: sidecar
        image: busybox:1.36
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: e2e
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
"#;

const WATCH_TIMEOUT: Duration = Duration::from_secs(20);

fn write_file(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("writing a manifest");
    path.to_string_lossy().into_owned()
}

/// kubectl's AGE column: a number and a unit (`0s`, `12s`, `3m2s`).
fn assert_age(age: &str) {
    assert!(
        age.chars().next().is_some_and(|c| c.is_ascii_digit())
            && age.ends_with(['s', 'm', 'h', 'd']),
        "not an age: {age:?}"
    );
}

#[test]
fn api_resources_lists_kinds_with_short_names() {
    let server = Server::start();
    let k = server.kubectl();
    let out = k.ok(&["api-resources"]);
    assert_eq!(
        header(&out),
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert_eq!(row(&out, "pods"), ["pods", "po", "v1", "true", "Pod"]);
    assert_eq!(
        row(&out, "deployments"),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(
        row(&out, "namespaces"),
        ["namespaces", "ns", "v1", "false", "Namespace"]
    );
    assert_eq!(
        row(&out, "services"),
        ["services", "svc", "v1", "true", "Service"]
    );
    assert_eq!(
        row(&out, "configmaps"),
        ["configmaps", "cm", "v1", "true", "ConfigMap"]
    );
}

#[test]
fn apply_creates_then_is_unchanged_then_merges_three_ways_then_delete() {
    let server = Server::start();
    let k = server.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let v1 = write_file(dir.path(), "app.yaml", APP_V1);

    assert_eq!(
        k.ok(&["apply", "-f", &v1]),
        "namespace/e2e created\nconfigmap/settings created\ndeployment.apps/web created\nservice/web created\n"
    );
    assert_eq!(
        k.ok(&["apply", "-f", &v1]),
        "namespace/e2e unchanged\nconfigmap/settings unchanged\ndeployment.apps/web unchanged\nservice/web unchanged\n"
    );

    // Changes made outside the file: a third container and a ConfigMap key. They were never in
    // last-applied-configuration, so the next apply must leave them alone.
    assert_eq!(
        k.ok(&[
            "patch",
            "deployment",
            "web",
            "-n",
            "e2e",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"extra","image":"redis:7"}]}}}}"#,
        ]),
        "deployment.apps/web patched\n"
    );
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "-n",
        "e2e",
        "--type=merge",
        "-p",
        r#"{"data":{"outside":"yes"}}"#,
    ]);

    // The file changes one image and drops the `level` key.
    let v2 = write_file(
        dir.path(),
        "app-v2.yaml",
        &APP_V1
            .replace("nginx:1.25", "nginx:1.26")
            .replace("  level: \"1\"\n", ""),
    );
    assert_eq!(
        k.ok(&["apply", "-f", &v2]),
        "namespace/e2e unchanged\nconfigmap/settings configured\ndeployment.apps/web configured\nservice/web unchanged\n"
    );
    let containers = k.ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        "e2e",
        "-o",
        r#"jsonpath={range .spec.template.spec.containers[*]}{.name}={.image} {.command}{"\n"}{end}"#,
    ]);
    let mut lines: Vec<&str> = containers.lines().map(str::trim_end).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "extra=redis:7",
            "nginx=nginx:1.26",
            r#"sidecar=busybox:1.36 ["sleep","3600"]"#
        ]
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.data}"
        ]),
        r#"{"mode":"fast","outside":"yes"}"#
    );
    let last_applied = k.ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        "e2e",
        "-o",
        r#"jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}"#,
    ]);
    let last_applied: serde_json::Value =
        serde_json::from_str(&last_applied).expect("last-applied-configuration is JSON");
    assert_eq!(
        last_applied["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );

    // Without a namespace controller the Namespace stays Terminating; the objects named in the
    // file are gone.
    assert_eq!(
        k.ok(&["delete", "-f", &v2, "--wait=false"]),
        "namespace \"e2e\" deleted\nconfigmap \"settings\" deleted\ndeployment.apps \"web\" deleted\nservice \"web\" deleted\n"
    );
    for (kind, name) in [
        ("configmaps", "settings"),
        ("deployments.apps", "web"),
        ("services", "web"),
    ] {
        let err = k.fails(&["get", kind, name, "-n", "e2e"]);
        assert_eq!(
            err,
            format!("Error from server (NotFound): {kind} \"{name}\" not found\n")
        );
    }
    let ns = k.ok(&["get", "ns", "e2e"]);
    assert_eq!(header(&ns), ["NAME", "STATUS", "AGE"]);
    assert_eq!(row(&ns, "e2e")[1], "Terminating");
    assert_eq!(
        k.ok(&["get", "ns", "e2e", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
}

#[test]
fn get_prints_tables_and_output_formats() {
    let server = Server::start();
    let k = server.kubectl();
    k.ok_stdin(&["apply", "-f", "-"], APP_V1);
    assert_eq!(
        k.ok(&["run", "p1", "-n", "e2e", "--image=nginx:1.25"]),
        "pod/p1 created\n"
    );

    let pods = k.ok(&["get", "pods", "-n", "e2e"]);
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let p1 = row(&pods, "p1");
    assert_eq!(p1[..4], ["p1", "0/1", "Pending", "0"]);
    assert_age(p1[4]);

    let wide = k.ok(&["get", "pods", "-n", "e2e", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    let p1 = row(&wide, "p1");
    assert_eq!(p1[5..], ["<none>", "<none>", "<none>", "<none>"]);

    let deploys = k.ok(&["get", "deploy", "-n", "e2e"]);
    assert_eq!(
        header(&deploys),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    let web = row(&deploys, "web");
    assert_eq!(web[..4], ["web", "0/2", "0", "0"]);
    assert_age(web[4]);

    let svcs = k.ok(&["get", "svc", "-n", "e2e"]);
    assert_eq!(
        header(&svcs),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let web = row(&svcs, "web");
    assert_eq!(web[1], "ClusterIP");
    let ip: std::net::Ipv4Addr = web[2].parse().expect("a ClusterIP");
    assert_eq!(ip.octets()[..2], [10, 96], "{ip} is in 10.96.0.0/12");
    assert_eq!(web[3..5], ["<none>", "80/TCP"]);

    let ns = k.ok(&["get", "namespaces"]);
    assert_eq!(header(&ns), ["NAME", "STATUS", "AGE"]);
    for name in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "e2e",
    ] {
        assert_eq!(row(&ns, name)[1], "Active", "namespace {name}");
    }

    let yaml = k.ok(&["get", "cm", "settings", "-n", "e2e", "-o", "yaml"]);
    for line in [
        "apiVersion: v1",
        "kind: ConfigMap",
        "  mode: fast",
        "  name: settings",
        "  namespace: e2e",
    ] {
        assert!(yaml.lines().any(|l| l == line), "{line:?} in:\n{yaml}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "cm", "settings", "-n", "e2e", "-o", "json"]))
            .expect("-o json is JSON");
    assert_eq!(json["kind"], "ConfigMap");
    assert_eq!(json["data"]["mode"], "fast");
    assert!(json["metadata"]["resourceVersion"].is_string());
    assert!(json["metadata"]["uid"].is_string());

    let list: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deploy,svc", "-n", "e2e", "-o", "json"]))
            .expect("a list as JSON");
    assert_eq!(list["kind"], "List");
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Deployment", "Service"]);

    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[*].name}"
        ]),
        "2 nginx sidecar"
    );
    assert_eq!(
        k.ok(&["get", "cm", "-n", "e2e", "-o", "name"]),
        "configmap/settings\n"
    );
    let deploy_wide = k.ok(&["get", "deploy", "-n", "e2e", "-o", "wide"]);
    assert_eq!(
        header(&deploy_wide),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(
        row(&deploy_wide, "web")[5..],
        ["nginx,sidecar", "nginx:1.25,busybox:1.36", "app=web"]
    );
}

#[test]
fn get_watch_receives_events() {
    let server = Server::start();
    let k = server.kubectl();
    k.ok_stdin(
        &["create", "-f", "-"],
        &configmap_yaml("w1", "default", &[("a", "1")]),
    );
    let mut watch = ChildGuard(
        k.command()
            .args(["get", "cm", "-w", "--output-watch-events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning kubectl get -w"),
    );
    let mut lines = LineReader::new(watch.0.stdout.take().unwrap());
    // The initial list arrives as ADDED events; after it the watch is open.
    let added = lines.wait_for(WATCH_TIMEOUT, |l| l.starts_with("ADDED"));
    assert_eq!(
        added.split_whitespace().take(3).collect::<Vec<_>>(),
        ["ADDED", "w1", "1"]
    );
    assert_eq!(
        header(&lines.seen[0]),
        ["EVENT", "NAME", "DATA", "AGE"],
        "first line of the watch"
    );

    k.ok(&[
        "patch",
        "cm",
        "w1",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    let modified = lines.wait_for(WATCH_TIMEOUT, |l| l.starts_with("MODIFIED"));
    assert_eq!(
        modified.split_whitespace().take(3).collect::<Vec<_>>(),
        ["MODIFIED", "w1", "2"]
    );

    k.ok(&["delete", "cm", "w1"]);
    let deleted = lines.wait_for(WATCH_TIMEOUT, |l| l.starts_with("DELETED"));
    assert_eq!(
        deleted.split_whitespace().take(2).collect::<Vec<_>>(),
        ["DELETED", "w1"]
    );
}

#[test]
fn get_watch_name_output_sees_a_create() {
    let server = Server::start();
    let k = server.kubectl();
    k.ok_stdin(
        &["create", "-f", "-"],
        &configmap_yaml("first", "default", &[]),
    );
    let mut watch = ChildGuard(
        k.command()
            .args(["get", "cm", "-w", "-o", "name"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning kubectl get -w"),
    );
    let mut lines = LineReader::new(watch.0.stdout.take().unwrap());
    lines.wait_for(WATCH_TIMEOUT, |l| l == "configmap/first");
    k.ok_stdin(
        &["create", "-f", "-"],
        &configmap_yaml("second", "default", &[]),
    );
    lines.wait_for(WATCH_TIMEOUT, |l| l == "configmap/second");
}

#[test]
fn label_annotate_patch_scale_replace_dry_run_explain_describe() {
    let server = Server::start();
    let k = server.kubectl();
    let dir = tempfile::tempdir().unwrap();
    k.ok_stdin(&["apply", "-f", "-"], APP_V1);
    let cm = ["cm", "settings", "-n", "e2e"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&str> = Vec::new();
        v.extend_from_slice(&extra[..1]);
        v.extend_from_slice(&cm);
        v.extend_from_slice(&extra[1..]);
        v
    };

    assert_eq!(
        k.ok(&with(&["label", "tier=backend"])),
        "configmap/settings labeled\n"
    );
    assert_eq!(
        k.ok(&with(&["annotate", "note=hello"])),
        "configmap/settings annotated\n"
    );
    let meta = k.ok(&with(&[
        "get",
        "-o",
        r#"jsonpath={.metadata.labels.tier} {.metadata.annotations.note}"#,
    ]));
    assert_eq!(meta, "backend hello");
    let err = k.fails(&with(&["label", "tier=frontend"]));
    assert!(
        err.contains("'tier' already has a value (backend), and --overwrite is false"),
        "{err}"
    );
    assert_eq!(
        k.ok(&with(&["label", "tier-"])),
        "configmap/settings unlabeled\n"
    );

    // The three patch types.
    assert_eq!(
        k.ok(&with(&[
            "patch",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"1","level":null}}"#
        ])),
        "configmap/settings patched\n"
    );
    assert_eq!(
        k.ok(&with(&[
            "patch",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/data/b","value":"2"},{"op":"replace","path":"/data/mode","value":"slow"}]"#
        ])),
        "configmap/settings patched\n"
    );
    assert_eq!(
        k.ok(&with(&["patch", "-p", r#"{"data":{"c":"3"}}"#])),
        "configmap/settings patched\n"
    );
    assert_eq!(
        k.ok(&with(&["patch", "-p", r#"{"data":{"c":"3"}}"#])),
        "configmap/settings patched (no change)\n"
    );
    assert_eq!(
        k.ok(&with(&["get", "-o", "jsonpath={.data}"])),
        r#"{"a":"1","b":"2","c":"3","mode":"slow"}"#
    );
    // Strategic merge on a list keyed by name: only the named container changes.
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "e2e",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.37"}]}}}}"#,
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image}"
        ]),
        "nginx:1.25 busybox:1.37"
    );
    // A failed JSON patch test leaves the object alone.
    let err = k.fails(&with(&[
        "patch",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/a","value":"nope"}]"#,
    ]));
    assert!(err.contains("test failed"), "{err}");
    assert_eq!(k.ok(&with(&["get", "-o", "jsonpath={.data.a}"])), "1");

    assert_eq!(
        k.ok(&["scale", "deploy", "web", "-n", "e2e", "--replicas=5"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );
    let scale: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/e2e/deployments/web/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);

    // replace with a stale resourceVersion.
    let stale = k.ok(&with(&["get", "-o", "yaml"]));
    let stale_path = write_file(dir.path(), "stale.yaml", &stale);
    k.ok(&with(&["label", "fresh=yes"]));
    assert_eq!(
        k.fails(&["replace", "-f", &stale_path]),
        format!(
            "Error from server (Conflict): error when replacing \"{stale_path}\": Operation cannot be fulfilled on configmaps \"settings\": the object has been modified; please apply your changes to the latest version and try again\n"
        )
    );
    // With the current version the same replace goes through.
    let current = k.ok(&with(&["get", "-o", "yaml"]));
    let current = current.replace("mode: slow", "mode: replaced");
    assert_eq!(
        k.ok_stdin(&["replace", "-f", "-"], &current),
        "configmap/settings replaced\n"
    );
    assert_eq!(
        k.ok(&with(&["get", "-o", "jsonpath={.data.mode}"])),
        "replaced"
    );

    // Server-side dry run stores nothing.
    let dry = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\n  namespace: e2e\ndata:\n  k: v\n";
    let dry_path = write_file(dir.path(), "dry.yaml", dry);
    assert_eq!(
        k.ok(&["create", "--dry-run=server", "-f", &dry_path]),
        "configmap/dry created (server dry run)\n"
    );
    assert_eq!(
        k.fails(&["get", "cm", "dry", "-n", "e2e"]),
        "Error from server (NotFound): configmaps \"dry\" not found\n"
    );

    let explain = k.ok(&["explain", "deployment.spec.replicas"]);
    for line in [
        "GROUP:      apps",
        "KIND:       Deployment",
        "VERSION:    v1",
    ] {
        assert!(
            explain.lines().any(|l| l == line),
            "{line:?} in:\n{explain}"
        );
    }
    assert!(
        explain.contains("FIELD: replicas <integer>"),
        "field header in:\n{explain}"
    );
    assert!(
        explain.contains("Number of desired pods."),
        "description in:\n{explain}"
    );

    let describe = k.ok(&["describe", "deployment", "web", "-n", "e2e"]);
    let field = |name: &str| -> String {
        describe
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .unwrap_or_else(|| panic!("no {name:?} in:\n{describe}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("Name"), "web");
    assert_eq!(field("Namespace"), "e2e");
    assert_eq!(field("Selector"), "app=web");
    assert_eq!(
        field("Replicas"),
        "5 desired | 0 updated | 0 total | 0 available | 0 unavailable"
    );
    assert_eq!(field("StrategyType"), "RollingUpdate");
    assert_eq!(
        field("RollingUpdateStrategy"),
        "25% max unavailable, 25% max surge"
    );
    for image in ["nginx:1.25", "busybox:1.37"] {
        assert!(
            describe
                .lines()
                .any(|l| l.trim() == format!("Image:      {image}")
                    || l.trim().strip_prefix("Image:").map(str::trim) == Some(image)),
            "image {image} in:\n{describe}"
        );
    }
}

#[test]
fn metrics_and_credentials() {
    let server = Server::start();
    let k = server.kubectl();
    k.ok(&["get", "ns"]);
    let metrics = k.ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("apiserver_request_total{") && l.contains("verb=\"list\"")),
        "apiserver_request_total with verb=list in:\n{metrics}"
    );
    assert!(
        // Prometheus text names the counter with its suffix, OpenMetrics without.
        metrics
            .lines()
            .any(|l| l == "# TYPE apiserver_request_total counter"
                || l == "# TYPE apiserver_request counter"),
        "a counter TYPE line in:\n{metrics}"
    );
    assert_eq!(k.ok(&["get", "--raw", "/readyz"]), "ok");
    assert_eq!(k.ok(&["get", "--raw", "/livez"]), "ok");

    // A kubeconfig with the CA but no user credentials.
    let rt = common::runtime();
    rt.block_on(async {
        let anon = server.anonymous_client().await;
        for path in [
            "/api/v1/namespaces",
            "/apis/apps/v1/deployments",
            "/metrics",
        ] {
            common::raw(&anon, "GET", path, None, Vec::new())
                .await
                .assert_status(401, "Unauthorized");
        }
    });
    // A user with no credentials at all makes kubectl prompt for a password, so kubectl gets a
    // token the server does not know.
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig).unwrap();
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(kube::config::AuthInfo {
            token: Some("not-a-known-token".to_string().into()),
            ..Default::default()
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let anon_path = dir.path().join("anonymous.kubeconfig");
    std::fs::write(&anon_path, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
    let anon = common::Kubectl {
        kubeconfig: anon_path,
        cache_dir: dir.path().join("cache"),
    };
    let err = anon.fails(&["get", "--raw", "/api/v1/namespaces"]);
    assert_eq!(
        err,
        "error: You must be logged in to the server (Unauthorized)\n"
    );
}

#[test]
fn bad_requests_get_status_errors() {
    let server = Server::start();
    let k = server.kubectl();
    let rt = common::runtime();
    rt.block_on(async {
        let client = server.client().await;
        let cms = "/api/v1/namespaces/default/configmaps";
        let json = Some("application/json");

        common::raw(
            &client,
            "POST",
            cms,
            json,
            br#"{"apiVersion":"v1","kind":"#.to_vec(),
        )
        .await
        .assert_status(400, "BadRequest");

        let wrong = br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#;
        let status = common::raw(&client, "POST", cms, json, wrong.to_vec())
            .await
            .assert_status(400, "BadRequest");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("apps/v1"), "{message}");

        let with_rv = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"rv","resourceVersion":"7"}}"#;
        let status = common::raw(&client, "POST", cms, json, with_rv.to_vec())
            .await
            .assert_status(400, "BadRequest");
        assert_eq!(
            status["message"],
            "resourceVersion should not be set on objects to be created"
        );

        let bad_name = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#;
        let status = common::raw(&client, "POST", cms, json, bad_name.to_vec())
            .await
            .assert_status(422, "Invalid");
        assert_eq!(status["details"]["kind"], "ConfigMap");
        assert_eq!(status["details"]["name"], "Bad_Name");
        assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldValueInvalid"
        );
        assert!(
            status["message"].as_str().unwrap().starts_with(
                "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": "
            ),
            "{status}"
        );

        common::raw(
            &client,
            "GET",
            "/api/v1/namespaces/default/widgets",
            None,
            Vec::new(),
        )
        .await
        .assert_status(404, "NotFound");
        common::raw(
            &client,
            "GET",
            "/apis/nope.example.com/v1/things",
            None,
            Vec::new(),
        )
        .await
        .assert_status(404, "NotFound");

        let good = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ok"}}"#;
        common::raw(&client, "POST", cms, Some("text/plain"), good.to_vec())
            .await
            .assert_status(415, "UnsupportedMediaType");

        common::raw(
            &client,
            "GET",
            &format!("{cms}?labelSelector=a%20in%20(b"),
            None,
            Vec::new(),
        )
        .await
        .assert_status(400, "BadRequest");
        common::raw(
            &client,
            "GET",
            &format!("{cms}?labelSelector=%21%21"),
            None,
            Vec::new(),
        )
        .await
        .assert_status(400, "BadRequest");

        // The server is still healthy after all of that.
        let created = common::raw(&client, "POST", cms, json, good.to_vec()).await;
        assert_eq!(created.code, 201, "{:?}", created.json());
    });

    // The same mistakes as kubectl users see them.
    assert_eq!(
        k.fails(&["get", "--raw", "/api/v1/namespaces/default/widgets"]),
        "Error from server (NotFound): the server could not find the requested resource\n"
    );
    let err = k.fails(&["get", "cm", "-l", "a in (b"]);
    assert!(
        err.starts_with("error: ") || err.starts_with("Error from server (BadRequest)"),
        "{err}"
    );
    let err = k.fails_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    assert!(
        err.starts_with(
            "The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{err}"
    );
    assert_eq!(
        k.fails(&["get", "widgets"]),
        "error: the server doesn't have a resource type \"widgets\"\n"
    );
}

fn configmap_yaml(name: &str, namespace: &str, data: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
    );
    if !data.is_empty() {
        yaml.push_str("data:\n");
        for (k, v) in data {
            yaml.push_str(&format!("  {k}: \"{v}\"\n"));
        }
    }
    yaml
}

/// 3 MiB is the body limit; one byte more is refused with 413 before it is parsed. The client
/// must be able to read that answer, every time.
///
/// A server that closed with most of the body unread would make the kernel reset the connection,
/// and the client would see ECONNRESET instead of the Status; one attempt shows that only
/// sometimes, 40 make it certain.
#[test]
fn oversize_body_gets_413() {
    let server = Server::start();
    let rt = common::runtime();
    rt.block_on(async {
        let client = server.client().await;
        let cms = "/api/v1/namespaces/default/configmaps";
        let json = Some("application/json");
        const LIMIT: usize = 3 * 1024 * 1024;
        let at_limit = common::raw(&client, "POST", cms, json, sized_configmap("big", LIMIT)).await;
        assert_ne!(
            at_limit.code, 413,
            "a body of exactly 3 MiB is within the limit"
        );
        for _ in 0..40 {
            common::raw(
                &client,
                "POST",
                cms,
                json,
                sized_configmap("big", LIMIT + 1),
            )
            .await
            .assert_status(413, "RequestEntityTooLarge");
        }
    });
}

/// A ConfigMap JSON document of exactly `size` bytes.
fn sized_configmap(name: &str, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":""#
    );
    let tail = r#""}}"#;
    let fill = size - head.len() - tail.len();
    let mut body = head.into_bytes();
    body.resize(body.len() + fill, b'x');
    body.extend_from_slice(tail.as_bytes());
    assert_eq!(body.len(), size);
    body
}

/// kubectl 1.32's imperative generators (`create namespace`, `create configmap`, `create secret`,
/// `create deployment`, `expose`) send their bodies through client-go's typed clientsets, which
/// use `application/vnd.kubernetes.protobuf`.
#[test]
fn imperative_create_commands() {
    let server = Server::start();
    let k = server.kubectl();
    assert_eq!(
        k.ok(&["create", "namespace", "imp"]),
        "namespace/imp created\n"
    );
    assert_eq!(
        k.ok(&[
            "create",
            "configmap",
            "c",
            "-n",
            "imp",
            "--from-literal=a=1"
        ]),
        "configmap/c created\n"
    );
    assert_eq!(
        k.ok(&[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            "imp",
            "--from-literal=a=b"
        ]),
        "secret/s created\n"
    );
    assert_eq!(
        k.ok(&[
            "create",
            "deployment",
            "d",
            "-n",
            "imp",
            "--image=nginx:1.25"
        ]),
        "deployment.apps/d created\n"
    );
    assert_eq!(
        k.ok(&["expose", "deployment", "d", "-n", "imp", "--port=80"]),
        "service/d exposed\n"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "secret",
            "s",
            "-n",
            "imp",
            "-o",
            "jsonpath={.data.a}"
        ]),
        "Yg=="
    );
}

const BAD_FIELDS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
spec:
  replicaz: 2
  selector:
    matchLabels:
      app: bad
  template:
    metadata:
      labels:
        app: bad
    spec:
      containers:
      - name: c
        image: nginx
        imagePulPolicy: Always
"#;

/// kubectl validates with `fieldValidation=Strict` by default; `--validate=warn` turns unknown
/// fields into warnings, `--validate=false` ignores them.
/// The strict decoding error carries kube-apiserver's prefix
/// `Deployment in version "v1" cannot be handled as a Deployment: `.
#[test]
fn unknown_fields_follow_field_validation() {
    let server = Server::start();
    let k = server.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "bad.yaml", BAD_FIELDS);

    let out = k.run_with_stdin(&["apply", "-f", &path, "--validate=warn"], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deployment.apps/bad created\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Warning: unknown field \"spec.replicaz\"\nWarning: unknown field \"spec.template.spec.containers[0].imagePulPolicy\"\n"
    );
    // The unknown field was dropped, so the default applies.
    assert_eq!(
        k.ok(&["get", "deploy", "bad", "-o", "jsonpath={.spec.replicas}"]),
        "1"
    );
    k.ok(&["delete", "deploy", "bad"]);

    assert_eq!(
        k.ok(&["create", "-f", &path, "--validate=false"]),
        "deployment.apps/bad created\n"
    );
    k.ok(&["delete", "deploy", "bad"]);

    // Strict (the default) refuses the object and stores nothing.
    let err = k.fails(&["create", "-f", &path]);
    k.fails(&["get", "deploy", "bad"]);
    assert_eq!(
        err,
        format!(
            "Error from server (BadRequest): error when creating \"{path}\": Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replicaz\", unknown field \"spec.template.spec.containers[0].imagePulPolicy\"\n"
        )
    );
}

/// kube-apiserver creates `default/kubernetes` (the first address of the service CIDR, port 443)
/// at startup; in-cluster clients find the API through it, and no user Service gets its address.
#[test]
fn default_kubernetes_service_exists() {
    let server = Server::start();
    let k = server.kubectl();
    let svcs = k.ok(&["get", "svc", "-n", "default"]);
    let row = row(&svcs, "kubernetes");
    assert_eq!(row[1..5], ["ClusterIP", "10.96.0.1", "<none>", "443/TCP"]);
}

/// A generated name is chosen before defaulting, so what defaults derive from the name (a Job's
/// `job-name` labels and selector) carries the real one.
#[test]
fn generated_names_reach_defaults() {
    let server = Server::start();
    let rt = common::runtime();
    rt.block_on(async {
        let client = server.client().await;
        let job = br#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"generateName":"pi-"},
            "spec":{"template":{"spec":{"restartPolicy":"Never",
            "containers":[{"name":"pi","image":"busybox:1.36","command":["true"]}]}}}}"#;
        let created = common::raw(
            &client,
            "POST",
            "/apis/batch/v1/namespaces/default/jobs",
            Some("application/json"),
            job.to_vec(),
        )
        .await;
        assert_eq!(
            created.code,
            201,
            "{}",
            String::from_utf8_lossy(&created.body)
        );
        let job = created.json();
        let name = job["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("pi-") && name.len() == 8, "{name}");
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            name
        );
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            job["metadata"]["uid"]
        );
    });
}

/// A deleted namespace stays Terminating while `spec.finalizers` holds `kubernetes` — other
/// updates (a label) neither clear it nor complete the deletion — and goes once `finalize`
/// empties the list, as the namespace controller does.
#[test]
fn namespaces_finalize_through_the_subresource() {
    let server = Server::start();
    let k = server.kubectl();
    k.ok(&["create", "namespace", "doomed"]);
    k.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    k.ok(&["label", "namespace", "doomed", "x=y"]);
    let phase = k.ok(&[
        "get",
        "namespace",
        "doomed",
        "-o",
        "jsonpath={.status.phase} {.spec.finalizers}",
    ]);
    assert_eq!(phase.trim(), r#"Terminating ["kubernetes"]"#);
    let rt = common::runtime();
    rt.block_on(async {
        let client = server.client().await;
        let body = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"doomed"},"spec":{"finalizers":[]}}"#;
        let done = common::raw(
            &client,
            "PUT",
            "/api/v1/namespaces/doomed/finalize",
            Some("application/json"),
            body.to_vec(),
        )
        .await;
        assert_eq!(done.code, 200, "{}", String::from_utf8_lossy(&done.body));
        common::raw(&client, "GET", "/api/v1/namespaces/doomed", None, Vec::new())
            .await
            .assert_status(404, "NotFound");
    });
}
