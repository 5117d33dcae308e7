//! Authentication (client certificates, bearer tokens) and the authorization seam.

use std::collections::HashMap;
use std::path::Path;

/// Who is calling, as Kubernetes' `user.Info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Every authenticated user is also in `system:authenticated`, as in Kubernetes.
    fn new(name: String, uid: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        UserInfo { name, uid, groups }
    }
}

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token file {path} could not be read")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: &'static str,
    },
}

/// Bearer tokens from a Kubernetes static token file: `token,user,uid[,"group1,group2"]`.
#[derive(Debug, Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| AuthError::Parse {
            path: path.display().to_string(),
            line,
            reason,
        })
    }

    fn parse(text: &str) -> Result<Self, (usize, &'static str)> {
        let mut tokens = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err((i + 1, "want at least token,user,uid"));
            }
            if fields[0].is_empty() || fields[1].is_empty() {
                return Err((i + 1, "token and user must not be empty"));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                fields[0].clone(),
                UserInfo::new(fields[1].clone(), fields[2].clone(), groups),
            );
        }
        Ok(TokenAuthenticator { tokens })
    }

    pub fn authenticate(&self, authorization: &str) -> Option<UserInfo> {
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))?;
        self.tokens.get(token.trim()).cloned()
    }
}

/// Splits one CSV line, honouring double quotes (the groups field is quoted).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    out.into_iter().map(|f| f.trim().to_string()).collect()
}

/// The identity in a verified client certificate: CN is the user, each O a group.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(UserInfo::new(name, String::new(), groups))
}

/// What a request wants to do, as Kubernetes' authorizer attributes.
#[derive(Debug)]
pub struct Attributes<'a> {
    pub user: &'a UserInfo,
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// Set for non-resource requests such as `/metrics`.
    pub path: &'a str,
}

/// The authorization seam: the node authorizer and RBAC will implement it.
pub trait Authorizer: Send + Sync {
    /// `Err(reason)` denies with 403.
    fn authorize(&self, attrs: &Attributes<'_>) -> Result<(), String>;
}

/// Every authenticated user may do everything — until RBAC and the node authorizer exist.
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, _attrs: &Attributes<'_>) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_parses_kubernetes_format() {
        let auth = TokenAuthenticator::parse(
            "# comment\nsecret1,alice,1001,\"dev,ops\"\nsecret2,bob,1002\n",
        )
        .expect("parse");
        let alice = auth.authenticate("Bearer secret1").expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        assert_eq!(auth.authenticate("Bearer secret2").unwrap().uid, "1002");
        assert!(auth.authenticate("Bearer nope").is_none());
        assert!(auth.authenticate("Basic secret1").is_none());
    }

    #[test]
    fn token_file_rejects_short_lines() {
        assert_eq!(
            TokenAuthenticator::parse("abc,def").unwrap_err(),
            (1, "want at least token,user,uid")
        );
    }
}
