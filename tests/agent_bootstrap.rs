//! TLS bootstrap end to end: `berth server` makes a join token; a bootstrap token may only ask
//! for certificates; the controllers approve and sign node certificates; `kubectl get csr` and
//! `kubectl certificate approve` work; and (privileged) `berth agent` exchanges the token for
//! its certificates and registers its Node as that node.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_controllers::csr::bootstrap;
use common::{runtime, wait_for, LineReader, Server};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// A short random tag for names that must not meet other tests' (nodes, cgroups, CIDRs).
fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id() & 0xfff, nanos & 0xffff)
}

fn control_plane() -> Server {
    Server::start_control_plane(&["--cluster-cidr", &common::cluster::cluster_cidr()])
}

fn join_token(server: &Server) -> String {
    let text = std::fs::read_to_string(server.data_dir.join("join-token"))
        .expect("berth server wrote <data-dir>/join-token before its startup line");
    text.trim().to_string()
}

/// A client presenting `token` as a bearer token.
async fn token_client(server: &Server, token: &str) -> kube::Client {
    let ca = server.data_dir.join("pki/ca.crt");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: {token}\n",
        server.url,
        ca.display()
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// A CSR object for a fresh key with subject `cn`/`orgs`.
fn csr(
    name: &str,
    signer: &str,
    cn: &str,
    orgs: &[&str],
    usages: &[&str],
) -> CertificateSigningRequest {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            // The server overwrites these with the requester's identity.
            username: Some("system:node:forged".into()),
            groups: Some(vec!["system:masters".into()]),
            ..Default::default()
        },
        status: None,
    }
}

fn issued(c: Option<&CertificateSigningRequest>) -> bool {
    c.and_then(|c| c.status.as_ref()?.certificate.as_ref())
        .is_some_and(|cert| !cert.0.is_empty())
}

fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn bootstrap_tokens_only_get_node_certificates() {
    let tag = tag();
    let server = control_plane();
    let token = join_token(&server);
    let (id, secret) = token.split_once('.').expect("<id>.<secret>");
    assert_eq!((id.len(), secret.len()), (6, 16), "{token}");
    let rt = runtime();
    rt.block_on(async {
        let admin = server.client().await;
        let stored = Api::<Secret>::namespaced(admin.clone(), "kube-system")
            .get(&format!("bootstrap-token-{id}"))
            .await
            .expect("the token's Secret");
        assert_eq!(
            stored.type_.as_deref(),
            Some("bootstrap.kubernetes.io/token")
        );

        // Anyone may read where the cluster is, and pin its CA by hash; nothing else.
        let anonymous = server.anonymous_client().await;
        let public = Api::<ConfigMap>::namespaced(anonymous, "kube-public");
        public
            .get("cluster-info")
            .await
            .expect("anonymous cluster-info");
        assert_eq!(api_code(public.list(&ListParams::default()).await), 401);
        let ca_pem = std::fs::read_to_string(server.data_dir.join("pki/ca.crt")).unwrap();
        let hash = bootstrap::ca_cert_hash(&ca_pem).expect("hash");
        let discovered = bootstrap::discover_ca(&server.url, &hash)
            .await
            .expect("the CA, pinned");
        assert_eq!(discovered, ca_pem);
        let wrong_pin = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            bootstrap::discover_ca(&server.url, &wrong_pin).await,
            Err(bootstrap::BootstrapError::CaHashMismatch { .. })
        ));

        // A wrong secret is no identity at all.
        let wrong = token_client(&server, &format!("{id}.0000000000000000")).await;
        let csrs = Api::<CertificateSigningRequest>::all(wrong);
        assert_eq!(api_code(csrs.list(&ListParams::default()).await), 401);

        let boot = token_client(&server, &token).await;
        // Nothing but certificate requests.
        let secrets = Api::<Secret>::namespaced(boot.clone(), "kube-system");
        assert_eq!(api_code(secrets.list(&ListParams::default()).await), 403);
        let nodes = Api::<Node>::all(boot.clone());
        let mut node = Node::default();
        node.metadata.name = Some(format!("berth-boot-{tag}"));
        assert_eq!(
            api_code(nodes.create(&PostParams::default(), &node).await),
            403
        );

        let csrs = Api::<CertificateSigningRequest>::all(boot.clone());
        let node_name = format!("berth-boot-{tag}");
        let request = csr(
            "node-csr-boot",
            CLIENT_SIGNER,
            &format!("system:node:{node_name}"),
            &["system:nodes"],
            &["digital signature", "client auth"],
        );
        let created = csrs
            .create(&PostParams::default(), &request)
            .await
            .expect("create");
        assert_eq!(
            created.spec.username.as_deref(),
            Some(format!("system:bootstrap:{id}").as_str()),
            "the requester is the token's user, whatever the client claimed"
        );
        assert!(!created
            .spec
            .groups
            .unwrap_or_default()
            .contains(&"system:masters".to_string()));
        let done = wait_for(&csrs, "node-csr-boot", "the certificate", issued)
            .await
            .expect("still there");
        let status = done.status.expect("status");
        let approved = &status.conditions.expect("conditions")[0];
        assert_eq!(
            (approved.type_.as_str(), approved.reason.as_deref()),
            ("Approved", Some("AutoApproved"))
        );
        let pem = status.certificate.expect("certificate").0;
        let text = String::from_utf8(pem).expect("PEM");
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");

        // The token's holder may not approve anything itself.
        let mut pending = created_pending(&admin).await;
        pending
            .status
            .get_or_insert_with(Default::default)
            .conditions = Some(vec![Default::default()]);
        let approve = csrs
            .replace_subresource("approval", "alice", &PostParams::default(), &pending)
            .await;
        assert_eq!(api_code(approve), 403);
    });

    // kubectl: the issued request, and an admin's approval of one nobody auto-approves.
    let k = server.kubectl();
    let table = k.ok(&["get", "csr"]);
    let boot_row = common::row(&table, "node-csr-boot");
    assert_eq!(
        boot_row[2..],
        [
            CLIENT_SIGNER,
            &format!("system:bootstrap:{id}"),
            "<none>",
            "Approved,Issued"
        ],
        "{table}"
    );
    assert_eq!(common::row(&table, "alice")[5], "Pending", "{table}");
    assert_eq!(
        k.ok(&["certificate", "approve", "alice"]),
        "certificatesigningrequest.certificates.k8s.io/alice approved\n"
    );
    let table = k.ok(&["get", "csr", "alice"]);
    // Approved, but no signer here issues kube-apiserver-client certificates.
    assert_eq!(common::row(&table, "alice")[5], "Approved", "{table}");
}

