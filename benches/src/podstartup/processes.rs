//! The cluster under test as separate processes of the `berth` binary, so the kubelet's memory is
//! its own: `berth server` (API server, controllers, scheduler) and `berth kubelet`, on one
//! temporary data directory, with a node name, cgroup base and cluster CIDR of their own.
//! Dropping the [`Cluster`] kills both and runs `berth cleanup`, which stops the pods' shims
//! and containers and removes their cgroups, links and mounts.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::PodStartupError;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Cluster {
    berth: PathBuf,
    pub data_dir: PathBuf,
    pub node: String,
    pub cgroup_base: String,
    cidr: String,
    pub kubeconfig: PathBuf,
    server: Option<Child>,
    kubelet: Option<Child>,
    dir: tempfile::TempDir,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodStartupError {
    let path = path.to_path_buf();
    move |source| PodStartupError::Io { op, path, source }
}

impl Cluster {
    /// A temporary directory in `parent` (default: $TMPDIR) and names; nothing runs yet.
    pub fn prepare(berth: &Path, parent: Option<&Path>) -> Result<Cluster, PodStartupError> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-podstartup-")
            .tempdir_in(&parent)
            .map_err(io("create a directory in", &parent))?;
        let tag = crate::tag();
        // A /16 of its own: pod routes on the host must not meet another cluster's.
        let octet = 100 + u32::from_str_radix(&tag[tag.len() - 2..], 16).unwrap_or(0) % 100;
        Ok(Cluster {
            berth: berth.to_path_buf(),
            data_dir: dir.path().join("data"),
            node: format!("berth-bench-{tag}"),
            cgroup_base: format!("berth-bench-{tag}"),
            cidr: format!("10.{octet}.0.0/16"),
            kubeconfig: PathBuf::new(),
            server: None,
            kubelet: None,
            dir,
        })
    }

    /// A scratch path inside the temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }

    fn command(&self, log: &str) -> Result<Command, PodStartupError> {
        let path = self.dir.path().join(log);
        let log = File::create(&path).map_err(io("create", &path))?;
        let mut cmd = Command::new(&self.berth);
        cmd.env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(log)
            // A terminal's Ctrl-C reaches the benchmark alone, which then cleans up.
            .process_group(0);
        Ok(cmd)
    }

    /// `berth image import ARCHIVE --data-dir <data dir>`.
    pub fn import_image(&self, archive: &Path) -> Result<(), PodStartupError> {
        let mut cmd = self.command("import.log")?;
        let status = cmd
            .args(["image", "import"])
            .arg(archive)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .status()
            .map_err(io("run", &self.berth))?;
        if !status.success() {
            return Err(self.failed("berth image import", &status.to_string(), "import.log"));
        }
        Ok(())
    }

    /// `berth server` on a free loopback port; returns once it printed its startup line.
    pub fn start_server(&mut self) -> Result<(), PodStartupError> {
        let mut cmd = self.command("server.log")?;
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", "127.0.0.1:0", "--leader-elect=false"])
            .args(["--cluster-cidr", &self.cidr])
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().map_err(io("run", &self.berth))?;
        let stdout = child.stdout.take();
        self.server = Some(child);
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            // Keeps draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
                for _ in lines {}
            });
        }
        let line = rx
            .recv_timeout(STARTUP_TIMEOUT)
            .map_err(|_| self.failed("berth server", "printed no startup line", "server.log"))?;
        let kubeconfig = line
            .rsplit_once("kubeconfig: ")
            .map(|(_, p)| PathBuf::from(p.trim()))
            .ok_or_else(|| self.failed("berth server", &line, "server.log"))?;
        self.kubeconfig = kubeconfig;
        Ok(())
    }

    /// `berth kubelet` against the server, without a serving certificate (no logs/exec).
    pub fn start_kubelet(&mut self) -> Result<(), PodStartupError> {
        let mut cmd = self.command("kubelet.log")?;
        cmd.arg("kubelet")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--node-name", &self.node, "--node-ip", "127.0.0.1"])
            .args(["--cgroup-base", &self.cgroup_base, "--kubelet-port", "0"])
            .stdout(Stdio::null());
        self.kubelet = Some(cmd.spawn().map_err(io("run", &self.berth))?);
        Ok(())
    }

    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().map_or(0, Child::id)
    }

    pub fn kubelet_pid(&self) -> u32 {
        self.kubelet.as_ref().map_or(0, Child::id)
    }

    /// Whether the kubelet or the server has exited (then the error names it).
    pub fn check_alive(&mut self) -> Result<(), PodStartupError> {
        let mut exited = None;
        for (child, name, log) in [
            (&mut self.kubelet, "berth kubelet", "kubelet.log"),
            (&mut self.server, "berth server", "server.log"),
        ] {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                exited = Some((name, log, status.to_string()));
                break;
            }
        }
        match exited {
            Some((name, log, status)) => Err(self.failed(name, &format!("exited: {status}"), log)),
            None => Ok(()),
        }
    }

    /// An error carrying the last lines of a process's log.
    pub fn failed(&self, what: &str, message: &str, log: &str) -> PodStartupError {
        PodStartupError::Process {
            what: what.to_string(),
            message: format!("{message}\n{}", self.log_tail(log)),
        }
    }

    /// The last lines of a process's log (`kubelet.log`, `server.log`).
    pub fn log_tail(&self, log: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [self.kubelet.take(), self.server.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let cleaned = Command::new(&self.berth)
            .arg("cleanup")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cgroup-base")
            .arg(&self.cgroup_base)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .process_group(0)
            .status();
        if !matches!(cleaned, Ok(s) if s.success()) {
            eprintln!(
                "berth bench podstartup: berth cleanup --data-dir {} --cgroup-base {} failed: \
                 {cleaned:?}",
                self.data_dir.display(),
                self.cgroup_base
            );
        }
    }
}
