//! Rows of coordination.k8s.io/v1 Lease.

use super::format::{since, str_at, time_at, Millis};
use super::ColumnDefinition as Col;
use serde_json::{json, Value};

const HOLDER_DOC: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";

pub(super) fn lease_columns() -> Vec<Col> {
    vec![Col::name(), Col::string("Holder", HOLDER_DOC), Col::age()]
}

pub(super) fn lease_cells(lease: &Value, now: Millis) -> Vec<Value> {
    vec![
        json!(str_at(lease, &["metadata", "name"])),
        json!(str_at(lease, &["spec", "holderIdentity"])),
        json!(since(
            time_at(lease, &["metadata", "creationTimestamp"]),
            now
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::format::parse_time;
    use super::*;

    #[test]
    fn lease() {
        let now = parse_time("2024-05-01T12:00:00Z").expect("now");
        let lease = json!({
            "metadata": {"name": "node-a", "namespace": "kube-node-lease",
                         "creationTimestamp": "2024-05-01T09:00:00Z"},
            "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40}
        });
        assert_eq!(
            lease_cells(&lease, now),
            vec![json!("node-a"), json!("node-a"), json!("3h")]
        );
        let free = json!({"metadata": {"name": "sched"}, "spec": {}});
        assert_eq!(lease_cells(&free, now)[1], json!(""));
    }
}
