//! certificates.k8s.io/v1 CertificateSigningRequest: the request must be a PEM
//! `CERTIFICATE REQUEST` whose signature verifies, the signer a qualified name, the usages
//! known; the spec never changes; Approved and Denied exclude each other.

use base64::Engine as _;
use serde_json::Value;

use super::required_with;
use crate::status::Cause;

/// Kubernetes' `KeyUsage` values.
pub const KNOWN_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

const CONDITION_TYPES: &[&str] = &["Approved", "Denied", "Failed"];

fn decode_bytes(v: &Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()
}

/// Why a request's bytes are not a usable certificate request, in Kubernetes' words.
fn request_problem(pem: &[u8]) -> Option<&'static str> {
    let Ok(text) = std::str::from_utf8(pem) else {
        return Some("PEM block type must be CERTIFICATE REQUEST");
    };
    if !text.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        return Some("PEM block type must be CERTIFICATE REQUEST");
    }
    // Parsing verifies the request's self-signature.
    match rcgen::CertificateSigningRequestParams::from_pem(text) {
        Ok(_) => None,
        Err(rcgen::Error::InvalidCertificationRequestSignature) => {
            Some("signature verification failed")
        }
        Err(_) => Some("x509: malformed certificate request"),
    }
}

fn signer_problem(signer: &str) -> Option<&'static str> {
    let (domain, path) = signer.split_once('/')?;
    let valid_domain = !domain.is_empty()
        && domain.contains('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let valid_path = !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    (!valid_domain || !valid_path).then_some(
        "signerName must be a fully qualified domain and path of the form 'example.com/signer-name'",
    )
}

pub(super) fn validate_csr(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match spec.get("request").and_then(decode_bytes) {
        None => errs.push(required_with("spec.request", "")),
        Some(pem) => {
            if let Some(problem) = request_problem(&pem) {
                errs.push(Cause::invalid(
                    "spec.request",
                    &Value::String("<request>".into()),
                    problem,
                ));
            }
        }
    }
    match spec.get("signerName").and_then(Value::as_str) {
        None | Some("") => errs.push(required_with("spec.signerName", "")),
        Some(signer) => {
            if !signer.contains('/') {
                errs.push(Cause::invalid(
                    "spec.signerName",
                    &Value::String(signer.into()),
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ));
            } else if let Some(problem) = signer_problem(signer) {
                errs.push(Cause::invalid(
                    "spec.signerName",
                    &Value::String(signer.into()),
                    problem,
                ));
            }
        }
    }
    let usages = spec
        .get("usages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if usages.is_empty() {
        errs.push(required_with("spec.usages", "usages must be provided"));
    }
    let mut seen = Vec::new();
    for (i, u) in usages.iter().enumerate() {
        let field = format!("spec.usages[{i}]");
        match u.as_str() {
            Some(s) if KNOWN_USAGES.contains(&s) => {
                if seen.contains(&s) {
                    errs.push(Cause::duplicate(field, u));
                }
                seen.push(s);
            }
            _ => errs.push(Cause::not_supported(field, u, KNOWN_USAGES)),
        }
    }
    if let Some(secs) = spec.get("expirationSeconds").and_then(Value::as_i64) {
        if secs < 600 {
            errs.push(Cause::invalid(
                "spec.expirationSeconds",
                &Value::from(secs),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    errs.extend(validate_status(obj));
    errs
}

fn validate_status(obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let conditions = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let field = format!("status.conditions[{i}].type");
        let t = c.get("type").and_then(Value::as_str).unwrap_or_default();
        if t.is_empty() {
            errs.push(required_with(field, ""));
            continue;
        }
        if CONDITION_TYPES.contains(&t) {
            if seen.contains(&t) {
                errs.push(Cause::duplicate(field, &Value::String(t.into())));
            }
            seen.push(t);
            let status = c.get("status").and_then(Value::as_str).unwrap_or_default();
            if !matches!(status, "True" | "False" | "Unknown") {
                errs.push(Cause::not_supported(
                    format!("status.conditions[{i}].status"),
                    &Value::String(status.into()),
                    &["False", "True", "Unknown"],
                ));
            }
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        errs.push(Cause::invalid(
            "status.conditions",
            &Value::String("Approved".into()),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if let Some(cert) = obj.pointer("/status/certificate") {
        let ok = decode_bytes(cert).is_some_and(|pem| {
            x509_parser::pem::Pem::iter_from_buffer(&pem)
                .next()
                .is_some_and(|p| {
                    p.is_ok_and(|p| p.label == "CERTIFICATE" && p.parse_x509().is_ok())
                })
        });
        if !ok {
            errs.push(Cause::invalid(
                "status.certificate",
                &Value::String("<certificate data>".into()),
                "must contain at least one CERTIFICATE PEM block",
            ));
        }
    }
    errs
}

pub(super) fn validate_csr_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    if new.get("spec") != old.get("spec") {
        errs.push(Cause::invalid(
            "spec",
            &Value::String("<spec>".into()),
            "field is immutable",
        ));
    }
    if let Some(old_cert) = old.pointer("/status/certificate") {
        if new.pointer("/status/certificate") != Some(old_cert) {
            errs.push(Cause::invalid(
                "status.certificate",
                &Value::String("<certificate data>".into()),
                "updates may not modify existing certificate content",
            ));
        }
    }
    errs
}

/// A valid CertificateSigningRequest, for tests elsewhere in the registry.
#[cfg(test)]
pub(super) fn sample() -> Value {
    tests::csr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn request_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    pub(super) fn csr() -> Value {
        json!({"metadata": {"name": "c"}, "spec": {
            "request": b64(request_pem().as_bytes()),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        }})
    }

    fn fields(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(|c| c.field.clone()).collect()
    }

    #[test]
    fn a_well_formed_request_passes() {
        assert!(
            validate_csr(&csr()).is_empty(),
            "{:?}",
            validate_csr(&csr())
        );
    }

    #[test]
    fn bad_requests_signers_and_usages_fail() {
        let mut bad = csr();
        bad["spec"]["request"] = json!(b64(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ));
        bad["spec"]["signerName"] = json!("nodomain");
        bad["spec"]["usages"] = json!(["client auth", "client auth", "flying"]);
        bad["spec"]["expirationSeconds"] = json!(60);
        assert_eq!(
            fields(&validate_csr(&bad)),
            [
                "spec.request",
                "spec.signerName",
                "spec.usages[1]",
                "spec.usages[2]",
                "spec.expirationSeconds"
            ]
        );
        let mut missing = csr();
        missing["spec"] = json!({});
        assert_eq!(
            fields(&validate_csr(&missing)),
            ["spec.request", "spec.signerName", "spec.usages"]
        );
    }

    #[test]
    fn approval_and_denial_exclude_each_other() {
        let mut both = csr();
        both["status"] = json!({"conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        assert_eq!(fields(&validate_csr(&both)), ["status.conditions"]);
        both["status"]["certificate"] = json!(b64(b"junk"));
        assert!(fields(&validate_csr(&both)).contains(&"status.certificate".to_string()));
    }

    #[test]
    fn spec_and_issued_certificate_are_immutable() {
        let old = csr();
        let mut new = old.clone();
        new["spec"]["usages"] = json!(["client auth"]);
        assert_eq!(fields(&validate_csr_update(&new, &old)), ["spec"]);
        let mut issued = old.clone();
        issued["status"] = json!({"certificate": "QUJD"});
        let mut changed = issued.clone();
        changed["status"]["certificate"] = json!("REVG");
        assert_eq!(
            fields(&validate_csr_update(&changed, &issued)),
            ["status.certificate"]
        );
    }
}
