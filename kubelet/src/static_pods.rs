//! Static pods: pods from manifest files in `--pod-manifest-path`, run by this kubelet alone
//! and shown in the API as mirror pods (as the kubelet's file source and mirror pod manager
//! do). A static pod is named `<name>-<node>`, its UID is a hash of the node, the file and its
//! content (so an edit makes a new pod), and it tolerates every NoExecute taint. Its mirror pod
//! carries `kubernetes.io/config.mirror` and an owner reference to the Node; deleting the mirror
//! does not stop the pod — the kubelet creates it again — removing the file does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::ResourceExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// The manifests in `dir` as this node's static pods, by UID. Files that don't parse are
/// skipped with a warning, as the kubelet does.
pub fn load(dir: &Path, node: &str) -> BTreeMap<String, Pod> {
    let mut pods = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return pods;
    };
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let wanted = [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if name.starts_with('.') || !wanted || !path.is_file() {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| parse(&b, &path, node))
        {
            Ok(found) => pods.extend(found.into_iter().map(|p| (p.uid().unwrap_or_default(), p))),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "kubelet: skipping a static pod manifest")
            }
        }
    }
    pods
}

/// The pods of one manifest file (YAML, possibly several documents, or JSON).
pub fn parse(content: &[u8], path: &Path, node: &str) -> Result<Vec<Pod>, String> {
    let text = std::str::from_utf8(content).map_err(|e| e.to_string())?;
    let mut pods = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(|k| k.as_str()) != Some("Pod") {
            return Err("not a Pod".into());
        }
        let pod: Pod = serde_json::from_value(value).map_err(|e| e.to_string())?;
        pods.push(static_pod(pod, content, path, index, node)?);
    }
    Ok(pods)
}

fn static_pod(
    mut pod: Pod,
    content: &[u8],
    path: &Path,
    index: usize,
    node: &str,
) -> Result<Pod, String> {
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("the pod has no name")?;
    let mut hash = Sha256::new();
    hash.update(node.as_bytes());
    hash.update(path.as_os_str().as_encoded_bytes());
    hash.update(index.to_le_bytes());
    hash.update(content);
    let hex = hex::encode(hash.finalize());
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    pod.metadata.name = Some(format!("{name}-{node}"));
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace = Some("default".into());
    }
    pod.metadata.uid = Some(uid.clone());
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(CONFIG_SOURCE.into(), "file".into());
    annotations.insert(CONFIG_HASH.into(), uid);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_owned());
    // Static pods are the node's own: no taint drives them off it.
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        });
    Ok(pod)
}

/// Whether a pod in the API is a mirror pod (run from a file, not from the API).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.annotations().contains_key(CONFIG_MIRROR)
}

/// Makes the API's mirror pods match the static pods: creates missing ones, replaces those of an
/// older version of a file, deletes those whose file is gone.
pub async fn sync_mirrors(client: &kube::Client, node: &str, pods: &BTreeMap<String, Pod>) {
    let all: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={node}");
    let existing = match all.list(&ListParams::default().fields(&selector)).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %e, "kubelet: listing mirror pods");
            return;
        }
    };
    let mirrors: Vec<&Pod> = existing.iter().filter(|p| is_mirror(p)).collect();
    let node_uid = Api::<Node>::all(client.clone())
        .get(node)
        .await
        .ok()
        .and_then(|n| n.uid());
    for (uid, pod) in pods {
        let namespace = pod.namespace().unwrap_or_default();
        let current = mirrors
            .iter()
            .find(|m| m.name_any() == pod.name_any() && m.namespace() == pod.namespace());
        match current {
            Some(m)
                if m.annotations().get(CONFIG_MIRROR) == Some(uid)
                    && m.metadata.deletion_timestamp.is_none() =>
            {
                continue
            }
            Some(m) => delete(client, m).await,
            None => {}
        }
        let mut mirror = pod.clone();
        mirror.metadata.uid = None;
        mirror.metadata.resource_version = None;
        mirror.status = None;
        mirror
            .annotations_mut()
            .insert(CONFIG_MIRROR.into(), uid.clone());
        if let Some(node_uid) = &node_uid {
            mirror.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_owned(),
                uid: node_uid.clone(),
                controller: Some(true),
                ..Default::default()
            }]);
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        match api.create(&PostParams::default(), &mirror).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), error = %e, "kubelet: creating a mirror pod")
            }
        }
    }
    for m in mirrors {
        let wanted = m
            .annotations()
            .get(CONFIG_MIRROR)
            .is_some_and(|h| pods.contains_key(h));
        if !wanted && m.metadata.deletion_timestamp.is_none() {
            delete(client, m).await;
        }
    }
}

/// Deletes a mirror pod at once (it runs nothing itself).
pub async fn delete(client: &kube::Client, mirror: &Pod) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &mirror.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: mirror.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&mirror.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => {
            tracing::warn!(pod = %mirror.name_any(), error = %e, "kubelet: deleting a mirror pod")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_become_node_pods_with_stable_content_uids() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
        std::fs::write(dir.path().join("web.yaml"), yaml).unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), yaml).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        let pods = load(dir.path(), "n1");
        assert_eq!(pods.len(), 1);
        let (uid, pod) = pods.iter().next().unwrap();
        assert_eq!(pod.name_any(), "web-n1");
        assert_eq!(pod.namespace().as_deref(), Some("default"));
        assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        assert_eq!(pod.annotations()[CONFIG_HASH], *uid);
        assert_eq!(
            load(dir.path(), "n1").keys().next(),
            Some(uid),
            "same file, same uid"
        );
        std::fs::write(
            dir.path().join("web.yaml"),
            yaml.replace("busybox", "busybox:2"),
        )
        .unwrap();
        assert_ne!(
            load(dir.path(), "n1").keys().next(),
            Some(uid),
            "an edit is a new pod"
        );
        assert!(!is_mirror(pod));
    }

    #[test]
    fn several_documents_and_json() {
        let two = "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n---\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c, image: i}]}\n";
        let pods = parse(two.as_bytes(), Path::new("/m/two.yaml"), "n").unwrap();
        assert_eq!(
            pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["a-n", "b-n"]
        );
        assert_ne!(pods[0].uid(), pods[1].uid());
        let json = r#"{"kind": "Pod", "metadata": {"name": "j", "namespace": "kube-system"}, "spec": {"containers": []}}"#;
        let pods = parse(json.as_bytes(), Path::new("/m/j.json"), "n").unwrap();
        assert_eq!(pods[0].namespace().as_deref(), Some("kube-system"));
        assert!(parse(
            b"kind: Deployment\nmetadata: {name: d}\n",
            Path::new("/m/d.yaml"),
            "n"
        )
        .is_err());
    }
}
