//! Leader election on a coordination.k8s.io Lease, as client-go's `leaderelection` with a
//! `LeaseLock` (what kube-controller-manager and kube-scheduler use): candidates read the Lease
//! and write it with optimistic concurrency (its resourceVersion); the holder renews it every
//! retry period and gives up — stopping its work — when it cannot renew within the renew
//! deadline; a standby takes it over once it has seen no renewal for the lease duration.
//!
//! [`run_as_leader`] runs one term; [`run_until_interrupted`] and [`spawn`] run a component
//! elected from a kubeconfig, as a process or on a thread of its own.

mod decide;
mod process;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::time::Instant;

use crate::runtime::Recorder;
use decide::{decide, released, Step};
pub use process::{run_until_interrupted, spawn, Elected};

/// Where the control plane's Leases live.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// The controllers' Lease (kube-controller-manager's name, so tools that look for it find it).
pub const CONTROLLERS_LEASE: &str = "kube-controller-manager";
/// The scheduler's Lease.
pub const SCHEDULER_LEASE: &str = "kube-scheduler";

/// Completes when the elected work must stop (shutdown, or the lease is lost).
pub type Shutdown = BoxFuture<'static, ()>;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {reason}")]
    Invalid { reason: String },
    #[error("lost the lease {namespace}/{name}")]
    Lost { namespace: String, name: String },
    #[error(transparent)]
    Start(#[from] Box<crate::StartError>),
}

/// How a component campaigns for its Lease. Durations as kube-controller-manager's
/// `--leader-elect-lease-duration`, `--leader-elect-renew-deadline`, `--leader-elect-retry-period`.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per candidate: `<hostname>_<random>`.
    pub identity: String,
    /// How long a standby waits, after the last renewal it saw, before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// Between attempts to acquire or renew.
    pub retry_period: Duration,
    /// Reported as the source of the LeaderElection Events.
    pub component: String,
}

impl LeaderConfig {
    /// Kubernetes' defaults (15 s, 10 s, 2 s) for Lease `kube-system/<name>`.
    pub fn new(name: &str, component: &str) -> Self {
        LeaderConfig {
            namespace: LEASE_NAMESPACE.into(),
            name: name.into(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            component: component.into(),
        }
    }

    /// client-go's rules: lease duration > renew deadline > retry period × 1.2 (its jitter).
    pub fn validate(&self) -> Result<(), LeaderError> {
        let invalid = |reason: &str| {
            Err(LeaderError::Invalid {
                reason: reason.into(),
            })
        };
        if self.retry_period.is_zero() {
            return invalid("the retry period must be positive");
        }
        if self.lease_duration <= self.renew_deadline {
            return invalid("the lease duration must be greater than the renew deadline");
        }
        if self.renew_deadline <= self.retry_period.mul_f64(JITTER) {
            return invalid("the renew deadline must be greater than 1.2 × the retry period");
        }
        if self.identity.is_empty() || self.name.is_empty() || self.namespace.is_empty() {
            return invalid("the identity, lease name and namespace must not be empty");
        }
        Ok(())
    }
}

/// client-go's `JitterFactor`: acquire attempts are spread over up to 1.2 extra retry periods.
const JITTER: f64 = 1.2;

/// A fresh random number (std's hasher keys are seeded randomly per process and vary per call).
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Timestamp::now().as_nanosecond() as u128);
    h.finish()
}

/// `<hostname>_<uuid-like random>`, as kube-controller-manager names its candidates.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let (a, b) = (random(), random());
    format!(
        "{host}_{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// What one acquire-or-renew attempt found.
enum Attempt {
    Held,
    HeldBy(String),
}

/// One candidate's view of the Lease.
struct Elector {
    api: Api<Lease>,
    events: Recorder,
    config: LeaderConfig,
    /// The spec as last seen, and when it was first seen in that form.
    observed: Option<(k8s_openapi::api::coordination::v1::LeaseSpec, Instant)>,
}

impl Elector {
    fn new(client: Client, config: LeaderConfig) -> Self {
        Elector {
            events: Recorder::new(client.clone(), &config.component)
                .with_instance(&config.identity),
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = Instant::now();
        let wall = Timestamp::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let observed_at = match (&self.observed, &spec) {
            (Some((seen, at)), Some(spec)) if seen == spec => *at,
            _ => now,
        };
        if let Some(spec) = &spec {
            self.observed = Some((spec.clone(), observed_at));
        }
        let step = decide(
            spec.as_ref(),
            observed_at,
            now,
            wall,
            &self.config.identity,
            self.config.lease_duration,
        );
        let new_spec = match step {
            Step::Wait { holder, .. } => return Ok(Attempt::HeldBy(holder)),
            Step::Take(new_spec) => new_spec,
        };
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(new_spec.clone()),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            // The resourceVersion read above makes this a compare-and-swap: of two candidates
            // taking over at once, one gets 409.
            Some(mut lease) => {
                lease.spec = Some(new_spec.clone());
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => {
                self.observed = Some((new_spec, Instant::now()));
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldBy(String::new())),
            Err(e) => Err(e),
        }
    }

    /// Renews until a round of attempts cannot succeed within the renew deadline, or another
    /// candidate is seen holding the Lease; returns then.
    async fn keep_renewing(&mut self) {
        let retry = self.config.retry_period;
        loop {
            tokio::time::sleep(retry).await;
            let deadline = Instant::now() + self.config.renew_deadline;
            loop {
                match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                    Ok(Ok(Attempt::Held)) => break,
                    Ok(Ok(Attempt::HeldBy(holder))) if !holder.is_empty() => {
                        tracing::warn!(lease = %self.config.name, %holder, "another candidate holds the lease");
                        return;
                    }
                    Ok(Ok(Attempt::HeldBy(_))) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(lease = %self.config.name, error = %e, "renewing the lease failed")
                    }
                    Err(_) => return,
                }
                if Instant::now() + retry >= deadline {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
                tokio::time::sleep(retry).await;
            }
        }
    }

    /// Steps down: clears the holder if it is still us, so a standby need not wait.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        lease.spec = Some(released(&spec, Timestamp::now()));
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.config.name, error = %e, "releasing the lease failed");
        }
    }

    /// client-go's LeaseLock.RecordEvent: `<identity> <what>` on the Lease, reason
    /// LeaderElection. Best effort.
    fn record_event(&self, what: &str) {
        let c = &self.config;
        let lease = ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            namespace: Some(c.namespace.clone()),
            name: Some(c.name.clone()),
            ..ObjectReference::default()
        };
        self.events
            .normal(&lease, "LeaderElection", format!("{} {what}", c.identity));
    }
}

