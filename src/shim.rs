//! `berth-shim`: the per-pod shim as a binary of its own. It is the same code as `berth shim`
//! (berth_kubelet::shim), without the rest of Berth linked in, so each pod's shim maps and
//! relocates a small program rather than the whole `berth` binary. The kubelet runs it when it
//! sits next to `berth`, as `berth-shim shim --pod-dir DIR --hostname NAME [--host-network]
//! [--host-ipc]` — the same arguments as `berth shim`.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_kubelet::shim::{run, ShimConfig};

fn parse(mut args: impl Iterator<Item = String>) -> Result<ShimConfig, String> {
    let mut pod_dir = None;
    let mut hostname = None;
    let mut config = ShimConfig {
        pod_dir: PathBuf::new(),
        hostname: String::new(),
        host_network: false,
        host_ipc: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "shim" => {}
            "--pod-dir" => pod_dir = args.next(),
            "--hostname" => hostname = args.next(),
            "--host-network" => config.host_network = true,
            "--host-ipc" => config.host_ipc = true,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    config.pod_dir = pod_dir.ok_or("--pod-dir is required")?.into();
    config.hostname = hostname.ok_or("--hostname is required")?;
    Ok(config)
}

fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("berth-shim: {message}");
            ExitCode::FAILURE
        }
    }
}
