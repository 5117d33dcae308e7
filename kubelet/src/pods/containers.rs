//! Starting one container of a pod: its image, its resolved spec, its cgroup, and the shim's
//! `Start` — with the kubelet's waiting reasons and events when a step fails.

use std::path::PathBuf;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Secret};
use kube::api::Api;
use kube::ResourceExt;

use super::source::ApiSource;
use super::status::Attempt;
use super::worker::Worker;
use crate::image::{credentials_from_docker_config, Credentials, Image, PullPolicy};
use crate::podspec;
use crate::runtime::{self, ContainerSpec, Rootfs};
use crate::shim::{Request, Response};

impl Worker {
    fn container_spec_of(&self, init: bool, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        let list = if init {
            spec.init_containers.as_ref()?
        } else {
            &spec.containers
        };
        list.iter().find(|c| c.name == name).cloned()
    }

    fn set_waiting(&mut self, init: bool, i: usize, reason: &str, message: String) {
        let record = if init {
            &mut self.init[i]
        } else {
            &mut self.containers[i]
        };
        record.waiting = Some((reason.to_owned(), message));
    }

    /// Starts container `i`. On failure the record says why it waits, and the error carries when
    /// to try again.
    pub(super) async fn start_container(
        &mut self,
        init: bool,
        i: usize,
    ) -> Result<(), Option<Instant>> {
        let name = if init {
            self.init[i].name.clone()
        } else {
            self.containers[i].name.clone()
        };
        let Some(container) = self.container_spec_of(init, &name) else {
            return Err(None);
        };
        let pod = self.pod.clone();
        let recorder = self.ctx.recorder.clone();
        if self.sandbox.is_none() {
            return Err(None);
        }
        let record = if init {
            &self.init[i]
        } else {
            &self.containers[i]
        };
        if record.waiting.is_none() && record.current.is_none() {
            self.set_waiting(init, i, "ContainerCreating", String::new());
        }

        let image = match self.pull(&container).await {
            Ok(image) => image,
            Err(message) => {
                self.set_waiting(init, i, "ErrImagePull", message.clone());
                recorder.event(
                    &pod,
                    Some(&name),
                    true,
                    "Failed",
                    "Error: ErrImagePull".to_string(),
                );
                let until = self
                    .pull_backoff
                    .entry(name.clone())
                    .or_default()
                    .fail(Instant::now(), None);
                return Err(Some(Instant::now() + until));
            }
        };
        self.pull_backoff.remove(&name);

        let spec = match self.resolve(&container, &image).await {
            Ok(spec) => spec,
            Err(message) => {
                recorder.event(
                    &pod,
                    Some(&name),
                    true,
                    "Failed",
                    format!("Error: {message}"),
                );
                self.set_waiting(init, i, "CreateContainerConfigError", message);
                let until = self
                    .restart_backoff
                    .entry(name.clone())
                    .or_default()
                    .fail(Instant::now(), None);
                return Err(Some(Instant::now() + until));
            }
        };
        let record = if init {
            &self.init[i]
        } else {
            &self.containers[i]
        };
        let attempt = record
            .current
            .as_ref()
            .map_or(0, |_| record.restart_count + 1);
        let log_path = self
            .ctx
            .config
            .pod_dir(&self.uid)
            .join("logs")
            .join(&name)
            .join(format!("{attempt}.log"));
        let oom_files = oom_files(&spec);
        let request = Request::Start {
            name: name.clone(),
            attempt,
            spec: Box::new(spec.clone()),
            log_path,
            oom_files,
        };
        let shim = self
            .sandbox
            .as_ref()
            .map(|s| s.shim.clone())
            .expect("checked above");
        // For `kubectl exec`, which needs the container as it was started, also after a restart.
        let spec_file = self
            .ctx
            .config
            .pod_dir(&self.uid)
            .join("containers")
            .join(&spec.id)
            .join("spec.json");
        let written = serde_json::to_vec(&spec)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&spec_file, b));
        if let Err(e) = written {
            let message = format!("writing {}: {e}", spec_file.display());
            return Err(self.start_failed(init, i, &spec.id, message));
        }
        let (pid, started_at) = match shim.request(&request).await {
            Ok(Response::Started { pid, started_at }) => (pid, started_at),
            Ok(other) => {
                let message = format!("unexpected response from the shim: {other:?}");
                return Err(self.start_failed(init, i, &spec.id, message));
            }
            Err(e) => return Err(self.start_failed(init, i, &spec.id, e.to_string())),
        };
        // The attempt before the previous one is gone for good: its cgroup and writable layer.
        let record = if init {
            &mut self.init[i]
        } else {
            &mut self.containers[i]
        };
        let dropped = record.previous.take();
        record.previous = record.current.take();
        record.restart_count = attempt;
        record.current = Some(Attempt {
            id: spec.id.clone(),
            pid,
            started_at,
            exit: None,
        });
        record.waiting = None;
        let (started, ready) = super::probing::initial_gates(&container);
        record.started = started;
        record.ready = ready;
        record.image_id = Some(image.repo_digest.clone());
        let previous = record.previous.clone();
        if let Some(old) = dropped {
            self.forget_attempt(&old.id);
        }
        if let Some(prev) = previous {
            // Its processes are gone; its cgroup is no longer needed (its log stays for --previous).
            let _ = self
                .ctx
                .cgroups
                .remove_container(self.qos, &self.uid, &prev.id);
        }
        recorder.event(
            &pod,
            Some(&name),
            false,
            "Created",
            format!("Created container {name}"),
        );
        recorder.event(
            &pod,
            Some(&name),
            false,
            "Started",
            format!("Started container {name}"),
        );
        let target = self.target(&container, &spec.id, pid, Some(spec.clone()));
        if self.post_start(&container, &target, &spec.id).await {
            self.start_probes(&container, &spec.id, target, std::time::Duration::ZERO);
        }
        Ok(())
    }

    fn start_failed(&mut self, init: bool, i: usize, id: &str, message: String) -> Option<Instant> {
        let name = if init {
            self.init[i].name.clone()
        } else {
            self.containers[i].name.clone()
        };
        let pod = self.pod.clone();
        self.ctx.recorder.event(
            &pod,
            Some(&name),
            true,
            "Failed",
            format!("Error: {message}"),
        );
        self.set_waiting(init, i, "RunContainerError", message);
        self.forget_attempt(id);
        let delay = self
            .restart_backoff
            .entry(name)
            .or_default()
            .fail(Instant::now(), None);
        Some(Instant::now() + delay)
    }

    /// Removes an attempt's cgroup and writable layer.
    fn forget_attempt(&self, id: &str) {
        let _ = self.ctx.cgroups.remove_container(self.qos, &self.uid, id);
        let dir = self
            .ctx
            .config
            .pod_dir(&self.uid)
            .join("containers")
            .join(id);
        let _ = std::fs::remove_dir_all(dir);
        if let Some(sandbox) = &self.sandbox {
            let shim = sandbox.shim.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let _ = shim.request(&Request::Remove { id }).await;
            });
        }
    }

    async fn pull(&self, container: &Container) -> Result<Image, String> {
        let reference = container.image.clone().unwrap_or_default();
        let policy = PullPolicy::from_k8s(container.image_pull_policy.as_deref(), &reference);
        let present = self.ctx.images.get(&reference).is_some();
        let recorder = &self.ctx.recorder;
        let name = container.name.as_str();
        if present && policy != PullPolicy::Always {
            let message = format!("Container image \"{reference}\" already present on machine");
            recorder.event(&self.pod, Some(name), false, "Pulled", message);
        } else if policy != PullPolicy::Never {
            recorder.event(
                &self.pod,
                Some(name),
                false,
                "Pulling",
                format!("Pulling image \"{reference}\""),
            );
        }
        let credentials = self.pull_credentials().await;
        let started = Instant::now();
        match self
            .ctx
            .images
            .ensure(&reference, policy, &credentials)
            .await
        {
            Ok(image) => {
                if !present || policy == PullPolicy::Always {
                    let took = started.elapsed().as_secs_f64();
                    let message =
                        format!("Successfully pulled image \"{reference}\" in {took:.3}s");
                    recorder.event(&self.pod, Some(name), false, "Pulled", message);
                }
                Ok(image)
            }
            Err(e) => {
                let message = format!("Failed to pull image \"{reference}\": {e}");
                recorder.event(&self.pod, Some(name), true, "Failed", message.clone());
                Err(message)
            }
        }
    }

    /// Credentials from the pod's imagePullSecrets (kubernetes.io/dockerconfigjson).
    async fn pull_credentials(&self) -> Vec<Credentials> {
        let Some(secrets) = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
        else {
            return Vec::new();
        };
        let api: Api<Secret> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let mut out = Vec::new();
        for reference in secrets {
            let Ok(Some(secret)) = api.get_opt(&reference.name).await else {
                continue;
            };
            let data = secret.data.unwrap_or_default();
            let Some(json) = data
                .get(".dockerconfigjson")
                .or_else(|| data.get(".dockercfg"))
            else {
                continue;
            };
            match credentials_from_docker_config(&json.0) {
                Ok(creds) => out.extend(creds),
                Err(e) => {
                    tracing::warn!(secret = %reference.name, error = %e, "kubelet: bad image pull secret")
                }
            }
        }
        out
    }

    /// The container, fully resolved for the shim.
    async fn resolve(&self, container: &Container, image: &Image) -> Result<ContainerSpec, String> {
        let ctx = &self.ctx;
        let sandbox = self.sandbox.as_ref().ok_or("no sandbox")?;
        let source = ApiSource {
            client: ctx.client.clone(),
        };
        let facts = super::facts(ctx, &self.pod, sandbox.ip);
        let vars = podspec::pod_environment(&source, &self.pod, container, &facts)
            .await
            .map_err(|e| e.to_string())?;
        // $(VAR) in command, args and subPathExpr expands against the pod's own variables.
        let pod_env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut env = podspec::merge_image_env(&image.config, &vars);
        let args = podspec::argv(container, &image.config, &pod_env).map_err(|e| e.to_string())?;
        let masked = runtime::default_masked_paths();
        let readonly = runtime::default_readonly_paths();
        let security = podspec::security(
            &self.pod,
            container,
            &image.config,
            &image.layers,
            runtime::DEFAULT_CAPABILITIES,
            &masked,
            &readonly,
        )
        .map_err(|e| e.to_string())?;
        podspec::ensure_home(&mut env, &security.home);
        let id = new_id();
        let pod_dir = ctx.config.pod_dir(&self.uid);
        let termination_log =
            podspec::termination_log_file(&pod_dir, container, &id).map_err(|e| e.to_string())?;
        let mounts = podspec::mounts(
            &self.pod,
            container,
            &pod_env,
            &sandbox.volumes,
            &sandbox.etc,
            termination_log.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let resources = podspec::container_resources(container);
        let cgroup = ctx
            .cgroups
            .ensure_container(self.qos, &self.uid, &id, &resources)
            .map_err(|e| e.to_string())?;
        let dir = ctx.config.pod_dir(&self.uid).join("containers").join(&id);
        let rootfs = Rootfs {
            lower: image.layers.clone(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            target: dir.join("rootfs"),
        };
        for d in [&rootfs.upper, &rootfs.work, &rootfs.target] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let cwd = podspec::working_dir(container, &image.config);
        Ok(ContainerSpec {
            id,
            rootfs,
            args,
            env,
            cwd,
            user: security.user,
            capabilities: without_unguarded_mknod(
                security.capabilities,
                security.privileged,
                ctx.cgroups
                    .controllers()
                    .iter()
                    .any(|(c, _)| *c == "devices"),
                added_capabilities(container),
            ),
            no_new_privs: security.no_new_privs,
            seccomp: security.seccomp,
            readonly_rootfs: security.readonly_rootfs,
            mounts,
            masked_paths: security.masked_paths,
            readonly_paths: security.readonly_paths,
            pid_namespace: self.shared_pid_namespace(),
            cgroup,
            oom_score_adj: podspec::pod_oom_score_adj(&self.pod, container, ctx.memory_capacity),
            tty: container.tty.unwrap_or(false),
        })
    }
}

impl Worker {
    /// `shareProcessNamespace`: a running container's PID namespace, which the new one joins.
    /// (Kubernetes keeps a pause process as its pid 1; here the first container to run is, and
    /// the namespace lives as long as it does.)
    fn shared_pid_namespace(&self) -> Option<PathBuf> {
        let shared = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.share_process_namespace)
            .unwrap_or(false);
        if !shared {
            return None;
        }
        self.init
            .iter()
            .chain(self.containers.iter())
            .filter(|c| c.running())
            .filter_map(|c| c.current.as_ref())
            .map(|a| PathBuf::from(format!("/proc/{}/ns/pid", a.pid)))
            .next()
    }
}

