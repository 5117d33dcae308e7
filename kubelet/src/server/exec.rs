//! `/exec`: a process in a container, its streams carried over a WebSocket with Kubernetes'
//! channel protocol (`v5.channel.k8s.io`, or `v4`): every binary message starts with a channel
//! byte — 0 stdin, 1 stdout, 2 stderr, 3 error (the final `Status`), 4 resize, 255 close (v5:
//! the client closed a stream, e.g. stdin).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::http::{self, Request};
use super::websocket::{self, Decoder, Message};
use super::{ContainerLookup, ExecError, ExecIo, ExecProcess};

/// The subprotocols served, preferred first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What the exec request asks for.
#[derive(Debug, PartialEq, Eq)]
struct ExecOptions {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl ExecOptions {
    fn from_request(req: &Request) -> Result<ExecOptions, String> {
        let command: Vec<String> = req
            .query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        let opts = ExecOptions {
            command,
            stdin: req.flag("stdin"),
            stdout: req.flag("stdout"),
            stderr: req.flag("stderr"),
            tty: req.flag("tty"),
        };
        if opts.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !opts.stdin && !opts.stdout && !opts.stderr {
            return Err("you must specify at least one of stdin, stdout, stderr".into());
        }
        if opts.tty && opts.stderr {
            return Err("stderr cannot be true when tty is true".into());
        }
        Ok(opts)
    }
}

/// The Status sent on the error channel when the process ended, as the kubelet sends it.
pub fn exit_status(exit: &Result<i32, String>, command: &[String]) -> Value {
    match exit {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => internal_error(&format!("error executing command in container: {e}")),
    }
}

fn internal_error(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// Serves one exec request: the WebSocket handshake, then the session.
pub(super) async fn serve_exec<R, W>(
    req: &Request,
    ns: &str,
    pod: &str,
    container: &str,
    lookup: Arc<dyn ContainerLookup>,
    rd: R,
    mut wr: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let upgrade = req
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let (true, Some(key)) = (upgrade, req.header("sec-websocket-key")) else {
        return http::respond(&mut wr, 400, "text/plain", b"Upgrade request required").await;
    };
    let offered: Vec<&str> = req
        .header("sec-websocket-protocol")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.contains(p)) else {
        let msg = format!(
            "unable to upgrade: unsupported subprotocol, want one of {}",
            PROTOCOLS.join(", ")
        );
        return http::respond(&mut wr, 400, "text/plain", msg.as_bytes()).await;
    };
    let accept = websocket::accept_key(key);
    let head = http::head(
        101,
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", &accept),
            ("Sec-WebSocket-Protocol", protocol),
        ],
    );
    wr.write_all(&head).await?;
    wr.flush().await?;

