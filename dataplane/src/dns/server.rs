//! The UDP and TCP serving loops and the request → response step.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::answer::{resolve, Resolution, Zone};
use super::forward::forward;
use super::{DnsConfig, DnsError, DnsIndex};

/// The EDNS UDP payload size this server advertises (the 2020 DNS flag day's value).
const EDNS_PAYLOAD: u16 = 1232;
/// Requests handled at once per transport; past it UDP queries are dropped (the client
/// retries) and TCP connections wait to be accepted.
const MAX_IN_FLIGHT: usize = 256;
/// An idle TCP connection is closed after this long (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How many times binding TCP to the port UDP got from port 0 is retried.
const PORT_ZERO_TRIES: usize = 16;

/// A running cluster DNS server; stops serving when dropped.
#[derive(Debug)]
pub struct DnsServer {
    local_addr: SocketAddr,
    tasks: JoinSet<()>,
}

struct Ctx {
    index: DnsIndex,
    zone: Zone,
    upstreams: Vec<SocketAddr>,
    upstream_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
}

impl DnsServer {
    /// Listens on `addr` over UDP and TCP (the same port; port 0 picks one) and serves `index`
    /// until the returned handle is dropped or shut down. The sockets use `IP_FREEBIND`, so
    /// `addr` need not be configured on any interface yet. Call within a tokio runtime.
    pub async fn bind(
        addr: SocketAddr,
        index: DnsIndex,
        config: DnsConfig,
    ) -> Result<Self, DnsError> {
        let domain = config
            .cluster_domain
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if domain.is_empty() || hickory_proto::rr::Name::from_ascii(&domain).is_err() {
            return Err(DnsError::ClusterDomain {
                domain: config.cluster_domain,
            });
        }
        let (udp, tcp) = bind_both(addr)?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::Bind {
            transport: "udp",
            addr,
            source,
        })?;
        let ctx = Arc::new(Ctx {
            index,
            zone: Zone {
                domain,
                ttl: config.ttl,
            },
            // Forwarding to ourselves would loop.
            upstreams: config
                .upstreams
                .into_iter()
                .filter(|u| *u != local_addr)
                .collect(),
            upstream_timeout: config.upstream_timeout,
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_udp(udp, ctx.clone()));
        tasks.spawn(serve_tcp(tcp, ctx));
        tracing::info!(%local_addr, "dns: serving");
        Ok(Self { local_addr, tasks })
    }

    /// The address served (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits for the loops to end.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

fn bind_both(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let tries = if addr.port() == 0 { PORT_ZERO_TRIES } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp =
            bind_socket(addr, Type::DGRAM, Protocol::UDP).map_err(|source| DnsError::Bind {
                transport: "udp",
                addr,
                source,
            })?;
        let udp_addr = udp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        match bind_socket(udp_addr, Type::STREAM, Protocol::TCP) {
            Ok(tcp) => return into_tokio(udp, tcp, addr),
            // Port 0: the port UDP got may be taken for TCP; pick another.
            Err(source) if source.kind() == io::ErrorKind::AddrInUse => last = Some(source),
            Err(source) => {
                return Err(DnsError::Bind {
                    transport: "tcp",
                    addr,
                    source,
                })
            }
        }
    }
    Err(DnsError::Bind {
        transport: "tcp",
        addr,
        source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
    })
}

fn bind_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    match addr {
        SocketAddr::V4(_) => socket.set_freebind(true)?,
        SocketAddr::V6(_) => socket.set_freebind_ipv6(true)?,
    }
    if ty == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if ty == Type::STREAM {
        socket.listen(1024)?;
    }
    Ok(socket)
}

fn into_tokio(
    udp: Socket,
    tcp: Socket,
    addr: SocketAddr,
) -> Result<(UdpSocket, TcpListener), DnsError> {
    let udp = UdpSocket::from_std(udp.into()).map_err(|source| DnsError::Bind {
        transport: "udp",
        addr,
        source,
    })?;
    let tcp = TcpListener::from_std(tcp.into()).map_err(|source| DnsError::Bind {
        transport: "tcp",
        addr,
        source,
    })?;
    Ok((udp, tcp))
}

