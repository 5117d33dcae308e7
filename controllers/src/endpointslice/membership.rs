//! Which Services a pod change concerns: those selecting the pod now and those that selected it
//! before (a relabelled pod must leave its old Services' endpoints). Kubernetes compares the old
//! and new pod; an informer here reports only the new one, so the last answer per pod is kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::Store;

use super::desired::selects;
use crate::runtime::{key_of, Change, Informer, WorkQueue};

/// Maps pod changes to the keys of the Services they affect.
pub struct Membership {
    services: Store<Service>,
    last: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Membership {
    pub fn new(services: Store<Service>) -> Self {
        Membership {
            services,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Queues on `queue` every Service that changes and, for every pod change, the Services
    /// it concerns: what both the Endpoints and the EndpointSlice controllers react to.
    pub fn enqueue_services(
        services: &mut Informer<Service>,
        pods: &mut Informer<Pod>,
        queue: &WorkQueue<String>,
    ) {
        services.enqueue(queue, |svc: &Service| vec![key_of(svc)]);
        let membership = Arc::new(Membership::new(services.store()));
        let q = queue.clone();
        pods.observe(move |change, pod: &Pod| {
            for key in membership.services_for(change, pod) {
                q.add(key);
            }
        });
    }

    /// The Services to reconcile after `change` to `pod`.
    pub fn services_for(&self, change: Change, pod: &Pod) -> BTreeSet<String> {
        let pod_key = key_of(pod);
        let now: BTreeSet<String> = if change == Change::Deleted {
            BTreeSet::new()
        } else {
            self.services
                .state_filter(|svc| selects(svc, pod))
                .iter()
                .map(|svc| key_of(&**svc))
                .collect()
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = now.clone();
        if now.is_empty() {
            if let Some(before) = last.remove(&pod_key) {
                keys.extend(before);
            }
        } else if let Some(before) = last.insert(pod_key, now) {
            keys.extend(before);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    #[test]
    fn relabelled_and_deleted_pods_reach_their_former_services() {
        let (reader, mut writer) = store::<Service>();
        for (name, app) in [("web", "web"), ("db", "db")] {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"selector": {"app": app}},
            }))
            .unwrap();
            writer.apply_watcher_event(&Event::Apply(svc));
        }
        let m = Membership::new(reader);
        let pod = |app: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns",
                "labels": {"app": app}}}))
            .unwrap()
        };
        let keys = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
        assert_eq!(keys(m.services_for(Change::Added, &pod("web"))), ["ns/web"]);
        assert_eq!(
            keys(m.services_for(Change::Modified, &pod("db"))),
            ["ns/db", "ns/web"]
        );
        assert_eq!(keys(m.services_for(Change::Modified, &pod("x"))), ["ns/db"]);
        assert!(m.services_for(Change::Modified, &pod("x")).is_empty());
        m.services_for(Change::Modified, &pod("web"));
        assert_eq!(
            keys(m.services_for(Change::Deleted, &pod("web"))),
            ["ns/web"]
        );
    }
}
