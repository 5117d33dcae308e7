//! NodePort on the node's uplink (`bpf/nodeport.bpf.o`): the XDP program, or its tc twin on
//! devices without XDP, attached with pinned links like the other programs. The object is
//! loaded on first use and shares every map with `lb.bpf.o` through their pins.
//!
//! Pins: `links/xdp-<ifname>` and `links/nodeport-tc-<ifname>`.

use std::io;
use std::path::Path;

use aya::programs::links::FdLink;
use aya::programs::{SchedClassifier, Xdp, XdpMode as AyaXdpMode};
use aya::{Ebpf, EbpfLoader};

use super::attach::Attached;
use super::links::{attach_tcx_pinned, create_dir, detach, link_error, open_pinned, pin_link};
use super::{find_program, program_error, Datapath, DatapathError};

/// The NodePort object, byte for byte as committed (`make -C bpf` rebuilds it).
static NODEPORT_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../bpf/nodeport.bpf.o");

const PROG_XDP_NODEPORT: &str = "berth_xdp_nodeport";
const PROG_TC_NODEPORT: &str = "berth_tc_nodeport";
/// An XDP program that passes everything, for the peer of a veth that native XDP transmits
/// or redirects into (such a veth needs NAPI, which an XDP program gives it).
const PROG_XDP_PASS: &str = "berth_xdp_pass";

/// How to attach the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Driver (native) mode, else generic mode where the driver has no XDP.
    #[default]
    Auto,
    /// Native XDP in the driver only.
    Driver,
    /// Generic (SKB) XDP only: works on every device, after the skb is built.
    Generic,
}

/// What [`Datapath::attach_xdp`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttached {
    /// A new link in this mode ([`XdpMode::Driver`] or [`XdpMode::Generic`]).
    New(XdpMode),
    /// A pinned link still attached to the interface was kept.
    Kept,
}

impl Datapath {
    /// Attaches NodePort XDP to `ifname` (the node's uplink, in the calling thread's network
    /// namespace). [`XdpMode::Auto`] tries driver mode first and falls back to generic mode.
    /// Idempotent: a pinned link still attached to a device is kept; a stale one (its device
    /// went away) is replaced.
    ///
    /// Pair it with [`Datapath::attach_nodeport_tc`] on the same device: packets XDP cannot
    /// forward yet (no neighbour entry for the next hop) go on untranslated to the tc twin,
    /// which resolves the neighbour; without it such packets meet a closed port (RST).
    ///
    /// Pod backends keep the client's address; their replies are reverse-translated by the
    /// tcx program on the pod's veth and then carry the node's address as source, which the
    /// kernel accepts only with `accept_local=1` on that veth.
    ///
    /// Native XDP on a veth uplink: transmitting back into the veth (backends behind the
    /// uplink) needs NAPI on the peer (GRO on, or [`Datapath::attach_xdp_pass`] there), and
    /// the peer's sender must not leave checksums to offload (`ethtool -K <peer> tx off`):
    /// XDP cannot tell a partial checksum from a full one, and a NIC's wire has only full ones.
    pub fn attach_xdp(
        &mut self,
        ifname: &str,
        mode: XdpMode,
    ) -> Result<XdpAttached, DatapathError> {
        self.attach_xdp_program(PROG_XDP_NODEPORT, "xdp", ifname, mode)
    }

    /// Attaches the pass-everything XDP program to `ifname` (a veth peer the uplink's native
    /// XDP transmits into), pinned as `links/xdp-pass-<ifname>`; modes as for
    /// [`Datapath::attach_xdp`].
    pub fn attach_xdp_pass(
        &mut self,
        ifname: &str,
        mode: XdpMode,
    ) -> Result<XdpAttached, DatapathError> {
        self.attach_xdp_program(PROG_XDP_PASS, "xdp-pass", ifname, mode)
    }

