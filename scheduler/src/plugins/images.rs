//! ImageLocality: favours nodes that already have the pod's images, each image's size scaled
//! by the share of nodes that have it (so an image everywhere does not dominate).

use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;

use super::MAX_NODE_SCORE;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Sums, per node slot, the scaled sizes of the pod's images the node has, and calls `f` with
/// each slot whose sum is positive. Only the nodes having an image are visited: `sums` (indexed
/// by slot) and `touched` are scratch buffers, left zeroed and empty.
pub(crate) fn for_each_sum(
    pod: &PodInfo,
    snapshot: &Snapshot,
    sums: &mut Vec<i64>,
    touched: &mut Vec<u32>,
    mut f: impl FnMut(u32, i64),
) {
    let total = snapshot.num_nodes() as f64;
    if sums.len() < snapshot.slots().len() {
        sums.resize(snapshot.slots().len(), 0);
    }
    touched.clear();
    for image in &pod.images {
        let Some(nodes) = snapshot.image_nodes(image) else {
            continue;
        };
        let spread = nodes.len() as f64 / total;
        for (&slot, &size) in nodes {
            let sum = &mut sums[slot as usize];
            if *sum == 0 {
                touched.push(slot);
            }
            *sum += (size as f64 * spread) as i64;
        }
    }
    for &slot in touched.iter() {
        // A slot appears twice only if its first sum was 0; take() makes the repeat see 0.
        let sum = std::mem::take(&mut sums[slot as usize]);
        if sum > 0 {
            f(slot, sum);
        }
    }
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
        let (mut sums, mut touched) = (Vec::new(), Vec::new());
        let collect = |pod: &PodInfo, sums: &mut Vec<i64>, touched: &mut Vec<u32>| {
            let mut out = Vec::new();
            for_each_sum(pod, &snapshot, sums, touched, |slot, sum| {
                out.push((slot, sum))
            });
            out
        };
        // One node of two has it: 500 MB × 1/2.
        assert_eq!(collect(&pod, &mut sums, &mut touched), vec![(0, 250 * MB)]);
        assert_eq!(sums, vec![0, 0], "scratch left zeroed");
        assert_eq!(score(250 * MB, 1), 100 * (250 - 23) / (1000 - 23));
        assert_eq!(score(0, 1), 0);
        assert_eq!(score(5000 * MB, 2), 100);
        let other = PodInfo {
            images: vec!["other:1".into()],
            ..Default::default()
        };
        assert!(collect(&other, &mut sums, &mut touched).is_empty());
    }
}
