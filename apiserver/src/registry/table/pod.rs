//! Pod rows: READY, the aggregate STATUS (Running, ContainerCreating, CrashLoopBackOff,
//! Init:0/1, Completed, Terminating, ...) and RESTARTS, computed the way Kubernetes does.

use super::format::{arr_at, at, bool_at, int_at, is_set, since, str_at, time_at, Millis};
use super::{ColumnDefinition as Col, Row};
use serde_json::{json, Value};

const POD_IP_DOC: &str =
    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const NODE_NAME_DOC: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const NOMINATED_NODE_DOC: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const READINESS_GATES_DOC: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";

/// The reason the node lifecycle controller gives pods on a node that stopped reporting.
const NODE_LOST: &str = "NodeLost";

pub(super) fn columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string(
            "Ready",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        Col::string(
            "Status",
            "The aggregate status of the containers in this pod.",
        ),
        Col::string(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        Col::age(),
        Col::string("IP", POD_IP_DOC).wide(),
        Col::string("Node", NODE_NAME_DOC).wide(),
        Col::string("Nominated Node", NOMINATED_NODE_DOC).wide(),
        Col::string("Readiness Gates", READINESS_GATES_DOC).wide(),
    ]
}

/// Whether a condition of `type_` has status "True".
fn condition_true(status: &Value, type_: &str) -> bool {
    arr_at(status, &["conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == type_ && str_at(c, &["status"]) == "True")
}

/// Keeps the later of two restart times.
fn later(last: &mut Option<Millis>, t: Option<Millis>) {
    if let Some(t) = t {
        if last.is_none_or(|l| l < t) {
            *last = Some(t);
        }
    }
}

/// The reason of a terminated state without one: "Signal:9" or "ExitCode:1".
fn exit_reason(terminated: &Value) -> String {
    let signal = int_at(terminated, &["signal"]);
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int_at(terminated, &["exitCode"]))
    }
}

