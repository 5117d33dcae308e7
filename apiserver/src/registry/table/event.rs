//! Rows of core/v1 Event: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE (and the wide columns).

use super::format::{at, int_at, opt_int_at, since, str_at, time_at, Millis};
use super::ColumnDefinition as Col;
use serde_json::{json, Value};

const EVENT_LAST_DOC: &str =
    "The time at which the most recent occurrence of this event was recorded.";
const EVENT_TYPE_DOC: &str =
    "Type of this event (Normal, Warning), new types could be added in the future";
const EVENT_REASON_DOC: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const EVENT_OBJECT_DOC: &str = "The object that this event is about.";
const FIELD_PATH_DOC: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const EVENT_SOURCE_DOC: &str =
    "The component reporting this event. Should be a short machine understandable string.";
const EVENT_MESSAGE_DOC: &str = "A human-readable description of the status of this operation.";
const EVENT_FIRST_DOC: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const EVENT_COUNT_DOC: &str = "The number of times this event has occurred.";

/// Event columns: unlike other kinds, NAME comes last and only with `-o wide`.
pub(super) fn event_columns() -> Vec<Col> {
    vec![
        Col::string("Last Seen", EVENT_LAST_DOC),
        Col::string("Type", EVENT_TYPE_DOC),
        Col::string("Reason", EVENT_REASON_DOC),
        Col::string("Object", EVENT_OBJECT_DOC),
        Col::string("Subobject", FIELD_PATH_DOC).wide(),
        Col::string("Source", EVENT_SOURCE_DOC).wide(),
        Col::string("Message", EVENT_MESSAGE_DOC),
        Col::string("First Seen", EVENT_FIRST_DOC).wide(),
        Col::string("Count", EVENT_COUNT_DOC).wide(),
        Col::name().wide(),
    ]
}

/// "component, host", falling back to the reporting controller and instance.
fn event_source(ev: &Value) -> String {
    let first = |a: &[&str], b: &[&str]| match str_at(ev, a) {
        "" => str_at(ev, b).to_string(),
        v => v.to_string(),
    };
    let component = first(&["source", "component"], &["reportingComponent"]);
    let instance = first(&["source", "host"], &["reportingInstance"]);
    if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    }
}

pub(super) fn event_cells(ev: &Value, now: Millis) -> Vec<Value> {
    let first_seen = match time_at(ev, &["firstTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => since(time_at(ev, &["eventTime"]), now),
    };
    let mut last_seen = match time_at(ev, &["lastTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int_at(ev, &["count"]);
    let series = at(ev, &["series"]);
    if !series.is_null() {
        last_seen = since(time_at(series, &["lastObservedTime"]), now);
        count = opt_int_at(series, &["count"]).unwrap_or(0);
    } else if count == 0 {
        // Events of the newer API that happened once carry no count.
        count = 1;
    }
    let kind = str_at(ev, &["involvedObject", "kind"]).to_lowercase();
    let target = match str_at(ev, &["involvedObject", "name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    vec![
        json!(last_seen),
        json!(str_at(ev, &["type"])),
        json!(str_at(ev, &["reason"])),
        json!(target),
        json!(str_at(ev, &["involvedObject", "fieldPath"])),
        json!(event_source(ev)),
        json!(str_at(ev, &["message"]).trim()),
        json!(first_seen),
        json!(count),
        json!(str_at(ev, &["metadata", "name"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::format::parse_time;
    use super::*;

    fn now() -> Millis {
        parse_time("2024-05-01T12:00:00Z").expect("now")
    }

    #[test]
    fn events() {
        let ev = json!({
            "metadata": {"name": "web-0.17c", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning",
            "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2024-05-01T11:40:00Z",
            "lastTimestamp": "2024-05-01T11:59:00Z",
            "count": 7
        });
        assert_eq!(
            event_cells(&ev, now()),
            vec![
                json!("60s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-0"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Back-off restarting failed container"),
                json!("20m"),
                json!(7),
                json!("web-0.17c"),
            ]
        );
        assert_eq!(event_cells(&ev, now()).len(), event_columns().len());

        // A new-API event: eventTime only, a series, reporting controller as the source.
        let series = json!({
            "metadata": {"name": "e2"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:30:00.000000Z",
            "series": {"count": 4, "lastObservedTime": "2024-05-01T11:58:00.123456Z"},
            "reportingComponent": "berth-scheduler"
        });
        let c = event_cells(&series, now());
        assert_eq!(c[0], json!("119s"));
        assert_eq!(c[3], json!("node"));
        assert_eq!(c[5], json!("berth-scheduler"));
        assert_eq!(c[7], json!("30m"));
        assert_eq!(c[8], json!(4));

        let once = json!({"metadata": {"name": "e3"}, "eventTime": "2024-05-01T11:59:00.000000Z"});
        let c = event_cells(&once, now());
        assert_eq!(
            (&c[0], &c[7], &c[8]),
            (&json!("60s"), &json!("60s"), &json!(1))
        );
    }
}
