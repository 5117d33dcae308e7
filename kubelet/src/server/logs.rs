//! `/containerLogs`: reads a container's CRI-format log files (`<attempt>.log`, rotated as
//! `<attempt>.log.<unix-nanos>`) and renders them as the kubelet does — tail, since, timestamps,
//! limitBytes, previous attempt, and follow until the container stops.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWrite};

use super::http::{Chunked, Request};

/// How often a followed log file is checked for growth. This waits on I/O, it does not
/// synchronise anything: a missed check only delays the next lines by this much.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Why logs could not be served.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log options: {0}")]
    Options(String),
    #[error("{0}")]
    NotFound(String),
    #[error("log file {path} could not be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log stream could not be written")]
    Write(#[source] std::io::Error),
}

/// The query of `/containerLogs`, as Kubernetes' PodLogOptions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    /// Only lines at or after this instant (unix nanoseconds).
    pub since_nanos: Option<i128>,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Reads and validates the query as the kubelet does; `now` anchors `sinceSeconds`.
    pub fn from_request(req: &Request, now: OffsetDateTime) -> Result<LogOptions, LogError> {
        let bad = |m: String| LogError::Options(m);
        let int = |name: &str| -> Result<Option<i64>, LogError> {
            req.param(name)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| bad(format!("{name} must be an integer, not {v:?}")))
                })
                .transpose()
        };
        let since_seconds = int("sinceSeconds")?;
        let since_time = req.param("sinceTime").filter(|v| !v.is_empty());
        if since_seconds.is_some() && since_time.is_some() {
            return Err(bad(
                "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            ));
        }
        let since_nanos = match (since_seconds, since_time) {
            (Some(s), _) if s < 1 => {
                return Err(bad("sinceSeconds must be greater than 0".into()));
            }
            (Some(s), _) => Some(now.unix_timestamp_nanos() - i128::from(s) * 1_000_000_000),
            (None, Some(t)) => Some(
                OffsetDateTime::parse(t, &Rfc3339)
                    .map_err(|_| bad(format!("sinceTime {t:?} is not RFC 3339")))?
                    .unix_timestamp_nanos(),
            ),
            (None, None) => None,
        };
        let tail_lines = match int("tailLines")? {
            Some(n) if n < 0 => return Err(bad("tailLines must be 0 or greater".into())),
            n => n.map(|n| n as usize),
        };
        let limit_bytes = match int("limitBytes")? {
            Some(n) if n < 1 => return Err(bad("limitBytes must be greater than 0".into())),
            n => n.map(|n| n as u64),
        };
        Ok(LogOptions {
            follow: req.flag("follow"),
            previous: req.flag("previous"),
            timestamps: req.flag("timestamps"),
            tail_lines,
            since_nanos,
            limit_bytes,
        })
    }
}

/// One record of a CRI log file: `<RFC3339Nano> <stdout|stderr> <F|P> <content>`.
#[derive(Debug, PartialEq)]
pub struct Record<'a> {
    pub timestamp: &'a str,
    pub nanos: i128,
    pub stream: &'a str,
    /// `P`: the line continues in the next record of the same stream.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one record (without its newline); `None` for anything malformed.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let nanos = OffsetDateTime::parse(timestamp, &Rfc3339)
        .ok()?
        .unix_timestamp_nanos();
    Some(Record {
        timestamp,
        nanos,
        stream,
        partial,
        content: parts.next().unwrap_or_default(),
    })
}

/// A logical line: one full record, or partial records joined up to their final one.
#[derive(Debug, PartialEq)]
pub struct Line {
    /// The first record's timestamp, as written.
    pub timestamp: String,
    pub nanos: i128,
    pub content: Vec<u8>,
    /// False for a partial line with no final record (yet).
    pub complete: bool,
}

impl Line {
    fn render(&self, timestamps: bool, out: &mut Vec<u8>) {
        if timestamps {
            out.extend_from_slice(self.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.content);
        if self.complete {
            out.push(b'\n');
        }
    }
}

/// Joins partial records per stream into lines.
#[derive(Default)]
pub struct Assembler {
    /// Index 0 stdout, 1 stderr.
    pending: [Option<Line>; 2],
}

impl Assembler {
    /// Feeds complete file lines (each ending in `\n`) and appends the finished lines to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Line>) {
        for raw in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Some(rec) = parse_record(raw) else {
                continue;
            };
            let slot = &mut self.pending[usize::from(rec.stream == "stderr")];
            let line = slot.get_or_insert_with(|| Line {
                timestamp: rec.timestamp.to_string(),
                nanos: rec.nanos,
                content: Vec::new(),
                complete: false,
            });
            line.content.extend_from_slice(rec.content);
            if !rec.partial {
                let mut done = slot.take().expect("just filled");
                done.complete = true;
                out.push(done);
            }
        }
    }

    /// The unfinished lines, oldest first.
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        let mut rest: Vec<Line> = std::mem::take(&mut self.pending)
            .into_iter()
            .flatten()
            .collect();
        rest.sort_by_key(|l| l.nanos);
        out.extend(rest);
    }
}

