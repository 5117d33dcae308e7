//! PersistentVolumeClaims and PersistentVolumes through real kubectl: apply, the tables `kubectl
//! get pvc` / `get pv` print, validation errors, and the claim's immutable spec.

mod common;

use common::{header, row, Server};

const STORAGE: &str = r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv0
spec:
  capacity:
    storage: 10Gi
  accessModes: ["ReadWriteOnce", "ReadOnlyMany"]
  storageClassName: manual
  claimRef:
    namespace: default
    name: data
  hostPath:
    path: /srv/pv0
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: default
spec:
  accessModes: ["ReadWriteOnce"]
  storageClassName: manual
  resources:
    requests:
      storage: 1Gi
"#;

#[test]
fn claims_and_volumes_print_as_kubectl_expects() {
    let server = Server::start();
    let kubectl = server.kubectl();
    let out = kubectl.ok_stdin(&["apply", "-f", "-"], STORAGE);
    assert!(
        out.contains("persistentvolume/pv0 created"),
        "apply output: {out}"
    );
    assert!(
        out.contains("persistentvolumeclaim/data created"),
        "apply output: {out}"
    );

    let pvc = kubectl.ok(&["get", "pvc"]);
    assert_eq!(
        header(&pvc),
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ]
    );
    // Unbound: VOLUME, CAPACITY and ACCESS MODES are blank.
    let cells = row(&pvc, "data");
    assert_eq!(
        cells[..4],
        ["data", "Pending", "manual", "<unset>"],
        "{pvc}"
    );

    let wide = kubectl.ok(&["get", "persistentvolumeclaims", "-o", "wide"]);
    assert_eq!(header(&wide).last(), Some(&"VOLUMEMODE"), "{wide}");
    assert_eq!(row(&wide, "data").last(), Some(&"Filesystem"), "{wide}");

    let pv = kubectl.ok(&["get", "pv"]);
    assert_eq!(
        header(&pv),
        [
            "NAME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "RECLAIM",
            "POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ]
    );
    let cells = row(&pv, "pv0");
    assert_eq!(
        cells[..8],
        [
            "pv0",
            "10Gi",
            "RWO,ROX",
            "Retain",
            "Pending",
            "default/data",
            "manual",
            "<unset>"
        ],
        "{pv}"
    );

    // Defaults as a real server fills them in.
    let phase = kubectl.ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Pending");
    let policy = kubectl.ok(&[
        "get",
        "pv",
        "pv0",
        "-o",
        "jsonpath={.spec.persistentVolumeReclaimPolicy}/{.spec.volumeMode}",
    ]);
    assert_eq!(policy, "Retain/Filesystem");

    // A second apply goes through a strategic merge patch; labels may change.
    let relabelled = STORAGE.replace(
        "  name: data\n  namespace: default\n",
        "  name: data\n  namespace: default\n  labels:\n    tier: db\n",
    );
    let out = kubectl.ok_stdin(&["apply", "-f", "-"], &relabelled);
    assert!(
        out.contains("persistentvolumeclaim/data configured"),
        "{out}"
    );
    assert_eq!(
        kubectl
            .ok(&["get", "pvc", "-l", "tier=db", "-o", "name"])
            .trim(),
        "persistentvolumeclaim/data"
    );

    kubectl.ok(&["delete", "pvc", "data"]);
    kubectl.ok(&["delete", "pv", "pv0"]);
    let gone = kubectl.fails(&["get", "pvc", "data"]);
    assert!(
        gone.contains(r#"persistentvolumeclaims "data" not found"#),
        "{gone}"
    );
}

#[test]
fn invalid_claims_are_rejected_with_kubernetes_messages() {
    let server = Server::start();
    let kubectl = server.kubectl();
    let no_storage = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: bad
spec:
  accessModes: ["ReadWriteEverything"]
"#;
    let err = kubectl.fails_stdin(&["create", "-f", "-"], no_storage);
    assert!(
        err.contains(r#"PersistentVolumeClaim "bad" is invalid"#),
        "{err}"
    );
    assert!(
        err.contains(r#"spec.accessModes: Unsupported value: "ReadWriteEverything""#),
        "{err}"
    );
    assert!(
        err.contains("spec.resources[storage]: Required value"),
        "{err}"
    );

    let no_source = r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: nowhere
spec:
  capacity:
    storage: 1Gi
  accessModes: ["ReadWriteOnce"]
"#;
    let err = kubectl.fails_stdin(&["create", "-f", "-"], no_source);
    assert!(
        err.contains("spec: Required value: must specify a volume type"),
        "{err}"
    );

    // A claim's access modes are fixed once created.
    kubectl.ok_stdin(
        &["create", "-f", "-"],
        STORAGE.split("---\n").nth(1).expect("the claim document"),
    );
    let err = kubectl.fails(&[
        "patch",
        "pvc",
        "data",
        "--type=merge",
        "-p",
        r#"{"spec":{"accessModes":["ReadWriteMany"]}}"#,
    ]);
    assert!(
        err.contains("spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"),
        "{err}"
    );
}