pub(super) fn row(pod: &Value, now: Millis) -> Row {
    let spec = at(pod, &["spec"]);
    let status = at(pod, &["status"]);
    let init_specs = arr_at(spec, &["initContainers"]);
    // Sidecars: init containers that keep running beside the main ones.
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| str_at(c, &["name"]) == name && str_at(c, &["restartPolicy"]) == "Always")
    };

    let sidecars = init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .count();
    let total = arr_at(spec, &["containers"]).len() + sidecars;
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<Millis> = None;
    let mut last_sidecar_restart: Option<Millis> = None;

    let phase = str_at(status, &["phase"]);
    let mut reason = match str_at(status, &["reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if arr_at(status, &["conditions"]).iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, c) in arr_at(status, &["initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let sidecar = is_sidecar(str_at(c, &["name"]));
        let count = int_at(c, &["restartCount"]);
        let finished = time_at(c, &["lastState", "terminated", "finishedAt"]);
        restarts += count;
        later(&mut last_restart, finished);
        if sidecar {
            sidecar_restarts += count;
            later(&mut last_sidecar_restart, finished);
        }
        let terminated = at(c, &["state", "terminated"]);
        let waiting_reason = str_at(c, &["state", "waiting", "reason"]);
        if !terminated.is_null() && int_at(terminated, &["exitCode"]) == 0 {
            continue;
        }
        if sidecar && bool_at(c, &["started"]) {
            if bool_at(c, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        reason = if !terminated.is_null() {
            match str_at(terminated, &["reason"]) {
                "" => format!("Init:{}", exit_reason(terminated)),
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(status, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Walked backwards so that the first container's state decides the reason.
        for c in arr_at(status, &["containerStatuses"]).iter().rev() {
            restarts += int_at(c, &["restartCount"]);
            later(
                &mut last_restart,
                time_at(c, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = str_at(c, &["state", "waiting", "reason"]);
            let terminated = at(c, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if !terminated.is_null() {
                reason = match str_at(terminated, &["reason"]) {
                    "" => exit_reason(terminated),
                    r => r.to_string(),
                };
            } else if bool_at(c, &["ready"]) && is_set(c, &["state", "running"]) {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(status, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = is_set(pod, &["metadata", "deletionTimestamp"]);
    if deleting && str_at(status, &["reason"]) == NODE_LOST {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let ip = match str_at(status, &["podIP"]) {
        "" => match arr_at(status, &["podIPs"])
            .first()
            .map(|p| str_at(p, &["ip"]))
        {
            Some(ip) if !ip.is_empty() => ip,
            _ => "<none>",
        },
        ip => ip,
    };
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let gates = arr_at(spec, &["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let met = gates
            .iter()
            .filter(|g| {
                // Only the first condition of the gate's type counts, as in Kubernetes.
                arr_at(status, &["conditions"])
                    .iter()
                    .find(|c| str_at(c, &["type"]) == str_at(g, &["conditionType"]))
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };

    let cells = vec![
        json!(str_at(pod, &["metadata", "name"])),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(since(time_at(pod, &["metadata", "creationTimestamp"]), now)),
        json!(ip),
        json!(or_none(str_at(spec, &["nodeName"]))),
        json!(or_none(str_at(status, &["nominatedNodeName"]))),
        json!(readiness_gates),
    ];
    let conditions = match phase {
        "Succeeded" => vec![completed_condition(
            "Succeeded",
            "The pod has completed successfully.",
        )],
        "Failed" => vec![completed_condition("Failed", "The pod failed.")],
        _ => Vec::new(),
    };
    Row { cells, conditions }
}

/// The `Completed` row condition kubectl may use to de-emphasise finished pods.
fn completed_condition(reason: &str, message: &str) -> Value {
    json!({"type": "Completed", "status": "True", "reason": reason, "message": message})
}

#[cfg(test)]
mod tests {
    use super::super::format::parse_time;
    use super::*;

    fn now() -> Millis {
        parse_time("2024-05-01T12:00:00Z").expect("now")
    }

    fn cells(pod: &Value) -> Vec<Value> {
        row(pod, now()).cells
    }

    fn base(status: Value) -> Value {
        json!({
            "metadata": {"name": "web-0", "namespace": "default",
                         "creationTimestamp": "2024-05-01T11:50:00Z"},
            "spec": {"nodeName": "node-a", "containers": [
                {"name": "app", "image": "nginx"}, {"name": "log", "image": "busybox"}]},
            "status": status,
        })
    }

    #[test]
    fn running_pod_two_of_two_ready_with_a_restart() {
        let pod = base(json!({
            "phase": "Running",
            "podIP": "10.42.0.7",
            "podIPs": [{"ip": "10.42.0.7"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 1,
                 "state": {"running": {"startedAt": "2024-05-01T11:55:00Z"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:55:00Z"}}},
                {"name": "log", "ready": true, "restartCount": 0,
                 "state": {"running": {"startedAt": "2024-05-01T11:50:05Z"}}}
            ]
        }));
        assert_eq!(
            cells(&pod),
            vec![
                json!("web-0"),
                json!("2/2"),
                json!("Running"),
                json!("1 (5m ago)"),
                json!("10m"),
                json!("10.42.0.7"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        assert!(row(&pod, now()).conditions.is_empty());
    }

    #[test]
    fn crash_loop_back_off() {
        let pod = base(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 4,
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                              "finishedAt": "2024-05-01T11:59:30Z"}}},
                {"name": "log", "ready": true, "restartCount": 0,
                 "state": {"running": {}}}
            ]
        }));
        let c = cells(&pod);
        assert_eq!(c[1], json!("1/2"));
        assert_eq!(c[2], json!("CrashLoopBackOff"));
        assert_eq!(c[3], json!("4 (30s ago)"));
        assert_eq!(c[5], json!("<none>"));
    }

    #[test]
    fn terminating_pod_and_lost_node() {
        let mut pod = base(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "log", "ready": true, "restartCount": 0, "state": {"running": {}}}
            ]
        }));
        pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:50Z");
        assert_eq!(cells(&pod)[2], json!("Terminating"));
        assert_eq!(cells(&pod)[1], json!("2/2"));

        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(&pod)[2], json!("Unknown"));

        // Without a deletion the controller's reason shows as is.
        pod["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("deletionTimestamp");
        pod["status"]["containerStatuses"] = json!([]);
        assert_eq!(cells(&pod)[2], json!("NodeLost"));
    }

    #[test]
    fn pending_and_container_creating() {
        let pending = base(json!({"phase": "Pending"}));
        let c = cells(&pending);
        assert_eq!(
            (&c[1], &c[2], &c[3]),
            (&json!("0/2"), &json!("Pending"), &json!("0"))
        );

        let creating = base(json!({
            "phase": "Pending",
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "log", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]
        }));
        assert_eq!(cells(&creating)[2], json!("ContainerCreating"));
    }

    #[test]
    fn init_containers() {
        let mut pod = base(json!({
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "migrate", "ready": false, "restartCount": 0,
                 "state": {"running": {}}}
            ],
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "PodInitializing"}}}
            ]
        }));
        pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "tool"}]);
        assert_eq!(cells(&pod)[2], json!("Init:0/1"));

        pod["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 2}});
        pod["status"]["initContainerStatuses"][0]["restartCount"] = json!(3);
        let c = cells(&pod);
        assert_eq!(c[2], json!("Init:ExitCode:2"));
        // Restarts of a failing init container count while it initializes.
        assert_eq!(c[3], json!("3"));

        pod["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(cells(&pod)[2], json!("Init:CrashLoopBackOff"));
    }

    #[test]
    fn sidecar_counts_toward_ready_and_total() {
        let mut pod = base(json!({
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"},
                           {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [
                {"name": "proxy", "ready": true, "started": true, "restartCount": 2,
                 "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 137, "finishedAt": "2024-05-01T11:58:00Z"}}}
            ],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "log", "ready": true, "restartCount": 0, "state": {"running": {}}}
            ]
        }));
        pod["spec"]["initContainers"] =
            json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
        let c = cells(&pod);
        assert_eq!(c[1], json!("3/3"));
        assert_eq!(c[2], json!("Running"));
        assert_eq!(c[3], json!("2 (2m ago)"));
    }

    #[test]
    fn completed_and_failed_pods() {
        let done = base(json!({
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "log", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]
        }));
        let r = row(&done, now());
        assert_eq!(r.cells[1], json!("0/2"));
        assert_eq!(r.cells[2], json!("Completed"));
        assert_eq!(
            r.conditions,
            vec![
                json!({"type": "Completed", "status": "True", "reason": "Succeeded",
                        "message": "The pod has completed successfully."})
            ]
        );

        let mut failed = base(json!({
            "phase": "Failed",
            "containerStatuses": [
                {"name": "app", "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "signal": 9}}}
            ]
        }));
        // A finished pod being deleted keeps its final status.
        failed["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        let r = row(&failed, now());
        assert_eq!(r.cells[2], json!("Signal:9"));
        assert_eq!(r.conditions[0]["reason"], json!("Failed"));
    }

    #[test]
    fn completed_container_beside_a_running_one() {
        let pod = base(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "log", "ready": true, "restartCount": 0, "state": {"running": {}}}
            ]
        }));
        assert_eq!(cells(&pod)[2], json!("NotReady"));
    }

    #[test]
    fn wide_cells_scheduling_gate_and_readiness_gates() {
        let mut pod = base(json!({
            "phase": "Pending",
            "nominatedNodeName": "node-b",
            "podIPs": [{"ip": "fd00::7"}],
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"},
                {"type": "example.com/lb", "status": "True"}
            ]
        }));
        pod["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("nodeName");
        pod["spec"]["readinessGates"] = json!([
            {"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}
        ]);
        let c = cells(&pod);
        assert_eq!(c[2], json!("SchedulingGated"));
        assert_eq!(
            &c[5..],
            &[
                json!("fd00::7"),
                json!("<none>"),
                json!("node-b"),
                json!("1/2")
            ]
        );
        assert_eq!(c.len(), columns().len());
    }
}
