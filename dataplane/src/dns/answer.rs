//! Answers for names inside the cluster domain, following the Kubernetes DNS-based service
//! discovery spec (and CoreDNS's `kubernetes` plugin where the spec leaves room):
//!
//! - `<svc>.<ns>.svc.<zone>` A: the ClusterIPs; headless: the published endpoints; ExternalName:
//!   a CNAME (for any type).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV for named ports: priority 0, weight
//!   `100 / count` (as CoreDNS), target the service name (ClusterIP) or each endpoint's name
//!   (headless), with the targets' A records as additionals.
//! - `<hostname>.<svc>.<ns>.svc.<zone>` A for a headless service's endpoint, where hostname is the
//!   endpoint's `hostname` or its dashed address (`10-0-0-1`, CoreDNS's choice for the spec's
//!   "unique system-assigned identifier").
//! - `<d>.<c>.<b>.<a>.in-addr.arpa` PTR for ClusterIPs and published headless endpoints
//!   (`reverse.rs`); other reverse names are forwarded (CoreDNS's `fallthrough in-addr.arpa`).
//! - `<a-b-c-d>.<ns>.pod.<zone>` A: the dashed address (CoreDNS `pods insecure`, kubeadm's
//!   default), `dns-version.<zone>` TXT `1.1.0`, and the zone apex's SOA.
//!
//! Names that exist but have no record of the asked type (AAAA everywhere, `svc.<zone>`,
//! `<ns>.svc.<zone>` for a namespace with Services) are NODATA; other names in the zone are
//! NXDOMAIN. Matching is case-insensitive; records about the asked name carry it as asked.

use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::index::{IndexState, Key, ServiceEntry, ServiceKind};
use super::reverse::reverse;

/// The version of the spec this server implements (its `dns-version` record).
const SPEC_VERSION: &str = "1.1.0";

/// What the index says about a name.
#[derive(Debug, PartialEq)]
pub(crate) enum Resolution {
    /// The name is outside the cluster domain: forward it.
    OutOfZone,
    /// The name exists; empty `answers` means NODATA.
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    NxDomain,
}

impl Resolution {
    pub(crate) fn no_data() -> Self {
        Self::Found {
            answers: Vec::new(),
            additionals: Vec::new(),
        }
    }

    pub(crate) fn answers(answers: Vec<Record>) -> Self {
        Self::Found {
            answers,
            additionals: Vec::new(),
        }
    }
}

/// The cluster zone: its lowercased domain without the trailing dot, and the TTL of every record.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    pub domain: String,
    pub ttl: u32,
}

impl Zone {
    /// The SOA for the zone apex, also put in the authority section of NXDOMAIN/NODATA answers
    /// (its minimum is the negative-caching TTL).
    pub(crate) fn soa(&self) -> Option<Record> {
        let apex = fqdn(&self.domain)?;
        let soa = SOA::new(
            fqdn(&format!("ns.dns.{}", self.domain))?,
            fqdn(&format!("hostmaster.{}", self.domain))?,
            1,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Some(Record::from_rdata(apex, self.ttl, RData::SOA(soa)))
    }
}

/// Resolves `qname`/`qtype` against the index.
pub(crate) fn resolve(
    state: &IndexState,
    zone: &Zone,
    qname: &Name,
    qtype: RecordType,
) -> Resolution {
    let lower = qname.to_ascii().to_ascii_lowercase();
    let lower = lower.trim_end_matches('.');
    if let Some(reversed) = lower.strip_suffix(".in-addr.arpa") {
        return reverse(state, zone, qname, qtype, reversed);
    }
    let rest = if lower == zone.domain {
        ""
    } else if let Some(rest) = lower.strip_suffix(zone.domain.as_str()) {
        match rest.strip_suffix('.') {
            Some(rest) => rest,
            None => return Resolution::OutOfZone,
        }
    } else {
        return Resolution::OutOfZone;
    };
    let labels: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').collect()
    };
    match labels.as_slice() {
        [] if qtype == RecordType::SOA => Resolution::answers(zone.soa().into_iter().collect()),
        [] | ["svc"] | ["pod"] => Resolution::no_data(),
        ["dns-version"] if qtype == RecordType::TXT => {
            let txt = TXT::new(vec![SPEC_VERSION.to_string()]);
            Resolution::answers(vec![Record::from_rdata(
                qname.clone(),
                zone.ttl,
                RData::TXT(txt),
            )])
        }
        ["dns-version"] => Resolution::no_data(),
        [ns, "svc"] if state.has_namespace(ns) => Resolution::no_data(),
        [ip, _ns, "pod"] => match undash(ip) {
            Some(ip) => address_answer(qname, qtype, zone.ttl, [ip]),
            None => Resolution::NxDomain,
        },
        [svc, ns, "svc"] => service(state, zone, qname, qtype, ns, svc),
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => srv(
            state,
            zone,
            qname,
            qtype,
            (ns, svc),
            &port[1..],
            &proto[1..],
        ),
        [host, svc, ns, "svc"] => endpoint(state, zone, qname, qtype, ns, svc, host),
        _ => Resolution::NxDomain,
    }
}

