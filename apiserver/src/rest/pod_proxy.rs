//! pods/log and pods/exec: checked against the pod as Kubernetes does, then proxied to the
//! kubelet of the pod's node — a log as a chunked stream, exec as an upgraded WebSocket
//! connection copied byte for byte.

use std::net::{IpAddr, SocketAddr};

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde_json::Value;

use super::query::percent_decode;
use super::read::namespace_of;
use super::{Api, ApiResult, ResourceRoute};
use crate::http::{Request, Response, Upgraded};
use crate::proxy::{ProxyError, Upstream};
use crate::registry;
use crate::status::ApiError;

/// The kubelet port when a Node does not say.
const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Query parameters the API server consumes instead of passing them to the kubelet.
const OWN_PARAMS: &[&str] = &["container", "insecureSkipTLSVerifyBackend", "pretty"];

/// The raw query split into (decoded key, decoded value, raw pair).
fn params(raw: &str) -> Result<Vec<(String, String, &str)>, ApiError> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?, pair))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String, &str)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _, _)| k == name)
        .map(|(_, v, _)| v.as_str())
}

fn flag(params: &[(String, String, &str)], name: &str) -> bool {
    matches!(
        param(params, name),
        Some("" | "true" | "1" | "True" | "TRUE")
    )
}

/// The query passed on to the kubelet: everything but what the API server consumes.
fn forwarded(params: &[(String, String, &str)]) -> String {
    let kept: Vec<&str> = params
        .iter()
        .filter(|(k, _, _)| !OWN_PARAMS.contains(&k.as_str()))
        .map(|(_, _, raw)| *raw)
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

fn names(pod: &Value, pointer: &str) -> Vec<String> {
    pod.pointer(pointer)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request is for: the one asked for, or the only one; as Kubernetes' pod
/// strategy decides it.
pub(crate) fn choose_container(
    pod: &Value,
    requested: Option<&str>,
    pod_name: &str,
) -> Result<String, ApiError> {
    let containers = names(pod, "/spec/containers");
    let init = names(pod, "/spec/initContainers");
    let ephemeral = names(pod, "/spec/ephemeralContainers");
    match requested.filter(|c| !c.is_empty()) {
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                msg.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
        Some(c)
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c) =>
        {
            Ok(c.to_string())
        }
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
    }
}

/// The node a pod runs on, or 400 while it has none.
fn node_of(pod: &Value, pod_name: &str) -> Result<String, ApiError> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {pod_name} does not have a host assigned"))
        })
}

/// Whether the container has logs to show, judged from the pod's status as the kubelet does
/// (`validateContainerLogStatus`).
pub(crate) fn check_log_status(
    pod: &Value,
    container: &str,
    pod_name: &str,
    previous: bool,
) -> Result<(), ApiError> {
    let status = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .filter_map(|f| pod.pointer(&format!("/status/{f}"))?.as_array())
    .flatten()
    .find(|s| s["name"] == container);
    let bad = |what: String| Err(ApiError::bad_request(what));
    let Some(status) = status else {
        return bad(format!(
            "container {container:?} in pod {pod_name:?} is not available"
        ));
    };
    let has_id = |v: &Value| v["containerID"].as_str().is_some_and(|id| !id.is_empty());
    let last = status.pointer("/lastState/terminated");
    let state = &status["state"];
    if previous {
        return match last {
            Some(t) if has_id(t) => Ok(()),
            _ => bad(format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found"
            )),
        };
    }
    if state.get("running").is_some() {
        return Ok(());
    }
    if let Some(t) = state.get("terminated") {
        return if has_id(t) || last.is_some_and(has_id) {
            Ok(())
        } else {
            bad(format!(
                "container {container:?} in pod {pod_name:?} is terminated"
            ))
        };
    }
    if let Some(t) = last {
        return if has_id(t) {
            Ok(())
        } else {
            bad(format!(
                "container {container:?} in pod {pod_name:?} is terminated"
            ))
        };
    }
    if let Some(w) = state.get("waiting") {
        let why = match w["reason"].as_str().unwrap_or("") {
            "ErrImagePull" => "image can't be pulled".to_string(),
            "ImagePullBackOff" => "trying and failing to pull image".to_string(),
            other => other.to_string(),
        };
        return bad(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {why}"
        ));
    }
    bad(format!(
        "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
    ))
}

/// Where a node's kubelet listens: its InternalIP (else ExternalIP, else any IP address it
/// reports) and `status.daemonEndpoints.kubeletEndpoint.Port`.
pub(crate) fn kubelet_endpoint(node: &Value) -> Result<SocketAddr, ApiError> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let of_type = |t: &str| {
        addresses
            .iter()
            .filter(|a| t.is_empty() || a["type"] == t)
            .filter_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
            .next()
    };
    let ip = of_type("InternalIP")
        .or_else(|| of_type("ExternalIP"))
        .or_else(|| of_type(""))
        .ok_or_else(|| {
            let known: Vec<String> = addresses
                .iter()
                .map(|a| {
                    format!(
                        "{{{} {}}}",
                        a["type"].as_str().unwrap_or(""),
                        a["address"].as_str().unwrap_or("")
                    )
                })
                .collect();
            ApiError::internal(format!(
                "no preferred addresses found; known addresses: [{}]",
                known.join(" ")
            ))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(SocketAddr::new(ip, port))
}

/// A kubelet's error response as a Status with its code.
fn kubelet_error(code: u16, body: &[u8]) -> ApiError {
    let message = String::from_utf8_lossy(body).trim().to_string();
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        _ => "InternalError",
    };
    let code = if code < 400 { 500 } else { code };
    ApiError::new(code, reason, message)
}