/// Capabilities the container's securityContext adds explicitly.
fn added_capabilities(container: &Container) -> Vec<String> {
    container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
}

/// Without a devices cgroup (cgroup v2 until Berth loads a device filter program) nothing stops
/// a device node a container makes from being opened, so CAP_MKNOD — in the runtime's default
/// set — is dropped unless the pod asks for it by name or is privileged.
fn without_unguarded_mknod(
    mut capabilities: Vec<String>,
    privileged: bool,
    device_cgroup: bool,
    added: Vec<String>,
) -> Vec<String> {
    let asked = added
        .iter()
        .any(|c| matches!(c.trim_start_matches("CAP_"), "MKNOD" | "ALL"));
    if !privileged && !device_cgroup && !asked {
        capabilities.retain(|c| c.trim_start_matches("CAP_") != "MKNOD");
    }
    capabilities
}

/// The files whose `oom_kill` counter tells an OOM kill of this container.
fn oom_files(spec: &ContainerSpec) -> Vec<PathBuf> {
    let unified = spec.cgroup.unified.iter().map(|d| d.join("memory.events"));
    let v1 = spec.cgroup.v1.iter().map(|d| d.join("memory.oom_control"));
    unified.chain(v1).filter(|f| f.exists()).collect()
}

/// 64 hex characters, like a CRI container id.
fn new_id() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mknod_needs_a_device_cgroup_or_an_explicit_ask() {
        let caps = || vec!["CHOWN".to_owned(), "MKNOD".to_owned()];
        assert_eq!(
            without_unguarded_mknod(caps(), false, true, vec![]),
            caps(),
            "v1 devices cgroup"
        );
        assert_eq!(
            without_unguarded_mknod(caps(), false, false, vec![]),
            ["CHOWN"],
            "v2: no guard"
        );
        assert_eq!(
            without_unguarded_mknod(caps(), true, false, vec![]),
            caps(),
            "privileged"
        );
        assert_eq!(
            without_unguarded_mknod(caps(), false, false, vec!["CAP_MKNOD".into()]),
            caps()
        );
        assert_eq!(
            without_unguarded_mknod(caps(), false, false, vec!["ALL".into()]),
            caps()
        );
    }
}
