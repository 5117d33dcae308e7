//! The `default` ServiceAccount in every active namespace, recreated if deleted
//! (kube-controller-manager's serviceaccount controller).

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;

use crate::runtime::{Action, Informer, NotSynced, Reconciler, Runner, Synced, WorkQueue};

/// The account every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    #[error("creating serviceaccount {namespace}/{DEFAULT_ACCOUNT}")]
    Create {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

pub struct ServiceAccounts {
    client: Client,
    namespaces: Store<Namespace>,
    accounts: Store<ServiceAccount>,
    synced: [Synced; 2],
}

impl ServiceAccounts {
    /// Registers the controller on `runner`, with the Namespace informer (shared with other
    /// controllers) feeding `queue` too.
    pub fn register(
        runner: &mut Runner,
        client: Client,
        namespaces: &mut Informer<Namespace>,
        queue: WorkQueue<String>,
    ) {
        namespaces.enqueue(&queue, |ns: &Namespace| {
            vec![ns.metadata.name.clone().unwrap_or_default()]
        });
        // Only the accounts this controller manages: the watch stays small.
        let config = watcher::Config::default().fields(&format!("metadata.name={DEFAULT_ACCOUNT}"));
        let mut accounts = Informer::new(Api::<ServiceAccount>::all(client.clone()), config);
        accounts.enqueue(&queue, |sa: &ServiceAccount| {
            vec![sa.metadata.namespace.clone().unwrap_or_default()]
        });
        let controller = ServiceAccounts {
            client,
            namespaces: namespaces.store(),
            accounts: accounts.store(),
            synced: [namespaces.synced(), accounts.synced()],
        };
        runner.informer(accounts);
        runner.controller(controller, queue, 2);
    }
}

fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

impl Reconciler for ServiceAccounts {
    type Error = ServiceAccountError;

    fn name(&self) -> &'static str {
        "serviceaccount"
    }

    async fn prepare(&self) -> Result<(), ServiceAccountError> {
        self.synced[0].wait("namespace").await?;
        self.synced[1].wait("serviceaccount").await?;
        Ok(())
    }

    async fn reconcile(&self, namespace: &str) -> Result<Action, ServiceAccountError> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(namespace)) else {
            return Ok(Action::Done);
        };
        if !active(&ns) {
            return Ok(Action::Done);
        }
        let account = ObjectRef::new(DEFAULT_ACCOUNT).within(namespace);
        if self.accounts.get(&account).is_some() {
            return Ok(Action::Done);
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_ACCOUNT.to_string()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {
                tracing::info!(namespace, "created the default serviceaccount");
                Ok(Action::Done)
            }
            // Already there (the store lags our own create), or the namespace is going or gone:
            // nothing to do, as in Kubernetes.
            Err(kube::Error::Api(s))
                if s.code == 409
                    || s.code == 404
                    || (s.code == 403 && s.message.contains("being terminated")) =>
            {
                Ok(Action::Done)
            }
            Err(source) => Err(ServiceAccountError::Create {
                namespace: namespace.to_string(),
                source,
            }),
        }
    }
}
