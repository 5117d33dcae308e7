//! Image garbage collection under disk pressure, as the kubelet's image GC does: when the
//! filesystem holding the images is more than `high` percent used, remove images no pod on this
//! node uses, least recently used first, until usage is back to `low` percent
//! (imageGCHighThresholdPercent 85, imageGCLowThresholdPercent 80).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::node::pressure::{fs_stats, FsStats};
use crate::pods::Context;

pub const HIGH_PERCENT: u64 = 85;
pub const LOW_PERCENT: u64 = 80;
/// How often usage is checked (the kubelet's ImageGCPeriod is 5 minutes; a check is a statvfs).
const PERIOD: Duration = Duration::from_secs(60);

/// Bytes to free to bring `fs` from above `high`% used down to `low`%; 0 when under `high`.
pub fn bytes_to_free(fs: &FsStats, high: u64, low: u64) -> u64 {
    if fs.total_bytes == 0 {
        return 0;
    }
    let used = fs.total_bytes.saturating_sub(fs.available_bytes);
    if (used as u128) * 100 <= (fs.total_bytes as u128) * high as u128 {
        return 0;
    }
    let target = ((fs.total_bytes as u128) * low as u128 / 100) as u64;
    used.saturating_sub(target)
}

/// Runs until the task is dropped.
pub(crate) async fn run(ctx: Arc<Context>) {
    let dir = ctx.config.data_dir.join("images");
    loop {
        tokio::time::sleep(PERIOD).await;
        collect(&ctx, &dir);
    }
}

fn collect(ctx: &Context, dir: &Path) {
    let fs = match fs_stats(dir) {
        Ok(fs) => fs,
        Err(e) => {
            tracing::warn!(error = %e, "kubelet: image GC cannot read the image filesystem");
            return;
        }
    };
    let wanted = bytes_to_free(&fs, HIGH_PERCENT, LOW_PERCENT);
    if wanted == 0 {
        return;
    }
    let in_use: HashSet<String> = ctx
        .registry
        .images_in_use()
        .iter()
        .filter_map(|reference| ctx.images.get(reference).map(|i| i.id))
        .collect();
    match ctx.images.remove_unused(&in_use, wanted) {
        Ok(freed) => tracing::info!(freed, wanted, "kubelet: image garbage collection"),
        Err(e) => tracing::warn!(error = %e, "kubelet: image garbage collection"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(total: u64, available: u64) -> FsStats {
        FsStats {
            total_bytes: total,
            available_bytes: available,
            ..Default::default()
        }
    }

    #[test]
    fn frees_down_to_the_low_threshold_only_above_the_high_one() {
        assert_eq!(bytes_to_free(&fs(1000, 200), 85, 80), 0, "80% used");
        assert_eq!(
            bytes_to_free(&fs(1000, 150), 85, 80),
            0,
            "85% used: not above"
        );
        assert_eq!(bytes_to_free(&fs(1000, 100), 85, 80), 100, "90% used → 80%");
        assert_eq!(bytes_to_free(&fs(0, 0), 85, 80), 0);
    }
}
