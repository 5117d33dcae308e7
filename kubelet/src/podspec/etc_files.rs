//! The files a pod's containers get at /etc/hosts, /etc/resolv.conf, /etc/hostname and their
//! terminationMessagePath, written under the pod directory (Kubernetes' managed hosts file and
//! DNS configurer; resolv.conf and hostname are the CRI runtime's share).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodSpecError;

const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH_PATHS: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
const MAX_SEARCH_DOMAIN: usize = 253;
const HOSTNAME_MAX: usize = 63;
const FQDN_MAX: usize = 64;

/// The kubelet's name-resolution settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// `--cluster-dns`: nameservers for `ClusterFirst` pods. Empty: they fall back to `Default`.
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// `--resolv-conf` (normally `/etc/resolv.conf`): `Default` pods get its nameservers, search
    /// paths and options; `ClusterFirst` pods its search paths. `None`: nameserver 127.0.0.1.
    pub host_resolv_conf: Option<PathBuf>,
    /// The host's hosts file, copied for hostNetwork pods (normally `/etc/hosts`).
    pub host_hosts: PathBuf,
    /// The node's hostname, which hostNetwork pods keep.
    pub node_hostname: String,
}

/// The pod's /etc files on the host, to be bound into each container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    /// `<pod_dir>/etc-hosts`; `None` when the pod has no IP yet (Kubernetes then leaves the
    /// image's /etc/hosts alone).
    pub hosts: Option<PathBuf>,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
    /// The kernel hostname for the pod's UTS namespace (the FQDN with `setHostnameAsFQDN`).
    pub hostname_value: String,
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The pod's hostname and domain (Kubernetes' `GeneratePodHostNameAndDomain`): `spec.hostname`
/// or the pod name cut to 63 characters; with `spec.subdomain` the domain is
/// `<subdomain>.<ns>.svc.<cluster domain>`.
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> Result<(String, String), PodSpecError> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut hostname = name;
    if let Some(h) = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        if !is_dns_label(h) {
            return Err(PodSpecError::invalid(format!(
                "pod Hostname {h:?} is not a valid DNS label"
            )));
        }
        hostname = h.to_string();
    }
    if hostname.len() > HOSTNAME_MAX {
        hostname.truncate(HOSTNAME_MAX);
        while hostname.ends_with(['-', '.']) {
            hostname.pop();
        }
    }
    let mut domain = String::new();
    if let Some(sub) = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        if !is_dns_label(sub) {
            return Err(PodSpecError::invalid(format!(
                "pod Subdomain {sub:?} is not a valid DNS label"
            )));
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        domain = format!("{sub}.{ns}.svc.{cluster_domain}");
    }
    Ok((hostname, domain))
}

