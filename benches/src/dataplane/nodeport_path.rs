//! The NodePort measurement in the inner process: per round, Berth's NodePort XDP then
//! kube-proxy's iptables NodePort, each loaded for its flood only (so neither one's hooks, nor
//! conntrack, tax the other), with every ClusterIP service of the largest size loaded beside it.

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use berth_dataplane::abi::{NodeAddrKey, NodeAddrValue};
use berth_dataplane::loader::{Datapath, XdpAttached, XdpMode};

use super::berth::Maps;
use super::netns::{backend_addr, Topology, IF_CLIENT, IF_SERVER, ROUTER_C};
use super::nodeport::{self, Flood, FLOWS_PER_THREAD};
use super::plan::Svc;
use super::report::{NodePortRun, Report, NODEPORT_IPTABLES, NODEPORT_XDP};
use super::{on_path, progress, rules, run_command, DataplaneError, Options};

/// What the NodePort measurement works with (borrowed from the inner process's bench).
pub struct NodePortBench<'a> {
    pub opts: &'a Options,
    pub topo: &'a Topology,
    pub datapath: &'a mut Datapath,
    pub maps: &'a mut Maps,
    pub rules_file: &'a Path,
    pub nf_tables: bool,
    pub report: &'a mut Report,
}

impl NodePortBench<'_> {
    /// Measures both NodePort paths with `all` (the largest size's services) loaded; leaves
    /// neither loaded, and Berth's maps without the NodePort Service and the node address.
    pub fn run(&mut self, all: &[Svc]) -> Result<(), DataplaneError> {
        if !on_path("ethtool") {
            self.report.nodeport = "not measured: ethtool is not installed (native XDP on a \
                                    veth needs the sender's checksum offload off)"
                .into();
            return Ok(());
        }
        let backends: Vec<SocketAddrV4> = (0..self.opts.backends)
            .map(|i| SocketAddrV4::new(backend_addr(i), nodeport::BACKEND_PORT))
            .collect();
        let received = nodeport::start_sinks(&self.topo.server, &backends)?;
        // Native XDP sees the client's datagrams as they are: a partial (offloaded) checksum
        // would reach the backend wrong after the rewrite. Off for both paths, so both clients
        // pay for full checksums alike.
        let eth0_features = |ns: &super::netns::Netns, feature: &str, value: &str| {
            let net = format!("--net={}", ns.path().display());
            run_command(
                "nsenter",
                &[&net, "ethtool", "-K", "eth0", feature, value],
                None,
            )
        };
        eth0_features(&self.topo.client, "tx", "off")?;
        // The backends' end of their veth as the pod network sets up a pod's eth0: GRO on,
        // hence NAPI, so native XDP may redirect into the router's end of it. For both paths.
        eth0_features(&self.topo.server, "gro", "on")?;
        self.datapath.allow_xdp_redirect(IF_SERVER)?;
        let (service, slice) = nodeport::objects(&backends);
        self.maps.sync(&service, &slice)?;
        let node = NodeAddrKey::new(ROUTER_C);
        // Only the address's presence counts for NodePort; the test suite writes 0 as well.
        self.datapath
            .maps_mut()
            .node_addrs
            .insert(&node, &NodeAddrValue { ifindex: 0 })?;
        self.report.nodeport_services = all.len();
        let result = self.rounds(all, &backends, &received);
        let _ = self.datapath.forbid_xdp_redirect(IF_SERVER);
        let _ = self.datapath.maps_mut().node_addrs.remove(&node);
        self.maps.remove_named(nodeport::NAME)?;
        result
    }

    fn rounds(
        &mut self,
        all: &[Svc],
        backends: &[SocketAddrV4],
        received: &std::sync::atomic::AtomicU64,
    ) -> Result<(), DataplaneError> {
        let threads = self.opts.connections;
        let warmup = Duration::from_millis(self.opts.warmup_ms);
        let duration = Duration::from_millis(self.opts.duration_ms);
        let flood = |topo: &Topology| {
            nodeport::flood(
                &topo.client,
                &topo.server,
                received,
                nodeport::target(),
                threads,
                warmup,
                duration,
            )
        };
        for round in 0..self.opts.rounds {
            progress(&format!("NodePort, round {}: berth XDP", round + 1));
            let wanted = match self.opts.xdp_mode {
                super::XdpAttach::Driver => XdpMode::Driver,
                super::XdpAttach::Generic => XdpMode::Generic,
            };
            let mode = match self.datapath.attach_xdp(IF_CLIENT, wanted)? {
                XdpAttached::New(mode) => mode,
                XdpAttached::Kept => wanted,
            };
            // The agent pairs XDP with its tc twin on the same device; so does the bench.
            let attached = self.datapath.attach_nodeport_tc(IF_CLIENT).map(drop);
            let measured = attached
                .map_err(DataplaneError::from)
                .and_then(|_| flood(self.topo));
            let detached = self
                .datapath
                .detach_xdp(IF_CLIENT)
                .and_then(|_| self.datapath.detach_nodeport_tc(IF_CLIENT));
            self.record(NODEPORT_XDP, measured?);
            detached?;
            self.report.nodeport = format!(
                "UDP datagrams of 18 bytes from {threads} client threads × {FLOWS_PER_THREAD} \
                 flows to nodeIP:{} for {} ms after {} ms warm-up, counted as packets arriving \
                 on the backends' link (GRO on there, as on a pod's eth0); berth: NodePort XDP \
                 in {} mode on the router's veth (with its tc twin), backends local (DNAT, \
                 source kept, redirected into the backends' veth); iptables: \
                 kube-proxy's KUBE-NODEPORTS → KUBE-EXT (masquerade) → KUBE-SVC → KUBE-SEP DNAT; \
                 median of {} rounds",
                nodeport::NODE_PORT,
                self.opts.duration_ms,
                self.opts.warmup_ms,
                if mode == XdpMode::Driver {
                    "driver (native)"
                } else {
                    "generic"
                },
                self.opts.rounds
            );

            progress(&format!("NodePort, round {}: iptables", round + 1));
            let loaded = rules::apply(
                "iptables-restore",
                &["--noflush"],
                self.rules_file,
                &rules::iptables_full(all),
            )
            .and_then(|_| {
                rules::apply(
                    "iptables-restore",
                    &["--noflush"],
                    self.rules_file,
                    &nodeport::iptables_rules(backends),
                )
            });
            let measured = loaded.and_then(|_| flood(self.topo));
            let removed = rules::apply(
                "iptables-restore",
                &["--noflush"],
                self.rules_file,
                &nodeport::iptables_remove(backends),
            )
            .and_then(|_| rules::iptables_clear(self.rules_file, all, self.nf_tables));
            self.record(NODEPORT_IPTABLES, measured?);
            removed?;
        }
        Ok(())
    }

    fn record(&mut self, path: &'static str, flood: Flood) {
        self.report.nodeport_runs.push(NodePortRun {
            path,
            pps: if flood.window_s > 0.0 {
                flood.packets as f64 / flood.window_s
            } else {
                0.0
            },
            packets: flood.packets,
            window_s: flood.window_s,
            sent: flood.sent,
            received: flood.received,
            send_errors: flood.send_errors,
            first_error: flood.first_error,
            flows: flood.flows,
            softirq_us_per_packet: if flood.packets > 0 {
                flood.softirq_s * 1e6 / flood.packets as f64
            } else {
                0.0
            },
        });
    }
}
