//! Echo servers for traffic tests: each answer carries a prefix that tells the client who
//! answered and whom it saw.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};

/// Serves every connection `listener` accepts on a thread of its own, until accepting fails:
/// each read comes back behind `prefix(peer)`. A connection ends after it answered `last`.
pub fn echo_tcp(
    listener: TcpListener,
    prefix: impl Fn(SocketAddr) -> String + Clone + Send + 'static,
    last: Option<&'static [u8]>,
) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        let prefix = prefix.clone();
        std::thread::spawn(move || {
            // A connection reset before this has nothing left to answer.
            let Ok(peer) = stream.peer_addr() else { return };
            let mut buf = [0u8; 256];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let mut reply = prefix(peer).into_bytes();
                reply.extend_from_slice(&buf[..n]);
                if stream.write_all(&reply).is_err() || last == Some(&buf[..n]) {
                    return;
                }
            }
        });
    }
}

/// Answers every datagram on `socket` with itself behind `prefix(sender)`, until receiving
/// fails.
pub fn echo_udp(socket: UdpSocket, prefix: impl Fn(SocketAddr) -> String) {
    let mut buf = [0u8; 256];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        let mut reply = prefix(from).into_bytes();
        reply.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&reply, from);
    }
}
