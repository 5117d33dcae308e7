//! A container's environment (Kubernetes' `makeEnvironmentVariables`): service links, envFrom,
//! env with `$(VAR)` expansion and `valueFrom`, on top of the image's `Env`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use super::expand::expand;
use super::fieldpath::{field_value, resource_container, resource_value};
use super::{ObjectSource, PodFacts, PodSpecError};
use crate::image::ImageConfig;

/// The container's full environment, `NAME=value`: the image's `Env` first, then what the pod
/// defines (see [`pod_environment`]) replacing same-named image variables in place.
pub async fn environment(
    src: &impl ObjectSource,
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    facts: &PodFacts,
) -> Result<Vec<String>, PodSpecError> {
    let vars = pod_environment(src, pod, container, facts).await?;
    Ok(merge_image_env(image, &vars))
}

/// `image.env` with `vars` laid over it: a variable the image already has keeps its position
/// and takes the new value (containerd's replace-or-append); new ones are appended in order.
pub fn merge_image_env(image: &ImageConfig, vars: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = image.env.clone();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, entry) in out.iter().enumerate() {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        index.insert(name.to_string(), i);
    }
    for (name, value) in vars {
        let entry = format!("{name}={value}");
        match index.get(name) {
            Some(&i) => out[i] = entry,
            None => {
                index.insert(name.clone(), out.len());
                out.push(entry);
            }
        }
    }
    out
}

/// An ordered map: a later definition replaces the value but keeps the first position.
#[derive(Default)]
struct EnvList {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.index.get(name).map(|&i| self.vars[i].1.clone())
    }
}