async fn serve_udp(socket: UdpSocket, ctx: Arc<Ctx>) {
    let socket = Arc::new(socket);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Owned here so that stopping the loop aborts the requests it started.
    let mut requests = JoinSet::new();
    let mut buf = vec![0u8; 65535];
    loop {
        while requests.try_join_next().is_some() {}
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier sends surface here; the socket is still usable.
                tracing::debug!(error = %e, "dns: udp receive failed");
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let request = buf[..n].to_vec();
        let (socket, ctx) = (socket.clone(), ctx.clone());
        requests.spawn(async move {
            if let Some(response) = handle(&ctx, &request, Transport::Udp).await {
                if let Err(e) = socket.send_to(&response, peer).await {
                    tracing::debug!(%peer, error = %e, "dns: udp send failed");
                }
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, ctx: Arc<Ctx>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "dns: tcp accept failed");
                continue;
            }
        };
        let ctx = ctx.clone();
        connections.spawn(async move {
            if let Err(e) = serve_connection(stream, &ctx).await {
                tracing::debug!(error = %e, "dns: tcp connection ended");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(mut stream: TcpStream, ctx: &Ctx) -> io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut request = vec![0u8; usize::from(len)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let Some(response) = handle(ctx, &request, Transport::Tcp).await else {
            return Ok(());
        };
        let Ok(len) = u16::try_from(response.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        stream.write_all(&framed).await?;
    }
}

/// One request → its encoded response, or `None` when nothing should be sent.
async fn handle(ctx: &Ctx, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let req = match Message::from_vec(request) {
        Ok(req) => req,
        Err(_) => {
            // Answer FORMERR when at least the id is there, as resolvers expect some answer;
            // never to something that claims to be a response (QR set), which could loop.
            if request.get(2)? & 0x80 != 0 {
                return None;
            }
            let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.metadata.recursion_available = !ctx.upstreams.is_empty();
    resp.add_queries(req.queries.iter().cloned());
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.set_edns(edns);
    }
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return encode(&resp, &req, transport);
    }
    let [query] = req.queries.as_slice() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return encode(&resp, &req, transport);
    };
    // Cluster data is class IN only; other classes (CHAOS `version.bind`) are not served.
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        resp.metadata.response_code = ResponseCode::Refused;
        return encode(&resp, &req, transport);
    }
    let resolution = {
        let state = ctx.index.read();
        resolve(&state, &ctx.zone, query.name(), query.query_type())
    };
    match resolution {
        Resolution::OutOfZone => return relay(ctx, request, &req, resp, transport).await,
        Resolution::NxDomain => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.authorities.extend(ctx.zone.soa());
        }
        Resolution::Found {
            answers,
            additionals,
        } => {
            if answers.is_empty() {
                resp.authorities.extend(ctx.zone.soa());
            }
            resp.answers = answers;
            resp.additionals = additionals;
            chase_cname(ctx, query, &mut resp).await;
        }
    }
    resp.metadata.authoritative = true;
    encode(&resp, &req, transport)
}

/// Forwards an out-of-zone query; REFUSED with no upstream, SERVFAIL when none answered.
async fn relay(
    ctx: &Ctx,
    request: &[u8],
    req: &Message,
    mut resp: Message,
    transport: Transport,
) -> Option<Vec<u8>> {
    if ctx.upstreams.is_empty() {
        resp.metadata.response_code = ResponseCode::Refused;
        return encode(&resp, req, transport);
    }
    let over_tcp = transport == Transport::Tcp;
    match forward(&ctx.upstreams, ctx.upstream_timeout, request, over_tcp).await {
        Some(answer) if transport == Transport::Tcp || answer.len() <= udp_limit(req) => {
            Some(answer)
        }
        // Larger than the client can take over UDP (an upstream ignoring the EDNS size).
        Some(answer) => match Message::from_vec(&answer) {
            Ok(answer) => encode(&answer, req, transport),
            Err(_) => {
                resp.metadata.response_code = ResponseCode::ServFail;
                encode(&resp, req, transport)
            }
        },
        None => {
            resp.metadata.response_code = ResponseCode::ServFail;
            encode(&resp, req, transport)
        }
    }
}

/// An ExternalName answers with a CNAME alone; resolve its target too (in the zone from the
/// index, elsewhere through the upstreams) so stub resolvers get addresses in one answer.
async fn chase_cname(ctx: &Ctx, query: &Query, resp: &mut Message) {
    let qtype = query.query_type();
    if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
        return;
    }
    let target = match resp.answers.as_slice() {
        [record] => match &record.data {
            RData::CNAME(cname) => cname.0.clone(),
            _ => return,
        },
        _ => return,
    };
    let found = {
        let state = ctx.index.read();
        resolve(&state, &ctx.zone, &target, qtype)
    };
    match found {
        Resolution::Found { answers, .. } => resp.answers.extend(answers),
        Resolution::NxDomain => {}
        Resolution::OutOfZone => {
            let mut sub = Message::query();
            sub.metadata.recursion_desired = true;
            sub.add_query(Query::query(target, qtype));
            let Ok(bytes) = sub.to_vec() else {
                return;
            };
            let Some(answer) = forward(&ctx.upstreams, ctx.upstream_timeout, &bytes, true).await
            else {
                return;
            };
            if let Ok(answer) = Message::from_vec(&answer) {
                resp.answers.extend(answer.answers);
            }
        }
    }
}

/// The largest UDP answer the client accepts: 512 bytes, or its EDNS size.
fn udp_limit(req: &Message) -> usize {
    usize::from(req.max_payload())
}

/// Encodes `resp`; an answer past the client's limit (UDP: 512 bytes or its EDNS size; TCP:
/// 64 KiB) is replaced by the same header and question with TC set and no records, so a UDP
/// client retries over TCP.
fn encode(resp: &Message, req: &Message, transport: Transport) -> Option<Vec<u8>> {
    let mut resp = resp.clone();
    resp.metadata.id = req.metadata.id;
    let bytes = match resp.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "dns: encoding an answer failed");
            let fail = Message::error_msg(
                req.metadata.id,
                req.metadata.op_code,
                ResponseCode::ServFail,
            );
            return fail.to_vec().ok();
        }
    };
    let limit = match transport {
        Transport::Udp => udp_limit(req),
        // TCP's two-byte length prefix.
        Transport::Tcp => usize::from(u16::MAX),
    };
    if bytes.len() > limit {
        return resp.truncate().to_vec().ok();
    }
    Some(bytes)
}
