//! Unpacking one layer tar into its own directory, ready to be an overlayfs lowerdir: OCI
//! whiteouts become overlay whiteouts (`.wh.name` → a 0:0 character device `name`,
//! `.wh..wh..opq` → `trusted.overlay.opaque=y` on the directory); hard links, symlinks, devices,
//! modes, ownership, mtimes and xattrs are kept; no entry may land outside the directory, neither
//! by `..` nor through a symlink the layer itself planted.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::error::ImageError;
use super::manifest::{sniff_compression, Compression};
use crate::sys::xattr::lsetxattr;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const MAX_SYMLINK_HOPS: usize = 40;

/// Whether `dir` of an unpacked layer is an opaque directory (hides lower layers' contents).
pub fn is_opaque(dir: &Path) -> io::Result<bool> {
    Ok(crate::sys::xattr::lgetxattr(dir, OPAQUE_XATTR)?.as_deref() == Some(b"y"))
}

/// What unpacking learned about the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Bytes of regular file content written.
    pub size: u64,
}

/// Reads and hashes the uncompressed stream, so the diffID comes out of the same single pass.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks the layer blob at `blob` (gzip, zstd or plain tar, told apart by magic number) into
/// `dest`, which must not exist yet. The caller unpacks into a temporary name and renames it
/// into place, so a crash never leaves a half layer where the store would use it.
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<Unpacked, ImageError> {
    let file = File::open(blob).map_err(ImageError::io("open layer blob", blob))?;
    let mut buffered = BufReader::with_capacity(256 * 1024, file);
    let head = buffered
        .fill_buf()
        .map_err(ImageError::io("read layer blob", blob))?;
    let decoded: Box<dyn Read> = match sniff_compression(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(ImageError::io("start zstd decoder", blob))?,
        ),
        Compression::None => Box::new(buffered),
    };
    unpack_stream(decoded, dest, blob)
}

/// [`unpack_layer`] from an uncompressed tar stream; `source` names it in errors.
pub fn unpack_stream(
    stream: impl Read,
    dest: &Path,
    source: &Path,
) -> Result<Unpacked, ImageError> {
    fs::create_dir(dest).map_err(ImageError::io("create layer directory", dest))?;
    let mut reader = HashingReader {
        inner: stream,
        hasher: Sha256::new(),
    };
    let mut size = 0u64;
    let mut dirs = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut reader);
        let entries = archive
            .entries()
            .map_err(ImageError::io("read layer tar", source))?;
        for entry in entries {
            let mut entry = entry.map_err(ImageError::io("read layer tar", source))?;
            size += unpack_entry(&mut entry, dest, &mut dirs)?;
        }
    }
    // The tar ends with zero blocks the archive reader may not consume; they are part of the
    // diffID.
    io::copy(&mut reader, &mut io::sink()).map_err(ImageError::io("read layer tar", source))?;
    // Deepest first, after all their children were written, so the mtimes stick.
    for dir in dirs.iter().rev() {
        apply_metadata(dir, true)?;
    }
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(reader.hasher.finalize())),
        size,
    })
}

