//! Debian's Linux 6.1 kernel for the VM: the newest `linux-image-6.1.0-<abi>-amd64` that apt
//! knows, downloaded with `apt-get download` (never installed) and reduced to its vmlinuz in a
//! cache directory, so later runs need no network.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Overrides the kernel: a vmlinuz path (for machines without apt or network).
pub const KERNEL_ENV: &str = "BERTH_VM_KERNEL";

/// The cache for kernels: `$XDG_CACHE_HOME/berth/vm-kernel`, else `~/.cache/berth/vm-kernel`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("berth").join("vm-kernel"))
}

/// A vmlinuz for Linux 6.1: the override, a cached one, or a fresh download; or why none.
pub fn vmlinuz() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os(KERNEL_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{KERNEL_ENV}={} is not a file", path.display()))
        };
    }
    let cache = cache_dir().ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
    if let Some(cached) = newest_cached(&cache) {
        return Ok(cached);
    }
    download(&cache)
}

/// The cached vmlinuz with the highest ABI number, if any.
fn newest_cached(cache: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(cache.join("boot")).ok()?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let abi = abi_of(name.strip_prefix("vmlinuz-")?)?;
            Some((abi, entry.path()))
        })
        .max_by_key(|(abi, _)| *abi)
        .map(|(_, path)| path)
}

/// The ABI number of a Debian 6.1 flavour name: `6.1.0-56-amd64` → 56. Other flavours (cloud,
/// rt) and other kernels are not ours.
fn abi_of(release: &str) -> Option<u32> {
    release
        .strip_prefix("6.1.0-")?
        .strip_suffix("-amd64")?
        .parse()
        .ok()
}

/// The newest `linux-image-6.1.0-<abi>-amd64` package in apt's lists.
fn newest_package() -> Result<String, String> {
    let output = Command::new("apt-cache")
        .args([
            "search",
            "--names-only",
            r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("run apt-cache: {error}"))?;
    if !output.status.success() {
        return Err(format!("apt-cache search failed: {}", output.status));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            Some((
                abi_of(name.strip_prefix("linux-image-")?)?,
                name.to_string(),
            ))
        })
        .max_by_key(|(abi, _)| *abi)
        .map(|(_, name)| name)
        .ok_or_else(|| "apt knows no linux-image-6.1.0-*-amd64 (not Debian bookworm?)".to_string())
}

/// Downloads the newest 6.1 package into `cache`, keeps only its `boot/` files (vmlinuz and
/// config, ~8 MB) and removes the .deb (~70 MB, mostly modules the VM does not need).
fn download(cache: &Path) -> Result<PathBuf, String> {
    let package = newest_package()?;
    fs::create_dir_all(cache).map_err(|error| format!("create {}: {error}", cache.display()))?;
    let status = Command::new("apt-get")
        .args(["download", "-qq", &package])
        .current_dir(cache)
        .status()
        .map_err(|error| format!("run apt-get: {error}"))?;
    if !status.success() {
        return Err(format!(
            "apt-get download {package} failed ({status}); stale apt lists? run apt-get update"
        ));
    }
    let deb = fs::read_dir(cache)
        .map_err(|error| format!("read {}: {error}", cache.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
                })
        })
        .ok_or_else(|| format!("apt-get download left no {package} .deb"))?;
    // dpkg-deb -x would unpack ~400 MB of modules; tar takes only boot/.
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"dpkg-deb --fsys-tarfile "$1" | tar -x --wildcards './boot/*'"#)
        .arg("sh")
        .arg(&deb)
        .current_dir(cache)
        .status()
        .map_err(|error| format!("run dpkg-deb: {error}"))?;
    let _ = fs::remove_file(&deb);
    if !status.success() {
        return Err(format!("extract boot/ from {}: {status}", deb.display()));
    }
    newest_cached(cache).ok_or_else(|| format!("{package} has no boot/vmlinuz-6.1.0-*-amd64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_generic_amd64_flavour_of_6_1_is_taken() {
        assert_eq!(abi_of("6.1.0-56-amd64"), Some(56));
        assert_eq!(abi_of("6.1.0-56-cloud-amd64"), None);
        assert_eq!(abi_of("6.12.0-1-amd64"), None);
    }
}
