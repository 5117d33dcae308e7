//! Scripted container exits, so Jobs (and crash loops) can be tested without a kubelet — kwok's
//! pod-completion stages, as annotations on the pod:
//!
//! - `sim.berth.dev/exit-code: "<n>"` — every container exits with `n` after running for a while.
//!   What follows is what a kubelet does under the pod's `restartPolicy`: with `Never`, or with
//!   `OnFailure` and `n == 0`, the pod ends `Succeeded` (`n == 0`, container reason `Completed`)
//!   or `Failed` (`n != 0`, reason `Error`); otherwise (`Always`, or `OnFailure` and `n != 0`) the
//!   container waits in `CrashLoopBackOff` (10 s doubling to 5 min, as the kubelet's back-off),
//!   then runs again with `restartCount` one higher, and exits again.
//! - `sim.berth.dev/run-for: "<duration>"` — how long each run lasts before the exit, a Go
//!   duration (`500ms`, `2s`, `1m30s`); default `0s`: the pod is reported Running, then exits.
//!
//! Pods without `exit-code` (or with an unparsable one) run forever, as before. Every decision
//! here is a pure function of the pod's status and the time, so a restarted simulator carries on.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

/// The exit code every container of the pod exits with.
pub const EXIT_CODE: &str = "sim.berth.dev/exit-code";
/// How long each run of the containers lasts before it exits (a Go duration).
pub const RUN_FOR: &str = "sim.berth.dev/run-for";

/// The kubelet's crash-loop back-off: 10 s, doubling, at most 5 min.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What the annotations ask of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Script {
    pub exit_code: i32,
    pub run_for: Duration,
}

/// The pod's script; None if it has no (valid) exit code, i.e. it runs forever.
pub(super) fn script(pod: &Pod) -> Option<Script> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let exit_code = annotations.get(EXIT_CODE)?.trim().parse().ok()?;
    let run_for = annotations
        .get(RUN_FOR)
        .and_then(|d| parse_duration(d))
        .unwrap_or_default();
    Some(Script { exit_code, run_for })
}

/// Where a scripted pod that is not being deleted goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Report it Running (first start).
    Start,
    /// Its run is over: the containers exit.
    Exit,
    /// Its crash-loop back-off is over: the containers run again.
    Rerun,
    /// Nothing to do until this much later.
    Wait(Duration),
    /// Finished for good.
    None,
}

fn first_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn until(at_ms: i64, now: Timestamp) -> Option<Duration> {
    let left = at_ms - now.as_millisecond();
    (left > 0).then(|| Duration::from_millis(left as u64))
}

pub(super) fn step(pod: &Pod, script: Script, now: Timestamp) -> Step {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Step::None;
    }
    let Some(container) = first_status(pod) else {
        return Step::Start;
    };
    let state = container.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        if waiting.reason.as_deref() == Some("CrashLoopBackOff") {
            let finished = container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.finished_at.as_ref())
                .map_or(now.as_millisecond(), |t| t.0.as_millisecond());
            let backoff = restart_backoff(container.restart_count);
            return match until(finished + backoff.as_millis() as i64, now) {
                Some(left) => Step::Wait(left),
                None => Step::Rerun,
            };
        }
    }
    let Some(started) = state
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
    else {
        return Step::Start;
    };
    match until(
        started.0.as_millisecond() + script.run_for.as_millis() as i64,
        now,
    ) {
        Some(left) => Step::Wait(left),
        None => Step::Exit,
    }
}

