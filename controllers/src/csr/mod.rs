//! CertificateSigningRequests for nodes: auto-approval (kube-controller-manager's csrapproving)
//! and signing with the cluster CA (its csrsigning) for the kubelet signers, plus the node side
//! of the exchange ([`bootstrap`]: kubeadm's TLS bootstrap, as `berth agent` uses it).
//!
//! Signing needs the CA's private key, so it runs only where the controllers are given it
//! (`Config::csr_signing`: `berth server` and `berth up` run the controllers beside the API
//! server and pass `<data-dir>/pki`); without it approved requests wait for another signer.

mod approve;
pub mod bootstrap;
mod controller;
mod request;
mod sign;
pub mod token;

use std::path::PathBuf;

pub use approve::{decide, is_kubelet_serving, is_node_client, node_subject, Approval};
pub use controller::CsrController;
pub use request::{parse as parse_request, RequestError, RequestInfo};
pub use sign::{SignError, Signer, DEFAULT_DURATION};

/// Signs node client certificates (for the kubelet's connection to the API server).
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Signs kubelet serving certificates (for its :10250 server).
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The group of node identities.
pub const NODES_GROUP: &str = "system:nodes";
/// A node's user name is this prefix and the node's name.
pub const NODE_PREFIX: &str = "system:node:";

/// Where the cluster CA's certificate and key are, for signing.
#[derive(Clone, Debug)]
pub struct CsrSigning {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

impl CsrSigning {
    /// The CA files `berth server` keeps in `<data-dir>/pki`.
    pub fn in_pki_dir(pki: &std::path::Path) -> CsrSigning {
        CsrSigning {
            ca_cert: pki.join("ca.crt"),
            ca_key: pki.join("ca.key"),
        }
    }

    /// Loads the CA; `None` (logged) when it is unreadable, which turns signing off.
    pub fn load(&self) -> Option<Signer> {
        let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| (p.clone(), e));
        match (read(&self.ca_cert), read(&self.ca_key)) {
            (Ok(cert), Ok(key)) => match Signer::from_pem(&cert, &key) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "csr signing off: the CA is unusable");
                    None
                }
            },
            (Err((path, e)), _) | (_, Err((path, e))) => {
                tracing::error!(path = %path.display(), error = %e, "csr signing off: the CA is unreadable");
                None
            }
        }
    }
}
