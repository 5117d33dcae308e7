//! Controller expectations (kube-controller-manager's `ControllerExpectations`): after a
//! controller creates or deletes pods for a key, it waits until its informer has observed those
//! changes before acting on that key again. Without this, a reconcile that runs before the
//! informer caught up would count too few pods and create duplicates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long unmet expectations are trusted; after that a controller acts anyway (a watch event
/// can be lost for good, e.g. an object created and deleted while the watch was down).
pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy)]
struct Expected {
    adds: i64,
    deletes: i64,
    set_at: Instant,
}

/// Outstanding creations and deletions per controller key.
#[derive(Debug, Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    pub fn new() -> Self {
        Expectations::default()
    }

    /// Records that `adds` creations and `deletes` deletions were just issued for `key`,
    /// replacing what was expected before. Call before issuing the requests.
    pub fn expect(&self, key: &str, adds: usize, deletes: usize) {
        self.lock().insert(
            key.to_string(),
            Expected {
                adds: adds as i64,
                deletes: deletes as i64,
                set_at: Instant::now(),
            },
        );
    }

    /// Adds `adds` creations and `deletes` deletions to what is still outstanding for `key`
    /// (Kubernetes' `RaiseExpectations`), so one sync that both deletes and creates — a
    /// DaemonSet's — waits for both. Counts already met (zero or below, from changes observed
    /// beyond what was expected) or expired start again from zero.
    pub fn raise(&self, key: &str, adds: usize, deletes: usize) {
        let now = Instant::now();
        let mut map = self.lock();
        let e = map.entry(key.to_string()).or_insert(Expected {
            adds: 0,
            deletes: 0,
            set_at: now,
        });
        if now.saturating_duration_since(e.set_at) > EXPECTATIONS_TTL {
            (e.adds, e.deletes) = (0, 0);
        }
        e.adds = e.adds.max(0) + adds as i64;
        e.deletes = e.deletes.max(0) + deletes as i64;
        e.set_at = now;
    }

    /// One expected creation was seen (or its request failed and will not be seen).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// One expected deletion was seen (or its request failed and will not be seen).
    pub fn deletion_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletes -= 1;
        }
    }

    /// Whether the controller may act on `key`: nothing outstanding, or the expectations have
    /// expired.
    pub fn satisfied(&self, key: &str) -> bool {
        self.satisfied_at(key, Instant::now())
    }

    fn satisfied_at(&self, key: &str, now: Instant) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => {
                (e.adds <= 0 && e.deletes <= 0)
                    || now.saturating_duration_since(e.set_at) > EXPECTATIONS_TTL
            }
        }
    }

    /// Forgets `key` (its owner was deleted).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        // A panic while holding the lock cannot leave the map inconsistent: every update is a
        // single insert/remove/field write.
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_without_expectations_is_satisfied() {
        assert!(Expectations::new().satisfied("ns/rs"));
    }

    #[test]
    fn satisfied_only_once_every_creation_and_deletion_is_observed() {
        let e = Expectations::new();
        e.expect("ns/rs", 2, 1);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        // Other keys are independent.
        e.expect("ns/other", 1, 0);
        assert!(e.satisfied("ns/rs"));
        assert!(!e.satisfied("ns/other"));
    }

    #[test]
    fn expectations_expire_and_can_be_forgotten() {
        let e = Expectations::new();
        e.expect("k", 3, 0);
        let later = Instant::now() + EXPECTATIONS_TTL + Duration::from_secs(1);
        assert!(e.satisfied_at("k", later));
        assert!(!e.satisfied("k"));
        e.forget("k");
        assert!(e.satisfied("k"));
    }

    #[test]
    fn raised_expectations_add_up_and_restart_once_met() {
        let e = Expectations::new();
        e.raise("k", 0, 2);
        e.raise("k", 3, 0);
        for _ in 0..3 {
            e.creation_observed("k");
        }
        assert!(!e.satisfied("k"), "two deletions still outstanding");
        e.deletion_observed("k");
        e.deletion_observed("k");
        assert!(e.satisfied("k"));
        // An extra observation leaves a count below zero; the next raise starts from zero.
        e.creation_observed("k");
        e.raise("k", 1, 0);
        assert!(!e.satisfied("k"));
        e.creation_observed("k");
        assert!(e.satisfied("k"));
    }
}