fn service(
    state: &IndexState,
    zone: &Zone,
    qname: &Name,
    qtype: RecordType,
    ns: &str,
    svc: &str,
) -> Resolution {
    let key: Key = (ns.to_string(), svc.to_string());
    let Some(entry) = state.services.get(&key) else {
        return Resolution::NxDomain;
    };
    match &entry.kind {
        ServiceKind::ExternalName(target) => match fqdn(target) {
            Some(target) => Resolution::answers(vec![Record::from_rdata(
                qname.clone(),
                zone.ttl,
                RData::CNAME(CNAME(target)),
            )]),
            None => Resolution::no_data(),
        },
        ServiceKind::ClusterIp(ips) => address_answer(qname, qtype, zone.ttl, ips.iter().copied()),
        ServiceKind::Headless => {
            let mut ips: Vec<Ipv4Addr> = state
                .published_endpoints(&key, entry)
                .into_iter()
                .flat_map(|(e, _)| e.addresses.iter().copied())
                .collect();
            ips.sort();
            ips.dedup();
            // The spec: a headless Service without ready endpoints is NXDOMAIN.
            if ips.is_empty() {
                return Resolution::NxDomain;
            }
            address_answer(qname, qtype, zone.ttl, ips)
        }
    }
}

fn srv(
    state: &IndexState,
    zone: &Zone,
    qname: &Name,
    qtype: RecordType,
    (ns, svc): (&str, &str),
    port_name: &str,
    proto: &str,
) -> Resolution {
    let key: Key = (ns.to_string(), svc.to_string());
    let Some(entry) = state.services.get(&key) else {
        return Resolution::NxDomain;
    };
    let named = |p: &super::index::PortEntry| {
        !p.name.is_empty() && p.name == port_name && p.protocol == proto
    };
    let Some(service_port) = entry.ports.iter().find(|p| named(p)) else {
        return Resolution::NxDomain;
    };
    if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
        return Resolution::no_data();
    }
    let service_name = format!("{svc}.{ns}.svc.{}", zone.domain);
    // (target name, port, addresses) per SRV record.
    let targets: Vec<(String, u16, Vec<Ipv4Addr>)> = match &entry.kind {
        ServiceKind::ClusterIp(ips) => vec![(service_name, service_port.port, ips.clone())],
        ServiceKind::Headless => state
            .published_endpoints(&key, entry)
            .into_iter()
            .filter_map(|(e, ports)| {
                let port = ports.iter().find(|p| named(p))?;
                let first = *e.addresses.first()?;
                let host = e.hostname.clone().unwrap_or_else(|| dashed(first));
                Some((
                    format!("{host}.{service_name}"),
                    port.port,
                    e.addresses.clone(),
                ))
            })
            .collect(),
        ServiceKind::ExternalName(target) => vec![(target.clone(), service_port.port, Vec::new())],
    };
    // An endpoint listed by two slices (while it moves between them) is one target.
    let mut targets = targets;
    targets.sort();
    targets.dedup();
    let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(100);
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    for (target, port, ips) in targets {
        let Some(target) = fqdn(&target) else {
            continue;
        };
        answers.push(Record::from_rdata(
            qname.clone(),
            zone.ttl,
            RData::SRV(SRV::new(0, weight, port, target.clone())),
        ));
        additionals.extend(
            ips.into_iter()
                .map(|ip| Record::from_rdata(target.clone(), zone.ttl, RData::A(A(ip)))),
        );
    }
    Resolution::Found {
        answers,
        additionals,
    }
}

