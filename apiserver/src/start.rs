//! Assembles a running API server from its configuration: PKI, store, caches, HTTPS.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::alloc::ServiceAllocator;
use crate::auth::{AllowAuthenticated, TokenAuthenticator};
use crate::cache::Caches;
use crate::http::{self, IoMode};
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::registry;
use crate::rest::Api;
use crate::storage::{RedbOptions, RedbStore, Storage};

/// Largest request body, as Kubernetes' 3 MiB limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Namespaces that exist from the start, as in Kubernetes.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The address other hosts use to reach this server (added to the serving certificate).
    pub advertise_address: Option<IpAddr>,
    pub service_cidr: String,
    pub io: IoMode,
    /// I/O threads; 0 means one per CPU.
    pub threads: usize,
    /// A Kubernetes static token file (`token,user,uid,"groups"`).
    pub token_file: Option<PathBuf>,
    /// tolerationSeconds of the `node.kubernetes.io/not-ready:NoExecute` toleration added to
    /// pods that have none (`--default-not-ready-toleration-seconds`, 300 by default).
    pub default_not_ready_toleration_seconds: i64,
    /// The same for `node.kubernetes.io/unreachable:NoExecute`.
    pub default_unreachable_toleration_seconds: i64,
}

impl Config {
    pub fn new(data_dir: PathBuf) -> Self {
        Config {
            data_dir,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 6443)),
            advertise_address: None,
            service_cidr: "10.96.0.0/12".into(),
            io: IoMode::Auto,
            threads: 0,
            token_file: None,
            default_not_ready_toleration_seconds:
                berth_api::well_known::taints::DEFAULT_TOLERATION_SECONDS,
            default_unreachable_toleration_seconds:
                berth_api::well_known::taints::DEFAULT_TOLERATION_SECONDS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path} could not be created")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Alloc(#[from] crate::alloc::AllocError),
    #[error(transparent)]
    Server(#[from] http::ServerError),
    #[error(transparent)]
    KubeletClient(#[from] crate::proxy::ProxyError),
    #[error("system namespace {name} could not be created: {message}")]
    Bootstrap { name: String, message: String },
}

/// A started API server.
pub struct Running {
    pub local_addr: SocketAddr,
    /// "io_uring" or "epoll".
    pub driver: &'static str,
    pub kubeconfig: PathBuf,
    pub ca_cert: PathBuf,
    /// The HTTPS URL clients use.
    pub url: String,
    pub storage: Arc<RedbStore>,
}

fn serving_names(config: &Config, advertise: IpAddr, first_service_ip: Ipv4Addr) -> Vec<String> {
    let mut names: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        first_service_ip.to_string(),
        advertise.to_string(),
    ];
    if let Ok(host) = hostname::get() {
        if let Some(h) = host.to_str().filter(|h| !h.is_empty()) {
            names.push(h.to_lowercase());
        }
    }
    if !config.listen.ip().is_unspecified() {
        names.push(config.listen.ip().to_string());
    }
    names.sort();
    names.dedup();
    names
}

/// Starts the API server and returns once it is accepting connections.
pub fn start(config: Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let services = ServiceAllocator::new(&config.service_cidr)?;
    let advertise = config
        .advertise_address
        .unwrap_or_else(|| match config.listen.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        });
    let pki = Pki::load_or_create(&config.data_dir.join("pki"))?;
    let (cert, key) = pki.serving_cert(
        "apiserver",
        &serving_names(&config, advertise, services.first_ip()),
    )?;
    let tls = crate::tls::server_config(&cert, &key, &pki.ca_cert_path())?;
    let (kubelet_cert, kubelet_key) = pki.apiserver_kubelet_client()?;
    let kubelet_client =
        crate::proxy::KubeletClient::from_files(&pki.ca_cert_path(), &kubelet_cert, &kubelet_key)?;

    let metrics = Arc::new(Metrics::new());
    let store = RedbStore::open(
        &config.data_dir.join("store.redb"),
        RedbOptions {
            commit_observer: Some(metrics.commit_observer()),
            ..RedbOptions::default()
        },
    )?;
    let storage: Arc<dyn Storage> = store.clone();
    let caches = Caches::start(storage.clone())?;
    let svc_info = registry::find("", "v1", "services").expect("services are served");
    for svc in caches.get(svc_info).list(&svc_info.key_prefix()).0 {
        services.restore(&svc.value);
    }
    let tokens = match &config.token_file {
        Some(path) => TokenAuthenticator::from_file(path)?,
        None => TokenAuthenticator::default(),
    };
    let threads = if config.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.threads
    };
    let api = Arc::new(
        Api::new(
            storage,
            caches,
            tokens,
            Box::new(crate::bootstrap_token::BootstrapLimited(AllowAuthenticated)),
            services,
            metrics,
            SocketAddr::new(advertise, config.listen.port()).to_string(),
        )
        .with_default_tolerations(crate::registry::defaults::DefaultTolerationSeconds {
            not_ready: config.default_not_ready_toleration_seconds,
            unreachable: config.default_unreachable_toleration_seconds,
        })
        .with_kubelet_client(kubelet_client),
    );
    bootstrap(&api, config.listen.port())?;
    let handle = http::serve(
        http::ServerConfig {
            listen: config.listen,
            threads,
            io: config.io,
            tls,
            body_limit: MAX_BODY,
            idle_timeout: http::IDLE_TIMEOUT,
        },
        api,
    )?;
    let url = format!(
        "https://{}",
        SocketAddr::new(advertise, handle.local_addr.port())
    );
    let kubeconfig = config.data_dir.join("admin.kubeconfig");
    // The port may be new (e.g. port 0 in tests): rewrite the kubeconfig when it changed.
    let stale = std::fs::read_to_string(&kubeconfig)
        .map(|k| !k.contains(&format!("server: {url}\n")))
        .unwrap_or(true);
    if stale {
        let _ = std::fs::remove_file(&kubeconfig);
    }
    pki.ensure_kubeconfig(&kubeconfig, &url, "admin", &["system:masters"])?;
    Ok(Running {
        local_addr: handle.local_addr,
        driver: handle.driver,
        kubeconfig,
        ca_cert: pki.ca_cert_path(),
        url,
        storage: store,
    })
}

