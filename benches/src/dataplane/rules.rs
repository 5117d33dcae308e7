//! kube-proxy's two netfilter shapes, written for the router namespace: iptables (nat table,
//! `KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*` with `statistic` probabilities and DNAT) and
//! nftables (one table, a verdict map on `daddr . proto . port` → per-service chains picking an
//! endpoint with `numgen random mod N` → per-endpoint DNAT chains). Chain and table names carry a
//! `BERTH-`/`berth-bench-` prefix; the structure and the rules are kube-proxy's.

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::netns::CLUSTER_CIDR;
use super::plan::{Svc, SERVICE_PORT};
use super::{io_err, run_command, DataplaneError};

const SERVICES: &str = "BERTH-KUBE-SERVICES";
pub(super) const NODEPORTS: &str = "BERTH-KUBE-NODEPORTS";
pub(super) const MARK_MASQ: &str = "BERTH-KUBE-MARK-MASQ";
const POSTROUTING: &str = "BERTH-KUBE-POSTROUTING";
pub const NFT_TABLE: &str = "berth-bench-kube-proxy";

/// The first 16 hex digits of sha256(`text`), kube-proxy's chain-name suffix length.
pub(super) fn hash16(text: &str) -> String {
    hex::encode_upper(Sha256::digest(text.as_bytes()))[..16].to_string()
}

fn svc_chain(svc: &Svc) -> String {
    format!("BERTH-SVC-{}", hash16(&format!("{}tcp", svc.port_name())))
}

fn sep_chain(svc: &Svc, endpoint: usize) -> String {
    format!(
        "BERTH-SEP-{}",
        hash16(&format!(
            "{}tcp{}",
            svc.port_name(),
            svc.endpoints[endpoint]
        ))
    )
}

fn services_rule(svc: &Svc) -> String {
    format!(
        "-A {SERVICES} -m comment --comment \"{} cluster IP\" -m tcp -p tcp -d {}/32 --dport \
         {SERVICE_PORT} -j {}\n",
        svc.port_name(),
        svc.vip,
        svc_chain(svc)
    )
}

const NODEPORTS_RULE: &str = "-A BERTH-KUBE-SERVICES -m comment --comment \"kubernetes service \
     nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j \
     BERTH-KUBE-NODEPORTS\n";

/// Declarations (`:CHAIN - [0:0]`, which also flushes them) of `svc`'s chains.
fn declare_chains(out: &mut String, svc: &Svc) {
    let _ = writeln!(out, ":{} - [0:0]", svc_chain(svc));
    for e in 0..svc.endpoints.len() {
        let _ = writeln!(out, ":{} - [0:0]", sep_chain(svc, e));
    }
}

/// The rules of `svc`'s own chains, as kube-proxy writes them.
fn chain_rules(out: &mut String, svc: &Svc) {
    let (name, svc_chain) = (svc.port_name(), svc_chain(svc));
    let _ = writeln!(
        out,
        "-A {svc_chain} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {}/32 \
         --dport {SERVICE_PORT} ! -s {CLUSTER_CIDR} -j {MARK_MASQ}",
        svc.vip
    );
    let endpoints: Vec<_> = (0..svc.endpoints.len())
        .map(|i| (sep_chain(svc, i), svc.endpoints[i]))
        .collect();
    endpoint_rules(out, &svc_chain, &name, "tcp", &endpoints);
}

/// A service chain's endpoint rules as kube-proxy writes them: a `statistic` jump to each
/// endpoint's chain (probability 1/n, then 1/(n-1), …, the last one unconditional), and in each
/// endpoint chain the hairpin masquerade mark and the DNAT. `endpoints`: (chain, address).
pub(super) fn endpoint_rules(
    out: &mut String,
    svc_chain: &str,
    name: &str,
    proto: &str,
    endpoints: &[(String, SocketAddrV4)],
) {
    let n = endpoints.len();
    for (i, (sep, ep)) in endpoints.iter().enumerate() {
        let statistic = if i + 1 < n {
            format!(
                "-m statistic --mode random --probability {:.10} ",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "-A {svc_chain} -m comment --comment \"{name} -> {ep}\" {statistic}-j {sep}"
        );
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment \"{name}\" -s {}/32 -j {MARK_MASQ}",
            ep.ip()
        );
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment \"{name}\" -m {proto} -p {proto} -j DNAT --to-destination {ep}"
        );
    }
}

/// `*nat` with the top-level chains and every service's chains declared (which also flushes
/// them).
fn declare_all(services: &[Svc]) -> String {
    let mut out = String::from("*nat\n");
    for chain in [SERVICES, NODEPORTS, MARK_MASQ, POSTROUTING] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for svc in services {
        declare_chains(&mut out, svc);
    }
    out
}

/// kube-proxy's jumps from the built-in chains, appended (`-A`) or deleted (`-D`).
fn hooks(out: &mut String, op: &str) {
    let _ = writeln!(
        out,
        "{op} PREROUTING -m comment --comment \"kubernetes service portals\" -j {SERVICES}"
    );
    let _ = writeln!(
        out,
        "{op} POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j {POSTROUTING}"
    );
}

