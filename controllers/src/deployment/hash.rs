//! The pod-template-hash that names a Deployment's ReplicaSets, and template equality that
//! ignores it (Kubernetes' `ComputeHash` and `EqualIgnoreHash`).
//!
//! Kubernetes hashes a `spew` dump of the Go struct; that byte stream cannot be reproduced
//! outside Go, so the input here is the template's canonical JSON (sorted keys, empty values
//! dropped). Everything after it is Kubernetes': FNV-1a 32, the collision count appended as
//! eight little-endian bytes, the decimal sum encoded with `SafeEncodeString`'s alphabet.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The label (on ReplicaSets, their selectors and their pods) that tells revisions apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// apimachinery's `rand.SafeEncodeString` alphabet: no vowels, no 0/1/3 (no words, no
/// look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits.
pub fn fnv32a(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Maps every byte of `s` into the safe alphabet.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The pod-template-hash of `template` with the Deployment's `status.collisionCount`.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let canonical = canonical(template);
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    let mut hash = fnv32a(&bytes, FNV_OFFSET);
    if let Some(count) = collision_count {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hash = fnv32a(&buf, hash);
    }
    safe_encode(&hash.to_string())
}

/// Whether two templates are the same apart from their pod-template-hash labels, with absent
/// and empty fields equal (apimachinery's semantic equality).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical(&without_hash(a)) == canonical(&without_hash(b))
}

/// `template` without the pod-template-hash label (what `kubectl rollout undo` writes back).
pub fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    t
}

fn canonical(template: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    prune(&mut v);
    v
}

/// Drops nulls, empty arrays and empty objects, recursively; true if `v` itself is empty.
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune(item);
            }
            items.is_empty()
        }
        Value::Object(map) => {
            map.retain(|_, child| !prune(child));
            map.is_empty()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn fnv_and_alphabet_match_their_definitions() {
        assert_eq!(fnv32a(b"", FNV_OFFSET), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a", FNV_OFFSET), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar", FNV_OFFSET), 0xbf9c_f968);
        // '0' is byte 48, 48 % 27 = 21 → '4'; '9' is 57 % 27 = 3 → 'f'.
        assert_eq!(safe_encode("09"), "4f");
    }

    #[test]
    fn hash_is_stable_distinct_and_moved_by_collisions() {
        let a = compute_hash(&template("nginx:1.25"), None);
        assert_eq!(a, compute_hash(&template("nginx:1.25"), None));
        assert_ne!(a, compute_hash(&template("nginx:1.26"), None));
        assert_ne!(a, compute_hash(&template("nginx:1.25"), Some(1)));
        assert!(a.bytes().all(|b| ALPHANUMS.contains(&b)), "{a}");
        assert!((1..=10).contains(&a.len()), "{a}");
    }

    #[test]
    fn equality_ignores_the_hash_label_and_empty_fields() {
        let a = template("nginx:1.25");
        let mut b = a.clone();
        b.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "abc".into());
        b.metadata.as_mut().unwrap().annotations = Some(BTreeMap::new());
        assert!(equal_ignore_hash(&a, &b));
        assert!(!equal_ignore_hash(&a, &template("nginx:1.26")));
        let stripped = without_hash(&b);
        assert_eq!(
            stripped.metadata.unwrap().labels,
            a.metadata.clone().unwrap().labels
        );
    }
}
