//! The network probes and hooks: httpGet (HTTP/1.1 GET, success on 200–399; HTTPS without
//! certificate verification) and tcpSocket (a connect within the timeout), with Go's wording
//! in the failure output so the events read like the kubelet's (pkg/probe/http, pkg/probe/tcp).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::action::{HttpGet, Scheme};
use super::Outcome;

/// What the kubelet sends as User-Agent: `kube-probe/<major>.<minor>`.
pub const USER_AGENT: &str = "kube-probe/1.32";
/// The most of a response head read before giving up on it.
const MAX_HEAD: usize = 16 * 1024;

/// `dial tcp 10.244.0.5:8080: connect: connection refused`, as Go says it.
fn dial_error(host: &str, port: u16, e: &std::io::Error) -> String {
    let reason = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_owned(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            format!("connect: {}", text.to_lowercase())
        }
    };
    format!("dial tcp {}: {reason}", join(host, port))
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// tcpSocket: success when a connection opens within `timeout`.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Outcome::Success(String::new()),
        Ok(Err(e)) => Outcome::Failure(dial_error(host, port, &e)),
        Err(_) => Outcome::Failure(format!("dial tcp {}: i/o timeout", join(host, port))),
    }
}

/// httpGet: success on a status in 200..400 within `timeout` (redirects are not followed;
/// the kubelet treats a redirect it does not follow as a success too).
pub async fn http_get(get: &HttpGet, timeout: Duration) -> Outcome {
    let url = get.url();
    match tokio::time::timeout(timeout, status(get)).await {
        Ok(Ok(status)) if (200..400).contains(&status) => Outcome::Success(String::new()),
        Ok(Ok(status)) => {
            Outcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
        }
        Ok(Err(message)) => Outcome::Failure(format!("Get \"{url}\": {message}")),
        Err(_) => Outcome::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// The response's status code, or why there is none (Go's wording, without the URL).
pub async fn status(get: &HttpGet) -> Result<u16, String> {
    let stream = TcpStream::connect((get.host.as_str(), get.port))
        .await
        .map_err(|e| dial_error(&get.host, get.port, &e))?;
    let request = request(get);
    match get.scheme {
        Scheme::Http => exchange(stream, &request).await,
        Scheme::Https => {
            let name = ServerName::try_from(get.host.clone())
                .map_err(|e| format!("invalid server name {}: {e}", get.host))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config())
                .connect(name, stream)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            exchange(tls, &request).await
        }
    }
}

/// The request head: the kubelet's default headers, overridden by the probe's own.
fn request(get: &HttpGet) -> String {
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), join(&get.host, get.port)),
        ("User-Agent".into(), USER_AGENT.into()),
        ("Accept".into(), "*/*".into()),
    ];
    for (name, _) in &get.headers {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    headers.extend(get.headers.iter().cloned());
    headers.push(("Connection".into(), "close".into()));
    let mut head = format!("GET {} HTTP/1.1\r\n", get.path);
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<u16, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("EOF".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return response.code.ok_or_else(|| "no status code".to_owned())
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err("response head too large".into()),
            Err(e) => return Err(format!("malformed HTTP response: {e}")),
        }
    }
}

fn tls_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(NoVerification(provider.clone()));
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(verifier)
                        .with_no_client_auth()
                });
            match config {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    // The ring provider supports the default versions; this cannot happen.
                    tracing::error!(error = %e, "kubelet: building the probes' TLS config");
                    Arc::new(
                        ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth(),
                    )
                }
            }
        })
        .clone()
}

/// Probes skip certificate verification (kubelet: InsecureSkipVerify), but the handshake's
/// signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves one connection with `response`, and hands back the request head it read.
    async fn serve_once(response: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request ended early");
                buf.extend_from_slice(&chunk[..n]);
            }
            s.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(buf).unwrap()
        });
        (port, task)
    }

    fn get(port: u16, headers: &[(&str, &str)]) -> HttpGet {
        HttpGet {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn http_success_sends_headers() {
        let (port, server) = serve_once("HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n").await;
        let outcome = http_get(
            &get(port, &[("X-Probe", "yes"), ("accept", "text/plain")]),
            SECOND,
        )
        .await;
        assert_eq!(outcome, Outcome::Success(String::new()));
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(head.contains("User-Agent: kube-probe/1.32\r\n"), "{head}");
        assert!(head.contains("X-Probe: yes\r\n"), "{head}");
        assert!(head.contains("accept: text/plain\r\n"), "{head}");
        assert!(!head.contains("Accept: */*"), "{head}");
    }

    #[tokio::test]
    async fn http_failures() {
        let (port, _server) =
            serve_once("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            http_get(&get(port, &[]), SECOND).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert_eq!(
            http_get(&get(port, &[]), SECOND).await,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );

        // Accepts but never answers: the timeout decides.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let Outcome::Failure(message) = http_get(&get(port, &[]), Duration::from_millis(200)).await
        else {
            panic!("a silent server succeeded");
        };
        assert!(message.contains("Client.Timeout exceeded"), "{message}");
    }

    #[tokio::test]
    async fn tcp_connects_or_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            tcp("127.0.0.1", port, SECOND).await,
            Outcome::Success(String::new())
        );
        drop(listener);
        assert_eq!(
            tcp("127.0.0.1", port, SECOND).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }
}
