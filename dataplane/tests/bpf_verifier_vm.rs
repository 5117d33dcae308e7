//! The VM tier (design.md §7, tier 5): boots Debian's Linux 6.1 kernel under qemu (KVM when
//! /dev/kvm opens, else TCG) with a throwaway initramfs and loads every committed
//! `bpf/*.bpf.o` there, so the verifier of the oldest kernel Berth supports (issue 5: "Linux 6.1
//! and later") judges each program, whatever kernel the host runs.
//!
//! The initramfs holds busybox (init), the objects, and this very test binary as the loader:
//! inside the guest it runs [`guest_side`], which loads with aya as the agent does. Nothing on
//! the host is changed: no root is needed, the kernel package is only downloaded and unpacked
//! into a cache (see `kernel.rs`), and the VM has no disk and no network.
//!
//! Skips ("skipping: …", a failure under `BERTH_REQUIRE_PRIVILEGED=1`) when qemu, busybox or
//! the kernel package is unavailable. `BERTH_VM_KERNEL=<vmlinuz>`, `BERTH_VM_ACCEL=tcg|kvm` and
//! `BERTH_VM_OBJECTS=<dir of *.bpf.o>` (instead of bpf/) override the defaults.

#[path = "bpf_verifier_vm/guest.rs"]
mod guest;
#[path = "bpf_verifier_vm/initramfs.rs"]
mod initramfs;
#[path = "bpf_verifier_vm/kernel.rs"]
mod kernel;
#[path = "bpf_verifier_vm/qemu.rs"]
mod qemu;
mod support;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use initramfs::Initramfs;
use support::{on_path, skip};

/// Set (to the objects' directory) only inside the guest, where it turns [`guest_side`] on.
const GUEST_ENV: &str = "BERTH_VM_GUEST_OBJECTS";
const GUEST_TEST: &str = "guest_side";
const BUSYBOX: &str = "/bin/busybox";

/// Loads the objects of another directory instead of bpf/ (to try a change, or to see a failure).
const OBJECTS_ENV: &str = "BERTH_VM_OBJECTS";

fn committed_objects() -> Vec<PathBuf> {
    let dir = env::var_os(OBJECTS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../bpf"));
    let mut objects: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".bpf.o"))
        .collect();
    objects.sort();
    objects
}

/// The guest's init: mounts what the loader needs, reports the kernel, runs the loader, powers
/// off. Every line the host parses starts with `BERTH-VM`.
fn init_script(library_path: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir /sys/fs/cgroup/berth-vm
ip link set lo up
echo "BERTH-VM-KERNEL $(uname -r) $(uname -v)"
echo "BERTH-VM-UPTIME init $(cut -d' ' -f1 /proc/uptime)"
LD_LIBRARY_PATH={library_path} {GUEST_ENV}=/objects /loader --exact {GUEST_TEST} --nocapture --test-threads=1
echo "BERTH-VM-EXIT $?"
[ -x /bin/bpftool ] && for object in /objects/*.bpf.o; do
    name=${{object##*/}}
    # bpffs refuses names with a dot.
    pins=/sys/fs/bpf/libbpf-${{name%%.*}}
    if out=$(LD_LIBRARY_PATH={library_path} bpftool prog loadall "$object" "$pins" 2>&1); then
        echo "BERTH-VM PASS $name libbpf:bpftool-loadall - $(ls "$pins" | tr '\n' ' ')"
    else
        echo "BERTH-VM FAIL $name libbpf:bpftool-loadall - load: $(echo "$out" | grep '^Error' | head -n 1)"
        echo "$out" | sed "s/^/BERTH-VM-LOG $name libbpf | /"
    fi
done
echo "BERTH-VM-UPTIME done $(cut -d' ' -f1 /proc/uptime)"
echo BERTH-VM-DONE
poweroff -f
"#
    )
}

/// The test binary, without its debug info when `strip` is at hand (a quarter of the size, so
/// a quarter of the initramfs the guest unpacks).
fn loader_binary(scratch: &Path) -> PathBuf {
    let exe = env::current_exe().expect("current exe");
    let stripped = scratch.join("loader");
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&exe)
        .status()
        .is_ok_and(|status| status.success());
    if ok {
        stripped
    } else {
        exe
    }
}

fn find_bpftool() -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("bpftool"))
        .find(|path| path.is_file())
}

fn build_initramfs(scratch: &Path, objects: &[PathBuf]) -> PathBuf {
    let mut archive = Initramfs::default();
    for dir in ["proc", "sys", "dev", "tmp", "objects"] {
        archive.dir(dir);
    }
    // The kernel opens /dev/console for init's stdin/stdout before anything is mounted.
    archive.char_dev("dev/console", 5, 1);
    archive
        .binary_with_libraries(Path::new(BUSYBOX), "bin/busybox")
        .expect("ldd busybox");
    // libbpf's view too (bpftool is what one inspects a node with), when the host has it.
    if let Some(bpftool) = find_bpftool() {
        archive
            .binary_with_libraries(&bpftool, "bin/bpftool")
            .expect("ldd bpftool");
    }
    let loader = loader_binary(scratch);
    archive
        .binary_with_libraries(&loader, "loader")
        .expect("ldd the loader");
    for object in objects {
        let name = object.file_name().expect("name").to_string_lossy();
        archive.copy(&format!("objects/{name}"), object, 0o644);
    }
    let library_path = archive.library_dirs().join(":");
    archive.bytes("init", init_script(&library_path).as_bytes(), 0o755);
    let out = scratch.join("initramfs.cpio");
    archive.write(&out).expect("write the initramfs");
    out
}