/// The back-off before restart number `restarts + 1`.
fn restart_backoff(restarts: i32) -> Duration {
    let doublings = restarts.clamp(0, 16) as u32;
    BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// Whether the kubelet restarts a container that exited with `code` under `policy`.
fn restarts(policy: Option<&str>, code: i32) -> bool {
    match policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

fn condition(kind: &str, status: &str, reason: Option<&str>, now: &str) -> Value {
    let mut c = json!({"type": kind, "status": status, "lastTransitionTime": now});
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    c
}

/// The merge patch for `pods/<name>/status` once the containers exit: the pod's final status,
/// or a crash-loop wait when the restart policy restarts them.
pub(super) fn exited_status(pod: &Pod, script: Script, now: &str) -> Value {
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
    let code = script.exit_code;
    let reason = if code == 0 { "Completed" } else { "Error" };
    let restart = restarts(policy, code);
    let (namespace, name, uid) = (
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
    );
    let statuses: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| {
            let started = c
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
                .and_then(|t| serde_json::to_value(t).ok())
                .unwrap_or_else(|| json!(now));
            let terminated = json!({
                "exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now,
                "containerID": c.container_id,
            });
            let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({"name": c.name}));
            v["ready"] = json!(false);
            v["started"] = json!(false);
            if restart {
                let backoff = restart_backoff(c.restart_count).as_secs();
                let message = format!(
                    "back-off {backoff}s restarting failed container={} pod={name}_{namespace}({uid})",
                    c.name
                );
                v["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}});
                v["lastState"] = json!({"terminated": terminated});
            } else {
                v["state"] = json!({"terminated": terminated});
            }
            v
        })
        .collect();
    let names: Vec<&str> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let (phase, not_ready, ready_to_start) = if restart {
        ("Running", "ContainersNotReady", "True")
    } else if code == 0 {
        ("Succeeded", "PodCompleted", "False")
    } else {
        ("Failed", "PodFailed", "False")
    };
    let mut ready = condition("Ready", "False", Some(not_ready), now);
    let mut containers_ready = condition("ContainersReady", "False", Some(not_ready), now);
    if restart {
        let message = format!("containers with unready status: [{}]", names.join(" "));
        ready["message"] = json!(message);
        containers_ready["message"] = json!(message);
    }
    json!({"status": {
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", ready_to_start, None, now),
            condition("Initialized", "True", None, now),
            ready,
            containers_ready,
            condition("PodScheduled", "True", None, now),
        ],
        "containerStatuses": statuses,
    }})
}

/// Turns `running` (a patch from `objects::running_status`) into the status of a container run
/// again after a crash loop: one more restart, the last exit kept as `lastState`.
pub(super) fn rerun_status(pod: &Pod, mut running: Value) -> Value {
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    if let Some(list) = running["status"]["containerStatuses"].as_array_mut() {
        for c in list {
            let name = c["name"].as_str().unwrap_or_default();
            if let Some(prev) = previous.and_then(|p| p.iter().find(|p| p.name == name)) {
                c["restartCount"] = json!(prev.restart_count + 1);
                if let Some(last) = prev.last_state.as_ref() {
                    c["lastState"] = serde_json::to_value(last).unwrap_or_else(|_| json!({}));
                }
            }
        }
    }
    running
}

