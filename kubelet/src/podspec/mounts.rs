//! A container's mounts (Kubernetes' `makeMounts` plus the CRI runtime's /etc files).

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::expand::expand;
use super::subpath::resolve_subpath;
use super::{EtcFiles, PodSpecError, PreparedVolumes};
use crate::runtime::{Mount, MountKind};

const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

fn bind(destination: &str, source: &Path, readonly: bool) -> Mount {
    Mount {
        destination: destination.to_string(),
        kind: MountKind::Bind {
            source: source.to_path_buf(),
            readonly,
        },
    }
}

/// Kubernetes' `ExpandContainerVolumeMounts`: every reference must resolve to a non-empty value.
fn expand_sub_path_expr(expr: &str, env: &HashMap<&str, &str>) -> Result<String, PodSpecError> {
    let mut missing = std::collections::BTreeSet::new();
    let out = expand(expr, |key| match env.get(key) {
        Some(v) if !v.is_empty() => Some(v.to_string()),
        _ => {
            missing.insert(key.to_string());
            Some(String::new())
        }
    });
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Err(PodSpecError::invalid(format!(
            "missing value for {}",
            names.join(", ")
        )));
    }
    Ok(out)
}

/// The container's mounts: its volumeMounts (readOnly, subPath, subPathExpr expanded against
/// `env`, `NAME=value`), the pod's /etc/hosts, /etc/hostname and /etc/resolv.conf (unless the
/// container mounts something there itself; the last two read-only with
/// readOnlyRootFilesystem), and the termination log file at `terminationMessagePath`. Sorted
/// by destination depth, so a parent is mounted before what is mounted inside it. (`_pod` is
/// there for pod-level mount rules to come: mount propagation, image volumes.)
pub fn mounts(
    _pod: &Pod,
    container: &Container,
    env: &[String],
    volumes: &PreparedVolumes,
    etc: &EtcFiles,
    termination_log: Option<&Path>,
) -> Result<Vec<Mount>, PodSpecError> {
    let env_map: HashMap<&str, &str> = env
        .iter()
        .map(|e| e.split_once('=').unwrap_or((e.as_str(), "")))
        .collect();
    let mut out = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let volume = volumes.get(&vm.name).ok_or_else(|| {
            PodSpecError::invalid(format!(
                "cannot find volume {:?} to mount into container {:?}",
                vm.name, container.name
            ))
        })?;
        let mut sub = vm.sub_path.clone().unwrap_or_default();
        if let Some(expr) = vm.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            sub = expand_sub_path_expr(expr, &env_map)?;
        }
        let source = if sub.is_empty() {
            volume.path.clone()
        } else {
            resolve_subpath(&volume.path, &sub, &vm.name, &container.name)?
        };
        let readonly = vm.read_only.unwrap_or(false) || volume.readonly;
        out.push(bind(&vm.mount_path, &source, readonly));
    }
    let taken = |dest: &str| out.iter().any(|m: &Mount| m.destination == dest);
    let ro_root = container
        .security_context
        .as_ref()
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false);
    let mut extra = Vec::new();
    if let Some(hosts) = &etc.hosts {
        if !taken("/etc/hosts") {
            extra.push(bind("/etc/hosts", hosts, false));
        }
    }
    if let Some(log) = termination_log {
        let dest = container
            .termination_message_path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_TERMINATION_PATH);
        if !taken(dest) {
            extra.push(bind(dest, log, false));
        }
    }
    if !taken("/etc/hostname") {
        extra.push(bind("/etc/hostname", &etc.hostname, ro_root));
    }
    if !taken("/etc/resolv.conf") {
        extra.push(bind("/etc/resolv.conf", &etc.resolv_conf, ro_root));
    }
    out.extend(extra);
    out.sort_by_key(|m| {
        Path::new(&m.destination)
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count()
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podspec::{PreparedVolume, VolumeKind};
    use serde_json::json;
    use std::path::PathBuf;

    fn setup(tmp: &Path) -> (PreparedVolumes, EtcFiles) {
        let data = tmp.join("data");
        let cfg = tmp.join("cfg");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&cfg).unwrap();
        let mut v = PreparedVolumes::default();
        v.volumes.insert(
            "data".into(),
            PreparedVolume {
                kind: VolumeKind::EmptyDir,
                path: data,
                readonly: false,
            },
        );
        v.volumes.insert(
            "cfg".into(),
            PreparedVolume {
                kind: VolumeKind::ConfigMap,
                path: cfg,
                readonly: true,
            },
        );
        let etc = EtcFiles {
            hosts: Some(tmp.join("etc-hosts")),
            resolv_conf: tmp.join("resolv.conf"),
            hostname: tmp.join("hostname"),
            hostname_value: "p".into(),
        };
        (v, etc)
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
            .unwrap()
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn dests(m: &[Mount]) -> Vec<(String, PathBuf, bool)> {
        m.iter()
            .map(|m| match &m.kind {
                MountKind::Bind { source, readonly } => {
                    (m.destination.clone(), source.clone(), *readonly)
                }
                MountKind::Tmpfs { .. } => (m.destination.clone(), PathBuf::new(), false),
            })
            .collect()
    }

    #[test]
    fn volume_mounts_and_etc_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (v, etc) = setup(tmp.path());
        let c = container(json!({"name": "c",
        "securityContext": {"readOnlyRootFilesystem": true},
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/data/deep"},
            {"name": "cfg", "mountPath": "/etc/config"},
            {"name": "data", "mountPath": "/logs", "readOnly": true, "subPathExpr": "$(POD)/logs"}
        ]}));
        let log = tmp.path().join("termlog");
        let env = vec!["POD=p1".to_string()];
        let m = mounts(&pod(), &c, &env, &v, &etc, Some(&log)).unwrap();
        let real = std::fs::canonicalize(tmp.path()).unwrap();
        assert_eq!(
            dests(&m),
            vec![
                ("/logs".into(), real.join("data/p1/logs"), true),
                ("/etc/config".into(), tmp.path().join("cfg"), true),
                ("/etc/hosts".into(), tmp.path().join("etc-hosts"), false),
                ("/dev/termination-log".into(), log.clone(), false),
                ("/etc/hostname".into(), tmp.path().join("hostname"), true),
                (
                    "/etc/resolv.conf".into(),
                    tmp.path().join("resolv.conf"),
                    true
                ),
                ("/var/data/deep".into(), tmp.path().join("data"), false),
            ]
        );
        assert!(real.join("data/p1/logs").is_dir());
    }

    #[test]
    fn user_mounts_win_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let (v, etc) = setup(tmp.path());
        let c = container(json!({"name": "c", "terminationMessagePath": "/tmp/msg",
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/hosts", "subPath": "h"}]}));
        std::fs::write(tmp.path().join("cfg/h"), "x").unwrap();
        let m = mounts(&pod(), &c, &[], &v, &etc, Some(Path::new("/l"))).unwrap();
        let d = dests(&m);
        assert_eq!(d.iter().filter(|x| x.0 == "/etc/hosts").count(), 1);
        assert!(d.iter().any(|x| x.0 == "/tmp/msg"));
        assert!(!d.iter().any(|x| x.0 == "/dev/termination-log"));

        let missing =
            container(json!({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}));
        assert_eq!(
            mounts(&pod(), &missing, &[], &v, &etc, None)
                .unwrap_err()
                .to_string(),
            "cannot find volume \"nope\" to mount into container \"c\""
        );
        let expr = container(
            json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPathExpr": "$(B)/$(A)/$(E)"}]}),
        );
        let env = vec!["E=".to_string()];
        assert_eq!(
            mounts(&pod(), &expr, &env, &v, &etc, None)
                .unwrap_err()
                .to_string(),
            "missing value for A, B, E"
        );
    }
}
