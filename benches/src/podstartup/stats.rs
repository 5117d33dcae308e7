//! Latency distributions in milliseconds over an HDR histogram (microsecond precision).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Longest latency kept, in microseconds (10 minutes); longer ones saturate.
const MAX_US: u64 = 600_000_000;

pub struct Samples {
    hist: Histogram<u64>,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            hist: Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid"),
        }
    }
}

/// The percentiles reported, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Samples {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(MAX_US)) as u64;
        self.hist.saturating_record(us.max(1));
    }

    pub fn percentiles(&self) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: self.hist.len(),
            p50: ms(self.hist.value_at_quantile(0.5)),
            p90: ms(self.hist.value_at_quantile(0.9)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            max: ms(self.hist.max()),
        }
    }
}

impl Percentiles {
    pub fn to_json(self) -> Value {
        json!({"count": self.count, "p50_ms": self.p50, "p90_ms": self.p90,
               "p99_ms": self.p99, "max_ms": self.max})
    }

    /// `p50 1.2 ms  p90 …`.
    pub fn line(self) -> String {
        format!(
            "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            self.p50, self.p90, self.p99, self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_milliseconds() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.record(Duration::from_millis(ms));
        }
        let p = s.percentiles();
        assert_eq!(p.count, 100);
        assert!(
            (p.p50 - 50.0).abs() < 0.1 && (p.p99 - 99.0).abs() < 0.1,
            "{p:?}"
        );
        assert!((p.max - 100.0).abs() < 0.1);
        assert_eq!(Samples::default().percentiles().count, 0);
    }
}
