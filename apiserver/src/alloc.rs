//! Service ClusterIP and NodePort allocation. The allocations are not stored separately: they are
//! rebuilt from the stored Services at start, so a crash can neither leak nor double-book one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde_json::Value;

use crate::status::Cause;

/// Default NodePort range, as Kubernetes.
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("invalid service CIDR {0:?}: want an IPv4 CIDR with a prefix of /12 to /28")]
    Cidr(String),
}

/// A range of integers handed out first-free from a rotating cursor (so a freed value is not
/// reused at once).
#[derive(Debug)]
struct Range {
    first: u32,
    last: u32,
    used: BTreeSet<u32>,
    cursor: u32,
}

impl Range {
    fn new(first: u32, last: u32) -> Self {
        Range {
            first,
            last,
            used: BTreeSet::new(),
            cursor: first,
        }
    }

    fn contains(&self, v: u32) -> bool {
        (self.first..=self.last).contains(&v)
    }

    fn take(&mut self, v: u32) -> bool {
        self.contains(v) && self.used.insert(v)
    }

    fn next(&mut self) -> Option<u32> {
        let size = self.last - self.first + 1;
        if self.used.len() as u32 >= size {
            return None;
        }
        for i in 0..size {
            let v = self.first + (self.cursor - self.first + i) % size;
            if self.used.insert(v) {
                self.cursor = if v == self.last { self.first } else { v + 1 };
                return Some(v);
            }
        }
        None
    }

    fn release(&mut self, v: u32) {
        self.used.remove(&v);
    }
}

/// What a Service holds: its ClusterIP and NodePorts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<u16>,
}

/// The allocators for Services.
#[derive(Debug)]
pub struct ServiceAllocator {
    cidr: String,
    ips: Mutex<Range>,
    ports: Mutex<Range>,
}

impl ServiceAllocator {
    pub fn new(cidr: &str) -> Result<Self, AllocError> {
        let bad = || AllocError::Cidr(cidr.to_string());
        let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        if !(12..=28).contains(&len) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - len);
        let base = u32::from(addr) & mask;
        let broadcast = base | !mask;
        // The network address and the broadcast address are never handed out.
        let ips = Range::new(base + 1, broadcast - 1);
        let ports = Range::new(NODE_PORT_RANGE.0 as u32, NODE_PORT_RANGE.1 as u32);
        Ok(ServiceAllocator {
            cidr: cidr.to_string(),
            ips: Mutex::new(ips),
            ports: Mutex::new(ports),
        })
    }

    /// The first address of the range: Kubernetes gives it to the `kubernetes` Service.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ips.lock().expect("alloc lock poisoned").first)
    }

    /// The tenth address of the range, which Kubernetes distributions give to `kube-system/kube-dns`.
    pub fn dns_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ips.lock().expect("alloc lock poisoned").first + 9)
    }

    /// Marks what an existing (stored) Service holds as taken.
    pub fn restore(&self, svc: &Value) {
        let held = held_by(svc);
        if let Some(ip) = held.ip {
            self.ips
                .lock()
                .expect("alloc lock poisoned")
                .take(ip.into());
        }
        let mut ports = self.ports.lock().expect("alloc lock poisoned");
        for p in held.ports {
            ports.take(p as u32);
        }
    }

    /// Allocates what `svc` asks for and writes it into the object. `old` is what the Service
    /// held before (for updates): that is kept, not re-allocated. Returns what was newly taken, to
    /// release if the write fails.
    pub fn allocate(&self, svc: &mut Value, old: &Held) -> Result<Held, Vec<Cause>> {
        let mut taken = Held::default();
        let mut causes = Vec::new();
        let spec = svc.get_mut("spec").and_then(Value::as_object_mut);
        let Some(spec) = spec else { return Ok(taken) };
        let svc_type = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if svc_type != "ExternalName" {
            let requested = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match requested.as_str() {
                "None" => {}
                "" => {
                    let ip = old.ip.or_else(|| {
                        let ip = self
                            .ips
                            .lock()
                            .expect("alloc lock poisoned")
                            .next()
                            .map(Ipv4Addr::from);
                        taken.ip = ip;
                        ip
                    });
                    match ip {
                        Some(ip) => {
                            spec.insert("clusterIP".into(), Value::String(ip.to_string()));
                            spec.insert("clusterIPs".into(), serde_json::json!([ip.to_string()]));
                        }
                        None => causes.push(Cause::invalid(
                            "spec.clusterIPs",
                            &Value::Null,
                            "failed to allocate IP: range is full",
                        )),
                    }
                }
                text => match text.parse::<Ipv4Addr>() {
                    Ok(ip) if old.ip == Some(ip) => {}
                    Ok(ip) => {
                        let mut ips = self.ips.lock().expect("alloc lock poisoned");
                        if !ips.contains(ip.into()) {
                            causes.push(Cause::invalid(
                                "spec.clusterIPs",
                                &serde_json::json!([text]),
                                format!("failed to allocate IP {text}: the provided IP ({text}) is not in the valid range. The range of valid IPs is {}", self.cidr),
                            ));
                        } else if !ips.take(ip.into()) {
                            causes.push(Cause::invalid(
                                "spec.clusterIPs",
                                &serde_json::json!([text]),
                                format!("failed to allocate IP {text}: provided IP is already allocated"),
                            ));
                        } else {
                            taken.ip = Some(ip);
                        }
                    }
                    Err(_) => causes.push(Cause::invalid(
                        "spec.clusterIPs[0]",
                        &Value::String(text.into()),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )),
                },
            }
            if !requested.is_empty() {
                spec.entry("clusterIPs")
                    .or_insert_with(|| serde_json::json!([requested]));
            }
        }
        if matches!(svc_type.as_str(), "NodePort" | "LoadBalancer") {
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                let mut ranges = self.ports.lock().expect("alloc lock poisoned");
                for (i, port) in ports.iter_mut().enumerate() {
                    let Some(port) = port.as_object_mut() else {
                        continue;
                    };
                    match port.get("nodePort").and_then(Value::as_u64) {
                        Some(p) if old.ports.contains(&(p as u16)) => {}
                        Some(p) => {
                            let field = format!("spec.ports[{i}].nodePort");
                            if !ranges.contains(p as u32) {
                                causes.push(Cause::invalid(
                                    field,
                                    &Value::from(p),
                                    format!("provided port is not in the valid range. The range of valid ports is {}-{}", NODE_PORT_RANGE.0, NODE_PORT_RANGE.1),
                                ));
                            } else if !ranges.take(p as u32) {
                                causes.push(Cause::invalid(
                                    field,
                                    &Value::from(p),
                                    "provided port is already allocated",
                                ));
                            } else {
                                taken.ports.push(p as u16);
                            }
                        }
                        None => match ranges.next() {
                            Some(p) => {
                                taken.ports.push(p as u16);
                                port.insert("nodePort".into(), Value::from(p));
                            }
                            None => causes.push(Cause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &Value::Null,
                                "failed to allocate a nodePort: range is full",
                            )),
                        },
                    }
                }
            }
        }
        if causes.is_empty() {
            Ok(taken)
        } else {
            self.release(&taken);
            Err(causes)
        }
    }

    pub fn release(&self, held: &Held) {
        if let Some(ip) = held.ip {
            self.ips
                .lock()
                .expect("alloc lock poisoned")
                .release(ip.into());
        }
        let mut ports = self.ports.lock().expect("alloc lock poisoned");
        for p in &held.ports {
            ports.release(*p as u32);
        }
    }
}

