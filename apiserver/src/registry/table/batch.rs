//! Rows of batch/v1 Job.

use super::format::{
    arr_at, at, container_cells, format_label_selector, human_duration, int_at, is_set, opt_int_at,
    since, str_at, time_at, Millis,
};
use super::ColumnDefinition as Col;
use serde_json::{json, Value};

const SUCCEEDED_DOC: &str = "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.";
const SELECTOR_DOC: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

pub(super) fn job_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Status", "Status of the job."),
        Col::string("Completions", SUCCEEDED_DOC),
        Col::string("Duration", "Time required to complete the job."),
        Col::age(),
        Col::containers(),
        Col::images(),
        Col::string("Selector", SELECTOR_DOC).wide(),
    ]
}

/// Whether the first condition of `type_` has status "True".
fn has_condition(job: &Value, type_: &str) -> bool {
    arr_at(job, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == type_)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

fn job_status(job: &Value) -> &'static str {
    if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if is_set(job, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// "2/3"; without `completions`, "1/1", or "0/1 of 4" when several pods run in parallel.
fn completions(job: &Value) -> String {
    let succeeded = int_at(job, &["status", "succeeded"]);
    match opt_int_at(job, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match opt_int_at(job, &["spec", "parallelism"]).unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

/// From start to completion, or to now while running; "" before the job starts.
fn duration(job: &Value, now: Millis) -> String {
    let Some(start) = time_at(job, &["status", "startTime"]) else {
        return String::new();
    };
    match time_at(job, &["status", "completionTime"]) {
        Some(done) => human_duration(done.saturating_sub(start)),
        None => human_duration(now.saturating_sub(start)),
    }
}

pub(super) fn job_cells(job: &Value, now: Millis) -> Vec<Value> {
    let (names, images) = container_cells(at(job, &["spec", "template", "spec"]));
    vec![
        json!(str_at(job, &["metadata", "name"])),
        json!(job_status(job)),
        json!(completions(job)),
        json!(duration(job, now)),
        json!(since(time_at(job, &["metadata", "creationTimestamp"]), now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(job, &["spec", "selector"]))),
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
    fn completed_job() {
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": "2024-05-01T11:45:00Z"},
            "spec": {"completions": 1, "parallelism": 1,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "c0ffee"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl:5.34"}]}}},
            "status": {"startTime": "2024-05-01T11:45:01Z", "completionTime": "2024-05-01T11:47:15Z",
                       "succeeded": 1,
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                      {"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            job_cells(&job, now()),
            vec![
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("2m14s"),
                json!("15m"),
                json!("pi"),
                json!("perl:5.34"),
                json!("batch.kubernetes.io/controller-uid=c0ffee"),
            ]
        );
        assert_eq!(job_cells(&job, now()).len(), job_columns().len());
    }

    #[test]
    fn running_failed_and_terminating_jobs() {
        let mut job = json!({
            "metadata": {"name": "work"},
            "spec": {"parallelism": 4},
            "status": {"startTime": "2024-05-01T11:59:30Z", "succeeded": 0}
        });
        let c = job_cells(&job, now());
        assert_eq!(
            (&c[1], &c[2], &c[3]),
            (&json!("Running"), &json!("0/1 of 4"), &json!("30s"))
        );

        job["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:59Z");
        assert_eq!(job_cells(&job, now())[1], json!("Terminating"));
        job["status"]["conditions"] = json!([{"type": "Failed", "status": "True"}]);
        assert_eq!(job_cells(&job, now())[1], json!("Failed"));

        let pending = json!({"spec": {"completions": 5, "suspend": true},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        let c = job_cells(&pending, now());
        assert_eq!(
            (&c[1], &c[2], &c[3]),
            (&json!("Suspended"), &json!("0/5"), &json!(""))
        );
        assert_eq!(completions(&json!({})), "0/1");
    }
}
