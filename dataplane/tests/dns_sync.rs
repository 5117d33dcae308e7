//! `run_dns_sync` against a fake API server on loopback (plain HTTP, unprivileged): the initial
//! list replaces what the index held, and watch events update it.

use std::time::Duration;

use berth_dataplane::dns::{run_dns_sync, DnsIndex};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

fn service_json(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": name, "resourceVersion": "1"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    })
}

fn slice_json(name: &str, svc: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": name, "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}]
    })
}

/// Serves one request: lists return `items`; watches stream `events` and then stay open.
async fn serve(stream: TcpStream, services: Value, slices: Value, events: Vec<Value>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header).await {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let mut stream = reader.into_inner();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let (kind, items) = if path.starts_with("/api/v1/services") {
        ("ServiceList", services)
    } else if path.starts_with("/apis/discovery.k8s.io/v1/endpointslices") {
        ("EndpointSliceList", slices)
    } else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    if path.contains("watch=true") {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
        let _ = stream.write_all(head.as_bytes()).await;
        let wanted = if kind == "ServiceList" {
            "Service"
        } else {
            "EndpointSlice"
        };
        for event in events.iter().filter(|e| e["object"]["kind"] == wanted) {
            let _ = stream.write_all(format!("{event}\n").as_bytes()).await;
        }
        // Hold the watch open: the test ends first.
        std::future::pending::<()>().await;
    }
    let body = json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
        .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

#[tokio::test]
async fn sync_lists_then_follows_watch_events() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake api");
    let addr = listener.local_addr().expect("addr");
    let services = json!([service_json("web", "10.96.0.10")]);
    let slices = json!([slice_json("web-x", "web", "10.244.0.5")]);
    let events = vec![
        json!({"type": "ADDED", "object": service_json("late", "10.96.0.11")}),
        json!({"type": "DELETED", "object": service_json("web", "10.96.0.10")}),
        json!({"type": "ADDED", "object": slice_json("late-x", "late", "10.244.0.6")}),
    ];
    let api = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(serve(
                stream,
                services.clone(),
                slices.clone(),
                events.clone(),
            ));
        }
    });

    let index = DnsIndex::new();
    // Stale: gone from the API while nobody watched; the first list must drop it.
    index.upsert_service(&Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("stale".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec::default()),
        ..Default::default()
    });

    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let mut changes = index.changes();
    let sync = tokio::spawn(run_dns_sync(client, index.clone()));

    // Each change to the index wakes this; it looks until the watch events are applied.
    let applied = changes.wait_for(|_| index.service_names() == ["default/late"]);
    tokio::time::timeout(WAIT, applied)
        .await
        .expect("timed out waiting for the watch events to apply")
        .expect("the index is alive");
    assert_eq!(
        index.endpoint_slice_names(),
        ["default/late-x", "default/web-x"]
    );
    sync.abort();
    api.abort();
}
