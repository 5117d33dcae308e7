//! The shape of the descriptor table in `table.rs`, and look-ups into it.

use super::table::{MESSAGES, ROOTS};

/// A protobuf message: its full name and its fields, sorted by number.
// The name is for people and tests reading the table; decoding needs only the fields.
#[allow(dead_code)]
pub(super) struct Message(pub &'static str, pub &'static [Field]);

/// One field: number, JSON name, type, cardinality.
pub(super) struct Field(pub u32, pub &'static str, pub Ty, pub Card);

/// A field's type as the decoder sees it.
// Every proto2 scalar is decodable; today's table happens not to use them all.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Str,
    /// Base64 in JSON.
    Bytes,
    Bool,
    I32,
    I64,
    U32,
    U64,
    F64,
    F32,
    /// Another message, by index into `MESSAGES`.
    Msg(u16),
    /// meta/v1 Time: RFC 3339, whole seconds.
    Time,
    /// meta/v1 MicroTime: RFC 3339 with six fractional digits.
    MicroTime,
    /// meta/v1 Duration: Go's duration string.
    Duration,
    /// meta/v1 FieldsV1: raw JSON.
    FieldsV1,
    /// api/resource Quantity: its canonical string.
    Quantity,
    /// util/intstr IntOrString: a number or a string.
    IntOrString,
    /// runtime RawExtension: embedded JSON.
    RawExtension,
}

/// How often a field occurs, and how its value lands in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Card {
    /// Kept whenever present on the wire, zero values included (Go pointers, non-omitempty).
    Opt,
    /// A non-pointer Go scalar tagged omitempty: its zero value is left out of JSON.
    OmitZero,
    /// A repeated field: a JSON array.
    Rep,
    /// `map<string, Ty>`: repeated entries {1: key, 2: value}, a JSON object.
    Map,
    /// An embedded Go struct: its fields are merged into the parent object.
    Inline,
}

/// A message a request body may carry: apiVersion, kind, index into `MESSAGES`.
pub(super) struct Root(pub &'static str, pub &'static str, pub u16);

#[cfg(test)]
pub(super) use super::table::MESSAGES as MESSAGES_FOR_TEST;

pub(super) fn message(index: u16) -> Option<&'static Message> {
    MESSAGES.get(usize::from(index))
}

/// The message for an envelope's apiVersion and kind. DeleteOptions is registered in every
/// group version, so any apiVersion names meta/v1's.
pub(super) fn root(api_version: &str, kind: &str) -> Option<&'static Message> {
    ROOTS
        .iter()
        .find(|Root(v, k, _)| *k == kind && (*v == api_version || kind == "DeleteOptions"))
        .and_then(|Root(_, _, i)| message(*i))
}

impl Message {
    pub(super) fn field(&self, number: u32) -> Option<&'static Field> {
        let fields: &'static [Field] = self.1;
        fields
            .binary_search_by_key(&number, |f| f.0)
            .ok()
            .map(|i| &fields[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, m) in MESSAGES.iter().enumerate() {
            assert!(
                m.1.windows(2).all(|w| w[0].0 < w[1].0),
                "{} fields unsorted",
                m.0
            );
            if i > 0 {
                assert!(MESSAGES[i - 1].0 < m.0, "messages unsorted at {}", m.0);
            }
            for f in m.1 {
                if let Ty::Msg(j) = f.2 {
                    assert!(message(j).is_some(), "{}.{} dangles", m.0, f.1);
                }
            }
        }
    }

    #[test]
    fn roots_cover_every_served_kind() {
        for info in crate::registry::RESOURCES {
            // Written only by controllers, in JSON; a protobuf body for it gets a 415.
            if info.kind == "ControllerRevision" {
                continue;
            }
            let m = root(&info.api_version(), info.kind).expect(info.kind);
            assert!(m.0.ends_with(&format!(".{}", info.kind)), "{}", m.0);
        }
        assert_eq!(
            root("apps/v1", "DeleteOptions").unwrap().0,
            "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions"
        );
        assert_eq!(
            root("autoscaling/v1", "Scale").unwrap().0,
            "k8s.io.api.autoscaling.v1.Scale"
        );
        assert_eq!(
            root("v1", "Binding").unwrap().0,
            "k8s.io.api.core.v1.Binding"
        );
        assert!(root("apps/v1", "Pod").is_none());
    }

    #[test]
    fn field_lookup() {
        let m = root("apps/v1", "Deployment").unwrap();
        let spec = m.field(2).unwrap();
        assert_eq!(spec.1, "spec");
        let Ty::Msg(i) = spec.2 else {
            panic!("spec is a message")
        };
        let replicas = message(i).unwrap().field(1).unwrap();
        assert_eq!(
            (replicas.1, replicas.2, replicas.3),
            ("replicas", Ty::I32, Card::Opt)
        );
        assert!(m.field(99).is_none());
    }
}
