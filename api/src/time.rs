//! Kubernetes' timestamp formats: `metav1.Time` (RFC 3339, UTC, whole seconds) and
//! `metav1.MicroTime` (six fractional digits), as the API writes them.

use time::{OffsetDateTime, UtcOffset};

/// `metav1.Time`: `2006-01-02T15:04:05Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    format(t, false)
}

/// `metav1.MicroTime`: `2006-01-02T15:04:05.000000Z`.
pub fn format_micro_time(t: OffsetDateTime) -> String {
    format(t, true)
}

fn format(t: OffsetDateTime, micro: bool) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if micro {
        s.push_str(&format!(".{:06}", t.microsecond()));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_formats() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.123456789 +02:00);
        assert_eq!(format_time(t), "2026-01-02T01:04:05Z");
        assert_eq!(format_micro_time(t), "2026-01-02T01:04:05.123456Z");
        let early = time::macros::datetime!(0999-12-31 23:59:59 UTC);
        assert_eq!(format_time(early), "0999-12-31T23:59:59Z");
    }
}
