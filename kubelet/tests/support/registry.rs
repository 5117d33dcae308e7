//! A real OCI registry for tests — Debian's `docker-registry` on a loopback port with its storage
//! in a tempdir — and small images built in Rust (busybox from the host's busybox-static) to
//! push to it.
//!
//! Shared by the kubelet's tests and the root package's end-to-end tests
//! (`#[path = "../kubelet/tests/support/registry.rs"] mod registry;`), so it only uses crates
//! both have: oci-client, rustls, tokio, tar, flate2, sha2, hex, serde_json, tempfile.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest, Sha256};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const BUSYBOX_BIN: &str = "/bin/busybox";
/// The credentials [`Registry::start_with_basic_auth`] accepts.
pub const AUTH_USER: &str = "berth";
pub const AUTH_PASSWORD: &str = "berth-secret";
/// bcrypt (cost 5, so each request's check stays cheap) of [`AUTH_PASSWORD`]; docker-registry's
/// htpasswd only takes bcrypt.
const AUTH_BCRYPT: &str = "$2y$05$berthtestsaltsaltsalt.xY1S4lqGWPya4GV3TNz5dvXmL4C5FI2";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Ports tried before a registry gives up (each lost to another process's bind).
const PORT_ATTEMPTS: usize = 5;

/// The registry exited at once: its port had been taken.
struct PortTaken;
/// A fixed mtime so the same content always makes the same layer digest.
const MTIME: u64 = 1_700_000_000;

/// The privileged-test skip rule: print why and skip, unless `BERTH_REQUIRE_PRIVILEGED=1`
/// makes a skip a failure.
pub fn skip(reason: &str) {
    if std::env::var("BERTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("cannot skip ({reason}) with BERTH_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("skipping: {reason}");
}

/// What `auth: token:` needs: clients without a valid bearer token are sent to `realm` (a
/// token server) for one naming `service`; tokens must come from `issuer` and be signed by a
/// key whose certificate chains to `root_cert_pem`.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_pem: String,
}

enum Auth {
    Anonymous,
    Basic,
    Token(TokenAuth),
}

/// A running `docker-registry serve`, killed on drop.
pub struct Registry {
    child: Option<Child>,
    ip: std::net::Ipv4Addr,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts an anonymous registry; `None` (after [`skip`]) when docker-registry or busybox
    /// are not installed.
    pub fn start_or_skip() -> Option<Registry> {
        Self::check_tools()
            .then(|| Self::start_inner(Auth::Anonymous, std::net::Ipv4Addr::LOCALHOST))
    }

    /// Like [`Registry::start_or_skip`], listening on `ip` (an address of a link the test made,
    /// for nodes in other network namespaces).
    #[allow(dead_code)] // Not every test binary including this file has nodes elsewhere.
    pub fn start_on_or_skip(ip: std::net::Ipv4Addr) -> Option<Registry> {
        Self::check_tools().then(|| Self::start_inner(Auth::Anonymous, ip))
    }

    /// Like [`Registry::start_or_skip`], with htpasswd basic auth for
    /// [`AUTH_USER`]/[`AUTH_PASSWORD`].
    pub fn start_with_basic_auth_or_skip() -> Option<Registry> {
        Self::check_tools().then(|| Self::start_inner(Auth::Basic, std::net::Ipv4Addr::LOCALHOST))
    }

    /// Like [`Registry::start_or_skip`], with the Docker/OCI token flow (`auth: token:`): every
    /// request needs a bearer token from `auth.realm`.
    #[allow(dead_code)] // Only the token tests use it.
    pub fn start_with_token_auth_or_skip(auth: &TokenAuth) -> Option<Registry> {
        Self::check_tools()
            .then(|| Self::start_inner(Auth::Token(auth.clone()), std::net::Ipv4Addr::LOCALHOST))
    }

    /// Starts an anonymous registry; panics when docker-registry is missing.
    pub fn start() -> Registry {
        Self::start_inner(Auth::Anonymous, std::net::Ipv4Addr::LOCALHOST)
    }

    pub fn start_with_basic_auth() -> Registry {
        Self::start_inner(Auth::Basic, std::net::Ipv4Addr::LOCALHOST)
    }

    fn check_tools() -> bool {
        for tool in [REGISTRY_BIN, BUSYBOX_BIN] {
            if !Path::new(tool).exists() {
                skip(&format!("{tool} is not installed"));
                return false;
            }
        }
        true
    }

    fn start_inner(auth: Auth, ip: std::net::Ipv4Addr) -> Registry {
        // A free port is free only until someone binds it: another test may take it between
        // `free_port` and the registry's own bind. Then start again on another.
        (0..PORT_ATTEMPTS)
            .find_map(|_| Self::try_start(&auth, ip))
            .unwrap_or_else(|| panic!("docker-registry lost its port {PORT_ATTEMPTS} times"))
    }

    /// Starts a registry in a directory of its own; `None` when its port was taken.
    fn try_start(auth: &Auth, ip: std::net::Ipv4Addr) -> Option<Registry> {
        let dir = tempfile::tempdir().expect("registry tempdir");
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("registry storage dir");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n",
            storage.display()
        );
        if let Auth::Basic = auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{AUTH_USER}:{AUTH_BCRYPT}\n"))
                .expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        if let Auth::Token(token) = auth {
            let bundle = dir.path().join("token-root.pem");
            std::fs::write(&bundle, &token.root_cert_pem).expect("write token root bundle");
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                token.realm,
                token.service,
                token.issuer,
                bundle.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut registry = Registry {
            child: Some(child),
            ip,
            port,
            dir,
        };
        registry.wait_ready().ok()?;
        Some(registry)
    }

    /// Polls `GET /v2/` until it answers (200, or 401 with auth), bounded by a deadline;
    /// [`PortTaken`] when the registry exited because its port was in use.
    fn wait_ready(&mut self) -> Result<(), PortTaken> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = self.log();
                if log.contains("address already in use") {
                    return Err(PortTaken);
                }
                panic!("docker-registry exited with {status}: {log}");
            }
            if let Some(code) = http_status(self.ip, self.port, "/v2/") {
                // Whoever took the port may answer too: only a registry still running counts.
                let running = self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
                if (code == 200 || code == 401) && running {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `IP:PORT` (127.0.0.1 unless started elsewhere).
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Kills the registry now (e.g. to prove a later pull never reached it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_status(ip: std::net::Ipv4Addr, port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// The OCI architecture name of this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => {
            if other == "powerpc64" {
                "ppc64le"
            } else {
                "unknown"
            }
        }
    }
}

/// Builds one layer tar; entries are root-owned unless said otherwise, with a fixed mtime.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        LayerBuilder {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .expect("tar dir");
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.file_owned(path, data, mode, 0, 0)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar.append_data(&mut h, path, data).expect("tar file");
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("tar hardlink");
        self
    }

    /// Deletes `path` of a lower layer (`dir/.wh.name`).
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let p = Path::new(path);
        let name = p.file_name().expect("whiteout name").to_string_lossy();
        let wh = p.with_file_name(format!(".wh.{name}"));
        self.file(&wh.to_string_lossy(), b"", 0o644)
    }

    /// Hides everything lower layers have in `dir`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let p = Path::new(dir).join(".wh..wh..opq");
        self.file(&p.to_string_lossy(), b"", 0o644)
    }

    /// The uncompressed tar.
    pub fn finish(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish tar")
    }
}

