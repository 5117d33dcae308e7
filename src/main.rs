//! The `berth` binary: parses flags and wires components. No logic lives here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A Kubernetes-compatible container orchestrator"
)]
struct Cli {
    /// Log format on stderr: text or json (one JSON object per line). Levels come from RUST_LOG.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole single-node cluster in one process on the embedded store (for now: the API
    /// server, the controllers and the scheduler; later issues add the kubelet and data plane).
    Up(UpArgs),
    /// Run the Kubernetes API server alone.
    Apiserver(ApiserverArgs),
    /// Run the controllers (namespace lifecycle, default ServiceAccounts, node IPAM) against an
    /// API server.
    Controllers(ControllersArgs),
    /// Run the scheduler against an API server.
    Scheduler(SchedulerArgs),
    /// Remove everything Berth created under a data directory.
    Cleanup(CleanupArgs),
    /// Run a scenario benchmark.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Simulate cluster members for tests and benchmarks.
    #[command(subcommand)]
    Simulate(SimulateCommand),
}

#[derive(Subcommand)]
enum SimulateCommand {
    /// Register N nodes, renew their Leases and run the pods bound to them (like kwok).
    Nodes(berth_bench::nodesim::Options),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The API server on io_uring and on epoll: GET, LIST, CREATE and watch fan-out percentiles.
    Apiserver(berth_bench::apiserver::Options),
    /// kube-scheduler's SchedulingBasic: pods/s and create→bound percentiles at N nodes.
    Scheduler(berth_bench::schedbench::Options),
}

#[derive(Args, Clone)]
struct ApiserverArgs {
    /// Holds the store, the PKI and the kubeconfigs.
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    /// Address and port to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Address other hosts reach this server on (added to the serving certificate).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// CIDR that Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// Network I/O interface: auto (io_uring when available), io-uring, or epoll.
    #[arg(long, default_value = "auto")]
    io: berth_apiserver::IoMode,
    /// I/O threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Kubernetes static token file for bearer tokens (`token,user,uid,"group1,group2"`).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ControllerFlags {
    /// CIDR that Nodes' pod ranges (one /24 each) are allocated from.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    server: ApiserverArgs,
    #[command(flatten)]
    controllers: ControllerFlags,
}

#[derive(Args)]
struct ControllersArgs {
    /// Kubeconfig naming the API server and the credentials to use.
    #[arg(long)]
    kubeconfig: PathBuf,
    #[command(flatten)]
    controllers: ControllerFlags,
}

#[derive(Args)]
struct SchedulerArgs {
    /// Kubeconfig naming the API server and the credentials to use.
    #[arg(long)]
    kubeconfig: PathBuf,
}

#[derive(Args)]
struct CleanupArgs {
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli.command {
        Command::Up(args) => serve(args.server, Some(args.controllers)),
        Command::Apiserver(args) => serve(args, None),
        Command::Controllers(args) => berth_controllers::run_until_interrupted(
            &args.kubeconfig,
            &controller_config(&args.controllers),
        )
        .context("berth controllers"),
        Command::Scheduler(args) => berth_scheduler::run_until_interrupted(
            &args.kubeconfig,
            berth_scheduler::RunConfig::default(),
        )
        .context("berth scheduler"),
        Command::Cleanup(args) => cleanup(&args.data_dir),
        Command::Bench(BenchCommand::Apiserver(opts)) => {
            berth_bench::apiserver::run(&opts).context("berth bench apiserver")
        }
        Command::Bench(BenchCommand::Scheduler(opts)) => {
            berth_bench::schedbench::run(&opts).context("berth bench scheduler")
        }
        Command::Simulate(SimulateCommand::Nodes(opts)) => {
            berth_bench::nodesim::run(&opts).context("berth simulate nodes")
        }
    }
}

fn controller_config(flags: &ControllerFlags) -> berth_controllers::Config {
    berth_controllers::Config {
        cluster_cidr: flags.cluster_cidr.clone(),
        ..berth_controllers::Config::default()
    }
}

/// Runs the API server; with `controllers`, also the controllers and the scheduler, as its
/// admin, once it is up.
fn serve(args: ApiserverArgs, controllers: Option<ControllerFlags>) -> anyhow::Result<()> {
    let config = berth_apiserver::Config {
        data_dir: args.data_dir,
        listen: args.listen,
        advertise_address: args.advertise_address,
        service_cidr: args.service_cidr,
        io: args.io,
        threads: args.threads,
        token_file: args.token_file,
    };
    let running = berth_apiserver::start(config).context("starting the API server")?;
    // Kept alive for as long as the process runs.
    let _controllers = match controllers {
        Some(flags) => Some(
            berth_controllers::spawn(&running.kubeconfig, controller_config(&flags))
                .context("starting the controllers")?,
        ),
        None => None,
    };
    // `berth up` schedules too; `berth apiserver` serves alone.
    let _scheduler = match _controllers {
        Some(_) => Some(
            berth_scheduler::spawn(&running.kubeconfig, berth_scheduler::RunConfig::default())
                .context("starting the scheduler")?,
        ),
        None => None,
    };
    tracing::info!(url = %running.url, io = running.driver, kubeconfig = %running.kubeconfig.display(), "berth is up");
    println!(
        "berth: API server on {} ({}); kubeconfig: {}",
        running.url,
        running.driver,
        running.kubeconfig.display()
    );
    loop {
        std::thread::park();
    }
}

/// Removes what Berth made under `data_dir`.
fn cleanup(data_dir: &std::path::Path) -> anyhow::Result<()> {
    for path in berth_apiserver::cleanup(data_dir).context("berth cleanup")? {
        println!("removed {}", path.display());
    }
    Ok(())
}