struct Meta {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

fn header_meta(header: &tar::Header, path: PathBuf) -> Meta {
    Meta {
        path,
        mode: header.mode().unwrap_or(0o644) & 0o7777,
        uid: header
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(0),
        gid: header
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(0),
        mtime: header.mtime().unwrap_or(0),
    }
}

/// Owner, then mode (chown clears set-id bits), then times; symlinks keep their mode.
fn apply_metadata(meta: &Meta, set_mode: bool) -> Result<(), ImageError> {
    lchown(&meta.path, Some(meta.uid), Some(meta.gid))
        .map_err(ImageError::io("chown", &meta.path))?;
    if set_mode {
        fs::set_permissions(&meta.path, fs::Permissions::from_mode(meta.mode))
            .map_err(ImageError::io("chmod", &meta.path))?;
    }
    let t = TimeSpec::new(i64::try_from(meta.mtime).unwrap_or(0), 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        &meta.path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ImageError::Io {
        op: "set mtime",
        path: meta.path.clone(),
        source: e.into(),
    })
}

/// Returns the bytes of file content written.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    dirs: &mut Vec<Meta>,
) -> Result<u64, ImageError> {
    let raw_path = entry
        .path()
        .map_err(ImageError::io("read entry path", root))?
        .into_owned();
    let mut components = clean_path(&raw_path)?;
    let kind = entry.header().entry_type();
    let Some(name) = components.pop() else {
        // The layer's own root (`./`): its metadata applies to the layer directory.
        if kind == EntryType::Directory {
            dirs.push(header_meta(entry.header(), root.to_path_buf()));
        }
        return Ok(0);
    };
    let parent = resolve_dir(root, &components, &raw_path)?;

    let name_str = name.to_string_lossy();
    if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
        if name_str == OPAQUE_WHITEOUT {
            return lsetxattr(&parent, OPAQUE_XATTR, b"y")
                .map(|_| 0)
                .map_err(ImageError::io("set opaque xattr", &parent));
        }
        if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() {
            // Other `.wh..wh.` metadata (AUFS hard-link directories) means nothing to overlay.
            return Ok(0);
        }
        let target = parent.join(hidden);
        remove_existing(&target, false)?;
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| {
            ImageError::Io {
                op: "create whiteout",
                path: target.clone(),
                source: e.into(),
            }
        })?;
        let meta = header_meta(entry.header(), target);
        return apply_metadata(&Meta { mode: 0, ..meta }, false).map(|_| 0);
    }

    let target = parent.join(&name);
    let meta = header_meta(entry.header(), target.clone());
    let mut written = 0;
    match kind {
        EntryType::Directory => {
            remove_existing(&target, true)?;
            if !target.is_dir() {
                fs::create_dir(&target).map_err(ImageError::io("create directory", &target))?;
            }
        }
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            remove_existing(&target, false)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(ImageError::io("create file", &target))?;
            written = io::copy(entry, &mut file).map_err(ImageError::io("write file", &target))?;
            file.flush()
                .map_err(ImageError::io("write file", &target))?;
        }
        EntryType::Symlink => {
            let link = entry
                .link_name()
                .map_err(ImageError::io("read symlink target", &target))?
                .ok_or_else(|| malformed(&raw_path, "symlink without a target"))?;
            remove_existing(&target, false)?;
            symlink(&link, &target).map_err(ImageError::io("create symlink", &target))?;
        }
        EntryType::Link => {
            let link = entry
                .link_name()
                .map_err(ImageError::io("read hard link target", &target))?
                .ok_or_else(|| malformed(&raw_path, "hard link without a target"))?;
            let mut src = clean_path(&link)?;
            let src_name = src
                .pop()
                .ok_or_else(|| malformed(&raw_path, "hard link to the layer root"))?;
            let src = resolve_dir(root, &src, &link)?.join(src_name);
            remove_existing(&target, false)?;
            // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
            fs::hard_link(&src, &target).map_err(ImageError::io("create hard link", &target))?;
            return Ok(0);
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let (flag, dev) = match kind {
                EntryType::Char => (SFlag::S_IFCHR, device(entry.header())),
                EntryType::Block => (SFlag::S_IFBLK, device(entry.header())),
                _ => (SFlag::S_IFIFO, 0),
            };
            remove_existing(&target, false)?;
            mknod(&target, flag, Mode::from_bits_truncate(meta.mode), dev).map_err(|e| {
                ImageError::Io {
                    op: "create device node",
                    path: target.clone(),
                    source: e.into(),
                }
            })?;
        }
        // pax and GNU long-name headers are folded into the next entry by the tar crate.
        _ => return Ok(0),
    }
    apply_xattrs(entry, &target)?;
    match kind {
        EntryType::Directory => dirs.push(meta),
        EntryType::Symlink => apply_metadata(&meta, false)?,
        _ => apply_metadata(&meta, true)?,
    }
    Ok(written)
}

fn device(header: &tar::Header) -> nix::libc::dev_t {
    let major = header.device_major().ok().flatten().unwrap_or(0);
    let minor = header.device_minor().ok().flatten().unwrap_or(0);
    makedev(u64::from(major), u64::from(minor))
}

/// PAX `SCHILY.xattr.*` records (file capabilities, SELinux labels). Overlay's own attributes
/// are never taken from an image: they would let a layer redirect lookups.
fn apply_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, target: &Path) -> Result<(), ImageError> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Ok(());
    };
    let mut attrs = Vec::new();
    for ext in exts.flatten() {
        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            let name = String::from_utf8_lossy(name).into_owned();
            if !name.starts_with("trusted.overlay.") {
                attrs.push((name, ext.value_bytes().to_vec()));
            }
        }
    }
    for (name, value) in attrs {
        if let Err(e) = lsetxattr(target, &name, &value) {
            // A filesystem without that namespace should not fail the whole image.
            tracing::warn!(path = %target.display(), xattr = %name, error = %e, "xattr not kept");
        }
    }
    Ok(())
}

fn malformed(entry: &Path, message: &str) -> ImageError {
    ImageError::Malformed {
        what: "layer entry",
        object: entry.display().to_string(),
        message: message.to_string(),
    }
}

/// An entry name as components relative to the layer root: leading `/` and `.` dropped, `..`
/// folded; a `..` above the root is an escape.
pub fn clean_path(path: &Path) -> Result<Vec<OsString>, ImageError> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(ImageError::PathEscape {
                        entry: path.to_path_buf(),
                    });
                }
            }
            Component::Normal(n) => out.push(n.to_os_string()),
        }
    }
    Ok(out)
}

