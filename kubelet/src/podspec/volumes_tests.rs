use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;
use crate::podspec::testutil::{block_on, facts, MapSource};
use crate::podspec::tmpfs::NoMounter;

/// Records tmpfs requests instead of mounting.
#[derive(Default)]
struct Recorder(RefCell<Vec<(PathBuf, Option<u64>)>>);

impl Mounter for Recorder {
    fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> Result<(), PodSpecError> {
        self.0.borrow_mut().push((target.to_path_buf(), size));
        Ok(())
    }
}

fn pod(volumes: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"a": "1", "b": "2"}},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "256Mi", "cpu": "1"}}}],
                 "volumes": volumes}
    }))
    .unwrap()
}

fn src() -> MapSource {
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "cfg", "namespace": "ns"},
        "data": {"key": "value", "other": "o"},
        "binaryData": {"bin": "AAE="}
    }))
    .unwrap();
    cm.metadata.namespace = Some("ns".into());
    MapSource::default().config_map_obj(cm).secret(
        "ns",
        "sec",
        json!({"user": "admin", "pw": "s3cret"}),
    )
}

fn prepare(p: &Pod, dir: &Path) -> Result<PreparedVolumes, PodSpecError> {
    block_on(prepare_volumes(&src(), p, dir, &facts(), &NoMounter))
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn config_map_all_keys_and_items() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pod(json!([
        {"name": "all", "configMap": {"name": "cfg"}},
        {"name": "some", "configMap": {"name": "cfg", "defaultMode": 0o600,
            "items": [{"key": "key", "path": "sub/renamed", "mode": 0o400}, {"key": "other", "path": "o"}]}}
    ]));
    let v = prepare(&p, tmp.path()).unwrap();
    let all = v.get("all").unwrap();
    assert_eq!(all.kind, VolumeKind::ConfigMap);
    assert!(all.readonly);
    assert_eq!(
        all.path,
        tmp.path().join("volumes/kubernetes.io~configmap/all")
    );
    assert_eq!(fs::read_to_string(all.path.join("key")).unwrap(), "value");
    assert_eq!(fs::read(all.path.join("bin")).unwrap(), vec![0u8, 1]);
    assert_eq!(mode(&all.path.join("key")), 0o644);
    let some = &v.get("some").unwrap().path;
    assert_eq!(
        fs::read_to_string(some.join("sub/renamed")).unwrap(),
        "value"
    );
    assert_eq!(mode(&some.join("sub/renamed")), 0o400);
    assert_eq!(mode(&some.join("o")), 0o600);
    assert!(fs::symlink_metadata(some.join("key")).is_err());
}

