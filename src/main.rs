//! The `berth` binary: parses flags and wires components. No logic lives here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_controllers::leader::{CONTROLLERS_LEASE, SCHEDULER_LEASE};
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
    /// Run a whole single-node cluster in one process on the embedded store: the API server,
    /// the controllers, the scheduler and a kubelet running this host's pods.
    Up(UpArgs),
    /// Run the control plane: the API server on the embedded store, and the controllers and the
    /// scheduler, each leader-elected. With --join, only the controllers and the scheduler,
    /// against an existing control plane's API, as a standby member of it.
    Server(ServerArgs),
    /// Run the Kubernetes API server alone.
    Apiserver(ApiserverArgs),
    /// Run the kubelet: register this host as a Node and run the pods bound to it, in real
    /// containers.
    Kubelet(KubeletArgs),
    /// Join a control plane as a node: exchange a bootstrap token (`berth server` prints one)
    /// for the node's certificates (TLS bootstrap), then run the kubelet and the data plane.
    Agent(AgentArgs),
    /// Run the node's data plane alone (beside a `berth kubelet`): Services in BPF, cluster DNS,
    /// routes to other nodes' pods, masquerade and hostPorts.
    Dataplane(DataplaneArgs),
    /// The per-pod shim the kubelet starts (internal).
    #[command(hide = true)]
    Shim(ShimArgs),
    /// Run the controllers (workloads, endpoints, garbage collection, namespaces, nodes)
    /// against an API server, leader-elected.
    Controllers(ControllersArgs),
    /// Run the scheduler against an API server.
    Scheduler(SchedulerArgs),
    /// Remove everything Berth created under a data directory.
    Cleanup(CleanupArgs),
    /// Manage the node's images.
    #[command(subcommand)]
    Image(ImageCommand),
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
    /// Pod create→Ready (single and a burst) on a real node, container start vs crun, kubelet
    /// and shim RSS. Needs root, /bin/busybox and crun.
    Podstartup(berth_bench::podstartup::Options),
    /// Direct pod IP vs Berth ClusterIP (socket LB, tc) vs kube-proxy's iptables and nftables
    /// rules at 1, 1,000 and 10,000 services, and the control plane. Needs root.
    Dataplane(berth_bench::dataplane::Options),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import the images in an OCI image layout tar or a `docker save` tar (plain, gzip or zstd)
    /// into the node's image store, for nodes that cannot reach a registry. Run it before the
    /// kubelet starts (a running kubelet sees the image after a restart).
    Import(ImageImportArgs),
}

#[derive(Args)]
struct ImageImportArgs {
    /// The archive.
    file: PathBuf,
    /// The kubelet's --data-dir.
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
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
    /// tolerationSeconds of the node.kubernetes.io/not-ready:NoExecute toleration added to
    /// every pod that has none (the DefaultTolerationSeconds admission plugin).
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the node.kubernetes.io/unreachable:NoExecute toleration added to
    /// every pod that has none.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
}

#[derive(Args, Clone)]
struct ControllerFlags {
    /// CIDR that Nodes' pod ranges (one /24 each) are allocated from.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Most endpoints one EndpointSlice holds.
    #[arg(long, default_value_t = 100)]
    max_endpoints_per_slice: usize,
    /// How long a node may go without renewing its Lease before it is marked Unknown and
    /// tainted unreachable.
    #[arg(long, default_value = "40s", value_parser = berth_controllers::leader::parse_duration)]
    node_monitor_grace_period: Duration,
    /// The same for a node that has never reported Ready, counted from its creation.
    #[arg(long, default_value = "1m", value_parser = berth_controllers::leader::parse_duration)]
    node_startup_grace_period: Duration,
}

#[derive(Args, Clone)]
struct LeaderElectionFlags {
    /// Act only while holding the component's Lease in kube-system (kube-controller-manager,
    /// kube-scheduler), so that one of several copies acts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    leader_elect: bool,
    /// How long a standby waits after the leader's last renewal before taking over.
    #[arg(long, default_value = "15s", value_parser = berth_controllers::leader::parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops acting.
    #[arg(long, default_value = "10s", value_parser = berth_controllers::leader::parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// Between attempts to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = berth_controllers::leader::parse_duration)]
    leader_elect_retry_period: Duration,
}