fn endpoint(
    state: &IndexState,
    zone: &Zone,
    qname: &Name,
    qtype: RecordType,
    ns: &str,
    svc: &str,
    host: &str,
) -> Resolution {
    let key: Key = (ns.to_string(), svc.to_string());
    let Some(
        entry @ ServiceEntry {
            kind: ServiceKind::Headless,
            ..
        },
    ) = state.services.get(&key)
    else {
        return Resolution::NxDomain;
    };
    let ips: Vec<Ipv4Addr> = state
        .published_endpoints(&key, entry)
        .into_iter()
        .filter(|(e, _)| match &e.hostname {
            Some(h) => h == host,
            None => e.addresses.first().map(|ip| dashed(*ip)).as_deref() == Some(host),
        })
        .flat_map(|(e, _)| e.addresses.iter().copied())
        .collect();
    if ips.is_empty() {
        return Resolution::NxDomain;
    }
    address_answer(qname, qtype, zone.ttl, ips)
}

fn address_answer(
    qname: &Name,
    qtype: RecordType,
    ttl: u32,
    ips: impl IntoIterator<Item = Ipv4Addr>,
) -> Resolution {
    if !matches!(qtype, RecordType::A | RecordType::ANY) {
        return Resolution::no_data();
    }
    Resolution::answers(
        ips.into_iter()
            .map(|ip| Record::from_rdata(qname.clone(), ttl, RData::A(A(ip))))
            .collect(),
    )
}

/// `10.0.0.1` → `10-0-0-1`.
pub(crate) fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// `10-0-0-1` → `10.0.0.1`.
fn undash(label: &str) -> Option<Ipv4Addr> {
    label.replace('-', ".").parse().ok()
}

