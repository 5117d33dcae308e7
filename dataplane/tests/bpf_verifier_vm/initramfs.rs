//! The guest's whole root filesystem: a newc cpio archive (the format the kernel unpacks as
//! initramfs, `Documentation/driver-api/early-userspace/buffer-format.rst`) written here, so
//! no cpio tool and no root (for /dev/console) are needed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

enum Entry {
    Dir,
    Bytes { data: Vec<u8>, mode: u32 },
    Copy { source: PathBuf, mode: u32 },
    CharDev { major: u32, minor: u32 },
}

/// The archive's entries by path (relative, no leading '/'); sorted, so a directory always
/// precedes what is in it, as the kernel's unpacker needs.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut prefix = String::new();
        for part in path.split('/').filter(|part| !part.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries.entry(prefix.clone()).or_insert(Entry::Dir);
        }
    }

    fn parent_of(&mut self, path: &str) -> String {
        let path = path.trim_matches('/').to_string();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        path
    }

    pub fn bytes(&mut self, path: &str, data: &[u8], mode: u32) {
        let path = self.parent_of(path);
        let data = data.to_vec();
        self.entries.insert(path, Entry::Bytes { data, mode });
    }

    /// `source`'s content (symlinks followed) at `path`, read only when the archive is written.
    pub fn copy(&mut self, path: &str, source: &Path, mode: u32) {
        let path = self.parent_of(path);
        let source = source.to_path_buf();
        self.entries.insert(path, Entry::Copy { source, mode });
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        let path = self.parent_of(path);
        self.entries.insert(path, Entry::CharDev { major, minor });
    }

    /// `binary` at the same absolute path, with every shared library `ldd` names for it.
    pub fn binary_with_libraries(&mut self, binary: &Path, at: &str) -> io::Result<()> {
        self.copy(at, binary, 0o755);
        for library in shared_libraries(binary)? {
            let path = library.to_string_lossy().into_owned();
            self.copy(&path, &library, 0o755);
        }
        Ok(())
    }

    /// The directories holding the archive's shared libraries, for `LD_LIBRARY_PATH`.
    pub fn library_dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = self
            .entries
            .keys()
            .filter(|path| path.contains(".so"))
            .filter_map(|path| path.rsplit_once('/').map(|(dir, _)| format!("/{dir}")))
            .collect();
        dirs.dedup();
        dirs
    }

    pub fn write(&self, out: &Path) -> io::Result<()> {
        let mut writer = CpioWriter {
            out: BufWriter::new(File::create(out)?),
            written: 0,
            ino: 0,
        };
        for (path, entry) in &self.entries {
            match entry {
                Entry::Dir => writer.entry(path, S_IFDIR | 0o755, (0, 0), &mut io::empty(), 0)?,
                Entry::Bytes { data, mode } => {
                    let len = data.len() as u64;
                    writer.entry(path, S_IFREG | mode, (0, 0), &mut data.as_slice(), len)?
                }
                Entry::Copy { source, mode } => {
                    let mut file = File::open(source).map_err(|error| {
                        io::Error::new(error.kind(), format!("open {}: {error}", source.display()))
                    })?;
                    let len = file.metadata()?.len();
                    writer.entry(path, S_IFREG | mode, (0, 0), &mut file, len)?
                }
                Entry::CharDev { major, minor } => {
                    writer.entry(path, S_IFCHR | 0o600, (*major, *minor), &mut io::empty(), 0)?
                }
            }
        }
        writer.entry("TRAILER!!!", 0, (0, 0), &mut io::empty(), 0)?;
        writer.out.flush()
    }
}

struct CpioWriter {
    out: BufWriter<File>,
    written: u64,
    ino: u32,
}

impl CpioWriter {
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &mut dyn io::Read,
        len: u64,
    ) -> io::Result<()> {
        let size = u32::try_from(len)
            .map_err(|_| io::Error::other(format!("{name}: too large for newc ({len} bytes)")))?;
        self.ino += 1;
        let name_size = name.len() + 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check.
        let header = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}\
             {rdev_major:08x}{rdev_minor:08x}{name_size:08x}{:08x}",
            self.ino, 0, 0, 1, 0, 0, 0, 0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        let copied = io::copy(&mut io::Read::take(data, len), &mut self.out)?;
        if copied != len {
            return Err(io::Error::other(format!("{name}: changed while archived")));
        }
        self.written += copied;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.put(&[0; 3][..pad as usize])
    }
}

/// The absolute paths `ldd` resolves for `binary` (none for a static one).
fn shared_libraries(binary: &Path) -> io::Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output()?;
    // ldd exits 1 for a static binary ("not a dynamic executable").
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .flat_map(|line| line.split_whitespace())
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_parents_come_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut archive = Initramfs::default();
        archive.bytes("a/b/file", b"hello", 0o644);
        archive.char_dev("dev/console", 5, 1);
        let out = dir.path().join("x.cpio");
        archive.write(&out).expect("write");
        let bytes = std::fs::read(&out).expect("read");
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        let order: Vec<usize> = [
            "a\0",
            "a/b\0",
            "a/b/file\0",
            "hello",
            "dev/console\0",
            "TRAILER",
        ]
        .iter()
        .map(|needle| text.find(needle).expect(needle))
        .collect();
        assert!(order[0] < order[1] && order[1] < order[2] && order[2] < order[3]);
        // Every header starts on a 4-byte boundary.
        for (at, _) in text.match_indices("070701") {
            assert_eq!(at % 4, 0);
        }
        // /dev/console: a character device 5:1.
        let console = text.find("dev/console\0").expect("console") - 110;
        assert_eq!(&text[console + 14..console + 22], "00002180");
        assert_eq!(&text[console + 78..console + 94], "0000000500000001");
    }
}
