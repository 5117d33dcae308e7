//! `run_service_sync` against a minimal fake API server on loopback: the list and watch
//! requests kube's watcher makes, answered from memory, so the wiring from the API to the
//! programmed maps is exercised without a cluster.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_dataplane::abi::{self, SvcKey};
use berth_dataplane::services::memory::MemoryTables;
use berth_dataplane::services::{run_service_sync, Programmer, SyncProgress};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use tokio::sync::{oneshot, watch};

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

/// Lists and watch streams per collection path.
#[derive(Default)]
struct Fake {
    lists: HashMap<&'static str, Vec<Value>>,
    /// Where a watch on the path sends its events from; taken by the first watch.
    watches: HashMap<&'static str, mpsc::Receiver<Value>>,
}

/// Serves on plain threads with blocking I/O: the fake needs no async runtime of its own, and
/// its threads end with the test process.
fn serve(listener: TcpListener, fake: Arc<Mutex<Fake>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let fake = fake.clone();
        std::thread::spawn(move || connection(stream, &fake));
    }
}

fn connection(stream: TcpStream, fake: &Mutex<Fake>) -> Option<()> {
    let mut writer = stream.try_clone().ok()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).ok()? == 0 {
            return None;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).ok()? == 0 {
                return None;
            }
            if header == "\r\n" {
                break;
            }
        }
        let target = request.split(' ').nth(1).unwrap_or("").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let Some(path) = [SERVICES, SLICES].into_iter().find(|p| *p == path) else {
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#;
            write_whole(&mut writer, "404 Not Found", body)?;
            continue;
        };
        if query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1")
        {
            let events = fake.lock().expect("fake").watches.remove(path);
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            writer.write_all(head.as_bytes()).ok()?;
            // A later watch (after a reconnect) just stays open and quiet.
            let events = events?;
            while let Ok(event) = events.recv() {
                let line = format!("{event}\n");
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                writer.write_all(chunk.as_bytes()).ok()?;
            }
            return None;
        }
        let items = fake.lock().expect("fake").lists.get(path).cloned();
        let kind = if path == SERVICES {
            "ServiceList"
        } else {
            "EndpointSliceList"
        };
        let body = json!({
            "kind": kind, "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"},
            "items": items.unwrap_or_default(),
        });
        write_whole(&mut writer, "200 OK", &body.to_string())?;
    }
}

fn write_whole(stream: &mut TcpStream, status: &str, body: &str) -> Option<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).ok()
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "web", "resourceVersion": "1"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
        },
    })
}

fn slice(addrs: &[&str], rv: &str) -> Value {
    let endpoints: Vec<Value> = addrs
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "n1"}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "namespace": "default", "name": "web-abc", "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

async fn wait_for(
    rx: &mut watch::Receiver<SyncProgress>,
    what: &str,
    f: impl Fn(&SyncProgress) -> bool,
) {
    let waited = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|p| f(p)))
        .await
        .is_ok_and(|r| r.is_ok());
    if !waited {
        panic!(
            "timed out waiting for {what}; last progress {:?}",
            *rx.borrow()
        );
    }
}

#[tokio::test]
async fn services_from_the_api_are_programmed_and_follow_endpoint_changes() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (slice_events, slice_rx) = mpsc::channel();
    let (_service_events, service_rx) = mpsc::channel();
    let mut fake = Fake::default();
    fake.lists.insert(SERVICES, vec![service()]);
    fake.lists.insert(SLICES, vec![slice(&["10.244.0.1"], "2")]);
    fake.watches.insert(SERVICES, service_rx);
    fake.watches.insert(SLICES, slice_rx);
    let fake = Arc::new(Mutex::new(fake));
    std::thread::spawn(move || serve(listener, fake));

    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    let (tx, mut rx) = watch::channel(SyncProgress::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let sync = tokio::spawn(async move {
        let programmer = Programmer::new(MemoryTables::checked());
        run_service_sync(client, "n1", programmer, tx, async {
            let _ = stopped.await;
        })
        .await
    });

    wait_for(&mut rx, "the initial lists", |p| {
        p.synced && p.stats.backends == 1
    })
    .await;
    slice_events
        .send(json!({"type": "MODIFIED", "object": slice(&["10.244.0.1", "10.244.0.2"], "3")}))
        .expect("send");
    wait_for(&mut rx, "the added endpoint", |p| p.stats.backends == 2).await;

    stop.send(()).expect("stop");
    let programmer = sync.await.expect("sync task");
    let t = programmer.tables();
    assert_eq!(t.violations(), &[] as &[String]);
    let cluster = t.svc[&SvcKey::new(Ipv4Addr::new(10, 96, 0, 10), 80, abi::PROTO_TCP)];
    let node_port = t.svc[&SvcKey::new(Ipv4Addr::UNSPECIFIED, 30080, abi::PROTO_TCP)];
    assert_eq!((cluster.count, node_port.count), (2, 2));
    assert_eq!(node_port.flags, abi::SVC_NODEPORT | abi::SVC_MAGLEV);
    assert!(t.maglev.contains_key(&node_port.id));
}
