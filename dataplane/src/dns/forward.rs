//! Forwarding names outside the cluster domain to upstream resolvers, and finding those
//! resolvers in the host's resolv.conf.
//!
//! The client's query is relayed byte for byte (so its id, flags and EDNS size travel with it)
//! over UDP to each upstream in turn, each given the configured timeout; the first answer that
//! carries the same id is relayed back. A truncated UDP answer is retried over TCP when the
//! client itself asked over TCP; a UDP client gets the truncated answer and retries over TCP
//! itself, as it would with any resolver.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::DnsError;

/// The DNS port.
const DNS_PORT: u16 = 53;

/// The header's TC bit: byte 2 is `QR|OPCODE|AA|TC|RD`.
const TC_BYTE: usize = 2;
const TC_MASK: u8 = 0x02;

/// Sends `request` to the upstreams in order and returns the first answer, or `None` when every
/// upstream failed or timed out.
pub(crate) async fn forward(
    upstreams: &[SocketAddr],
    timeout: Duration,
    request: &[u8],
    client_over_tcp: bool,
) -> Option<Vec<u8>> {
    let id = request.get(..2)?;
    for upstream in upstreams {
        let deadline = Instant::now() + timeout;
        match timeout_at(deadline, query_udp(*upstream, request, id)).await {
            Ok(Ok(answer)) => {
                let truncated = answer.get(TC_BYTE).is_some_and(|b| b & TC_MASK != 0);
                if !(truncated && client_over_tcp) {
                    return Some(answer);
                }
                match timeout_at(deadline, query_tcp(*upstream, request, id)).await {
                    Ok(Ok(answer)) => return Some(answer),
                    Ok(Err(e)) => {
                        tracing::debug!(%upstream, error = %e, "dns: upstream tcp query failed")
                    }
                    Err(_) => tracing::debug!(%upstream, "dns: upstream tcp query timed out"),
                }
            }
            Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "dns: upstream query failed"),
            Err(_) => tracing::debug!(%upstream, "dns: upstream query timed out"),
        }
    }
    None
}

async fn query_udp(upstream: SocketAddr, request: &[u8], id: &[u8]) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone but the upstream.
    socket.connect(upstream).await?;
    socket.send(request).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Stale or spoofed answers with another id are skipped; the deadline bounds the wait.
        if n >= 12 && &buf[..2] == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn query_tcp(upstream: SocketAddr, request: &[u8], id: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(request.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut answer = vec![0u8; usize::from(len)];
    stream.read_exact(&mut answer).await?;
    if answer.len() < 12 || &answer[..2] != id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer id mismatch",
        ));
    }
    Ok(answer)
}

/// The `nameserver` addresses of a resolv.conf (port 53), in order.
pub fn resolv_conf_nameservers(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read_to_string(path).map_err(|source| DnsError::ReadResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_nameservers(&text))
}

fn parse_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            // An IPv6 nameserver may carry a zone (`fe80::1%eth0`), which SocketAddr can't hold.
            let ip: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, DNS_PORT))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_parsed_in_order() {
        let text =
            "# generated\nsearch example.org\nnameserver 10.0.0.2\nnameserver  fe80::1%eth0\n\
                    nameserver bogus\noptions ndots:5\n nameserver 1.1.1.1\n";
        assert_eq!(
            parse_nameservers(text),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().expect("addr"),
                "[fe80::1]:53".parse().expect("addr"),
                "1.1.1.1:53".parse().expect("addr"),
            ]
        );
    }

    #[test]
    fn missing_resolv_conf_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = resolv_conf_nameservers(&dir.path().join("resolv.conf")).expect_err("missing");
        assert!(err.to_string().contains("resolv.conf"), "{err}");
    }

    #[tokio::test]
    async fn no_upstream_answers_none() {
        assert_eq!(
            forward(&[], Duration::from_millis(10), &[0u8; 12], false).await,
            None
        );
    }
}
