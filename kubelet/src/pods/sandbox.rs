//! A pod's sandbox: its directory, pod cgroup, shim (holding the network, IPC and UTS
//! namespaces), network attachment, volumes and /etc files — created before its first container,
//! re-adopted after a kubelet restart, and released when the pod ends.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tokio::sync::mpsc;

use super::context::Context;
use super::source::ApiSource;
use super::worker::{Wake, Worker};
use crate::podspec::{self, EtcFiles, PreparedVolumes};
use crate::shim::{self, ContainerState, Request, ShimClient, ShimConfig, Subscription};

pub(crate) struct Sandbox {
    pub shim: ShimClient,
    pub pid: i32,
    pub ip: Option<Ipv4Addr>,
    pub volumes: PreparedVolumes,
    pub etc: EtcFiles,
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's hostname: spec.hostname, else its name, cut to 63 characters like the kubelet.
fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| pod.name_any());
    let cut = &name[..name.len().min(63)];
    cut.trim_end_matches(['-', '.']).to_owned()
}

/// Forwards a shim's exit events to its pod's worker; tells it when the shim goes away.
fn forward(mut subscription: Subscription, shim_pid: i32, tx: mpsc::UnboundedSender<Wake>) {
    tokio::spawn(async move {
        loop {
            match subscription.next().await {
                Ok(event) => {
                    if tx.send(event.into()).is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let _ = tx.send(Wake::ShimGone { pid: shim_pid });
                    return;
                }
            }
        }
    });
}

impl Sandbox {
    /// The sandbox a previous kubelet left running, if its shim still answers.
    pub(super) async fn adopt(
        ctx: &Arc<Context>,
        pod: &Pod,
        uid: &str,
        tx: mpsc::UnboundedSender<Wake>,
    ) -> Result<Option<(Sandbox, Vec<ContainerState>)>, String> {
        let pod_dir = ctx.config.pod_dir(uid);
        if !shim::protocol::socket_path(&pod_dir).exists() {
            return Ok(None);
        }
        let client = ShimClient::new(&pod_dir);
        let Ok((pid, _)) = client.state().await else {
            return Ok(None);
        };
        let (states, subscription) = client.subscribe().await.map_err(|e| e.to_string())?;
        forward(subscription, pid, tx);
        let ip = if host_network(pod) {
            None
        } else {
            ctx.network.address_of(uid)
        };
        let (volumes, etc) = prepare_files(ctx, pod, &pod_dir, ip).await?;
        Ok(Some((
            Sandbox {
                shim: client,
                pid,
                ip,
                volumes,
                etc,
            },
            states,
        )))
    }
}

async fn prepare_files(
    ctx: &Arc<Context>,
    pod: &Pod,
    pod_dir: &Path,
    ip: Option<Ipv4Addr>,
) -> Result<(PreparedVolumes, EtcFiles), String> {
    let facts = super::facts(ctx, pod, ip);
    let source = ApiSource {
        client: ctx.client.clone(),
    };
    let volumes = podspec::prepare_volumes(&source, pod, pod_dir, &facts, &podspec::HostMounter)
        .await
        .map_err(|e| e.to_string())?;
    let pod_ip = ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| ctx.config.node_ip.to_string());
    let dns = super::dns_settings(ctx);
    let etc = podspec::write_etc_files(pod, pod_dir, &pod_ip, &dns).map_err(|e| e.to_string())?;
    Ok((volumes, etc))
}

