//! Rows of PersistentVolumeClaim and PersistentVolume, as `kubectl get pvc` / `get pv` print them.

use super::format::{arr_at, at, is_set, since, str_at, time_at, Millis};
use super::ColumnDefinition as Col;
use serde_json::{json, Value};

const PVC_PHASE_DOC: &str = "phase represents the current phase of PersistentVolumeClaim.";
const PVC_VOLUME_DOC: &str =
    "volumeName is the binding reference to the PersistentVolume backing this claim.";
const PVC_CAPACITY_DOC: &str = "capacity represents the actual resources of the underlying volume.";
const PVC_ACCESS_MODES_DOC: &str = "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1";
const PVC_VOLUME_MODE_DOC: &str = "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.";
const PV_CAPACITY_DOC: &str = "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity";
const PV_ACCESS_MODES_DOC: &str = "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes";
const PV_RECLAIM_DOC: &str = "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming";
const PV_PHASE_DOC: &str = "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase";
const PV_CLAIM_DOC: &str = "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding";
const PV_REASON_DOC: &str = "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.";
const PV_VOLUME_MODE_DOC: &str = "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.";

/// The annotation that named a storage class before `storageClassName`; it still wins.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

fn age(obj: &Value, now: Millis) -> Value {
    json!(since(time_at(obj, &["metadata", "creationTimestamp"]), now))
}

/// `status.phase`, or "Terminating" once deletion has begun.
fn phase(obj: &Value) -> Value {
    if is_set(obj, &["metadata", "deletionTimestamp"]) {
        return json!("Terminating");
    }
    json!(str_at(obj, &["status", "phase"]))
}

/// Kubernetes' `GetAccessModesAsString`: the abbreviations in a fixed order, each once.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn storage_class(obj: &Value) -> Value {
    match at(obj, &["metadata", "annotations", BETA_STORAGE_CLASS]).as_str() {
        Some(class) => json!(class),
        None => json!(str_at(obj, &["spec", "storageClassName"])),
    }
}

/// A pointer field's value, or "<unset>".
fn or_unset(obj: &Value, path: &[&str]) -> Value {
    match at(obj, path).as_str() {
        Some(s) => json!(s),
        None => json!("<unset>"),
    }
}

/// A quantity as Kubernetes' `Quantity.String()` prints it; "0" when absent.
fn quantity(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => return "0".to_string(),
        other => other.to_string(),
    };
    berth_api::Quantity::parse(&text).map_or(text, |q| q.to_string())
}

pub(super) fn persistent_volume_claim_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Status", PVC_PHASE_DOC),
        Col::string("Volume", PVC_VOLUME_DOC),
        Col::string("Capacity", PVC_CAPACITY_DOC),
        Col::string("Access Modes", PVC_ACCESS_MODES_DOC),
        Col::string("StorageClass", "StorageClass of the pvc"),
        Col::string("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
        Col::age(),
        Col::string("VolumeMode", PVC_VOLUME_MODE_DOC).wide(),
    ]
}

/// Capacity and access modes are the bound volume's, so blank until the claim is bound.
pub(super) fn persistent_volume_claim_cells(pvc: &Value, now: Millis) -> Vec<Value> {
    let volume = str_at(pvc, &["spec", "volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(at(pvc, &["status", "capacity", "storage"])),
            access_modes(arr_at(pvc, &["status", "accessModes"])),
        )
    };
    vec![
        name(pvc),
        phase(pvc),
        json!(volume),
        json!(capacity),
        json!(modes),
        storage_class(pvc),
        or_unset(pvc, &["spec", "volumeAttributesClassName"]),
        age(pvc, now),
        or_unset(pvc, &["spec", "volumeMode"]),
    ]
}

