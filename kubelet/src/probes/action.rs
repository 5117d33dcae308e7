//! What a probe or a lifecycle hook does, resolved against its container: the target host
//! (the pod's IP unless `host` says otherwise), named ports from the container's ports, the
//! path with its leading slash, the headers. Pure.

use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    /// TLS without certificate verification, as the kubelet's prober does.
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpGet {
    /// `http://10.244.0.5:8080/healthz`, as Go's errors quote it.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec {
        command: Vec<String>,
    },
    HttpGet(HttpGet),
    TcpSocket {
        host: String,
        port: u16,
    },
    /// The `sleep` lifecycle action.
    Sleep {
        seconds: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("port {name} not found")]
    PortNotFound { name: String },
    #[error("invalid port number: {port}")]
    InvalidPort { port: i32 },
    #[error("{what} is not supported")]
    Unsupported { what: &'static str },
    #[error("missing probe handler")]
    Missing,
}

/// The probe's handler. `pod_ip`: the default host for httpGet and tcpSocket.
pub fn probe_action(
    probe: &Probe,
    pod_ip: &str,
    ports: &[ContainerPort],
) -> Result<Action, ActionError> {
    if let Some(exec) = &probe.exec {
        return Ok(exec_action(exec));
    }
    if let Some(http) = &probe.http_get {
        return http_action(http, pod_ip, ports);
    }
    if let Some(tcp) = &probe.tcp_socket {
        return tcp_action(tcp, pod_ip, ports);
    }
    if probe.grpc.is_some() {
        return Err(ActionError::Unsupported { what: "grpc" });
    }
    Err(ActionError::Missing)
}

/// A postStart or preStop handler.
pub fn hook_action(
    handler: &LifecycleHandler,
    pod_ip: &str,
    ports: &[ContainerPort],
) -> Result<Action, ActionError> {
    if let Some(exec) = &handler.exec {
        return Ok(exec_action(exec));
    }
    if let Some(http) = &handler.http_get {
        return http_action(http, pod_ip, ports);
    }
    if let Some(tcp) = &handler.tcp_socket {
        return tcp_action(tcp, pod_ip, ports);
    }
    if let Some(sleep) = &handler.sleep {
        return Ok(Action::Sleep {
            seconds: sleep.seconds.max(0) as u64,
        });
    }
    Err(ActionError::Missing)
}

fn exec_action(exec: &ExecAction) -> Action {
    Action::Exec {
        command: exec.command.clone().unwrap_or_default(),
    }
}

fn http_action(
    http: &HTTPGetAction,
    pod_ip: &str,
    ports: &[ContainerPort],
) -> Result<Action, ActionError> {
    let scheme = match http.scheme.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
        _ => Scheme::Http,
    };
    let path = http.path.clone().unwrap_or_default();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let headers = http
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    Ok(Action::HttpGet(HttpGet {
        scheme,
        host: host_or(http.host.as_deref(), pod_ip),
        port: resolve_port(&http.port, ports)?,
        path,
        headers,
    }))
}

fn tcp_action(
    tcp: &TCPSocketAction,
    pod_ip: &str,
    ports: &[ContainerPort],
) -> Result<Action, ActionError> {
    Ok(Action::TcpSocket {
        host: host_or(tcp.host.as_deref(), pod_ip),
        port: resolve_port(&tcp.port, ports)?,
    })
}

fn host_or(host: Option<&str>, pod_ip: &str) -> String {
    host.filter(|h| !h.is_empty()).unwrap_or(pod_ip).to_owned()
}

/// A number, or the name of one of the container's ports (kubelet: findPortByName).
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, ActionError> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match ports.iter().find(|p| p.name.as_deref() == Some(name)) {
            Some(p) => p.container_port,
            None => name
                .parse()
                .map_err(|_| ActionError::PortNotFound { name: name.clone() })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|&p| p > 0)
        .ok_or(ActionError::InvalidPort { port: number })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<ContainerPort> {
        vec![ContainerPort {
            name: Some("web".into()),
            container_port: 8080,
            ..Default::default()
        }]
    }

    #[test]
    fn http_defaults_and_named_port() {
        let probe: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"port": "web", "path": "healthz",
                        "httpHeaders": [{"name": "X-A", "value": "1"}]}
        }))
        .unwrap();
        let Action::HttpGet(h) = probe_action(&probe, "10.244.0.5", &ports()).unwrap() else {
            panic!("not http");
        };
        assert_eq!(h.url(), "http://10.244.0.5:8080/healthz");
        assert_eq!(h.headers, [("X-A".to_owned(), "1".to_owned())]);

        let probe: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"port": 8443, "host": "127.0.0.1", "scheme": "HTTPS"}
        }))
        .unwrap();
        let Action::HttpGet(h) = probe_action(&probe, "10.244.0.5", &ports()).unwrap() else {
            panic!("not http");
        };
        assert_eq!(h.url(), "https://127.0.0.1:8443/");
    }

    #[test]
    fn tcp_exec_and_errors() {
        let probe: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "80"}})).unwrap();
        assert_eq!(
            probe_action(&probe, "10.0.0.1", &[]).unwrap(),
            Action::TcpSocket {
                host: "10.0.0.1".into(),
                port: 80
            }
        );
        let probe: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "nope"}})).unwrap();
        assert_eq!(
            probe_action(&probe, "10.0.0.1", &[])
                .unwrap_err()
                .to_string(),
            "port nope not found"
        );
        let probe: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": 70000}})).unwrap();
        assert!(probe_action(&probe, "h", &[]).is_err());
        let probe: Probe =
            serde_json::from_value(serde_json::json!({"exec": {"command": ["true"]}})).unwrap();
        assert_eq!(
            probe_action(&probe, "h", &[]).unwrap(),
            Action::Exec {
                command: vec!["true".into()]
            }
        );
        assert_eq!(
            probe_action(&Probe::default(), "h", &[]),
            Err(ActionError::Missing)
        );
        let hook: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"sleep": {"seconds": 3}})).unwrap();
        assert_eq!(
            hook_action(&hook, "h", &[]).unwrap(),
            Action::Sleep { seconds: 3 }
        );
    }
}
