//! The node's heartbeat: a Lease in `kube-node-lease` named after the node, held by it, owned
//! by its Node (so it goes with it), its `renewTime` moved on every renewal. Like the kubelet's
//! nodelease controller it updates from the last Lease it wrote and only reads the Lease again
//! after a conflict, so a renewal is one write.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{is_status, NodeError, NODE_LEASE_NAMESPACE};

/// Update attempts per renewal (the kubelet's `maxUpdateRetries`).
const MAX_ATTEMPTS: usize = 5;

/// The owner reference the kubelet puts on its Lease.
pub fn node_owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.into(),
        uid: uid.into(),
        ..Default::default()
    }
}

/// `lease` renewed at `now` by `node` for `duration_seconds`.
pub fn renewed(mut lease: Lease, node: &str, duration_seconds: i32, now: Timestamp) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node.to_string());
    spec.lease_duration_seconds = Some(duration_seconds);
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// Renews one node's Lease, keeping the last one written.
pub struct LeaseRenewer {
    leases: Api<Lease>,
    nodes: Api<Node>,
    name: String,
    duration_seconds: i32,
    latest: Option<Lease>,
}

impl LeaseRenewer {
    pub fn new(client: kube::Client, name: &str, duration_seconds: i32) -> LeaseRenewer {
        LeaseRenewer {
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            nodes: Api::all(client),
            name: name.to_string(),
            duration_seconds,
            latest: None,
        }
    }

    /// The Lease as last written.
    pub fn latest(&self) -> Option<&Lease> {
        self.latest.as_ref()
    }

    /// Moves `renewTime` to now: an update from the last Lease written, re-read after a
    /// conflict, created when missing.
    pub async fn renew(&mut self) -> Result<(), NodeError> {
        for _ in 0..MAX_ATTEMPTS {
            let base = match self.latest.take() {
                Some(lease) => lease,
                None => match self.leases.get_opt(&self.name).await {
                    Ok(Some(lease)) => lease,
                    Ok(None) => {
                        if self.create().await? {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) => {
                        return Err(NodeError::api("getting the lease of node", &self.name)(e))
                    }
                },
            };
            let mut lease = renewed(base, &self.name, self.duration_seconds, Timestamp::now());
            if lease
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty())
            {
                if let Some(owner) = self.owner().await? {
                    lease.metadata.owner_references = Some(vec![owner]);
                }
            }
            match self
                .leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(written) => {
                    self.latest = Some(written);
                    return Ok(());
                }
                // Someone else wrote it (or deleted it): read it again (or create it).
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => continue,
                Err(e) => return Err(NodeError::api("renewing the lease of node", &self.name)(e)),
            }
        }
        Err(NodeError::Conflicts {
            op: "renewing the lease of node",
            name: self.name.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The Node's owner reference, or None while the Node does not exist (the Lease is then
    /// written without one, and gets it on a later renewal).
    async fn owner(&self) -> Result<Option<OwnerReference>, NodeError> {
        let node = self
            .nodes
            .get_opt(&self.name)
            .await
            .map_err(NodeError::api("getting node", &self.name))?;
        Ok(node
            .and_then(|n| n.metadata.uid)
            .map(|uid| node_owner(&self.name, &uid)))
    }

    /// Creates the Lease; false when another writer created it first.
    async fn create(&mut self) -> Result<bool, NodeError> {
        let base = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(NODE_LEASE_NAMESPACE.into()),
                owner_references: self.owner().await?.map(|o| vec![o]),
                ..Default::default()
            },
            spec: None,
        };
        let lease = renewed(base, &self.name, self.duration_seconds, Timestamp::now());
        match self.leases.create(&PostParams::default(), &lease).await {
            Ok(written) => {
                self.latest = Some(written);
                Ok(true)
            }
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(NodeError::api("creating the lease of node", &self.name)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_sets_holder_duration_and_time() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let lease = renewed(Lease::default(), "n1", 40, now);
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        let owner = node_owner("n1", "uid-1");
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.uid.as_str()
            ),
            ("v1", "Node", "uid-1")
        );
        assert_eq!(owner.controller, None);
    }
}
