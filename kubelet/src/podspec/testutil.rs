//! Test helpers: a map-backed [`ObjectSource`] and facts.

use std::collections::HashMap;
use std::future::Future;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::ByteString;

use super::{ObjectSource, PodFacts, PodSpecError};

#[derive(Default)]
pub(crate) struct MapSource {
    config_maps: HashMap<(String, String), ConfigMap>,
    secrets: HashMap<(String, String), Secret>,
    services: Vec<Service>,
}

impl MapSource {
    pub(crate) fn config_map(mut self, ns: &str, name: &str, data: serde_json::Value) -> Self {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns}, "data": data
        }))
        .expect("configmap");
        self.config_maps.insert((ns.into(), name.into()), cm);
        self
    }

    pub(crate) fn config_map_obj(mut self, cm: ConfigMap) -> Self {
        let key = (
            cm.metadata.namespace.clone().unwrap_or_default(),
            cm.metadata.name.clone().unwrap_or_default(),
        );
        self.config_maps.insert(key, cm);
        self
    }

    pub(crate) fn secret(mut self, ns: &str, name: &str, data: serde_json::Value) -> Self {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some(ns.into());
        let map = data
            .as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().expect("string").as_bytes().to_vec();
                (k.clone(), ByteString(v))
            })
            .collect();
        s.data = Some(map);
        self.secrets.insert((ns.into(), name.into()), s);
        self
    }

    pub(crate) fn service(mut self, s: Service) -> Self {
        self.services.push(s);
        self
    }
}

impl ObjectSource for MapSource {
    fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, PodSpecError>> + Send {
        let v = self.config_maps.get(&(ns.into(), name.into())).cloned();
        async move { Ok(v) }
    }

    fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, PodSpecError>> + Send {
        let v = self.secrets.get(&(ns.into(), name.into())).cloned();
        async move { Ok(v) }
    }

    fn services(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<Vec<Service>, PodSpecError>> + Send {
        let v: Vec<Service> = self
            .services
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .cloned()
            .collect();
        async move { Ok(v) }
    }
}

pub(crate) fn facts() -> PodFacts {
    PodFacts {
        pod_ip: Some("10.1.0.7".into()),
        host_ip: "192.168.0.10".into(),
        node_name: "node-1".into(),
        node_allocatable_cpu_millis: 4000,
        node_allocatable_memory: 8 << 30,
        node_allocatable_ephemeral_storage: 100 << 30,
    }
}

pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}
