//! Watch fan-out: W watch connections on one pod, then a series of updates to it, each timed
//! from the moment the update is sent until the last watcher has read the event.
//!
//! The watchers run in a child process (this binary again, with the hidden `--fanout-worker`
//! flag): 10,000 client sockets and the server's 10,000 in one process would need more than
//! the usual hard limit of open files, while each side alone fits. The child sends the updates
//! itself so that every instant comes from one clock, and prints its samples as JSON.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use super::client::Target;
use super::report::Latencies;
use super::workloads::{call, connect, expect, pods_path};
use super::BenchError;

/// TLS handshakes in flight at once while the watchers connect.
const CONNECT_BATCH: usize = 256;
/// Longest wait for every watcher to have one update.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(60);
/// File descriptors besides the watch sockets (runtime, stdio, the update connection).
const SPARE_FDS: u64 = 64;

/// What the child needs: where the server is, how to trust and authenticate to it, and what
/// to watch.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub addr: std::net::SocketAddr,
    pub ca_cert: std::path::PathBuf,
    pub token: String,
    pub namespace: String,
    pub pod: String,
    pub watchers: usize,
    pub updates: usize,
}

/// The child's answer: per update, the time until the last watcher had it; per delivery, the
/// time until that watcher had it (microseconds).
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct WorkerResult {
    pub last_us: Vec<u64>,
    pub delivery_us: Vec<u64>,
}

