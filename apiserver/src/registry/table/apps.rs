//! Rows of the apps/v1 kinds: Deployment, ReplicaSet, DaemonSet, StatefulSet.

use super::format::{
    arr_at, at, container_cells, format_label_selector, format_labels, int_at, label_selector,
    opt_int_at, since, str_at, time_at, Millis,
};
use super::ColumnDefinition as Col;
use serde_json::{json, Value};

const RS_REPLICAS_DOC: &str = "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller";
const RS_STATUS_REPLICAS_DOC: &str = "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller";
const RS_READY_DOC: &str = "The number of ready replicas for this replica set.";
const RS_SELECTOR_DOC: &str = "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const DS_DESIRED_DOC: &str = "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const DS_CURRENT_DOC: &str = "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const DS_READY_DOC: &str = "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.";
const DS_UPDATED_DOC: &str = "The total number of nodes that are running updated daemon pod";
const DS_AVAILABLE_DOC: &str = "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)";
const NODE_SELECTOR_DOC: &str = "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/";
const DS_SELECTOR_DOC: &str = "A label query over pods that are managed by the daemon set. Must match in order to be controlled. If empty, defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const READY_PODS_DOC: &str = "Number of the pod with ready state";
const DEPLOY_UPDATED_DOC: &str =
    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.";
const DEPLOY_AVAILABLE_DOC: &str =
    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.";
const DEPLOY_SELECTOR_DOC: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

fn age(obj: &Value, now: Millis) -> Value {
    json!(since(time_at(obj, &["metadata", "creationTimestamp"]), now))
}

/// `spec.replicas`, which defaulting sets to 1 when absent.
fn desired(obj: &Value) -> i64 {
    opt_int_at(obj, &["spec", "replicas"]).unwrap_or(1)
}

fn pod_spec(obj: &Value) -> &Value {
    at(obj, &["spec", "template", "spec"])
}

pub(super) fn deployment_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Ready", READY_PODS_DOC),
        Col::string("Up-to-date", DEPLOY_UPDATED_DOC),
        Col::string("Available", DEPLOY_AVAILABLE_DOC),
        Col::age(),
        Col::containers(),
        Col::images(),
        Col::string("Selector", DEPLOY_SELECTOR_DOC).wide(),
    ]
}

pub(super) fn deployment_cells(d: &Value, now: Millis) -> Vec<Value> {
    let (names, images) = container_cells(pod_spec(d));
    // Unlike the other kinds, an empty selector prints as "", not "<none>".
    let selector =
        label_selector(at(d, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name(d),
        json!(format!(
            "{}/{}",
            int_at(d, &["status", "readyReplicas"]),
            desired(d)
        )),
        json!(int_at(d, &["status", "updatedReplicas"])),
        json!(int_at(d, &["status", "availableReplicas"])),
        age(d, now),
        json!(names),
        json!(images),
        json!(selector),
    ]
}

pub(super) fn replica_set_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::integer("Desired", RS_REPLICAS_DOC),
        Col::integer("Current", RS_STATUS_REPLICAS_DOC),
        Col::integer("Ready", RS_READY_DOC),
        Col::age(),
        Col::containers(),
        Col::images(),
        Col::string("Selector", RS_SELECTOR_DOC).wide(),
    ]
}

pub(super) fn replica_set_cells(rs: &Value, now: Millis) -> Vec<Value> {
    let (names, images) = container_cells(pod_spec(rs));
    vec![
        name(rs),
        json!(desired(rs)),
        json!(int_at(rs, &["status", "replicas"])),
        json!(int_at(rs, &["status", "readyReplicas"])),
        age(rs, now),
        json!(names),
        json!(images),
        json!(format_label_selector(at(rs, &["spec", "selector"]))),
    ]
}

pub(super) fn daemon_set_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::integer("Desired", DS_DESIRED_DOC),
        Col::integer("Current", DS_CURRENT_DOC),
        Col::integer("Ready", DS_READY_DOC),
        Col::integer("Up-to-date", DS_UPDATED_DOC),
        Col::integer("Available", DS_AVAILABLE_DOC),
        Col::string("Node Selector", NODE_SELECTOR_DOC),
        Col::age(),
        Col::containers(),
        Col::images(),
        Col::string("Selector", DS_SELECTOR_DOC).wide(),
    ]
}

pub(super) fn daemon_set_cells(ds: &Value, now: Millis) -> Vec<Value> {
    let (names, images) = container_cells(pod_spec(ds));
    let status = |field: &str| json!(int_at(ds, &["status", field]));
    vec![
        name(ds),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        json!(format_labels(at(pod_spec(ds), &["nodeSelector"]))),
        age(ds, now),
        json!(names),
        json!(images),
        json!(format_label_selector(at(ds, &["spec", "selector"]))),
    ]
}

pub(super) fn stateful_set_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Ready", READY_PODS_DOC),
        Col::age(),
        Col::containers(),
        Col::images(),
    ]
}

