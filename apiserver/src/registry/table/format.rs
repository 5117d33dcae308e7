//! Cell formatting shared by every kind: ages as Kubernetes prints them, label maps and
//! selectors in their canonical string form, container lists, and lenient JSON access (a
//! missing or mistyped field reads as empty, never as an error, as Go's zero values do).

use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch; negative before it.
pub type Millis = i64;

/// The JSON value at `path`, or `Null` when any step is missing.
pub fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return &Value::Null,
        }
    }
    cur
}

/// The string at `path`, or "" (Go's zero value).
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

/// The integer at `path`, or 0.
pub fn int_at(v: &Value, path: &[&str]) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}

/// The integer at `path`, or `None` when absent (a pointer field in Go).
pub fn opt_int_at(v: &Value, path: &[&str]) -> Option<i64> {
    at(v, path).as_i64()
}

/// Whether the field at `path` is present and not null (a non-nil pointer in Go).
pub fn is_set(v: &Value, path: &[&str]) -> bool {
    !at(v, path).is_null()
}

pub fn bool_at(v: &Value, path: &[&str]) -> bool {
    at(v, path).as_bool().unwrap_or(false)
}

/// The array at `path`, or an empty slice.
pub fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Number of entries of the map (or list) at `path`: `len()` of a Go map or slice.
pub fn len_at(v: &Value, path: &[&str]) -> i64 {
    let n = match at(v, path) {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Parses an RFC 3339 timestamp (`metav1.Time` or `metav1.MicroTime`); `None` for a missing or
/// malformed one, which Kubernetes would show as the zero time.
pub fn parse_time(s: &str) -> Option<Millis> {
    if s.is_empty() {
        return None;
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

pub fn time_at(v: &Value, path: &[&str]) -> Option<Millis> {
    parse_time(str_at(v, path))
}

/// `now` as milliseconds since the epoch.
pub fn millis(now: SystemTime) -> Millis {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Kubernetes' `translateTimestampSince`: the age of `ts`, or "<unknown>" without one.
pub fn since(ts: Option<Millis>, now: Millis) -> String {
    match ts {
        Some(t) => human_duration(now.saturating_sub(t)),
        None => "<unknown>".to_string(),
    }
}

/// Kubernetes' `duration.HumanDuration`: about two or three significant figures, "3m2s", "10m",
/// "2d3h", "5y". Integer division truncates toward zero, as Go's conversions do.
pub fn human_duration(d: Millis) -> String {
    let seconds = d / 1000;
    // Clocks a second apart still count as "now".
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d / 60_000;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d / 3_600_000;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{h}h", hours / 24)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{dy}d", hours / 24 / 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `labels.Set.String`: the sorted `k=v` pairs joined by commas.
pub fn label_set(map: &Value) -> String {
    let Some(m) = map.as_object() else {
        return String::new();
    };
    let mut pairs: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// `labels.FormatLabels`: like [`label_set`], "<none>" when empty.
pub fn format_labels(map: &Value) -> String {
    let s = label_set(map);
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    }
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions) as Kubernetes prints it:
/// requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`. An absent or empty
/// selector is "". Err for an unknown operator or an In/NotIn without values.
pub fn label_selector(sel: &Value) -> Result<String, ()> {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = at(sel, &["matchLabels"]).as_object() {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in arr_at(sel, &["matchExpressions"]) {
        let key = str_at(expr, &["key"]);
        let mut values: Vec<&str> = arr_at(expr, &["values"])
            .iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect();
        values.sort_unstable();
        let text = match str_at(expr, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: "<none>" when empty, "<error>" when malformed.
pub fn format_label_selector(sel: &Value) -> String {
    match label_selector(sel) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    }
}

/// The container names and images of a pod spec, each comma-joined (the wide CONTAINERS and
/// IMAGES columns).
pub fn container_cells(pod_spec: &Value) -> (String, String) {
    let containers = arr_at(pod_spec, &["containers"]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// Go's `net.JoinHostPort`: brackets around an address holding a colon (IPv6).
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A comma-joined list of at most three items, then " + N more...", "<unset>" when empty
/// (Kubernetes' `listWithMoreString`).
pub fn list_with_more(items: &[String]) -> String {
    const MAX: usize = 3;
    if items.is_empty() {
        return "<unset>".to_string();
    }
    let shown = items[..items.len().min(MAX)].join(",");
    if items.len() > MAX {
        format!("{shown} + {} more...", items.len() - MAX)
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: i64 = 1000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;
    const D: i64 = 24 * H;

    #[test]
    fn human_duration_boundaries() {
        let cases: &[(i64, &str)] = &[
            (-2 * S, "<invalid>"),
            (-1999, "0s"),
            (-S, "0s"),
            (-999, "0s"),
            (0, "0s"),
            (5 * S, "5s"),
            (119 * S + 999, "119s"),
            (2 * M, "2m"),
            (3 * M + 2 * S, "3m2s"),
            (9 * M + 59 * S, "9m59s"),
            (10 * M, "10m"),
            (10 * M + 30 * S, "10m"),
            (179 * M + 59 * S, "179m"),
            (3 * H, "3h"),
            (3 * H + 5 * M, "3h5m"),
            (7 * H + 59 * M, "7h59m"),
            (8 * H, "8h"),
            (47 * H + 59 * M, "47h"),
            (48 * H, "2d"),
            (2 * D + 3 * H, "2d3h"),
            (7 * D + 23 * H, "7d23h"),
            (8 * D, "8d"),
            (8 * D + 5 * H, "8d"),
            (729 * D, "729d"),
            (730 * D, "2y"),
            (731 * D, "2y1d"),
            (8 * 365 * D - D, "7y364d"),
            (8 * 365 * D, "8y"),
            (20 * 365 * D + 100 * D, "20y"),
        ];
        for &(d, want) in cases {
            assert_eq!(human_duration(d), want, "for {d} ms");
        }
    }

    #[test]
    fn since_parses_rfc3339_and_micro_time() {
        let now = parse_time("2024-05-01T12:00:00Z").expect("now");
        let created = parse_time("2024-05-01T11:56:58Z");
        assert_eq!(since(created, now), "3m2s");
        let micro = parse_time("2024-05-01T11:59:58.500000Z");
        assert_eq!(since(micro, now), "1s");
        assert_eq!(since(parse_time(""), now), "<unknown>");
        assert_eq!(since(parse_time("yesterday"), now), "<unknown>");
        assert_eq!(
            millis(UNIX_EPOCH + std::time::Duration::from_millis(1500)),
            1500
        );
    }

    #[test]
    fn labels_and_selectors() {
        assert_eq!(format_labels(&json!({"b": "2", "a": "1"})), "a=1,b=2");
        assert_eq!(format_labels(&json!({})), "<none>");
        assert_eq!(format_labels(&Value::Null), "<none>");
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"}
            ]
        });
        assert_eq!(
            format_label_selector(&sel),
            "app=web,!canary,env notin (prod),tier in (a,b),zone"
        );
        assert_eq!(format_label_selector(&json!({})), "<none>");
        assert_eq!(format_label_selector(&Value::Null), "<none>");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Near"}]});
        assert_eq!(format_label_selector(&bad), "<error>");
    }

    #[test]
    fn lists_and_hosts() {
        let items: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(list_with_more(&items), "a,b,c + 2 more...");
        assert_eq!(list_with_more(&items[..3]), "a,b,c");
        assert_eq!(list_with_more(&[]), "<unset>");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        let spec = json!({"containers": [
            {"name": "app", "image": "nginx:1.27"},
            {"name": "sidecar", "image": "envoy"}
        ]});
        assert_eq!(
            container_cells(&spec),
            ("app,sidecar".to_string(), "nginx:1.27,envoy".to_string())
        );
    }
}