fn write(path: &Path, content: &str, mode: u32) -> Result<(), PodSpecError> {
    // In place (not by rename): a file already bound into running containers keeps its inode.
    fs::write(path, content).map_err(PodSpecError::io("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(PodSpecError::io("chmod", path))
}

/// Writes `<pod_dir>/etc-hosts`, `<pod_dir>/resolv.conf` and `<pod_dir>/hostname`.
/// `pod_ip` is the sandbox's IP ("" when it has none).
pub fn write_etc_files(
    pod: &Pod,
    pod_dir: &Path,
    pod_ip: &str,
    dns: &DnsSettings,
) -> Result<EtcFiles, PodSpecError> {
    fs::create_dir_all(pod_dir).map_err(PodSpecError::io("create dir", pod_dir))?;
    let spec = pod.spec.as_ref();
    let (hostname, domain) = pod_hostname(pod, &dns.cluster_domain)?;
    let aliases = hosts_aliases(pod);
    let hosts = if host_network(pod) {
        let host = fs::read_to_string(&dns.host_hosts)
            .map_err(PodSpecError::io("read", &dns.host_hosts))?;
        Some(format!(
            "{MANAGED_HOSTS_HEADER_HOST_NETWORK}{host}{aliases}"
        ))
    } else if !pod_ip.is_empty() {
        let mut s = String::from(MANAGED_HOSTS_HEADER);
        s.push_str("127.0.0.1\tlocalhost\n");
        s.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        s.push_str("fe00::0\tip6-localnet\n");
        s.push_str("fe00::0\tip6-mcastprefix\n");
        s.push_str("fe00::1\tip6-allnodes\n");
        s.push_str("fe00::2\tip6-allrouters\n");
        if domain.is_empty() {
            s.push_str(&format!("{pod_ip}\t{hostname}\n"));
        } else {
            s.push_str(&format!("{pod_ip}\t{hostname}.{domain}\t{hostname}\n"));
        }
        s.push_str(&aliases);
        Some(s)
    } else {
        None
    };
    let hosts = match hosts {
        Some(content) => {
            let path = pod_dir.join("etc-hosts");
            write(&path, &content, 0o644)?;
            Some(path)
        }
        None => None,
    };

    let resolv_conf = pod_dir.join("resolv.conf");
    write(&resolv_conf, &resolv_conf_content(pod, dns)?, 0o644)?;

    let hostname_value = if host_network(pod) {
        dns.node_hostname.clone()
    } else if spec.and_then(|s| s.set_hostname_as_fqdn).unwrap_or(false) && !domain.is_empty() {
        let fqdn = format!("{hostname}.{domain}");
        if fqdn.len() > FQDN_MAX {
            return Err(PodSpecError::invalid(format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({FQDN_MAX} characters is the max, {} characters requested)",
                fqdn.len()
            )));
        }
        fqdn
    } else {
        hostname
    };
    let hostname_path = pod_dir.join("hostname");
    write(&hostname_path, &format!("{hostname_value}\n"), 0o644)?;
    Ok(EtcFiles {
        hosts,
        resolv_conf,
        hostname: hostname_path,
        hostname_value,
    })
}

fn hosts_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_deref())
        .unwrap_or(&[]);
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.as_deref().unwrap_or(&[]).join("\t");
        s.push_str(&format!("{}\t{names}\n", a.ip));
    }
    s
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Resolv {
    servers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

/// The parts of a resolv.conf the kubelet uses (Kubernetes' `parseResolvConf`).
fn parse_resolv_conf(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first().copied() {
            Some("nameserver") if fields.len() > 1 => r.servers.push(fields[1].to_string()),
            Some("search") => {
                r.searches = fields[1..]
                    .iter()
                    .filter(|s| **s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect();
            }
            Some("options") => {
                for o in &fields[1..] {
                    set_option(&mut r.options, o);
                }
            }
            _ => {}
        }
    }
    r
}

/// Adds `name[:value]`, replacing an option of the same name in place.
fn set_option(options: &mut Vec<String>, opt: &str) {
    let name = opt.split(':').next().unwrap_or(opt);
    match options
        .iter_mut()
        .find(|o| o.split(':').next() == Some(name))
    {
        Some(existing) => *existing = opt.to_string(),
        None => options.push(opt.to_string()),
    }
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// Kubernetes' `GetPodDNS`, as a resolv.conf (`search`, `nameserver`, `options` lines).
fn resolv_conf_content(pod: &Pod, dns: &DnsSettings) -> Result<String, PodSpecError> {
    let spec = pod.spec.as_ref();
    let host = match &dns.host_resolv_conf {
        Some(p) => parse_resolv_conf(&fs::read_to_string(p).map_err(PodSpecError::io("read", p))?),
        None => Resolv {
            servers: vec!["127.0.0.1".into()],
            searches: vec![".".into()],
            options: Vec::new(),
        },
    };
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!host_network(pod)),
        "Default" => Some(false),
        other => return Err(PodSpecError::invalid(format!("invalid DNSPolicy={other}"))),
    };
    let mut r = match cluster {
        None => Resolv::default(),
        Some(true) if !dns.cluster_dns.is_empty() => {
            let mut searches = Vec::new();
            if dns.cluster_domain.is_empty() {
                searches = host.searches;
            } else {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let d = &dns.cluster_domain;
                push_unique(
                    &mut searches,
                    [format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()]
                        .into_iter()
                        .chain(host.searches),
                );
            }
            Resolv {
                servers: dns.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        // ClusterFirst without a cluster DNS falls back to Default, as in Kubernetes.
        Some(_) => host,
    };
    if let Some(c) = spec.and_then(|s| s.dns_config.as_ref()) {
        let mut servers = std::mem::take(&mut r.servers);
        push_unique(&mut servers, c.nameservers.iter().flatten().cloned());
        r.servers = servers;
        let mut searches = std::mem::take(&mut r.searches);
        push_unique(&mut searches, c.searches.iter().flatten().cloned());
        r.searches = searches;
        for o in c.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            match o.value.as_deref().filter(|v| !v.is_empty()) {
                Some(v) => set_option(&mut r.options, &format!("{name}:{v}")),
                None => set_option(&mut r.options, name),
            }
        }
    }
    r.servers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCH_PATHS);
    r.searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN);
    while r.searches.join(" ").len() > MAX_SEARCH_CHARS {
        r.searches.pop();
    }
    let mut out = String::new();
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    for s in &r.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !r.options.is_empty() {
        out.push_str(&format!("options {}\n", r.options.join(" ")));
    }
    Ok(out)
}

/// Creates the empty, world-writable file a container instance writes its termination message
/// to: `<pod_dir>/containers/<container>/<instance>` (Kubernetes adds a random id per instance,
/// so a restarted container starts with an empty file). `None` when the container sets no
/// `terminationMessagePath` (the API defaults it to /dev/termination-log).
pub fn termination_log_file(
    pod_dir: &Path,
    container: &Container,
    instance: &str,
) -> Result<Option<PathBuf>, PodSpecError> {
    if container.termination_message_path.as_deref() == Some("") {
        return Ok(None);
    }
    let dir = pod_dir.join("containers").join(&container.name);
    fs::create_dir_all(&dir).map_err(PodSpecError::io("create dir", &dir))?;
    let path = dir.join(instance);
    write(&path, "", 0o666)?;
    Ok(Some(path))
}

#[cfg(test)]
#[path = "etc_files_tests.rs"]
mod tests;