fn dial_error(method: &str, addr: SocketAddr, path: &str, e: &ProxyError) -> ApiError {
    let mut msg = format!("{method} \"https://{addr}{path}\": {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    ApiError::internal(msg)
}

impl Api {
    /// The pod, its chosen container and its kubelet's address.
    async fn proxy_target(
        &self,
        r: &ResourceRoute,
        container: Option<&str>,
    ) -> Result<(Value, String, SocketAddr), ApiError> {
        let ns = namespace_of(r)?;
        let name = r.name.as_deref().unwrap_or("");
        let (pod, _) = self.read_object(r.info, ns, name).await?;
        let container = choose_container(&pod, container, name)?;
        let node_name = node_of(&pod, name)?;
        let nodes = registry::find("", "v1", "nodes")
            .ok_or_else(|| ApiError::internal("nodes are not served"))?;
        let (node, _) = self.read_object(nodes, "", &node_name).await?;
        Ok((pod, container, kubelet_endpoint(&node)?))
    }

    /// `GET .../pods/<name>/log`.
    pub(crate) async fn pod_log(&self, req: &Request, r: &ResourceRoute) -> ApiResult {
        if req.method != "GET" {
            return Err(ApiError::method_not_allowed(format!(
                "{} is not supported on pods/log",
                req.method
            )));
        }
        let params = params(&req.query)?;
        let name = r.name.as_deref().unwrap_or("");
        let (pod, container, addr) = self.proxy_target(r, param(&params, "container")).await?;
        check_log_status(&pod, &container, name, flag(&params, "previous"))?;
        let client = self
            .kubelet
            .as_ref()
            .ok_or_else(|| ApiError::service_unavailable("no kubelet client is configured"))?;
        let path = format!(
            "/containerLogs/{}/{name}/{container}{}",
            namespace_of(r)?,
            forwarded(&params)
        );
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: berth-apiserver\r\nConnection: close\r\n\r\n"
        );
        let insecure = flag(&params, "insecureSkipTLSVerifyBackend");
        let up = client
            .request(addr, insecure, &head)
            .await
            .map_err(|e| dial_error("Get", addr, &path, &e))?;
        if up.status != 200 {
            let code = up.status;
            return Err(kubelet_error(code, &up.read_body().await));
        }
        Ok(Response::stream(200, "text/plain", up.into_stream()))
    }

    /// `GET|POST .../pods/<name>/exec` upgraded to a WebSocket: the upgrade is forwarded to the
    /// kubelet and, once it agrees, both connections are joined.
    pub(crate) async fn pod_exec(&self, req: &Request, r: &ResourceRoute) -> ApiResult {
        if req.method != "GET" && req.method != "POST" {
            return Err(ApiError::method_not_allowed(format!(
                "{} is not supported on pods/exec",
                req.method
            )));
        }
        let params = params(&req.query)?;
        let name = r.name.as_deref().unwrap_or("");
        // The pod is checked first: a client that falls back from WebSocket to SPDY (kubectl)
        // then shows this error rather than the protocol's.
        let (pod, container, addr) = self.proxy_target(r, param(&params, "container")).await?;
        if let Some(phase @ ("Succeeded" | "Failed")) =
            pod.pointer("/status/phase").and_then(Value::as_str)
        {
            return Err(ApiError::bad_request(format!(
                "cannot exec into a container in a completed pod; current phase is {phase}"
            )));
        }
        match req.header("upgrade") {
            Some(u) if u.eq_ignore_ascii_case("websocket") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unable to upgrade connection: {other} is not supported, exec is served over WebSocket (v5.channel.k8s.io)"
                )))
            }
            None => return Err(ApiError::bad_request("Upgrade request required")),
        }
        let client = self
            .kubelet
            .as_ref()
            .ok_or_else(|| ApiError::service_unavailable("no kubelet client is configured"))?;
        let path = format!(
            "/exec/{}/{name}/{container}{}",
            namespace_of(r)?,
            forwarded(&params)
        );
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: berth-apiserver\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        );
        for (name, value) in &req.headers {
            if matches!(
                name.as_str(),
                "sec-websocket-key" | "sec-websocket-version" | "sec-websocket-protocol"
            ) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str("\r\n");
        let insecure = flag(&params, "insecureSkipTLSVerifyBackend");
        let up = client
            .request(addr, insecure, &head)
            .await
            .map_err(|e| dial_error("Get", addr, &path, &e))?;
        if up.status != 101 {
            let code = up.status;
            return Err(kubelet_error(code, &up.read_body().await));
        }
        let mut headers = Vec::new();
        for (name, value) in &up.headers {
            let name = match name.as_str() {
                "upgrade" => "Upgrade",
                "connection" => "Connection",
                "sec-websocket-accept" => "Sec-WebSocket-Accept",
                "sec-websocket-protocol" => "Sec-WebSocket-Protocol",
                _ => continue,
            };
            headers.push((name, value.clone()));
        }
        Ok(Response::upgrade(
            headers,
            Box::new(move |client| Box::pin(join(client, up))),
        ))
    }
}

