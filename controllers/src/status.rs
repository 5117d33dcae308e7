//! Writing a controller's status only when it changes.

use serde::Serialize;
use serde_json::{json, Value};

/// Whether any field of `wanted` (an object of status fields) differs from `current`, a field
/// absent from `current` counting as 0 (how Kubernetes omits zero counts).
pub fn status_differs(current: &impl Serialize, wanted: &Value) -> bool {
    let current = serde_json::to_value(current).unwrap_or_default();
    let zero = json!(0);
    wanted
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, v)| current.get(k).unwrap_or(&zero) != v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetStatus;

    #[test]
    fn absent_counts_are_zero_and_any_difference_counts() {
        let current = DaemonSetStatus {
            number_ready: 2,
            ..DaemonSetStatus::default()
        };
        assert!(!status_differs(
            &current,
            &json!({"numberReady": 2, "numberMisscheduled": 0})
        ));
        assert!(status_differs(&current, &json!({"numberReady": 3})));
        assert!(status_differs(&current, &json!({"observedGeneration": 4})));
    }
}
