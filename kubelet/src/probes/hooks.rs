//! Lifecycle hooks, postStart and preStop (pkg/kubelet/lifecycle/handlers.go): exec in the
//! container, httpGet (any response succeeds; only a failed exchange fails), or sleep. An
//! error carries the kubelet's message for the FailedPostStartHook / FailedPreStopHook event.

use std::time::Duration;

use k8s_openapi::api::core::v1::LifecycleHandler;

use super::action::{hook_action, Action};
use super::{exec, net, Target};

/// Runs `handler` for container `container` of pod `pod` (`name_namespace(uid)`), for at most
/// `timeout` when given.
pub async fn run_hook(
    handler: &LifecycleHandler,
    target: &Target,
    container: &str,
    pod: &str,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let action = hook_action(handler, &target.host, &target.ports)
        .map_err(|e| format!("Cannot run handler: {e}"))?;
    let bounded = async {
        match &action {
            Action::Exec { command } => exec_hook(command, target, container, pod).await,
            Action::HttpGet(get) => net::status(get).await.map(|_| ()).map_err(|e| {
                format!(
                    "HTTP lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - error: Get {:?}: {e}",
                    get.path,
                    get.url()
                )
            }),
            Action::Sleep { seconds } => {
                tokio::time::sleep(Duration::from_secs(*seconds)).await;
                Ok(())
            }
            Action::TcpSocket { .. } => {
                Err("Cannot run handler: tcpSocket lifecycle hooks are not supported".into())
            }
        }
    };
    match timeout {
        None => bounded.await,
        // A sleep cut short by the grace period is not a failure: the kubelet moves on.
        Some(t) => match tokio::time::timeout(t, bounded).await {
            Ok(r) => r,
            Err(_) if matches!(action, Action::Sleep { .. }) => Ok(()),
            Err(_) => Err(format!(
                "{} lifecycle hook for Container {container:?} in Pod {pod:?} did not complete in {}s",
                kind_of(&action),
                t.as_secs()
            )),
        },
    }
}

fn kind_of(action: &Action) -> &'static str {
    match action {
        Action::Exec { .. } => "Exec",
        Action::HttpGet(_) => "HTTP",
        Action::TcpSocket { .. } => "TCP",
        Action::Sleep { .. } => "Sleep",
    }
}

async fn exec_hook(
    command: &[String],
    target: &Target,
    container: &str,
    pod: &str,
) -> Result<(), String> {
    let failed = |error: String, output: &str| {
        format!(
            "Exec lifecycle hook ([{}]) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {output:?}",
            command.join(" ")
        )
    };
    let Some(exec_target) = &target.exec else {
        return Err(failed("the container is not running".into(), ""));
    };
    match exec::run(exec_target, command, None).await {
        Ok(Some(r)) if r.code == 0 => Ok(()),
        Ok(Some(r)) => Err(failed(
            format!(
                "command '{}' exited with {}: {}",
                command.join(" "),
                r.code,
                r.output
            ),
            &r.output,
        )),
        Ok(None) => Err(failed("timed out".into(), "")),
        Err(e) => Err(failed(e, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            host: "127.0.0.1".into(),
            ports: Vec::new(),
            exec: None,
        }
    }

    #[tokio::test]
    async fn http_hook_fails_only_without_a_response() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let handler: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"httpGet": {"port": port, "path": "/stop"}}))
                .unwrap();
        let err = run_hook(&handler, &target(), "c", "p_ns(u)", None)
            .await
            .unwrap_err();
        assert!(
            err.starts_with("HTTP lifecycle hook (/stop) for Container \"c\" in Pod \"p_ns(u)\" failed - error: Get \"http://127.0.0.1:"),
            "{err}"
        );
        assert!(err.ends_with("connect: connection refused"), "{err}");
    }

    #[tokio::test]
    async fn sleep_and_exec_without_a_container() {
        let sleep: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"sleep": {"seconds": 30}})).unwrap();
        let cut = Some(Duration::from_millis(50));
        assert_eq!(run_hook(&sleep, &target(), "c", "p", cut).await, Ok(()));
        let exec: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"exec": {"command": ["sh", "-c", "x"]}}))
                .unwrap();
        let err = run_hook(&exec, &target(), "c", "p", None)
            .await
            .unwrap_err();
        assert!(
            err.starts_with(
                "Exec lifecycle hook ([sh -c x]) for Container \"c\" in Pod \"p\" failed"
            ),
            "{err}"
        );
    }
}
