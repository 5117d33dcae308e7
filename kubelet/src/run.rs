//! The kubelet's top level: register the Node, wait for its pod CIDR, open the image store,
//! detect the cgroup driver, then run the node status loop and the pods until shutdown.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_dataplane::podnet::{Ipv4Cidr, PodNetConfig, PodNetwork};
use futures::FutureExt;
use k8s_openapi::api::core::v1::ContainerImage;

use crate::cgroup::CgroupManager;
use crate::config::KubeletConfig;
use crate::events::Recorder;
use crate::image::ImageStore;
use crate::node::{self, NodeAgent, NodeConfig, Providers};
use crate::pods::{self, Context, Registry};
use crate::server;
use crate::KubeletError;

/// How long to wait for the IPAM controller to give the Node a pod CIDR.
const POD_CIDR_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the kubelet until `shutdown`. Pods keep running after it returns: their shims hold them,
/// and the next kubelet re-adopts them.
pub async fn run(
    client: kube::Client,
    config: KubeletConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), KubeletError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = crate::apilimit::limit_in_flight(client, crate::apilimit::MAX_IN_FLIGHT);
    let shutdown = shutdown.shared();
    std::fs::create_dir_all(config.pods_dir()).map_err(|source| KubeletError::Io {
        op: "create",
        path: config.pods_dir(),
        source,
    })?;
    let images = ImageStore::open(&config.data_dir.join("images"), config.registry.clone())?;
    let cgroups = CgroupManager::detect(Path::new("/proc/self/mountinfo"), &config.cgroup_base)?;

    // The server's port first: the Node advertises it.
    let registry = Registry::new(config.pods_dir());
    let listener = tokio::net::TcpListener::bind((config.node_ip, config.port))
        .await
        .map_err(|source| KubeletError::Io {
            op: "listen on",
            path: format!("{}:{}", config.node_ip, config.port).into(),
            source,
        })?;
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(config.port);
    match &config.serving {
        Some(tls) => {
            let tls = server::tls_config(&tls.cert_pem, &tls.key_pem, &tls.client_ca_pem).map_err(
                |e| KubeletError::Config {
                    message: format!("the kubelet's TLS: {e}"),
                },
            )?;
            let lookup: Arc<dyn server::ContainerLookup> = Arc::new(registry.clone());
            tokio::spawn(server::serve(listener, tls, lookup));
        }
        None => tracing::warn!("kubelet: no serving certificate; logs and exec are not served"),
    }
    let node_config = NodeConfig {
        kubelet_port: port,
        internal_ip: config.node_ip,
        hostname: config.node_name.clone(),
        labels: config.node_labels.clone(),
        max_pods: config.max_pods,
        data_dir: config.data_dir.clone(),
        thresholds: config.eviction_hard.clone(),
        ..NodeConfig::new(&config.node_name, config.node_ip, config.data_dir.clone())
    };
    let host = node::read_host(&node_config.roots(), &config.data_dir)?;
    let listed = images.clone();
    let providers = Providers {
        readiness: Arc::new(|| Ok(())),
        images: Arc::new(move || {
            listed
                .list()
                .into_iter()
                .map(|i| ContainerImage {
                    names: Some(i.names),
                    size_bytes: Some(i.size as i64),
                })
                .collect()
        }),
    };
    let mut agent = NodeAgent::new(client.clone(), node_config, host.clone(), providers);
    let node = agent.register().await?;
    tracing::info!(node = %config.node_name, "kubelet: node registered");
    let agent_stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = agent.run(agent_stop).await {
            tracing::error!(error = %e, "kubelet: the node status loop stopped");
        }
    });

    let pod_cidr = node::wait_pod_cidr(&client, &config.node_name, POD_CIDR_TIMEOUT).await?;
    let cidr: Ipv4Cidr = pod_cidr.parse().map_err(|e| KubeletError::Config {
        message: format!("the node's podCIDR {pod_cidr:?}: {e}"),
    })?;
    let network = PodNetwork::new(PodNetConfig {
        pod_cidr: cidr,
        state_dir: config.data_dir.join("ipam"),
        mtu: pod_mtu(config.node_ip).await,
    })?;
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default();
    let quantity = |name: &str| {
        allocatable
            .get(name)
            .map(|q| q.0.clone())
            .unwrap_or_default()
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), &config.node_name),
        registry,
        client,
        images,
        cgroups,
        network,
        allocatable_cpu_millis: parse(&quantity("cpu")).map_or(0, |q| q.as_milli().max(0) as u64),
        allocatable_memory: parse(&quantity("memory")).map_or(0, |q| q.as_value().max(0) as u64),
        memory_capacity: host.memory_bytes,
        config,
    });
    let gc = tokio::spawn(crate::image_gc::run(ctx.clone()));
    let eviction = tokio::spawn(crate::eviction::run(ctx.clone()));
    pods::run(ctx, shutdown).await;
    gc.abort();
    eviction.abort();
    Ok(())
}

fn parse(q: &str) -> Option<berth_api::Quantity> {
    berth_api::Quantity::parse(q).ok()
}

/// The address of the interface the default route leaves through (a UDP "connect" sends no
/// packet), else loopback.
pub fn default_node_ip() -> IpAddr {
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).map(|()| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip(),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// Pods get the MTU of the node's uplink (the link holding the node IP): routed, no
/// encapsulation. 1500 when it cannot be found.
async fn pod_mtu(node_ip: std::net::IpAddr) -> u32 {
    const DEFAULT_MTU: u32 = 1500;
    let std::net::IpAddr::V4(ip) = node_ip else {
        return DEFAULT_MTU;
    };
    match berth_dataplane::routes::uplink_for(ip).await {
        Ok(uplink) => berth_dataplane::podnet::pod_mtu(uplink.and_then(|u| u.mtu), DEFAULT_MTU),
        Err(e) => {
            tracing::warn!(%ip, error = %e, "kubelet: the uplink's MTU; pods get {DEFAULT_MTU}");
            DEFAULT_MTU
        }
    }
}
