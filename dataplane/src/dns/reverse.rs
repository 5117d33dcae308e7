//! PTR records (spec §2.3.3 and §2.4.3): `<d>.<c>.<b>.<a>.in-addr.arpa` → the Service name for
//! a ClusterIP, `<hostname>.<svc>.<ns>.svc.<zone>` for a published headless endpoint.
//!
//! Addresses the index does not know are not ours to deny: they are forwarded, as CoreDNS does
//! with `fallthrough in-addr.arpa`. The lookup scans the index; a reverse query is rare next to
//! the forward ones, and a scan keeps index updates to one map write.

use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::answer::{dashed, fqdn, Resolution, Zone};
use super::index::{IndexState, ServiceKind};

/// Answers `<reversed>.in-addr.arpa`; `reversed` is the lowercased name without that suffix.
pub(crate) fn reverse(
    state: &IndexState,
    zone: &Zone,
    qname: &Name,
    qtype: RecordType,
    reversed: &str,
) -> Resolution {
    let Some(ip) = parse_reversed(reversed) else {
        return Resolution::OutOfZone;
    };
    let targets = names_of(state, zone, ip);
    if targets.is_empty() {
        return Resolution::OutOfZone;
    }
    if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
        return Resolution::no_data();
    }
    Resolution::answers(
        targets
            .iter()
            .filter_map(|t| fqdn(t))
            .map(|t| Record::from_rdata(qname.clone(), zone.ttl, RData::PTR(PTR(t))))
            .collect(),
    )
}

/// `4.3.2.1` → `1.2.3.4`; partial names (`3.2.1`) are not addresses.
fn parse_reversed(reversed: &str) -> Option<Ipv4Addr> {
    let octets: Vec<u8> = reversed
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    let [d, c, b, a] = octets.as_slice() else {
        return None;
    };
    Some(Ipv4Addr::new(*a, *b, *c, *d))
}

/// Every in-cluster name `ip` is the address of, sorted.
fn names_of(state: &IndexState, zone: &Zone, ip: Ipv4Addr) -> Vec<String> {
    let mut names = Vec::new();
    for (key @ (ns, svc), entry) in &state.services {
        let service_name = format!("{svc}.{ns}.svc.{}", zone.domain);
        match &entry.kind {
            ServiceKind::ClusterIp(ips) if ips.contains(&ip) => names.push(service_name),
            ServiceKind::Headless => {
                for (endpoint, _) in state.published_endpoints(key, entry) {
                    if endpoint.addresses.contains(&ip) {
                        let first = endpoint.addresses.first().copied().unwrap_or(ip);
                        let host = endpoint.hostname.clone().unwrap_or_else(|| dashed(first));
                        names.push(format!("{host}.{service_name}"));
                    }
                }
            }
            _ => {}
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::answer::resolve;
    use crate::dns::index::tests::{service, slice};
    use crate::dns::DnsIndex;

    fn ask(index: &DnsIndex, name: &str, qtype: RecordType) -> Resolution {
        let zone = Zone {
            domain: "cluster.local".into(),
            ttl: 5,
        };
        resolve(
            &index.read(),
            &zone,
            &Name::from_ascii(name).expect("name"),
            qtype,
        )
    }

    fn ptrs(res: Resolution) -> Vec<String> {
        match res {
            Resolution::Found { answers, .. } => {
                answers.iter().map(|r| r.data.to_string()).collect()
            }
            other => panic!("expected PTR records, got {other:?}"),
        }
    }

    #[test]
    fn cluster_ips_and_headless_endpoints_have_ptr_records() {
        let index = DnsIndex::new();
        index.upsert_service(&service("default", "web", "10.96.0.10", &[]));
        index.upsert_service(&service("default", "db", "None", &[]));
        index.upsert_endpoint_slice(&slice(
            "default",
            "db-x",
            "db",
            &[
                ("10.244.0.5", Some("db-0"), true),
                ("10.244.0.6", None, true),
                ("10.244.0.7", None, false),
            ],
            &[],
        ));
        assert_eq!(
            ptrs(ask(&index, "10.0.96.10.IN-ADDR.arpa.", RecordType::PTR)),
            ["web.default.svc.cluster.local."]
        );
        assert_eq!(
            ptrs(ask(&index, "5.0.244.10.in-addr.arpa.", RecordType::PTR)),
            ["db-0.db.default.svc.cluster.local."]
        );
        assert_eq!(
            ptrs(ask(&index, "6.0.244.10.in-addr.arpa.", RecordType::PTR)),
            ["10-244-0-6.db.default.svc.cluster.local."]
        );
        assert_eq!(
            ask(&index, "10.0.96.10.in-addr.arpa.", RecordType::A),
            Resolution::no_data()
        );
        // Not ready, unknown, or not an address: someone else's to answer.
        for name in [
            "7.0.244.10.in-addr.arpa.",
            "1.1.1.1.in-addr.arpa.",
            "96.10.in-addr.arpa.",
        ] {
            assert_eq!(
                ask(&index, name, RecordType::PTR),
                Resolution::OutOfZone,
                "{name}"
            );
        }
    }
}
