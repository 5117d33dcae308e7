//! Type checking of incoming objects against the Kubernetes API types, so a string where an
//! integer belongs is a 400 before anything else looks at the object.

use serde::de::DeserializeOwned;

use serde_json::Value;

use k8s_openapi::api::{
    apps::v1 as apps, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery,
};

fn check<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

/// `Err(message)` when `obj` does not decode as `kind`.
pub fn check_kind(kind: &str, obj: &Value) -> Result<(), String> {
    match kind {
        "Namespace" => check::<core::Namespace>(obj),
        "Pod" => check::<core::Pod>(obj),
        "Node" => check::<core::Node>(obj),
        "Service" => check::<core::Service>(obj),
        "Endpoints" => check::<core::Endpoints>(obj),
        "ConfigMap" => check::<core::ConfigMap>(obj),
        "Secret" => check::<core::Secret>(obj),
        "ServiceAccount" => check::<core::ServiceAccount>(obj),
        "Event" => check::<core::Event>(obj),
        "PersistentVolumeClaim" => check::<core::PersistentVolumeClaim>(obj),
        "PersistentVolume" => check::<core::PersistentVolume>(obj),
        "Deployment" => check::<apps::Deployment>(obj),
        "ReplicaSet" => check::<apps::ReplicaSet>(obj),
        "DaemonSet" => check::<apps::DaemonSet>(obj),
        "StatefulSet" => check::<apps::StatefulSet>(obj),
        "ControllerRevision" => check::<apps::ControllerRevision>(obj),
        "CertificateSigningRequest" => {
            check::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(obj)
        }
        "Job" => check::<batch::Job>(obj),
        "Lease" => check::<coordination::Lease>(obj),
        "EndpointSlice" => check::<discovery::EndpointSlice>(obj),
        "Scale" => check::<k8s_openapi::api::autoscaling::v1::Scale>(obj),
        "DeleteOptions" => {
            check::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>(obj)
        }
        "Binding" => check::<core::Binding>(obj),
        other => Err(format!("no type for kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_are_caught() {
        let ok = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 2, "selector": {}, "template": {}}});
        assert!(check_kind("Deployment", &ok).is_ok());
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": "two", "selector": {}, "template": {}}});
        assert!(check_kind("Deployment", &bad).is_err());
        let bad_meta = json!({"metadata": {"labels": {"a": 1}}});
        assert!(check_kind("ConfigMap", &bad_meta).is_err());
    }
}
