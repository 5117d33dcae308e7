//! Prometheus metrics for `/metrics`: requests by verb/resource/code, latency, watchers, storage.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

/// Every metric the API server exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    watchers: Family<ResourceLabels, Gauge>,
    commit_latency: Histogram,
    commit_batch: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
        });
        let watchers = Family::<ResourceLabels, Gauge>::default();
        let commit_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "apiserver_request",
            "Requests by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource (watches: time to the response head)",
            latency.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Open watches by resource",
            watchers.clone(),
        );
        registry.register(
            "berth_storage_commit_duration_seconds",
            "Durable (fsync'd) commit latency of one group commit",
            commit_latency.clone(),
        );
        registry.register(
            "berth_storage_commit_batch_size",
            "Writes per group commit",
            commit_batch.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            watchers,
            commit_latency,
            commit_batch,
        }
    }

    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                resource: resource.into(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_commit(&self, elapsed: Duration, batch: usize) {
        self.commit_latency.observe(elapsed.as_secs_f64());
        self.commit_batch.observe(batch as f64);
    }

    pub fn set_watchers(&self, resource: &str, count: usize) {
        self.watchers
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .set(count as i64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A commit observer for the storage backend.
    pub fn commit_observer(self: &Arc<Self>) -> Arc<dyn Fn(Duration, usize) + Send + Sync> {
        let me = self.clone();
        Arc::new(move |elapsed, batch| me.observe_commit(elapsed, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_families() {
        let m = Metrics::new();
        m.observe_request("GET", "pods", 200, Duration::from_millis(2));
        m.observe_commit(Duration::from_micros(300), 4);
        m.set_watchers("pods", 3);
        let text = m.encode();
        assert!(
            text.contains("apiserver_request_total{verb=\"GET\",resource=\"pods\",code=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "apiserver_request_duration_seconds_count{verb=\"GET\",resource=\"pods\"} 1"
        ));
        assert!(text.contains("apiserver_registered_watchers{resource=\"pods\"} 3"));
        assert!(text.contains("berth_storage_commit_duration_seconds_count 1"));
    }
}
