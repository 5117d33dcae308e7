//! A kube-rs client, built from the kubeconfig `berth apiserver` writes, against the API server:
//! create, list with label and field selectors, watch from a resourceVersion, patch, delete.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

use common::Server;

const WATCH_TIMEOUT: Duration = Duration::from_secs(20);

fn configmap(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .expect("a ConfigMap")
}

async fn names(api: &Api<ConfigMap>, lp: &ListParams) -> Vec<String> {
    let mut names: Vec<String> = api
        .list(lp)
        .await
        .unwrap_or_else(|e| panic!("list {lp:?}: {e}"))
        .items
        .iter()
        .map(|cm| cm.name_any())
        .collect();
    names.sort();
    names
}

fn api_code(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmaps_create_list_watch_patch_delete() {
    let server = Server::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );

    let pp = PostParams::default();
    for (name, app, tier) in [
        ("a1", "alpha", "web"),
        ("a2", "alpha", "db"),
        ("b1", "beta", "web"),
    ] {
        let created = api
            .create(
                &pp,
                &configmap(name, &[("app", app), ("tier", tier)], &[("n", name)]),
            )
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        assert_eq!(created.name_any(), name);
        assert!(created.uid().is_some(), "uid set on {name}");
        assert!(
            created.resource_version().is_some(),
            "resourceVersion set on {name}"
        );
        assert!(created.metadata.creation_timestamp.is_some());
    }
    let (code, reason) = api_code(
        api.create(&pp, &configmap("a1", &[], &[]))
            .await
            .expect_err("creating a1 twice"),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    // Label selectors: equality, inequality, set-based, existence.
    let cases: [(&str, &[&str]); 6] = [
        ("app=alpha", &["a1", "a2"]),
        ("app!=alpha", &["b1"]),
        ("tier in (web),app notin (alpha)", &["b1"]),
        ("tier", &["a1", "a2", "b1"]),
        ("!tier", &[]),
        ("app=alpha,tier=db", &["a2"]),
    ];
    for (selector, expected) in cases {
        assert_eq!(
            names(&api, &ListParams::default().labels(selector)).await,
            expected,
            "labelSelector {selector}"
        );
    }
    // Field selectors.
    assert_eq!(
        names(&api, &ListParams::default().fields("metadata.name=a2")).await,
        ["a2"]
    );
    assert_eq!(
        names(&api, &ListParams::default().fields("metadata.name!=a2")).await,
        ["a1", "b1"]
    );
    assert_eq!(
        names(
            &api,
            &ListParams::default()
                .fields("metadata.namespace=default")
                .labels("app=beta")
        )
        .await,
        ["b1"]
    );
    // The same field selector across all namespaces.
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        names(&all, &ListParams::default().fields("metadata.name=b1")).await,
        ["b1"]
    );
    // Paging with limit/continue returns each object once.
    let page1 = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().expect("a continue token");
    let page2 = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let mut paged: Vec<String> = page1
        .items
        .iter()
        .chain(&page2.items)
        .map(|c| c.name_any())
        .collect();
    paged.sort();
    assert_eq!(paged, ["a1", "a2", "b1"]);
    assert!(page2.metadata.continue_.as_deref().unwrap_or("").is_empty());

    // Watch from the list's resourceVersion: only what happens afterwards arrives.
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list
        .metadata
        .resource_version
        .clone()
        .expect("list resourceVersion");
    let mut stream = api
        .watch(&WatchParams::default().labels("app=alpha"), &rv)
        .await
        .expect("starting a watch")
        .boxed();

    // Merge patch.
    let patched = api
        .patch(
            "a1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"data": {"merged": "yes"}, "metadata": {"labels": {"extra": "1"}}}),
            ),
        )
        .await
        .expect("merge patch");
    assert_eq!(patched.data.as_ref().unwrap()["merged"], "yes");
    assert_eq!(patched.data.as_ref().unwrap()["n"], "a1");
    assert_eq!(patched.labels()["extra"], "1");
    assert_ne!(patched.resource_version(), list.items[0].resource_version());

    // b1 does not match the watch's selector: its change must not arrive.
    api.patch(
        "b1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "y"}})),
    )
    .await
    .expect("patching b1");

    let event = tokio::time::timeout(WATCH_TIMEOUT, stream.try_next())
        .await
        .expect("a watch event in time")
        .expect("a watch event, not an error")
        .expect("the watch stream is open");
    match event {
        WatchEvent::Modified(cm) => {
            assert_eq!(cm.name_any(), "a1");
            assert_eq!(cm.data.as_ref().unwrap()["merged"], "yes");
            assert_eq!(cm.resource_version(), patched.resource_version());
        }
        other => panic!("expected MODIFIED a1, got {other:?}"),
    }

    // Strategic merge patch (for a ConfigMap, maps merge like a merge patch; `null` deletes).
    let patched = api
        .patch(
            "a2",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"n": null, "s": "1"}})),
        )
        .await
        .expect("strategic patch");
    assert_eq!(
        patched.data.clone().unwrap(),
        BTreeMap::from([("s".to_string(), "1".to_string())])
    );
    let event = tokio::time::timeout(WATCH_TIMEOUT, stream.try_next())
        .await
        .expect("a second watch event in time")
        .expect("a watch event, not an error")
        .expect("the watch stream is open");
    match event {
        WatchEvent::Modified(cm) => assert_eq!(cm.name_any(), "a2"),
        other => panic!("expected MODIFIED a2, got {other:?}"),
    }

    // A stale resourceVersion on replace is a Conflict.
    let mut stale = list
        .items
        .into_iter()
        .find(|c| c.name_any() == "a1")
        .unwrap();
    stale.data = Some(BTreeMap::from([("stale".to_string(), "1".to_string())]));
    let (code, reason) = api_code(
        api.replace("a1", &pp, &stale)
            .await
            .expect_err("replace with a stale resourceVersion"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // Delete: the watch sees it, a GET is 404, the list no longer has it.
    api.delete("a1", &DeleteParams::default())
        .await
        .expect("delete a1");
    let event = tokio::time::timeout(WATCH_TIMEOUT, stream.try_next())
        .await
        .expect("a delete event in time")
        .expect("a watch event, not an error")
        .expect("the watch stream is open");
    match event {
        WatchEvent::Deleted(cm) => assert_eq!(cm.name_any(), "a1"),
        other => panic!("expected DELETED a1, got {other:?}"),
    }
    let (code, reason) = api_code(api.get("a1").await.expect_err("a1 is gone"));
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(names(&api, &ListParams::default()).await, ["a2", "b1"]);
    assert!(api.get_opt("a1").await.expect("get_opt").is_none());
}

async fn next_object(
    objects: &mut BoxStream<'static, Result<ConfigMap, watcher::Error>>,
) -> ConfigMap {
    tokio::time::timeout(WATCH_TIMEOUT, objects.try_next())
        .await
        .expect("an object in time")
        .expect("no watcher error")
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_watcher_sees_existing_and_new_objects() {
    let server = Server::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &configmap("before", &[("w", "1")], &[]),
    )
    .await
    .expect("create before");

    let mut objects = watcher(api.clone(), watcher::Config::default().labels("w=1"))
        .default_backoff()
        .applied_objects()
        .boxed();
    assert_eq!(next_object(&mut objects).await.name_any(), "before");

    api.create(
        &PostParams::default(),
        &configmap("after", &[("w", "1")], &[]),
    )
    .await
    .expect("create after");
    assert_eq!(next_object(&mut objects).await.name_any(), "after");

    api.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .expect("patch before");
    let updated = next_object(&mut objects).await;
    assert_eq!(updated.name_any(), "before");
    assert_eq!(updated.data.unwrap()["k"], "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_patch_merges_containers_by_name() {
    let server = Server::start();
    let client = server.client().await;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "main", "image": "nginx:1.25"},
                    {"name": "side", "image": "busybox:1.36"}
                ]}
            }
        }
    }))
    .unwrap();
    let created = api
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create");
    // Defaulting: replicas 1, a RollingUpdate strategy.
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("RollingUpdate")
    );
    assert_eq!(created.metadata.generation, Some(1));

    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "side", "image": "busybox:1.37"}
    ]}}}});
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(patch.clone()),
        )
        .await
        .expect("strategic patch");
    let images: Vec<(String, Option<String>)> = patched
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone()))
        .collect();
    assert_eq!(
        images,
        [
            ("main".to_string(), Some("nginx:1.25".to_string())),
            ("side".to_string(), Some("busybox:1.37".to_string()))
        ]
    );
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );

    // The same document as a JSON merge patch replaces the whole list.
    let merged = api
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("merge patch");
    let names: Vec<String> = merged
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["side"]);

    api.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let (code, _) = api_code(api.get("web").await.expect_err("web is gone"));
    assert_eq!(code, 404);
}
