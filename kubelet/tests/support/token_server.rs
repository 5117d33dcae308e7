//! A Docker/OCI token server for tests: the `realm` a registry configured with `auth: token:`
//! sends clients to when it answers 401 `WWW-Authenticate: Bearer realm=…,service=…,scope=…`.
//!
//! It listens on plain HTTP on 127.0.0.1, checks HTTP Basic credentials, and answers
//! `GET /token?service=…&scope=repository:NAME:ACTIONS` with a JWT that docker-registry 2.8
//! accepts: ES256 over `base64url(header).base64url(claims)`, the header's `x5c` holding the
//! signing certificate and the CA it chains to (the registry's `rootcertbundle`), the claims
//! `iss`, `sub`, `aud` (= service), `exp`, `nbf`, `iat`, `jti` and `access`. Every request is
//! recorded so a test can tell which scopes were asked for, by whom, and whether they were
//! granted.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

/// The `issuer` the registry must trust and the `iss` of every token.
pub const TOKEN_ISSUER: &str = "berth-test-token-issuer";
/// The `service` the registry names in its challenge and the `aud` of every token.
pub const TOKEN_SERVICE: &str = "berth-test-registry";
/// How long a token lasts (seconds), as `expires_in` and in `exp`.
pub const TOKEN_LIFETIME: u64 = 300;
/// The body of a refusal: what a client that shows the token server's words would show.
pub const REFUSAL: &str = "berth token server: invalid username or password";

/// A CA and a leaf certificate signed by it, whose key signs tokens.
pub struct Signer {
    ca_pem: String,
    ca_der: Vec<u8>,
    leaf_der: Vec<u8>,
    key: EcdsaKeyPair,
}

impl Signer {
    pub fn generate(name: &str) -> Signer {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca_key = rcgen::KeyPair::generate_for(alg).expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign ca");
        let leaf_key = rcgen::KeyPair::generate_for(alg).expect("leaf key");
        let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf");
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} token signer"));
        leaf_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("sign leaf");
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &leaf_key.serialize_der(),
            &SystemRandom::new(),
        )
        .expect("ring key from rcgen pkcs8");
        Signer {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            leaf_der: leaf.der().to_vec(),
            key,
        }
    }

    /// The CA certificate (PEM): the registry's `rootcertbundle`.
    pub fn root_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A JWS compact serialization of `claims`, ES256, with the certificate chain in `x5c`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.leaf_der), STANDARD.encode(&self.ca_der)],
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        // FIXED signing gives r‖s (64 bytes), the JWS form; ASN.1 DER would be refused.
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("sign token");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// One request the token server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The Basic user, if any credentials came.
    pub user: Option<String>,
    pub service: Option<String>,
    /// `scope` parameters as sent (`repository:private:pull`).
    pub scopes: Vec<String>,
    /// Whether a token was issued.
    pub granted: bool,
}

struct State {
    user: String,
    password: String,
    signer: Signer,
    requests: Mutex<Vec<TokenRequest>>,
    stop: AtomicBool,
    next_jti: AtomicU64,
}

/// A running token server, stopped (and its thread joined) on drop.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Serves tokens to `user`/`password` only, signed by a freshly generated CA.
    pub fn start(user: &str, password: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let addr = listener.local_addr().expect("token server address");
        let state = Arc::new(State {
            user: user.to_string(),
            password: password.to_string(),
            signer: Signer::generate("berth-test"),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            next_jti: AtomicU64::new(1),
        });
        let thread_state = state.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if thread_state.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    // One request per connection, answered inline: tokens are tiny and tests
                    // ask for a handful.
                    let _ = serve(&thread_state, conn);
                }
            }
        });
        TokenServer {
            addr,
            state,
            thread: Some(thread),
        }
    }

    /// The URL for the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn root_cert_pem(&self) -> &str {
        self.state.signer.root_cert_pem()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(state: &State, mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let (path, authorization) = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let auth = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                break (req.path.unwrap_or("/").to_string(), auth);
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            _ => return respond(&mut conn, 400, "text/plain", "bad request"),
        }
    };
    let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
    if route != "/token" {
        return respond(&mut conn, 404, "text/plain", "not found");
    }
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone());
    // Several scopes come as repeated parameters or space-separated in one.
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let credentials = authorization.as_deref().and_then(basic_credentials);
    let granted = credentials
        .as_ref()
        .is_some_and(|(u, p)| *u == state.user && *p == state.password);
    state
        .requests
        .lock()
        .expect("requests lock")
        .push(TokenRequest {
            user: credentials.as_ref().map(|(u, _)| u.clone()),
            service: service.clone(),
            scopes: scopes.clone(),
            granted,
        });
    if !granted {
        let body = json!({ "details": REFUSAL }).to_string();
        return respond(&mut conn, 401, "application/json", &body);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let access: Vec<serde_json::Value> = scopes.iter().filter_map(|s| access_entry(s)).collect();
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": state.user,
        "aud": service.as_deref().unwrap_or(TOKEN_SERVICE),
        "exp": now + TOKEN_LIFETIME,
        "nbf": now,
        "iat": now,
        "jti": format!("berth-{}", state.next_jti.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let token = state.signer.sign(&claims);
    let issued_at = time::OffsetDateTime::from_unix_timestamp(now as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": TOKEN_LIFETIME,
        "issued_at": issued_at,
    })
    .to_string();
    respond(&mut conn, 200, "application/json", &body)
}

/// `repository:NAME:pull,push` → an `access` claim entry granting what was asked.
fn access_entry(scope: &str) -> Option<serde_json::Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some(json!({ "type": kind, "name": name, "actions": actions }))
}

fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(value.trim()).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn respond(conn: &mut TcpStream, code: u16, content_type: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let auth = if code == 401 {
        "WWW-Authenticate: Basic realm=\"berth-token\"\r\n"
    } else {
        ""
    };
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
