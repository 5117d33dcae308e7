//! The image store against a registry that wants bearer tokens (docker-registry with
//! `auth: token:`): oci-client follows the `WWW-Authenticate: Bearer realm=…` challenge to the
//! test's token server, sending the pull secret's user and password there, and presents the
//! token it gets to the registry, which checks its signature, issuer, audience and access.

#[path = "support/registry.rs"]
mod registry;
#[path = "support/token_server.rs"]
mod token_server;

use berth_kubelet::image::{Credentials, ImageError, ImageStore, PullPolicy, RegistryConfig};
use registry::*;
use token_server::*;

fn insecure(host: &str) -> RegistryConfig {
    RegistryConfig {
        insecure: vec![host.to_string()],
        ..RegistryConfig::default()
    }
}

/// The registry's `auth: token:` settings for tokens from `issuer_of` while clients are sent to
/// `realm_of` (the same server, unless a test wants the registry to distrust the issuer).
fn token_auth(realm_of: &TokenServer, issuer_of: &TokenServer) -> TokenAuth {
    TokenAuth {
        realm: realm_of.realm(),
        service: TOKEN_SERVICE.to_string(),
        issuer: TOKEN_ISSUER.to_string(),
        root_cert_pem: issuer_of.root_cert_pem().to_string(),
    }
}

fn credentials(host: &str, password: &str) -> Credentials {
    Credentials {
        registry: host.to_string(),
        username: AUTH_USER.into(),
        password: password.into(),
    }
}

/// Requests after the first `since`.
fn requests_since(server: &TokenServer, since: usize) -> Vec<TokenRequest> {
    server.requests().into_iter().skip(since).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_with_pull_secret_and_node_credentials() {
    let tokens = TokenServer::start(AUTH_USER, AUTH_PASSWORD);
    let Some(reg) = Registry::start_with_token_auth_or_skip(&token_auth(&tokens, &tokens)) else {
        return;
    };
    let host = reg.host();
    let image = busybox_image();
    push(&host, "private:1", &image, Some((AUTH_USER, AUTH_PASSWORD))).await;
    assert!(
        tokens.requests().iter().any(|r| r.granted
            && r.user.as_deref() == Some(AUTH_USER)
            && r.scopes == ["repository:private:pull,push"]),
        "the push went through the token server: {:?}",
        tokens.requests()
    );
    let reference = format!("{host}/private:1");
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("a"), insecure(&host)).unwrap();

    // Anonymous: the token server refuses, so the registry never sees a token.
    let seen = tokens.requests().len();
    let err = store
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .unwrap_err();
    match &err {
        ImageError::Unauthorized { message, .. } => {
            assert!(message.contains("token server refused"), "{message}")
        }
        other => panic!("anonymous: expected Unauthorized, got {other:?}"),
    }
    let anonymous = requests_since(&tokens, seen);
    assert!(
        anonymous.iter().any(|r| r.user.is_none() && !r.granted),
        "{anonymous:?}"
    );

    // A wrong password: refused by the token server, and the pull fails with the token
    // server's own words — what the pod's ErrImagePull message shows.
    let seen = tokens.requests().len();
    let wrong = credentials(&host, "wrong");
    let err = store
        .ensure(
            &reference,
            PullPolicy::IfNotPresent,
            std::slice::from_ref(&wrong),
        )
        .await
        .unwrap_err();
    match &err {
        ImageError::Unauthorized { message, .. } => {
            assert!(message.contains(REFUSAL), "{message}")
        }
        other => panic!("wrong password: expected Unauthorized, got {other:?}"),
    }
    assert!(err.to_string().contains(&reference), "{err}");
    let refused = requests_since(&tokens, seen);
    assert!(
        refused.iter().any(|r| r.user.as_deref() == Some(AUTH_USER)
            && !r.granted
            && r.scopes == ["repository:private:pull"]),
        "the wrong password reached the token server and was refused: {refused:?}"
    );
    assert!(refused.iter().all(|r| !r.granted), "{refused:?}");
    assert!(store.get(&reference).is_none());

    // The wrong secret first, then the right one: a pull-only token for this repository, for
    // this registry's service, and the image arrives whole.
    let seen = tokens.requests().len();
    let img = store
        .ensure(
            &reference,
            PullPolicy::IfNotPresent,
            &[wrong, credentials(&host, AUTH_PASSWORD)],
        )
        .await
        .expect("pull through the token flow");
    assert_eq!(img.id, image.id());
    assert_eq!(
        img.repo_digest,
        format!("{host}/private@{}", image.manifest_digest())
    );
    assert!(
        std::fs::metadata(img.layers[0].join("bin/busybox"))
            .unwrap()
            .len()
            > 100_000
    );
    let pulled = requests_since(&tokens, seen);
    let granted: Vec<_> = pulled.iter().filter(|r| r.granted).collect();
    assert!(!granted.is_empty(), "{pulled:?}");
    for r in &granted {
        assert_eq!(r.user.as_deref(), Some(AUTH_USER));
        assert_eq!(r.service.as_deref(), Some(TOKEN_SERVICE));
        assert_eq!(r.scopes, ["repository:private:pull"], "pull only: {r:?}");
    }

    // The token reaches past the manifest check: a missing tag is the registry's "manifest
    // unknown", not a refusal.
    let err = store
        .ensure(
            &format!("{host}/private:nope"),
            PullPolicy::Always,
            &[credentials(&host, AUTH_PASSWORD)],
        )
        .await
        .unwrap_err();
    match &err {
        ImageError::NotFound { message, .. } => {
            assert!(message.contains("manifest unknown"), "{message}")
        }
        other => panic!("missing tag: expected NotFound, got {other:?}"),
    }

    // The node's own credentials, from the registries config, take the same path.
    let mut config = insecure(&host);
    config
        .credentials
        .insert(host.clone(), credentials(&host, AUTH_PASSWORD));
    let store2 = ImageStore::open(&dir.path().join("b"), config).unwrap();
    let seen = tokens.requests().len();
    let img2 = store2
        .ensure(&reference, PullPolicy::Always, &[])
        .await
        .expect("pull with node credentials");
    assert_eq!(img2.id, image.id());
    assert!(requests_since(&tokens, seen)
        .iter()
        .any(|r| r.granted && r.scopes == ["repository:private:pull"]));
}

