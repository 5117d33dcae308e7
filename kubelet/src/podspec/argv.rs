//! What the container runs and where: Kubernetes' command/args over the image's
//! Entrypoint/Cmd, with `$(VAR)` expansion.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Container;

use super::expand::expand;
use super::PodSpecError;
use crate::image::ImageConfig;

/// The process's argv. `command` replaces the image's Entrypoint and drops its Cmd; `args`
/// replaces Cmd. `$(VAR)` in command and args expands against `env` (`NAME=value` entries;
/// Kubernetes passes only the pod-defined variables, [`super::pod_environment`], so give those
/// for exact Kubernetes behaviour). Unresolved references stay verbatim.
pub fn argv(
    container: &Container,
    image: &ImageConfig,
    env: &[String],
) -> Result<Vec<String>, PodSpecError> {
    let vars: HashMap<&str, &str> = env
        .iter()
        .map(|e| e.split_once('=').unwrap_or((e.as_str(), "")))
        .collect();
    let lookup = |name: &str| vars.get(name).map(|v| v.to_string());
    let command = container.command.as_deref().unwrap_or(&[]);
    let args = container.args.as_deref().unwrap_or(&[]);
    let expanded =
        |list: &[String]| -> Vec<String> { list.iter().map(|s| expand(s, lookup)).collect() };
    let mut out = if command.is_empty() {
        image.entrypoint.clone()
    } else {
        expanded(command)
    };
    if !args.is_empty() {
        out.extend(expanded(args));
    } else if command.is_empty() {
        out.extend(image.cmd.iter().cloned());
    }
    if out.is_empty() {
        return Err(PodSpecError::invalid(format!(
            "no command specified for container {}",
            container.name
        )));
    }
    Ok(out)
}

/// `workingDir`, else the image's `WorkingDir`, else `/`.
pub fn working_dir(container: &Container, image: &ImageConfig) -> String {
    match container.working_dir.as_deref() {
        Some(d) if !d.is_empty() => d.to_string(),
        _ if !image.working_dir.is_empty() => image.working_dir.clone(),
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["cmd1".into(), "$(X)".into()],
            working_dir: "/app".into(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_rules() {
        let env = vec!["X=1".to_string(), "Y=a=b".to_string()];
        let run = |v| argv(&c(v), &image(), &env).unwrap();
        assert_eq!(run(json!({"name": "a"})), ["/ep", "cmd1", "$(X)"]);
        assert_eq!(
            run(json!({"name": "a", "command": ["/bin/sh", "$(X)"]})),
            ["/bin/sh", "1"]
        );
        assert_eq!(
            run(json!({"name": "a", "args": ["$(Y)", "$$(X)", "$(Z)"]})),
            ["/ep", "a=b", "$(X)", "$(Z)"]
        );
        assert_eq!(
            run(json!({"name": "a", "command": ["/c"], "args": ["x"]})),
            ["/c", "x"]
        );
        let err = argv(&c(json!({"name": "a"})), &ImageConfig::default(), &env).unwrap_err();
        assert_eq!(err.to_string(), "no command specified for container a");
    }

    #[test]
    fn working_dirs() {
        assert_eq!(working_dir(&c(json!({"name": "a"})), &image()), "/app");
        assert_eq!(
            working_dir(&c(json!({"name": "a", "workingDir": "/w"})), &image()),
            "/w"
        );
        assert_eq!(
            working_dir(&c(json!({"name": "a"})), &ImageConfig::default()),
            "/"
        );
    }
}