impl LeaderElectionFlags {
    fn config(
        &self,
        lease: &str,
        component: &str,
    ) -> Option<berth_controllers::leader::LeaderConfig> {
        self.leader_elect
            .then(|| berth_controllers::leader::LeaderConfig {
                lease_duration: self.leader_elect_lease_duration,
                renew_deadline: self.leader_elect_renew_deadline,
                retry_period: self.leader_elect_retry_period,
                ..berth_controllers::leader::LeaderConfig::new(lease, component)
            })
    }
}

#[derive(Args)]
struct ServerArgs {
    #[command(flatten)]
    server: ApiserverArgs,
    #[command(flatten)]
    controllers: ControllerFlags,
    #[command(flatten)]
    leader: LeaderElectionFlags,
    /// Join the control plane this kubeconfig names: run only the controllers and the
    /// scheduler (the API server flags are then unused). The embedded store cannot be shared,
    /// so a second API server needs the etcd store.
    #[arg(long, value_name = "KUBECONFIG")]
    join: Option<PathBuf>,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    server: ApiserverArgs,
    #[command(flatten)]
    controllers: ControllerFlags,
    /// Run the kubelet too (needs root); false runs the control plane alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    kubelet: bool,
    #[command(flatten)]
    node: KubeletFlags,
    #[command(flatten)]
    dataplane: DataplaneFlags,
}

#[derive(Args, Clone)]
struct KubeletFlags {
    /// The Node's name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The Node's InternalIP (default: the address of the interface with the default route).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// A registry reached over plain HTTP, HOST:PORT (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Registry mirrors and credentials (JSON; see the README).
    #[arg(long)]
    registry_config: Option<PathBuf>,
    /// The cgroup Berth creates its pods' cgroups under, in every hierarchy.
    #[arg(long, default_value = "berth")]
    cgroup_base: String,
    /// Most pods this node runs.
    #[arg(long, default_value_t = 500)]
    max_pods: u32,
    /// pids.max for each pod (-1: unlimited).
    #[arg(long, default_value_t = -1)]
    pod_pids_limit: i64,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The nameserver of ClusterFirst pods (default: `kube-system/kube-dns`'s ClusterIP, the
    /// tenth address of the service CIDR).
    #[arg(long)]
    cluster_dns: Option<Ipv4Addr>,
    /// When the node reports pressure: memory.available (a quantity), nodefs.available,
    /// nodefs.inodesFree, pid.available (percentages).
    #[arg(long, default_value = berth_kubelet::node::DEFAULT_EVICTION_HARD)]
    eviction_hard: String,
    /// A directory of static pod manifests (YAML or JSON), run by this kubelet and mirrored
    /// into the API.
    #[arg(long)]
    pod_manifest_path: Option<PathBuf>,
    /// The kubelet's HTTPS port (logs, exec); 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
}

#[derive(Args, Clone)]
struct DataplaneFlags {
    /// Run the data plane too: Services in BPF, cluster DNS, routes and masquerade.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    dataplane: bool,
    /// A bpffs mount (one is mounted there if it is not one yet); pins go under `<dir>/berth`.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// The cgroup2 directory whose processes reach ClusterIPs through the socket LB besides the
    /// pods (default: the cgroup2 root, i.e. every host process; `none`: only pods).
    #[arg(long, value_name = "DIR")]
    host_socket_lb_cgroup: Option<String>,
    /// The nft table (`ip` family) holding masquerade and hostPorts; a name starting `berth`.
    #[arg(long, default_value = "berth")]
    nft_table: String,
    /// Turn on forwarding for the link holding the node IP and the NodePort links, so other
    /// nodes and NodePort clients reach this node's pods (pod veths always forward).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    uplink_forwarding: bool,
    /// Links that serve NodePorts through XDP (comma-separated; default: the uplink; `none`).
    #[arg(long, value_delimiter = ',')]
    nodeport_devices: Option<Vec<String>>,
}

#[derive(Args)]
struct KubeletArgs {
    /// Kubeconfig naming the API server and the node's credentials.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The kubelet server's certificate (PEM), signed by the cluster CA.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// The CA that signed the API server's client certificate.
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Holds the kubelet's state: pods, images, IPAM.
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: KubeletFlags,
}

#[derive(Args)]
struct DataplaneArgs {
    /// Kubeconfig naming the API server and the node's credentials.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The node's data directory (the kubelet's --data-dir).
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    /// The cluster's pod network (the controllers' --cluster-cidr).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    #[command(flatten)]
    node: KubeletFlags,
    #[command(flatten)]
    dataplane: DataplaneFlags,
}

#[derive(Args)]
struct AgentArgs {
    /// The API server's URL, e.g. https://10.0.0.1:6443.
    #[arg(long)]
    server: String,
    /// File holding a bootstrap token `<id>.<secret>` (`berth server` writes one to
    /// <data-dir>/join-token). Not needed once the node has valid credentials.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The cluster CA's certificate (the server's <data-dir>/pki/ca.crt): the API server's
    /// certificate is checked against it, and the kubelet's server accepts clients it signed.
    #[arg(
        long,
        alias = "certificate-authority",
        required_unless_present = "ca_cert_hash",
        conflicts_with = "ca_cert_hash"
    )]
    ca_file: Option<PathBuf>,
    /// Instead of --ca-file: take the CA from the server's kube-public/cluster-info and accept
    /// it only if its public key hashes to this (`sha256:<hex>`, as `berth server` prints and
    /// kubeadm's --discovery-token-ca-cert-hash).
    #[arg(long)]
    ca_cert_hash: Option<String>,
    /// Holds the node's credentials (kubelet.kubeconfig, kubelet-serving.crt/key) and the
    /// kubelet's state.
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    /// How long to wait for each certificate to be approved and issued.
    #[arg(long, default_value = "5m", value_parser = berth_controllers::leader::parse_duration)]
    bootstrap_timeout: Duration,
    /// The cluster's pod network (the controllers' --cluster-cidr): traffic from pods leaving it
    /// is masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    #[command(flatten)]
    node: KubeletFlags,
    #[command(flatten)]
    dataplane: DataplaneFlags,
}

