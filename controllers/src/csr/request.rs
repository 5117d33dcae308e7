//! What a PEM `CERTIFICATE REQUEST` asks for: subject and subject alternative names.

use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("spec.request is not a PEM CERTIFICATE REQUEST")]
    NotPem,
    #[error("spec.request is not a well-formed certificate request")]
    Malformed,
}

/// The parts of a certificate request the approver and signers judge.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Email addresses, URIs or other names: none of Kubernetes' node signers allow them.
    pub other_names: usize,
}

/// Parses a PEM certificate request.
pub fn parse(pem: &[u8]) -> Result<RequestInfo, RequestError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| RequestError::NotPem)?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(RequestError::NotPem);
    }
    let (_, csr) =
        X509CertificationRequest::from_der(&pem.contents).map_err(|_| RequestError::Malformed)?;
    let subject = &csr.certification_request_info.subject;
    let text = |v: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        v.as_str()
            .map(String::from)
            .map_err(|_| RequestError::Malformed)
    };
    let mut info = RequestInfo {
        common_name: match subject.iter_common_name().next() {
            Some(cn) => text(cn)?,
            None => String::new(),
        },
        organizations: subject
            .iter_organization()
            .map(text)
            .collect::<Result<_, _>>()?,
        ..RequestInfo::default()
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => info.dns_names.push((*d).to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => info
                            .ip_addresses
                            .push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                        16 => info
                            .ip_addresses
                            .push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                        _ => return Err(RequestError::Malformed),
                    },
                    _ => info.other_names += 1,
                }
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PEM request for `cn`/`orgs` with the given SANs, and its key's PEM.
    pub(crate) fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        let pem = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        (pem, key.serialize_pem())
    }

    #[test]
    fn subject_and_names_are_read() {
        let (pem, _) = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1", "127.0.0.1", "::1"],
        );
        let info = parse(pem.as_bytes()).expect("parse");
        assert_eq!(info.common_name, "system:node:n1");
        assert_eq!(info.organizations, ["system:nodes"]);
        assert_eq!(info.dns_names, ["n1"]);
        assert_eq!(
            info.ip_addresses,
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(info.other_names, 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(parse(b"nope"), Err(RequestError::NotPem)));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse(cert.as_bytes()).is_err());
    }
}
