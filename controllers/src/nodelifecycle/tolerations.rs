//! Pure NoExecute rules (Kubernetes' taint eviction controller): whether a toleration matches a
//! taint, and when a pod on a tainted node must go.

use berth_api::well_known::taints::EFFECT_NO_EXECUTE;
use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Kubernetes' `Toleration.ToleratesTaint`: an empty effect matches every effect, an empty key
/// every key; `Exists` ignores the value, `Equal` (the default) compares it.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// What the NoExecute taints mean for one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// No NoExecute taint, or all tolerated without a time limit.
    Never,
    /// A NoExecute taint is not tolerated (or tolerated for ≤ 0 s): delete the pod now.
    Now,
    /// Tolerated for a while: delete the pod at this time, unless the taints go first.
    At(Timestamp),
}

/// When a pod with `tolerations` must leave a node with `taints`. Each NoExecute taint is
/// matched by the first toleration that tolerates it (as Kubernetes' `GetMatchingTolerations`)
/// and the smallest `tolerationSeconds` among those wins, counted from `since` — when this
/// controller first saw the pod under NoExecute taints, as in Kubernetes (not the taint's
/// `timeAdded`, which has whole-second precision and another host's clock).
pub fn eviction(tolerations: &[Toleration], taints: &[Taint], since: Timestamp) -> Eviction {
    let mut shortest: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == EFFECT_NO_EXECUTE) {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        let Some(seconds) = toleration.toleration_seconds else {
            continue;
        };
        if seconds <= 0 {
            return Eviction::Now;
        }
        shortest = Some(shortest.map_or(seconds, |s| s.min(seconds)));
    }
    shortest.map_or(Eviction::Never, |s| {
        Eviction::At(
            since
                .checked_add(SignedDuration::from_secs(s))
                .unwrap_or(Timestamp::MAX),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn taint(key: &str, value: Option<&str>, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: added.map(|s| Time(at(s))),
        }
    }

    fn tol(key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: Some(op.into()),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        }
    }

    fn secs(mut t: Toleration, s: i64) -> Toleration {
        t.toleration_seconds = Some(s);
        t
    }

    #[test]
    fn matching() {
        let t = taint("k", Some("v"), "NoExecute", None);
        assert!(tolerates(&tol(Some("k"), "Exists", None, None), &t));
        assert!(tolerates(
            &tol(Some("k"), "Equal", Some("v"), Some("NoExecute")),
            &t
        ));
        assert!(!tolerates(&tol(Some("k"), "Equal", Some("w"), None), &t));
        assert!(!tolerates(
            &tol(Some("k"), "Exists", None, Some("NoSchedule")),
            &t
        ));
        assert!(!tolerates(&tol(Some("j"), "Exists", None, None), &t));
        assert!(
            tolerates(&tol(None, "Exists", None, None), &t),
            "tolerate everything"
        );
        assert!(!tolerates(&tol(Some("k"), "Gt", Some("v"), None), &t));
        let bare = taint("k", None, "NoExecute", None);
        assert!(tolerates(&tol(Some("k"), "", None, None), &bare));
    }

    #[test]
    fn deadlines() {
        let unreachable = [taint("u", None, "NoExecute", Some(100))];
        let no_schedule = [taint("x", None, "NoSchedule", None)];
        let exists = |k| tol(Some(k), "Exists", None, None);
        // Only NoExecute taints count.
        assert_eq!(eviction(&[], &no_schedule, at(0)), Eviction::Never);
        assert_eq!(eviction(&[], &unreachable, at(0)), Eviction::Now);
        assert_eq!(
            eviction(&[exists("u")], &unreachable, at(0)),
            Eviction::Never
        );
        assert_eq!(
            eviction(&[secs(exists("u"), 30)], &unreachable, at(10)),
            Eviction::At(at(40)),
            "from when the pod was first seen tainted, not timeAdded"
        );
        assert_eq!(
            eviction(&[secs(exists("u"), 0)], &unreachable, at(0)),
            Eviction::Now
        );
        // The shortest limit of several taints wins; an untolerated one evicts now.
        let both = [unreachable[0].clone(), taint("n", None, "NoExecute", None)];
        assert_eq!(
            eviction(
                &[secs(exists("u"), 30), secs(exists("n"), 5)],
                &both,
                at(50)
            ),
            Eviction::At(at(55))
        );
        assert_eq!(
            eviction(&[secs(exists("u"), 30)], &both, at(50)),
            Eviction::Now
        );
        // The first matching toleration decides: a forever one ahead of a limited one.
        assert_eq!(
            eviction(&[exists("u"), secs(exists("u"), 1)], &unreachable, at(0)),
            Eviction::Never
        );
    }
}
