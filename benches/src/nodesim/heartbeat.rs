//! Lease renewals: every node once per period, spread evenly over the period (node `i` of `n`
//! at offset `i/n`), with at most `concurrency` renewals in flight. Spreading keeps 5,000 nodes
//! at a steady 500 writes/s instead of a burst of 5,000 every ten seconds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::objects::{self, LEASE_NAMESPACE};
use super::register::is_status;
use super::{Shared, SimNode};

/// When node `index` of `count` renews within a period.
pub(super) fn offset(period: Duration, index: usize, count: usize) -> Duration {
    period.mul_f64(index as f64 / count.max(1) as f64)
}

pub(super) async fn run(shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.concurrency));
    let count = shared.nodes.len();
    // Registration just wrote every Lease, so the first round is one period away.
    let mut round = Instant::now() + shared.lease_period;
    loop {
        for (index, node) in shared.nodes.iter().enumerate() {
            let at = round + offset(shared.lease_period, index, count);
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            if !node.alive.load(Ordering::SeqCst) {
                continue;
            }
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let shared = Arc::clone(&shared);
            let node = Arc::clone(node);
            tokio::spawn(async move {
                renew(&shared, &node).await;
                drop(permit);
            });
        }
        round += shared.lease_period;
    }
}

/// Renews one node's Lease unless the node is stopped; recreates the Lease if it is gone.
pub(super) async fn renew(shared: &Shared, node: &SimNode) {
    let _renewing = node.renewing.lock().await;
    if !node.alive.load(Ordering::SeqCst) {
        return;
    }
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), LEASE_NAMESPACE);
    let now = objects::micro_time(OffsetDateTime::now_utc());
    let duration = shared.lease_duration_seconds;
    let renewal = objects::lease_renewal(&node.name, duration, &now);
    let result = match leases
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&renewal))
        .await
    {
        Err(e) if is_status(&e, 404) => {
            let lease = objects::lease(&node.name, &node.uid, duration, &now);
            match serde_json::from_value::<Lease>(lease) {
                Ok(lease) => leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(drop),
                Err(e) => {
                    tracing::error!(node = %node.name, error = %e, "node simulator: bad lease");
                    return;
                }
            }
        }
        other => other.map(drop),
    };
    match result {
        Ok(()) => {
            shared
                .counters
                .leases_renewed
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => shared.failed("renewing the lease", &node.name, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_spread_over_the_period() {
        let period = Duration::from_secs(10);
        assert_eq!(offset(period, 0, 5000), Duration::ZERO);
        assert_eq!(offset(period, 2500, 5000), Duration::from_secs(5));
        assert_eq!(offset(period, 4999, 5000), Duration::from_millis(9998));
        assert_eq!(offset(period, 0, 0), Duration::ZERO);
    }
}