/// Removes the files the API server made under `data_dir` (store, PKI, kubeconfig), then the
/// directory itself if nothing else is in it. Returns what was removed.
pub fn cleanup(data_dir: &Path) -> Result<Vec<PathBuf>, StartError> {
    let mut removed = Vec::new();
    let failed = |path: &Path, source| StartError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    // join-token: `berth server`'s; kubelet.kubeconfig and kubelet-serving.*: `berth agent`'s.
    for name in [
        "store.redb",
        "admin.kubeconfig",
        "join-token",
        "kubelet.kubeconfig",
        "kubelet-serving.crt",
        "kubelet-serving.key",
    ] {
        let path = data_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(&path, e)),
        }
    }
    let pki = data_dir.join("pki");
    match std::fs::remove_dir_all(&pki) {
        Ok(()) => removed.push(pki),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(&pki, e)),
    }
    // Only an empty directory goes: whatever else is in it is not ours.
    if std::fs::remove_dir(data_dir).is_ok() {
        removed.push(data_dir.to_path_buf());
    }
    Ok(removed)
}

/// Creates the system namespaces, the `default/kubernetes` Service and the `kube-system/kube-dns`
/// Service when they do not exist yet.
fn bootstrap(api: &Api, port: u16) -> Result<(), StartError> {
    let create = |resource: &str, ns: &str, obj: serde_json::Value| {
        let info = registry::find("", "v1", resource).expect("core resources are served");
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let failed = |e: crate::status::ApiError| StartError::Bootstrap {
            name: name.clone(),
            message: e.message,
        };
        futures::executor::block_on(async {
            // Only what is missing is created: a restart must not trip over its own objects.
            match api.read_object(info, ns, &name).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == 404 => api
                    .create_object(info, ns, obj, false)
                    .await
                    .map(|_| ())
                    .map_err(failed),
                Err(e) => Err(failed(e)),
            }
        })
    };
    for name in SYSTEM_NAMESPACES {
        create(
            "namespaces",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )?;
    }
    // As in Kubernetes, the first ClusterIP belongs to the API server's own Service.
    let kubernetes = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": api.services.first_ip().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        },
    });
    create("services", "default", kubernetes)?;
    // Cluster DNS: every node's data plane answers on its own pod gateway and publishes that as an
    // endpoint of this Service; with internalTrafficPolicy Local each node's pods reach their own.
    let kube_dns = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": api.services.dns_ip().to_string(),
            "internalTrafficPolicy": "Local",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    });
    create("services", "kube-system", kube_dns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_removes_only_what_berth_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("pki")).unwrap();
        std::fs::write(data.join("pki/ca.crt"), "x").unwrap();
        std::fs::write(data.join("store.redb"), "x").unwrap();
        std::fs::write(data.join("admin.kubeconfig"), "x").unwrap();
        std::fs::write(data.join("notes.txt"), "not ours").unwrap();
        let removed = cleanup(&data).expect("cleanup");
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(data.join("notes.txt").exists());
        assert!(!data.join("pki").exists() && !data.join("store.redb").exists());
        std::fs::remove_file(data.join("notes.txt")).unwrap();
        // Nothing of ours left: the directory itself goes.
        assert_eq!(cleanup(&data).expect("cleanup"), vec![data.clone()]);
        assert!(!data.exists());
    }
}
