//! Keeping an idle shim's resident set small. What a shim maps of its binary and of the shared
//! libraries is page cache shared by every shim, yet each process's VmRSS counts every page it
//! touched since it started (and the kernel maps up to 64 KiB around each fault). Once a request
//! is served, the shim drops its mappings of clean, read-only file pages; they stay cached and
//! are mapped again the moment they are used, so an idle shim's VmRSS is its own memory plus
//! the few pages its `poll` loop touches.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

/// A private, read-only, file-backed mapping that holds no anonymous (copied-on-write) page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanMapping {
    pub start: usize,
    pub len: usize,
    pub rss_kib: u64,
}

/// One mapping's header and the fields that decide whether it may be dropped.
#[derive(Default)]
struct Vma {
    start: usize,
    end: usize,
    eligible: bool,
    rss_kib: Option<u64>,
    anonymous_kib: Option<u64>,
}

impl Vma {
    fn header(line: &str) -> Option<Vma> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let perms = fields.next()?.as_bytes();
        let path = fields.nth(3).unwrap_or("");
        // Read-only and private: never written by this process except where smaps says
        // Anonymous (relocations applied before the loader made the mapping read-only).
        let eligible = perms.len() == 4
            && perms[0] == b'r'
            && perms[1] == b'-'
            && perms[3] == b'p'
            && path.starts_with('/');
        Some(Vma {
            start,
            end,
            eligible,
            ..Vma::default()
        })
    }

    fn clean(&self) -> Option<CleanMapping> {
        let rss_kib = self.rss_kib?;
        (self.eligible && self.anonymous_kib == Some(0)).then_some(CleanMapping {
            start: self.start,
            len: self.end - self.start,
            rss_kib,
        })
    }
}

fn field_kib(value: &str) -> Option<u64> {
    value.split_whitespace().next()?.parse().ok()
}

/// The mappings of an `smaps` text (read line by line) that may be dropped.
pub fn clean_mappings(smaps: impl BufRead) -> io::Result<Vec<CleanMapping>> {
    let mut out = Vec::new();
    let mut current: Option<Vma> = None;
    for line in smaps.lines() {
        let line = line?;
        match line.split_once(':') {
            Some((name, value)) if !name.contains(' ') && !name.contains('-') => {
                if let Some(vma) = current.as_mut() {
                    match name {
                        "Rss" => vma.rss_kib = field_kib(value),
                        "Anonymous" => vma.anonymous_kib = field_kib(value),
                        _ => {}
                    }
                }
            }
            _ => {
                out.extend(current.take().and_then(|v| v.clean()));
                current = Vma::header(&line);
            }
        }
    }
    out.extend(current.and_then(|v| v.clean()));
    Ok(out)
}

/// Drops this process's resident clean file pages and gives the allocator's free memory back.
/// The mappings are read from `smaps` once and reused while `map_files` still lists each of them
/// with the same bounds: reading `smaps` walks every page table and touches more of the program
/// than the trim then drops, and the shim maps no file after it started. (`map_files` needs
/// CAP_SYS_ADMIN; without it, `smaps` is read every time.)
pub struct Trimmer {
    proc_self: PathBuf,
    mappings: Vec<CleanMapping>,
}

impl Trimmer {
    /// `proc_self` is normally `/proc/self`.
    pub fn new(proc_self: &Path) -> Trimmer {
        Trimmer {
            proc_self: proc_self.to_owned(),
            mappings: Vec::new(),
        }
    }

    /// Returns how many mappings it dropped the pages of.
    pub fn trim(&mut self) -> io::Result<usize> {
        if self.mappings.is_empty() || !self.mappings.iter().all(|m| self.still_mapped(m)) {
            let file = File::open(self.proc_self.join("smaps"))?;
            // Collected first: dropping pages while reading would only fault them back in.
            self.mappings = clean_mappings(BufReader::with_capacity(4096, file))?;
        }
        crate::sys::residency::release_free_heap();
        let dropped = self
            .mappings
            .iter()
            .filter(|m| crate::sys::residency::drop_clean_file_pages(m.start, m.len).is_ok());
        Ok(dropped.count())
    }

