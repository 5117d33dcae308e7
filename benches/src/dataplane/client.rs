//! The load generator, a process of its own in the client namespace (and, for the socket LB
//! path, in the benchmark's cgroup, which a process joins as a whole). It prints one JSON line:
//! the window's requests and latency percentiles (HDR histogram, microseconds), failures, and
//! the CPU time it used over its whole life.
//!
//! Modes: closed loop with a new connection per request (connect, request, response, reset:
//! `SO_LINGER` 0 leaves no TIME_WAIT, so ports never run out), closed loop over persistent
//! connections, and a fixed rate of new connections whose latency counts from the scheduled
//! send time (no coordinated omission).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::netns::Netns;
use super::report::Mode;
use super::server::{REQUEST, RESPONSE};
use super::{io_err, DataplaneError, CLIENT_ENV, INNER_ENV};

const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest latency kept, in microseconds; longer ones saturate.
const MAX_US: u64 = 60_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Connections go to these in turn.
    pub targets: Vec<SocketAddrV4>,
    pub mode: Mode,
    pub connections: usize,
    pub rate: u64,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    /// The `cgroup.procs` the client moves itself into first.
    pub cgroup_procs: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientResult {
    /// Requests completed inside the window.
    pub requests: u64,
    pub window_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Failed requests (window and warm-up).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Requests completed over the client's whole life (warm-up included).
    pub total_requests: u64,
    /// utime + stime of the client process over its whole life.
    pub cpu_us: u64,
}

/// What one thread saw.
struct Tally {
    hist: Histogram<u64>,
    window: u64,
    total: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid"),
            window: 0,
            total: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn done(&mut self, result: std::io::Result<()>, latency: Duration, in_window: bool) {
        match result {
            Ok(()) => {
                self.total += 1;
                if in_window {
                    self.window += 1;
                    let us = (latency.as_micros() as u64).clamp(1, MAX_US);
                    self.hist.saturating_record(us);
                }
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn exchange(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(REQUEST)?;
    let mut buf = [0u8; RESPONSE.len()];
    stream.read_exact(&mut buf)
}

fn connect(target: SocketAddrV4) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(target), IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Connect, one exchange, reset.
fn one_shot(target: SocketAddrV4) -> std::io::Result<()> {
    let mut stream = connect(target)?;
    exchange(&mut stream)?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))
}

/// One thread's share of the load, `index` of `config.connections`.
fn worker(config: &ClientConfig, index: usize, warm_end: Instant, end: Instant) -> Tally {
    let mut tally = Tally::new();
    let targets = &config.targets;
    let mut turn = index;
    let mut next_target = || {
        turn += 1;
        targets[turn % targets.len()]
    };
    match config.mode {
        Mode::NewConnection => loop {
            let started = Instant::now();
            if started >= end {
                break;
            }
            let result = one_shot(next_target());
            tally.done(result, started.elapsed(), started >= warm_end);
        },
        Mode::Persistent => {
            let mut stream: Option<TcpStream> = None;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let result = match stream.as_mut() {
                    Some(s) => exchange(s),
                    None => connect(next_target()).and_then(|mut s| {
                        let r = exchange(&mut s);
                        stream = Some(s);
                        r
                    }),
                };
                if result.is_err() {
                    stream = None;
                }
                tally.done(result, started.elapsed(), started >= warm_end);
            }
        }
        Mode::FixedRate => {
            let step = Duration::from_nanos(1_000_000_000 / config.rate.max(1));
            let interval = step * config.connections as u32;
            let mut scheduled =
                warm_end - Duration::from_millis(config.warmup_ms) + step * index as u32;
            while scheduled < end {
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let result = one_shot(next_target());
                tally.done(result, scheduled.elapsed(), scheduled >= warm_end);
                scheduled += interval;
            }
        }
    }
    tally
}

pub fn cpu_us_self() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| {
        let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
        us(u.user_time()) + us(u.system_time())
    })
}

