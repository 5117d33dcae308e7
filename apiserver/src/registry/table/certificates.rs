//! Rows of certificates.k8s.io/v1 CertificateSigningRequest, as kubectl's printers show them.

use super::format::{arr_at, human_duration, opt_int_at, since, str_at, time_at, Millis};
use super::ColumnDefinition as Col;
use serde_json::{json, Value};

const SIGNER_DOC: &str = "signerName indicates the requested signer, and is a qualified name.";
const REQUESTOR_DOC: &str = "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block. When serialized as JSON or YAML, the data is additionally base64-encoded.";
const DURATION_DOC: &str =
    "expirationSeconds is the requested duration of validity of the issued certificate.";
const CONDITION_DOC: &str = "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".";

pub(super) fn csr_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::age(),
        Col::string("SignerName", SIGNER_DOC),
        Col::string("Requestor", REQUESTOR_DOC),
        Col::string("RequestedDuration", DURATION_DOC),
        Col::string("Condition", CONDITION_DOC),
    ]
}

/// kubectl's `extractCSRStatus`: Denied beats Approved beats Pending, then ",Failed", ",Issued".
fn condition(csr: &Value) -> String {
    let has = |t: &str| {
        arr_at(csr, &["status", "conditions"])
            .iter()
            .any(|c| c.get("type").and_then(Value::as_str) == Some(t))
    };
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if !str_at(csr, &["status", "certificate"]).is_empty() {
        out.push_str(",Issued");
    }
    out
}

pub(super) fn csr_cells(csr: &Value, now: Millis) -> Vec<Value> {
    let duration = match opt_int_at(csr, &["spec", "expirationSeconds"]) {
        Some(s) => human_duration(s.saturating_mul(1000)),
        None => "<none>".to_string(),
    };
    vec![
        json!(str_at(csr, &["metadata", "name"])),
        json!(since(time_at(csr, &["metadata", "creationTimestamp"]), now)),
        json!(str_at(csr, &["spec", "signerName"])),
        json!(str_at(csr, &["spec", "username"])),
        json!(duration),
        json!(condition(csr)),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::format::parse_time;
    use super::*;

    #[test]
    fn csr() {
        let now = parse_time("2024-05-01T12:00:00Z").expect("now");
        let mut csr = json!({
            "metadata": {"name": "node-csr-a", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "username": "system:bootstrap:abcdef"},
        });
        assert_eq!(
            csr_cells(&csr, now),
            vec![
                json!("node-csr-a"),
                json!("60s"),
                json!("kubernetes.io/kube-apiserver-client-kubelet"),
                json!("system:bootstrap:abcdef"),
                json!("<none>"),
                json!("Pending"),
            ]
        );
        csr["spec"]["expirationSeconds"] = json!(3600);
        csr["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}],
                               "certificate": "LS0t"});
        let cells = csr_cells(&csr, now);
        assert_eq!(
            (&cells[4], &cells[5]),
            (&json!("60m"), &json!("Approved,Issued"))
        );
        csr["status"]["conditions"] = json!([{"type": "Denied"}, {"type": "Failed"}]);
        csr["status"].as_object_mut().unwrap().remove("certificate");
        assert_eq!(csr_cells(&csr, now)[5], json!("Denied,Failed"));
    }
}
