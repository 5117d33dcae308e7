//! Boots the kernel and initramfs under qemu with the serial console on stdout, and collects
//! the console until the guest powers off, or kills qemu at a deadline.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Forces an accelerator: `kvm` or `tcg` (default: kvm when /dev/kvm opens, else tcg).
pub const ACCEL_ENV: &str = "BERTH_VM_ACCEL";
pub const QEMU: &str = "qemu-system-x86_64";

pub struct Boot {
    pub accel: &'static str,
    pub console: Vec<String>,
    pub elapsed: Duration,
    pub timed_out: bool,
    /// Why KVM was tried and given up for TCG, if it was.
    pub kvm_fallback: Option<String>,
}

/// Under KVM the guest reaches init in a second or two; nested KVM (a VM inside a cloud VM)
/// can instead hang in early boot, so KVM must show a sign of life this soon or TCG takes over.
const KVM_LIFE_DEADLINE: Duration = Duration::from_secs(10);

/// Boots under [`accel`], falling back from KVM to TCG when the KVM guest does not reach init.
pub fn boot(kernel: &Path, initrd: &Path, deadline: Duration) -> Boot {
    let accel = accel();
    if accel == "tcg" {
        return boot_with("tcg", kernel, initrd, deadline, None);
    }
    let kvm = boot_with("kvm", kernel, initrd, deadline, Some(KVM_LIFE_DEADLINE));
    if kvm.console.iter().any(|line| line.contains(LIFE_MARKER)) {
        return kvm;
    }
    let reason = format!(
        "no {LIFE_MARKER} within {}s under KVM (last console line: {:?})",
        KVM_LIFE_DEADLINE.as_secs(),
        kvm.console.last().map(String::as_str).unwrap_or("")
    );
    let mut tcg = boot_with("tcg", kernel, initrd, deadline, None);
    tcg.kvm_fallback = Some(reason);
    tcg.elapsed += kvm.elapsed;
    tcg
}

/// The guest's first line from init.
const LIFE_MARKER: &str = "BERTH-VM-KERNEL";

pub fn accel() -> &'static str {
    match std::env::var(ACCEL_ENV).as_deref() {
        Ok("tcg") => "tcg",
        Ok("kvm") => "kvm",
        _ => {
            let usable = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
            if usable {
                "kvm"
            } else {
                "tcg"
            }
        }
    }
}

/// Kills qemu if the test ends early (a panic while reading), so no VM outlives the test.
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn boot_with(
    accel: &'static str,
    kernel: &Path,
    initrd: &Path,
    deadline: Duration,
    life_deadline: Option<Duration>,
) -> Boot {
    // -cpu host sets MSRs (IA32_ARCH_CAPABILITIES) some nested hypervisors refuse.
    let cpu = if accel == "kvm" {
        "host,-arch-capabilities"
    } else {
        "max"
    };
    let started = Instant::now();
    let mut child = Command::new(QEMU)
        .args(["-accel", accel, "-cpu", cpu, "-m", "1024", "-smp", "1"])
        .args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        // panic=-1 with -no-reboot: a kernel panic (or init exiting) ends qemu at once.
        .args([
            "-append",
            "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn qemu");
    let stdout = child.stdout.take().expect("qemu stdout");
    let guard = QemuGuard(child);
    let (lines_tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let mut timed_out = false;
    let mut alive = life_deadline.is_none();
    loop {
        let limit = if alive {
            deadline
        } else {
            life_deadline.unwrap_or(deadline)
        };
        let left = limit.saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                alive |= line.contains(LIFE_MARKER);
                console.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    let mut guard = guard;
    if !timed_out {
        // EOF on the console: qemu is exiting (the guest powered off).
        let _ = guard.0.wait();
    }
    drop(guard);
    Boot {
        accel,
        console,
        elapsed: started.elapsed(),
        timed_out,
        kvm_fallback: None,
    }
}