#[test]
fn missing_objects_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |vols| prepare(&pod(vols), tmp.path()).unwrap_err().to_string();
    assert_eq!(
        err(json!([{"name": "v", "configMap": {"name": "nope"}}])),
        "configmap \"nope\" not found"
    );
    assert_eq!(
        err(json!([{"name": "v", "secret": {"secretName": "nope"}}])),
        "secret \"nope\" not found"
    );
    assert_eq!(
        err(
            json!([{"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}}])
        ),
        "configmap references non-existent config key: zz"
    );
    assert_eq!(
        err(
            json!([{"name": "v", "secret": {"secretName": "sec", "items": [{"key": "zz", "path": "z"}]}}])
        ),
        "references non-existent secret key: zz"
    );
    assert_eq!(
        err(json!([{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}])),
        "volume v: volume type is not supported (emptyDir, hostPath, configMap, secret, downwardAPI and projected are)"
    );
    // Optional: an empty volume, and missing items skipped.
    let p = pod(json!([
        {"name": "a", "configMap": {"name": "nope", "optional": true}},
        {"name": "b", "secret": {"secretName": "sec", "optional": true, "items": [{"key": "zz", "path": "z"}, {"key": "pw", "path": "p"}]}}
    ]));
    let v = prepare(&p, tmp.path()).unwrap();
    let a = &v.get("a").unwrap().path;
    assert_eq!(
        fs::read_dir(a).unwrap().count(),
        2,
        "..data and its timestamped dir"
    );
    assert_eq!(
        fs::read_to_string(v.get("b").unwrap().path.join("p")).unwrap(),
        "s3cret"
    );
}

#[test]
fn secrets_and_memory_dirs_go_on_tmpfs() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pod(json!([
        {"name": "s", "secret": {"secretName": "sec"}},
        {"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "big", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "d", "emptyDir": {}}
    ]));
    let rec = Recorder::default();
    let v = block_on(prepare_volumes(&src(), &p, tmp.path(), &facts(), &rec)).unwrap();
    let root = tmp.path().join("volumes");
    assert_eq!(
        *rec.0.borrow(),
        vec![
            (root.join("kubernetes.io~secret/s"), Some(256 << 20)),
            (root.join("kubernetes.io~empty-dir/m"), Some(64 << 20)),
            // sizeLimit above the pod's memory limit: the pod limit wins.
            (root.join("kubernetes.io~empty-dir/big"), Some(256 << 20)),
        ]
    );
    assert_eq!(v.get("m").unwrap().kind, VolumeKind::MemoryEmptyDir);
    let d = v.get("d").unwrap();
    assert_eq!(d.kind, VolumeKind::EmptyDir);
    assert!(!d.readonly);
    assert_eq!(mode(&d.path), 0o777);
    assert_eq!(
        fs::read_to_string(v.get("s").unwrap().path.join("user")).unwrap(),
        "admin"
    );
}

#[test]
fn downward_api_and_projected() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pod(json!([
        {"name": "dw", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
        ]}},
        {"name": "pj", "projected": {"defaultMode": 0o440, "sources": [
            {"configMap": {"name": "cfg", "items": [{"key": "key", "path": "cfg/key"}]}},
            {"secret": {"name": "sec"}},
            {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
        ]}}
    ]));
    let v = prepare(&p, tmp.path()).unwrap();
    let dw = &v.get("dw").unwrap().path;
    assert_eq!(
        fs::read_to_string(dw.join("labels")).unwrap(),
        "a=\"1\"\nb=\"2\""
    );
    assert_eq!(fs::read_to_string(dw.join("name")).unwrap(), "p");
    assert_eq!(fs::read_to_string(dw.join("mem")).unwrap(), "256");
    let pj = &v.get("pj").unwrap().path;
    assert!(pj.ends_with("volumes/kubernetes.io~projected/pj"));
    assert_eq!(fs::read_to_string(pj.join("cfg/key")).unwrap(), "value");
    assert_eq!(fs::read_to_string(pj.join("pw")).unwrap(), "s3cret");
    assert_eq!(fs::read_to_string(pj.join("ns")).unwrap(), "ns");
    assert_eq!(mode(&pj.join("pw")), 0o440);
    let token = pod(
        json!([{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]),
    );
    assert!(prepare(&token, tmp.path()).is_err());
}

#[test]
fn refresh_picks_up_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pod(json!([{"name": "c", "configMap": {"name": "cfg"}}]));
    prepare(&p, tmp.path()).unwrap();
    let updated = MapSource::default().config_map("ns", "cfg", json!({"key": "new"}));
    let v = block_on(prepare_volumes(
        &updated,
        &p,
        tmp.path(),
        &facts(),
        &NoMounter,
    ))
    .unwrap();
    let path = &v.get("c").unwrap().path;
    assert_eq!(fs::read_to_string(path.join("key")).unwrap(), "new");
    assert!(fs::symlink_metadata(path.join("other")).is_err());
}

#[test]
fn host_path_types() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fs::write(t.join("file"), "x").unwrap();
    let check = |path: PathBuf, ty: &str| {
        let p = pod(json!([{"name": "h", "hostPath": {"path": path, "type": ty}}]));
        prepare(&p, t).map(|v| v.get("h").unwrap().path.clone())
    };
    assert_eq!(
        check(t.join("new/dir"), "DirectoryOrCreate").unwrap(),
        t.join("new/dir")
    );
    assert!(t.join("new/dir").is_dir());
    assert_eq!(mode(&t.join("new/dir")), 0o755);
    check(t.join("new/dir"), "Directory").unwrap();
    check(t.join("newfile"), "FileOrCreate").unwrap();
    assert!(t.join("newfile").is_file());
    check(t.join("file"), "File").unwrap();
    check(t.join("whatever"), "").unwrap();
    assert!(t.join("whatever").is_dir());
    check(t.join("file"), "").unwrap();
    let msg = |r: Result<PathBuf, PodSpecError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(check(t.join("file"), "Directory")),
        format!(
            "hostPath type check failed: {} is not a directory",
            t.join("file").display()
        )
    );
    assert_eq!(
        msg(check(t.join("missing"), "File")),
        format!(
            "hostPath type check failed: {} is not a file",
            t.join("missing").display()
        )
    );
    assert_eq!(
        msg(check(t.join("file"), "Socket")),
        format!(
            "hostPath type check failed: {} is not a socket file",
            t.join("file").display()
        )
    );
    assert!(msg(check(t.join("file"), "CharDevice")).contains("is not a character device"));
    check(PathBuf::from("/dev/null"), "CharDevice").unwrap();
    assert_eq!(
        msg(check(t.join("file"), "Bogus")),
        "Bogus is an invalid volume type"
    );
}
