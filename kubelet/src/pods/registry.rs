//! What the kubelet's HTTPS server asks about pods: where a container's logs are, whether it
//! runs, and how to start a process in it (`kubectl logs`, `kubectl exec`). Pod workers publish
//! each pod's containers here whenever they report its status.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};

use crate::runtime::{self, ContainerIo, ContainerSpec, Stdio};
use crate::server::{ContainerLookup, ExecError, ExecIo, ExecProcess};

/// One container as the server sees it.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub id: String,
    pub pid: i32,
    pub running: bool,
}

/// Asks a pod's worker to fail the pod as evicted, with this message.
pub(crate) type Evict = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
struct Entry {
    uid: String,
    pod: Pod,
    containers: HashMap<String, Published>,
    evict: Evict,
}

/// Pods by `namespace/name`.
#[derive(Clone)]
pub(crate) struct Registry {
    pods_dir: PathBuf,
    pods: Arc<RwLock<HashMap<String, Entry>>>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Registry {
    pub fn new(pods_dir: PathBuf) -> Registry {
        Registry {
            pods_dir,
            pods: Arc::default(),
        }
    }

    pub fn publish(
        &self,
        pod: &Pod,
        uid: &str,
        containers: HashMap<String, Published>,
        evict: Evict,
    ) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let entry = Entry {
            uid: uid.to_owned(),
            pod: pod.clone(),
            containers,
            evict,
        };
        self.pods
            .write()
            .expect("registry lock")
            .insert(key(&ns, &name), entry);
    }

    pub fn forget(&self, pod: &Pod, uid: &str) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut pods = self.pods.write().expect("registry lock");
        if pods.get(&key(&ns, &name)).is_some_and(|e| e.uid == uid) {
            pods.remove(&key(&ns, &name));
        }
    }

    /// Pods with a running container, with their uids: what eviction chooses from.
    pub fn running_pods(&self) -> Vec<(Pod, String)> {
        let pods = self.pods.read().expect("registry lock");
        pods.values()
            .filter(|e| e.containers.values().any(|c| c.running))
            .map(|e| (e.pod.clone(), e.uid.clone()))
            .collect()
    }

    /// Tells the pod's worker to evict it.
    pub fn evict(&self, namespace: &str, name: &str, message: String) {
        let evict = self
            .pods
            .read()
            .expect("registry lock")
            .get(&key(namespace, name))
            .map(|e| e.evict.clone());
        if let Some(evict) = evict {
            evict(message);
        }
    }

    /// The images the pods on this node refer to (as their specs name them).
    pub fn images_in_use(&self) -> Vec<String> {
        let pods = self.pods.read().expect("registry lock");
        pods.values()
            .filter_map(|e| e.pod.spec.as_ref())
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .filter_map(|c| c.image.clone())
            .collect()
    }

    fn find(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Option<(String, Option<Published>)> {
        let pods = self.pods.read().expect("registry lock");
        let entry = pods.get(&key(namespace, pod))?;
        Some((entry.uid.clone(), entry.containers.get(container).cloned()))
    }
}

impl ContainerLookup for Registry {
    fn log_dir(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
        let (uid, _) = self.find(namespace, pod, container)?;
        Some(self.pods_dir.join(uid).join("logs").join(container))
    }

    fn is_running(&self, namespace: &str, pod: &str, container: &str) -> bool {
        self.find(namespace, pod, container)
            .and_then(|(_, c)| c)
            .is_some_and(|c| c.running)
    }

    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: Vec<String>,
        tty: bool,
    ) -> Result<ExecProcess, ExecError> {
        let not_running = || ExecError::NotRunning {
            pod: pod.to_owned(),
            container: container.to_owned(),
        };
        let (uid, published) = self
            .find(namespace, pod, container)
            .ok_or_else(not_running)?;
        let c = published.filter(|c| c.running).ok_or_else(not_running)?;
        let spec_path = self
            .pods_dir
            .join(&uid)
            .join("containers")
            .join(&c.id)
            .join("spec.json");
        let spec: ContainerSpec = std::fs::read(&spec_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ExecError::Failed(format!("reading {}", spec_path.display())))?;
        let failed = |e: nix::Error| ExecError::Failed(format!("pipe: {e}"));
        let (io, ours) = if tty {
            (ContainerIo::Tty, None)
        } else {
            let (in_r, in_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(failed)?;
            let (out_r, out_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(failed)?;
            let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(failed)?;
            let io = ContainerIo::Pipes(Stdio {
                stdin: Some(in_r),
                stdout: out_w,
                stderr: err_w,
            });
            (io, Some((in_w, out_r, err_r)))
        };
        let started = runtime::exec_in(Pid::from_raw(c.pid), &spec, &command, io)
            .map_err(|e| ExecError::Failed(e.to_string()))?;
        let io = match (ours, started.pty_master) {
            (Some((stdin, stdout, stderr)), _) => ExecIo::Pipes {
                stdin: Some(stdin),
                stdout,
                stderr,
            },
            (None, Some(master)) => ExecIo::Tty { master },
            (None, None) => return Err(ExecError::Failed("no terminal for a tty exec".into())),
        };
        Ok(ExecProcess {
            io,
            exit: Box::pin(wait_exit(started.pidfd)),
        })
    }

    fn pods(&self) -> Vec<Pod> {
        self.pods
            .read()
            .expect("registry lock")
            .values()
            .map(|e| e.pod.clone())
            .collect()
    }
}

/// The exit code of a process we started, waited for on its pidfd (on a blocking thread: an exec
/// session is long and rare).
async fn wait_exit(pidfd: OwnedFd) -> Result<i32, String> {
    let waited = tokio::task::spawn_blocking(move || loop {
        match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the exec process: {e}")),
        }
    });
    waited.await.map_err(|e| e.to_string())?
}