#[derive(Args)]
struct ShimArgs {
    #[arg(long)]
    pod_dir: PathBuf,
    #[arg(long)]
    hostname: String,
    #[arg(long)]
    host_network: bool,
    #[arg(long)]
    host_ipc: bool,
}

#[derive(Args)]
struct ControllersArgs {
    /// Kubeconfig naming the API server and the credentials to use.
    #[arg(long)]
    kubeconfig: PathBuf,
    #[command(flatten)]
    controllers: ControllerFlags,
    #[command(flatten)]
    leader: LeaderElectionFlags,
}

#[derive(Args)]
struct SchedulerArgs {
    /// Kubeconfig naming the API server and the credentials to use.
    #[arg(long)]
    kubeconfig: PathBuf,
    #[command(flatten)]
    leader: LeaderElectionFlags,
}

#[derive(Args)]
struct CleanupArgs {
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    /// The kubelet's --cgroup-base.
    #[arg(long, default_value = "berth")]
    cgroup_base: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The shim first and alone: one thread, nothing else set up, to stay small.
    if let Command::Shim(args) = &cli.command {
        return shim(args);
    }
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
        Command::Up(args) => up(args),
        Command::Kubelet(args) => kubelet(&args),
        Command::Dataplane(args) => dataplane(&args),
        Command::Agent(args) => agent(args),
        Command::Shim(args) => shim(&args),
        Command::Server(args) => server(args),
        Command::Apiserver(args) => serve(args),
        Command::Controllers(args) => controllers(&args),
        Command::Scheduler(args) => scheduler(&args),
        Command::Cleanup(args) => cleanup(&args.data_dir, &args.cgroup_base),
        Command::Bench(BenchCommand::Apiserver(opts)) => {
            berth_bench::apiserver::run(&opts).context("berth bench apiserver")
        }
        Command::Bench(BenchCommand::Scheduler(opts)) => {
            berth_bench::schedbench::run(&opts).context("berth bench scheduler")
        }
        Command::Bench(BenchCommand::Podstartup(opts)) => {
            berth_bench::podstartup::run(&opts).context("berth bench podstartup")
        }
        Command::Bench(BenchCommand::Dataplane(opts)) => {
            berth_bench::dataplane::run(&opts).context("berth bench dataplane")
        }
        Command::Image(ImageCommand::Import(args)) => image_import(&args),
        Command::Simulate(SimulateCommand::Nodes(opts)) => {
            berth_bench::nodesim::run(&opts).context("berth simulate nodes")
        }
    }
}

