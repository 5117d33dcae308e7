//! Shared helpers for the end-to-end tests of the `berth` binary: a guard that runs
//! `berth apiserver` on a free port and kills it on drop, a kubectl runner, and a raw HTTPS client
//! (kube-rs underneath) that reports status codes and bodies as they came off the wire.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

pub mod cluster;

/// How long the server gets to print its "API server on" line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `berth apiserver`. Dropping it kills that process (and only that one).
pub struct Server {
    child: Child,
    /// `https://127.0.0.1:<port>` as printed by the server.
    pub url: String,
    /// The admin kubeconfig the server wrote.
    pub kubeconfig: PathBuf,
    /// The server's `--data-dir`.
    pub data_dir: PathBuf,
    /// Where kubectl keeps its discovery cache for this server: one per server, so a port reused
    /// by an earlier test never serves stale discovery.
    pub cache_dir: PathBuf,
    _root: Option<TempDir>,
}

impl Server {
    /// Starts a server on a fresh temporary data directory.
    pub fn start() -> Server {
        let root = tempfile::tempdir().expect("creating a temporary directory");
        let mut server = Server::start_at(&root.path().join("data"));
        server._root = Some(root);
        server
    }

    /// Starts a server on a fresh temporary data directory with extra `berth apiserver` flags.
    pub fn start_with(args: &[&str]) -> Server {
        let root = tempfile::tempdir().expect("creating a temporary directory");
        let mut server = Server::start_at_with(&root.path().join("data"), args);
        server._root = Some(root);
        server
    }

    /// Starts a server on `data_dir` (kept by the caller, so a later server can reuse it).
    pub fn start_at(data_dir: &Path) -> Server {
        Server::start_at_with(data_dir, &[])
    }

    /// A whole control plane, `berth server` (API server, controllers and scheduler), on a fresh
    /// temporary data directory with extra flags.
    pub fn start_control_plane(args: &[&str]) -> Server {
        let root = tempfile::tempdir().expect("creating a temporary directory");
        let mut server = Server::spawn("server", &root.path().join("data"), args);
        server._root = Some(root);
        server
    }

    /// `start_at` with extra `berth apiserver` flags.
    pub fn start_at_with(data_dir: &Path, args: &[&str]) -> Server {
        Server::spawn("apiserver", data_dir, args)
    }

    /// Runs `berth <subcommand>`, which prints the API server's startup line.
    pub fn spawn(subcommand: &str, data_dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg(subcommand)
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .args(if args.iter().any(|a| a.starts_with("--listen")) {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning berth");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // The reader keeps draining stdout after the first line so the server never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("berth {subcommand} printed no startup line ({e}); exit: {status:?}");
            }
        };
        let url = parse_startup_line(&line)
            .unwrap_or_else(|| panic!("unexpected startup line: {line:?}"))
            .to_string();
        let cache_dir = data_dir.with_file_name(format!(
            "{}-kubectl-cache",
            data_dir.file_name().unwrap().to_string_lossy()
        ));
        Server {
            child,
            url,
            kubeconfig: data_dir.join("admin.kubeconfig"),
            data_dir: data_dir.to_path_buf(),
            cache_dir,
            _root: None,
        }
    }

