//! The CSR controller: approves what [`super::decide`] allows, then signs approved requests
//! for the kubelet signers.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;

use super::approve::{decide, is_kubelet_serving, is_node_client};
use super::request::{self, RequestInfo};
use super::sign::Signer;
use super::{KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER};
use crate::runtime::{key_of, Action, Informer, NotSynced, Reconciler, Runner, Synced, WorkQueue};

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("updating the {subresource} of certificatesigningrequest {name}")]
    Update {
        subresource: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

pub struct CsrController {
    api: Api<CertificateSigningRequest>,
    csrs: Store<CertificateSigningRequest>,
    nodes: Store<Node>,
    signer: Option<Arc<Signer>>,
    synced: [Synced; 2],
}

impl CsrController {
    /// Registers the controller on `runner`, on its own CSR informer and the shared Node one.
    /// Without `signer` it only approves.
    pub fn register(
        runner: &mut Runner,
        client: Client,
        nodes: &mut Informer<Node>,
        signer: Option<Signer>,
        queue: WorkQueue<String>,
    ) {
        let api = Api::<CertificateSigningRequest>::all(client);
        let mut csrs = Informer::new(api.clone(), watcher::Config::default());
        csrs.enqueue(&queue, |c: &CertificateSigningRequest| vec![key_of(c)]);
        let controller = CsrController {
            api,
            csrs: csrs.store(),
            nodes: nodes.store(),
            signer: signer.map(Arc::new),
            synced: [csrs.synced(), nodes.synced()],
        };
        runner.informer(csrs);
        runner.controller(controller, queue, 2);
    }

    async fn write(
        &self,
        subresource: &'static str,
        csr: &CertificateSigningRequest,
    ) -> Result<Action, CsrError> {
        let name = csr.metadata.name.clone().unwrap_or_default();
        match self
            .api
            .replace_subresource(subresource, &name, &PostParams::default(), csr)
            .await
        {
            Ok(_) => Ok(Action::Done),
            // Gone, or changed under us: the watch brings the news.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::Done),
            Err(source) => Err(CsrError::Update {
                subresource,
                name,
                source,
            }),
        }
    }

    /// Signs `csr` when this controller is its signer; records a Failed condition when the
    /// request is not what the signer issues.
    async fn sign(
        &self,
        mut csr: CertificateSigningRequest,
        info: Result<RequestInfo, request::RequestError>,
    ) -> Result<Action, CsrError> {
        let Some(signer) = &self.signer else {
            return Ok(Action::Done);
        };
        let signer_name = csr.spec.signer_name.as_str();
        if signer_name != KUBELET_CLIENT_SIGNER && signer_name != KUBELET_SERVING_SIGNER {
            return Ok(Action::Done);
        }
        let shape_ok = info.as_ref().is_ok_and(|info| {
            if signer_name == KUBELET_CLIENT_SIGNER {
                is_node_client(&csr, info)
            } else {
                is_kubelet_serving(&csr, info)
            }
        });
        let issued = if shape_ok {
            let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
            let usages = csr.spec.usages.clone().unwrap_or_default();
            let duration = csr
                .spec
                .expiration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs);
            signer
                .sign(&pem, &usages, duration)
                .map_err(|e| format!("{e}"))
        } else {
            Err(format!(
                "the request is not a valid {signer_name} certificate request"
            ))
        };
        let status = csr.status.get_or_insert_with(Default::default);
        match issued {
            Ok(pem) => {
                status.certificate = Some(ByteString(pem.into_bytes()));
                tracing::info!(csr = ?csr.metadata.name, signer = signer_name, "issued certificate");
            }
            Err(message) => {
                tracing::warn!(csr = ?csr.metadata.name, %message, "not signing");
                push_condition(status, "Failed", "SignerValidationFailure", &message);
            }
        }
        self.write("status", &csr).await
    }
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_))
}

fn push_condition(
    status: &mut CertificateSigningRequestStatus,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
}

impl Reconciler for CsrController {
    type Error = CsrError;

    fn name(&self) -> &'static str {
        "csr"
    }

    async fn prepare(&self) -> Result<(), CsrError> {
        self.synced[0].wait("certificatesigningrequest").await?;
        self.synced[1].wait("node").await?;
        Ok(())
    }

    async fn reconcile(&self, name: &str) -> Result<Action, CsrError> {
        let Some(csr) = self.csrs.get(&ObjectRef::new(name)) else {
            return Ok(Action::Done);
        };
        let mut csr = (*csr).clone();
        let info = request::parse(&csr.spec.request.0);
        if has_condition(&csr, "Denied") || has_condition(&csr, "Failed") {
            return Ok(Action::Done);
        }
        if !has_condition(&csr, "Approved") {
            let Ok(parsed) = &info else {
                return Ok(Action::Done);
            };
            let nodes: Vec<Node> = self.nodes.state().iter().map(|n| (**n).clone()).collect();
            let Some(approval) = decide(&csr, parsed, &nodes) else {
                return Ok(Action::Done);
            };
            tracing::info!(csr = name, user = ?csr.spec.username, "auto-approving");
            let status = csr.status.get_or_insert_with(Default::default);
            push_condition(status, "Approved", "AutoApproved", approval.message);
            return self.write("approval", &csr).await;
        }
        let issued = csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| !c.0.is_empty());
        if issued {
            return Ok(Action::Done);
        }
        self.sign(csr, info).await
    }
}
