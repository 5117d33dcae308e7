//! The kubelet's HTTPS server (port 10250): `/containerLogs`, `/exec` (WebSocket
//! `v5.channel.k8s.io`), `/pods`, `/healthz` and `/metrics`, for the API server's pods/log and
//! pods/exec proxies and for cluster admins.
//!
//! Only a client certificate signed by the cluster CA gets in, and only the API server's kubelet
//! client ([`APISERVER_KUBELET_CLIENT`]) or a member of `system:masters` may call anything but
//! `/healthz`. The server knows nothing about the runtime: it reaches containers through the
//! [`ContainerLookup`] the kubelet gives it.

mod auth;
mod exec;
mod http;
mod logs;
mod websocket;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub use auth::{identity, tls_config, Identity, TlsError, APISERVER_KUBELET_CLIENT};
pub use exec::host_exec;
pub use logs::{parse_record, LogError, LogOptions, Record};

/// The kubelet's default port.
pub const DEFAULT_PORT: u16 = 10250;

/// What the server needs from the kubelet: where a container's logs are, whether it runs, and
/// how to start a process in it.
pub trait ContainerLookup: Send + Sync + 'static {
    /// `<data_dir>/pods/<uid>/logs/<container>`: the directory of the container's
    /// `<restartCount>.log` files, or `None` when the pod or container is unknown here.
    fn log_dir(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf>;
    /// Whether the container's newest attempt is still running (`follow` stops once it is not
    /// and its log is drained).
    fn is_running(&self, namespace: &str, pod: &str, container: &str) -> bool;
    /// Starts `command` in the container (`tty`: on a new pseudo-terminal, whose master the
    /// result carries).
    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: Vec<String>,
        tty: bool,
    ) -> Result<ExecProcess, ExecError>;
    /// The pods this kubelet runs, for `/pods`.
    fn pods(&self) -> Vec<Pod>;
}

/// Why a process could not be started in a container.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {container:?} in pod {pod:?} is not running")]
    NotRunning { pod: String, container: String },
    #[error("{0}")]
    Failed(String),
}

/// A started exec process: its standard streams and its exit.
pub struct ExecProcess {
    pub io: ExecIo,
    /// Resolves to the exit code (128 + signal number when a signal killed it).
    pub exit: Pin<Box<dyn Future<Output = Result<i32, String>> + Send>>,
}

/// How an exec process's streams are connected.
pub enum ExecIo {
    /// Pipes; `stdin` is `None` when the client sends no input.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The master side of the process's pseudo-terminal: input, output and resizes go here.
    Tty { master: OwnedFd },
}

/// Request counters shown on `/metrics`.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    exec_sessions: AtomicU64,
    exec_active: AtomicU64,
    log_requests: AtomicU64,
}

/// How long a client gets to finish its TLS handshake and send the request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until the task is dropped. Each connection carries one request.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    lookup: Arc<dyn ContainerLookup>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let counters = Arc::new(Counters::default());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or similar: back off rather than spin.
                tracing::warn!(error = %e, "kubelet server accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, lookup, counters) = (acceptor.clone(), lookup.clone(), counters.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, acceptor, lookup, counters).await {
                tracing::debug!(error = %e, "kubelet connection ended with an error");
            }
        });
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    lookup: Arc<dyn ContainerLookup>,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    let handshake = async {
        let stream = acceptor.accept(tcp).await?;
        let who = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| identity(c));
        let (mut rd, wr) = tokio::io::split(stream);
        let req = http::read_request(&mut rd).await?;
        Ok::<_, std::io::Error>((who, rd, wr, req))
    };
    let (who, rd, mut wr, req) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    let Some(req) = req else {
        return Ok(());
    };
    counters.requests.fetch_add(1, Ordering::Relaxed);
    if req.path != "/healthz" {
        if let Err((code, message)) = auth::authorize(who.as_ref(), &req) {
            return http::respond(&mut wr, code, "text/plain", message.as_bytes()).await;
        }
    }
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["healthz"] => http::respond(&mut wr, 200, "text/plain", b"ok").await,
        ["pods"] => {
            let items = lookup.pods();
            let list = serde_json::json!({
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {},
                "items": items,
            });
            let body = serde_json::to_vec(&list).unwrap_or_default();
            http::respond(&mut wr, 200, "application/json", &body).await
        }
        ["metrics"] => {
            let body = metrics_text(&lookup.pods(), &counters);
            http::respond(&mut wr, 200, "text/plain; version=0.0.4", body.as_bytes()).await
        }
        ["containerLogs", ns, pod, container] => {
            counters.log_requests.fetch_add(1, Ordering::Relaxed);
            container_logs(&req, ns, pod, container, lookup, rd, wr).await
        }
        ["exec", ns, pod, container] => {
            counters.exec_sessions.fetch_add(1, Ordering::Relaxed);
            counters.exec_active.fetch_add(1, Ordering::Relaxed);
            let result = exec::serve_exec(&req, ns, pod, container, lookup, rd, wr).await;
            counters.exec_active.fetch_sub(1, Ordering::Relaxed);
            result
        }
        _ => http::respond(&mut wr, 404, "text/plain", b"404 page not found\n").await,
    }
}