fn controller_config(flags: &ControllerFlags) -> berth_controllers::Config {
    berth_controllers::Config {
        cluster_cidr: flags.cluster_cidr.clone(),
        max_endpoints_per_slice: flags.max_endpoints_per_slice,
        node_monitor_grace_period: flags.node_monitor_grace_period,
        node_startup_grace_period: flags.node_startup_grace_period,
        ..berth_controllers::Config::default()
    }
}

/// The components' names in Events, as Kubernetes'.
const CONTROLLERS: &str = "kube-controller-manager";
const SCHEDULER: &str = "default-scheduler";

/// `berth controllers`: elected, it exits non-zero when it loses its Lease (as
/// kube-controller-manager).
fn controllers(args: &ControllersArgs) -> anyhow::Result<()> {
    let config = controller_config(&args.controllers);
    config.validate().context("berth controllers")?;
    let election = args.leader.config(CONTROLLERS_LEASE, CONTROLLERS);
    let ran = berth_controllers::leader::run_until_interrupted(
        &args.kubeconfig,
        "berth-controllers",
        election.as_ref(),
        |client, stop| async move { berth_controllers::run(client, &config, stop).await },
    )
    .context("berth controllers")?;
    ran.transpose().context("berth controllers")?;
    Ok(())
}

/// `berth scheduler`: elected, it exits non-zero when it loses its Lease (as kube-scheduler).
fn scheduler(args: &SchedulerArgs) -> anyhow::Result<()> {
    let election = args.leader.config(SCHEDULER_LEASE, SCHEDULER);
    berth_controllers::leader::run_until_interrupted(
        &args.kubeconfig,
        "berth-scheduler",
        election.as_ref(),
        |client, stop| berth_scheduler::run(client, berth_scheduler::RunConfig::default(), stop),
    )
    .context("berth scheduler")?;
    Ok(())
}

/// `berth server`: the API server (unless joining another) plus the controllers and the
/// scheduler, each on its own thread; elected, each campaigns again after losing its Lease.
fn server(args: ServerArgs) -> anyhow::Result<()> {
    let mut controllers = controller_config(&args.controllers);
    let kubeconfig = match &args.join {
        Some(kubeconfig) => kubeconfig.clone(),
        None => {
            let running = start_apiserver(args.server.clone())?;
            announce_with_join_token(&running, &args.server.data_dir)?;
            controllers.csr_signing = Some(csr_signing(&args.server.data_dir));
            running.kubeconfig
        }
    };
    let _components = spawn_components(
        &kubeconfig,
        controllers,
        args.leader.config(CONTROLLERS_LEASE, CONTROLLERS),
        args.leader.config(SCHEDULER_LEASE, SCHEDULER),
    )?;
    if args.join.is_some() {
        println!(
            "berth: joined the control plane of {}",
            kubeconfig.display()
        );
    }
    loop {
        std::thread::park();
    }
}