/// A whole `iptables-restore --noflush` input for `services`, kube-proxy's full sync.
pub fn iptables_full(services: &[Svc]) -> String {
    let mut out = declare_all(services);
    hooks(&mut out, "-A");
    let _ = writeln!(out, "-A {MARK_MASQ} -j MARK --or-mark 0x4000");
    let _ = writeln!(
        out,
        "-A {POSTROUTING} -m mark ! --mark 0x4000/0x4000 -j RETURN"
    );
    let _ = writeln!(out, "-A {POSTROUTING} -j MARK --xor-mark 0x4000");
    let _ = writeln!(
        out,
        "-A {POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j \
         MASQUERADE --random-fully"
    );
    for svc in services {
        out.push_str(&services_rule(svc));
    }
    out.push_str(NODEPORTS_RULE);
    for svc in services {
        chain_rules(&mut out, svc);
    }
    out.push_str("COMMIT\n");
    out
}

/// Adding `new` the way kube-proxy's partial sync does: `KUBE-SERVICES` is rewritten whole (it
/// lists every service) plus the new service's chains; other services' chains are left alone.
pub fn iptables_add_one(existing: &[Svc], new: &Svc) -> String {
    let mut out = String::from("*nat\n");
    let _ = writeln!(out, ":{SERVICES} - [0:0]");
    declare_chains(&mut out, new);
    for svc in existing.iter().chain(std::iter::once(new)) {
        out.push_str(&services_rule(svc));
    }
    out.push_str(NODEPORTS_RULE);
    chain_rules(&mut out, new);
    out.push_str("COMMIT\n");
    out
}

/// The least iptables can do to add `new`: its chains and one rule inserted at the top.
pub fn iptables_add_one_minimal(new: &Svc) -> String {
    let mut out = String::from("*nat\n");
    declare_chains(&mut out, new);
    out.push_str(&services_rule(new).replacen("-A ", "-I ", 1).replacen(
        SERVICES,
        &format!("{SERVICES} 1"),
        1,
    ));
    chain_rules(&mut out, new);
    out.push_str("COMMIT\n");
    out
}

/// Removes every chain [`iptables_full`] and the add-ones made (flush by declaring, unhook,
/// delete).
pub fn iptables_remove(services: &[Svc]) -> String {
    let mut out = declare_all(services);
    hooks(&mut out, "-D");
    for chain in [SERVICES, NODEPORTS, MARK_MASQ, POSTROUTING] {
        let _ = writeln!(out, "-X {chain}");
    }
    for svc in services {
        let _ = writeln!(out, "-X {}", svc_chain(svc));
        for e in 0..svc.endpoints.len() {
            let _ = writeln!(out, "-X {}", sep_chain(svc, e));
        }
    }
    out.push_str("COMMIT\n");
    out
}

fn nft_service_chain(svc: &Svc) -> String {
    let name = format!("{}/{}/tcp/http", super::plan::NAMESPACE, svc.name());
    format!("service-{}-{name}", &hash16(&name)[..8])
}

fn nft_endpoint_chain(svc: &Svc, endpoint: usize) -> String {
    let ep = svc.endpoints[endpoint];
    let name = format!(
        "{}/{}/tcp/http__{}/{}",
        super::plan::NAMESPACE,
        svc.name(),
        ep.ip(),
        ep.port()
    );
    format!("endpoint-{}-{name}", &hash16(&name)[..8])
}

/// `svc`'s chains and rules, and its verdict-map element, as `nft -f` commands.
fn nft_service(out: &mut String, svc: &Svc) {
    let t = format!("ip {NFT_TABLE}");
    let chain = nft_service_chain(svc);
    let mut vmap = Vec::new();
    for (i, ep) in svc.endpoints.iter().enumerate() {
        let ep_chain = nft_endpoint_chain(svc, i);
        let _ = writeln!(out, "add chain {t} {ep_chain}");
        let _ = writeln!(
            out,
            "add rule {t} {ep_chain} ip saddr {} jump mark-for-masquerade",
            ep.ip()
        );
        let _ = writeln!(out, "add rule {t} {ep_chain} meta l4proto tcp dnat to {ep}");
        vmap.push(format!("{i} : goto {ep_chain}"));
    }
    let _ = writeln!(out, "add chain {t} {chain}");
    let _ = writeln!(
        out,
        "add rule {t} {chain} ip daddr {} tcp dport {SERVICE_PORT} ip saddr != {CLUSTER_CIDR} \
         jump mark-for-masquerade",
        svc.vip
    );
    let _ = writeln!(
        out,
        "add rule {t} {chain} numgen random mod {} vmap {{ {} }}",
        svc.endpoints.len(),
        vmap.join(", ")
    );
    let _ = writeln!(
        out,
        "add element {t} service-ips {{ {} . tcp . {SERVICE_PORT} : goto {chain} }}",
        svc.vip
    );
}

