//! Keeping a [`DnsIndex`] current from the API: one watcher on Services and one on
//! EndpointSlices, all namespaces.

use std::fmt::Debug;

use futures::{pin_mut, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::DnsIndex;

/// Follows Services and EndpointSlices into `index` until the task is dropped.
///
/// Watch errors are retried with kube's default backoff. Every (re)list replaces that kind's
/// objects in the index wholesale once it is complete, so objects deleted while the watch was
/// down disappear and the index never shows a half-listed state.
pub async fn run_dns_sync(client: Client, index: DnsIndex) {
    let services = follow(Api::<Service>::all(client.clone()), {
        let index = index.clone();
        move |op: Op<'_, Service>| match op {
            Op::Apply(svc) => index.upsert_service(svc),
            Op::Delete(svc) => index.remove_service(svc),
            Op::Replace(all) => index.replace_services(all),
        }
    });
    let slices = follow(
        Api::<EndpointSlice>::all(client),
        move |op: Op<'_, EndpointSlice>| match op {
            Op::Apply(slice) => index.upsert_endpoint_slice(slice),
            Op::Delete(slice) => index.remove_endpoint_slice(slice),
            Op::Replace(all) => index.replace_endpoint_slices(all),
        },
    );
    futures::join!(services, slices);
}

/// What a watcher event does to the index.
enum Op<'a, K> {
    Apply(&'a K),
    Delete(&'a K),
    Replace(&'a [K]),
}

async fn follow<K>(api: Api<K>, mut apply: impl FnMut(Op<'_, K>))
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let kind = K::kind(&()).to_string();
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    pin_mut!(stream);
    let mut listing: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(obj)) => listing.push(obj),
            Ok(Event::InitDone) => {
                apply(Op::Replace(&listing));
                tracing::debug!(%kind, count = listing.len(), "dns: index resynced");
                listing = Vec::new();
            }
            Ok(Event::Apply(obj)) => apply(Op::Apply(&obj)),
            Ok(Event::Delete(obj)) => apply(Op::Delete(&obj)),
            Err(e) => tracing::warn!(%kind, error = %e, "dns: watch failed; retrying"),
        }
    }
}