/// `berth up`: the API server, the controllers and the scheduler, and (unless --kubelet=false)
/// a kubelet registering this host, all in one process.
fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = args.server.data_dir.clone();
    let dns_default = berth_apiserver::alloc::ServiceAllocator::new(&args.server.service_cidr)
        .context("--service-cidr")?
        .dns_ip();
    let running = start_apiserver(args.server)?;
    let mut controllers = controller_config(&args.controllers);
    controllers.csr_signing = Some(csr_signing(&data_dir));
    let _components = spawn_components(&running.kubeconfig, controllers, None, None)?;
    let (_kubelet, _dataplane) = if args.kubelet {
        let mut config = kubelet_config(&data_dir, &args.node)?;
        config.cluster_dns.get_or_insert(dns_default);
        config.serving = Some(kubelet_serving_tls(&data_dir, &config)?);
        let dataplane = match args.dataplane.dataplane {
            true => {
                let dp =
                    dataplane_config(&config, &args.dataplane, &args.controllers.cluster_cidr)?;
                Some(spawn_dataplane(&running.kubeconfig, dp)?)
            }
            false => None,
        };
        (Some(spawn_kubelet(&running.kubeconfig, config)?), dataplane)
    } else {
        (None, None)
    };
    announce_with_join_token(&running, &data_dir)?;
    loop {
        std::thread::park();
    }
}

fn kubelet_config(
    data_dir: &std::path::Path,
    flags: &KubeletFlags,
) -> anyhow::Result<berth_kubelet::KubeletConfig> {
    let mut registry = match &flags.registry_config {
        Some(path) => berth_kubelet::image::RegistryConfig::load(path)
            .with_context(|| format!("reading {}", path.display()))?,
        None => berth_kubelet::image::RegistryConfig::default(),
    };
    registry
        .insecure
        .extend(flags.insecure_registries.iter().cloned());
    let node_name = match &flags.node_name {
        Some(name) => name.clone(),
        None => hostname::get()
            .context("reading the hostname")?
            .to_string_lossy()
            .to_lowercase(),
    };
    Ok(berth_kubelet::KubeletConfig {
        node_name,
        node_ip: flags.node_ip.unwrap_or_else(berth_kubelet::default_node_ip),
        data_dir: data_dir.to_owned(),
        shim_exe: shim_program()?,
        cgroup_base: flags.cgroup_base.clone(),
        registry,
        cluster_dns: flags.cluster_dns,
        cluster_domain: flags.cluster_domain.clone(),
        max_pods: flags.max_pods,
        pod_pids_limit: u64::try_from(flags.pod_pids_limit).ok(),
        node_labels: Default::default(),
        port: flags.kubelet_port,
        serving: None,
        pod_manifest_path: flags.pod_manifest_path.clone(),
        eviction_hard: flags
            .eviction_hard
            .parse()
            .map_err(|e| anyhow::anyhow!("--eviction-hard: {e}"))?,
    })
}

/// `berth-shim` beside this binary (small: what every pod's shim runs), else `berth` itself.
fn shim_program() -> anyhow::Result<PathBuf> {
    let berth = std::env::current_exe().context("locating the berth binary")?;
    let small = berth.with_file_name("berth-shim");
    Ok(if small.is_file() { small } else { berth })
}

/// `berth up`: the kubelet's serving certificate from the cluster CA in the data directory.
fn kubelet_serving_tls(
    data_dir: &std::path::Path,
    config: &berth_kubelet::KubeletConfig,
) -> anyhow::Result<berth_kubelet::ServingTls> {
    let pki = berth_apiserver::pki::Pki::load_or_create(&data_dir.join("pki"))
        .context("the cluster CA")?;
    let (cert, key) = pki
        .kubelet_serving_cert(&config.node_name, &[config.node_ip])
        .context("the kubelet's serving certificate")?;
    Ok(berth_kubelet::ServingTls {
        cert_pem: std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?,
        key_pem: std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?,
        client_ca_pem: pki.ca_cert_pem().as_bytes().to_vec(),
    })
}

/// The kubelet on a thread of its own, against the API server `kubeconfig` names.
fn spawn_kubelet(
    kubeconfig: &std::path::Path,
    config: berth_kubelet::KubeletConfig,
) -> anyhow::Result<berth_controllers::leader::Elected> {
    berth_controllers::leader::spawn(kubeconfig, "berth-kubelet", None, move |client, stop| {
        let config = config.clone();
        async move {
            if let Err(e) = berth_kubelet::run(client, config, stop).await {
                tracing::error!(error = %e, "the kubelet stopped");
            }
        }
    })
    .context("starting the kubelet")
}