#[test]
fn a_restarted_server_keeps_its_join_token_while_the_secret_exists() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let mut server = Server::spawn("server", &data_dir, &[]);
    let first = join_token(&server);
    server.stop();
    let server = Server::spawn("server", &data_dir, &[]);
    assert_eq!(join_token(&server), first);
    // Once its Secret is deleted, the token is dead: the next start makes a new one.
    let (id, _) = first.split_once('.').unwrap();
    server.kubectl().ok(&[
        "delete",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    ]);
    drop(server);
    let server = Server::spawn("server", &data_dir, &[]);
    assert_ne!(join_token(&server), first);
}

/// An admin's request for a plain client certificate: never auto-approved.
async fn created_pending(admin: &kube::Client) -> CertificateSigningRequest {
    let csrs = Api::<CertificateSigningRequest>::all(admin.clone());
    csrs.create(
        &PostParams::default(),
        &csr(
            "alice",
            "kubernetes.io/kube-apiserver-client",
            "alice",
            &["dev"],
            &["digital signature", "client auth"],
        ),
    )
    .await
    .expect("create alice's request")
}

/// `berth agent` as a child; dropping it kills it and runs `berth cleanup` for its data dir.
struct Agent {
    child: Child,
    data_dir: PathBuf,
    cgroup_base: String,
}

impl Agent {
    /// Kills the agent (its pods would keep running), leaving its data directory as it is.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        common::cluster::berth_cleanup(
            Command::new(env!("CARGO_BIN_EXE_berth")),
            &self.data_dir,
            &self.cgroup_base,
        );
    }
}

/// How the agent learns the cluster CA.
enum Ca {
    File,
    Hash,
}