pub(super) fn stateful_set_cells(sts: &Value, now: Millis) -> Vec<Value> {
    let (names, images) = container_cells(pod_spec(sts));
    vec![
        name(sts),
        json!(format!(
            "{}/{}",
            int_at(sts, &["status", "readyReplicas"]),
            desired(sts)
        )),
        age(sts, now),
        json!(names),
        json!(images),
    ]
}

const CR_CONTROLLER_DOC: &str = "Controller of the object";
const CR_REVISION_DOC: &str = "Revision indicates the revision of the state represented by Data.";

pub(super) fn controller_revision_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Controller", CR_CONTROLLER_DOC),
        Col::integer("Revision", CR_REVISION_DOC),
        Col::age(),
    ]
}

/// `CONTROLLER` is `<kind>.<group>/<name>` of the controlling owner, as kubectl prints it.
pub(super) fn controller_revision_cells(cr: &Value, now: Millis) -> Vec<Value> {
    let owner = arr_at(cr, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            let kind = str_at(r, &["kind"]).to_lowercase();
            let group = str_at(r, &["apiVersion"])
                .rsplit_once('/')
                .map(|(g, _)| g.to_string())
                .unwrap_or_default();
            let resource = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            format!("{resource}/{}", str_at(r, &["name"]))
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        name(cr),
        json!(owner),
        json!(int_at(cr, &["revision"])),
        age(cr, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::format::parse_time;
    use super::*;

    fn now() -> Millis {
        parse_time("2024-05-01T12:00:00Z").expect("now")
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "app", "image": "nginx:1.27"},
                                       {"name": "log", "image": "busybox:1.36"}]}})
    }

    #[test]
    fn deployment_mid_rollout() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-04-30T06:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": template()},
            "status": {"replicas": 4, "updatedReplicas": 1, "readyReplicas": 3,
                       "availableReplicas": 3, "unavailableReplicas": 1}
        });
        assert_eq!(
            deployment_cells(&d, now()),
            vec![
                json!("web"),
                json!("3/3"),
                json!(1),
                json!(3),
                json!("30h"),
                json!("app,log"),
                json!("nginx:1.27,busybox:1.36"),
                json!("app=web"),
            ]
        );
        let fresh = json!({"metadata": {"name": "new"}, "spec": {"selector": {}}});
        let c = deployment_cells(&fresh, now());
        assert_eq!(
            (&c[1], &c[2], &c[7]),
            (&json!("0/1"), &json!(0), &json!(""))
        );
        let bad =
            json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}});
        assert_eq!(deployment_cells(&bad, now())[7], json!("<invalid>"));
    }

    #[test]
    fn replica_set() {
        let rs = json!({
            "metadata": {"name": "web-5d8f", "creationTimestamp": "2024-05-01T11:58:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8f"}},
                     "template": template()},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        assert_eq!(
            replica_set_cells(&rs, now()),
            vec![
                json!("web-5d8f"),
                json!(2),
                json!(2),
                json!(1),
                json!("2m"),
                json!("app,log"),
                json!("nginx:1.27,busybox:1.36"),
                json!("app=web,pod-template-hash=5d8f"),
            ]
        );
        assert_eq!(
            replica_set_cells(&rs, now()).len(),
            replica_set_columns().len()
        );
    }

    #[test]
    fn daemon_set() {
        let mut tpl = template();
        tpl["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        let ds = json!({
            "metadata": {"name": "agent", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": tpl},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                       "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}
        });
        assert_eq!(
            daemon_set_cells(&ds, now()),
            vec![
                json!("agent"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux"),
                json!("60m"),
                json!("app,log"),
                json!("nginx:1.27,busybox:1.36"),
                json!("app=agent"),
            ]
        );
        let bare = json!({"metadata": {"name": "x"}});
        assert_eq!(daemon_set_cells(&bare, now())[6], json!("<none>"));
        assert_eq!(daemon_set_cells(&bare, now())[10], json!("<none>"));
    }

    #[test]
    fn stateful_set() {
        let sts = json!({
            "metadata": {"name": "db", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"replicas": 3, "template": template()},
            "status": {"replicas": 3, "readyReplicas": 2}
        });
        assert_eq!(
            stateful_set_cells(&sts, now()),
            vec![
                json!("db"),
                json!("2/3"),
                json!("60s"),
                json!("app,log"),
                json!("nginx:1.27,busybox:1.36"),
            ]
        );
        let zero = json!({"spec": {"replicas": 0}});
        assert_eq!(stateful_set_cells(&zero, now())[1], json!("0/0"));
    }

    #[test]
    fn controller_revision() {
        let now = super::super::format::parse_time("2024-05-01T12:00:00Z").expect("now");
        let cr = json!({
            "metadata": {"name": "web-7c5ddbdf54", "creationTimestamp": "2024-05-01T11:00:00Z",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                              "name": "web", "uid": "u", "controller": true}]},
            "data": {}, "revision": 2
        });
        assert_eq!(
            controller_revision_cells(&cr, now),
            vec![
                json!("web-7c5ddbdf54"),
                json!("statefulset.apps/web"),
                json!(2),
                json!("60m")
            ]
        );
    }
}