/// Applies `sinceTime` then `tailLines`, and renders what is left.
pub fn render(lines: &[Line], opts: &LogOptions) -> Vec<u8> {
    let kept: Vec<&Line> = lines
        .iter()
        .filter(|l| opts.since_nanos.is_none_or(|s| l.nanos >= s))
        .collect();
    let skip = opts
        .tail_lines
        .map(|n| kept.len().saturating_sub(n))
        .unwrap_or(0);
    let mut out = Vec::new();
    for line in &kept[skip..] {
        line.render(opts.timestamps, &mut out);
    }
    out
}

/// The attempt numbers that have a log file in `dir`, ascending.
pub fn attempts(dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse::<u32>()
                .ok()
        })
        .collect();
    found.sort_unstable();
    found
}

/// The rotated files of `attempt`, oldest first.
fn rotated(dir: &Path, attempt: u32) -> Vec<PathBuf> {
    let prefix = format!("{attempt}.log.");
    let mut found: Vec<(u128, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let stamp = name.to_str()?.strip_prefix(&prefix)?.parse::<u128>().ok()?;
            Some((stamp, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Which attempt to read: the newest, or the one before it for `previous`.
pub fn select_attempt(
    dir: &Path,
    previous: bool,
    container: &str,
    pod: &str,
) -> Result<u32, LogError> {
    let all = attempts(dir);
    let pick = if previous {
        all.len().checked_sub(2).map(|i| all[i])
    } else {
        all.last().copied()
    };
    pick.ok_or_else(|| {
        LogError::NotFound(if previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} has no logs yet")
        })
    })
}

/// What was written so far against `limitBytes`.
struct Budget(Option<u64>);

impl Budget {
    /// Cuts `data` to what is left; true once the limit is reached.
    fn spend(&mut self, data: &mut Vec<u8>) -> bool {
        let Some(left) = self.0.as_mut() else {
            return false;
        };
        if data.len() as u64 >= *left {
            data.truncate(*left as usize);
            *left = 0;
            return true;
        }
        *left -= data.len() as u64;
        false
    }
}

/// Where a followed file has been read to.
struct Cursor {
    path: PathBuf,
    file: tokio::fs::File,
    /// Bytes read past the last newline: a record still being written.
    carry: Vec<u8>,
}

impl Cursor {
    async fn open(path: PathBuf) -> Result<Cursor, LogError> {
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| LogError::Read {
                path: path.clone(),
                source,
            })?;
        Ok(Cursor {
            path,
            file,
            carry: Vec::new(),
        })
    }

    /// Reads what was appended and returns the complete records.
    async fn read_new(&mut self) -> Result<Vec<u8>, LogError> {
        let mut fresh = Vec::new();
        self.file
            .read_to_end(&mut fresh)
            .await
            .map_err(|source| LogError::Read {
                path: self.path.clone(),
                source,
            })?;
        self.carry.extend_from_slice(&fresh);
        let cut = self
            .carry
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let rest = self.carry.split_off(cut);
        Ok(std::mem::replace(&mut self.carry, rest))
    }

    /// Whether the path now names another file (the one we read was rotated away).
    async fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(ours), Ok(now)) = (
            self.file.metadata().await,
            tokio::fs::metadata(&self.path).await,
        ) else {
            return false;
        };
        ours.ino() != now.ino() || ours.dev() != now.dev()
    }
}

