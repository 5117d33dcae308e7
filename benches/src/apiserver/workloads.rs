//! The request workloads: namespace setup, pod creation (sequential and concurrent, also used to
//! seed), GET of one pod and LIST of a namespace. Each returns its latencies and wall time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::{Conn, Response, Target};
use super::report::Latencies;
use super::BenchError;

const JSON: &str = "application/json";

/// A minimal valid Pod: one container with a name and an image.
pub fn pod_json(name: &str) -> Vec<u8> {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    })
    .to_string()
    .into_bytes()
}

pub fn pod_name(i: usize) -> String {
    format!("pod-{i:05}")
}

pub fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

/// Fails unless the response has the expected status.
pub fn expect(op: &str, resp: &Response, status: u16) -> Result<(), BenchError> {
    if resp.status == status {
        Ok(())
    } else {
        Err(BenchError::Status {
            op: op.to_string(),
            status: resp.status,
            body: resp.body_text(),
        })
    }
}

pub async fn connect(target: &Target) -> Result<Conn, BenchError> {
    target.connect().await.map_err(|source| BenchError::Client {
        op: "connecting".into(),
        source,
    })
}

pub async fn call(
    conn: &mut Conn,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Response, BenchError> {
    conn.request(method, path, JSON, body)
        .await
        .map_err(|source| BenchError::Client {
            op: format!("{method} {path}"),
            source,
        })
}

pub async fn create_namespace(target: &Target, ns: &str) -> Result<(), BenchError> {
    let mut conn = connect(target).await?;
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let resp = call(
        &mut conn,
        "POST",
        "/api/v1/namespaces",
        body.to_string().as_bytes(),
    )
    .await?;
    expect(&format!("creating namespace {ns}"), &resp, 201)
}

/// Creates pods `first..end` in `ns` over `concurrency` connections, each sending one request
/// at a time; returns every create's latency and the wall time of the whole batch.
pub async fn create_pods(
    target: &Target,
    ns: &str,
    first: usize,
    end: usize,
    concurrency: usize,
) -> Result<(Latencies, Duration), BenchError> {
    let next = Arc::new(AtomicUsize::new(first));
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        conns.push(connect(target).await?);
    }
    let path = pods_path(ns);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let (next, path) = (next.clone(), path.clone());
        tasks.spawn(async move {
            let mut lat = Latencies::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, BenchError>(lat);
                }
                let body = pod_json(&pod_name(i));
                let t0 = Instant::now();
                let resp = call(&mut conn, "POST", &path, &body).await?;
                lat.record(t0.elapsed());
                expect(&format!("creating pod {}", pod_name(i)), &resp, 201)?;
            }
        });
    }
    let mut all = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        all.merge(&joined.map_err(BenchError::Task)??);
    }
    Ok((all, started.elapsed()))
}

/// `iterations` GETs of one pod on one connection, after `warmup` unrecorded ones.
pub async fn get_one(
    target: &Target,
    ns: &str,
    name: &str,
    warmup: usize,
    iterations: usize,
) -> Result<Latencies, BenchError> {
    let mut conn = connect(target).await?;
    let path = format!("{}/{name}", pods_path(ns));
    let mut lat = Latencies::default();
    for i in 0..warmup + iterations {
        let t0 = Instant::now();
        let resp = call(&mut conn, "GET", &path, b"").await?;
        let took = t0.elapsed();
        expect(&format!("getting pod {name}"), &resp, 200)?;
        if i >= warmup {
            lat.record(took);
        }
    }
    Ok(lat)
}

/// `iterations` LISTs of a namespace on one connection; checks the last one has `items` pods.
pub async fn list(
    target: &Target,
    ns: &str,
    items: usize,
    warmup: usize,
    iterations: usize,
) -> Result<Latencies, BenchError> {
    let mut conn = connect(target).await?;
    let path = pods_path(ns);
    let mut lat = Latencies::default();
    let mut last = None;
    for i in 0..warmup + iterations {
        let t0 = Instant::now();
        let resp = call(&mut conn, "GET", &path, b"").await?;
        let took = t0.elapsed();
        expect(&format!("listing pods in {ns}"), &resp, 200)?;
        if i >= warmup {
            lat.record(took);
        }
        last = Some(resp);
    }
    if let Some(resp) = last {
        let got = count_items(&resp.body)?;
        if got != items {
            return Err(BenchError::Unexpected(format!(
                "listing pods in {ns} returned {got} items, want {items}"
            )));
        }
    }
    Ok(lat)
}

fn count_items(body: &[u8]) -> Result<usize, BenchError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(BenchError::Json)?;
    v["items"]
        .as_array()
        .map(Vec::len)
        .ok_or_else(|| BenchError::Unexpected("a list without items".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_json_is_a_minimal_valid_pod() {
        let v: serde_json::Value = serde_json::from_slice(&pod_json("pod-00007")).unwrap();
        assert_eq!(v["metadata"]["name"], "pod-00007");
        assert_eq!(v["spec"]["containers"][0]["name"], "app");
        assert_eq!(v["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(pod_name(7), "pod-00007");
    }

    #[test]
    fn count_items_counts_and_rejects_non_lists() {
        assert_eq!(count_items(br#"{"items":[{},{}]}"#).unwrap(), 2);
        assert!(count_items(br#"{"kind":"Status"}"#).is_err());
        assert!(count_items(b"not json").is_err());
    }
}