/// Raises the soft limit on open files to the hard limit; an error names both when `needed`
/// does not fit.
pub fn raise_nofile(needed: u64) -> Result<u64, BenchError> {
    let (_, hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_err(|source| BenchError::Rlimit {
            op: "reading",
            source,
        })?;
    let soft = rlimit::increase_nofile_limit(hard).map_err(|source| BenchError::Rlimit {
        op: "raising",
        source,
    })?;
    if soft < needed {
        return Err(BenchError::FdLimit { needed, soft, hard });
    }
    Ok(soft)
}

/// Runs the fan-out in a child process and returns its samples.
pub fn run_child(spec: &WorkerSpec) -> Result<WorkerResult, BenchError> {
    let exe = std::env::current_exe().map_err(BenchError::Spawn)?;
    let spec_json = serde_json::to_string(spec).map_err(BenchError::Json)?;
    let out = Command::new(exe)
        .args(["bench", "apiserver", "--fanout-worker", &spec_json])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(BenchError::Spawn)?;
    if !out.status.success() {
        return Err(BenchError::Worker(format!(
            "fan-out worker for {} watchers exited with {}",
            spec.watchers, out.status
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(BenchError::Json)
}

/// The child's entry point: measures and prints a [`WorkerResult`] on stdout.
pub fn worker_main(spec_json: &str) -> Result<(), BenchError> {
    let spec: WorkerSpec = serde_json::from_str(spec_json).map_err(BenchError::Json)?;
    raise_nofile(spec.watchers as u64 + SPARE_FDS)?;
    let target = Target::new(spec.addr, &spec.ca_cert, spec.token.clone()).map_err(|source| {
        BenchError::Client {
            op: "loading the CA".into(),
            source,
        }
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let result = runtime.block_on(measure(&target, &spec))?;
    println!(
        "{}",
        serde_json::to_string(&result).map_err(BenchError::Json)?
    );
    Ok(())
}

/// A watcher's report: the instant it read an event, or why it stopped.
type Receipt = Result<Instant, String>;

async fn measure(target: &Target, spec: &WorkerSpec) -> Result<WorkerResult, BenchError> {
    let mut conn = connect(target).await?;
    // The collection's current revision: watches from there see only the updates below.
    let resp = call(
        &mut conn,
        "GET",
        &format!("{}?limit=1", pods_path(&spec.namespace)),
        b"",
    )
    .await?;
    expect("reading the namespace's revision", &resp, 200)?;
    let list: serde_json::Value = serde_json::from_slice(&resp.body).map_err(BenchError::Json)?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| BenchError::Unexpected("a list without resourceVersion".into()))?
        .to_string();
    let watch_path = format!(
        "{}?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3D{}&timeoutSeconds=3600",
        pods_path(&spec.namespace),
        spec.pod
    );

    let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<Receipt>();
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<Result<(), String>>();
    let permits = Arc::new(Semaphore::new(CONNECT_BATCH));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..spec.watchers {
        let (target, path, receipts_tx, ready_tx, permits) = (
            target.clone(),
            watch_path.clone(),
            receipts_tx.clone(),
            ready_tx.clone(),
            permits.clone(),
        );
        tasks.spawn(async move {
            let stream = {
                let _permit = permits.acquire().await;
                let opened = match target.connect().await {
                    Ok(conn) => conn.start_stream(&path).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match opened {
                    Ok((200, stream)) => {
                        let _ = ready_tx.send(Ok(()));
                        stream
                    }
                    Ok((status, _)) => {
                        let _ = ready_tx.send(Err(format!("watch answered {status}")));
                        return;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
            };
            let mut stream = stream;
            loop {
                let receipt = match stream.next_line().await {
                    Ok(line) if line.starts_with(br#"{"type":"MODIFIED""#) => Ok(Instant::now()),
                    Ok(line) => Err(format!(
                        "unexpected watch event {}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    )),
                    Err(e) => Err(e.to_string()),
                };
                let stop = receipt.is_err();
                if receipts_tx.send(receipt).is_err() || stop {
                    return;
                }
            }
        });
    }
    drop((receipts_tx, ready_tx));
    for _ in 0..spec.watchers {
        match ready.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(BenchError::Worker(format!("opening a watch: {e}"))),
            None => return Err(BenchError::Worker("a watcher task ended early".into())),
        }
    }

    eprintln!(
        "berth bench: {} watchers connected to {}; sending {} updates",
        spec.watchers, spec.addr, spec.updates
    );
    let mut result = WorkerResult::default();
    let pod_path = format!("{}/{}", pods_path(&spec.namespace), spec.pod);
    for update in 0..spec.updates {
        let patch = json!({"metadata": {"labels": {"update": update.to_string()}}}).to_string();
        let sent = Instant::now();
        let resp = conn
            .request(
                "PATCH",
                &pod_path,
                "application/merge-patch+json",
                patch.as_bytes(),
            )
            .await
            .map_err(|source| BenchError::Client {
                op: format!("PATCH {pod_path}"),
                source,
            })?;
        expect("updating the watched pod", &resp, 200)?;
        let mut last = sent;
        for got in 0..spec.watchers {
            let receipt = match tokio::time::timeout(UPDATE_TIMEOUT, receipts.recv()).await {
                Ok(Some(r)) => r,
                Ok(None) => Err("every watcher stopped".into()),
                Err(_) => Err(format!(
                    "only {got} of {} watchers had update {update} after {UPDATE_TIMEOUT:?}",
                    spec.watchers
                )),
            };
            let at = receipt.map_err(BenchError::Worker)?;
            result
                .delivery_us
                .push(at.saturating_duration_since(sent).as_micros() as u64);
            last = last.max(at);
        }
        result
            .last_us
            .push(last.saturating_duration_since(sent).as_micros() as u64);
    }
    tasks.abort_all();
    Ok(result)
}

/// Histograms of a worker's samples: (time to the last watcher, time to each watcher).
pub fn latencies(result: &WorkerResult) -> (Latencies, Latencies) {
    let (mut last, mut each) = (Latencies::default(), Latencies::default());
    for &us in &result.last_us {
        last.record_us(us);
    }
    for &us in &result.delivery_us {
        each.record_us(us);
    }
    (last, each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_json() {
        let spec = WorkerSpec {
            addr: "127.0.0.1:6443".parse().unwrap(),
            ca_cert: "/tmp/ca.crt".into(),
            token: "t".into(),
            namespace: "bench-watch".into(),
            pod: "fanout-target".into(),
            watchers: 10_000,
            updates: 20,
        };
        let back: WorkerSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn latencies_split_last_and_each() {
        let result = WorkerResult {
            // Under 2048 µs the histogram is exact to the microsecond.
            last_us: vec![1300, 1500],
            delivery_us: vec![1000, 1300, 1200, 1500],
        };
        let (last, each) = latencies(&result);
        assert_eq!(last.count(), 2);
        assert_eq!(each.count(), 4);
        assert_eq!(last.summary(None).max_us, 1500.0);
        assert_eq!(each.summary(None).p50_us, 1200.0);
    }

    #[test]
    fn a_limit_below_the_need_is_an_error_naming_it() {
        let err = raise_nofile(u64::MAX).unwrap_err();
        assert!(
            matches!(err, BenchError::FdLimit { needed, .. } if needed == u64::MAX),
            "{err}"
        );
    }
}
