//! Namespace lifecycle: a namespace being deleted has every namespaced object in it deleted
//! (whatever resources the server serves, found through discovery), then loses its `kubernetes`
//! finalizer so the server removes it (kube-controller-manager's namespace controller).

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;

use crate::runtime::{
    Action, Informer, NotSynced, RateLimit, Reconciler, Runner, Synced, WorkQueue,
};

/// The spec finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("discovering the served resources")]
    Discovery {
        #[source]
        source: kube::Error,
    },
    #[error("{verb} {resource} in namespace {namespace}")]
    Content {
        verb: &'static str,
        namespace: String,
        resource: String,
        #[source]
        source: kube::Error,
    },
    #[error("namespace {namespace} still holds {remaining}")]
    ContentRemaining {
        namespace: String,
        remaining: String,
    },
    #[error("{step} namespace {namespace}")]
    Finalize {
        step: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

/// Kubernetes' namespace controller retries faster than the default: 5 ms up to 60 s.
pub fn rate_limit() -> RateLimit {
    RateLimit {
        max: std::time::Duration::from_secs(60),
        ..RateLimit::default()
    }
}

pub struct NamespaceLifecycle {
    client: Client,
    namespaces: Store<Namespace>,
    synced: Synced,
}

impl NamespaceLifecycle {
    pub fn register(
        runner: &mut Runner,
        client: Client,
        namespaces: &mut Informer<Namespace>,
        queue: WorkQueue<String>,
        workers: usize,
    ) {
        namespaces.enqueue(&queue, |ns: &Namespace| {
            vec![ns.metadata.name.clone().unwrap_or_default()]
        });
        let controller = NamespaceLifecycle {
            client,
            namespaces: namespaces.store(),
            synced: namespaces.synced(),
        };
        runner.controller(controller, queue, workers);
    }

    /// Deletes everything in `namespace`; an error lists what is left (objects with finalizers
    /// or a grace period still running).
    async fn delete_content(&self, namespace: &str) -> Result<(), NamespaceError> {
        let discovery = Discovery::new(self.client.clone())
            .run_aggregated()
            .await
            .map_err(|source| NamespaceError::Discovery { source })?;
        let mut remaining = Vec::new();
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                    continue;
                }
                let bulk = caps.supports_operation(verbs::DELETE_COLLECTION);
                if !bulk && !caps.supports_operation(verbs::DELETE) {
                    continue;
                }
                let left = self.delete_all(namespace, &resource, bulk).await?;
                if left > 0 {
                    remaining.push(format!("{}: {left}", qualified(&resource)));
                }
            }
        }
        if remaining.is_empty() {
            Ok(())
        } else {
            Err(NamespaceError::ContentRemaining {
                namespace: namespace.to_string(),
                remaining: remaining.join(", "),
            })
        }
    }

    /// Deletes every `resource` object in `namespace`; returns how many are still there.
    async fn delete_all(
        &self,
        namespace: &str,
        resource: &ApiResource,
        bulk: bool,
    ) -> Result<usize, NamespaceError> {
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, resource);
        let err = |verb, source| NamespaceError::Content {
            verb,
            namespace: namespace.to_string(),
            resource: qualified(resource),
            source,
        };
        // Background: dependents are the garbage collector's business, and an orphan finalizer
        // would keep objects around that nothing removes.
        let dp = DeleteParams::background();
        let lp = ListParams::default();
        if bulk {
            api.delete_collection(&dp, &lp)
                .await
                .map_err(|e| err("deleting", e))?;
        } else {
            let list = api
                .list_metadata(&lp)
                .await
                .map_err(|e| err("listing", e))?;
            for obj in list.items {
                let name = obj.metadata.name.unwrap_or_default();
                match api.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(err("deleting", e)),
                }
            }
        }
        let left = api
            .list_metadata(&lp)
            .await
            .map_err(|e| err("listing", e))?;
        Ok(left.items.len())
    }

    /// Removes this controller's spec finalizer; returns the namespace as the server left it,
    /// or `None` if it is gone.
    async fn finalize(&self, ns: &Namespace) -> Result<Option<Namespace>, NamespaceError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let api = Api::<Namespace>::all(self.client.clone());
        let finalizers: Vec<String> = spec_finalizers(ns)
            .iter()
            .filter(|f| f.as_str() != FINALIZER)
            .cloned()
            .collect();
        let err = |step, source| NamespaceError::Finalize {
            step,
            namespace: name.clone(),
            source,
        };
        // `finalize` is the only way to change a namespace's spec.finalizers; the server deletes
        // the namespace during this update once no finalizer is left.
        let mut finalized = ns.clone();
        finalized
            .spec
            .get_or_insert_with(Default::default)
            .finalizers = Some(finalizers);
        match api
            .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
            .await
        {
            Ok(ns) => Ok(Some(ns)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(err("finalizing", e)),
        }
    }

    /// Deletes a namespace whose finalizers are all gone (the UID pinned, so a namespace
    /// re-created under the same name is left alone).
    async fn delete_finalized(&self, ns: &Namespace) -> Result<(), NamespaceError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: ns.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match Api::<Namespace>::all(self.client.clone())
            .delete(&name, &dp)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(source) => Err(NamespaceError::Finalize {
                step: "deleting",
                namespace: name,
                source,
            }),
        }
    }
}

fn spec_finalizers(ns: &Namespace) -> &[String] {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_deref())
        .unwrap_or_default()
}

fn fully_finalized(ns: &Namespace) -> bool {
    spec_finalizers(ns).is_empty()
        && ns
            .metadata
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .is_empty()
}

/// `deployments.apps`, or `configmaps` for the core group.
fn qualified(r: &ApiResource) -> String {
    if r.group.is_empty() {
        r.plural.clone()
    } else {
        format!("{}.{}", r.plural, r.group)
    }
}

impl Reconciler for NamespaceLifecycle {
    type Error = NamespaceError;

    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn prepare(&self) -> Result<(), NamespaceError> {
        Ok(self.synced.wait("namespace").await?)
    }

    async fn reconcile(&self, name: &str) -> Result<Action, NamespaceError> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(name)) else {
            return Ok(Action::Done);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(Action::Done);
        }
        let mut ns = (*ns).clone();
        if spec_finalizers(&ns).iter().any(|f| f == FINALIZER) {
            self.delete_content(name).await?;
            match self.finalize(&ns).await? {
                Some(left) => ns = left,
                None => return Ok(Action::Done),
            }
            tracing::info!(namespace = name, "namespace emptied and finalized");
        }
        if fully_finalized(&ns) {
            self.delete_finalized(&ns).await?;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(spec: &[&str], meta: &[&str]) -> Namespace {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "finalizers": meta},
            "spec": {"finalizers": spec},
        }))
        .unwrap()
    }

    #[test]
    fn finalized_only_without_any_finalizer() {
        assert!(fully_finalized(&ns(&[], &[])));
        assert!(!fully_finalized(&ns(&["kubernetes"], &[])));
        assert!(!fully_finalized(&ns(&[], &["example.com/x"])));
        assert_eq!(
            spec_finalizers(&ns(&["kubernetes", "x.io/y"], &[])),
            ["kubernetes", "x.io/y"]
        );
    }

    #[test]
    fn resources_are_named_with_their_group() {
        let core = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let apps = ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&());
        assert_eq!(qualified(&core), "configmaps");
        assert_eq!(qualified(&apps), "deployments.apps");
    }
}
