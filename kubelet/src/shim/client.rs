//! The kubelet's side of the shim: starting one, and talking to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{socket_path, ContainerState, Event, Request, Response};
use super::{ShimConfig, ShimError};

/// How long a new shim may take to listen on its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's read buffer: lines are short, and a kubelet holds one subscription per pod
/// (tokio's default of 8 KiB came to 800 KiB at 100 pods).
const READ_BUFFER: usize = 1024;

/// Starts a pod's shim (`program shim …`: `berth-shim` or `berth`) and waits for its ready line.
/// The shim puts itself in a new session; the kubelet drops the child handle (tokio reaps it),
/// so the shim outlives a kubelet restart. Returns the shim's pid.
pub async fn launch(berth: &Path, config: &ShimConfig) -> Result<i32, ShimError> {
    let log = config.pod_dir.join("shim.log");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|source| ShimError::Io {
            op: "open",
            path: log.clone(),
            source,
        })?;
    let mut cmd = tokio::process::Command::new(berth);
    cmd.arg("shim")
        .arg("--pod-dir")
        .arg(&config.pod_dir)
        .arg("--hostname")
        .arg(&config.hostname);
    if config.host_network {
        cmd.arg("--host-network");
    }
    if config.host_ipc {
        cmd.arg("--host-ipc");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = cmd.spawn().map_err(|source| ShimError::Io {
        op: "spawn",
        path: berth.to_owned(),
        source,
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    let read =
        tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    let failed = |message: String| ShimError::Protocol {
        pod_dir: config.pod_dir.clone(),
        message,
    };
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(failed(format!("reading its ready line: {e}"))),
        Err(_) => {
            let _ = child.start_kill();
            return Err(failed(format!("not ready after {READY_TIMEOUT:?}")));
        }
    }
    match line
        .trim()
        .strip_prefix("ready ")
        .and_then(|pid| pid.parse::<i32>().ok())
    {
        Some(pid) => Ok(pid),
        None => {
            let status = child.wait().await.ok();
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail = tail.lines().last().unwrap_or("").to_owned();
            Err(failed(format!(
                "exited ({status:?}) before it was ready: {tail}"
            )))
        }
    }
}

/// Requests to one pod's shim. Each request uses its own connection: they are rare and a
/// connection on a unix socket is cheap, and it keeps a kubelet restart trivially safe.
#[derive(Debug, Clone)]
pub struct ShimClient {
    pod_dir: PathBuf,
    socket: PathBuf,
}

impl ShimClient {
    pub fn new(pod_dir: &Path) -> ShimClient {
        ShimClient {
            pod_dir: pod_dir.to_owned(),
            socket: socket_path(pod_dir),
        }
    }

    pub fn pod_dir(&self) -> &Path {
        &self.pod_dir
    }

    async fn connect(&self) -> Result<Connection, ShimError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ShimError::Io {
                op: "connect",
                path: self.socket.clone(),
                source,
            })?;
        Ok(Connection {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
            pod_dir: self.pod_dir.clone(),
        })
    }

    pub async fn request(&self, request: &Request) -> Result<Response, ShimError> {
        let mut conn = self.connect().await?;
        conn.send(request).await?;
        let response: Response = conn.receive().await?;
        if let Response::Error { message } = response {
            return Err(ShimError::Protocol {
                pod_dir: self.pod_dir.clone(),
                message,
            });
        }
        Ok(response)
    }

    /// The shim's pid and its containers.
    pub async fn state(&self) -> Result<(i32, Vec<ContainerState>), ShimError> {
        match self.request(&Request::State).await? {
            Response::State { pid, containers } => Ok((pid, containers)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Exit events from now on, after the current state (so nothing falls between the two).
    pub async fn subscribe(&self) -> Result<(Vec<ContainerState>, Subscription), ShimError> {
        let mut conn = self.connect().await?;
        conn.send(&Request::Subscribe).await?;
        match conn.receive::<Response>().await? {
            Response::State { containers, .. } => Ok((containers, Subscription { conn })),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, response: &Response) -> ShimError {
        ShimError::Protocol {
            pod_dir: self.pod_dir.clone(),
            message: format!("unexpected response {response:?}"),
        }
    }
}

struct Connection {
    stream: BufReader<UnixStream>,
    pod_dir: PathBuf,
}

impl Connection {
    async fn send(&mut self, request: &Request) -> Result<(), ShimError> {
        let mut line = serde_json::to_vec(request).expect("requests serialize");
        line.push(b'\n');
        let io = |source| ShimError::Io {
            op: "write to shim",
            path: self.pod_dir.clone(),
            source,
        };
        self.stream.get_mut().write_all(&line).await.map_err(io)
    }

    async fn receive<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, ShimError> {
        let mut line = String::new();
        let n = self
            .stream
            .read_line(&mut line)
            .await
            .map_err(|source| ShimError::Io {
                op: "read from shim",
                path: self.pod_dir.clone(),
                source,
            })?;
        if n == 0 {
            let message = "connection closed".to_owned();
            return Err(ShimError::Protocol {
                pod_dir: self.pod_dir.clone(),
                message,
            });
        }
        serde_json::from_str(&line).map_err(|e| ShimError::Protocol {
            pod_dir: self.pod_dir.clone(),
            message: format!("bad message {line:?}: {e}"),
        })
    }
}

/// A subscribed connection: exit events as they happen.
pub struct Subscription {
    conn: Connection,
}

impl Subscription {
    /// The next event; an error when the shim went away.
    pub async fn next(&mut self) -> Result<Event, ShimError> {
        self.conn.receive().await
    }
}