/// The directory `components` names inside `root`, creating missing directories (0755, root)
/// and following symlinks as if `root` were `/`: an absolute target restarts at `root`, `..`
/// stops at it. So a layer that ships `lib -> /usr/lib` and then `lib/x` writes
/// `root/usr/lib/x`, and one that ships `evil -> ../../..` cannot reach above `root`.
fn resolve_dir(root: &Path, components: &[OsString], entry: &Path) -> Result<PathBuf, ImageError> {
    let mut resolved = root.to_path_buf();
    let mut depth = 0usize;
    let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == OsStr::new("..") {
            if depth > 0 {
                resolved.pop();
                depth -= 1;
            }
            continue;
        }
        if c.is_empty() || c == OsStr::new(".") {
            continue;
        }
        let next = resolved.join(&c);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(malformed(entry, "too many levels of symbolic links"));
                }
                let target = fs::read_link(&next).map_err(ImageError::io("read symlink", &next))?;
                if target.is_absolute() {
                    resolved = root.to_path_buf();
                    depth = 0;
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => pending.push_front(n.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(m) if m.is_dir() => {
                resolved = next;
                depth += 1;
            }
            Ok(_) => return Err(malformed(entry, "a parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&next).map_err(ImageError::io("create directory", &next))?;
                fs::set_permissions(&next, fs::Permissions::from_mode(0o755))
                    .map_err(ImageError::io("chmod", &next))?;
                resolved = next;
                depth += 1;
            }
            Err(e) => {
                return Err(ImageError::Io {
                    op: "stat",
                    path: next,
                    source: e,
                })
            }
        }
    }
    Ok(resolved)
}

