//! Which CertificateSigningRequests are approved without a human (kube-controller-manager's
//! csrapproving, plus one Berth rule).
//!
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a node client certificate
//!   (`CN=system:node:<name>`, `O=system:nodes`, no SANs, usages within digital signature, key
//!   encipherment, client auth, with client auth) asked for by a bootstrap token user
//!   (`system:bootstrappers`) or by that node itself (renewal). Kubernetes checks the same two
//!   cases with SubjectAccessReviews (`nodeclient`, `selfnodeclient`); Berth has no RBAC yet.
//! - `kubernetes.io/kubelet-serving` (Berth only; Kubernetes leaves these to an admin): a
//!   serving certificate asked for by the node itself (`spec.username` equals the CN, in group
//!   `system:nodes`), usages within digital signature, key encipherment, server auth, with
//!   server auth, no email or URI SANs, DNS SANs only the node's name or the Node's hostname
//!   addresses, and IP SANs only the Node's addresses — or, before the Node is registered, no
//!   address another Node reports.

use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;

use super::request::RequestInfo;
use super::{KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER, NODES_GROUP, NODE_PREFIX};

/// The bootstrap token users' group.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// Why a request is auto-approved: the message of its `Approved` condition (reason
/// `AutoApproved`).
#[derive(Debug, PartialEq, Eq)]
pub struct Approval {
    pub message: &'static str,
}

fn usages_within(csr: &CertificateSigningRequest, allowed: &[&str], required: &str) -> bool {
    let usages = &csr.spec.usages;
    usages.as_ref().is_some_and(|u| {
        u.iter().all(|u| allowed.contains(&u.as_str())) && u.iter().any(|u| u == required)
    })
}

/// The node name a node certificate's subject names, if it is one (`CN=system:node:<name>`,
/// `O=system:nodes` and nothing else).
pub fn node_subject(info: &RequestInfo) -> Option<&str> {
    let name = info.common_name.strip_prefix(NODE_PREFIX)?;
    (!name.is_empty() && info.organizations == [NODES_GROUP]).then_some(name)
}

/// Whether `csr` (its request parsed as `info`) is a node client certificate request.
pub fn is_node_client(csr: &CertificateSigningRequest, info: &RequestInfo) -> bool {
    csr.spec.signer_name == KUBELET_CLIENT_SIGNER
        && node_subject(info).is_some()
        && info.dns_names.is_empty()
        && info.ip_addresses.is_empty()
        && info.other_names == 0
        && usages_within(
            csr,
            &["digital signature", "key encipherment", "client auth"],
            "client auth",
        )
}

/// Whether `csr` is a kubelet serving certificate request, apart from whose names it has.
pub fn is_kubelet_serving(csr: &CertificateSigningRequest, info: &RequestInfo) -> bool {
    csr.spec.signer_name == KUBELET_SERVING_SIGNER
        && node_subject(info).is_some()
        && info.other_names == 0
        && !(info.dns_names.is_empty() && info.ip_addresses.is_empty())
        && usages_within(
            csr,
            &["digital signature", "key encipherment", "server auth"],
            "server auth",
        )
}

fn in_group(csr: &CertificateSigningRequest, group: &str) -> bool {
    csr.spec
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|x| x == group))
}

fn node_addresses(node: &Node) -> impl Iterator<Item = (&str, &str)> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
}

/// Whether the serving certificate's names belong to node `name` (see the module docs).
fn names_are_the_nodes(info: &RequestInfo, name: &str, nodes: &[Node]) -> bool {
    let own = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name));
    let dns_ok = info.dns_names.iter().all(|d| {
        d == name
            || own.is_some_and(|n| {
                node_addresses(n)
                    .any(|(t, a)| matches!(t, "Hostname" | "InternalDNS" | "ExternalDNS") && a == d)
            })
    });
    let ip_ok = |ip: &IpAddr| {
        let ip = ip.to_string();
        match own.filter(|n| node_addresses(n).next().is_some()) {
            Some(n) => node_addresses(n).any(|(t, a)| t.ends_with("IP") && a == ip),
            None => !nodes
                .iter()
                .filter(|n| n.metadata.name.as_deref() != Some(name))
                .any(|n| node_addresses(n).any(|(_, a)| a == ip)),
        }
    };
    dns_ok && info.ip_addresses.iter().all(ip_ok)
}

