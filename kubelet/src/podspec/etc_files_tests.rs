use serde_json::json;

use super::*;

fn pod(spec: serde_json::Value) -> Pod {
    let mut s = json!({"containers": [{"name": "c"}]});
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": s}))
        .unwrap()
}

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    dns: DnsSettings,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let host_resolv = tmp.path().join("host-resolv.conf");
    fs::write(
        &host_resolv,
        "# comment\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch corp.example. lan\noptions edns0 ndots:2\n",
    )
    .unwrap();
    let host_hosts = tmp.path().join("host-hosts");
    fs::write(&host_hosts, "127.0.0.1 localhost\n10.0.0.1 nodeA\n").unwrap();
    Env {
        dir: tmp.path().join("pod"),
        dns: DnsSettings {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: Some(host_resolv),
            host_hosts,
            node_hostname: "nodeA".into(),
        },
        _tmp: tmp,
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn managed_hosts_file() {
    let e = env();
    let p = pod(json!({"hostname": "h", "subdomain": "sub",
        "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["foo", "bar"]}]}));
    let f = write_etc_files(&p, &e.dir, "10.1.0.5", &e.dns).unwrap();
    assert_eq!(
        read(f.hosts.as_ref().unwrap()),
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         10.1.0.5\th.sub.shop.svc.cluster.local\th\n\
         \n\
         # Entries added by HostAliases.\n\
         1.2.3.4\tfoo\tbar\n"
    );
    assert_eq!(f.hostname_value, "h");
    assert_eq!(read(&f.hostname), "h\n");

    let plain = write_etc_files(&pod(json!({})), &e.dir, "10.1.0.6", &e.dns).unwrap();
    assert!(
        read(plain.hosts.as_ref().unwrap()).ends_with("fe00::2\tip6-allrouters\n10.1.0.6\tweb-0\n")
    );
    assert_eq!(
        write_etc_files(&pod(json!({})), &e.dir, "", &e.dns)
            .unwrap()
            .hosts,
        None
    );

    let fqdn = write_etc_files(
        &pod(json!({"subdomain": "s", "setHostnameAsFQDN": true})),
        &e.dir,
        "10.1.0.6",
        &e.dns,
    )
    .unwrap();
    assert_eq!(fqdn.hostname_value, "web-0.s.shop.svc.cluster.local");

    let hostnet = write_etc_files(
        &pod(json!({"hostNetwork": true})),
        &e.dir,
        "10.0.0.1",
        &e.dns,
    )
    .unwrap();
    assert_eq!(
        read(hostnet.hosts.as_ref().unwrap()),
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n10.0.0.1 nodeA\n"
    );
    assert_eq!(hostnet.hostname_value, "nodeA");
}

#[test]
fn long_names_are_cut() {
    let long = "a".repeat(62) + "-bcd";
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": long, "namespace": "n"}, "spec": {"containers": []}}),
    )
    .unwrap();
    assert_eq!(pod_hostname(&p, "cluster.local").unwrap().0, "a".repeat(62));
    let bad = pod(json!({"hostname": "Bad_Name"}));
    assert_eq!(
        pod_hostname(&bad, "c").unwrap_err().to_string(),
        "pod Hostname \"Bad_Name\" is not a valid DNS label"
    );
}

#[test]
fn resolv_conf_policies() {
    let e = env();
    let resolv = |spec| {
        read(
            &write_etc_files(&pod(spec), &e.dir, "10.1.0.5", &e.dns)
                .unwrap()
                .resolv_conf,
        )
    };
    assert_eq!(
        resolv(json!({})),
        "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lan\n\
         nameserver 10.96.0.10\n\
         options ndots:5\n"
    );
    assert_eq!(
        resolv(json!({"dnsPolicy": "Default"})),
        "search corp.example lan\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions edns0 ndots:2\n"
    );
    // ClusterFirst on the host network means Default; ClusterFirstWithHostNet keeps the cluster.
    assert!(resolv(json!({"hostNetwork": true})).contains("nameserver 1.1.1.1"));
    assert!(
        resolv(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}))
            .contains("nameserver 10.96.0.10")
    );
    assert_eq!(
        resolv(json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["9.9.9.9", "9.9.9.9", "1.0.0.1", "2.2.2.2", "3.3.3.3"],
            "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "1"}, {"name": "rotate"}]}})),
        "search a.example\nnameserver 9.9.9.9\nnameserver 1.0.0.1\nnameserver 2.2.2.2\noptions ndots:1 rotate\n"
    );
    assert_eq!(
        resolv(
            json!({"dnsConfig": {"options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})
        ),
        "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lan\n\
         nameserver 10.96.0.10\n\
         options ndots:2 edns0\n"
    );
    let mut no_cluster = e.dns.clone();
    no_cluster.cluster_dns.clear();
    let f = write_etc_files(&pod(json!({})), &e.dir, "10.1.0.5", &no_cluster).unwrap();
    assert!(read(&f.resolv_conf).contains("nameserver 1.1.1.1"));
    no_cluster.host_resolv_conf = None;
    let f = write_etc_files(
        &pod(json!({"dnsPolicy": "Default"})),
        &e.dir,
        "10.1.0.5",
        &no_cluster,
    )
    .unwrap();
    assert_eq!(read(&f.resolv_conf), "search .\nnameserver 127.0.0.1\n");
}

#[test]
fn termination_log() {
    let e = env();
    let c: Container = serde_json::from_value(json!({"name": "app"})).unwrap();
    let p = termination_log_file(&e.dir, &c, "abc").unwrap().unwrap();
    assert_eq!(p, e.dir.join("containers/app/abc"));
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o666
    );
    assert_eq!(read(&p), "");
}
