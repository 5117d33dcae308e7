//! The API server's client for kubelets: HTTPS with the API server's kubelet client
//! certificate, the kubelet's serving certificate verified against the cluster CA. pods/log and
//! pods/exec (in `rest::pod_proxy`) are proxied through it.

mod chunked;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use compio::io::compat::AsyncStream;
use compio::net::TcpStream;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

pub(crate) use chunked::ChunkDecoder;

/// A TLS connection to a kubelet.
pub(crate) type KubeletStream = futures_rustls::client::TlsStream<AsyncStream<TcpStream>>;

/// How long connecting to a kubelet (TCP and TLS) and getting its response head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response head or error body read from a kubelet.
const MAX_READ: usize = 64 * 1024;

/// Why a kubelet could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("kubelet client file {path} could not be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubelet client {what} PEM holds nothing usable")]
    Pem { what: &'static str },
    #[error("kubelet client tls configuration rejected")]
    Tls(#[source] rustls::Error),
    #[error("dial kubelet at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("kubelet at {addr} timed out")]
    Timeout { addr: SocketAddr },
    #[error("kubelet at {addr} sent a malformed response")]
    Malformed { addr: SocketAddr },
}

/// TLS settings for talking to kubelets; cheap to share.
pub struct KubeletClient {
    verified: Arc<rustls::ClientConfig>,
    /// For `insecureSkipTLSVerifyBackend=true`: the client certificate, no server check.
    insecure: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    /// From PEM files: the cluster CA and the API server's kubelet client certificate and key.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<KubeletClient, ProxyError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| ProxyError::Read {
                path: path.into(),
                source,
            })
        };
        KubeletClient::new(&read(ca)?, &read(cert)?, &read(key)?)
    }

    pub fn new(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<KubeletClient, ProxyError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut &ca_pem[..]).flatten() {
            roots.add(ca).map_err(ProxyError::Tls)?;
        }
        if roots.is_empty() {
            return Err(ProxyError::Pem { what: "ca" });
        }
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
            .flatten()
            .collect();
        if certs.is_empty() {
            return Err(ProxyError::Pem {
                what: "certificate",
            });
        }
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
            .ok()
            .flatten()
            .ok_or(ProxyError::Pem { what: "key" })?;
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(ProxyError::Tls)
        };
        let mut verified = builder()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(ProxyError::Tls)?;
        let mut insecure = builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider.clone())))
            .with_client_auth_cert(certs, key)
            .map_err(ProxyError::Tls)?;
        verified.alpn_protocols = vec![b"http/1.1".to_vec()];
        insecure.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            verified: Arc::new(verified),
            insecure: Arc::new(insecure),
        })
    }

    /// Connects, sends `head` (a whole request head, no body) and reads the response head.
    pub(crate) async fn request(
        &self,
        addr: SocketAddr,
        insecure: bool,
        head: &str,
    ) -> Result<Upstream, ProxyError> {
        let config = if insecure {
            self.insecure.clone()
        } else {
            self.verified.clone()
        };
        let connect = async {
            let connect_err = |source| ProxyError::Connect { addr, source };
            let tcp = TcpStream::connect(addr).await.map_err(connect_err)?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::IpAddress(addr.ip().into());
            let mut tls = futures_rustls::TlsConnector::from(config)
                .connect(name, AsyncStream::new(tcp))
                .await
                .map_err(connect_err)?;
            tls.write_all(head.as_bytes()).await.map_err(connect_err)?;
            tls.flush().await.map_err(connect_err)?;
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                let n = tls.read(&mut chunk).await.map_err(connect_err)?;
                if n == 0 || buf.len() > MAX_READ {
                    return Err(ProxyError::Malformed { addr });
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut res = httparse::Response::new(&mut headers);
                match res.parse(&buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = res.code.unwrap_or(0);
                        let headers = res
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect();
                        return Ok(Upstream {
                            status,
                            headers,
                            buffered: buf.split_off(len),
                            stream: tls,
                        });
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err(ProxyError::Malformed { addr }),
                }
            }
        };
        compio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ProxyError::Timeout { addr })?
    }
}

/// A kubelet's response, head read, body still on the connection.
pub(crate) struct Upstream {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes read together with the head.
    pub buffered: Vec<u8>,
    pub stream: KubeletStream,
}

impl Upstream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    /// Reads the whole (small) body, e.g. of an error; at most 64 KiB.
    pub async fn read_body(mut self) -> Vec<u8> {
        let mut raw = std::mem::take(&mut self.buffered);
        let mut decoder = ChunkDecoder::default();
        let mut body = Vec::new();
        let mut chunk = [0u8; 4096];
        let length = self
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        let work = async {
            loop {
                if self.chunked() {
                    match decoder.decode(&mut raw) {
                        Ok((data, done)) => {
                            body.extend_from_slice(&data);
                            if done {
                                break;
                            }
                        }
                        Err(()) => break,
                    }
                } else {
                    body.append(&mut raw);
                    if length.is_some_and(|l| body.len() >= l) {
                        body.truncate(length.unwrap_or(0));
                        break;
                    }
                }
                if body.len() > MAX_READ {
                    break;
                }
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&chunk[..n]),
                }
            }
        };
        let _ = compio::time::timeout(CONNECT_TIMEOUT, work).await;
        body
    }

    /// The body as a stream of chunks, for responses of any length (follow).
    pub fn into_stream(self) -> futures::stream::LocalBoxStream<'static, bytes::Bytes> {
        use futures::StreamExt;
        struct State {
            up: Upstream,
            raw: Vec<u8>,
            decoder: ChunkDecoder,
            chunked: bool,
            done: bool,
        }
        let chunked = self.chunked();
        let mut up = self;
        let raw = std::mem::take(&mut up.buffered);
        let state = State {
            up,
            raw,
            decoder: ChunkDecoder::default(),
            chunked,
            done: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                if s.done {
                    return None;
                }
                let data = if s.chunked {
                    match s.decoder.decode(&mut s.raw) {
                        Ok((data, done)) => {
                            s.done = done;
                            data
                        }
                        Err(()) => return None,
                    }
                } else {
                    std::mem::take(&mut s.raw)
                };
                if !data.is_empty() {
                    return Some((bytes::Bytes::from(data), s));
                }
                if s.done {
                    return None;
                }
                match s.up.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => s.raw.extend_from_slice(&chunk[..n]),
                }
            }
        })
        // The HTTP server polls once more after coalescing: a fused stream answers None again.
        .fuse()
        .boxed_local()
    }
}

/// Accepts any server certificate (signatures still checked), for
/// `insecureSkipTLSVerifyBackend`.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
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
