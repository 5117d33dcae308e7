//! Runs inside the VM as its loader: every object through aya, the agent's own loader, program
//! by program, so the guest kernel's verifier judges each one; then attaches where that kernel
//! allows. One report line per program on the serial console, which the host parses:
//!
//! `BERTH-VM PASS <object> <program> <type> <attach>` or
//! `BERTH-VM FAIL <object> <program> <type> <stage>: <error>` followed by
//! `BERTH-VM-LOG <object> <program> | <verifier log line>` for each line of the verifier's log.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use aya::programs::{CgroupAttachMode, Program, ProgramError, XdpMode};
use aya::util::KernelVersion;
use aya::EbpfLoader;

/// Where the guest's bpffs is mounted; maps are pinned by name under `berth`, shared by all
/// objects in the order loaded, as on a node.
const BPFFS: &str = "/sys/fs/bpf";
/// The cgroup2 directory the guest's init makes for the socket programs.
const CGROUP: &str = "/sys/fs/cgroup/berth-vm";
/// XDP attaches in generic (skb) mode to loopback, the one device the guest is sure to have.
/// Every attach is detached at once: a device takes one XDP program and a cgroup one program
/// per hook (`CgroupAttachMode::Single`, as the agent attaches), and the next program needs it.
const XDP_DEVICE: &str = "lo";

pub fn run(objects_dir: &Path) {
    let pin_dir = Path::new(BPFFS).join("berth");
    fs::create_dir_all(&pin_dir).expect("create the pin dir");
    let mut objects: Vec<PathBuf> = fs::read_dir(objects_dir)
        .expect("read the objects dir")
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    objects.sort();
    for object in &objects {
        load_object(object, &pin_dir);
    }
    production_loader(&pin_dir.join("agent"));
}

fn load_object(path: &Path, pin_dir: &Path) {
    let object = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    println!("BERTH-VM OBJECT {object}");
    let mut ebpf = match EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load_file(path)
    {
        Ok(ebpf) => ebpf,
        Err(error) => {
            println!("BERTH-VM FAIL {object} - object load: {}", chain(&error));
            return;
        }
    };
    let cgroup = File::open(CGROUP).expect("open the guest's cgroup");
    // Object order, not hash order, so runs compare line by line.
    let mut names: Vec<String> = ebpf.programs().map(|(name, _)| name.to_string()).collect();
    names.sort();
    for name in &names {
        let program = ebpf.program_mut(name).expect("listed program");
        let kind = format!("{:?}", program.prog_type());
        let result = check(program, &cgroup);
        match result {
            Ok(attach) => println!("BERTH-VM PASS {object} {name} {kind} {attach}"),
            Err((stage, message, log)) => {
                println!("BERTH-VM FAIL {object} {name} {kind} {stage}: {message}");
                for line in log.iter().flat_map(|log| log.lines()) {
                    println!("BERTH-VM-LOG {object} {name} | {line}");
                }
            }
        }
    }
}

type Failure = (&'static str, String, Option<String>);

/// Loads one program and attaches it where this kernel allows; what was done, or the stage
/// that failed with its error and verifier log.
fn check(program: &mut Program, cgroup: &File) -> Result<String, Failure> {
    match program {
        Program::CgroupSockAddr(program) => {
            program.load().map_err(stage("load"))?;
            let link = program
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(stage("attach"))?;
            program.detach(link).map_err(stage("detach"))?;
            Ok(format!("attached+detached:cgroup2:{CGROUP}"))
        }
        Program::Xdp(program) => {
            program.load().map_err(stage("load"))?;
            let link = program
                .attach(XDP_DEVICE, XdpMode::Skb)
                .map_err(stage("attach"))?;
            program.detach(link).map_err(stage("detach"))?;
            Ok(format!("attached+detached:xdp-generic:{XDP_DEVICE}"))
        }
        // tcx arrived in 6.6; the agent attaches tc programs only as tcx (see loader/attach.rs).
        Program::SchedClassifier(program) => {
            program.load().map_err(stage("load"))?;
            Ok("load-only:tcx-needs-6.6".to_string())
        }
        other => Err((
            "load",
            format!(
                "the VM test does not know {:?} programs yet: teach guest.rs",
                other.prog_type()
            ),
            None,
        )),
    }
}

fn stage(stage: &'static str) -> impl Fn(ProgramError) -> Failure {
    move |error| match &error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => (stage, io_error.to_string(), Some(verifier_log.to_string())),
        _ => (stage, chain(&error), None),
    }
}

/// The agent's own path on this kernel: `Datapath::open` (maps pinned, every program verified),
/// socket LB on a cgroup, and tcx refused before 6.6.
fn production_loader(pin_dir: &Path) {
    use berth_dataplane::loader::{Datapath, DatapathError};
    fs::create_dir_all(pin_dir).expect("create the agent's pin dir");
    let mut datapath = match Datapath::open(pin_dir) {
        Ok(datapath) => datapath,
        Err(error) => {
            println!(
                "BERTH-VM FAIL agent Datapath::open - load: {}",
                chain(&error)
            );
            return;
        }
    };
    println!("BERTH-VM PASS agent Datapath::open - maps-pinned");
    match datapath.attach_socket_lb(Path::new(CGROUP)) {
        Ok(attached) => println!(
            "BERTH-VM PASS agent attach_socket_lb - attached:{}-links-pinned",
            attached.new
        ),
        Err(error) => println!(
            "BERTH-VM FAIL agent attach_socket_lb - attach: {}",
            chain(&error)
        ),
    }
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    match (datapath.attach_tc(XDP_DEVICE), tcx) {
        (Ok(_), true) => println!("BERTH-VM PASS agent attach_tc - attached:tcx:{XDP_DEVICE}"),
        (Err(DatapathError::TcxUnsupported), false) => {
            println!("BERTH-VM PASS agent attach_tc - refused-before-6.6")
        }
        (Ok(_), false) => println!("BERTH-VM FAIL agent attach_tc - attach: tcx before 6.6?"),
        (Err(error), _) => println!("BERTH-VM FAIL agent attach_tc - attach: {}", chain(&error)),
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace('\n', " / ")
}