/// What a stored Service holds.
pub fn held_by(svc: &Value) -> Held {
    let spec = svc.get("spec");
    let ip = spec
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Ipv4Addr>().ok());
    let ports = spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("nodePort")?.as_u64())
                .map(|p| p as u16)
                .collect()
        })
        .unwrap_or_default();
    Held { ip, ports }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allocates_and_releases() {
        let a = ServiceAllocator::new("10.96.0.0/28").unwrap();
        assert_eq!(a.first_ip(), Ipv4Addr::new(10, 96, 0, 1));
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        let held = a.allocate(&mut svc, &Held::default()).unwrap();
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(held_by(&svc), held);
        // The same IP asked for explicitly is taken.
        let mut dup = json!({"spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}});
        let causes = a.allocate(&mut dup, &Held::default()).unwrap_err();
        assert!(
            causes[0].message.contains("already allocated"),
            "{:?}",
            causes
        );
        a.release(&held);
        let mut again = json!({"spec": {"clusterIP": "10.96.0.1"}});
        assert!(a.allocate(&mut again, &Held::default()).is_ok());
    }

    #[test]
    fn headless_and_out_of_range() {
        let a = ServiceAllocator::new("10.96.0.0/12").unwrap();
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        assert_eq!(
            a.allocate(&mut headless, &Held::default()).unwrap(),
            Held::default()
        );
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let mut outside = json!({"spec": {"clusterIP": "192.168.0.1"}});
        assert!(a.allocate(&mut outside, &Held::default()).unwrap_err()[0]
            .message
            .contains("not in the valid range"));
        let mut bad_port =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert!(a.allocate(&mut bad_port, &Held::default()).is_err());
        // A failed allocation gives back what it took.
        let mut ok = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        assert_eq!(
            a.allocate(&mut ok, &Held::default()).unwrap().ports,
            vec![30000]
        );
    }

    #[test]
    fn exhausts_cleanly() {
        let a = ServiceAllocator::new("10.0.0.0/28").unwrap();
        for _ in 0..14 {
            a.allocate(&mut json!({"spec": {}}), &Held::default())
                .unwrap();
        }
        assert!(a
            .allocate(&mut json!({"spec": {}}), &Held::default())
            .is_err());
        assert!(ServiceAllocator::new("10.0.0.0/8").is_err());
        assert!(ServiceAllocator::new("nonsense").is_err());
    }

    #[test]
    fn updates_keep_what_they_hold() {
        let a = ServiceAllocator::new("10.96.0.0/24").unwrap();
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        let held = a.allocate(&mut svc, &Held::default()).unwrap();
        let mut updated = svc.clone();
        let new = a.allocate(&mut updated, &held).unwrap();
        assert_eq!(new, Held::default());
        assert_eq!(updated, svc);
    }
}