pub(super) fn persistent_volume_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Capacity", PV_CAPACITY_DOC),
        Col::string("Access Modes", PV_ACCESS_MODES_DOC),
        Col::string("Reclaim Policy", PV_RECLAIM_DOC),
        Col::string("Status", PV_PHASE_DOC),
        Col::string("Claim", PV_CLAIM_DOC),
        Col::string("StorageClass", "StorageClass of the pv"),
        Col::string("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
        Col::string("Reason", PV_REASON_DOC),
        Col::age(),
        Col::string("VolumeMode", PV_VOLUME_MODE_DOC).wide(),
    ]
}

/// CLAIM is `<namespace>/<name>` of the claim reference, blank without one.
pub(super) fn persistent_volume_cells(pv: &Value, now: Millis) -> Vec<Value> {
    let claim = if is_set(pv, &["spec", "claimRef"]) {
        format!(
            "{}/{}",
            str_at(pv, &["spec", "claimRef", "namespace"]),
            str_at(pv, &["spec", "claimRef", "name"])
        )
    } else {
        String::new()
    };
    vec![
        name(pv),
        json!(quantity(at(pv, &["spec", "capacity", "storage"]))),
        json!(access_modes(arr_at(pv, &["spec", "accessModes"]))),
        json!(str_at(pv, &["spec", "persistentVolumeReclaimPolicy"])),
        phase(pv),
        json!(claim),
        storage_class(pv),
        or_unset(pv, &["spec", "volumeAttributesClassName"]),
        json!(str_at(pv, &["status", "reason"])),
        age(pv, now),
        or_unset(pv, &["spec", "volumeMode"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::format::parse_time;
    use super::*;

    fn now() -> Millis {
        parse_time("2024-05-01T12:00:00Z").expect("now")
    }

    #[test]
    fn pending_claim() {
        let pvc = json!({
            "metadata": {"name": "data-web-0", "creationTimestamp": "2024-05-01T11:58:00Z"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"},
            "status": {"phase": "Pending"}
        });
        assert_eq!(
            persistent_volume_claim_cells(&pvc, now()),
            vec![
                json!("data-web-0"),
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("standard"),
                json!("<unset>"),
                json!("2m"),
                json!("Filesystem"),
            ]
        );
        assert_eq!(
            persistent_volume_claim_columns().len(),
            persistent_volume_claim_cells(&pvc, now()).len()
        );
    }

    #[test]
    fn bound_claim_shows_its_volume() {
        let pvc = json!({
            "metadata": {"name": "data", "creationTimestamp": "2024-05-01T11:00:00Z",
                         "deletionTimestamp": "2024-05-01T11:59:00Z",
                         "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
            "spec": {"volumeName": "pv0", "storageClassName": "new",
                     "volumeAttributesClassName": "gold"},
            "status": {"phase": "Bound", "capacity": {"storage": "1024Mi"},
                       "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"]}
        });
        let cells = persistent_volume_claim_cells(&pvc, now());
        assert_eq!(
            cells[1..7],
            [
                json!("Terminating"),
                json!("pv0"),
                json!("1Gi"),
                json!("RWO,RWX"),
                json!("old"),
                json!("gold")
            ]
        );
        assert_eq!(cells[8], json!("<unset>"));
    }

    #[test]
    fn volume() {
        let pv = json!({
            "metadata": {"name": "pv0", "creationTimestamp": "2024-05-01T09:00:00Z"},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOncePod"],
                     "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Block",
                     "claimRef": {"namespace": "default", "name": "data-web-0"},
                     "hostPath": {"path": "/srv"}},
            "status": {"phase": "Released", "reason": "Gone"}
        });
        assert_eq!(
            persistent_volume_cells(&pv, now()),
            vec![
                json!("pv0"),
                json!("10Gi"),
                json!("RWOP"),
                json!("Retain"),
                json!("Released"),
                json!("default/data-web-0"),
                json!(""),
                json!("<unset>"),
                json!("Gone"),
                json!("3h"),
                json!("Block"),
            ]
        );
        assert_eq!(persistent_volume_columns().len(), 11);
        let bare = json!({"metadata": {"name": "x"}});
        assert_eq!(persistent_volume_cells(&bare, now())[1], json!("0"));
        assert_eq!(persistent_volume_cells(&bare, now())[5], json!(""));
    }
}
