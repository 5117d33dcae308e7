//! Cluster DNS over real sockets on loopback (unprivileged): queries built and parsed with
//! hickory-proto, sent over UDP and TCP to a `DnsServer` on 127.0.0.1, with a fake upstream
//! resolver on loopback for forwarding.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use berth_dataplane::dns::{DnsConfig, DnsIndex, DnsServer};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Bounds every wait so a broken server fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);
/// The address the fake upstream answers every A query with (TEST-NET-1, never contacted).
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, i32)]) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, port)| ServicePort {
                        name: Some(n.to_string()),
                        protocol: Some("TCP".into()),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn external(ns: &str, name: &str, target: &str) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(target.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(ns: &str, name: &str, svc: &str, ips: &[(String, Option<&str>)]) -> EndpointSlice {
    let mut metadata = meta(ns, name);
    metadata.labels = Some([("kubernetes.io/service-name".to_string(), svc.to_string())].into());
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|(ip, host)| Endpoint {
                addresses: vec![ip.clone()],
                hostname: host.map(str::to_string),
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("pg".into()),
            protocol: Some("TCP".into()),
            port: Some(5432),
            ..Default::default()
        }]),
    }
}

fn fixture() -> DnsIndex {
    let index = DnsIndex::new();
    index.upsert_service(&service("default", "web", "10.96.0.10", &[("http", 80)]));
    index.upsert_service(&service("default", "db", "None", &[("pg", 5432)]));
    index.upsert_endpoint_slice(&slice(
        "default",
        "db-x",
        "db",
        &[
            ("10.244.0.5".into(), Some("db-0")),
            ("10.244.0.6".into(), Some("db-1")),
        ],
    ));
    // 100 endpoints: well past 512 bytes of A records.
    index.upsert_service(&service("default", "big", "None", &[]));
    let many: Vec<(String, Option<&str>)> =
        (0..100).map(|i| (format!("10.244.1.{i}"), None)).collect();
    index.upsert_endpoint_slice(&slice("default", "big-x", "big", &many));
    index.upsert_service(&external("default", "ext", "example.com"));
    index
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut msg = Message::new(0x4242, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg
}

async fn ask_udp(server: SocketAddr, msg: &Message) -> (Message, usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.connect(server).await.expect("connect");
    socket
        .send(&msg.to_vec().expect("encode"))
        .await
        .expect("send");
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("udp answer in time")
        .expect("recv");
    (Message::from_vec(&buf[..n]).expect("decode answer"), n)
}

async fn ask_tcp(server: SocketAddr, msg: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect tcp");
    let bytes = msg.to_vec().expect("encode");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.expect("write");
    let read = async {
        let len = stream.read_u16().await.expect("read length");
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.expect("read answer");
        buf
    };
    let buf = tokio::time::timeout(WAIT, read)
        .await
        .expect("tcp answer in time");
    Message::from_vec(&buf).expect("decode answer")
}

fn addresses(msg: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

async fn start(index: DnsIndex, upstreams: Vec<SocketAddr>) -> DnsServer {
    let config = DnsConfig {
        upstreams,
        upstream_timeout: Duration::from_millis(300),
        ..DnsConfig::default()
    };
    DnsServer::bind("127.0.0.1:0".parse().expect("addr"), index, config)
        .await
        .expect("bind dns server")
}

/// The fake upstream's answer to `req`: one A record per A question.
fn upstream_answer(req: &Message) -> Message {
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata.recursion_available = true;
    resp.add_queries(req.queries.iter().cloned());
    for q in &req.queries {
        if q.query_type() == RecordType::A {
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(UPSTREAM_ANSWER)),
            ));
        }
    }
    resp
}