/// Streams one attempt's logs into `out`. `running` says whether the attempt's container still
/// runs (follow ends once it does not and its file is drained); `closed` resolves when the
/// client goes away.
pub async fn stream<W, F>(
    out: &mut Chunked<'_, W>,
    dir: &Path,
    attempt: u32,
    opts: &LogOptions,
    running: &(dyn Fn() -> bool + Send + Sync),
    mut closed: Pin<&mut F>,
) -> Result<(), LogError>
where
    W: AsyncWrite + Unpin,
    F: Future<Output = ()>,
{
    let mut assembler = Assembler::default();
    let mut lines = Vec::new();
    for path in rotated(dir, attempt) {
        let data = tokio::fs::read(&path)
            .await
            .map_err(|source| LogError::Read { path, source })?;
        assembler.feed(&data, &mut lines);
    }
    let follow = opts.follow && !opts.previous;
    // Checked before reading, so a container that stopped already has written everything.
    let mut was_running = follow && running();
    let mut cursor = Cursor::open(dir.join(format!("{attempt}.log"))).await?;
    assembler.feed(&cursor.read_new().await?, &mut lines);
    if !follow {
        let tail = std::mem::take(&mut cursor.carry);
        assembler.feed(&tail, &mut lines);
        assembler.finish(&mut lines);
    }
    let mut budget = Budget(opts.limit_bytes);
    let mut data = render(&lines, opts);
    let full = budget.spend(&mut data);
    out.send(&data).await.map_err(LogError::Write)?;
    if full || !follow {
        return Ok(());
    }
    // Only `since` filters what follows: `tail` applied to what was there already.
    let later = LogOptions {
        tail_lines: None,
        ..opts.clone()
    };
    loop {
        if !was_running || attempts(dir).last().is_some_and(|&n| n > attempt) {
            let mut lines = Vec::new();
            let tail = std::mem::take(&mut cursor.carry);
            assembler.feed(&tail, &mut lines);
            assembler.finish(&mut lines);
            let mut data = render(&lines, &later);
            budget.spend(&mut data);
            return out.send(&data).await.map_err(LogError::Write);
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = closed.as_mut() => return Ok(()),
        }
        was_running = running();
        let mut lines = Vec::new();
        assembler.feed(&cursor.read_new().await?, &mut lines);
        if cursor.rotated().await {
            // Drain what was written before the rename, then continue in the new file.
            assembler.feed(&cursor.read_new().await?, &mut lines);
            let carry = std::mem::take(&mut cursor.carry);
            cursor = Cursor::open(cursor.path.clone()).await?;
            cursor.carry = carry;
            assembler.feed(&cursor.read_new().await?, &mut lines);
        }
        let mut data = render(&lines, &later);
        let full = budget.spend(&mut data);
        out.send(&data).await.map_err(LogError::Write)?;
        if full {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2024-05-01T10:00:00.000000001Z stdout F first
2024-05-01T10:00:01.5Z stderr F oops
2024-05-01T10:00:02Z stdout P par
2024-05-01T10:00:02.1Z stdout P ti
2024-05-01T10:00:02.2Z stdout F al
2024-05-01T10:00:03Z stdout F last
";

    fn lines(text: &str) -> Vec<Line> {
        let mut asm = Assembler::default();
        let mut out = Vec::new();
        asm.feed(text.as_bytes(), &mut out);
        asm.finish(&mut out);
        out
    }

    fn rendered(opts: LogOptions) -> String {
        String::from_utf8(render(&lines(LOG), &opts)).unwrap()
    }

    #[test]
    fn records_parse_and_malformed_ones_do_not() {
        let rec = parse_record(b"2024-05-01T10:00:00.5Z stderr P a b c").expect("parses");
        assert_eq!(
            (rec.stream, rec.partial, rec.content),
            ("stderr", true, &b"a b c"[..])
        );
        assert_eq!(rec.nanos % 1_000_000_000, 500_000_000);
        assert_eq!(
            parse_record(b"2024-05-01T10:00:00Z stdout F")
                .unwrap()
                .content,
            b""
        );
        for bad in [
            &b"nonsense"[..],
            b"2024-05-01T10:00:00Z stdin F x",
            b"2024-05-01T10:00:00Z stdout X x",
            b"yesterday stdout F x",
        ] {
            assert!(parse_record(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn partial_records_join_into_one_line() {
        assert_eq!(
            rendered(LogOptions::default()),
            "first\noops\npartial\nlast\n"
        );
        // A partial line with no final record yet is shown without its newline.
        let l = lines("2024-05-01T10:00:00Z stdout P half\n2024-05-01T10:00:01Z stderr F e\n");
        assert_eq!(
            String::from_utf8(render(&l, &LogOptions::default())).unwrap(),
            "e\nhalf"
        );
    }

    #[test]
    fn tail_since_and_timestamps() {
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(rendered(tail), "partial\nlast\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(rendered(none), "");
        let since = OffsetDateTime::parse("2024-05-01T10:00:01.5Z", &Rfc3339)
            .unwrap()
            .unix_timestamp_nanos();
        let opts = LogOptions {
            since_nanos: Some(since),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            rendered(opts),
            "2024-05-01T10:00:01.5Z oops\n2024-05-01T10:00:02Z partial\n2024-05-01T10:00:03Z last\n"
        );
    }

    #[test]
    fn limit_bytes_cuts_the_output() {
        let mut b = Budget(Some(5));
        let mut data = b"abc".to_vec();
        assert!(!b.spend(&mut data));
        let mut data = b"defgh".to_vec();
        assert!(b.spend(&mut data));
        assert_eq!(data, b"de");
    }

    fn request(query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/".into(),
            query: super::super::http::parse_query(query),
            headers: Vec::new(),
        }
    }

    #[test]
    fn options_from_the_query() {
        let now = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let o = LogOptions::from_request(
            &request("follow=true&tailLines=3&sinceSeconds=10&timestamps=1&limitBytes=9"),
            now,
        )
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: false,
                timestamps: true,
                tail_lines: Some(3),
                since_nanos: Some(990_000_000_000),
                limit_bytes: Some(9),
            }
        );
        let o = LogOptions::from_request(&request("sinceTime=1970-01-01T00:00:05Z"), now).unwrap();
        assert_eq!(o.since_nanos, Some(5_000_000_000));
        for bad in [
            "tailLines=-1",
            "tailLines=x",
            "sinceSeconds=0",
            "limitBytes=0",
            "sinceSeconds=5&sinceTime=1970-01-01T00:00:05Z",
            "sinceTime=yesterday",
        ] {
            assert!(
                LogOptions::from_request(&request(bad), now).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn attempts_and_rotated_files_are_ordered() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "0.log",
            "10.log",
            "2.log",
            "2.log.300",
            "2.log.20",
            "x.log",
            "3.tmp",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(attempts(dir.path()), [0, 2, 10]);
        let names: Vec<String> = rotated(dir.path(), 2)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["2.log.20", "2.log.300"]);
        assert_eq!(select_attempt(dir.path(), false, "c", "p").unwrap(), 10);
        assert_eq!(select_attempt(dir.path(), true, "c", "p").unwrap(), 2);
        let empty = tempfile::tempdir().unwrap();
        let err = select_attempt(empty.path(), true, "c", "p").unwrap_err();
        assert_eq!(
            err.to_string(),
            "previous terminated container \"c\" in pod \"p\" not found"
        );
    }

    async fn wait_for(
        reader: &mut tokio::io::BufReader<tokio::io::DuplexStream>,
        seen: &mut String,
        want: &str,
    ) {
        use tokio::io::AsyncBufReadExt;
        while !seen.contains(want) {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).await.unwrap() > 0, "{seen}");
            seen.push_str(&line);
        }
    }

    #[tokio::test]
    async fn follow_reads_appended_and_rotated_records_until_the_container_stops() {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2024-05-01T10:00:00Z stdout F one\n").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (dir2, running2) = (dir.path().to_path_buf(), running.clone());
        let task = tokio::spawn(async move {
            let mut out = Chunked::start(&mut server, "text/plain").await.unwrap();
            let opts = LogOptions {
                follow: true,
                ..Default::default()
            };
            let is_running = move || running2.load(Ordering::SeqCst);
            let closed = std::pin::pin!(std::future::pending::<()>());
            stream(&mut out, &dir2, 0, &opts, &is_running, closed)
                .await
                .unwrap();
            out.finish().await.unwrap();
        });
        let mut reader = tokio::io::BufReader::new(client);
        let mut seen = String::new();
        wait_for(&mut reader, &mut seen, "one\n").await;
        // A record written in two pieces, then a rotation to a new file.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2024-05-01T10:00:01Z stdout F tw").unwrap();
        f.write_all(b"o\n").unwrap();
        wait_for(&mut reader, &mut seen, "two\n").await;
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "2024-05-01T10:00:02Z stdout F three\n").unwrap();
        wait_for(&mut reader, &mut seen, "three\n").await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2024-05-01T10:00:03Z stdout F four\n")
            .unwrap();
        running.store(false, Ordering::SeqCst);
        task.await.unwrap();
        wait_for(&mut reader, &mut seen, "0\r\n\r\n").await;
        assert!(seen.contains("four\n"), "{seen}");
    }
}
