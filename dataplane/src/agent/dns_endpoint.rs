//! Publishes this node's DNS server as an endpoint of `kube-system/kube-dns`.
//!
//! Every node answers cluster DNS on its own pod gateway. The `kube-dns` Service has
//! `internalTrafficPolicy: Local`, so each node's socket LB sends its pods to the node's own
//! server; this module keeps one EndpointSlice per node (`kube-dns-<node>`) naming it. The slice
//! carries Berth's `managed-by` value, so the EndpointSlice controller leaves it alone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

/// The Service whose endpoints are the nodes' DNS servers.
pub const KUBE_DNS_SERVICE: &str = "kube-dns";
pub const KUBE_DNS_NAMESPACE: &str = "kube-system";
/// `endpointslice.kubernetes.io/managed-by` of the slices this module writes.
pub const MANAGED_BY: &str = "berth-dataplane";

#[derive(Debug, thiserror::Error)]
pub enum DnsEndpointError {
    #[error("{op} endpointslice {name}")]
    Api {
        op: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The slice's name for `node`; slice names are DNS subdomains, as node names are.
pub fn slice_name(node: &str) -> String {
    format!("{KUBE_DNS_SERVICE}-{node}")
}

/// The EndpointSlice naming `node`'s DNS server at `addr`, port 53 over UDP and TCP.
pub fn desired_slice(node: &str, addr: Ipv4Addr) -> EndpointSlice {
    let labels = BTreeMap::from([
        (
            "kubernetes.io/service-name".to_string(),
            KUBE_DNS_SERVICE.to_string(),
        ),
        (
            "endpointslice.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ]);
    let port = |name: &str, protocol: &str| EndpointPort {
        name: Some(name.into()),
        port: Some(53),
        protocol: Some(protocol.into()),
        app_protocol: None,
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(node)),
            namespace: Some(KUBE_DNS_NAMESPACE.into()),
            labels: Some(labels),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![addr.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some(node.into()),
            ..Default::default()
        }],
        ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
    }
}

/// Creates or updates `node`'s slice so it names `addr`.
pub async fn publish(
    client: kube::Client,
    node: &str,
    addr: Ipv4Addr,
) -> Result<(), DnsEndpointError> {
    let api: Api<EndpointSlice> = Api::namespaced(client, KUBE_DNS_NAMESPACE);
    let name = slice_name(node);
    let err = |op| {
        let name = name.clone();
        move |source| DnsEndpointError::Api { op, name, source }
    };
    let mut want = desired_slice(node, addr);
    match api.get_opt(&name).await.map_err(err("get"))? {
        None => {
            api.create(&PostParams::default(), &want)
                .await
                .map_err(err("create"))?;
        }
        Some(have) if have.endpoints == want.endpoints && have.ports == want.ports => {}
        Some(have) => {
            want.metadata.resource_version = have.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &want)
                .await
                .map_err(err("replace"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_names_the_node_and_both_protocols() {
        let slice = desired_slice("n1", Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(slice.metadata.name.as_deref(), Some("kube-dns-n1"));
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "kube-dns");
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], MANAGED_BY);
        assert_eq!(slice.endpoints[0].addresses, vec!["10.244.3.1"]);
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("n1"));
        let ports = slice.ports.unwrap();
        let protos: Vec<_> = ports
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.protocol.clone().unwrap()))
            .collect();
        assert_eq!(
            protos,
            vec![
                ("dns".into(), "UDP".into()),
                ("dns-tcp".into(), "TCP".into())
            ]
        );
    }
}