/// Tokens signed by a key the registry's root bundle does not vouch for are refused: proof the
/// registry verifies what the token server signs, so the test above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_an_untrusted_signer_are_refused() {
    let trusted = TokenServer::start(AUTH_USER, AUTH_PASSWORD);
    let rogue = TokenServer::start(AUTH_USER, AUTH_PASSWORD);
    let Some(reg) = Registry::start_with_token_auth_or_skip(&token_auth(&rogue, &trusted)) else {
        return;
    };
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path(), insecure(&host)).unwrap();
    let err = store
        .ensure(
            &format!("{host}/private:1"),
            PullPolicy::IfNotPresent,
            &[credentials(&host, AUTH_PASSWORD)],
        )
        .await
        .unwrap_err();
    // Unauthorized, not "manifest unknown": the registry refused before looking.
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");
    assert!(
        rogue.requests().iter().any(|r| r.granted),
        "the rogue server issued a token: {:?}",
        rogue.requests()
    );
    assert!(trusted.requests().is_empty());
}

#[test]
fn token_server_refuses_bad_requests_and_decodes_scopes() {
    let tokens = TokenServer::start(AUTH_USER, AUTH_PASSWORD);
    let addr = tokens.realm()["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let get = |path: &str, auth: Option<&str>| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    use base64::Engine;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let refused = get(
        "/token?scope=repository%3Aa%3Apull",
        Some(&basic(AUTH_USER, "x")),
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains(REFUSAL));
    let ok = get(
        "/token?service=svc&scope=repository%3Aa%2Fb%3Apull%2Cpush+repository%3Ac%3Apull",
        Some(&basic(AUTH_USER, AUTH_PASSWORD)),
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body: serde_json::Value =
        serde_json::from_str(ok.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["expires_in"], TOKEN_LIFETIME);
    let jwt = body["token"].as_str().unwrap();
    assert_eq!(body["access_token"], jwt);
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: serde_json::Value =
        serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], "svc");
    assert_eq!(claims["iss"], TOKEN_ISSUER);
    assert_eq!(claims["sub"], AUTH_USER);
    assert_eq!(
        claims["access"],
        serde_json::json!([
            {"type": "repository", "name": "a/b", "actions": ["pull", "push"]},
            {"type": "repository", "name": "c", "actions": ["pull"]},
        ])
    );
    assert_eq!(engine.decode(parts[2]).unwrap().len(), 64, "ES256 is r‖s");
    assert_eq!(
        tokens.requests().last().unwrap().scopes,
        ["repository:a/b:pull,push", "repository:c:pull"]
    );
    assert!(get("/other", None).starts_with("HTTP/1.1 404"));
}