/// Campaigns for the Lease until elected (or `shutdown`), then runs `work` while renewing.
/// `work` gets a [`Shutdown`] that completes when it must stop: on `shutdown` (the Lease is then
/// released) or when the Lease is lost. Returns `Ok(None)` if shut down before being elected,
/// `Ok(Some(output))` once the work ended (and the Lease is released), and
/// [`LeaderError::Lost`] after the work stopped because the Lease was lost.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    config: &LeaderConfig,
    shutdown: impl Future<Output = ()> + Send,
    work: F,
) -> Result<Option<Fut::Output>, LeaderError>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future + Send,
{
    config.validate()?;
    let mut elector = Elector::new(client, config.clone());
    tokio::pin!(shutdown);
    tracing::info!(lease = %config.name, identity = %config.identity, "attempting to acquire the leader lease");
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(Attempt::Held) => break,
            Ok(Attempt::HeldBy(holder)) => {
                tracing::debug!(lease = %config.name, %holder, "not the leader")
            }
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "acquiring the lease failed")
            }
        }
        let pause = config
            .retry_period
            .mul_f64(1.0 + JITTER * (random() % 1000) as f64 / 1000.0);
        tokio::select! {
            _ = &mut shutdown => return Ok(None),
            _ = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "became leader");
    elector.record_event("became leader");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let work = work(
        async move {
            let _ = stopped.await;
        }
        .boxed(),
    );
    tokio::pin!(work);
    enum End<T> {
        Finished(T),
        Lost,
        Shutdown,
    }
    let end = {
        let renewing = elector.keep_renewing();
        tokio::pin!(renewing);
        tokio::select! {
            out = &mut work => End::Finished(out),
            _ = &mut renewing => End::Lost,
            _ = &mut shutdown => End::Shutdown,
        }
    };
    match end {
        End::Finished(out) => {
            elector.release().await;
            Ok(Some(out))
        }
        End::Shutdown => {
            let _ = stop.send(());
            let out = work.await;
            elector.release().await;
            Ok(Some(out))
        }
        End::Lost => {
            tracing::error!(lease = %config.name, identity = %config.identity, "leader election lost");
            let _ = stop.send(());
            elector.record_event("stopped leading");
            work.await;
            Err(LeaderError::Lost {
                namespace: config.namespace.clone(),
                name: config.name.clone(),
            })
        }
    }
}

/// Parses a Go duration as Kubernetes' flags take them: `15s`, `500ms`, `1m30s`, `2h`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (e.g. 15s, 500ms, 1m30s)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(value * seconds).map_err(|_| bad())?;
        rest = &rest[unit_len..];
    }
    if text.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "15", "s", "15x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let c = LeaderConfig::new(CONTROLLERS_LEASE, "kube-controller-manager");
        assert!(c.validate().is_ok());
        assert_eq!(c.namespace, "kube-system");
        assert_eq!(
            (c.lease_duration, c.renew_deadline, c.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        let bad = LeaderConfig {
            renew_deadline: Duration::from_secs(15),
            ..c.clone()
        };
        assert!(bad.validate().is_err());
        let bad = LeaderConfig {
            renew_deadline: Duration::from_millis(2400),
            ..c.clone()
        };
        assert!(bad.validate().is_err());
        let short = LeaderConfig {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
            ..c
        };
        assert!(short.validate().is_ok());
    }

    #[test]
    fn identities_are_host_and_unique() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        let (host, id) = a.rsplit_once('_').expect("host_random");
        assert!(!host.is_empty());
        assert_eq!(id.len(), 36, "{id}");
    }
}