/// A Go duration: a sequence of decimal numbers with units `ns`, `us`, `ms`, `s`, `m`, `h`
/// (`1m30s`, `1.5s`, `250ms`); `0` alone is zero.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: Value, policy: &str, status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations},
            "spec": {"restartPolicy": policy, "containers": [{"name": "app", "image": "busybox"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn running(started: &str, restarts: i32) -> Value {
        json!({"phase": "Running", "podIP": "10.64.0.2", "hostIP": "10.255.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "image": "busybox", "imageID": "", "ready": true,
                "restartCount": restarts, "containerID": "sim://1",
                "state": {"running": {"startedAt": started}}}]})
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "5", "s", "1x", "-1s", "1.2.3s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scripts_from_annotations() {
        let p = pod(json!({EXIT_CODE: "3", RUN_FOR: "2s"}), "Never", json!({}));
        assert_eq!(
            script(&p),
            Some(Script {
                exit_code: 3,
                run_for: Duration::from_secs(2)
            })
        );
        let p = pod(json!({EXIT_CODE: "0"}), "Never", json!({}));
        assert_eq!(script(&p).unwrap().run_for, Duration::ZERO);
        assert_eq!(
            script(&pod(json!({EXIT_CODE: "x"}), "Never", json!({}))),
            None
        );
        assert_eq!(script(&pod(json!({}), "Never", json!({}))), None);
    }

    #[test]
    fn steps_follow_the_clock() {
        let s = Script {
            exit_code: 0,
            run_for: Duration::from_secs(2),
        };
        let pending = pod(json!({}), "Never", json!({"phase": "Pending"}));
        assert_eq!(step(&pending, s, at("2026-01-01T00:00:00Z")), Step::Start);
        let p = pod(json!({}), "Never", running("2026-01-01T00:00:00Z", 0));
        assert_eq!(
            step(&p, s, at("2026-01-01T00:00:01.5Z")),
            Step::Wait(Duration::from_millis(500))
        );
        assert_eq!(step(&p, s, at("2026-01-01T00:00:02Z")), Step::Exit);
        let done = pod(json!({}), "Never", json!({"phase": "Succeeded"}));
        assert_eq!(step(&done, s, at("2026-01-01T00:00:09Z")), Step::None);
    }

    #[test]
    fn never_succeeds_or_fails() {
        let p = pod(json!({}), "Never", running("2026-01-01T00:00:00Z", 0));
        let now = "2026-01-01T00:00:05Z";
        let ok = exited_status(&p, script_with(0), now);
        let s = &ok["status"];
        assert_eq!(s["phase"], "Succeeded");
        let t = &s["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (
                &t["exitCode"],
                &t["reason"],
                &t["startedAt"],
                &t["finishedAt"]
            ),
            (
                &json!(0),
                &json!("Completed"),
                &json!("2026-01-01T00:00:00Z"),
                &json!(now)
            )
        );
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        assert_eq!(s["conditions"][2]["type"], "Ready");
        assert_eq!(s["conditions"][2]["reason"], "PodCompleted");

        let failed = exited_status(&p, script_with(2), now);
        let s = &failed["status"];
        assert_eq!(s["phase"], "Failed");
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Error"
        );
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            2
        );
        assert_eq!(s["conditions"][2]["reason"], "PodFailed");
        // What the server stores reads back as a typed status.
        let typed: k8s_openapi::api::core::v1::PodStatus =
            serde_json::from_value(s.clone()).unwrap();
        assert_eq!(typed.container_statuses.unwrap()[0].restart_count, 0);
    }

    fn script_with(exit_code: i32) -> Script {
        Script {
            exit_code,
            run_for: Duration::ZERO,
        }
    }

    #[test]
    fn on_failure_restarts_failures_after_a_back_off() {
        let p = pod(json!({}), "OnFailure", running("2026-01-01T00:00:00Z", 1));
        // Success ends an OnFailure pod.
        assert_eq!(
            exited_status(&p, script_with(0), "2026-01-01T00:00:01Z")["status"]["phase"],
            "Succeeded"
        );
        let patch = exited_status(&p, script_with(1), "2026-01-01T00:00:01Z");
        let s = &patch["status"];
        assert_eq!(s["phase"], "Running");
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(c["restartCount"], 1);
        assert_eq!(s["conditions"][2]["reason"], "ContainersNotReady");

        // Stored, it waits 20 s (second restart), then runs again with one more restart.
        let mut stored = serde_json::to_value(&p).unwrap();
        stored["status"] = s.clone();
        let stored: Pod = serde_json::from_value(stored).unwrap();
        let s1 = script_with(1);
        assert_eq!(
            step(&stored, s1, at("2026-01-01T00:00:11Z")),
            Step::Wait(Duration::from_secs(10))
        );
        assert_eq!(step(&stored, s1, at("2026-01-01T00:00:21Z")), Step::Rerun);
        let rerun = rerun_status(
            &stored,
            json!({"status": {"containerStatuses": [{"name": "app", "restartCount": 0}]}}),
        );
        let c = &rerun["status"]["containerStatuses"][0];
        assert_eq!(c["restartCount"], 2);
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
    }

    #[test]
    fn always_restarts_even_on_success() {
        let p = pod(json!({}), "Always", running("2026-01-01T00:00:00Z", 0));
        let patch = exited_status(&p, script_with(0), "2026-01-01T00:00:01Z");
        assert_eq!(patch["status"]["phase"], "Running");
        assert_eq!(
            patch["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(restart_backoff(0), Duration::from_secs(10));
        assert_eq!(restart_backoff(10), BACKOFF_MAX);
    }
}
