//! Starting the scheduler from a kubeconfig: in the foreground until SIGINT (`berth scheduler`)
//! or on a thread of its own inside another process (`berth up`).

use std::path::{Path, PathBuf};

use kube::Client;

use crate::run::{run, RunConfig};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building a client from kubeconfig {path}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error("starting the scheduler's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the scheduler's thread panicked")]
    Panicked,
}

/// A client authenticated as the kubeconfig's current context says.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, StartError> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|source| StartError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| StartError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    Client::try_from(config).map_err(|source| StartError::Client {
        path: path.to_path_buf(),
        source,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("berth-scheduler")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}

/// Runs the scheduler against the server `kubeconfig` names until SIGINT.
pub fn run_until_interrupted(kubeconfig: &Path, config: RunConfig) -> Result<(), StartError> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = client_from_kubeconfig(kubeconfig).await?;
        let interrupted = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "no SIGINT handler; running until killed");
                std::future::pending::<()>().await;
            }
        };
        run(client, config, interrupted).await;
        Ok(())
    })
}

/// The scheduler running on its own thread and tokio runtime; stops on [`Running::stop`] or drop.
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops the scheduler and waits for it.
    pub fn stop(mut self) -> Result<(), StartError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), StartError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| StartError::Panicked),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Starts the scheduler against the server `kubeconfig` names on a thread of its own.
/// Kubeconfig errors are reported here.
pub fn spawn(kubeconfig: &Path, config: RunConfig) -> Result<Running, StartError> {
    let rt = runtime()?;
    let client = rt.block_on(client_from_kubeconfig(kubeconfig))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("berth-scheduler".into())
        .spawn(move || {
            rt.block_on(run(client, config, async move {
                // A dropped sender stops the scheduler too.
                let _ = stopped.await;
            }))
        })
        .map_err(StartError::Runtime)?;
    Ok(Running {
        stop: Some(stop),
        thread: Some(thread),
    })
}
