//! Rows of the core (v1) kinds other than Pod and Event: Namespace, Node, Service, Endpoints,
//! ConfigMap, Secret and ServiceAccount.

use super::format::{
    arr_at, at, format_labels, int_at, join_host_port, len_at, since, str_at, time_at, Millis,
};
use super::ColumnDefinition as Col;
use serde_json::{json, Value};

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

fn age(obj: &Value, now: Millis) -> Value {
    json!(since(time_at(obj, &["metadata", "creationTimestamp"]), now))
}

// ---- Namespace ----

pub(super) fn namespace_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Status", "The status of the namespace"),
        Col::age(),
    ]
}

pub(super) fn namespace_cells(ns: &Value, now: Millis) -> Vec<Value> {
    vec![
        name(ns),
        json!(str_at(ns, &["status", "phase"])),
        age(ns, now),
    ]
}

// ---- Node ----

const KUBELET_VERSION_DOC: &str = "Kubelet Version reported by the node.";
const ADDRESSES_DOC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const OS_IMAGE_DOC: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const KERNEL_DOC: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const RUNTIME_DOC: &str = "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";

/// Labels `node-role.kubernetes.io/<role>` and `kubernetes.io/role=<role>` name a node's roles.
const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

pub(super) fn node_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Status", "The status of the node"),
        Col::string("Roles", "The roles of the node"),
        Col::age(),
        Col::string("Version", KUBELET_VERSION_DOC),
        Col::string("Internal-IP", ADDRESSES_DOC).wide(),
        Col::string("External-IP", ADDRESSES_DOC).wide(),
        Col::string("OS-Image", OS_IMAGE_DOC).wide(),
        Col::string("Kernel-Version", KERNEL_DOC).wide(),
        Col::string("Container-Runtime", RUNTIME_DOC).wide(),
    ]
}

/// "Ready", "NotReady" or "Unknown" (no Ready condition), then ",SchedulingDisabled" when
/// cordoned.
fn node_status(node: &Value) -> String {
    let ready = arr_at(node, &["status", "conditions"])
        .iter()
        .rfind(|c| str_at(c, &["type"]) == "Ready");
    let mut status = match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if at(node, &["spec", "unschedulable"]).as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<&str> = Vec::new();
    if let Some(labels) = at(node, &["metadata", "labels"]).as_object() {
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if let Some(role) = k.strip_prefix(NODE_ROLE_PREFIX) {
                if !role.is_empty() {
                    roles.push(role);
                }
            } else if k == NODE_ROLE_LABEL && !v.is_empty() {
                roles.push(v);
            }
        }
    }
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    }
}

fn node_address<'a>(node: &'a Value, type_: &str) -> &'a str {
    arr_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == type_)
        .map_or("<none>", |a| str_at(a, &["address"]))
}

pub(super) fn node_cells(node: &Value, now: Millis) -> Vec<Value> {
    let info = at(node, &["status", "nodeInfo"]);
    let or_unknown = |field: &str| match str_at(info, &[field]) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    };
    vec![
        name(node),
        json!(node_status(node)),
        json!(node_roles(node)),
        age(node, now),
        json!(str_at(info, &["kubeletVersion"])),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(or_unknown("osImage")),
        json!(or_unknown("kernelVersion")),
        json!(or_unknown("containerRuntimeVersion")),
    ]
}

// ---- Service ----

const SERVICE_TYPE_DOC: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const CLUSTER_IP_DOC: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const EXTERNAL_IPS_DOC: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const PORTS_DOC: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const SERVICE_SELECTOR_DOC: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";

pub(super) fn service_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Type", SERVICE_TYPE_DOC),
        Col::string("Cluster-IP", CLUSTER_IP_DOC),
        Col::string("External-IP", EXTERNAL_IPS_DOC),
        Col::string("Port(s)", PORTS_DOC),
        Col::age(),
        Col::string("Selector", SERVICE_SELECTOR_DOC).wide(),
    ]
}

fn strings_at<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a str> {
    arr_at(v, path)
        .iter()
        .map(|s| s.as_str().unwrap_or(""))
        .collect()
}

