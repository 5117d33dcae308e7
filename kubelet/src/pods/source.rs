//! The objects a pod refers to (ConfigMaps, Secrets, Services), read from the API server.

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ListParams};

use crate::podspec::{ObjectSource, PodSpecError};

pub struct ApiSource {
    pub client: kube::Client,
}

fn api_error(kind: &'static str, namespace: &str, name: &str, e: kube::Error) -> PodSpecError {
    PodSpecError::Fetch {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(e),
    }
}

impl ObjectSource for ApiSource {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, PodSpecError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(|e| api_error("configmap", namespace, name, e))
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, PodSpecError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(|e| api_error("secret", namespace, name, e))
    }

    async fn services(&self, namespace: &str) -> Result<Vec<Service>, PodSpecError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("services", namespace, "", e))?
            .items)
    }
}
