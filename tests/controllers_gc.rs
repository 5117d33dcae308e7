//! The garbage collector against a real API server, driven by `kubectl delete`: background
//! deletion removes dependents down the chain (and keeps those with another live owner, or whose
//! owner of the same name is another object); `--cascade=foreground` deletes dependents first and
//! the owner last; `--cascade=orphan` keeps dependents without the owner's reference.

mod common;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::ResourceExt;
use serde_json::json;

use common::{kubectl, wait_for, InProcessControllers, Server};

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

fn owner_of<K: kube::Resource<DynamicType = ()>>(obj: &K, block: bool) -> serde_json::Value {
    json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "name": obj.name_any(),
        "uid": obj.uid().unwrap(), "blockOwnerDeletion": block})
}

async fn configmap(client: &kube::Client, name: &str, owners: Vec<serde_json::Value>) -> ConfigMap {
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name, "ownerReferences": owners}})),
        )
        .await
        .unwrap_or_else(|e| panic!("creating configmap {name}: {e}"))
}

/// An unscheduled pod (deleted at once, no kubelet needed) owned by `owners`.
async fn pod(
    client: &kube::Client,
    name: &str,
    owners: Vec<serde_json::Value>,
    finalizers: &[&str],
) -> Pod {
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}})),
        )
        .await
        .unwrap_or_else(|e| panic!("creating pod {name}: {e}"))
}

async fn gone<K>(api: &Api<K>, obj: &K, what: &str)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + Send
        + k8s_openapi::serde::de::DeserializeOwned
        + 'static,
{
    let uid = obj.uid().unwrap();
    wait_for(api, &obj.name_any(), what, conditions::is_deleted(&uid)).await;
}

fn owner_uids(meta: &kube::api::ObjectMeta) -> Vec<String> {
    meta.owner_references
        .iter()
        .flatten()
        .map(|o: &OwnerReference| o.uid.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_removes_dependents_down_the_chain() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "default");

    // root (ConfigMap) → ReplicaSet (replicas 0) → pods.
    let root = configmap(&client, "root", vec![]).await;
    let rs: ReplicaSet = rss
        .create(
            &PostParams::default(),
            &object(
                json!({"metadata": {"name": "web", "ownerReferences": [owner_of(&root, true)]},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "gc-web"}},
                    "template": {"metadata": {"labels": {"app": "gc-web"}},
                        "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}}),
            ),
        )
        .await
        .expect("creating the replicaset");
    let p1 = pod(&client, "web-1", vec![owner_of(&rs, true)], &[]).await;
    let p2 = pod(&client, "web-2", vec![owner_of(&rs, true)], &[]).await;
    // Owned by root and by a live ConfigMap: survives, without root's reference.
    let keeper = configmap(&client, "keeper", vec![]).await;
    let shared = pod(
        &client,
        "shared",
        vec![owner_of(&root, false), owner_of(&keeper, false)],
        &[],
    )
    .await;
    // Its owner's name exists, but as another object (another UID): the owner is gone.
    let impostor = configmap(&client, "impostor", vec![]).await;
    let mut fake = owner_of(&impostor, false);
    fake["uid"] = json!("00000000-0000-0000-0000-000000000000");
    let stray = pod(&client, "stray", vec![fake], &[]).await;

    kubectl(&server, &["delete", "configmap", "root"]).await;
    gone(&rss, &rs, "replicaset collected").await;
    gone(&pods, &p1, "pod web-1 collected").await;
    gone(&pods, &p2, "pod web-2 collected").await;
    gone(&pods, &stray, "pod with a replaced owner collected").await;
    let shared_now = wait_for(
        &pods,
        "shared",
        "root's reference dropped",
        |p: Option<&Pod>| p.is_some_and(|p| owner_uids(&p.metadata) == [keeper.uid().unwrap()]),
    )
    .await
    .unwrap();
    assert_eq!(shared_now.uid(), shared.uid());
    assert!(shared_now.metadata.deletion_timestamp.is_none());
    assert!(cms.get_opt("keeper").await.unwrap().is_some());
    assert!(cms.get_opt("impostor").await.unwrap().is_some());
    controllers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_removes_the_owner_last() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");

    let owner = configmap(&client, "owner", vec![]).await;
    // Held back by a finalizer of its own: blocks the owner until released.
    let held = pod(
        &client,
        "held",
        vec![owner_of(&owner, true)],
        &["example.com/hold"],
    )
    .await;
    let free = pod(&client, "free", vec![owner_of(&owner, true)], &[]).await;
    // A middle object with dependents of its own is deleted in the foreground too.
    let middle = configmap(&client, "middle", vec![owner_of(&owner, true)]).await;
    let leaf = pod(&client, "leaf", vec![owner_of(&middle, true)], &[]).await;

    kubectl(
        &server,
        &[
            "delete",
            "configmap",
            "owner",
            "--cascade=foreground",
            "--wait=false",
        ],
    )
    .await;
    gone(&pods, &free, "pod free deleted").await;
    gone(&pods, &leaf, "pod leaf deleted").await;
    gone(&cms, &middle, "configmap middle deleted").await;
    let held_now = wait_for(
        &pods,
        "held",
        "pod held being deleted",
        |p: Option<&Pod>| p.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
    )
    .await
    .unwrap();
    assert_eq!(held_now.uid(), held.uid());
    // The owner waits, marked for deletion, while a blocking dependent exists.
    let waiting = cms.get("owner").await.expect("the owner still exists");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(waiting
        .finalizers()
        .iter()
        .any(|f| f == "foregroundDeletion"));

    pods.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("releasing pod held");
    gone(&pods, &held, "pod held deleted").await;
    gone(&cms, &owner, "owner deleted last").await;
    controllers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");

    let owner = configmap(&client, "owner", vec![]).await;
    let other = configmap(&client, "other", vec![]).await;
    let a = pod(&client, "a", vec![owner_of(&owner, true)], &[]).await;
    let b = pod(
        &client,
        "b",
        vec![owner_of(&owner, true), owner_of(&other, false)],
        &[],
    )
    .await;

    // kubectl waits until the owner is gone, which needs the collector to orphan first.
    kubectl(
        &server,
        &["delete", "configmap", "owner", "--cascade=orphan"],
    )
    .await;
    gone(&cms, &owner, "owner deleted").await;
    let a_now = pods.get("a").await.expect("pod a kept");
    assert_eq!(a_now.uid(), a.uid());
    assert!(
        owner_uids(&a_now.metadata).is_empty(),
        "{:?}",
        a_now.metadata.owner_references
    );
    let b_now = pods.get("b").await.expect("pod b kept");
    assert_eq!(b_now.uid(), b.uid());
    assert_eq!(owner_uids(&b_now.metadata), [other.uid().unwrap()]);
    assert!(
        a_now.metadata.deletion_timestamp.is_none() && b_now.metadata.deletion_timestamp.is_none()
    );
    controllers.stop().await;
}
