//! Issues certificates for approved requests with the cluster CA (kube-controller-manager's
//! csrsigning for the kubelet signers).

use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// How long issued certificates last unless the request asks for less (Kubernetes'
/// `--cluster-signing-duration` default: one year).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Issued certificates start this long before now, for clocks a little behind (as Kubernetes).
const BACKDATE: time::Duration = time::Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the signing CA could not be loaded")]
    Ca(#[source] rcgen::Error),
    #[error("the certificate request could not be used")]
    Request(#[source] rcgen::Error),
    #[error("usage {usage:?} is not one this signer issues")]
    Usage { usage: String },
    #[error("the certificate could not be signed")]
    Sign(#[source] rcgen::Error),
}

/// The cluster CA, ready to sign.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    ca_not_after: OffsetDateTime,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("ca_not_after", &self.ca_not_after)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from the CA's certificate and private key (PEM).
    pub fn from_pem(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Signer, SignError> {
        let key = KeyPair::from_pem(ca_key_pem).map_err(SignError::Ca)?;
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key).map_err(SignError::Ca)?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(ca_cert_pem.as_bytes())
            .map_err(|_| SignError::Ca(rcgen::Error::CouldNotParseCertificate))?;
        let cert = pem
            .parse_x509()
            .map_err(|_| SignError::Ca(rcgen::Error::CouldNotParseCertificate))?;
        Ok(Signer {
            issuer,
            ca_not_after: cert.validity().not_after.to_datetime(),
        })
    }

    /// Signs `request_pem` for `usages` (Kubernetes' KeyUsage strings), valid for `duration`
    /// (capped by [`DEFAULT_DURATION`] and the CA's own expiry). Subject and SANs come from the
    /// request; everything else from the signer. Returns the certificate's PEM.
    pub fn sign(
        &self,
        request_pem: &str,
        usages: &[String],
        duration: Option<Duration>,
    ) -> Result<String, SignError> {
        // Parsing verifies the request's signature: the requester holds the key.
        let request =
            CertificateSigningRequestParams::from_pem(request_pem).map_err(SignError::Request)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = request.params.distinguished_name.clone();
        params.subject_alt_names = request.params.subject_alt_names.clone();
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        for usage in usages {
            match usage.as_str() {
                "digital signature" | "signing" => {
                    params.key_usages.push(KeyUsagePurpose::DigitalSignature)
                }
                "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "client auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                other => {
                    return Err(SignError::Usage {
                        usage: other.to_string(),
                    })
                }
            }
        }
        let now = OffsetDateTime::now_utc();
        let wanted = duration.unwrap_or(DEFAULT_DURATION).min(DEFAULT_DURATION);
        params.not_before = now - BACKDATE;
        params.not_after = (now + wanted).min(self.ca_not_after);
        let csr = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        };
        let cert = csr.signed_by(&self.issuer).map_err(SignError::Sign)?;
        Ok(cert.pem())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::csr::request::tests::request;

    /// A throwaway CA: (cert PEM, key PEM).
    pub(crate) fn ca() -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("ca");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn issues_the_requested_subject_and_usages() {
        let (ca_cert, ca_key) = ca();
        let signer = Signer::from_pem(&ca_cert, &ca_key).expect("signer");
        let (req, _) = request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.1"]);
        let pem = signer
            .sign(
                &req,
                &["digital signature".into(), "server auth".into()],
                Some(Duration::from_secs(3600)),
            )
            .expect("sign");
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let cert = p.parse_x509().expect("x509");
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:node:n1"
        );
        assert!(cert.issuer().to_string().contains("test-ca"));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300);
        let sans = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(sans.general_names.len(), 2);
    }

    #[test]
    fn refuses_unknown_usages_and_bad_requests() {
        let (ca_cert, ca_key) = ca();
        let signer = Signer::from_pem(&ca_cert, &ca_key).expect("signer");
        let (req, _) = request("system:node:n1", &["system:nodes"], &[]);
        assert!(matches!(
            signer.sign(&req, &["cert sign".into()], None),
            Err(SignError::Usage { .. })
        ));
        assert!(signer.sign("junk", &[], None).is_err());
        assert!(Signer::from_pem("junk", &ca_key).is_err());
    }
}
