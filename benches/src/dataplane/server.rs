//! The backends: a fixed small HTTP-like exchange on each backend address, served by a pool of
//! threads per listener inside the server namespace (no thread per connection, so the server's
//! cost per request is the same on every path).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};

use super::netns::Netns;
use super::DataplaneError;

/// What a client sends: one fixed request.
pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: berth-bench\r\n\r\n";
/// What a backend answers: one fixed response.
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Starts `threads` accepting threads on each of `addrs`:`port` in `ns`; they serve until the
/// process exits. Returns once every listener is bound.
pub fn start(
    ns: &Netns,
    addrs: &[Ipv4Addr],
    port: u16,
    threads: usize,
) -> Result<(), DataplaneError> {
    for addr in addrs {
        let addr = *addr;
        let listener = ns
            .run("binding a backend", move || TcpListener::bind((addr, port)))?
            .map_err(|source| DataplaneError::Io {
                op: "bind backend",
                path: format!("{addr}:{port}").into(),
                source,
            })?;
        for _ in 0..threads {
            let listener = listener.try_clone().map_err(|source| DataplaneError::Io {
                op: "clone listener",
                path: format!("{addr}:{port}").into(),
                source,
            })?;
            // Sockets keep the namespace they were made in: these threads need not enter it.
            std::thread::spawn(move || accept_loop(&listener));
        }
    }
    Ok(())
}

fn accept_loop(listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => serve(stream),
            Err(_) => continue,
        }
    }
}

/// Answers every request on the connection until the client goes away.
fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; REQUEST.len()];
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(RESPONSE).is_err() {
            return;
        }
    }
}
