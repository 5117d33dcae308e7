//! The security context of a container (pod and container merged, as Kubernetes'
//! `DetermineEffectiveSecurityContext`), with the container runtime's share: the image USER,
//! the default capability set, seccomp and masked paths.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod, SeccompProfile};

use super::passwd::ImageAccounts;
use super::PodSpecError;
use crate::image::ImageConfig;
use crate::runtime::{Seccomp, User};

// The runtime's defaults, under the names this module's users know.
pub use crate::runtime::{
    ALL_CAPABILITIES, DEFAULT_CAPABILITIES, MASKED_PATHS as DEFAULT_MASKED_PATHS,
    READONLY_PATHS as DEFAULT_READONLY_PATHS,
};

/// The container's identity and confinement, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    pub user: User,
    /// The user's home directory from the image's passwd (`/` when unknown); runc sets `HOME`
    /// from it when the environment has none ([`ensure_home`]).
    pub home: String,
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub seccomp: Seccomp,
    pub readonly_rootfs: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// `privileged: true`: all capabilities, no seccomp, nothing masked; the runtime should also
    /// give it the host's devices and a writable /sys.
    pub privileged: bool,
}

/// Appends `HOME=<home>` unless `env` sets HOME (runc's rule).
pub fn ensure_home(env: &mut Vec<String>, home: &str) {
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
}

fn cap_name(c: &str) -> String {
    let upper = c.to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_string)
        .unwrap_or(upper)
}

