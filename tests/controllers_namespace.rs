//! The namespace and ServiceAccount controllers against a real API server through kube-rs:
//! deleting a namespace empties it and removes it; every namespace gets a `default`
//! ServiceAccount, recreated when deleted.

mod common;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::ResourceExt;
use serde_json::json;

use common::{wait_for, InProcessControllers, Server};

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

async fn create_namespace(client: &kube::Client, name: &str) -> Namespace {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"))
}

/// A ConfigMap, Service and Deployment in `ns`.
async fn fill(client: &kube::Client, ns: &str) {
    let pp = PostParams::default();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), ns);
    for name in ["c1", "c2"] {
        cms.create(
            &pp,
            &object(json!({"metadata": {"name": name}, "data": {"k": "v"}})),
        )
        .await
        .expect("creating a configmap");
    }
    Api::<Service>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})),
        )
        .await
        .expect("creating a service");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web"}, "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}})),
        )
        .await
        .expect("creating a deployment");
}

async fn count<K>(client: &kube::Client, ns: &str) -> usize
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default())
        .await
        .expect("listing")
        .items
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_it_then_removes_it() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    let namespaces = Api::<Namespace>::all(client.clone());

    let ns = create_namespace(&client, "shop").await;
    fill(&client, "shop").await;
    assert_eq!(count::<ConfigMap>(&client, "shop").await, 2);

    namespaces
        .delete("shop", &DeleteParams::default())
        .await
        .expect("deleting the namespace");
    wait_for(
        &namespaces,
        "shop",
        "namespace deleted",
        conditions::is_deleted(&ns.uid().unwrap()),
    )
    .await;
    assert_eq!(count::<ConfigMap>(&client, "shop").await, 0);
    assert_eq!(count::<Service>(&client, "shop").await, 0);
    assert_eq!(count::<Deployment>(&client, "shop").await, 0);
    assert_eq!(count::<ServiceAccount>(&client, "shop").await, 0);

    // The name can be used again, and the new namespace is left alone.
    let again = create_namespace(&client, "shop").await;
    fill(&client, "shop").await;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), "shop");
    wait_for(
        &sas,
        "default",
        "default serviceaccount",
        |sa: Option<&ServiceAccount>| sa.is_some(),
    )
    .await;
    let current = namespaces.get("shop").await.expect("the new namespace");
    assert_eq!(current.uid(), again.uid());
    assert_eq!(count::<ConfigMap>(&client, "shop").await, 2);
    controllers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_waits_for_content_with_finalizers() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns = create_namespace(&client, "held").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "held");
    cms.create(
        &PostParams::default(),
        &object(json!({"metadata": {"name": "pinned", "finalizers": ["example.com/hold"]}})),
    )
    .await
    .expect("creating a configmap with a finalizer");
    namespaces
        .delete("held", &DeleteParams::default())
        .await
        .expect("deleting the namespace");

    // The controller deletes the configmap; its finalizer keeps it, and so the namespace.
    wait_for(
        &cms,
        "pinned",
        "configmap deletion started",
        |cm: Option<&ConfigMap>| cm.is_some_and(|cm| cm.metadata.deletion_timestamp.is_some()),
    )
    .await;
    let held = namespaces
        .get("held")
        .await
        .expect("the namespace is still there");
    assert_eq!(
        held.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        held.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_string()])
    );

    cms.patch(
        "pinned",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("removing the configmap's finalizer");
    wait_for(
        &namespaces,
        "held",
        "namespace deleted",
        conditions::is_deleted(&ns.uid().unwrap()),
    )
    .await;
    controllers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_serviceaccount() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());

    // The namespaces the server starts with.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
        wait_for(
            &sas,
            "default",
            "default serviceaccount",
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await;
    }

    // One created after the controllers started.
    create_namespace(&client, "later").await;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), "later");
    let first = wait_for(
        &sas,
        "default",
        "default serviceaccount",
        |sa: Option<&ServiceAccount>| sa.is_some(),
    )
    .await
    .expect("the serviceaccount");

    // Deleted: it comes back, as a new object.
    sas.delete("default", &DeleteParams::default())
        .await
        .expect("deleting the default serviceaccount");
    let old_uid = first.uid();
    let second = wait_for(
        &sas,
        "default",
        "default serviceaccount recreated",
        move |sa: Option<&ServiceAccount>| sa.is_some_and(|sa| sa.uid() != old_uid),
    )
    .await
    .expect("the recreated serviceaccount");
    assert_ne!(second.uid(), first.uid());
    let all = sas.list(&ListParams::default()).await.expect("listing");
    assert_eq!(
        all.items.iter().map(|sa| sa.name_any()).collect::<Vec<_>>(),
        ["default"]
    );
    controllers.stop().await;
}