    // One writer owns the connection; everything else sends it whole frames.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let status = match ExecOptions::from_request(req) {
        Err(e) => json!({
            "metadata": {}, "status": "Failure", "message": e, "reason": "BadRequest", "code": 400,
        }),
        Ok(opts) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            let (command, tty) = (opts.command.clone(), opts.tty);
            let started = tokio::task::spawn_blocking(move || {
                lookup.exec(&ns, &pod, &container, command, tty)
            })
            .await;
            match started {
                Ok(Ok(process)) => session(process, &opts, rd, &tx).await,
                Ok(Err(e @ ExecError::NotRunning { .. })) => internal_error(&e.to_string()),
                Ok(Err(e)) => internal_error(&format!("error executing command in container: {e}")),
                Err(e) => internal_error(&format!("exec task failed: {e}")),
            }
        }
    };
    let body = serde_json::to_vec(&status).unwrap_or_default();
    let _ = tx.send(websocket::channel_message(ERROR, &body)).await;
    let _ = tx
        .send(websocket::close_frame(websocket::CLOSE_NORMAL))
        .await;
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// Sets O_NONBLOCK, which tokio's pipe types expect.
fn nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn receiver(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    nonblocking(&fd)?;
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

fn sender(fd: OwnedFd) -> std::io::Result<pipe::Sender> {
    nonblocking(&fd)?;
    pipe::Sender::from_owned_fd_unchecked(fd)
}

/// Copies one output stream into frames on `channel` until it ends (EOF, or EIO from a pty
/// whose last slave closed). Output not asked for is read and dropped so the process never
/// blocks on it.
async fn pump(mut rd: pipe::Receiver, channel: u8, wanted: bool, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if wanted => {
                if tx
                    .send(websocket::channel_message(channel, &buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

/// Runs the session: client input to the process, its output to the client. Returns the
/// Status for the error channel once the process exited and its output is drained.
async fn session<R>(
    process: ExecProcess,
    opts: &ExecOptions,
    rd: R,
    tx: &mpsc::Sender<Vec<u8>>,
) -> Value
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let ExecProcess { io, exit } = process;
    let wired = (|| -> std::io::Result<_> {
        Ok(match io {
            ExecIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let stdin = match stdin.filter(|_| opts.stdin) {
                    Some(fd) => Some(sender(fd)?),
                    None => None,
                };
                (
                    stdin,
                    vec![
                        (receiver(stdout)?, STDOUT, opts.stdout),
                        (receiver(stderr)?, STDERR, opts.stderr),
                    ],
                    None,
                )
            }
            ExecIo::Tty { master } => {
                let input = sender(master.try_clone()?)?;
                let resize = master.try_clone()?;
                (
                    Some(input),
                    vec![(receiver(master)?, STDOUT, opts.stdout)],
                    Some(resize),
                )
            }
        })
    })();
    let (stdin, outputs, resize) = match wired {
        Ok(w) => w,
        Err(e) => {
            return internal_error(&format!("exec streams could not be set up: {e}"));
        }
    };
    let input = tokio::spawn(client_input(rd, stdin, resize, opts.tty, tx.clone()));
    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(rd, channel, wanted)| tokio::spawn(pump(rd, channel, wanted, tx.clone())))
        .collect();
    let exit = exit.await;
    for p in pumps {
        let _ = p.await;
    }
    input.abort();
    exit_status(&exit, &opts.command)
}

/// Reads the client's messages: stdin data, resizes, stream closes, pings.
async fn client_input<R>(
    mut rd: R,
    mut stdin: Option<pipe::Sender>,
    resize: Option<OwnedFd>,
    tty: bool,
    tx: mpsc::Sender<Vec<u8>>,
) where
    R: AsyncRead + Unpin,
{
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let message = match decoder.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    decoder.push(&buf[..n]);
                    continue;
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "exec client broke the websocket protocol");
                return;
            }
        };
        match message {
            Message::Binary(data) | Message::Text(data) => match data.split_first() {
                Some((&STDIN, rest)) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(rest).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some((&RESIZE, rest)) => {
                    if let (Some(fd), Some((w, h))) = (&resize, parse_resize(rest)) {
                        let _ = crate::sys::pty::set_window_size(fd.as_fd(), w, h);
                    }
                }
                Some((&CLOSE, [STDIN, ..])) => {
                    // A terminal has no end of input but the EOF character.
                    if let (true, Some(w)) = (tty, stdin.as_mut()) {
                        let _ = w.write_all(b"\x04").await;
                    }
                    stdin = None;
                }
                _ => {}
            },
            Message::Ping(payload) => {
                let _ = tx
                    .send(websocket::encode(websocket::OP_PONG, &payload))
                    .await;
            }
            Message::Pong => {}
            Message::Close => return,
        }
    }
}

/// `{"Width":80,"Height":24}` → (80, 24).
fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let dim = |k: &str| v[k].as_u64().and_then(|n| u16::try_from(n).ok());
    Some((dim("Width")?, dim("Height")?))
}

/// Runs `command` as a process on the host, with pipes or a new pseudo-terminal: for tests,
/// and for debugging a node without a container runtime.
pub fn host_exec(command: Vec<String>, tty: bool) -> Result<ExecProcess, ExecError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| ExecError::Failed("no command".into()))?;
    let failed = |what: &str, e: &dyn std::fmt::Display| ExecError::Failed(format!("{what}: {e}"));
    let mut cmd = Command::new(program);
    cmd.args(args);
    let (mut child, io) = if tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| failed("openpty", &e))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| failed("dup", &e));
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave));
        let child = cmd
            .spawn()
            .map_err(|e| failed(&format!("start {program}"), &e))?;
        (child, ExecIo::Tty { master: pty.master })
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| failed(&format!("start {program}"), &e))?;
        let missing = || ExecError::Failed("child has no pipes".into());
        let io = ExecIo::Pipes {
            stdin: child.stdin.take().map(OwnedFd::from),
            stdout: child.stdout.take().map(OwnedFd::from).ok_or_else(missing)?,
            stderr: child.stderr.take().map(OwnedFd::from).ok_or_else(missing)?,
        };
        (child, io)
    };
    // The command holds our copies of the terminal's slave side: without closing them the
    // master would never see the end of the output.
    drop(cmd);
    let exit = Box::pin(async move {
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1))
    });
    Ok(ExecProcess { io, exit })
}

#[cfg(test)]
mod tests {
    use super::super::websocket::tests::client_frame;
    use super::super::websocket::OP_BINARY;
    use super::*;