impl Worker {
    pub(super) async fn create_sandbox(&mut self) -> Result<(), String> {
        let ctx = self.ctx.clone();
        let pod_dir = ctx.config.pod_dir(&self.uid);
        std::fs::create_dir_all(&pod_dir)
            .map_err(|e| format!("creating {}: {e}", pod_dir.display()))?;
        let resources = podspec::pod_resources(&self.pod, ctx.config.pod_pids_limit);
        ctx.cgroups
            .ensure_pod(self.qos, &self.uid, &resources)
            .map_err(|e| e.to_string())?;
        let config = ShimConfig {
            pod_dir: pod_dir.clone(),
            hostname: hostname(&self.pod),
            host_network: host_network(&self.pod),
            host_ipc: self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.host_ipc)
                .unwrap_or(false),
        };
        let pid = shim::launch(&ctx.config.shim_exe, &config)
            .await
            .map_err(|e| e.to_string())?;
        let client = ShimClient::new(&pod_dir);
        let rest = async {
            let (_, subscription) = client.subscribe().await.map_err(|e| e.to_string())?;
            let ip = if config.host_network {
                None
            } else {
                let netns = format!("/proc/{pid}/ns/net");
                let address = ctx.network.attach(&self.uid, Path::new(&netns)).await;
                Some(
                    address
                        .map_err(|e| format!("setting up the pod network: {e}"))?
                        .ip,
                )
            };
            let (volumes, etc) = prepare_files(&ctx, &self.pod, &pod_dir, ip).await?;
            Ok::<_, String>((subscription, ip, volumes, etc))
        };
        let (subscription, ip, volumes, etc) = match rest.await {
            Ok(done) => done,
            Err(e) => {
                // Nothing runs in it yet: stop the shim, or the next try would orphan it.
                let _ = client.request(&Request::Shutdown).await;
                return Err(e);
            }
        };
        forward(subscription, pid, self.wake_tx.clone());
        self.sandbox = Some(Sandbox {
            shim: client,
            pid,
            ip,
            volumes,
            etc,
        });
        Ok(())
    }

    /// Gives back what a pod holds while it runs: the shim, the IP, the cgroups. Its directory
    /// (logs) stays until the pod is deleted.
    pub(super) async fn release_sandbox(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            if let Err(e) = sandbox.shim.request(&Request::Shutdown).await {
                tracing::debug!(pod = %self.name(), error = %e, "kubelet: shutting the shim down");
            }
        }
        if let Err(e) = self.ctx.network.detach(&self.uid).await {
            tracing::warn!(pod = %self.name(), error = %e, "kubelet: detaching the pod network");
        }
        let all = self.init.iter().chain(self.containers.iter());
        for id in all
            .flat_map(|c| [c.current.as_ref(), c.previous.as_ref()])
            .flatten()
            .map(|a| a.id.clone())
        {
            if let Err(e) = self.ctx.cgroups.remove_container(self.qos, &self.uid, &id) {
                tracing::warn!(pod = %self.name(), error = %e, "kubelet: removing a container cgroup");
            }
        }
        if let Err(e) = self.ctx.cgroups.remove_pod(self.qos, &self.uid) {
            tracing::warn!(pod = %self.name(), error = %e, "kubelet: removing the pod cgroup");
        }
    }
}

/// Removes the pod's directory (volumes first unmounted).
pub(super) fn remove_pod_dir(ctx: &Context, uid: &str) {
    let pod_dir = ctx.config.pod_dir(uid);
    if let Err(e) = podspec::unmount_pod_volumes(&pod_dir, Path::new("/proc/self/mountinfo")) {
        tracing::warn!(%uid, error = %e, "kubelet: unmounting pod volumes");
        return;
    }
    match std::fs::remove_dir_all(&pod_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(%uid, error = %e, "kubelet: removing the pod directory"),
    }
}

/// A pod found on the node but not in the API (deleted while the kubelet was down): kill what
/// runs, release everything, remove its directory.
pub(super) async fn teardown_orphan(ctx: &Arc<Context>, uid: &str) {
    let pod_dir = ctx.config.pod_dir(uid);
    let client = ShimClient::new(&pod_dir);
    if let Ok((_, states)) = client.state().await {
        for c in states.iter().filter(|c| c.exit.is_none()) {
            let _ = client
                .request(&Request::Kill {
                    id: c.id.clone(),
                    signal: libc::SIGKILL,
                })
                .await;
        }
        let _ = client.request(&Request::Shutdown).await;
    }
    if let Err(e) = ctx.network.detach(uid).await {
        tracing::warn!(%uid, error = %e, "kubelet: detaching an orphaned pod's network");
    }
    if let Ok(pods) = ctx.cgroups.list_pods() {
        for (qos, pod_uid) in pods.into_iter().filter(|(_, u)| u == uid) {
            if let Err(e) = ctx.cgroups.remove_pod(qos, &pod_uid) {
                tracing::warn!(%uid, error = %e, "kubelet: removing an orphaned pod's cgroups");
            }
        }
    }
    remove_pod_dir(ctx, uid);
    tracing::info!(%uid, "kubelet: removed an orphaned pod");
}