/// kube-dns's ClusterIP in the default service CIDR, for nodes that do not know the CIDR.
const DEFAULT_CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn dataplane_config(
    kubelet: &berth_kubelet::KubeletConfig,
    flags: &DataplaneFlags,
    cluster_cidr: &str,
) -> anyhow::Result<berth_dataplane::agent::DataplaneConfig> {
    let IpAddr::V4(node_ip) = kubelet.node_ip else {
        anyhow::bail!(
            "the data plane needs an IPv4 node IP, not {}",
            kubelet.node_ip
        );
    };
    let unified = berth_kubelet::cgroup::Roots::read(std::path::Path::new("/proc/self/mountinfo"))
        .context("finding the cgroup2 mount")?
        .unified;
    let host_cgroup = match flags.host_socket_lb_cgroup.as_deref() {
        Some("none") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => unified.clone(),
    };
    Ok(berth_dataplane::agent::DataplaneConfig {
        node_name: kubelet.node_name.clone(),
        node_ip,
        data_dir: kubelet.data_dir.clone(),
        cluster_cidr: Some(cluster_cidr.parse().context("--cluster-cidr")?),
        cluster_domain: kubelet.cluster_domain.clone(),
        bpffs: flags.bpffs.clone(),
        pods_cgroup: unified.map(|u| u.join(&kubelet.cgroup_base)),
        host_cgroup,
        resolv_conf: PathBuf::from(berth_dataplane::dns::HOST_RESOLV_CONF),
        nft_table: Some(flags.nft_table.clone()),
        uplink_forwarding: flags.uplink_forwarding,
        nodeport_devices: flags.nodeport_devices.clone().map(|devices| {
            devices
                .into_iter()
                .filter(|d| !d.is_empty() && d != "none")
                .collect()
        }),
    })
}

/// The node's data plane on a thread of its own.
fn spawn_dataplane(
    kubeconfig: &std::path::Path,
    config: berth_dataplane::agent::DataplaneConfig,
) -> anyhow::Result<berth_controllers::leader::Elected> {
    berth_controllers::leader::spawn(kubeconfig, "berth-dataplane", None, move |client, stop| {
        let config = config.clone();
        async move {
            if let Err(e) = berth_dataplane::agent::run(client, config, stop).await {
                tracing::error!(error = %e, "the data plane stopped");
            }
        }
    })
    .context("starting the data plane")
}

/// `berth kubelet`: runs until interrupted; pods keep running after it exits.
fn kubelet(args: &KubeletArgs) -> anyhow::Result<()> {
    let mut config = kubelet_config(&args.data_dir, &args.node)?;
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_private_key_file) {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let ca = args
            .client_ca_file
            .as_ref()
            .context("--client-ca-file is needed with --tls-cert-file")?;
        config.serving = Some(berth_kubelet::ServingTls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: read(ca)?,
        });
    }
    let ran = berth_controllers::leader::run_until_interrupted(
        &args.kubeconfig,
        "berth-kubelet",
        None,
        |client, stop| berth_kubelet::run(client, config, stop),
    )
    .context("berth kubelet")?;
    ran.transpose().context("berth kubelet")?;
    Ok(())
}

/// `berth dataplane`: runs until interrupted; maps, links and routes stay for the next start.
fn dataplane(args: &DataplaneArgs) -> anyhow::Result<()> {
    let kubelet = kubelet_config(&args.data_dir, &args.node)?;
    let config = dataplane_config(&kubelet, &args.dataplane, &args.cluster_cidr)?;
    let ran = berth_controllers::leader::run_until_interrupted(
        &args.kubeconfig,
        "berth-dataplane",
        None,
        |client, stop| berth_dataplane::agent::run(client, config, stop),
    )
    .context("berth dataplane")?;
    ran.transpose().context("berth dataplane")?;
    Ok(())
}

