//! Well-known label, annotation, taint and finalizer names that Kubernetes components and
//! kubectl agree on. Spelled exactly as upstream; components must use these, not literals.

/// Labels set on nodes, pods and other objects.
pub mod labels {
    /// The node's hostname, set by the kubelet.
    pub const HOSTNAME: &str = "kubernetes.io/hostname";
    /// `linux` or `windows` (Go's `GOOS`), set by the kubelet.
    pub const OS: &str = "kubernetes.io/os";
    /// `amd64`, `arm64`, … (Go's `GOARCH`), set by the kubelet.
    pub const ARCH: &str = "kubernetes.io/arch";
    /// Prefix of node role labels; kubectl shows the rest as the node's role.
    pub const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
    pub const NODE_ROLE_CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
    pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
    pub const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
    pub const TOPOLOGY_REGION: &str = "topology.kubernetes.io/region";
    pub const EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: &str =
        "node.kubernetes.io/exclude-from-external-load-balancers";
    /// Set on every namespace to its own name.
    pub const METADATA_NAME: &str = "kubernetes.io/metadata.name";

    /// Added by the Deployment controller to its ReplicaSets' selectors and pod templates.
    pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
    /// Added by the StatefulSet and DaemonSet controllers to their pods.
    pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
    pub const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
    pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

    /// Job pod labels; the Job controller sets both the prefixed and the legacy forms.
    pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
    pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
    pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
    pub const LEGACY_JOB_NAME: &str = "job-name";
    pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

    /// On EndpointSlices: the Service they belong to.
    pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
    /// On EndpointSlices: who manages them.
    pub const ENDPOINTSLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
    /// The `ENDPOINTSLICE_MANAGED_BY` value of the built-in EndpointSlice controller.
    pub const ENDPOINTSLICE_CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
    /// On EndpointSlices of Services without a cluster IP.
    pub const SERVICE_HEADLESS: &str = "service.kubernetes.io/headless";
    /// On Services: handled by a proxy other than the default one.
    pub const SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";

    /// Recommended application labels.
    pub const APP_NAME: &str = "app.kubernetes.io/name";
    pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
    pub const APP_VERSION: &str = "app.kubernetes.io/version";
    pub const APP_COMPONENT: &str = "app.kubernetes.io/component";
    pub const APP_PART_OF: &str = "app.kubernetes.io/part-of";
    pub const APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}

/// Annotations read or written by controllers, the kubelet and kubectl.
pub mod annotations {
    /// Written by `kubectl apply` (client-side) with the applied manifest.
    pub const LAST_APPLIED_CONFIGURATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
    /// Set on a pod template by `kubectl rollout restart`.
    pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
    /// The container `kubectl logs/exec` picks when none is named.
    pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
    /// Recorded by `kubectl --record` (deprecated) and shown by `kubectl rollout history`.
    pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

    /// Deployment controller bookkeeping on Deployments and ReplicaSets.
    pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
    pub const DEPLOYMENT_REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
    pub const DEPLOYMENT_DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
    pub const DEPLOYMENT_MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

    /// ReplicaSet scale-down preference, an integer (lower goes first).
    pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
    pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
    /// On Endpoints/EndpointSlices: when the last change that triggered an update happened.
    pub const ENDPOINTS_LAST_CHANGE_TRIGGER_TIME: &str =
        "endpoints.kubernetes.io/last-change-trigger-time";

    /// Static (mirror) pods.
    pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
    pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
    pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
    pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";

    /// On service-account token Secrets.
    pub const SERVICE_ACCOUNT_NAME: &str = "kubernetes.io/service-account.name";
    pub const SERVICE_ACCOUNT_UID: &str = "kubernetes.io/service-account.uid";

    pub const NODE_TTL: &str = "node.alpha.kubernetes.io/ttl";
}

/// Node taint keys set by the node lifecycle controller and the kubelet, and taint effects.
pub mod taints {
    pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
    pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    /// Mirrors `spec.unschedulable` (`kubectl cordon`).
    pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
    pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
    pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
    pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
    pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
    pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
    pub const UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";
    pub const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";

    pub const EFFECT_NO_SCHEDULE: &str = "NoSchedule";
    pub const EFFECT_PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
    pub const EFFECT_NO_EXECUTE: &str = "NoExecute";

    /// `tolerationSeconds` of the not-ready/unreachable tolerations that the
    /// DefaultTolerationSeconds admission plugin adds to every pod.
    pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
}

/// Finalizers with built-in meaning.
pub mod finalizers {
    /// In a Namespace's `spec.finalizers`: the namespace controller must empty it first.
    pub const NAMESPACE: &str = "kubernetes";
    /// Set by foreground cascading deletion.
    pub const FOREGROUND_DELETION: &str = "foregroundDeletion";
    /// Set by orphaning deletion.
    pub const ORPHAN: &str = "orphan";
    pub const JOB_TRACKING: &str = "batch.kubernetes.io/job-tracking";
    pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
    pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::is_qualified_name as validate_label_key;

    #[test]
    fn keys_are_valid_label_keys() {
        let keys = [
            labels::HOSTNAME,
            labels::OS,
            labels::ARCH,
            labels::NODE_ROLE_CONTROL_PLANE,
            labels::INSTANCE_TYPE,
            labels::TOPOLOGY_ZONE,
            labels::TOPOLOGY_REGION,
            labels::EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS,
            labels::METADATA_NAME,
            labels::POD_TEMPLATE_HASH,
            labels::CONTROLLER_REVISION_HASH,
            labels::STATEFULSET_POD_NAME,
            labels::POD_INDEX,
            labels::JOB_CONTROLLER_UID,
            labels::JOB_NAME,
            labels::LEGACY_CONTROLLER_UID,
            labels::LEGACY_JOB_NAME,
            labels::JOB_COMPLETION_INDEX,
            labels::SERVICE_NAME,
            labels::ENDPOINTSLICE_MANAGED_BY,
            labels::SERVICE_HEADLESS,
            labels::SERVICE_PROXY_NAME,
            labels::APP_NAME,
            labels::APP_MANAGED_BY,
            annotations::LAST_APPLIED_CONFIGURATION,
            annotations::RESTARTED_AT,
            annotations::DEPLOYMENT_REVISION,
            annotations::POD_DELETION_COST,
            annotations::CONFIG_MIRROR,
            annotations::ENDPOINTS_LAST_CHANGE_TRIGGER_TIME,
            taints::NOT_READY,
            taints::UNREACHABLE,
            taints::UNSCHEDULABLE,
            taints::MEMORY_PRESSURE,
            taints::DISK_PRESSURE,
            taints::PID_PRESSURE,
            taints::NETWORK_UNAVAILABLE,
            taints::OUT_OF_SERVICE,
            taints::UNINITIALIZED,
            taints::CONTROL_PLANE,
            finalizers::JOB_TRACKING,
            finalizers::PV_PROTECTION,
        ];
        for key in keys {
            assert_eq!(validate_label_key(key), Vec::<String>::new(), "{key}");
        }
    }

    #[test]
    fn role_prefix_builds_role_labels() {
        assert_eq!(
            format!("{}control-plane", labels::NODE_ROLE_PREFIX),
            labels::NODE_ROLE_CONTROL_PLANE
        );
        assert_eq!(taints::CONTROL_PLANE, labels::NODE_ROLE_CONTROL_PLANE);
        assert_eq!(
            labels::JOB_COMPLETION_INDEX,
            annotations::JOB_COMPLETION_INDEX
        );
    }
}