/// `a.b` → the fully qualified `a.b.`.
pub(crate) fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::index::tests::{service, slice};
    use crate::dns::DnsIndex;

    fn zone() -> Zone {
        Zone {
            domain: "cluster.local".into(),
            ttl: 5,
        }
    }

    fn ask(index: &DnsIndex, name: &str, qtype: RecordType) -> Resolution {
        let name = Name::from_ascii(name).expect("name");
        resolve(&index.read(), &zone(), &name, qtype)
    }

    fn rdatas(res: &Resolution) -> (Vec<String>, Vec<String>) {
        match res {
            Resolution::Found {
                answers,
                additionals,
            } => (
                answers.iter().map(|r| r.data.to_string()).collect(),
                additionals
                    .iter()
                    .map(|r| format!("{} {}", r.name, r.data))
                    .collect(),
            ),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn fixture() -> DnsIndex {
        let index = DnsIndex::new();
        index.upsert_service(&service(
            "default",
            "web",
            "10.96.0.10",
            &[("http", "TCP", 80), ("", "TCP", 81)],
        ));
        index.upsert_service(&service("default", "db", "None", &[("pg", "TCP", 5432)]));
        index.upsert_endpoint_slice(&slice(
            "default",
            "db-1",
            "db",
            &[
                ("10.244.0.5", Some("db-0"), true),
                ("10.244.0.6", None, true),
                ("10.244.0.7", Some("db-2"), false),
            ],
            &[("pg", "TCP", 5433)],
        ));
        index
    }

    #[test]
    fn cluster_ip_service_a_record_any_case() {
        let index = fixture();
        let res = ask(&index, "WEB.Default.svc.Cluster.Local.", RecordType::A);
        assert_eq!(rdatas(&res).0, vec!["10.96.0.10"]);
        if let Resolution::Found { answers, .. } = &res {
            assert_eq!(answers[0].ttl, 5);
            assert_eq!(answers[0].name.to_ascii(), "WEB.Default.svc.Cluster.Local.");
        }
    }

    #[test]
    fn headless_service_returns_ready_endpoints() {
        let index = fixture();
        let res = ask(&index, "db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&res).0, vec!["10.244.0.5", "10.244.0.6"]);
    }

    #[test]
    fn srv_for_named_port_with_additionals() {
        let index = fixture();
        let res = ask(
            &index,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        let (answers, additionals) = rdatas(&res);
        assert_eq!(answers, vec!["0 100 80 web.default.svc.cluster.local."]);
        assert_eq!(
            additionals,
            vec!["web.default.svc.cluster.local. 10.96.0.10"]
        );
        // Unknown port name or protocol: the name does not exist.
        assert_eq!(
            ask(
                &index,
                "_http._udp.web.default.svc.cluster.local.",
                RecordType::SRV
            ),
            Resolution::NxDomain
        );
    }

    #[test]
    fn headless_srv_targets_each_endpoint() {
        let index = fixture();
        let res = ask(
            &index,
            "_pg._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
        );
        let (mut answers, mut additionals) = rdatas(&res);
        answers.sort();
        additionals.sort();
        assert_eq!(
            answers,
            vec![
                "0 50 5433 10-244-0-6.db.default.svc.cluster.local.",
                "0 50 5433 db-0.db.default.svc.cluster.local.",
            ]
        );
        assert_eq!(
            additionals,
            vec![
                "10-244-0-6.db.default.svc.cluster.local. 10.244.0.6",
                "db-0.db.default.svc.cluster.local. 10.244.0.5",
            ]
        );
    }

    #[test]
    fn headless_service_without_ready_endpoints_is_nxdomain() {
        let index = DnsIndex::new();
        index.upsert_service(&service("default", "db", "None", &[]));
        index.upsert_endpoint_slice(&slice(
            "default",
            "db-x",
            "db",
            &[("10.244.0.5", None, false)],
            &[],
        ));
        assert_eq!(
            ask(&index, "db.default.svc.cluster.local.", RecordType::A),
            Resolution::NxDomain
        );
    }

    #[test]
    fn headless_endpoint_names() {
        let index = fixture();
        let res = ask(&index, "db-0.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&res).0, vec!["10.244.0.5"]);
        let res = ask(
            &index,
            "10-244-0-6.db.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(rdatas(&res).0, vec!["10.244.0.6"]);
        // Not ready: not published.
        assert_eq!(
            ask(&index, "db-2.db.default.svc.cluster.local.", RecordType::A),
            Resolution::NxDomain
        );
    }

    #[test]
    fn external_name_is_a_cname() {
        let index = DnsIndex::new();
        let mut svc = service("default", "ext", "", &[]);
        let spec = svc.spec.as_mut().expect("spec");
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("example.com".into());
        index.upsert_service(&svc);
        let res = ask(&index, "ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&res).0, vec!["example.com."]);
    }

    #[test]
    fn nxdomain_nodata_and_out_of_zone() {
        let index = fixture();
        for name in [
            "nope.default.svc.cluster.local.",
            "web.nope.svc.cluster.local.",
            "a.b.c.d.e.f.cluster.local.",
        ] {
            assert_eq!(
                ask(&index, name, RecordType::A),
                Resolution::NxDomain,
                "{name}"
            );
        }
        for (name, qtype) in [
            ("web.default.svc.cluster.local.", RecordType::AAAA),
            ("default.svc.cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("cluster.local.", RecordType::A),
        ] {
            assert_eq!(ask(&index, name, qtype), Resolution::no_data(), "{name}");
        }
        assert_eq!(
            ask(&index, "example.com.", RecordType::A),
            Resolution::OutOfZone
        );
        // A suffix match that is not a label boundary is not in the zone.
        assert_eq!(
            ask(&index, "notcluster.local.", RecordType::A),
            Resolution::OutOfZone
        );
    }

    #[test]
    fn soa_pod_and_version_records() {
        let index = fixture();
        let (answers, _) = rdatas(&ask(&index, "cluster.local.", RecordType::SOA));
        assert_eq!(answers.len(), 1);
        let res = ask(&index, "10-1-2-3.default.pod.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&res).0, vec!["10.1.2.3"]);
        let res = ask(&index, "dns-version.cluster.local.", RecordType::TXT);
        assert_eq!(rdatas(&res).0, vec!["1.1.0"]);
    }
}