/// Whether to approve `csr` now. `nodes` are the cluster's Nodes (for serving certificates).
pub fn decide(
    csr: &CertificateSigningRequest,
    info: &RequestInfo,
    nodes: &[Node],
) -> Option<Approval> {
    let username = csr.spec.username.as_deref().unwrap_or_default();
    if is_node_client(csr, info) {
        if in_group(csr, BOOTSTRAPPERS) {
            return Some(Approval {
                message: "Auto approving kubelet client certificate after SubjectAccessReview.",
            });
        }
        if username == info.common_name && in_group(csr, NODES_GROUP) {
            return Some(Approval {
                message:
                    "Auto approving self kubelet client certificate after SubjectAccessReview.",
            });
        }
        return None;
    }
    if is_kubelet_serving(csr, info)
        && username == info.common_name
        && in_group(csr, NODES_GROUP)
        && names_are_the_nodes(info, node_subject(info)?, nodes)
    {
        return Some(Approval {
            message: "Auto approving kubelet serving certificate requested by its node.",
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    fn csr(
        signer: &str,
        user: &str,
        groups: &[&str],
        usages: &[&str],
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn subject(cn: &str, orgs: &[&str], dns: &[&str], ips: &[&str]) -> RequestInfo {
        RequestInfo {
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| o.to_string()).collect(),
            dns_names: dns.iter().map(|d| d.to_string()).collect(),
            ip_addresses: ips.iter().map(|i| i.parse().unwrap()).collect(),
            other_names: 0,
        }
    }

    fn node(name: &str, ips: &[&str]) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.status = Some(NodeStatus {
            addresses: Some(
                ips.iter()
                    .map(|ip| NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        n
    }

    const CLIENT_USAGES: &[&str] = &["digital signature", "client auth"];
    const SERVING_USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];

    #[test]
    fn bootstrap_and_self_client_requests_are_approved() {
        let node_subject = subject("system:node:n1", &["system:nodes"], &[], &[]);
        let boot = csr(
            KUBELET_CLIENT_SIGNER,
            "system:bootstrap:abcdef",
            &[BOOTSTRAPPERS],
            CLIENT_USAGES,
        );
        assert!(decide(&boot, &node_subject, &[]).is_some());
        let renew = csr(
            KUBELET_CLIENT_SIGNER,
            "system:node:n1",
            &["system:nodes"],
            CLIENT_USAGES,
        );
        assert!(decide(&renew, &node_subject, &[]).is_some());
        // Another node may not ask for n1's certificate; nor may anyone else.
        let other = csr(
            KUBELET_CLIENT_SIGNER,
            "system:node:n2",
            &["system:nodes"],
            CLIENT_USAGES,
        );
        assert!(decide(&other, &node_subject, &[]).is_none());
        let alice = csr(KUBELET_CLIENT_SIGNER, "alice", &["dev"], CLIENT_USAGES);
        assert!(decide(&alice, &node_subject, &[]).is_none());
    }

    #[test]
    fn client_requests_outside_the_node_shape_wait_for_an_admin() {
        let boot = |usages| {
            csr(
                KUBELET_CLIENT_SIGNER,
                "system:bootstrap:a",
                &[BOOTSTRAPPERS],
                usages,
            )
        };
        let admin = subject("system:node:n1", &["system:masters"], &[], &[]);
        assert!(decide(&boot(CLIENT_USAGES), &admin, &[]).is_none());
        let not_node = subject("alice", &["system:nodes"], &[], &[]);
        assert!(decide(&boot(CLIENT_USAGES), &not_node, &[]).is_none());
        let with_sans = subject("system:node:n1", &["system:nodes"], &["n1"], &[]);
        assert!(decide(&boot(CLIENT_USAGES), &with_sans, &[]).is_none());
        let ok = subject("system:node:n1", &["system:nodes"], &[], &[]);
        assert!(decide(&boot(&["client auth", "server auth"]), &ok, &[]).is_none());
        let mut other_signer = boot(CLIENT_USAGES);
        other_signer.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
        assert!(decide(&other_signer, &ok, &[]).is_none());
    }

    #[test]
    fn serving_requests_only_from_the_node_for_its_own_addresses() {
        let req = subject("system:node:n1", &["system:nodes"], &["n1"], &["10.0.0.1"]);
        let by_node = csr(
            KUBELET_SERVING_SIGNER,
            "system:node:n1",
            &["system:nodes"],
            SERVING_USAGES,
        );
        // Before registration: fine unless another node has the address.
        assert!(decide(&by_node, &req, &[]).is_some());
        assert!(decide(&by_node, &req, &[node("n2", &["10.0.0.1"])]).is_none());
        // After: only the Node's own addresses.
        assert!(decide(&by_node, &req, &[node("n1", &["10.0.0.1"])]).is_some());
        assert!(decide(&by_node, &req, &[node("n1", &["10.0.0.9"])]).is_none());
        let other_dns = subject("system:node:n1", &["system:nodes"], &["evil.example"], &[]);
        assert!(decide(&by_node, &other_dns, &[]).is_none());
        // Not from a bootstrap token, nor from another node.
        let boot = csr(
            KUBELET_SERVING_SIGNER,
            "system:bootstrap:a",
            &[BOOTSTRAPPERS],
            SERVING_USAGES,
        );
        assert!(decide(&boot, &req, &[]).is_none());
        let n2 = csr(
            KUBELET_SERVING_SIGNER,
            "system:node:n2",
            &["system:nodes"],
            SERVING_USAGES,
        );
        assert!(decide(&n2, &req, &[]).is_none());
    }
}