/// The whole table for `services`, one `nft -f` transaction.
pub fn nft_full(services: &[Svc]) -> String {
    let mut out = format!(
        "table ip {NFT_TABLE} {{\n\
         \tmap service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n\
         \tchain nat-prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; \
         jump services ; }}\n\
         \tchain nat-postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; \
         jump masquerading ; }}\n\
         \tchain mark-for-masquerade {{ mark set mark or 0x4000 ; }}\n\
         \tchain masquerading {{ mark and 0x4000 == 0 return ; mark set mark xor 0x4000 ; \
         masquerade fully-random ; }}\n\
         \tchain services {{ ip daddr . meta l4proto . th dport vmap @service-ips ; }}\n\
         }}\n"
    );
    for svc in services {
        nft_service(&mut out, svc);
    }
    out
}

/// Adding `new` the way kube-proxy's nftables mode does: one incremental transaction.
pub fn nft_add_one(new: &Svc) -> String {
    let mut out = String::new();
    nft_service(&mut out, new);
    out
}

/// Which iptables `iptables-restore` is: its version line, e.g. `iptables v1.8.9 (nf_tables)`.
pub fn iptables_version() -> String {
    std::process::Command::new("iptables-restore")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
        .replace("iptables-restore", "iptables")
}

pub fn nft_version() -> String {
    std::process::Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Writes `text` to `path` and runs `program args < path`; the wall time of the run.
pub fn apply(
    program: &str,
    args: &[&str],
    path: &Path,
    text: &str,
) -> Result<Duration, DataplaneError> {
    std::fs::write(path, text).map_err(io_err("write", path))?;
    run_command(program, args, Some(path))
}

/// Removes the iptables rules of `services` from the router namespace. With the nf_tables
/// backend the `ip nat` table iptables made in this (the benchmark's own) namespace goes as a
/// whole, so its hooks — and conntrack with them — are gone for the paths measured next.
pub fn iptables_clear(
    path: &Path,
    services: &[Svc],
    nf_tables: bool,
) -> Result<(), DataplaneError> {
    if nf_tables {
        return run_command("nft", &["delete", "table", "ip", "nat"], None).map(drop);
    }
    apply(
        "iptables-restore",
        &["--noflush"],
        path,
        &iptables_remove(services),
    )
    .map(drop)
}

pub fn nft_clear() -> Result<(), DataplaneError> {
    run_command("nft", &["delete", "table", "ip", NFT_TABLE], None).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::plan::services;

    #[test]
    fn iptables_has_kube_proxys_chain_structure() {
        let all = services(3, 2);
        let text = iptables_full(&all);
        assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
        // One KUBE-SERVICES rule per service, then the nodeports rule last.
        let jumps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A BERTH-KUBE-SERVICES"))
            .collect();
        assert_eq!(jumps.len(), 4);
        assert!(jumps[3].contains("BERTH-KUBE-NODEPORTS"));
        assert!(
            jumps[1].contains("-d 10.96.0.1/32"),
            "the measured service mid-list"
        );
        // Two endpoints: a 0.5 statistic rule, then an unconditional one.
        let measured = svc_chain(&all[1]);
        let rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {measured} ")))
            .collect();
        assert_eq!(rules.len(), 3);
        assert!(rules[1].contains("--probability 0.5000000000"));
        assert!(!rules[2].contains("statistic"));
        assert!(text.contains("-j DNAT --to-destination 10.210.2.11:8080"));
        for chain in text.lines().filter_map(|l| l.strip_prefix(':')) {
            let name = chain.split(' ').next().unwrap();
            assert!(name.starts_with("BERTH-") && name.len() <= 28, "{name}");
        }
    }

    #[test]
    fn adding_one_rewrites_services_and_only_the_new_chains() {
        let all = services(3, 1);
        let new = crate::dataplane::plan::service(3, 1);
        let text = iptables_add_one(&all, &new);
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("-A BERTH-KUBE-SERVICES"))
                .count(),
            5
        );
        assert_eq!(text.lines().filter(|l| l.starts_with(':')).count(), 4);
        let minimal = iptables_add_one_minimal(&new);
        assert!(
            minimal.contains("-I BERTH-KUBE-SERVICES 1 -m comment"),
            "{minimal}"
        );
        let remove = iptables_remove(&all);
        assert!(remove.contains(&format!("-X {}", svc_chain(&all[0]))));
    }

    #[test]
    fn nft_has_a_verdict_map_and_numgen_per_service() {
        let all = services(2, 3);
        let text = nft_full(&all);
        assert!(text.starts_with("table ip berth-bench-kube-proxy {"));
        assert_eq!(text.matches("add element").count(), 2);
        assert!(text.contains("numgen random mod 3 vmap { 0 : goto endpoint-"));
        assert!(text.contains("meta l4proto tcp dnat to 10.210.2.12:8080"));
        assert_eq!(nft_add_one(&all[0]).matches("add chain").count(), 4);
    }
}
