//! Container output in the CRI log format (what `kubectl logs` reads through the kubelet):
//! `<RFC 3339 nano timestamp> <stdout|stderr> <F|P> <content>\n`, one record per line; a line
//! longer than [`MAX_LINE`] is split into `P` (partial) records ending with an `F` one. Files
//! rotate by size, keeping the newest `max_files` (the current one included), like the kubelet's
//! containerLogMaxSize / containerLogMaxFiles.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest record before a line is split (containerd's default max container log line size).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
    /// Unterminated output per stream, waiting for its newline.
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<LogWriter> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_owned(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Appends a chunk read from a stream: complete lines become `F` records, an over-long one
    /// `P` records, and the rest waits for more.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let slot = stream as usize;
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let mut line = std::mem::take(&mut self.pending[slot]);
                    line.extend_from_slice(&data[..end]);
                    self.emit_long(stream, &line)?;
                    data = &data[end + 1..];
                }
                None => {
                    self.pending[slot].extend_from_slice(data);
                    data = &[];
                    while self.pending[slot].len() >= MAX_LINE {
                        let rest = self.pending[slot].split_off(MAX_LINE);
                        let head = std::mem::replace(&mut self.pending[slot], rest);
                        self.record(stream, "P", &head)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream ended: an unterminated last line is still a full record.
    pub fn finish(&mut self, stream: Stream) -> io::Result<()> {
        let line = std::mem::take(&mut self.pending[stream as usize]);
        if !line.is_empty() {
            self.record(stream, "F", &line)?;
        }
        Ok(())
    }

    fn emit_long(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        let mut chunks = line.chunks(MAX_LINE).peekable();
        if chunks.peek().is_none() {
            return self.record(stream, "F", b"");
        }
        while let Some(chunk) = chunks.next() {
            let tag = if chunks.peek().is_some() { "P" } else { "F" };
            self.record(stream, tag, chunk)?;
        }
        Ok(())
    }

    fn record(&mut self, stream: Stream, tag: &str, content: &[u8]) -> io::Result<()> {
        let now = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let mut buf = Vec::with_capacity(now.len() + content.len() + 12);
        buf.extend_from_slice(now.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(stream.as_str().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(tag.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(content);
        buf.push(b'\n');
        if self.size > 0 && self.size + buf.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    /// `0.log` → `0.log.<timestamp>`, a fresh `0.log`, and the oldest rotated files removed.
    fn rotate(&mut self) -> io::Result<()> {
        let stamp = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(format!(".{stamp}"));
        fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        let mut old = rotated_files(&self.path)?;
        while old.len() + 1 > self.max_files {
            let (_, path) = old.remove(0);
            fs::remove_file(path)?;
        }
        Ok(())
    }
}

/// Rotated siblings of a log file, oldest first.
pub fn rotated_files(path: &Path) -> io::Result<Vec<(i128, PathBuf)>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if let Some(stamp) = file
            .strip_prefix(&prefix)
            .and_then(|s| s.parse::<i128>().ok())
        {
            out.push((stamp, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line of a CRI log file (without its newline).
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    Some(Record {
        timestamp,
        stream,
        partial: tag == b"P",
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<(String, bool, String)> {
        let text = fs::read(path).unwrap();
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let r = parse_record(l).unwrap();
                assert!(
                    OffsetDateTime::parse(r.timestamp, &Rfc3339).is_ok(),
                    "{}",
                    r.timestamp
                );
                (
                    r.stream.to_owned(),
                    r.partial,
                    String::from_utf8_lossy(r.content).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_partials_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        w.write(Stream::Stdout, b"hello\nwor").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"ld\n\n").unwrap();
        let long = vec![b'x'; MAX_LINE + 10];
        w.write(Stream::Stdout, &long).unwrap();
        w.write(Stream::Stdout, b"\nlast").unwrap();
        w.finish(Stream::Stdout).unwrap();
        let got = records(&path);
        let want = [
            ("stdout", false, "hello".to_owned()),
            ("stderr", false, "oops".to_owned()),
            ("stdout", false, "world".to_owned()),
            ("stdout", false, String::new()),
            ("stdout", true, "x".repeat(MAX_LINE)),
            ("stdout", false, "x".repeat(10)),
            ("stdout", false, "last".to_owned()),
        ];
        let want: Vec<_> = want
            .into_iter()
            .map(|(s, p, c)| (s.to_owned(), p, c))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, 200, 3).unwrap();
        for i in 0..40 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(rotated.len(), 2, "current + 2 rotated = max_files 3");
        assert!(fs::metadata(&path).unwrap().len() <= 200);
        let last = records(&path);
        assert_eq!(last.last().unwrap().2, "line 39");
    }
}
