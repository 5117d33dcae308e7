//! An acknowledged write is on disk: kill -9 the API server while many clients are creating
//! objects, restart it on the same data directory, and every create that got a 201 is there.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::oneshot;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use common::Server;

const CREATORS: usize = 32;
/// Acknowledged creates per round before the kill.
const ACKED_BEFORE_KILL: usize = 300;
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// One acknowledged create: the name and the data the server echoed back.
type Acked = (String, BTreeMap<String, String>);

/// Runs `CREATORS` tasks that create ConfigMaps as fast as they can; once `ACKED_BEFORE_KILL`
/// creates are acknowledged, SIGKILLs the server while the rest are in flight. Returns every
/// acknowledged create.
async fn create_until_killed(server: &mut Server, round: usize) -> Vec<Acked> {
    let client = server.client().await;
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let (tx, rx) = oneshot::channel::<()>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let mut tasks = Vec::new();
    for task in 0..CREATORS {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let acked = acked.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("r{round}-t{task}-{i}");
                let cm: ConfigMap = serde_json::from_value(json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": {"round": round.to_string()}},
                    "data": {"task": task.to_string(), "i": i.to_string()},
                }))
                .unwrap();
                // After the kill every request fails: that ends this creator.
                let Ok(created) = api.create(&PostParams::default(), &cm).await else {
                    return;
                };
                assert_eq!(created.name_any(), name);
                let mut acked = acked.lock().unwrap();
                acked.push((name, created.data.unwrap_or_default()));
                if acked.len() == ACKED_BEFORE_KILL {
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
            }
        }));
    }
    tokio::time::timeout(ROUND_TIMEOUT, rx)
        .await
        .expect("enough creates acknowledged in time")
        .expect("the signal to kill");
    server.kill9();
    for task in tasks {
        tokio::time::timeout(ROUND_TIMEOUT, task)
            .await
            .expect("creators stop once the server is gone")
            .expect("a creator panicked");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    eprintln!(
        "round {round}: {} creates acknowledged before kill -9",
        acked.len()
    );
    acked
}

async fn assert_all_present(server: &Server, acked: &[Acked]) {
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let list = api
        .list(&ListParams::default())
        .await
        .expect("listing after the restart");
    let stored: BTreeMap<String, BTreeMap<String, String>> = list
        .items
        .into_iter()
        .map(|cm| (cm.name_any(), cm.data.unwrap_or_default()))
        .collect();
    let missing: Vec<&str> = acked
        .iter()
        .filter(|(name, _)| !stored.contains_key(name))
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates lost after kill -9: {missing:?}",
        missing.len(),
        acked.len()
    );
    eprintln!(
        "{} acknowledged, {} stored after restart",
        acked.len(),
        stored.len()
    );
    for (name, data) in acked {
        assert_eq!(&stored[name], data, "data of {name}");
    }
    // Every stored object reads back one by one too.
    for (name, _) in acked.iter().step_by(17) {
        api.get(name)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_creates_survive_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let mut server = Server::start_at(&data_dir);

    let mut acked = create_until_killed(&mut server, 1).await;
    let mut server = Server::start_at(&data_dir);
    assert_all_present(&server, &acked).await;

    // The restarted server takes writes and survives a second kill the same way.
    acked.extend(create_until_killed(&mut server, 2).await);
    let server = Server::start_at(&data_dir);
    assert_all_present(&server, &acked).await;

    // Revisions keep growing across restarts: a new write is newer than everything stored.
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let newest = list
        .items
        .iter()
        .map(|cm| {
            cm.resource_version()
                .unwrap()
                .parse::<u64>()
                .expect("a numeric resourceVersion")
        })
        .max()
        .unwrap();
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-restart"}})).unwrap(),
        )
        .await
        .expect("a create after two restarts");
    let rv: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(rv > newest, "new resourceVersion {rv} > {newest}");
}