#[test]
fn every_bpf_object_passes_the_verifier_of_linux_6_1() {
    if env::var_os(GUEST_ENV).is_some() {
        return;
    }
    if !on_path(qemu::QEMU) {
        return skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    }
    if !Path::new(BUSYBOX).is_file() || !on_path("ldd") {
        return skip("needs /bin/busybox (busybox-static) and ldd");
    }
    let started = Instant::now();
    let kernel = match kernel::vmlinuz() {
        Ok(kernel) => kernel,
        Err(reason) => return skip(&format!("no Debian Linux 6.1 kernel: {reason}")),
    };
    let objects = committed_objects();
    assert!(!objects.is_empty(), "no bpf/*.bpf.o committed");
    let scratch = tempfile::Builder::new()
        .prefix("berth-vm-")
        .tempdir()
        .expect("tempdir");
    let initrd = build_initramfs(scratch.path(), &objects);
    let prepared = started.elapsed();
    // TCG boots and loads in well under a minute on a shared 2-core machine; the slack is for
    // a loaded CI host.
    let deadline = 180;
    let boot = qemu::boot(&kernel, &initrd, Duration::from_secs(deadline));
    let report = Report::parse(&boot.console);
    eprintln!(
        "vm: {} ({}), accel {}, kernel {}: prepare {:.1}s, boot+load {:.1}s, total {:.1}s",
        kernel.display(),
        human_size(&initrd),
        boot.accel,
        report.kernel.as_deref().unwrap_or("?"),
        prepared.as_secs_f64(),
        boot.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    eprintln!("vm: guest uptime (s): {}", report.uptimes.join(", "));
    if let Some(reason) = &boot.kvm_fallback {
        eprintln!("vm: KVM gave up for TCG: {reason}");
    }
    for line in &report.results {
        eprintln!("  {line}");
    }
    let console = || boot.console.join("\n");
    assert!(
        !boot.timed_out,
        "the VM ran past {deadline}s:\n{}",
        console()
    );
    assert!(
        report.done && report.exit == Some(0),
        "the guest did not finish cleanly (loader exit {:?}):\n{}",
        report.exit,
        console()
    );
    let release = report.kernel.as_deref().unwrap_or("");
    if env::var_os(kernel::KERNEL_ENV).is_none() {
        assert!(release.starts_with("6.1."), "booted {release:?}, not 6.1");
    }
    let failures: Vec<&String> = report
        .results
        .iter()
        .filter(|line| !line.starts_with("PASS"))
        .collect();
    assert!(
        failures.is_empty(),
        "failed on {release}:\n{}\n{}",
        report.results.join("\n"),
        report.logs.join("\n")
    );
    for object in &objects {
        let name = object.file_name().expect("name").to_string_lossy();
        let passed = report
            .results
            .iter()
            .filter(|line| line.split(' ').nth(1) == Some(&*name))
            .count();
        assert!(passed > 0, "{name}: the guest loaded no program of it");
    }
    assert!(
        report
            .results
            .iter()
            .any(|line| line.contains("Datapath::open")),
        "the agent's loader did not run"
    );
}

/// Inside the VM only (see [`init_script`]); a no-op on the host.
#[test]
fn guest_side() {
    if let Some(objects) = env::var_os(GUEST_ENV) {
        guest::run(Path::new(&objects));
    }
}

#[derive(Default)]
struct Report {
    kernel: Option<String>,
    /// `PASS …` / `FAIL …`, one per program.
    results: Vec<String>,
    /// Verifier logs of failed programs.
    logs: Vec<String>,
    exit: Option<i32>,
    done: bool,
    /// The guest clock when init started and when it was done: boot and load time apart.
    uptimes: Vec<String>,
}

impl Report {
    fn parse(console: &[String]) -> Self {
        let mut report = Self::default();
        for line in console {
            // The serial console may prefix a line with kernel noise; the marker is what counts.
            let Some(at) = line.find("BERTH-VM") else {
                continue;
            };
            let line = &line[at..];
            if let Some(rest) = line.strip_prefix("BERTH-VM-KERNEL ") {
                report.kernel = rest.split_whitespace().next().map(str::to_string);
            } else if let Some(rest) = line.strip_prefix("BERTH-VM-EXIT ") {
                report.exit = rest.trim().parse().ok();
            } else if let Some(rest) = line.strip_prefix("BERTH-VM-UPTIME ") {
                report.uptimes.push(rest.trim().to_string());
            } else if line.starts_with("BERTH-VM-DONE") {
                report.done = true;
            } else if let Some(rest) = line.strip_prefix("BERTH-VM-LOG ") {
                report.logs.push(rest.to_string());
            } else if let Some(rest) = line.strip_prefix("BERTH-VM ") {
                if rest.starts_with("PASS ") || rest.starts_with("FAIL ") {
                    report.results.push(rest.to_string());
                }
            }
        }
        report
    }
}

fn human_size(path: &Path) -> String {
    let bytes = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
    format!("initramfs {} MiB", bytes >> 20)
}
