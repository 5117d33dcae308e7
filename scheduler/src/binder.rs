//! The scheduler's writes: a pod's binding (`pods/binding`), and for a pod no node fits, its
//! PodScheduled=False condition (status subresource) and a FailedScheduling Event.

use berth_api::k8s_openapi::api::core::v1 as core;
use berth_api::k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

/// The component name kube-scheduler reports in Events and as field manager.
pub const COMPONENT: &str = "default-scheduler";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("binding pod {namespace}/{name} to node {node}")]
    Bind {
        namespace: String,
        name: String,
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("setting PodScheduled=False on pod {namespace}/{name}")]
    Condition {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("recording a FailedScheduling event for pod {namespace}/{name}")]
    Event {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

fn meta(pod: &core::Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// POSTs a Binding of `pod` to `node`; the pod's uid guards against binding a re-created pod of
/// the same name.
pub async fn bind(client: Client, pod: &core::Pod, node: &str) -> Result<(), WriteError> {
    let (namespace, name) = meta(pod);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let api: Api<core::Pod> = Api::namespaced(client, &namespace);
    let res: Result<serde_json::Value, kube::Error> = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    res.map(|_| ()).map_err(|source| WriteError::Bind {
        namespace,
        name,
        node: node.to_string(),
        source,
    })
}

/// The message of the pod's PodScheduled=False condition, if it has one.
pub fn unschedulable_message(pod: &core::Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .and_then(|c| c.message.as_deref())
}

/// Sets PodScheduled=False reason Unschedulable with `message`, then records the Event.
pub async fn report_unschedulable(
    client: Client,
    pod: &core::Pod,
    message: &str,
) -> Result<(), WriteError> {
    let (namespace, name) = meta(pod);
    let now = Timestamp::now().to_string();
    let was_false = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| Some((c.status == "False", c.last_transition_time.clone()?)));
    // The transition time moves only when the status does.
    let transition = match &was_false {
        Some((true, t)) => serde_json::to_value(t).unwrap_or(json!(now)),
        _ => json!(now),
    };
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }]}});
    let pods: Api<core::Pod> = Api::namespaced(client.clone(), &namespace);
    pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(|source| WriteError::Condition {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    let nanos = Timestamp::now().as_nanosecond();
    let event = json!({
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": namespace,
            "name": name,
            "uid": pod.metadata.uid,
            "resourceVersion": pod.metadata.resource_version,
        },
        "reason": "FailedScheduling",
        "message": message,
        "type": "Warning",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "action": "Scheduling",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let event: core::Event = serde_json::from_value(event).map_err(|e| WriteError::Event {
        namespace: namespace.clone(),
        name: name.clone(),
        source: kube::Error::SerdeError(e),
    })?;
    Api::<core::Event>::namespaced(client, &namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
        .map_err(|source| WriteError::Event {
            namespace,
            name,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_unschedulable_message() {
        let pod: core::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [
                {"type": "Ready", "status": "False", "message": "not this"},
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient cpu."}
            ]}
        }))
        .unwrap();
        assert_eq!(
            unschedulable_message(&pod),
            Some("0/3 nodes are available: 3 Insufficient cpu.")
        );
        let scheduled: core::Pod = serde_json::from_value(json!({
            "status": {"conditions": [{"type": "PodScheduled", "status": "True", "message": "x"}]}
        }))
        .unwrap();
        assert_eq!(unschedulable_message(&scheduled), None);
    }
}