/// A resolver on loopback (UDP and TCP on one port) answering every A query with
/// [`UPSTREAM_ANSWER`]; with `truncate_udp`, its UDP answers are empty with TC set.
async fn fake_upstream(truncate_udp: bool) -> (SocketAddr, tokio::task::JoinSet<()>) {
    let (udp, tcp) = loop {
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream tcp");
        let addr = tcp.local_addr().expect("upstream addr");
        if let Ok(udp) = UdpSocket::bind(addr).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().expect("upstream addr");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = upstream_answer(&req);
            if truncate_udp {
                resp = resp.truncate();
            }
            let _ = udp.send_to(&resp.to_vec().expect("encode"), peer).await;
        }
    });
    tasks.spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let Ok(len) = stream.read_u16().await else {
                continue;
            };
            let mut buf = vec![0u8; usize::from(len)];
            if stream.read_exact(&mut buf).await.is_err() {
                continue;
            }
            let Ok(req) = Message::from_vec(&buf) else {
                continue;
            };
            let bytes = upstream_answer(&req).to_vec().expect("encode");
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            let _ = stream.write_all(&framed).await;
        }
    });
    (addr, tasks)
}

#[tokio::test]
async fn service_records_over_udp_and_tcp() {
    let server = start(fixture(), Vec::new()).await;
    let addr = server.local_addr();

    for (name, want) in [
        (
            "web.default.svc.cluster.local.",
            vec![Ipv4Addr::new(10, 96, 0, 10)],
        ),
        (
            "WeB.DeFault.SVC.cluster.LOCAL.",
            vec![Ipv4Addr::new(10, 96, 0, 10)],
        ),
        (
            "db.default.svc.cluster.local.",
            vec![Ipv4Addr::new(10, 244, 0, 5), Ipv4Addr::new(10, 244, 0, 6)],
        ),
        (
            "db-1.db.default.svc.cluster.local.",
            vec![Ipv4Addr::new(10, 244, 0, 6)],
        ),
    ] {
        let q = query(name, RecordType::A, None);
        let (udp, _) = ask_udp(addr, &q).await;
        let tcp = ask_tcp(addr, &q).await;
        for answer in [&udp, &tcp] {
            assert_eq!(answer.metadata.id, 0x4242);
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NoError,
                "{name}"
            );
            assert!(answer.metadata.authoritative, "{name}");
            assert_eq!(addresses(answer), want, "{name}");
            assert!(answer.answers.iter().all(|r| r.ttl == 5), "{name}: ttl 5");
        }
    }

    let (srv, _) = ask_udp(
        addr,
        &query(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            None,
        ),
    )
    .await;
    let [record] = srv.answers.as_slice() else {
        panic!("one SRV record expected: {srv:?}");
    };
    let RData::SRV(data) = &record.data else {
        panic!("SRV expected: {record:?}");
    };
    assert_eq!(data.port, 80);
    assert_eq!(data.target.to_ascii(), "web.default.svc.cluster.local.");
    assert_eq!(srv.additionals.len(), 1, "the target's A record: {srv:?}");

    let (srv, _) = ask_udp(
        addr,
        &query(
            "_pg._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
            None,
        ),
    )
    .await;
    let mut targets: Vec<String> = srv
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.target.to_ascii()),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "db-0.db.default.svc.cluster.local.",
            "db-1.db.default.svc.cluster.local."
        ]
    );
    assert_eq!(srv.additionals.len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn missing_names_are_nxdomain_and_missing_types_nodata() {
    let server = start(fixture(), Vec::new()).await;
    let addr = server.local_addr();

    let (nx, _) = ask_udp(
        addr,
        &query("nope.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert!(
        matches!(nx.authorities.first().map(|r| &r.data), Some(RData::SOA(_))),
        "{nx:?}"
    );

    let (nodata, _) = ask_udp(
        addr,
        &query("web.default.svc.cluster.local.", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(matches!(
        nodata.authorities.first().map(|r| &r.data),
        Some(RData::SOA(_))
    ));

    // Garbage with a query header: FORMERR, not silence.
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket
        .send_to(&[0x12, 0x34, 0x01, 0x00, 0xff], addr)
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("formerr in time")
        .expect("recv");
    let formerr = Message::from_vec(&buf[..n]).expect("decode");
    assert_eq!(
        (formerr.metadata.id, formerr.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );

    // Outside the zone with no upstream: refused.
    let (refused, _) = ask_udp(addr, &query("example.com.", RecordType::A, None)).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let server = start(fixture(), Vec::new()).await;
    let addr = server.local_addr();
    let name = "big.default.svc.cluster.local.";

    let (udp, len) = ask_udp(addr, &query(name, RecordType::A, None)).await;
    assert!(udp.metadata.truncation, "TC expected without EDNS");
    assert!(len <= 512);
    assert!(udp.answers.is_empty());

    // A 1,232-byte EDNS size is still too small for 100 A records (~1.6 KB)...
    let (udp, len) = ask_udp(addr, &query(name, RecordType::A, Some(1232))).await;
    assert!(udp.metadata.truncation);
    assert!(len <= 1232);
    assert!(udp.edns.is_some(), "an EDNS query gets an OPT record back");
    // ...4,096 is not.
    let (udp, _) = ask_udp(addr, &query(name, RecordType::A, Some(4096))).await;
    assert!(!udp.metadata.truncation);
    assert_eq!(udp.answers.len(), 100);

    // The client's retry over TCP gets everything.
    let tcp = ask_tcp(addr, &query(name, RecordType::A, None)).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
}

#[tokio::test]
async fn outside_names_are_forwarded_and_external_names_chased() {
    let (upstream, _upstream) = fake_upstream(false).await;
    let server = start(fixture(), vec![upstream]).await;
    let addr = server.local_addr();

    let (udp, _) = ask_udp(addr, &query("example.org.", RecordType::A, None)).await;
    assert_eq!(udp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&udp), vec![UPSTREAM_ANSWER]);
    let tcp = ask_tcp(addr, &query("example.org.", RecordType::A, None)).await;
    assert_eq!(addresses(&tcp), vec![UPSTREAM_ANSWER]);

    // ExternalName: the CNAME, then the upstream's address for its target.
    let (ext, _) = ask_udp(
        addr,
        &query("ext.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    assert!(
        matches!(&ext.answers.first().map(|r| &r.data), Some(RData::CNAME(c)) if c.0.to_ascii() == "example.com.")
    );
    assert_eq!(addresses(&ext), vec![UPSTREAM_ANSWER]);
}

#[tokio::test]
async fn a_truncated_upstream_answer_is_retried_over_tcp_for_tcp_clients() {
    let (upstream, _upstream) = fake_upstream(true).await;
    let server = start(fixture(), vec![upstream]).await;
    let addr = server.local_addr();

    let (udp, _) = ask_udp(addr, &query("example.org.", RecordType::A, None)).await;
    assert!(
        udp.metadata.truncation,
        "a UDP client gets the TC answer and retries itself"
    );
    let tcp = ask_tcp(addr, &query("example.org.", RecordType::A, None)).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(addresses(&tcp), vec![UPSTREAM_ANSWER]);
}

#[tokio::test]
async fn a_silent_upstream_is_servfail_after_the_timeout() {
    // Bound but never read: queries to it go unanswered.
    let silent = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind silent upstream");
    let server = start(fixture(), vec![silent.local_addr().expect("addr")]).await;
    let (answer, _) = ask_udp(
        server.local_addr(),
        &query("example.org.", RecordType::A, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn index_updates_show_in_answers() {
    let index = DnsIndex::new();
    let server = start(index.clone(), Vec::new()).await;
    let addr = server.local_addr();
    let q = query("late.default.svc.cluster.local.", RecordType::A, None);
    assert_eq!(
        ask_udp(addr, &q).await.0.metadata.response_code,
        ResponseCode::NXDomain
    );

    let svc = service("default", "late", "10.96.0.99", &[]);
    index.upsert_service(&svc);
    assert_eq!(
        addresses(&ask_udp(addr, &q).await.0),
        vec![Ipv4Addr::new(10, 96, 0, 99)]
    );

    index.remove_service(&svc);
    assert_eq!(
        ask_udp(addr, &q).await.0.metadata.response_code,
        ResponseCode::NXDomain
    );
}

#[tokio::test]
async fn binds_an_address_not_configured_yet() {
    // A pod gateway address exists only once a pod's veth carries it; IP_FREEBIND lets the
    // server bind it before. TEST-NET-1 is on no interface here; nothing is sent to it.
    let server = DnsServer::bind(
        "192.0.2.53:0".parse().expect("addr"),
        DnsIndex::new(),
        DnsConfig::default(),
    )
    .await
    .expect("bind with IP_FREEBIND");
    assert_eq!(
        server.local_addr().ip(),
        "192.0.2.53".parse::<std::net::IpAddr>().expect("ip")
    );
}