/// containerd's `WithCapabilities`: `add: [ALL]` first, then `drop: [ALL]`, then the single
/// adds, then the single drops.
fn capabilities(
    default_caps: &[&str],
    add: &[String],
    drop: &[String],
) -> Result<Vec<String>, PodSpecError> {
    let mut caps: Vec<String> = default_caps.iter().map(|c| cap_name(c)).collect();
    let add: Vec<String> = add.iter().map(|c| cap_name(c)).collect();
    let drop: Vec<String> = drop.iter().map(|c| cap_name(c)).collect();
    if add.iter().any(|c| c == "ALL") {
        caps = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    for c in add.iter().filter(|c| *c != "ALL") {
        if !ALL_CAPABILITIES.contains(&c.as_str()) {
            return Err(PodSpecError::invalid(format!("unknown capability {c:?}")));
        }
        if !caps.contains(c) {
            caps.push(c.clone());
        }
    }
    caps.retain(|c| !drop.contains(c));
    Ok(caps)
}

fn seccomp(profile: Option<&SeccompProfile>) -> Result<Seccomp, PodSpecError> {
    match profile.map(|p| p.type_.as_str()) {
        // The kubelet's `--seccomp-default`: RuntimeDefault when the pod says nothing.
        None | Some("RuntimeDefault") => Ok(Seccomp::RuntimeDefault),
        Some("Unconfined") => Ok(Seccomp::Unconfined),
        Some(other) => Err(PodSpecError::invalid(format!(
            "seccomp profile type {other} is not supported (RuntimeDefault and Unconfined are)"
        ))),
    }
}

/// The container's security settings. `layers` are the image's unpacked layer directories,
/// topmost first (for its /etc/passwd and /etc/group); `default_caps`, `default_masked` and
/// `default_readonly` are the runtime's defaults ([`DEFAULT_CAPABILITIES`] etc.).
///
/// User: `runAsUser`/`runAsGroup` (container over pod) or else the uid or name in the image's
/// USER (its group part is ignored, as with Kubernetes and containerd); a uid alone takes its
/// primary group from passwd. Additional groups: the primary gid, the image's /etc/group
/// memberships (unless `supplementalGroupsPolicy: Strict`), `fsGroup`, `supplementalGroups`.
/// `allowPrivilegeEscalation: false` sets no_new_privs (unset: off, as in Kubernetes).
pub fn security(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    layers: &[PathBuf],
    default_caps: &[&str],
    default_masked: &[String],
    default_readonly: &[String],
) -> Result<Security, PodSpecError> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = container.security_context.as_ref();
    let run_as_user = csc
        .and_then(|c| c.run_as_user)
        .or(psc.and_then(|p| p.run_as_user));
    let run_as_group = csc
        .and_then(|c| c.run_as_group)
        .or(psc.and_then(|p| p.run_as_group));
    let non_root = csc
        .and_then(|c| c.run_as_non_root)
        .or(psc.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    let privileged = csc.and_then(|c| c.privileged).unwrap_or(false);

    // The image's user as the kubelet sees it: a uid, or a name (the group part is dropped).
    let image_user = image.user.split(':').next().unwrap_or("");
    let (image_uid, image_name) = match image_user.parse::<i64>() {
        _ if image_user.is_empty() => (Some(0), ""),
        Ok(uid) => (Some(uid), ""),
        Err(_) => (None, image_user),
    };
    if non_root {
        let who = format!(
            "(pod: \"{}_{}({})\", container: {})",
            pod.metadata.name.as_deref().unwrap_or(""),
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.uid.as_deref().unwrap_or(""),
            container.name
        );
        let message = match (run_as_user, image_uid) {
            (Some(0), _) => Some(format!("container's runAsUser breaks non-root policy {who}")),
            (Some(_), _) => None,
            (None, Some(0)) => Some(format!("container has runAsNonRoot and image will run as root {who}")),
            (None, None) => Some(format!(
                "container has runAsNonRoot and image has non-numeric user ({image_name}), cannot verify user is non-root {who}"
            )),
            (None, Some(_)) => None,
        };
        if let Some(message) = message {
            return Err(PodSpecError::User { message });
        }
    }

    let id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| PodSpecError::invalid(format!("{what} {v} is out of range")))
    };
    let user_part = match run_as_user.or(image_uid) {
        Some(uid) => id(uid, "runAsUser")?.to_string(),
        None => image_name.to_string(),
    };
    let user_str = match run_as_group {
        Some(g) => format!("{user_part}:{}", id(g, "runAsGroup")?),
        None => user_part.clone(),
    };
    let accounts = ImageAccounts::load(layers)?;
    let (uid, gid) = accounts.resolve(&user_str)?;
    let strict = psc.and_then(|p| p.supplemental_groups_policy.as_deref()) == Some("Strict");
    let mut additional_gids = vec![gid];
    let mut extra: Vec<u32> = Vec::new();
    if !strict {
        extra.extend(accounts.member_gids(&user_part));
    }
    if let Some(g) = psc.and_then(|p| p.fs_group) {
        extra.push(id(g, "fsGroup")?);
    }
    for g in psc
        .and_then(|p| p.supplemental_groups.as_deref())
        .unwrap_or(&[])
    {
        extra.push(id(*g, "supplementalGroups")?);
    }
    for g in extra {
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    let home = accounts
        .user_by_uid(uid)
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string());

    let caps = csc.and_then(|c| c.capabilities.as_ref());
    let capabilities = if privileged {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        capabilities(
            default_caps,
            caps.and_then(|c| c.add.as_deref()).unwrap_or(&[]),
            caps.and_then(|c| c.drop.as_deref()).unwrap_or(&[]),
        )?
    };
    let profile = csc
        .and_then(|c| c.seccomp_profile.as_ref())
        .or(psc.and_then(|p| p.seccomp_profile.as_ref()));
    let seccomp = if privileged {
        Seccomp::Unconfined
    } else {
        seccomp(profile)?
    };
    let unmasked = privileged || csc.and_then(|c| c.proc_mount.as_deref()) == Some("Unmasked");
    let (masked_paths, readonly_paths) = if unmasked {
        (Vec::new(), Vec::new())
    } else {
        (default_masked.to_vec(), default_readonly.to_vec())
    };
    Ok(Security {
        user: User {
            uid,
            gid,
            additional_gids,
        },
        home,
        capabilities,
        no_new_privs: csc.and_then(|c| c.allow_privilege_escalation) == Some(false),
        seccomp,
        readonly_rootfs: csc
            .and_then(|c| c.read_only_root_filesystem)
            .unwrap_or(false),
        masked_paths,
        readonly_paths,
        privileged,
    })
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