/// The EXTERNAL-IP cell. The server prints the wide form, so load-balancer addresses are never
/// shortened.
fn service_external_ip(svc: &Value, type_: &str) -> String {
    let external = strings_at(svc, &["spec", "externalIPs"]);
    match type_ {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: Vec<&str> = arr_at(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| match str_at(i, &["ip"]) {
                    "" => str_at(i, &["hostname"]),
                    ip => ip,
                })
                .filter(|s| !s.is_empty())
                .collect();
            lb.sort_unstable();
            lb.dedup();
            if !external.is_empty() {
                lb.extend(external);
                lb.join(",")
            } else if !lb.is_empty() {
                lb.join(",")
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// "80/TCP", "80:30080/TCP", comma-joined; "<none>" without ports.
fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = match str_at(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            match int_at(p, &["nodePort"]) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    }
}

pub(super) fn service_cells(svc: &Value, now: Millis) -> Vec<Value> {
    // An unset type or clusterIPs are what defaulting fills in; read them as it would.
    let type_ = match str_at(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = match arr_at(svc, &["spec", "clusterIPs"]).first() {
        Some(ip) => ip.as_str().unwrap_or(""),
        None => str_at(svc, &["spec", "clusterIP"]),
    };
    let cluster_ip = if cluster_ip.is_empty() {
        "<none>"
    } else {
        cluster_ip
    };
    vec![
        name(svc),
        json!(type_),
        json!(cluster_ip),
        json!(service_external_ip(svc, type_)),
        json!(service_ports(svc)),
        age(svc, now),
        json!(format_labels(at(svc, &["spec", "selector"]))),
    ]
}

// ---- Endpoints ----

const SUBSETS_DOC: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";

pub(super) fn endpoints_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Endpoints", SUBSETS_DOC),
        Col::age(),
    ]
}

/// Up to three ready `ip:port` pairs, then " + N more..."; "<none>" without subsets.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr_at(ss, &["addresses"]);
        let ports = arr_at(ss, &["ports"]);
        if ports.is_empty() {
            // Headless services may publish addresses without ports.
            count += addresses.len();
            for a in addresses.iter().take(MAX.saturating_sub(list.len())) {
                list.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses.iter().take(MAX.saturating_sub(list.len())) {
                list.push(join_host_port(str_at(a, &["ip"]), int_at(p, &["port"])));
            }
        }
    }
    let joined = list.join(",");
    if count > list.len() {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

pub(super) fn endpoints_cells(ep: &Value, now: Millis) -> Vec<Value> {
    vec![name(ep), json!(format_endpoints(ep)), age(ep, now)]
}

// ---- ConfigMap, Secret, ServiceAccount ----

const CONFIG_MAP_DATA_DOC: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";
const SECRET_TYPE_DOC: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const SECRET_DATA_DOC: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
const SA_SECRETS_DOC: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret";

pub(super) fn config_map_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Data", CONFIG_MAP_DATA_DOC),
        Col::age(),
    ]
}

pub(super) fn config_map_cells(cm: &Value, now: Millis) -> Vec<Value> {
    let data = len_at(cm, &["data"]) + len_at(cm, &["binaryData"]);
    vec![name(cm), json!(data), age(cm, now)]
}

pub(super) fn secret_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Type", SECRET_TYPE_DOC),
        Col::string("Data", SECRET_DATA_DOC),
        Col::age(),
    ]
}

pub(super) fn secret_cells(secret: &Value, now: Millis) -> Vec<Value> {
    vec![
        name(secret),
        json!(str_at(secret, &["type"])),
        json!(len_at(secret, &["data"])),
        age(secret, now),
    ]
}

pub(super) fn service_account_columns() -> Vec<Col> {
    vec![
        Col::name(),
        Col::string("Secrets", SA_SECRETS_DOC),
        Col::age(),
    ]
}

pub(super) fn service_account_cells(sa: &Value, now: Millis) -> Vec<Value> {
    vec![name(sa), json!(len_at(sa, &["secrets"])), age(sa, now)]
}

#[cfg(test)]
mod tests {
    use super::super::format::parse_time;
    use super::*;

    fn now() -> Millis {
        parse_time("2024-05-01T12:00:00Z").expect("now")
    }