/// The controllers sign kubelet certificates with the CA the API server keeps.
fn csr_signing(data_dir: &std::path::Path) -> berth_controllers::csr::CsrSigning {
    berth_controllers::csr::CsrSigning::in_pki_dir(&data_dir.join("pki"))
}

/// `berth server`: makes (or reuses) the join token and publishes kube-public/cluster-info;
/// returns the token and the CA's hash.
/// The startup line, then how to join a node. The token is made before the startup line, so
/// whoever waits for that line finds it in `<data-dir>/join-token`.
fn announce_with_join_token(
    running: &berth_apiserver::Running,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let (token, hash) = join_info(running, data_dir)?;
    announce(running);
    println!(
        "berth: join token: {token} (in {}); join a node with: berth agent --server {} --token-file FILE --ca-cert-hash {hash}",
        berth_controllers::csr::token::join_token_path(data_dir).display(),
        running.url,
    );
    Ok(())
}

fn join_info(
    running: &berth_apiserver::Running,
    data_dir: &std::path::Path,
) -> anyhow::Result<(String, String)> {
    use berth_controllers::csr::{bootstrap, token};
    let ca_pem = std::fs::read_to_string(&running.ca_cert)
        .with_context(|| format!("reading {}", running.ca_cert.display()))?;
    let hash = bootstrap::ca_cert_hash(&ca_pem).context("hashing the cluster CA")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let token = rt
        .block_on(async {
            let client = berth_controllers::client_from_kubeconfig(&running.kubeconfig).await?;
            token::ensure_cluster_info(client.clone(), &running.url, &ca_pem).await?;
            anyhow::Ok(token::ensure_join_token(client, data_dir).await?)
        })
        .context("the join token")?;
    Ok((token, hash))
}

/// `berth agent`: TLS bootstrap, then the kubelet with the node's own credentials.
fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let mut config = kubelet_config(&args.data_dir, &args.node)?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let ca_pem = match (&args.ca_file, &args.ca_cert_hash) {
        (Some(file), _) => read(file)?,
        (None, Some(hash)) => rt
            .block_on(berth_controllers::csr::bootstrap::discover_ca(
                &args.server,
                hash,
            ))
            .context("berth agent: discovering the cluster CA")?,
        (None, None) => anyhow::bail!("berth agent needs --ca-file or --ca-cert-hash"),
    };
    let token = match &args.token_file {
        Some(path) => Some(read(path)?.trim().to_string()),
        None => None,
    };
    let bootstrap = berth_controllers::csr::bootstrap::BootstrapConfig {
        server: args.server.clone(),
        ca_pem: ca_pem.clone(),
        token,
        node_name: config.node_name.clone(),
        node_ips: vec![config.node_ip],
        data_dir: args.data_dir.clone(),
        timeout: args.bootstrap_timeout,
    };
    let credentials = rt
        .block_on(berth_controllers::csr::bootstrap::bootstrap(&bootstrap))
        .context("berth agent: TLS bootstrap")?;
    drop(rt);
    println!(
        "berth: node {} has its credentials; kubeconfig: {}",
        config.node_name,
        credentials.kubeconfig.display()
    );
    config.serving = Some(berth_kubelet::ServingTls {
        cert_pem: credentials.serving_cert_pem,
        key_pem: credentials.serving_key_pem,
        client_ca_pem: ca_pem.into_bytes(),
    });
    config.cluster_dns.get_or_insert(DEFAULT_CLUSTER_DNS);
    let _dataplane = match args.dataplane.dataplane {
        true => {
            let dp = dataplane_config(&config, &args.dataplane, &args.cluster_cidr)?;
            Some(spawn_dataplane(&credentials.kubeconfig, dp)?)
        }
        false => None,
    };
    let ran = berth_controllers::leader::run_until_interrupted(
        &credentials.kubeconfig,
        "berth-kubelet",
        None,
        |client, stop| berth_kubelet::run(client, config, stop),
    )
    .context("berth agent")?;
    ran.transpose().context("berth agent")?;
    Ok(())
}

