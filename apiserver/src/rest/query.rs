//! Query parameters of API requests, percent-decoded and validated.

use crate::status::ApiError;

/// The query parameters the API understands.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub dry_run: bool,
    pub field_validation: Option<String>,
    pub field_manager: Option<String>,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub orphan_dependents: Option<bool>,
    pub include_object: Option<String>,
}

/// Decodes `%XX` escapes and `+` (form encoding, as Go's url.ParseQuery does).
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("invalid URL escape in query {s:?}"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not UTF-8"))
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value {v:?} for {name}: want a boolean"
        ))),
    }
}

fn parse_int<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ApiError> {
    v.parse().map_err(|_| {
        ApiError::bad_request(format!("invalid value {v:?} for {name}: want an integer"))
    })
}

impl Query {
    pub fn parse(raw: &str) -> Result<Query, ApiError> {
        let mut q = Query::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k)?, percent_decode(v)?);
            match k.as_str() {
                "labelSelector" => q.label_selector = Some(v),
                "fieldSelector" => q.field_selector = Some(v),
                "limit" => q.limit = parse_int::<i64>(&k, &v)?.max(0) as usize,
                "continue" => q.continue_token = Some(v).filter(|s| !s.is_empty()),
                "resourceVersion" => q.resource_version = Some(v),
                "resourceVersionMatch" => q.resource_version_match = Some(v).filter(|s| !s.is_empty()),
                "watch" => q.watch = parse_bool(&k, &v)?,
                "timeoutSeconds" => q.timeout_seconds = Some(parse_int(&k, &v)?),
                "allowWatchBookmarks" => q.allow_watch_bookmarks = parse_bool(&k, &v)?,
                "sendInitialEvents" => q.send_initial_events = Some(parse_bool(&k, &v)?),
                "dryRun" => match v.as_str() {
                    "All" => q.dry_run = true,
                    "" => {}
                    other => return Err(ApiError::bad_request(format!("Invalid dry run value: {other}; accepted values: [All]"))),
                },
                "fieldValidation" => match v.as_str() {
                    "Strict" | "Warn" | "Ignore" | "" => q.field_validation = Some(v).filter(|s| !s.is_empty()),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "fieldValidation parameter unsupported: {other}, must be one of: Ignore, Warn, Strict"
                        )))
                    }
                },
                "fieldManager" => q.field_manager = Some(v),
                "propagationPolicy" => q.propagation_policy = Some(v),
                "gracePeriodSeconds" => q.grace_period_seconds = Some(parse_int(&k, &v)?),
                "orphanDependents" => q.orphan_dependents = Some(parse_bool(&k, &v)?),
                "includeObject" => q.include_object = Some(v),
                // Accepted and ignored, as by Kubernetes for these: pretty printing, exact (gone),
                // export (gone), force, and client-side knobs that reach the server.
                _ => {}
            }
        }
        Ok(q)
    }

    /// The `fieldValidation` in force (Kubernetes' default is Warn).
    pub fn field_validation(&self) -> &str {
        self.field_validation.as_deref().unwrap_or("Warn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectl_queries() {
        let q = Query::parse("labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&limit=500&watch=true&dryRun=All&fieldValidation=Strict").unwrap();
        assert_eq!(q.label_selector.as_deref(), Some("app=web,tier in (a,b)"));
        assert_eq!(q.limit, 500);
        assert!(q.watch && q.dry_run);
        assert_eq!(q.field_validation(), "Strict");
        assert_eq!(Query::parse("").unwrap().field_validation(), "Warn");
    }

    #[test]
    fn bad_values_are_400() {
        for raw in [
            "limit=x",
            "watch=maybe",
            "dryRun=Some",
            "fieldValidation=Loose",
            "labelSelector=%zz",
            "timeoutSeconds=-",
        ] {
            assert_eq!(Query::parse(raw).unwrap_err().code, 400, "{raw}");
        }
    }
}
