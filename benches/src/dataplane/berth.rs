//! Berth's side of the control plane: Services and EndpointSlices as the API serves them, turned
//! into frontends ([`desired_frontends`]) and written into the pinned maps by the agent's
//! [`Programmer`] — the same calls the agent's service sync makes for each event.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_dataplane::loader::ServiceMaps;
use berth_dataplane::services::{desired_frontends, Frontend, Programmer, ServiceKey};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::plan::{Svc, NAMESPACE, SERVICE_PORT};
use super::DataplaneError;

const NODE: &str = "berth-bench-node";

/// The Service and EndpointSlice objects of `svc`.
pub fn objects(svc: &Svc) -> (Service, EndpointSlice) {
    let service = serde_json::from_value(json!({
        "metadata": {"name": svc.name(), "namespace": NAMESPACE},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": svc.vip.to_string(),
            "clusterIPs": [svc.vip.to_string()],
            "ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "TCP",
                       "targetPort": svc.endpoints[0].port()}],
        },
    }))
    .expect("a literal service");
    let endpoints: Vec<_> = svc
        .endpoints
        .iter()
        .map(|ep| {
            json!({"addresses": [ep.ip().to_string()], "conditions": {"ready": true},
                   "nodeName": NODE})
        })
        .collect();
    let slice = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{}-abcde", svc.name()),
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": svc.name()},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": svc.endpoints[0].port(), "protocol": "TCP"}],
    }))
    .expect("a literal endpoint slice");
    (service, slice)
}

/// Berth's service maps behind the agent's programmer.
pub struct Maps {
    programmer: Programmer<ServiceMaps>,
}

impl Maps {
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            programmer: Programmer::new(ServiceMaps::open(pin_dir)?),
        })
    }

    /// What the agent does for one Service or EndpointSlice event: recompute that service's
    /// frontends and write the difference.
    pub fn sync(&mut self, service: &Service, slice: &EndpointSlice) -> Result<(), DataplaneError> {
        let frontends: Vec<Frontend> = desired_frontends(service, [slice], NODE);
        let key = ServiceKey::new(NAMESPACE, service.metadata.name.clone().unwrap_or_default());
        self.programmer.apply(&key, &frontends)?;
        Ok(())
    }

    /// Programs every service in `objects`; the wall time.
    pub fn sync_all(
        &mut self,
        objects: &[(Service, EndpointSlice)],
    ) -> Result<Duration, DataplaneError> {
        let started = Instant::now();
        for (service, slice) in objects {
            self.sync(service, slice)?;
        }
        Ok(started.elapsed())
    }

    pub fn remove(&mut self, svc: &Svc) -> Result<(), DataplaneError> {
        self.programmer
            .remove(&ServiceKey::new(NAMESPACE, svc.name()))?;
        Ok(())
    }

    /// Removes the service called `name` (one not made from a [`Svc`]).
    pub fn remove_named(&mut self, name: &str) -> Result<(), DataplaneError> {
        self.programmer.remove(&ServiceKey::new(NAMESPACE, name))?;
        Ok(())
    }

    pub fn services(&self) -> usize {
        self.programmer.stats().services
    }
}
