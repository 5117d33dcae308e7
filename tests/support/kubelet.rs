//! What the kubelet's end-to-end test files share: a registry holding the busybox test image and
//! a `berth up` cluster pulling from it.

#[path = "../../kubelet/tests/support/registry.rs"]
pub mod registry;

use crate::common::cluster::{can_run_kubelet, Cluster};
use registry::Registry;

pub const IMAGE_REPO: &str = "berth-test/busybox:1";

/// A registry with the busybox test image, and a cluster (`berth up` + `extra` flags) pulling
/// from it, its node Ready; plus the image's full name. None when the test can't run here.
#[allow(dead_code)] // Multi-node tests include this file for the registry and set up their own.
pub async fn setup(extra: &[&str]) -> Option<(Registry, Cluster, String)> {
    if let Err(why) = can_run_kubelet() {
        registry::skip(&why);
        return None;
    }
    let registry = Registry::start_or_skip()?;
    let host = registry.host();
    registry::push_busybox(&host, IMAGE_REPO).await;
    let mut args = vec!["--insecure-registry", host.as_str()];
    args.extend_from_slice(extra);
    let cluster = Cluster::up(&args);
    cluster.wait_node_ready().await;
    let image = format!("{host}/{IMAGE_REPO}");
    Some((registry, cluster, image))
}