    /// Lets NodePort XDP redirect packets for local backends straight into `ifname` (a pod's
    /// host veth, in the calling thread's network namespace), past the kernel's forwarding
    /// path. Only for a veth whose other end has NAPI, which the pod network gives every pod
    /// (GRO on its `eth0`): a native redirect into a veth without it is dropped. Without an
    /// entry XDP leaves such packets to the kernel, translated. Returns the ifindex.
    pub fn allow_xdp_redirect(&mut self, ifname: &str) -> Result<u32, DatapathError> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|errno| DatapathError::Io {
            op: "find the interface of",
            path: ifname.into(),
            source: errno.into(),
        })?;
        self.maps.xdp_devs.allow(ifindex)?;
        Ok(ifindex)
    }

    /// Takes `ifname` back out of the devices XDP may redirect into; whether it was there. A
    /// device that no longer exists has no entry: the kernel removes it with the device.
    pub fn forbid_xdp_redirect(&mut self, ifname: &str) -> Result<bool, DatapathError> {
        match nix::net::if_::if_nametoindex(ifname) {
            Ok(ifindex) => self.maps.xdp_devs.forbid(ifindex),
            Err(nix::errno::Errno::ENODEV) => Ok(false),
            Err(errno) => Err(DatapathError::Io {
                op: "find the interface of",
                path: ifname.into(),
                source: errno.into(),
            }),
        }
    }

    /// Detaches NodePort XDP from `ifname` and removes its pin; whether one was there.
    pub fn detach_xdp(&mut self, ifname: &str) -> Result<bool, DatapathError> {
        detach(&self.link_pin("xdp", ifname)?)
    }

    /// Detaches the pass program from `ifname`; whether one was there.
    pub fn detach_xdp_pass(&mut self, ifname: &str) -> Result<bool, DatapathError> {
        detach(&self.link_pin("xdp-pass", ifname)?)
    }

    /// The tc fallback for an uplink without XDP: the same NodePort logic as tcx ingress on
    /// `ifname` (Linux 6.6+). Idempotent like [`Datapath::attach_tc`].
    pub fn attach_nodeport_tc(&mut self, ifname: &str) -> Result<Attached, DatapathError> {
        let pin = self.link_pin("nodeport-tc", ifname)?;
        let links_dir = self.links_dir();
        attach_tcx_pinned(&links_dir, &pin, ifname, PROG_TC_NODEPORT, || {
            nodeport_program(self, PROG_TC_NODEPORT)
        })
    }

    /// Detaches the tc NodePort program from `ifname`; whether one was there.
    pub fn detach_nodeport_tc(&mut self, ifname: &str) -> Result<bool, DatapathError> {
        detach(&self.link_pin("nodeport-tc", ifname)?)
    }

    /// Loads nodeport.bpf.o and verifies its programs without attaching anything (the first
    /// attach does this by itself).
    pub fn load_nodeport(&mut self) -> Result<(), DatapathError> {
        self.nodeport_object().map(drop)
    }

    fn attach_xdp_program(
        &mut self,
        name: &'static str,
        pin_prefix: &str,
        ifname: &str,
        mode: XdpMode,
    ) -> Result<XdpAttached, DatapathError> {
        let pin = self.link_pin(pin_prefix, ifname)?;
        create_dir(&self.links_dir())?;
        if let Some(link) = open_pinned(&pin)? {
            let link = FdLink::from(link);
            let link_id = link
                .info()
                .map_err(|source| link_error("inspect", &pin, source))?
                .id();
            // The fd stays open (in `link`) while its fdinfo is read.
            let ifindex = xdp_link_ifindex(Path::new("/proc"), link_id).map_err(|source| {
                DatapathError::Io {
                    op: "read fdinfo of xdp link",
                    path: pin.clone(),
                    source,
                }
            })?;
            drop(link);
            if ifindex.is_some_and(|index| index != 0) {
                return Ok(XdpAttached::Kept);
            }
            detach(&pin)?;
        }
        let program: &mut Xdp = nodeport_program(self, name)?;
        let tries: &[XdpMode] = match mode {
            XdpMode::Auto => &[XdpMode::Driver, XdpMode::Generic],
            XdpMode::Driver => &[XdpMode::Driver],
            XdpMode::Generic => &[XdpMode::Generic],
        };
        let mut last = None;
        for &mode in tries {
            let aya_mode = match mode {
                XdpMode::Generic => AyaXdpMode::Skb,
                _ => AyaXdpMode::Driver,
            };
            match program.attach(ifname, aya_mode) {
                Ok(id) => {
                    let link = program
                        .take_link(id)
                        .map_err(|source| program_error("take link of", name, source))?;
                    pin_link(link, &pin)?;
                    return Ok(XdpAttached::New(mode));
                }
                Err(source) => last = Some(source),
            }
        }
        Err(program_error(
            "attach xdp",
            name,
            last.expect("at least one mode is tried"),
        ))
    }

    /// The NodePort object, loaded (with every program verified) on first use.
    fn nodeport_object(&mut self) -> Result<&mut Ebpf, DatapathError> {
        if self.nodeport.is_none() {
            let mut ebpf = EbpfLoader::new()
                .default_map_pin_directory(&self.pin_dir)
                .load(NODEPORT_OBJECT)
                .map_err(|source| DatapathError::Load {
                    object: "nodeport.bpf.o",
                    pin_dir: self.pin_dir.clone(),
                    source: Box::new(source),
                })?;
            for name in [PROG_XDP_NODEPORT, PROG_XDP_PASS] {
                let program: &mut Xdp = find_program(&mut ebpf, name)?;
                program
                    .load()
                    .map_err(|source| program_error("load", name, source))?;
            }
            let program: &mut SchedClassifier = find_program(&mut ebpf, PROG_TC_NODEPORT)?;
            program
                .load()
                .map_err(|source| program_error("load", PROG_TC_NODEPORT, source))?;
            self.nodeport = Some(ebpf);
        }
        Ok(self.nodeport.as_mut().expect("loaded above"))
    }
}