/// Copies, flushing after every read so interactive bytes are not held back.
async fn copy_flushing<R, W>(mut rd: R, wr: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        wr.write_all(&buf[..n]).await?;
        wr.flush().await?;
    }
}

/// Joins the client's upgraded connection and the kubelet's until either side ends.
async fn join(client: Upgraded, up: Upstream) {
    let Upgraded {
        reader,
        mut writer,
        buffered,
    } = client;
    let leftover = up.buffered;
    let (krd, mut kwr) = up.stream.split();
    let to_kubelet = async move {
        if kwr.write_all(&buffered).await.is_ok() {
            let _ = copy_flushing(reader, &mut kwr).await;
        }
        let _ = kwr.close().await;
    };
    let to_client = async move {
        if writer.write_all(&leftover).await.is_ok() {
            let _ = copy_flushing(krd, &mut writer).await;
        }
        let _ = writer.close().await;
    };
    futures::future::select(std::pin::pin!(to_kubelet), std::pin::pin!(to_client)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p"},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "a"}, {"name": "b"}],
                "initContainers": [{"name": "init"}],
            },
        })
    }

    #[test]
    fn container_is_required_when_there_are_several() {
        let err = choose_container(&pod(), None, "p").unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [init]"
        );
        assert_eq!(choose_container(&pod(), Some("b"), "p").unwrap(), "b");
        assert_eq!(choose_container(&pod(), Some("init"), "p").unwrap(), "init");
        let err = choose_container(&pod(), Some("c"), "p").unwrap_err();
        assert_eq!(err.message, "container c is not valid for pod p");
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(choose_container(&one, None, "p").unwrap(), "only");
        let unbound = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(
            node_of(&unbound, "p").unwrap_err().message,
            "pod p does not have a host assigned"
        );
    }

    #[test]
    fn log_status_decides_as_the_kubelet() {
        let with = |status: Value| {
            let mut p = pod();
            p["status"] = json!({"containerStatuses": [status]});
            p
        };
        let waiting =
            with(json!({"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}));
        assert_eq!(
            check_log_status(&waiting, "a", "p", false)
                .unwrap_err()
                .message,
            "container \"a\" in pod \"p\" is waiting to start: ContainerCreating"
        );
        assert_eq!(
            check_log_status(&waiting, "a", "p", true)
                .unwrap_err()
                .message,
            "previous terminated container \"a\" in pod \"p\" not found"
        );
        let pulling =
            with(json!({"name": "a", "state": {"waiting": {"reason": "ImagePullBackOff"}}}));
        assert!(check_log_status(&pulling, "a", "p", false)
            .unwrap_err()
            .message
            .ends_with("trying and failing to pull image"));
        let restarted = with(json!({
            "name": "a",
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "berth://x"}},
        }));
        assert!(check_log_status(&restarted, "a", "p", false).is_ok());
        assert!(check_log_status(&restarted, "a", "p", true).is_ok());
        assert_eq!(
            check_log_status(&restarted, "b", "p", false)
                .unwrap_err()
                .message,
            "container \"b\" in pod \"p\" is not available"
        );
    }

    #[test]
    fn kubelet_endpoint_prefers_the_internal_ip() {
        let node = json!({"status": {
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.1"},
                {"type": "InternalIP", "address": "10.0.0.5"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 11250}},
        }});
        assert_eq!(
            kubelet_endpoint(&node).unwrap(),
            "10.0.0.5:11250".parse().unwrap()
        );
        let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "127.0.0.1"}]}});
        assert_eq!(
            kubelet_endpoint(&bare).unwrap(),
            "127.0.0.1:10250".parse().unwrap()
        );
        let none = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(
            kubelet_endpoint(&none).unwrap_err().message,
            "no preferred addresses found; known addresses: [{Hostname n1}]"
        );
    }

    #[test]
    fn own_parameters_are_not_forwarded() {
        let p = params("container=a&follow=true&command=sh&command=-c&insecureSkipTLSVerifyBackend=true&tailLines=5").unwrap();
        assert_eq!(
            forwarded(&p),
            "?follow=true&command=sh&command=-c&tailLines=5"
        );
        assert_eq!(param(&p, "container"), Some("a"));
        assert!(flag(&p, "insecureSkipTLSVerifyBackend") && !flag(&p, "previous"));
        assert_eq!(forwarded(&params("container=a").unwrap()), "");
    }
}
