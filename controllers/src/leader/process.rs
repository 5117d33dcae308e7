//! Elected components from a kubeconfig: in the foreground until SIGINT, exiting when the
//! Lease is lost as Kubernetes' components do (`berth controllers`, `berth scheduler`,
//! `berth server --join`), or on a thread of their own that campaigns again after a loss, so the
//! API server it shares a process with keeps serving (`berth server`).

use std::future::Future;
use std::path::Path;

use futures::FutureExt;
use kube::Client;

use super::{run_as_leader, LeaderConfig, LeaderError, Shutdown};
use crate::StartError;

fn runtime(name: &str) -> Result<tokio::runtime::Runtime, LeaderError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| Box::new(StartError::Runtime(e)).into())
}

async fn client(kubeconfig: &Path) -> Result<Client, LeaderError> {
    crate::client_from_kubeconfig(kubeconfig)
        .await
        .map_err(|e| Box::new(e).into())
}

/// Runs `work` in the foreground, on a runtime named `component`, until SIGINT: with
/// `election`, only once elected, returning [`LeaderError::Lost`] if the Lease is lost (the
/// caller exits non-zero) and `Ok(None)` if interrupted before being elected; without, at once.
pub fn run_until_interrupted<W, Fut>(
    kubeconfig: &Path,
    component: &str,
    election: Option<&LeaderConfig>,
    work: W,
) -> Result<Option<Fut::Output>, LeaderError>
where
    W: FnOnce(Client, Shutdown) -> Fut,
    Fut: Future + Send,
{
    if let Some(config) = election {
        config.validate()?;
    }
    let rt = runtime(component)?;
    rt.block_on(async {
        let client = client(kubeconfig).await?;
        let interrupted = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "no SIGINT handler; running until killed");
                std::future::pending::<()>().await;
            }
        };
        let Some(config) = election else {
            return Ok(Some(work(client, interrupted.boxed()).await));
        };
        let for_work = client.clone();
        run_as_leader(client, config, interrupted, move |stop| {
            work(for_work, stop)
        })
        .await
    })
}

/// An elected component on its own thread; stops on [`Elected::stop`] or drop.
pub struct Elected {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Elected {
    /// Stops the work (releasing the Lease if held) and waits for the thread.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Elected {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Starts a thread named `component` that campaigns for the Lease and runs `work` each time it
/// is elected; after a lost Lease it campaigns again. Without `election`, `work` runs once,
/// unconditionally. Kubeconfig and settings errors are reported here.
pub fn spawn<W, Fut>(
    kubeconfig: &Path,
    component: &str,
    election: Option<LeaderConfig>,
    mut work: W,
) -> Result<Elected, LeaderError>
where
    W: FnMut(Client, Shutdown) -> Fut + Send + 'static,
    Fut: Future + Send,
{
    if let Some(config) = &election {
        config.validate()?;
    }
    let rt = runtime(component)?;
    let client = rt.block_on(client(kubeconfig))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name(component.to_string())
        .spawn(move || {
            rt.block_on(async move {
                let Some(config) = election else {
                    let mut watching = stopped.clone();
                    let shutdown = async move {
                        let _ = watching.wait_for(|s| *s).await;
                    };
                    work(client, shutdown.boxed()).await;
                    return;
                };
                loop {
                    let mut watching = stopped.clone();
                    let shutdown = async move {
                        let _ = watching.wait_for(|s| *s).await;
                    }
                    .boxed();
                    let for_work = client.clone();
                    let term = run_as_leader(client.clone(), &config, shutdown, |s| {
                        work(for_work, s)
                    });
                    match term.await {
                        Err(LeaderError::Lost { .. }) if !*stopped.borrow() => {
                            tracing::warn!(lease = %config.name, "campaigning again after losing the lease");
                        }
                        Err(e) => {
                            tracing::error!(lease = %config.name, error = %e, "leader election stopped");
                            return;
                        }
                        Ok(_) => return,
                    }
                }
            })
        })
        .map_err(|e| Box::new(StartError::Runtime(e)))?;
    Ok(Elected {
        stop,
        thread: Some(thread),
    })
}