/// `berth shim`: see berth_kubelet::shim.
fn shim(args: &ShimArgs) -> anyhow::Result<()> {
    let config = berth_kubelet::shim::ShimConfig {
        pod_dir: args.pod_dir.clone(),
        hostname: args.hostname.clone(),
        host_network: args.host_network,
        host_ipc: args.host_ipc,
    };
    berth_kubelet::shim::run(&config).context("berth shim")
}

/// `berth apiserver`: the API server alone.
fn serve(args: ApiserverArgs) -> anyhow::Result<()> {
    let running = start_apiserver(args)?;
    announce(&running);
    loop {
        std::thread::park();
    }
}

/// The controllers and the scheduler, each on a thread of its own against the API server
/// `kubeconfig` names; with an election, each acts only while it holds its Lease.
fn spawn_components(
    kubeconfig: &std::path::Path,
    controllers: berth_controllers::Config,
    controllers_election: Option<berth_controllers::leader::LeaderConfig>,
    scheduler_election: Option<berth_controllers::leader::LeaderConfig>,
) -> anyhow::Result<Vec<berth_controllers::leader::Elected>> {
    controllers
        .validate()
        .context("the controllers' settings")?;
    let controllers = berth_controllers::leader::spawn(
        kubeconfig,
        "berth-controllers",
        controllers_election,
        move |client, stop| {
            let config = controllers.clone();
            async move { berth_controllers::run(client, &config, stop).await }
        },
    )
    .context("starting the controllers")?;
    let scheduler = berth_controllers::leader::spawn(
        kubeconfig,
        "berth-scheduler",
        scheduler_election,
        |client, stop| berth_scheduler::run(client, berth_scheduler::RunConfig::default(), stop),
    )
    .context("starting the scheduler")?;
    Ok(vec![controllers, scheduler])
}

fn start_apiserver(args: ApiserverArgs) -> anyhow::Result<berth_apiserver::Running> {
    let config = berth_apiserver::Config {
        data_dir: args.data_dir,
        listen: args.listen,
        advertise_address: args.advertise_address,
        service_cidr: args.service_cidr,
        io: args.io,
        threads: args.threads,
        token_file: args.token_file,
        default_not_ready_toleration_seconds: args.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds: args.default_unreachable_toleration_seconds,
    };
    berth_apiserver::start(config).context("starting the API server")
}

/// The line tests and scripts wait for.
fn announce(running: &berth_apiserver::Running) {
    tracing::info!(url = %running.url, io = running.driver, kubeconfig = %running.kubeconfig.display(), "berth is up");
    println!(
        "berth: API server on {} ({}); kubeconfig: {}",
        running.url,
        running.driver,
        running.kubeconfig.display()
    );
}

/// `berth image import`: the archive's images into the store under `<data-dir>/images`.
fn image_import(args: &ImageImportArgs) -> anyhow::Result<()> {
    let root = args.data_dir.join("images");
    let store = berth_kubelet::image::ImageStore::open(
        &root,
        berth_kubelet::image::RegistryConfig::default(),
    )
    .with_context(|| format!("opening the image store {}", root.display()))?;
    let images = store
        .import_archive(&args.file)
        .with_context(|| format!("berth image import {}", args.file.display()))?;
    for image in images {
        println!("imported {} {}", image.reference, image.id);
    }
    Ok(())
}

/// Removes what Berth made under `data_dir`.
fn cleanup(data_dir: &std::path::Path, cgroup_base: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let kubelet = rt
        .block_on(berth_kubelet::cleanup(data_dir, cgroup_base))
        .context("berth cleanup: the kubelet's objects")?;
    for done in kubelet {
        println!("{done}");
    }
    let dataplane = rt
        .block_on(berth_dataplane::agent::cleanup(data_dir))
        .context("berth cleanup: the data plane's objects")?;
    for done in dataplane {
        println!("{done}");
    }
    for path in berth_apiserver::cleanup(data_dir).context("berth cleanup")? {
        println!("removed {}", path.display());
    }
    Ok(())
}