async fn container_logs<R, W>(
    req: &http::Request,
    ns: &str,
    pod: &str,
    container: &str,
    lookup: Arc<dyn ContainerLookup>,
    mut rd: R,
    mut wr: W,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let opts = match LogOptions::from_request(req, time::OffsetDateTime::now_utc()) {
        Ok(o) => o,
        Err(e) => return http::respond(&mut wr, 400, "text/plain", e.to_string().as_bytes()).await,
    };
    let Some(dir) = lookup.log_dir(ns, pod, container) else {
        let msg = format!("container {container:?} in pod \"{ns}/{pod}\" not found");
        return http::respond(&mut wr, 404, "text/plain", msg.as_bytes()).await;
    };
    let attempt = match logs::select_attempt(&dir, opts.previous, container, pod) {
        Ok(a) => a,
        Err(e) => return http::respond(&mut wr, 400, "text/plain", e.to_string().as_bytes()).await,
    };
    let mut out = http::Chunked::start(&mut wr, "text/plain").await?;
    let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
    let running = {
        let lookup = lookup.clone();
        move || lookup.is_running(&ns, &pod, &container)
    };
    // The client sends nothing after its request: a read that returns means it went away.
    let closed = std::pin::pin!(async move {
        let mut scratch = [0u8; 512];
        while let Ok(n) = rd.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    });
    match logs::stream(&mut out, &dir, attempt, &opts, &running, closed).await {
        Ok(()) => out.finish().await,
        Err(LogError::Write(e)) => Err(e),
        Err(e) => {
            // Headers are gone already: end the body early, as the kubelet does.
            tracing::warn!(error = %e, "container log stream failed");
            let _ = wr.shutdown().await;
            Ok(())
        }
    }
}

fn metrics_text(pods: &[Pod], counters: &Counters) -> String {
    let running_pods = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    let running_containers: usize = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .count();
    format!(
        "# HELP kubelet_running_pods Number of pods that have a running pod sandbox\n\
         # TYPE kubelet_running_pods gauge\n\
         kubelet_running_pods {running_pods}\n\
         # HELP kubelet_running_containers Number of containers currently running\n\
         # TYPE kubelet_running_containers gauge\n\
         kubelet_running_containers{{container_state=\"running\"}} {running_containers}\n\
         # HELP berth_kubelet_server_requests_total Requests served on the kubelet port\n\
         # TYPE berth_kubelet_server_requests_total counter\n\
         berth_kubelet_server_requests_total {}\n\
         # HELP berth_kubelet_log_requests_total containerLogs requests\n\
         # TYPE berth_kubelet_log_requests_total counter\n\
         berth_kubelet_log_requests_total {}\n\
         # HELP berth_kubelet_exec_sessions_total exec sessions started\n\
         # TYPE berth_kubelet_exec_sessions_total counter\n\
         berth_kubelet_exec_sessions_total {}\n\
         # HELP berth_kubelet_exec_sessions exec sessions open now\n\
         # TYPE berth_kubelet_exec_sessions gauge\n\
         berth_kubelet_exec_sessions {}\n",
        counters.requests.load(Ordering::Relaxed),
        counters.log_requests.load(Ordering::Relaxed),
        counters.exec_sessions.load(Ordering::Relaxed),
        counters.exec_active.load(Ordering::Relaxed),
    )
}