/// A layer ready to push: the blob as stored in the registry and its uncompressed digest.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

impl Layer {
    pub fn gzip(tar: &[u8]) -> Layer {
        Layer {
            blob: gzip(tar),
            media_type: LAYER_GZIP,
            diff_id: sha256(tar),
        }
    }

    pub fn plain(tar: &[u8]) -> Layer {
        Layer {
            blob: tar.to_vec(),
            media_type: LAYER_TAR,
            diff_id: sha256(tar),
        }
    }

    pub fn digest(&self) -> String {
        sha256(&self.blob)
    }
}

/// An image's blobs and manifest, built in memory.
#[derive(Clone)]
pub struct BuiltImage {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub arch: String,
}

impl BuiltImage {
    /// `layers` bottom first; `env` and `cmd` become the config's `Env` and `Cmd`.
    pub fn new(layers: Vec<Layer>, env: &[&str], cmd: &[&str]) -> BuiltImage {
        Self::for_arch(layers, env, cmd, host_arch())
    }

    pub fn for_arch(layers: Vec<Layer>, env: &[&str], cmd: &[&str], arch: &str) -> BuiltImage {
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Env": env, "Cmd": cmd, "WorkingDir": "/" },
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
        }))
        .expect("config json");
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len() },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest(), "size": l.blob.len()
            })).collect::<Vec<_>>(),
        }))
        .expect("manifest json");
        BuiltImage {
            layers,
            config,
            manifest,
            arch: arch.to_string(),
        }
    }

    /// `sha256:` of the config: the image ID.
    pub fn id(&self) -> String {
        sha256(&self.config)
    }

    pub fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }
}

pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The busybox root filesystem layer (uncompressed tar): `/bin/busybox` from the host, a symlink
/// per applet, `/etc/passwd` and `/etc/group` (root, nobody 65534), and the usual empty
/// directories.
pub fn busybox_tar() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX_BIN).expect("read /bin/busybox");
    let list = Command::new(BUSYBOX_BIN)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    let mut b = LayerBuilder::new();
    b.dir("bin/", 0o755)
        .file("bin/busybox", &busybox, 0o755)
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644)
        .dir("proc/", 0o555)
        .dir("sys/", 0o555)
        .dir("dev/", 0o755)
        .dir("tmp/", 0o1777)
        .dir("root/", 0o700);
    let mut names: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
        .collect();
    names.sort();
    names.dedup();
    for applet in names {
        b.symlink(&format!("bin/{applet}"), "busybox");
    }
    b.finish()
}

/// The busybox image: one gzip layer, `PATH` set, `Cmd ["sh"]`.
pub fn busybox_image() -> BuiltImage {
    BuiltImage::new(vec![Layer::gzip(&busybox_tar())], &[PATH_ENV], &["sh"])
}

/// A test client: plain HTTP, optional basic auth.
pub fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

fn auth(basic: Option<(&str, &str)>) -> RegistryAuth {
    match basic {
        Some((u, p)) => RegistryAuth::Basic(u.into(), p.into()),
        None => RegistryAuth::Anonymous,
    }
}

fn reference(host: &str, repo_tag: &str) -> Reference {
    format!("{host}/{repo_tag}").parse().expect("reference")
}

/// Pushes the image's blobs and its manifest as `host/repo_tag`; returns the manifest digest.
pub async fn push(
    host: &str,
    repo_tag: &str,
    image: &BuiltImage,
    basic: Option<(&str, &str)>,
) -> String {
    let client = client();
    let r = reference(host, repo_tag);
    push_blobs(&client, &r, image, basic).await;
    client
        .push_manifest_raw(
            &r,
            image.manifest.clone(),
            OCI_MANIFEST.parse().expect("content type"),
        )
        .await
        .expect("push manifest");
    image.manifest_digest()
}

async fn push_blobs(
    client: &Client,
    r: &Reference,
    image: &BuiltImage,
    basic: Option<(&str, &str)>,
) {
    client
        .store_auth_if_needed(r.resolve_registry(), &auth(basic))
        .await;
    for layer in &image.layers {
        client
            .push_blob(r, layer.blob.clone(), &layer.digest())
            .await
            .expect("push layer");
    }
    client
        .push_blob(r, image.config.clone(), &image.id())
        .await
        .expect("push config");
}

/// Builds and pushes busybox as `host/repo_tag`; returns the image.
pub async fn push_busybox(host: &str, repo_tag: &str) -> BuiltImage {
    let image = busybox_image();
    push(host, repo_tag, &image, None).await;
    image
}