/// The client process: runs the load in `config` (JSON) and prints its [`ClientResult`].
pub fn run_client(config: &str) -> Result<(), DataplaneError> {
    let config: ClientConfig = serde_json::from_str(config).map_err(|e| DataplaneError::Bad {
        what: "the client's config",
        message: e.to_string(),
    })?;
    if config.targets.is_empty() || config.connections == 0 {
        return Err(DataplaneError::Bad {
            what: "the client's config",
            message: "no targets or no connections".into(),
        });
    }
    if let Some(procs) = &config.cgroup_procs {
        std::fs::write(procs, std::process::id().to_string())
            .map_err(io_err("join the benchmark's cgroup through", procs))?;
    }
    let start = Instant::now();
    let warm_end = start + Duration::from_millis(config.warmup_ms);
    let end = warm_end + Duration::from_millis(config.duration_ms);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.connections)
            .map(|i| {
                let config = &config;
                scope.spawn(move || worker(config, i, warm_end, end))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Tally::new()))
            .collect()
    });
    let window_s = end.saturating_duration_since(warm_end).as_secs_f64();
    let mut all = Tally::new();
    for t in tallies {
        let _ = all.hist.add(&t.hist);
        all.window += t.window;
        all.total += t.total;
        all.errors += t.errors;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let result = ClientResult {
        requests: all.window,
        window_s,
        p50_us: all.hist.value_at_quantile(0.5),
        p90_us: all.hist.value_at_quantile(0.9),
        p99_us: all.hist.value_at_quantile(0.99),
        max_us: all.hist.max(),
        errors: all.errors,
        first_error: all.first_error,
        total_requests: all.total,
        cpu_us: cpu_us_self(),
    };
    println!(
        "{}",
        serde_json::to_string(&result).expect("a plain struct serialises")
    );
    Ok(())
}

/// A client run as seen by the inner process: the client's result and the CPU time the inner
/// process (the server threads; nothing else runs in it meanwhile) used over the client's life.
pub struct Run {
    pub result: ClientResult,
    pub server_cpu_us: u64,
}

/// Runs one client process in `ns` and waits for its figures.
pub fn run(exe: &Path, ns: &Netns, config: &ClientConfig) -> Result<Run, DataplaneError> {
    let json = serde_json::to_string(config).map_err(|e| DataplaneError::Bad {
        what: "the client's config",
        message: e.to_string(),
    })?;
    let before = cpu_us_self();
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(exe)
        .args(["bench", "dataplane"])
        .env(CLIENT_ENV, json)
        .env_remove(INNER_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io_err("run a client with", Path::new("nsenter")))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut last = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(io_err("read the output of", exe))?;
        if line.starts_with('{') {
            last = line;
        }
    }
    let status = child.wait().map_err(io_err("wait for", exe))?;
    let server_cpu_us = cpu_us_self().saturating_sub(before);
    if !status.success() || last.is_empty() {
        return Err(DataplaneError::Command {
            command: "a benchmark client".into(),
            message: format!("exited with {status} and no result"),
        });
    }
    let result = serde_json::from_str(&last).map_err(|e| DataplaneError::Bad {
        what: "a client's result",
        message: e.to_string(),
    })?;
    Ok(Run {
        result,
        server_cpu_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    #[test]
    fn every_mode_counts_requests_against_a_loopback_server() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        for _ in 0..4 {
            let l = listener.try_clone().expect("clone");
            std::thread::spawn(move || loop {
                if let Ok((mut s, _)) = l.accept() {
                    let mut buf = [0u8; REQUEST.len()];
                    while s.read_exact(&mut buf).is_ok() && s.write_all(RESPONSE).is_ok() {}
                }
            });
        }
        for mode in [Mode::NewConnection, Mode::Persistent, Mode::FixedRate] {
            let config = ClientConfig {
                targets: vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)],
                mode,
                connections: 2,
                rate: 200,
                duration_ms: 100,
                warmup_ms: 10,
                cgroup_procs: None,
            };
            let start = Instant::now();
            let warm_end = start + Duration::from_millis(10);
            let end = warm_end + Duration::from_millis(100);
            let tally = worker(&config, 0, warm_end, end);
            assert_eq!(tally.errors, 0, "{mode:?}: {:?}", tally.first_error);
            assert!(tally.window > 0 && tally.total >= tally.window, "{mode:?}");
            if mode == Mode::FixedRate {
                // One thread of two at 200/s for 110 ms: about 11 requests.
                assert!(tally.total <= 13, "{}", tally.total);
            }
        }
    }
}
