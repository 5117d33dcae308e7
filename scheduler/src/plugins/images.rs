//! ImageLocality: favours nodes that already have the pod's images, each image's size scaled
//! by the share of nodes that have it (so an image everywhere does not dominate).

use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;

use super::MAX_NODE_SCORE;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Sums, per node slot, the scaled sizes of the pod's images the node has. Returns false (and
/// leaves `acc` untouched) when no node has any of them.
pub(crate) fn accumulate(pod: &PodInfo, snapshot: &Snapshot, acc: &mut Vec<i64>) -> bool {
    let total = snapshot.num_nodes() as f64;
    let mut any = false;
    for image in &pod.images {
        let Some(nodes) = snapshot.image_nodes(image) else {
            continue;
        };
        if !any {
            acc.clear();
            acc.resize(snapshot.slots().len(), 0);
            any = true;
        }
        let spread = nodes.len() as f64 / total;
        for (&slot, &size) in nodes {
            acc[slot as usize] += (size as f64 * spread) as i64;
        }
    }
    any
}

/// Maps a summed size to 0–100 between 23 MB and 1000 MB per container.
pub(crate) fn score(sum: i64, containers: usize) -> i64 {
    if sum <= MIN_THRESHOLD {
        return 0;
    }
    let max = MAX_CONTAINER_THRESHOLD * containers.max(1) as i64;
    let sum = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::node;
    use berth_api::k8s_openapi::api::core::v1::ContainerImage;

    #[test]
    fn scaled_by_spread_and_thresholds() {
        let mut snapshot = Snapshot::new();
        for name in ["n1", "n2"] {
            let mut n = node(name, "4", "8Gi", "110");
            if name == "n1" {
                n.status.as_mut().expect("status").images = Some(vec![ContainerImage {
                    names: Some(vec!["app:1".into()]),
                    size_bytes: Some(500 * MB),
                }]);
            }
            snapshot.add_node(&n).expect("node");
        }
        let pod = PodInfo {
            images: vec!["app:1".into()],
            ..Default::default()
        };
        let mut acc = Vec::new();
        assert!(accumulate(&pod, &snapshot, &mut acc));
        // One node of two has it: 500 MB × 1/2.
        assert_eq!(acc, vec![250 * MB, 0]);
        assert_eq!(score(acc[0], 1), 100 * (250 - 23) / (1000 - 23));
        assert_eq!(score(acc[1], 1), 0);
        assert_eq!(score(5000 * MB, 2), 100);
        let other = PodInfo {
            images: vec!["other:1".into()],
            ..Default::default()
        };
        assert!(!accumulate(&other, &snapshot, &mut acc));
    }
}
