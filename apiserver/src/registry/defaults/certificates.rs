//! What the server records on a new CertificateSigningRequest: who asked for it. Like
//! Kubernetes' CSR create strategy, the requester's identity overwrites whatever the client put
//! in `spec.username`, `spec.uid`, `spec.groups` and `spec.extra`, so approvers can trust them.

use serde_json::{json, Value};

use crate::auth::UserInfo;

/// Sets the requester fields of `csr`'s spec from `user` (none for the server's own creates).
pub fn set_requestor(csr: &mut Value, user: Option<&UserInfo>) {
    let Some(spec) = csr.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["username", "uid", "groups", "extra"] {
        spec.remove(field);
    }
    if let Some(user) = user {
        spec.insert("username".into(), json!(user.name));
        if !user.uid.is_empty() {
            spec.insert("uid".into(), json!(user.uid));
        }
        spec.insert("groups".into(), json!(user.groups));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requester_is_the_authenticated_user() {
        let mut csr = json!({"spec": {"username": "system:node:forged", "groups": ["system:masters"],
            "signerName": "x/y"}});
        let user = UserInfo {
            name: "system:bootstrap:abcdef".into(),
            uid: String::new(),
            groups: vec!["system:bootstrappers".into(), "system:authenticated".into()],
        };
        set_requestor(&mut csr, Some(&user));
        assert_eq!(
            csr["spec"],
            json!({"username": "system:bootstrap:abcdef", "signerName": "x/y",
                "groups": ["system:bootstrappers", "system:authenticated"]})
        );
    }
}
