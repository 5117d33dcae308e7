//! `berth simulate nodes`: flags, their parsing, and a run until the process is stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_api::names;
use berth_api::well_known::taints;
use k8s_openapi::api::core::v1::Taint;

use super::{start, SimConfig, SimError};

/// How often the running simulator logs its counters.
const STATS_EVERY: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Kubeconfig of the cluster to register the nodes with.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Nodes to simulate.
    #[arg(long)]
    pub count: usize,
    /// Node names are <prefix><index>.
    #[arg(long, default_value = "sim-")]
    pub prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 250)]
    pub pods: u32,
    /// Ephemeral storage capacity of each node.
    #[arg(long, default_value = "1Ti")]
    pub ephemeral_storage: String,
    /// A label on every node (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A taint on every node (repeatable), as `kubectl taint` writes it.
    #[arg(long = "taint", value_name = "KEY[=VALUE]:EFFECT", value_parser = parse_taint)]
    pub taints: Vec<Taint>,
    /// Zones the nodes are spread over (topology.kubernetes.io/zone=zone-<i>).
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    /// Register this node but never renew its Lease (repeatable).
    #[arg(long = "stop-heartbeat", value_name = "NAME")]
    pub stop_heartbeat: Vec<String>,
    /// Seconds between two renewals of a node's Lease.
    #[arg(long, default_value_t = 10)]
    pub lease_period: u64,
    /// API requests in flight at most (per activity: registration, renewals, pods).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

impl Options {
    pub fn config(&self) -> SimConfig {
        SimConfig {
            count: self.count,
            prefix: self.prefix.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            pods: self.pods,
            ephemeral_storage: self.ephemeral_storage.clone(),
            labels: self.labels.iter().cloned().collect(),
            taints: self.taints.clone(),
            zones: self.zones,
            lease_period: Duration::from_secs(self.lease_period),
            stopped: self.stop_heartbeat.clone(),
            concurrency: self.concurrency,
            ..SimConfig::default()
        }
    }
}

fn invalid(field: &'static str, value: &str, reason: impl Into<String>) -> SimError {
    SimError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `key=value` with a qualified-name key and a valid label value.
pub fn parse_label(s: &str) -> Result<(String, String), SimError> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| invalid("label", s, "must be KEY=VALUE"))?;
    if let Some(e) = names::is_qualified_name(key).first() {
        return Err(invalid("label", s, e.clone()));
    }
    if let Some(e) = names::is_valid_label_value(value).first() {
        return Err(invalid("label", s, e.clone()));
    }
    Ok((key.to_string(), value.to_string()))
}

/// `key=value:Effect` or `key:Effect`, the effect one of NoSchedule, PreferNoSchedule,
/// NoExecute.
pub fn parse_taint(s: &str) -> Result<Taint, SimError> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| invalid("taint", s, "must be KEY[=VALUE]:EFFECT"))?;
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    if let Some(e) = names::is_qualified_name(key).first() {
        return Err(invalid("taint", s, e.clone()));
    }
    if let Some(e) = value.and_then(|v| names::is_valid_label_value(v).first().cloned()) {
        return Err(invalid("taint", s, e));
    }
    let effects = [
        taints::EFFECT_NO_SCHEDULE,
        taints::EFFECT_PREFER_NO_SCHEDULE,
        taints::EFFECT_NO_EXECUTE,
    ];
    if !effects.contains(&effect) {
        return Err(invalid(
            "taint",
            s,
            format!("the effect must be one of {}", effects.join(", ")),
        ));
    }
    Ok(Taint {
        key: key.to_string(),
        value: value.map(str::to_string),
        effect: effect.to_string(),
        time_added: None,
    })
}

async fn client(path: &std::path::Path) -> Result<kube::Client, SimError> {
    let kubeconfig_err = |source| SimError::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_err)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(kubeconfig_err)?;
    kube::Client::try_from(config).map_err(SimError::Client)
}

/// Registers the nodes, prints how long that took, then simulates them until the process is
/// stopped (the nodes stay registered and turn NotReady once their Leases expire).
pub fn run(opts: &Options) -> Result<(), SimError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(SimError::Runtime)?;
    runtime.block_on(async {
        let client = client(&opts.kubeconfig).await?;
        let begun = Instant::now();
        let sim = start(client, opts.config()).await?;
        println!(
            "berth: {} simulated nodes registered in {:.2}s ({}0 … {}{})",
            opts.count,
            begun.elapsed().as_secs_f64(),
            opts.prefix,
            opts.prefix,
            opts.count - 1
        );
        loop {
            tokio::time::sleep(STATS_EVERY).await;
            let s = sim.stats();
            tracing::info!(
                leases_renewed = s.leases_renewed,
                pods_started = s.pods_started,
                pods_deleted = s.pods_deleted,
                errors = s.errors,
                "node simulator"
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            parse_label("example.com/pool=a").unwrap(),
            ("example.com/pool".to_string(), "a".to_string())
        );
        assert_eq!(parse_label("empty=").unwrap().1, "");
        assert_eq!(
            parse_label("novalue").unwrap_err().to_string(),
            "invalid label \"novalue\": must be KEY=VALUE"
        );
        assert!(parse_label("bad key=a").is_err());
        assert!(parse_label("k=bad value").is_err());
    }

    #[test]
    fn taints() {
        let t = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        let t = parse_taint("example.com/spot:PreferNoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("example.com/spot", None, "PreferNoSchedule")
        );
        assert_eq!(
            parse_taint("k=v:Sometimes").unwrap_err().to_string(),
            "invalid taint \"k=v:Sometimes\": the effect must be one of NoSchedule, PreferNoSchedule, NoExecute"
        );
        assert_eq!(
            parse_taint("k=v").unwrap_err().to_string(),
            "invalid taint \"k=v\": must be KEY[=VALUE]:EFFECT"
        );
        assert!(parse_taint("bad key:NoExecute").is_err());
    }

    #[test]
    fn options_to_config() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            opts: Options,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--kubeconfig",
            "k",
            "--count",
            "5",
            "--label",
            "a=b",
            "--taint",
            "t:NoExecute",
            "--zones",
            "2",
            "--stop-heartbeat",
            "sim-3",
        ])
        .unwrap();
        let config = cli.opts.config();
        assert_eq!(config.count, 5);
        assert_eq!(config.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(config.taints[0].effect, "NoExecute");
        assert_eq!(
            (config.zones, config.stopped.as_slice()),
            (2, &["sim-3".to_string()][..])
        );
        assert_eq!(config.lease_period, Duration::from_secs(10));
        assert_eq!(config.cpu, "32");
        assert!(
            Cli::try_parse_from(["x", "--kubeconfig", "k", "--count", "1", "--taint", "t"])
                .is_err()
        );
    }
}