/// An image over busybox exercising what layer unpacking must get right: the top layer deletes
/// `/etc/group` (whiteout), replaces `/opaque`'s contents (opaque dir), adds a hard link and a
/// symlink. Layers: busybox, `/opaque/{old,keep}` + `/data/file`, then the changes.
pub fn layered_image() -> BuiltImage {
    let mut middle = LayerBuilder::new();
    middle
        .dir("opaque/", 0o755)
        .file("opaque/old", b"old", 0o644)
        .file("opaque/keep", b"lower", 0o644)
        .dir("data/", 0o755)
        .file_owned("data/file", b"payload", 0o640, 1000, 1000);
    let mut top = LayerBuilder::new();
    top.whiteout("etc/group")
        .dir("opaque/", 0o755)
        .opaque("opaque")
        .file("opaque/new", b"new", 0o644)
        .file("data/linked", b"shared inode", 0o644)
        .hardlink("data/hardlink", "data/linked")
        .symlink("data/symlink", "/data/linked");
    BuiltImage::new(
        vec![
            Layer::gzip(&busybox_tar()),
            Layer::gzip(&middle.finish()),
            Layer::gzip(&top.finish()),
        ],
        &[PATH_ENV],
        &["sh"],
    )
}

/// Pushes one image per architecture and an OCI index over them as `host/repo_tag`; returns
/// the index digest.
pub async fn push_index(host: &str, repo_tag: &str, images: &[&BuiltImage]) -> String {
    let client = client();
    let r = reference(host, repo_tag);
    let mut entries = Vec::new();
    for image in images {
        push_blobs(&client, &r, image, None).await;
        let by_digest = r.clone_with_digest(image.manifest_digest());
        client
            .push_manifest_raw(
                &by_digest,
                image.manifest.clone(),
                OCI_MANIFEST.parse().expect("content type"),
            )
            .await
            .expect("push platform manifest");
        entries.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest(),
            "size": image.manifest.len(),
            "platform": { "architecture": image.arch, "os": "linux" },
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    }))
    .expect("index json");
    client
        .push_manifest_raw(&r, index.clone(), OCI_INDEX.parse().expect("content type"))
        .await
        .expect("push index");
    sha256(&index)
}

/// An OCI image layout tar (what `skopeo copy ... oci-archive:` or `docker save` ≥ 25 writes)
/// holding `image` named `name` (a full reference).
pub fn oci_archive(name: &str, image: &BuiltImage) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = vec![
        (image.manifest_digest(), image.manifest.clone()),
        (image.id(), image.config.clone()),
    ];
    blobs.extend(image.layers.iter().map(|l| (l.digest(), l.blob.clone())));
    oci_archive_raw(name, &image.manifest_digest(), image.manifest.len(), &blobs)
}

/// An OCI layout whose index names the manifest `manifest_digest`, with `blobs` stored under
/// the digests given (which a test may make lie).
pub fn oci_archive_raw(
    name: &str,
    manifest_digest: &str,
    manifest_size: usize,
    blobs: &[(String, Vec<u8>)],
) -> Vec<u8> {
    let mut b = LayerBuilder::new();
    b.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("latest"),
            },
        }],
    }))
    .expect("index json");
    b.file("index.json", &index, 0o644)
        .dir("blobs/", 0o755)
        .dir("blobs/sha256/", 0o755);
    for (digest, bytes) in blobs {
        b.file(
            &format!("blobs/sha256/{}", &digest["sha256:".len()..]),
            bytes,
            0o644,
        );
    }
    b.finish()
}

/// A `docker save` (legacy layout) tar of `image` tagged `repo_tag`: uncompressed layers at
/// `<n>/layer.tar`, the config at `<id>.json`, `manifest.json` listing them.
pub fn docker_archive(repo_tag: &str, image: &BuiltImage, layer_tars: &[Vec<u8>]) -> Vec<u8> {
    let mut b = LayerBuilder::new();
    let config_name = format!("{}.json", &image.id()["sha256:".len()..]);
    b.file(&config_name, &image.config, 0o644);
    let mut layer_paths = Vec::new();
    for (i, tar) in layer_tars.iter().enumerate() {
        let p = format!("{i}/layer.tar");
        b.dir(&format!("{i}/"), 0o755).file(&p, tar, 0o644);
        layer_paths.push(p);
    }
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": [repo_tag], "Layers": layer_paths,
    }]))
    .expect("manifest json");
    b.file("manifest.json", &manifest, 0o644);
    b.finish()
}

/// Writes `bytes` to a file in `dir`.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write file");
    p
}