fn nodeport_program<'a, P>(
    datapath: &'a mut Datapath,
    name: &'static str,
) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    find_program(datapath.nodeport_object()?, name)
}

/// The ifindex an XDP link (by id) is attached to, from the fdinfo of this process's fd for
/// it (`ifindex:`, 0 once its device is gone); None when no fd of ours is that link.
fn xdp_link_ifindex(proc_root: &Path, link_id: u32) -> io::Result<Option<u32>> {
    let dir = proc_root.join("self/fdinfo");
    let wanted = format!("link_id:\t{link_id}");
    for entry in std::fs::read_dir(&dir)? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue; // closed meanwhile
        };
        if !text.lines().any(|line| line == wanted) {
            continue;
        }
        let ifindex = text
            .lines()
            .find_map(|line| line.strip_prefix("ifindex:"))
            .and_then(|value| value.trim().parse().ok());
        return Ok(ifindex);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_object_names_every_program() {
        let has = |name: &str| {
            NODEPORT_OBJECT
                .windows(name.len() + 1)
                .any(|window| window[..name.len()] == *name.as_bytes() && window[name.len()] == 0)
        };
        for name in [PROG_XDP_NODEPORT, PROG_TC_NODEPORT, PROG_XDP_PASS] {
            assert!(has(name), "nodeport.bpf.o has no symbol {name}");
        }
    }

    #[test]
    fn an_xdp_link_is_found_by_id_in_fdinfo() {
        let proc_root = tempfile::tempdir().expect("tempdir");
        let fdinfo = proc_root.path().join("self/fdinfo");
        std::fs::create_dir_all(&fdinfo).expect("mkdir");
        std::fs::write(fdinfo.join("3"), "pos:\t0\nflags:\t02000002\n").expect("write");
        std::fs::write(
            fdinfo.join("7"),
            "link_type:\txdp\nlink_id:\t12\nprog_tag:\t00\nprog_id:\t40\nifindex:\t5\n",
        )
        .expect("write");
        std::fs::write(
            fdinfo.join("8"),
            "link_type:\txdp\nlink_id:\t13\nprog_id:\t40\nifindex:\t0\n",
        )
        .expect("write");
        assert_eq!(
            xdp_link_ifindex(proc_root.path(), 12).expect("scan"),
            Some(5)
        );
        assert_eq!(
            xdp_link_ifindex(proc_root.path(), 13).expect("scan"),
            Some(0)
        );
        assert_eq!(xdp_link_ifindex(proc_root.path(), 1).expect("scan"), None);
    }
}
