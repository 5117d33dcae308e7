//! The inner process (its own network and mount namespaces): builds the topology, loads each
//! mechanism in turn, runs the clients, times the control plane.
//!
//! Per size, ascending: Berth's maps grow to hold that many services (they stay loaded: only
//! clients in the cgroup, or packets through the tcx links, ever look at them); then, in turn
//! (backwards every other round), the direct path, the socket LB, the tc path (tcx attached for
//! that path only), the iptables rules and the nftables table (each loaded for its path only, so
//! their hooks — and conntrack — never tax the other paths). At the largest size the iptables
//! and nftables loads and "add one service" are timed while they are in place. At the headline
//! size, `--direct-pairs` extra windows of the direct path and the socket LB follow. Then
//! NodePort in packets/s at the largest size (Berth's XDP against iptables,
//! [`super::nodeport_path`]); Berth's control plane is timed last, from empty maps.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use berth_dataplane::loader::{self, Bpffs, Datapath, DatapathError};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::berth::{self, Maps};
use super::client::{self, ClientConfig};
use super::netns::{backend_addr, Topology, BACKEND_PORT, IF_CLIENT, IF_SERVER};
use super::nodeport_path::NodePortBench;
use super::plan::{self, Svc, SERVICE_PORT};
use super::report::{median, Measurement, Mode, PathKind, Report};
use super::{io_err, netns_inode, progress, rules, server, DataplaneError, InnerContext};

struct Bench<'a> {
    ctx: &'a InnerContext,
    exe: PathBuf,
    topo: Topology,
    datapath: Datapath,
    maps: Maps,
    nf_tables: bool,
    report: Report,
}

