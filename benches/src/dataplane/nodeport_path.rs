//! The NodePort measurement in the inner process: per round, Berth's NodePort XDP and
//! kube-proxy's iptables NodePort (the other way round every other round), each loaded for its
//! flood only (so neither one's hooks, nor conntrack, tax the other), with every ClusterIP
//! service of the largest size loaded beside it.

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use berth_dataplane::abi::{NodeAddrKey, NodeAddrValue};
use berth_dataplane::loader::{Datapath, XdpAttached, XdpMode};

use super::berth::Maps;
use super::nodeport::{self, FarEnd, Flood, Uplink, FLOWS, IF_UPLINK, NODE_ADDR};
use super::plan::{self, Svc};
use super::report::{NodePortRun, Report, NODEPORT_IPTABLES, NODEPORT_XDP};
use super::{progress, rules, DataplaneError, Options};

/// What the NodePort measurement works with (borrowed from the inner process's bench).
pub struct NodePortBench<'a> {
    pub opts: &'a Options,
    pub datapath: &'a mut Datapath,
    pub maps: &'a mut Maps,
    pub rules_file: &'a Path,
    pub nf_tables: bool,
    pub report: &'a mut Report,
}

impl NodePortBench<'_> {
    /// Measures both NodePort paths with `all` (the largest size's services) loaded; leaves
    /// neither loaded, no uplink, and Berth's maps without the NodePort Service and the node
    /// address.
    pub fn run(&mut self, all: &[Svc]) -> Result<(), DataplaneError> {
        if !Path::new("/dev/net/tun").exists() {
            self.report.nodeport = "not measured: no /dev/net/tun for the uplink".into();
            return Ok(());
        }
        let backends: Vec<SocketAddrV4> = (0..self.opts.backends).map(nodeport::backend).collect();
        let uplink = Uplink::create()?;
        let cpus = nodeport::cpus()?;
        let far_end = FarEnd::start(&uplink, &backends, cpus.map(|(_, far)| far))?;
        let (service, slice) = nodeport::objects(&backends);
        self.maps.sync(&service, &slice)?;
        let node = NodeAddrKey::new(NODE_ADDR);
        // Only the address's presence counts for NodePort; the test suite writes 0 as well.
        self.datapath
            .maps_mut()
            .node_addrs
            .insert(&node, &NodeAddrValue { ifindex: 0 })?;
        self.report.nodeport_services = all.len();
        let result = self.rounds(all, &backends, &uplink, &far_end, cpus);
        let _ = self.datapath.maps_mut().node_addrs.remove(&node);
        self.maps.remove_named(nodeport::NAME)?;
        result
    }

    fn rounds(
        &mut self,
        all: &[Svc],
        backends: &[SocketAddrV4],
        uplink: &Uplink,
        far_end: &FarEnd,
        cpus: Option<(usize, usize)>,
    ) -> Result<(), DataplaneError> {
        let warmup = Duration::from_millis(self.opts.warmup_ms);
        let duration = Duration::from_millis(self.opts.duration_ms);
        let flood = || nodeport::flood(uplink, far_end, cpus, warmup, duration);
        for round in 0..self.opts.rounds {
            for path in plan::round_order(&[NODEPORT_XDP, NODEPORT_IPTABLES], round) {
                progress(&format!("NodePort, round {}: {path}", round + 1));
                if path == NODEPORT_XDP {
                    let mode = self.xdp(&flood)?;
                    self.report.nodeport = describe(self.opts, mode, cpus);
                } else {
                    self.iptables(all, backends, &flood)?;
                }
            }
        }
        Ok(())
    }

    /// One flood through Berth's NodePort XDP, attached for it; the mode it attached in.
    fn xdp(
        &mut self,
        flood: &dyn Fn() -> Result<Flood, DataplaneError>,
    ) -> Result<XdpMode, DataplaneError> {
        let wanted = match self.opts.xdp_mode {
            super::XdpAttach::Driver => XdpMode::Driver,
            super::XdpAttach::Generic => XdpMode::Generic,
        };
        let mode = match self.datapath.attach_xdp(IF_UPLINK, wanted)? {
            XdpAttached::New(mode) => mode,
            XdpAttached::Kept => wanted,
        };
        // The agent pairs XDP with its tc twin on the same device; so does the bench.
        let attached = self.datapath.attach_nodeport_tc(IF_UPLINK).map(drop);
        let measured = attached.map_err(DataplaneError::from).and_then(|_| flood());
        let detached = self
            .datapath
            .detach_xdp(IF_UPLINK)
            .and_then(|_| self.datapath.detach_nodeport_tc(IF_UPLINK));
        self.record(NODEPORT_XDP, measured?);
        detached?;
        Ok(mode)
    }

    /// One flood through kube-proxy's iptables NodePort, loaded (with `all`) for it.
    fn iptables(
        &mut self,
        all: &[Svc],
        backends: &[SocketAddrV4],
        flood: &dyn Fn() -> Result<Flood, DataplaneError>,
    ) -> Result<(), DataplaneError> {
        let restore =
            |text: &str| rules::apply("iptables-restore", &["--noflush"], self.rules_file, text);
        let loaded = restore(&rules::iptables_full(all))
            .and_then(|_| restore(&nodeport::iptables_rules(backends)));
        let measured = loaded.and_then(|_| flood());
        let removed = restore(&nodeport::iptables_remove(backends))
            .and_then(|_| rules::iptables_clear(self.rules_file, all, self.nf_tables));
        self.record(NODEPORT_IPTABLES, measured?);
        removed
    }

    fn record(&mut self, path: &'static str, flood: Flood) {
        let per_second = |value: f64| {
            if flood.window_s > 0.0 {
                value / flood.window_s
            } else {
                0.0
            }
        };
        self.report.nodeport_runs.push(NodePortRun {
            path,
            pps: per_second(flood.packets as f64),
            packets: flood.packets,
            window_s: flood.window_s,
            sent: flood.sent,
            received: flood.received,
            stray: flood.stray,
            send_errors: flood.send_errors,
            first_error: flood.first_error,
            flows: flood.flows,
            node_cpu_us_per_packet: if flood.packets > 0 {
                flood.node_cpu_s * 1e6 / flood.packets as f64
            } else {
                0.0
            },
        });
    }
}

/// How the NodePort was measured, for the report.
fn describe(opts: &Options, mode: XdpMode, cpus: Option<(usize, usize)>) -> String {
    format!(
        "UDP datagrams of 18 bytes in {FLOWS} flows written as Ethernet frames into the \
         node's uplink (a tap device: XDP runs on the written frame before any socket buffer \
         exists, as on a NIC) to nodeIP:{} for {} ms after {} ms warm-up; backends are pods \
         on another node behind the same link, so every packet is DNATed, masqueraded and sent \
         back out; counted as forwarded frames read at the far end, both checksums checked; {}; \
         berth: NodePort XDP in {} mode (with its tc twin), XDP_TX; iptables: kube-proxy's \
         KUBE-NODEPORTS → KUBE-EXT (mark) → KUBE-SVC → KUBE-SEP DNAT → KUBE-POSTROUTING \
         masquerade; median of {} rounds",
        nodeport::NODE_PORT,
        opts.duration_ms,
        opts.warmup_ms,
        match cpus {
            Some((node, far)) =>
                format!("generator and node on CPU {node} (the node's CPU), far end on CPU {far}"),
            None => "one CPU for all".to_string(),
        },
        if mode == XdpMode::Driver {
            "driver (native)"
        } else {
            "generic"
        },
        opts.rounds
    )
}