fn spawn_agent(
    server: &Server,
    data_dir: &Path,
    node: &str,
    cgroup_base: &str,
    ca: Ca,
) -> (Agent, LineReader) {
    let token_file = data_dir.with_file_name("token");
    std::fs::write(&token_file, join_token(server)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("agent")
        .args(["--server", &server.url])
        .arg("--token-file")
        .arg(&token_file)
        .args(match ca {
            Ca::File => vec![
                "--ca-file".to_string(),
                server.data_dir.join("pki/ca.crt").display().to_string(),
            ],
            Ca::Hash => {
                let pem = std::fs::read_to_string(server.data_dir.join("pki/ca.crt")).unwrap();
                vec![
                    "--ca-cert-hash".to_string(),
                    bootstrap::ca_cert_hash(&pem).expect("hash"),
                ]
            }
        })
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--node-name", node, "--node-ip", "127.0.0.1"])
        .args(["--cgroup-base", cgroup_base, "--kubelet-port", "0"])
        .args(["--bootstrap-timeout", "30s"])
        // This is about joining; the data plane (which would own the host's bpffs, cgroup2 root
        // and nft table "berth" at its defaults) has tests of its own.
        .arg("--dataplane=false")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning berth agent");
    let lines = LineReader::new(child.stdout.take().expect("stdout"));
    (
        Agent {
            child,
            data_dir: data_dir.to_path_buf(),
            cgroup_base: cgroup_base.to_string(),
        },
        lines,
    )
}

fn kubelet_can_run() -> bool {
    match common::cluster::can_run_kubelet() {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var_os("BERTH_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
                panic!("BERTH_REQUIRE_PRIVILEGED=1 but: {reason}");
            }
            eprintln!("skipping: {reason}");
            false
        }
    }
}

#[test]
fn agent_joins_with_a_token_and_registers_as_its_node() {
    if !kubelet_can_run() {
        return;
    }
    let tag = tag();
    let server = control_plane();
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("agent");
    let node = format!("berth-agent-{tag}");
    let cgroup_base = format!("berth-agent-{tag}");
    let (mut agent, mut lines) = spawn_agent(&server, &data_dir, &node, &cgroup_base, Ca::Hash);
    lines.wait_for(Duration::from_secs(60), |l| {
        l.starts_with(&format!("berth: node {node} has its credentials"))
    });
    let kubeconfig = std::fs::read_to_string(data_dir.join("kubelet.kubeconfig")).unwrap();
    assert!(kubeconfig.contains(&server.url) && kubeconfig.contains("client-key-data"));
    for f in ["kubelet.kubeconfig", "kubelet-serving.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is private");
    }

    let rt = runtime();
    rt.block_on(async {
        let nodes = Api::<Node>::all(server.client().await);
        wait_for(
            &nodes,
            &node,
            "the agent's Node to be Ready",
            |n: Option<&Node>| {
                n.and_then(|n| n.status.as_ref()?.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            },
        )
        .await
        .expect("the Node");
    });
    let k = server.kubectl();
    let table = k.ok(&["get", "node", &node]);
    assert_eq!(common::row(&table, &node)[1], "Ready", "{table}");
    let csrs = k.ok(&["get", "csr"]);
    let rows: Vec<Vec<&str>> = csrs
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // The client certificate, asked for with the token; the serving one, asked for by the node.
    let signed_by = |signer: &str| {
        rows.iter()
            .find(|r| r[2] == signer)
            .unwrap_or_else(|| panic!("no {signer} request in:\n{csrs}"))
            .clone()
    };
    let client = signed_by(CLIENT_SIGNER);
    assert!(client[3].starts_with("system:bootstrap:"), "{csrs}");
    assert_eq!(client[5], "Approved,Issued", "{csrs}");
    let serving = signed_by("kubernetes.io/kubelet-serving");
    assert_eq!(serving[3], format!("system:node:{node}"), "{csrs}");
    assert_eq!(serving[5], "Approved,Issued", "{csrs}");

    // A restarted agent reuses its credentials: no new requests.
    agent.kill();
    let (second, mut lines) = spawn_agent(&server, &data_dir, &node, &cgroup_base, Ca::File);
    lines.wait_for(Duration::from_secs(60), |l| {
        l.contains("has its credentials")
    });
    let again = k.ok(&["get", "csr", "--no-headers"]);
    assert_eq!(again.lines().count(), 2, "{again}");
    // `berth cleanup` takes the node's credentials with it.
    drop(second);
    for f in [
        "kubelet.kubeconfig",
        "kubelet-serving.crt",
        "kubelet-serving.key",
    ] {
        assert!(!data_dir.join(f).exists(), "berth cleanup leaves {f}");
    }
}