fn ipvs_status() -> String {
    if Path::new("/sys/module/ip_vs").exists() || Path::new("/proc/net/ip_vs").exists() {
        "present in this kernel but not measured".into()
    } else {
        "unavailable: ip_vs is not in this kernel (no /sys/module/ip_vs, no /proc/net/ip_vs; \
         the benchmark never loads modules)"
            .into()
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn measure(ctx: &InnerContext) -> Result<Report, DataplaneError> {
    if netns_inode()? == ctx.outer_netns {
        return Err(DataplaneError::Unsupported {
            reason: "the inner process is not in a network namespace of its own".into(),
        });
    }
    let opts = &ctx.opts;
    let exe = std::env::current_exe().map_err(io_err("locate", Path::new("the berth binary")))?;
    progress("building the client, router and server namespaces");
    let topo = Topology::build(opts.backends)?;
    let addrs: Vec<Ipv4Addr> = (0..opts.backends).map(backend_addr).collect();
    server::start(&topo.server, &addrs, BACKEND_PORT, opts.connections + 2)?;
    let pin_dir = ctx.scratch.join("bpffs");
    let bpffs = Bpffs::ensure(&pin_dir).map_err(DatapathError::from)?;
    let datapath = Datapath::open(&pin_dir)?;
    let maps = Maps::open(&pin_dir)?;
    let iptables = rules::iptables_version();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut sizes = opts.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let mut bench = Bench {
        ctx,
        exe,
        topo,
        datapath,
        maps,
        nf_tables: iptables.contains("nf_tables"),
        report: Report {
            iptables: iptables.clone(),
            nft: rules::nft_version(),
            ipvs: ipvs_status(),
            nodeport: "not measured".into(),
            kernel,
            cgroup: ctx.cgroup.display().to_string(),
            scratch: ctx.scratch.display().to_string(),
            sizes: sizes.clone(),
            connections: opts.connections,
            backends: opts.backends,
            duration_ms: opts.duration_ms,
            rate: opts.rate,
            rounds: opts.rounds,
            ..Report::default()
        },
    };
    let result = bench.run(&sizes);
    let _ = bench.datapath.detach_socket_lb(&ctx.cgroup);
    drop(bench.maps);
    drop(bench.datapath);
    let _ = loader::cleanup(&pin_dir);
    drop(bpffs);
    result?;
    Ok(bench.report)
}

impl Bench<'_> {
    fn run(&mut self, sizes: &[usize]) -> Result<(), DataplaneError> {
        self.datapath.attach_socket_lb(&self.ctx.cgroup)?;
        let largest = sizes.last().copied().unwrap_or(1);
        let backends = self.ctx.opts.backends;
        let mut programmed: BTreeSet<usize> = BTreeSet::new();
        for &size in sizes {
            let all = plan::services(size, backends);
            progress(&format!("{size} services: programming berth's maps"));
            for svc in &all {
                if programmed.insert(svc.index) {
                    let (service, slice) = berth::objects(svc);
                    self.maps.sync(&service, &slice)?;
                }
            }
            for round in 0..self.ctx.opts.rounds {
                for path in plan::round_order(&PathKind::ALL, round) {
                    progress(&format!(
                        "{size} services, round {}: {}",
                        round + 1,
                        path.name()
                    ));
                    self.path(path, size, &all, size == largest && round == 0)?;
                }
            }
            if size == self.report.headline_size() {
                self.direct_pairs(size)?;
            }
        }
        let all = plan::services(largest, backends);
        NodePortBench {
            opts: &self.ctx.opts,
            datapath: &mut self.datapath,
            maps: &mut self.maps,
            rules_file: &self.ctx.scratch.join("rules"),
            nf_tables: self.nf_tables,
            report: &mut self.report,
        }
        .run(&all)?;
        progress(&format!("{largest} services: berth's control plane"));
        self.berth_control_plane(largest, &programmed)
    }

    fn vip_target(&self) -> Vec<SocketAddrV4> {
        vec![SocketAddrV4::new(plan::service(0, 1).vip, SERVICE_PORT)]
    }

    /// `--direct-pairs` windows of the direct path and the socket LB back to back, new
    /// connection per request, for `ratio_vs_direct`.
    fn direct_pairs(&mut self, size: usize) -> Result<(), DataplaneError> {
        for pair in 0..self.ctx.opts.direct_pairs {
            for path in plan::round_order(&[PathKind::Direct, PathKind::SocketLb], pair) {
                progress(&format!(
                    "{size} services, pair {}: {}",
                    pair + 1,
                    path.name()
                ));
                let (targets, cgroup_procs) = self.client_targets(path);
                let measured =
                    self.measure(path, size, Mode::NewConnection, targets, cgroup_procs)?;
                self.report.direct_pairs.push(measured);
            }
        }
        Ok(())
    }

    /// Where `path`'s client connects, and the cgroup it joins first (the socket LB's).
    fn client_targets(&self, path: PathKind) -> (Vec<SocketAddrV4>, Option<PathBuf>) {
        match path {
            PathKind::Direct => (
                (0..self.ctx.opts.backends)
                    .map(|i| SocketAddrV4::new(backend_addr(i), BACKEND_PORT))
                    .collect(),
                None,
            ),
            PathKind::SocketLb => (
                self.vip_target(),
                Some(self.ctx.cgroup.join("cgroup.procs")),
            ),
            _ => (self.vip_target(), None),
        }
    }

    /// Loads `path`'s mechanism, measures every mode, unloads it.
    fn path(
        &mut self,
        path: PathKind,
        size: usize,
        all: &[Svc],
        largest: bool,
    ) -> Result<(), DataplaneError> {
        let scratch = self.ctx.scratch.clone();
        let rules_file = scratch.join("rules");
        let (targets, cgroup_procs) = self.client_targets(path);
        match path {
            PathKind::Direct | PathKind::SocketLb => {}
            PathKind::Tc => {
                self.datapath.attach_tc(IF_CLIENT)?;
                self.datapath.attach_tc(IF_SERVER)?;
            }
            PathKind::Iptables => {
                let took = rules::apply(
                    "iptables-restore",
                    &["--noflush"],
                    &rules_file,
                    &rules::iptables_full(all),
                )?;
                if largest {
                    self.report.control.iptables_load_all_ms = ms(took);
                }
            }
            PathKind::Nftables => {
                let took = rules::apply(
                    "nft",
                    &["-f", "/dev/stdin"],
                    &rules_file,
                    &rules::nft_full(all),
                )?;
                if largest {
                    self.report.control.nft_load_all_ms = ms(took);
                }
            }
        }
        let measured = self.modes(path, size, targets, cgroup_procs);
        let timed = match (measured.is_ok() && largest, path) {
            (true, PathKind::Iptables) => self.iptables_add_one(all, &rules_file),
            (true, PathKind::Nftables) => self.nft_add_one(&rules_file),
            _ => Ok(Vec::new()),
        };
        let unloaded = match path {
            PathKind::Tc => self
                .datapath
                .detach_tc(IF_CLIENT)
                .and_then(|_| self.datapath.detach_tc(IF_SERVER))
                .map(drop)
                .map_err(DataplaneError::from),
            PathKind::Iptables => {
                let mut everything = all.to_vec();
                everything.extend(timed.as_ref().map(|v| v.clone()).unwrap_or_default());
                rules::iptables_clear(&rules_file, &everything, self.nf_tables)
            }
            PathKind::Nftables => rules::nft_clear(),
            _ => Ok(()),
        };
        measured?;
        timed?;
        unloaded
    }

    fn modes(
        &mut self,
        path: PathKind,
        size: usize,
        targets: Vec<SocketAddrV4>,
        cgroup_procs: Option<PathBuf>,
    ) -> Result<(), DataplaneError> {
        for mode in Mode::ALL {
            let measured = self.measure(path, size, mode, targets.clone(), cgroup_procs.clone())?;
            self.report.measurements.push(measured);
        }
        Ok(())
    }

    /// One client run of `path` in `mode`.
    fn measure(
        &self,
        path: PathKind,
        size: usize,
        mode: Mode,
        targets: Vec<SocketAddrV4>,
        cgroup_procs: Option<PathBuf>,
    ) -> Result<Measurement, DataplaneError> {
        let opts = &self.ctx.opts;
        let config = ClientConfig {
            targets,
            mode,
            connections: opts.connections,
            rate: opts.rate,
            duration_ms: opts.duration_ms,
            warmup_ms: opts.warmup_ms,
            cgroup_procs,
        };
        let run = client::run(&self.exe, &self.topo.client, &config)?;
        let r = run.result;
        let per_request = |us: u64| us as f64 / r.total_requests.max(1) as f64;
        Ok(Measurement {
            path: path.name(),
            services: size,
            mode: mode.name(),
            requests_per_s: if r.window_s > 0.0 {
                r.requests as f64 / r.window_s
            } else {
                0.0
            },
            p50_ms: r.p50_us as f64 / 1000.0,
            p90_ms: r.p90_us as f64 / 1000.0,
            p99_ms: r.p99_us as f64 / 1000.0,
            max_ms: r.max_us as f64 / 1000.0,
            requests: r.requests,
            errors: r.errors,
            first_error: r.first_error,
            cpu_us_per_request: per_request(r.cpu_us + run.server_cpu_us),
        })
    }

    /// kube-proxy's partial restore, then the minimal one, each `repeats` times on top of what
    /// is loaded; the services it added.
    fn iptables_add_one(&mut self, all: &[Svc], file: &Path) -> Result<Vec<Svc>, DataplaneError> {
        let opts = &self.ctx.opts;
        let mut existing = all.to_vec();
        let mut added = Vec::new();
        let first = plan::MAX_SERVICES - 4 * opts.repeats;
        for k in 0..opts.repeats {
            let new = plan::service(first + k, opts.backends);
            let text = rules::iptables_add_one(&existing, &new);
            let took = rules::apply("iptables-restore", &["--noflush"], file, &text)?;
            self.report.control.iptables_add_one_ms.push(ms(took));
            existing.push(new.clone());
            added.push(new);
        }
        for k in 0..opts.repeats {
            let new = plan::service(first + opts.repeats + k, opts.backends);
            let text = rules::iptables_add_one_minimal(&new);
            let took = rules::apply("iptables-restore", &["--noflush"], file, &text)?;
            self.report
                .control
                .iptables_add_one_minimal_ms
                .push(ms(took));
            added.push(new);
        }
        Ok(added)
    }

    fn nft_add_one(&mut self, file: &Path) -> Result<Vec<Svc>, DataplaneError> {
        let opts = &self.ctx.opts;
        let first = plan::MAX_SERVICES - 2 * opts.repeats;
        for k in 0..opts.repeats {
            let new = plan::service(first + k, opts.backends);
            let took = rules::apply(
                "nft",
                &["-f", "/dev/stdin"],
                file,
                &rules::nft_add_one(&new),
            )?;
            self.report.control.nft_add_one_ms.push(ms(took));
        }
        Ok(Vec::new())
    }

    /// From empty maps: all `largest` services, then one more service at a time, then one
    /// endpoint more on existing services.
    fn berth_control_plane(
        &mut self,
        largest: usize,
        programmed: &BTreeSet<usize>,
    ) -> Result<(), DataplaneError> {
        let backends = self.ctx.opts.backends;
        for index in programmed {
            self.maps.remove(&plan::service(*index, backends))?;
        }
        if self.maps.services() != 0 {
            return Err(DataplaneError::Bad {
                what: "berth's maps",
                message: format!("{} services left after removing all", self.maps.services()),
            });
        }
        let objects: Vec<(Service, EndpointSlice)> = plan::services(largest, backends)
            .iter()
            .map(berth::objects)
            .collect();
        let took = self.maps.sync_all(&objects)?;
        let control = &mut self.report.control;
        control.services = largest;
        control.berth_program_all_ms = ms(took);
        let repeats = self.ctx.opts.repeats;
        let first = plan::MAX_SERVICES - 3 * repeats;
        for k in 0..repeats {
            let (service, slice) = berth::objects(&plan::service(first + k, backends));
            let took = self.maps.sync_all(&[(service, slice)])?;
            self.report.control.berth_add_one_ms.push(ms(took));
        }
        for k in 0..repeats {
            let mut svc = plan::service(1 + k % largest.max(1), backends);
            if largest == 1 {
                svc = plan::service(0, backends);
            }
            svc.endpoints.push(SocketAddrV4::new(
                Ipv4Addr::new(10, 222, 0, 1 + k as u8),
                BACKEND_PORT,
            ));
            let took = self.maps.sync_all(&[berth::objects(&svc)])?;
            self.report.control.berth_endpoints_change_ms.push(ms(took));
        }
        progress(&format!(
            "berth: {} services in {:.1} ms, add one {:.3} ms",
            largest,
            self.report.control.berth_program_all_ms,
            median(&self.report.control.berth_add_one_ms)
        ));
        Ok(())
    }
}
