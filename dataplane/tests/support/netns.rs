//! A network namespace held only by a file descriptor: it disappears with the last holder.

use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};

use nix::sched::{setns, unshare, CloneFlags};

/// A network namespace held only by `file`, and a path other processes can open it by.
pub struct Netns {
    pub file: File,
    pub path: PathBuf,
}

impl Netns {
    pub fn new() -> Self {
        let file = std::thread::spawn(|| {
            // Only this thread moves, and it ends right after.
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare netns");
            File::open("/proc/thread-self/ns/net").expect("open new netns")
        })
        .join()
        .expect("netns thread");
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        Self { file, path }
    }

    /// Runs `f` on a thread inside this namespace; sockets it creates stay here wherever they
    /// are used.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns")
        })
    }

    /// Runs `f` on a new, detached thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = self.file.try_clone().expect("dup netns fd");
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// Runs the future `f` makes on a single-threaded runtime whose only thread is in this
    /// namespace: what "the caller's namespace" means for podnet, routes and nat.
    pub fn block_on<F: Future>(&self, f: impl FnOnce() -> F + Send) -> F::Output
    where
        F::Output: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
    }

    /// `program` run by `nsenter` inside this namespace.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"))
    }

    /// [`Netns::cmd`], which must succeed; its stdout.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        super::checked(program, args, self.cmd(program, args))
    }

    /// `ip <args>` inside this namespace, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        self.ok("ip", args);
    }

    /// A veth from the caller's namespace (`host_if`, `host_addr`/24, reverse-path filter off:
    /// translated replies come back with addresses it never routed) to `eth0` here
    /// (`addr`/24), both up, and this namespace's loopback up.
    pub fn wire(&self, host_if: &str, host_addr: Ipv4Addr, addr: Ipv4Addr) {
        super::ip(&[
            "link",
            "add",
            host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &self.path.to_string_lossy(),
        ]);
        super::ip(&["addr", "add", &format!("{host_addr}/24"), "dev", host_if]);
        super::ip(&["link", "set", host_if, "up"]);
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{host_if}/rp_filter"), "0")
            .expect("rp_filter");
        self.ip(&["link", "set", "lo", "up"]);
        self.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        self.ip(&["link", "set", "eth0", "up"]);
    }

    /// `/proc/sys/net/ipv4/<key>` as this namespace sees it.
    pub fn sysctl(&self, key: &str) -> String {
        self.ok("cat", &[&format!("/proc/sys/net/ipv4/{key}")])
            .trim()
            .to_string()
    }
}