/// What the pod defines for the container, in order: service-link variables (sorted by name),
/// then `envFrom` sources, then `env`, later definitions overriding earlier ones. `$(VAR)` in
/// `env[].value` sees only these variables, never the image's, as in Kubernetes.
pub async fn pod_environment(
    src: &impl ObjectSource,
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, PodSpecError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut env = EnvList::default();
    for (name, value) in service_env(src, ns, links).await? {
        env.set(name, value);
    }
    let mut objects = Objects::default();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let data: BTreeMap<String, String> = if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match objects.config_map(src, ns, &r.name).await? {
                Some(cm) => cm.data.clone().unwrap_or_default(),
                None if optional => continue,
                None => return Err(not_found("configmap", ns, &r.name)),
            }
        } else if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match objects.secret(src, ns, &r.name).await? {
                Some(s) => secret_data(s)
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect(),
                None if optional => continue,
                None => return Err(not_found("secret", ns, &r.name)),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            let name = format!("{prefix}{key}");
            // Kubernetes skips (and reports in an event) keys that are not valid variable names.
            if is_env_var_name(&name) {
                env.set(name, value);
            }
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or("");
        let value = if !literal.is_empty() {
            expand(literal, |name| env.get(name))
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_value(f, pod, facts)?
            } else if let Some(r) = &from.resource_field_ref {
                let target = resource_container(r, pod, Some(container))?;
                resource_value(r, target, facts)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let cm = match objects.config_map(src, ns, &r.name).await? {
                    Some(cm) => cm,
                    None if optional => continue,
                    None => return Err(not_found("configmap", ns, &r.name)),
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => return Err(missing_key("ConfigMap", ns, &r.name, &r.key)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let secret = match objects.secret(src, ns, &r.name).await? {
                    Some(s) => s,
                    None if optional => continue,
                    None => return Err(not_found("secret", ns, &r.name)),
                };
                match secret_data(secret).get(&r.key) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None => return Err(missing_key("Secret", ns, &r.name, &r.key)),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.vars)
}

/// Objects fetched once per call, as the kubelet's per-call maps do.
#[derive(Default)]
struct Objects {
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Objects {
    async fn config_map(
        &mut self,
        src: &impl ObjectSource,
        ns: &str,
        name: &str,
    ) -> Result<Option<&ConfigMap>, PodSpecError> {
        if !self.config_maps.contains_key(name) {
            let cm = src.config_map(ns, name).await?;
            self.config_maps.insert(name.to_string(), cm);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    async fn secret(
        &mut self,
        src: &impl ObjectSource,
        ns: &str,
        name: &str,
    ) -> Result<Option<&Secret>, PodSpecError> {
        if !self.secrets.contains_key(name) {
            let s = src.secret(ns, name).await?;
            self.secrets.insert(name.to_string(), s);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }
}

pub(crate) fn not_found(kind: &'static str, ns: &str, name: &str) -> PodSpecError {
    PodSpecError::NotFound {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

fn missing_key(kind: &'static str, ns: &str, name: &str, key: &str) -> PodSpecError {
    PodSpecError::MissingKey {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        key: key.to_string(),
    }
}

/// A Secret's bytes by key; `stringData` (normally folded into `data` by the API server) wins.
pub(crate) fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// Kubernetes' relaxed environment variable names: printable ASCII except `=`.
fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// Service-link variables: the `kubernetes` Service of `default` always, and with
/// `enableServiceLinks` every Service of the pod's namespace that has a cluster IP.
async fn service_env(
    src: &impl ObjectSource,
    ns: &str,
    links: bool,
) -> Result<Vec<(String, String)>, PodSpecError> {
    let mut chosen: BTreeMap<String, Service> = BTreeMap::new();
    let defaults = src.services("default").await?;
    for s in defaults {
        if s.metadata.name.as_deref() == Some("kubernetes") {
            chosen.insert("kubernetes".into(), s);
        }
    }
    if links {
        for s in src.services(ns).await? {
            if let Some(name) = s.metadata.name.clone() {
                chosen.insert(name, s);
            }
        }
    }
    let mut vars: Vec<(String, String)> = chosen.values().flat_map(service_vars).collect();
    vars.sort();
    Ok(vars)
}

/// Kubernetes' `envvars.FromServices` for one Service: `FOO_SERVICE_HOST`, `FOO_SERVICE_PORT`
/// (+ `_<NAME>` per named port) and Docker-link style `FOO_PORT_80_TCP...`.
fn service_vars(service: &Service) -> Vec<(String, String)> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let ip = spec.cluster_ip.as_deref().unwrap_or("");
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ip.is_empty() || ip == "None" || ports.is_empty() {
        return Vec::new();
    }
    let prefix = env_name(service.metadata.name.as_deref().unwrap_or(""));
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()),
    ];
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(n)),
                p.port.to_string(),
            ));
        }
    }
    let host_port = |port: i32| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{}", host_port(p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
    out
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podspec::testutil::{block_on, facts, MapSource};
    use serde_json::json;

    fn pod(containers: serde_json::Value, extra: serde_json::Value) -> Pod {
        let mut spec = json!({"containers": containers});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "uid-1", "labels": {"app": "x"}},
            "spec": spec
        }))
        .unwrap()
    }

    fn env_of(src: &MapSource, p: &Pod, image: &ImageConfig) -> Result<Vec<String>, PodSpecError> {
        let c = &p.spec.as_ref().unwrap().containers[0];
        block_on(environment(src, p, c, image, &facts()))
    }

    #[test]
    fn order_expansion_and_overrides() {
        let src = MapSource::default().config_map(
            "ns",
            "cfg",
            json!({"A": "from-cm", "B": "b", "bad=key": "x"}),
        );
        let p = pod(
            json!([{"name": "c",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}, {"configMapRef": {"name": "cfg"}}],
            "env": [
                {"name": "PATH", "value": "/custom"},
                {"name": "A", "value": "own-$(B)"},
                {"name": "C", "value": "$(A)|$$(A)|$(MISSING)|$(LATER)|$(HOME)"},
                {"name": "LATER", "value": "l"},
                {"name": "EMPTY", "value": ""}
            ]}]),
            json!({"enableServiceLinks": false}),
        );
        let image = ImageConfig {
            env: vec!["PATH=/usr/bin".into(), "HOME=/root".into()],
            ..Default::default()
        };
        let env = env_of(&src, &p, &image).unwrap();
        assert_eq!(
            env,
            vec![
                "PATH=/custom",
                "HOME=/root",
                "P_A=from-cm",
                "P_B=b",
                "A=own-b",
                "B=b",
                "C=own-b|$(A)|$(MISSING)|$(LATER)|$(HOME)",
                "LATER=l",
                "EMPTY=",
            ]
        );
    }

    #[test]
    fn value_from_sources() {
        let src = MapSource::default()
            .config_map("ns", "cfg", json!({"k": "v"}))
            .secret("ns", "sec", json!({"pw": "hunter2"}));
        let p = pod(
            json!([{"name": "c",
            "resources": {"requests": {"memory": "1Mi"}},
            "env": [
                {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                {"name": "OPT1", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "OPT2", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nokey", "optional": true}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Ki"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
            ]}]),
            json!({"enableServiceLinks": false}),
        );
        let env = env_of(&src, &p, &ImageConfig::default()).unwrap();
        assert_eq!(
            env,
            vec![
                "CM=v",
                "S=hunter2",
                "NAME=p",
                "APP=x",
                "IP=10.1.0.7",
                "MEM=1024",
                "CPU=4"
            ]
        );
    }

    #[test]
    fn missing_objects_are_kubernetes_errors() {
        let src = MapSource::default().config_map("ns", "cfg", json!({"k": "v"}));
        let case = |env: serde_json::Value| {
            let p = pod(json!([{"name": "c", "env": env}]), json!({}));
            env_of(&src, &p, &ImageConfig::default())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            case(
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "k"}}}])
            ),
            "configmap \"x\" not found"
        );
        assert_eq!(
            case(
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey"}}}])
            ),
            "couldn't find key nokey in ConfigMap ns/cfg"
        );
        assert_eq!(
            case(json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])),
            "secret \"s\" not found"
        );
        let p = pod(
            json!([{"name": "c", "envFrom": [{"secretRef": {"name": "gone"}}]}]),
            json!({}),
        );
        assert_eq!(
            env_of(&src, &p, &ImageConfig::default())
                .unwrap_err()
                .to_string(),
            "secret \"gone\" not found"
        );
        let p = pod(
            json!([{"name": "c", "envFrom": [{"secretRef": {"name": "gone", "optional": true}}]}]),
            json!({}),
        );
        assert!(env_of(&src, &p, &ImageConfig::default()).is_ok());
    }

    #[test]
    fn service_links() {
        let svc = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| {
            serde_json::from_value::<Service>(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports}
            }))
            .unwrap()
        };
        let src = MapSource::default()
            .service(svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443}]),
            ))
            .service(svc("default", "other", "10.96.0.9", json!([{"port": 1}])))
            .service(svc(
                "ns",
                "my-db",
                "10.96.0.2",
                json!([{"port": 5432}, {"name": "metrics", "port": 9000, "protocol": "UDP"}]),
            ))
            .service(svc("ns", "headless", "None", json!([{"port": 80}])));
        let p = pod(
            json!([{"name": "c", "env": [{"name": "MY_DB_SERVICE_HOST", "value": "override"}]}]),
            json!({}),
        );
        let env = env_of(&src, &p, &ImageConfig::default()).unwrap();
        let expected = [
            "KUBERNETES_PORT=tcp://10.96.0.1:443",
            "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
            "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
            "KUBERNETES_PORT_443_TCP_PORT=443",
            "KUBERNETES_PORT_443_TCP_PROTO=tcp",
            "KUBERNETES_SERVICE_HOST=10.96.0.1",
            "KUBERNETES_SERVICE_PORT=443",
            "KUBERNETES_SERVICE_PORT_HTTPS=443",
            "MY_DB_PORT=tcp://10.96.0.2:5432",
            "MY_DB_PORT_5432_TCP=tcp://10.96.0.2:5432",
            "MY_DB_PORT_5432_TCP_ADDR=10.96.0.2",
            "MY_DB_PORT_5432_TCP_PORT=5432",
            "MY_DB_PORT_5432_TCP_PROTO=tcp",
            "MY_DB_PORT_9000_UDP=udp://10.96.0.2:9000",
            "MY_DB_PORT_9000_UDP_ADDR=10.96.0.2",
            "MY_DB_PORT_9000_UDP_PORT=9000",
            "MY_DB_PORT_9000_UDP_PROTO=udp",
            "MY_DB_SERVICE_HOST=override",
            "MY_DB_SERVICE_PORT=5432",
            "MY_DB_SERVICE_PORT_METRICS=9000",
        ];
        assert_eq!(env, expected);
        // Without service links only the master service remains.
        let p = pod(json!([{"name": "c"}]), json!({"enableServiceLinks": false}));
        let env = env_of(&src, &p, &ImageConfig::default()).unwrap();
        assert_eq!(env.len(), 8);
        assert!(env.iter().all(|e| e.starts_with("KUBERNETES_")));
    }
}