/// Makes room for a new entry; a directory stays when a directory replaces it (tar semantics:
/// entries merge).
fn remove_existing(path: &Path, keep_dir: bool) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if keep_dir {
                Ok(())
            } else {
                fs::remove_dir_all(path).map_err(ImageError::io("replace directory", path))
            }
        }
        Ok(_) => fs::remove_file(path).map_err(ImageError::io("replace file", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::Io {
            op: "stat",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;
    use crate::sys::xattr::lgetxattr;

    /// mknod of whiteouts and `trusted.*` xattrs need root.
    fn require_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        if std::env::var("BERTH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("skipping not allowed: unpacking whiteouts needs root");
        }
        eprintln!("skipping: unpacking whiteouts needs root");
        false
    }

    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a [u8], u32),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
        /// A name written raw into the header, bypassing the tar crate's `..` check.
        Raw(&'a str, &'a [u8]),
    }

    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_000_000);
            h.set_uid(1000);
            h.set_gid(1001);
            match e {
                E::Dir(p, mode) => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::File(p, data, mode) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::Sym(p, target) => {
                    h.set_entry_type(EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
                E::Hard(p, target) => {
                    h.set_entry_type(EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
                E::Raw(name, data) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    let gnu = h.as_gnu_mut().unwrap();
                    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, *data).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, PathBuf, Result<Unpacked, ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("layer");
        let r = unpack_stream(tar, &dest, Path::new("test.tar"));
        (dir, dest, r)
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !require_root() {
            return;
        }
        let tar = tar_of(&[
            E::Dir("etc/", 0o755),
            E::File("etc/.wh.motd", b"", 0o644),
            E::Dir("var/cache/", 0o700),
            E::File("var/cache/.wh..wh..opq", b"", 0o644),
            E::File("var/cache/new", b"n", 0o600),
            E::File("gone/.wh.deep", b"", 0o644),
        ]);
        let (_t, root, r) = unpack(&tar);
        r.unwrap();
        let wh = fs::symlink_metadata(root.join("etc/motd")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!root.join("etc/.wh.motd").exists());
        assert!(fs::symlink_metadata(root.join("gone/deep"))
            .unwrap()
            .file_type()
            .is_char_device());
        assert_eq!(
            lgetxattr(&root.join("var/cache"), OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!root.join("var/cache/.wh..wh..opq").exists());
        assert_eq!(fs::read(root.join("var/cache/new")).unwrap(), b"n");
        assert_eq!(lgetxattr(&root.join("etc"), OPAQUE_XATTR).unwrap(), None);
    }

    #[test]
    fn links_modes_owners_and_mtimes_are_kept() {
        if !require_root() {
            return;
        }
        let data: &[u8] = b"#!/bin/sh\n";
        let tar = tar_of(&[
            E::Dir("./", 0o755),
            E::Dir("bin/", 0o751),
            E::File("bin/tool", data, 0o4755),
            E::Hard("bin/tool2", "bin/tool"),
            E::Sym("bin/sh", "tool"),
            E::Dir("tmp/", 0o1777),
        ]);
        let (_t, root, r) = unpack(&tar);
        let u = r.unwrap();
        assert_eq!(u.size, data.len() as u64);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        assert_eq!(u.diff_id, expected);
        let tool = fs::metadata(root.join("bin/tool")).unwrap();
        assert_eq!(tool.mode() & 0o7777, 0o4755);
        assert_eq!((tool.uid(), tool.gid()), (1000, 1001));
        assert_eq!(tool.mtime(), 1_000_000);
        assert_eq!(
            tool.ino(),
            fs::metadata(root.join("bin/tool2")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("tool")
        );
        let sh = fs::symlink_metadata(root.join("bin/sh")).unwrap();
        assert_eq!((sh.uid(), sh.mtime()), (1000, 1_000_000));
        let bin = fs::metadata(root.join("bin")).unwrap();
        assert_eq!(bin.mode() & 0o7777, 0o751);
        assert_eq!(
            bin.mtime(),
            1_000_000,
            "directory mtimes survive their children"
        );
        assert_eq!(
            fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert_eq!(fs::metadata(&root).unwrap().mtime(), 1_000_000);
    }

    #[test]
    fn dotdot_escapes_are_refused() {
        for name in ["../evil", "a/../../evil", "/../evil"] {
            let tar = tar_of(&[E::Raw(name, b"x")]);
            let (t, _root, r) = unpack(&tar);
            assert!(
                matches!(r, Err(ImageError::PathEscape { .. })),
                "{name}: {r:?}"
            );
            assert!(!t.path().join("evil").exists());
        }
        // `..` that stays inside is folded.
        let tar = tar_of(&[E::Raw("a/../b", b"x")]);
        let (_t, root, r) = unpack(&tar);
        r.unwrap();
        assert_eq!(fs::read(root.join("b")).unwrap(), b"x");
    }

    #[test]
    fn symlinks_cannot_carry_entries_outside() {
        if !require_root() {
            return;
        }
        let tar = tar_of(&[
            E::Sym("up", "../.."),
            E::File("up/escaped", b"x", 0o644),
            E::Sym("abs", "/etc"),
            E::File("abs/passwd", b"root", 0o644),
            E::Dir("usr/lib/", 0o755),
            E::Sym("lib", "usr/lib"),
            E::File("lib/libc.so", b"elf", 0o644),
        ]);
        let (t, root, r) = unpack(&tar);
        r.unwrap();
        assert!(!t.path().join("escaped").exists());
        assert_eq!(
            fs::read(root.join("escaped")).unwrap(),
            b"x",
            "clamped at the layer root"
        );
        assert_eq!(fs::read(root.join("etc/passwd")).unwrap(), b"root");
        assert_eq!(fs::read(root.join("usr/lib/libc.so")).unwrap(), b"elf");
        assert!(fs::symlink_metadata(root.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn compressed_blobs_are_detected() {
        let tar = tar_of(&[E::File("f", b"hello", 0o644)]);
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blobs = [
            ("gz", gz.finish().unwrap()),
            ("zst", zstd::encode_all(&tar[..], 1).unwrap()),
            ("plain", tar.clone()),
        ];
        for (name, bytes) in blobs {
            let blob = dir.path().join(name);
            fs::write(&blob, bytes).unwrap();
            let dest = dir.path().join(format!("{name}.d"));
            let u = unpack_layer(&blob, &dest).unwrap();
            assert_eq!(u.diff_id, diff_id, "{name}");
            assert_eq!(fs::read(dest.join("f")).unwrap(), b"hello");
        }
        // A truncated gzip stream is an error, not a short layer.
        let blob = dir.path().join("trunc");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let bytes = gz.finish().unwrap();
        fs::write(&blob, &bytes[..bytes.len() / 2]).unwrap();
        assert!(unpack_layer(&blob, &dir.path().join("trunc.d")).is_err());
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let tar = tar_of(&[
            E::File("x", b"1", 0o644),
            E::File("x", b"2", 0o644),
            E::Dir("d/", 0o755),
            E::File("d/in", b"", 0o644),
            E::File("d", b"file now", 0o644),
        ]);
        let (_t, root, r) = unpack(&tar);
        r.unwrap();
        assert_eq!(fs::read(root.join("x")).unwrap(), b"2");
        assert_eq!(fs::read(root.join("d")).unwrap(), b"file now");
    }

    #[test]
    fn clean_path_folds_and_refuses() {
        assert_eq!(clean_path(Path::new("./a/./b/")).unwrap(), vec!["a", "b"]);
        assert_eq!(clean_path(Path::new("/a/../b")).unwrap(), vec!["b"]);
        assert!(clean_path(Path::new("./")).unwrap().is_empty());
        assert!(clean_path(Path::new("a/../..")).is_err());
    }
}
