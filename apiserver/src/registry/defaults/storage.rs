//! Storage defaults: core/v1 PersistentVolumeClaim and PersistentVolume.

use serde_json::{json, Value};

use super::{child, set_default};

/// A claim is Pending until a volume binds it and mounts as a filesystem unless it asks for a
/// raw block device.
pub(super) fn default_persistent_volume_claim(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

/// A hand-made volume is kept when its claim goes (Retain): only provisioners choose Delete.
pub(super) fn default_persistent_volume(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
        if let Some(hp) = spec.get_mut("hostPath").filter(|h| h.is_object()) {
            set_default(hp, "type", json!(""));
        }
    }
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::apply_defaults;
    use serde_json::json;

    #[test]
    fn claim_defaults() {
        let mut pvc =
            json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}});
        apply_defaults("PersistentVolumeClaim", &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"], json!({"phase": "Pending"}));

        let mut block = json!({"spec": {"volumeMode": "Block"}, "status": {"phase": "Bound"}});
        apply_defaults("PersistentVolumeClaim", &mut block);
        assert_eq!(block["spec"]["volumeMode"], "Block");
        assert_eq!(block["status"]["phase"], "Bound");
    }

    #[test]
    fn volume_defaults() {
        let mut pv = json!({"spec": {"hostPath": {"path": "/data"}}});
        apply_defaults("PersistentVolume", &mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["spec"]["hostPath"], json!({"path": "/data", "type": ""}));
        assert_eq!(pv["status"], json!({"phase": "Pending"}));

        let mut kept = json!({"spec": {"persistentVolumeReclaimPolicy": "Delete",
            "csi": {"driver": "d", "volumeHandle": "h"}}, "status": {"phase": "Available"}});
        apply_defaults("PersistentVolume", &mut kept);
        assert_eq!(kept["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(kept["status"]["phase"], "Available");
    }
}
