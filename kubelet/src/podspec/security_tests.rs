use std::fs;
use std::path::Path;

use serde_json::json;

use super::*;

fn layers(tmp: &Path) -> Vec<PathBuf> {
    let l = tmp.join("layer");
    fs::create_dir_all(l.join("etc")).unwrap();
    fs::write(
        l.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        l.join("etc/group"),
        "root:x:0:\napp:x:1001:\nwheel:x:10:app\n",
    )
    .unwrap();
    vec![l]
}

fn pod(psc: serde_json::Value, csc: serde_json::Value) -> (Pod, Container) {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {"securityContext": psc, "containers": [{"name": "c", "securityContext": csc}]}
    }))
    .unwrap();
    let c = p.spec.as_ref().unwrap().containers[0].clone();
    (p, c)
}

fn run(
    psc: serde_json::Value,
    csc: serde_json::Value,
    image_user: &str,
) -> Result<Security, PodSpecError> {
    let tmp = tempfile::tempdir().unwrap();
    let (p, c) = pod(psc, csc);
    let image = ImageConfig {
        user: image_user.into(),
        ..Default::default()
    };
    let masked: Vec<String> = DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect();
    let ro: Vec<String> = DEFAULT_READONLY_PATHS
        .iter()
        .map(|s| s.to_string())
        .collect();
    security(
        &p,
        &c,
        &image,
        &layers(tmp.path()),
        DEFAULT_CAPABILITIES,
        &masked,
        &ro,
    )
}

#[test]
fn defaults() {
    let s = run(json!({}), json!({}), "").unwrap();
    assert_eq!(
        s.user,
        User {
            uid: 0,
            gid: 0,
            additional_gids: vec![0]
        }
    );
    assert_eq!(s.home, "/root");
    assert_eq!(
        s.capabilities,
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    );
    assert!(!s.no_new_privs);
    assert_eq!(s.seccomp, Seccomp::RuntimeDefault);
    assert!(!s.readonly_rootfs);
    assert_eq!(s.masked_paths.len(), DEFAULT_MASKED_PATHS.len());
    assert_eq!(s.readonly_paths.len(), DEFAULT_READONLY_PATHS.len());
}

#[test]
fn users_and_groups() {
    let s = run(json!({}), json!({}), "app").unwrap();
    assert_eq!(
        s.user,
        User {
            uid: 1000,
            gid: 1001,
            additional_gids: vec![1001, 10]
        }
    );
    assert_eq!(s.home, "/home/app");
    // A numeric image user takes its group from passwd; the image's own group part is ignored.
    assert_eq!(run(json!({}), json!({}), "1000:5").unwrap().user.gid, 1001);
    assert_eq!(
        run(json!({}), json!({}), "77").unwrap().user,
        User {
            uid: 77,
            gid: 0,
            additional_gids: vec![0]
        }
    );
    assert_eq!(run(json!({}), json!({}), "77").unwrap().home, "/");
    // Container over pod; fsGroup and supplementalGroups after the image's memberships.
    let s = run(
        json!({"runAsUser": 5, "runAsGroup": 6, "fsGroup": 2000, "supplementalGroups": [3000, 10]}),
        json!({"runAsUser": 1000}),
        "",
    )
    .unwrap();
    assert_eq!(
        s.user,
        User {
            uid: 1000,
            gid: 6,
            additional_gids: vec![6, 10, 2000, 3000]
        }
    );
    let strict = run(
        json!({"supplementalGroupsPolicy": "Strict", "fsGroup": 2000}),
        json!({}),
        "app",
    )
    .unwrap();
    assert_eq!(strict.user.additional_gids, vec![1001, 2000]);
    assert_eq!(
        run(json!({}), json!({}), "ghost").unwrap_err().to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
}

#[test]
fn run_as_non_root() {
    let err = |psc, csc, user: &str| run(psc, csc, user).unwrap_err().to_string();
    assert_eq!(
        err(json!({"runAsNonRoot": true}), json!({}), ""),
        "container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: c)"
    );
    assert_eq!(
        err(json!({"runAsNonRoot": true}), json!({}), "0:0"),
        "container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: c)"
    );
    assert_eq!(
        err(json!({}), json!({"runAsNonRoot": true}), "app"),
        "container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: \"p_ns(u1)\", container: c)"
    );
    assert_eq!(
        err(
            json!({"runAsNonRoot": true}),
            json!({"runAsUser": 0}),
            "1000"
        ),
        "container's runAsUser breaks non-root policy (pod: \"p_ns(u1)\", container: c)"
    );
    assert!(run(json!({"runAsNonRoot": true}), json!({}), "1000").is_ok());
    assert!(run(
        json!({"runAsNonRoot": true, "runAsUser": 1000}),
        json!({}),
        "app"
    )
    .is_ok());
    assert!(run(
        json!({"runAsNonRoot": true}),
        json!({"runAsNonRoot": false}),
        ""
    )
    .is_ok());
}

#[test]
fn capabilities_add_drop() {
    let caps = |csc| run(json!({}), csc, "").unwrap().capabilities;
    let c = caps(
        json!({"capabilities": {"add": ["NET_ADMIN", "cap_sys_time"], "drop": ["KILL", "MKNOD"]}}),
    );
    assert!(c.contains(&"NET_ADMIN".to_string()) && c.contains(&"SYS_TIME".to_string()));
    assert!(!c.contains(&"KILL".to_string()) && !c.contains(&"MKNOD".to_string()));
    assert_eq!(
        caps(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}})),
        vec!["NET_BIND_SERVICE"]
    );
    let all_but = caps(json!({"capabilities": {"add": ["ALL"], "drop": ["SYS_ADMIN"]}}));
    assert_eq!(all_but.len(), ALL_CAPABILITIES.len() - 1);
    assert!(!all_but.contains(&"SYS_ADMIN".to_string()));
    assert!(run(json!({}), json!({"capabilities": {"add": ["BOGUS"]}}), "").is_err());
}

#[test]
fn privileged_and_confinement() {
    let s = run(
        json!({}),
        json!({"privileged": true, "capabilities": {"drop": ["ALL"]}}),
        "",
    )
    .unwrap();
    assert!(s.privileged);
    assert_eq!(s.capabilities.len(), ALL_CAPABILITIES.len());
    assert_eq!(s.seccomp, Seccomp::Unconfined);
    assert!(s.masked_paths.is_empty() && s.readonly_paths.is_empty());

    let s = run(
        json!({"seccompProfile": {"type": "Unconfined"}}),
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "procMount": "Unmasked"}),
        "",
    )
    .unwrap();
    assert!(s.no_new_privs && s.readonly_rootfs);
    assert_eq!(s.seccomp, Seccomp::Unconfined);
    assert!(s.masked_paths.is_empty());
    let s = run(
        json!({"seccompProfile": {"type": "Unconfined"}}),
        json!({"seccompProfile": {"type": "RuntimeDefault"}}),
        "",
    )
    .unwrap();
    assert_eq!(s.seccomp, Seccomp::RuntimeDefault);
    assert!(run(
        json!({}),
        json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}}),
        ""
    )
    .is_err());
}

#[test]
fn home_env() {
    let mut env = vec!["PATH=/bin".to_string()];
    ensure_home(&mut env, "/home/app");
    assert_eq!(env, ["PATH=/bin", "HOME=/home/app"]);
    let mut env = vec!["HOME=/x".to_string()];
    ensure_home(&mut env, "/home/app");
    assert_eq!(env, ["HOME=/x"]);
}