    /// kill -9 the server and reap it.
    /// Kills the server if it still runs (never panics: for Drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL to berth apiserver");
        self.child.wait().expect("reaping berth apiserver");
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            kubeconfig: self.kubeconfig.clone(),
            cache_dir: self.cache_dir.clone(),
        }
    }

    /// A kube-rs client authenticated with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.client_config().await).expect("building a kube client")
    }

    /// A kube-rs client that trusts the server's CA but presents no credentials.
    pub async fn anonymous_client(&self) -> kube::Client {
        let mut config = self.client_config().await;
        config.auth_info = Default::default();
        kube::Client::try_from(config).expect("building an anonymous kube client")
    }

    pub async fn client_config(&self) -> kube::Config {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a client config from the kubeconfig");
        assert_eq!(
            config.cluster_url.to_string().trim_end_matches('/'),
            self.url,
            "the kubeconfig names the server that is running"
        );
        config
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already reaped after kill9: both calls then fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `berth: API server on https://127.0.0.1:1234 (io_uring); kubeconfig: ...` → the URL.
fn parse_startup_line(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("berth: API server on ")?;
    rest.split_whitespace().next()
}

/// The kubectl binary: `$BERTH_KUBECTL`, else `kubectl` from PATH.
pub fn kubectl_binary() -> PathBuf {
    std::env::var_os("BERTH_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// Runs kubectl against one server with its default flags plus `--kubeconfig`.
pub struct Kubectl {
    pub kubeconfig: PathBuf,
    pub cache_dir: PathBuf,
}

impl Kubectl {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .env_remove("KUBECONFIG");
        cmd
    }

    /// Runs kubectl with `args` and `stdin` as its input.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning kubectl");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes())
            .expect("writing kubectl's stdin");
        child.wait_with_output().expect("waiting for kubectl")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl")
    }

    /// Runs kubectl, asserts it succeeded, returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        success(args, self.run(args))
    }

    /// Like `ok`, with `stdin` as input (for `-f -`).
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        success(args, self.run_with_stdin(args, stdin))
    }

    /// Runs kubectl, asserts it failed, returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        failure(args, self.run(args))
    }

    pub fn fails_stdin(&self, args: &[&str], stdin: &str) -> String {
        failure(args, self.run_with_stdin(args, stdin))
    }
}

fn success(args: &[&str], out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout
}

fn failure(args: &[&str], out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded but should have failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    stderr
}

/// The first row of a kubectl table, split on runs of spaces.
pub fn header(table: &str) -> Vec<&str> {
    table
        .lines()
        .next()
        .expect("a header line")
        .split_whitespace()
        .collect()
}

/// The row of a kubectl table whose first column is `name`, split on runs of spaces.
pub fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

/// What came back for a raw request.
#[derive(Debug)]
pub struct RawResponse {
    pub code: u16,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON (a `Status` for errors).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of the {} response is not JSON ({e}): {}",
                self.code,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts this is a `Status` failure with `code` and `reason`; returns the Status.
    pub fn assert_status(&self, code: u16, reason: &str) -> serde_json::Value {
        let status = self.json();
        assert_eq!(
            (
                self.code,
                status["kind"].as_str(),
                status["status"].as_str()
            ),
            (code, Some("Status"), Some("Failure")),
            "response: {status}"
        );
        assert_eq!(status["code"], code, "Status.code in {status}");
        assert_eq!(status["reason"], reason, "Status.reason in {status}");
        status
    }
}

/// Sends one request exactly as given (method, path with query, content type, body) and reports
/// the status code and body without interpreting them.
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path_and_query: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> RawResponse {
    // kube-core builds the http::Request; every part is then overwritten.
    let size = body.len();
    let mut req = kube::core::Request::new("/")
        .create(&Default::default(), body)
        .expect("building a request");
    *req.method_mut() = method.parse().expect("an HTTP method");
    *req.uri_mut() = path_and_query.parse().expect("a request path");
    req.headers_mut().remove("content-type");
    if let Some(ct) = content_type {
        req.headers_mut()
            .insert("content-type", ct.parse().expect("a content type"));
    }
    let res = client.send(req.map(Into::into)).await.unwrap_or_else(|e| {
        let mut chain = format!("{e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        panic!("{method} {path_and_query} with a {size}-byte body: {chain}")
    });
    let code = res.status().as_u16();
    let body = res
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_else(|e| panic!("reading the body of {method} {path_and_query}: {e}"))
        .to_vec();
    RawResponse { code, body }
}

/// A multi-threaded tokio runtime for the synchronous kubectl tests that also need a raw client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Reads lines from a child's stdout on a thread, so a test can wait for one with a timeout.
pub struct LineReader {
    rx: mpsc::Receiver<String>,
    /// Every line seen so far, for failure messages.
    pub seen: Vec<String>,
}

impl LineReader {
    pub fn new(stdout: impl std::io::Read + Send + 'static) -> LineReader {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineReader {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits up to `timeout` in total for a line matching `pred`; returns it.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no matching line within {timeout:?} ({e}); saw: {:?}",
                    self.seen
                ),
            }
        }
    }
}