    #[test]
    fn namespace() {
        let ns = json!({"metadata": {"name": "kube-system",
                                     "creationTimestamp": "2024-04-29T09:00:00Z"},
                        "status": {"phase": "Active"}});
        assert_eq!(
            namespace_cells(&ns, now()),
            vec![json!("kube-system"), json!("Active"), json!("2d3h")]
        );
    }

    #[test]
    fn cordoned_node() {
        let node = json!({
            "metadata": {"name": "node-a", "creationTimestamp": "2024-04-01T12:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "",
                                    "node-role.kubernetes.io/": "",
                                    "kubernetes.io/role": "etcd",
                                    "kubernetes.io/hostname": "node-a"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node-a"},
                              {"type": "InternalIP", "address": "192.0.2.10"}],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": ""}
            }
        });
        assert_eq!(
            node_cells(&node, now()),
            vec![
                json!("node-a"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,etcd"),
                json!("30d"),
                json!("v1.32.0"),
                json!("192.0.2.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0-18-amd64"),
                json!("<unknown>"),
            ]
        );
    }

    #[test]
    fn node_status_variants() {
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(node_status(&not_ready), "NotReady");
        let fresh = json!({"metadata": {"name": "n"}});
        assert_eq!(node_status(&fresh), "Unknown");
        assert_eq!(node_roles(&fresh), "<none>");
    }

    #[test]
    fn node_port_service() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:59:55Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.15", "clusterIPs": ["10.43.0.15"],
                     "selector": {"app": "web", "tier": "front"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                "nodePort": 30080, "protocol": "TCP"},
                               {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}
        });
        assert_eq!(
            service_cells(&svc, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.43.0.15"),
                json!("<none>"),
                json!("80:30080/TCP,53:30053/UDP"),
                json!("5s"),
                json!("app=web,tier=front"),
            ]
        );
    }

    #[test]
    fn other_service_types() {
        let headless = json!({"metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}});
        let c = service_cells(&headless, now());
        assert_eq!(
            &c[1..5],
            &[
                json!("ClusterIP"),
                json!("None"),
                json!("<none>"),
                json!("5432/TCP")
            ]
        );
        assert_eq!(c[5], json!("<unknown>"));
        assert_eq!(c[6], json!("<none>"));

        let mut lb = json!({"metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.43.0.9"]}});
        assert_eq!(service_cells(&lb, now())[3], json!("<pending>"));
        assert_eq!(service_cells(&lb, now())[4], json!("<none>"));
        lb["status"] = json!({"loadBalancer": {"ingress": [
            {"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.9"}]}});
        assert_eq!(
            service_cells(&lb, now())[3],
            json!("203.0.113.9,lb.example.com")
        );
        lb["spec"]["externalIPs"] = json!(["198.51.100.1"]);
        assert_eq!(
            service_cells(&lb, now())[3],
            json!("203.0.113.9,lb.example.com,198.51.100.1")
        );

        let ext = json!({"metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(service_cells(&ext, now())[3], json!("db.example.com"));
    }

    #[test]
    fn endpoints() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.42.0.7"}, {"ip": "10.42.0.8"}],
             "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]},
            {"addresses": [{"ip": "fd00::9"}], "ports": [{"port": 8080}]}
        ]});
        assert_eq!(
            format_endpoints(&ep),
            "10.42.0.7:8080,10.42.0.8:8080,10.42.0.7:9090 + 2 more..."
        );
        let small = json!({"subsets": [{"addresses": [{"ip": "fd00::9"}],
                                        "ports": [{"port": 80}]}]});
        assert_eq!(format_endpoints(&small), "[fd00::9]:80");
        let headless =
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}]});
        assert_eq!(format_endpoints(&headless), "10.0.0.1,10.0.0.2");
        assert_eq!(format_endpoints(&json!({"subsets": []})), "<none>");
        assert_eq!(endpoints_cells(&json!({}), now())[1], json!("<none>"));
    }

    #[test]
    fn config_secret_service_account() {
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": "2024-05-01T11:00:00Z"},
                        "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            config_map_cells(&cm, now()),
            vec![json!("cfg"), json!(3), json!("60m")]
        );
        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                            "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            secret_cells(&secret, now()),
            vec![
                json!("tls"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("<unknown>")
            ]
        );
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(service_account_cells(&sa, now())[1], json!(0));
    }
}