    fn request(query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/exec/ns/p/c".into(),
            query: http::parse_query(query),
            headers: vec![
                ("upgrade".into(), "websocket".into()),
                (
                    "sec-websocket-key".into(),
                    "dGhlIHNhbXBsZSBub25jZQ==".into(),
                ),
                ("sec-websocket-protocol".into(), "v5.channel.k8s.io".into()),
            ],
        }
    }

    #[test]
    fn exit_codes_become_the_status_kubectl_reads() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(
            exit_status(&Ok(0), &cmd),
            json!({"metadata": {}, "status": "Success"})
        );
        let failed = exit_status(&Ok(3), &cmd);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        let err = exit_status(&Err("boom".into()), &cmd);
        assert_eq!(
            (err["reason"].as_str(), err["code"].as_i64()),
            (Some("InternalError"), Some(500))
        );
    }

    #[test]
    fn options_are_validated() {
        let ok = ExecOptions::from_request(&request("command=ls&command=-l&stdout=true&tty=false"))
            .unwrap();
        assert_eq!(ok.command, ["ls", "-l"]);
        assert!(ok.stdout && !ok.stdin && !ok.tty);
        for bad in ["stdout=true", "command=ls", "command=ls&stderr=1&tty=1"] {
            assert!(ExecOptions::from_request(&request(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse_resize(br#"{"Width":80,"Height":24}"#), Some((80, 24)));
        assert_eq!(parse_resize(b"{}"), None);
    }

    /// Reads server frames (unmasked) from `buf` as (opcode, payload).
    fn server_frames(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while buf.len() >= 2 {
            let op = buf[0] & 0x0f;
            let (len, at) = match buf[1] {
                126 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (usize::from(n), 2),
            };
            out.push((op, buf[at..at + len].to_vec()));
            buf = &buf[at + len..];
        }
        out
    }

    struct HostOnly;

    impl ContainerLookup for HostOnly {
        fn log_dir(&self, _: &str, _: &str, _: &str) -> Option<std::path::PathBuf> {
            None
        }
        fn is_running(&self, _: &str, _: &str, _: &str) -> bool {
            true
        }
        fn exec(
            &self,
            _: &str,
            _: &str,
            _: &str,
            command: Vec<String>,
            tty: bool,
        ) -> Result<ExecProcess, ExecError> {
            host_exec(command, tty)
        }
        fn pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod> {
            Vec::new()
        }
    }

    /// Runs one session over in-memory pipes; `input` is what the client sends.
    async fn run(query: &str, input: Vec<u8>) -> (String, Vec<(u8, Vec<u8>)>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (srd, swr) = tokio::io::split(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        cwr.write_all(&input).await.unwrap();
        let req = request(query);
        let task = tokio::spawn(async move {
            serve_exec(&req, "ns", "p", "c", Arc::new(HostOnly), srd, swr)
                .await
                .unwrap();
        });
        let mut out = Vec::new();
        crd.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let end = text.find("\r\n\r\n").expect("a response head") + 4;
        (text[..end].to_string(), server_frames(&out[end..]))
    }

    fn channel(frames: &[(u8, Vec<u8>)], ch: u8) -> String {
        frames
            .iter()
            .filter(|(op, p)| *op == OP_BINARY && p.first() == Some(&ch))
            .map(|(_, p)| String::from_utf8_lossy(&p[1..]).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_session_carries_stdin_stdout_stderr_and_the_exit_code() {
        let mut input = client_frame(true, OP_BINARY, b"\x00hello\n");
        input.extend(client_frame(true, OP_BINARY, &[CLOSE, STDIN]));
        let query =
            "command=sh&command=-c&command=cat;echo+err>%262;exit+3&stdin=1&stdout=1&stderr=1";
        let (head, frames) = run(query, input).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(head.contains("Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"));
        assert_eq!(channel(&frames, STDOUT), "hello\n");
        assert_eq!(channel(&frames, STDERR), "err\n");
        let status: Value = serde_json::from_str(&channel(&frames, ERROR)).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(frames.last().unwrap().0, websocket::OP_CLOSE);
    }

    #[tokio::test]
    async fn a_tty_session_runs_on_a_terminal_and_follows_resizes() {
        let mut input = client_frame(true, OP_BINARY, b"\x04{\"Width\":91,\"Height\":17}");
        input.extend(client_frame(true, OP_BINARY, b"\x00stty size; exit\n"));
        let (_, frames) = run("command=sh&stdin=1&stdout=1&tty=1", input).await;
        let out = channel(&frames, STDOUT);
        assert!(out.contains("17 91"), "{out:?}");
        let status: Value = serde_json::from_str(&channel(&frames, ERROR)).unwrap();
        assert_eq!(status["status"], "Success", "{status}");
    }

    #[tokio::test]
    async fn bad_requests_get_a_status_not_a_process() {
        let (head, frames) = run("stdout=1", Vec::new()).await;
        assert!(head.starts_with("HTTP/1.1 101"));
        let status: Value = serde_json::from_str(&channel(&frames, ERROR)).unwrap();
        assert_eq!(status["message"], "you must specify at least 1 command");
    }
}