/// Kills a helper child process (e.g. `kubectl get -w`) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long a test waits for the controllers to converge.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The controllers running inside the test process against a server. `stop` stops them cleanly;
/// dropping the guard aborts them.
pub struct InProcessControllers {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), berth_controllers::StartError>>>,
}

impl InProcessControllers {
    pub fn start(client: kube::Client, config: berth_controllers::Config) -> InProcessControllers {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            berth_controllers::run(client, &config, async {
                let _ = stopped.await;
            })
            .await
        });
        InProcessControllers {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the controllers and asserts they stopped cleanly within 10 s.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("not yet stopped").send(());
        let task = self.task.take().expect("not yet stopped");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the controllers stop within 10 s")
            .expect("the controllers' task did not panic")
            .expect("the controllers ran without error");
    }
}

impl Drop for InProcessControllers {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits (by watching, up to `CONVERGE_TIMEOUT`) until object `name` satisfies `cond`; returns
/// it as last seen (`None` if it is gone).
pub async fn wait_for<K>(
    api: &kube::Api<K>,
    name: &str,
    what: &str,
    cond: impl kube::runtime::wait::Condition<K>,
) -> Option<K>
where
    K: Clone
        + std::fmt::Debug
        + Send
        + k8s_openapi::serde::de::DeserializeOwned
        + kube::Resource
        + 'static,
{
    let waiting = kube::runtime::wait::await_condition(api.clone(), name, cond);
    tokio::time::timeout(CONVERGE_TIMEOUT, waiting)
        .await
        .unwrap_or_else(|_| panic!("{name}: {what} within {CONVERGE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{name}: watching for {what}: {e}"))
}

/// The scheduler running inside the test process against a server. `stop` stops it cleanly;
/// dropping the guard aborts it.
pub struct InProcessScheduler {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessScheduler {
    pub fn start(client: kube::Client, config: berth_scheduler::RunConfig) -> InProcessScheduler {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(berth_scheduler::run(client, config, async {
            let _ = stopped.await;
        }));
        InProcessScheduler {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the scheduler and asserts it stopped cleanly within 15 s.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("not yet stopped").send(());
        let task = self.task.take().expect("not yet stopped");
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("the scheduler stops within 15 s")
            .expect("the scheduler's task did not panic");
    }
}

impl Drop for InProcessScheduler {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs `f` with this server's kubectl off the async runtime's threads, so in-process
/// components keep running while kubectl waits.
async fn off_runtime<T: Send + 'static>(
    server: &Server,
    f: impl FnOnce(Kubectl) -> T + Send + 'static,
) -> T {
    let kubectl = server.kubectl();
    tokio::task::spawn_blocking(move || f(kubectl))
        .await
        .expect("the kubectl task")
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn borrowed(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// [`Kubectl::ok`] from async code.
pub async fn kubectl(server: &Server, args: &[&str]) -> String {
    let args = owned(args);
    off_runtime(server, move |k| k.ok(&borrowed(&args))).await
}

/// [`Kubectl::ok_stdin`] from async code.
pub async fn kubectl_stdin(server: &Server, args: &[&str], stdin: &str) -> String {
    let (args, stdin) = (owned(args), stdin.to_string());
    off_runtime(server, move |k| k.ok_stdin(&borrowed(&args), &stdin)).await
}

/// [`Kubectl::fails`] from async code.
pub async fn kubectl_fails(server: &Server, args: &[&str]) -> String {
    let args = owned(args);
    off_runtime(server, move |k| k.fails(&borrowed(&args))).await
}

/// `kubectl apply -f -` of `manifest`.
pub async fn apply(server: &Server, manifest: &str) {
    kubectl_stdin(server, &["apply", "-f", "-"], manifest).await;
}