    /// A file is mapped at exactly `m`'s bounds (an unmapped or resized range, or one that is
    /// anonymous memory now, has no entry), so it is still the mapping `smaps` described.
    fn still_mapped(&self, m: &CleanMapping) -> bool {
        let name = format!("{:x}-{:x}", m.start, m.start + m.len);
        std::fs::symlink_metadata(self.proc_self.join("map_files").join(name)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c8a00000-55d0c8a2b000 r--p 00000000 fe:01 1234                       /usr/bin/berth-shim
Size:                172 kB
Rss:                 172 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw sd
55d0c8a2b000-55d0c8b00000 r-xp 0002b000 fe:01 1234                       /usr/bin/berth-shim
Size:                852 kB
Rss:                 448 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me dw sd
55d0c8b00000-55d0c8b0d000 r--p 00100000 fe:01 1234                       /usr/bin/berth-shim
Size:                 52 kB
Rss:                  52 kB
Anonymous:            52 kB
VmFlags: rd mr mw me dw ac sd
55d0c8b0d000-55d0c8b0f000 rw-p 0010d000 fe:01 1234                       /usr/bin/berth-shim
Size:                  8 kB
Rss:                   8 kB
Anonymous:             8 kB
55d0c8c00000-55d0c8c21000 rw-p 00000000 00:00 0                          [heap]
Rss:                   4 kB
Anonymous:             4 kB
7f1000000000-7f1000010000 r--p 00000000 fe:01 99                         /usr/lib/libc.so.6
Size:                 64 kB
Rss:                   0 kB
Anonymous:             0 kB
7f1000010000-7f1000020000 r--s 00000000 fe:01 98                         /dev/shm/shared
Rss:                   8 kB
Anonymous:             0 kB
7ffd0000000-7ffd0002000 r-xp 00000000 00:00 0                            [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f1000030000-7f1000040000 r-xp 00000000 fe:01 97                         /usr/lib/libgcc_s.so.1
Size:                 64 kB
Rss:                  64 kB
";

    #[test]
    fn only_clean_private_read_only_file_mappings() {
        let got = clean_mappings(SMAPS.as_bytes()).unwrap();
        // The relocated read-only data (Anonymous 52 kB), writable data, the heap, a shared
        // mapping, the vDSO and a mapping whose Anonymous the kernel did not report are kept;
        // one with nothing resident yet is kept, as it may be touched later.
        assert_eq!(
            got,
            vec![
                CleanMapping {
                    start: 0x55d0c8a00000,
                    len: 0x2b000,
                    rss_kib: 172
                },
                CleanMapping {
                    start: 0x55d0c8a2b000,
                    len: 0xd5000,
                    rss_kib: 448
                },
                CleanMapping {
                    start: 0x7f1000000000,
                    len: 0x10000,
                    rss_kib: 0
                },
            ]
        );
    }

    #[test]
    fn trimming_this_process_keeps_it_working() {
        let proc_self = Path::new("/proc/self");
        if !proc_self.join("smaps").exists() {
            eprintln!("skipping: no /proc/self/smaps");
            return;
        }
        let resident = || {
            let smaps = File::open(proc_self.join("smaps")).unwrap();
            let mappings = clean_mappings(BufReader::new(smaps)).unwrap();
            mappings.iter().map(|m| m.rss_kib).sum::<u64>()
        };
        let mut trimmer = Trimmer::new(proc_self);
        // Other test threads run meanwhile: their code and data must survive the trim.
        let before: Vec<u64> = (0..1000)
            .map(|i: u64| i.wrapping_mul(0x9e37_79b9))
            .collect();
        let first = resident();
        let count = trimmer.trim().unwrap();
        assert!(first > 0 && count > 0, "a test binary maps its text");
        let after: Vec<u64> = (0..1000)
            .map(|i: u64| i.wrapping_mul(0x9e37_79b9))
            .collect();
        assert_eq!(before, after);
        assert_eq!(trimmer.trim().unwrap(), count, "the same mappings again");
        let left = resident();
        assert!(left < first, "{left} KiB still resident of {first}");
    }

    #[test]
    fn remembered_mappings_are_checked_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let smaps = "\
7f1000000000-7f1000010000 r--p 00000000 fe:01 99   /usr/lib/libc.so.6
Rss:                  64 kB
Anonymous:             0 kB
";
        std::fs::create_dir(dir.path().join("map_files")).unwrap();
        let mut trimmer = Trimmer::new(dir.path());
        trimmer.mappings = clean_mappings(smaps.as_bytes()).unwrap();
        assert!(!trimmer.still_mapped(&trimmer.mappings[0]));
        let entry = dir.path().join("map_files/7f1000000000-7f1000010000");
        std::fs::write(entry, "").unwrap();
        assert!(trimmer.still_mapped(&trimmer.mappings[0]));
    }
}
