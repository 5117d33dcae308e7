//! The pure half of leader election: given the Lease as read and when this candidate first saw
//! that version of it, what to write (if anything). Expiry is judged on the candidate's own
//! clock from when it observed the record change, as client-go does, so clock skew between
//! hosts cannot make a live leader look expired.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

/// What a candidate does with the Lease it read.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Step {
    /// Write the Lease as held by us: a renewal when we already held it, else a take-over.
    Take(LeaseSpec),
    /// Another candidate holds it, until at least `expires` on our clock.
    Wait { holder: String, expires: Instant },
}

/// Decides for candidate `me` at `now` (local) / `wall` (written into the Lease), given the
/// current spec (None: no Lease yet), when we first observed this spec, and our own lease
/// duration.
pub(crate) fn decide(
    current: Option<&LeaseSpec>,
    observed_at: Instant,
    now: Instant,
    wall: Timestamp,
    me: &str,
    lease_duration: Duration,
) -> Step {
    let duration_seconds = lease_duration.as_secs().max(1) as i32;
    let fresh = |transitions: i32, acquired: MicroTime| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time: Some(acquired),
        renew_time: Some(MicroTime(wall)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(current) = current else {
        return Step::Take(fresh(0, MicroTime(wall)));
    };
    let holder = current.holder_identity.as_deref().unwrap_or("");
    let transitions = current.lease_transitions.unwrap_or(0);
    if holder == me {
        let acquired = current.acquire_time.clone().unwrap_or(MicroTime(wall));
        return Step::Take(fresh(transitions, acquired));
    }
    if !holder.is_empty() {
        // The holder's own duration counts, not ours: it promised to renew within it.
        let held_for = current
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(lease_duration);
        let expires = observed_at + held_for;
        if now < expires {
            return Step::Wait {
                holder: holder.to_string(),
                expires,
            };
        }
    }
    Step::Take(fresh(transitions + 1, MicroTime(wall)))
}

/// The spec written when a leader steps down cleanly: no holder, so a standby takes over at
/// once instead of waiting out the lease (client-go's ReleaseOnCancel).
pub(crate) fn released(current: &LeaseSpec, wall: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(wall)),
        renew_time: Some(MicroTime(wall)),
        lease_transitions: current.lease_transitions,
        ..LeaseSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn held_by(holder: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Timestamp::from_second(100).unwrap())),
            renew_time: Some(MicroTime(Timestamp::from_second(110).unwrap())),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn wall() -> Timestamp {
        Timestamp::from_second(200).unwrap()
    }

    #[test]
    fn no_lease_is_created_held_by_us() {
        let t0 = Instant::now();
        let Step::Take(spec) = decide(None, t0, t0, wall(), "a", LEASE) else {
            panic!("expected a take");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall())));
        assert_eq!(spec.renew_time, Some(MicroTime(wall())));
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let current = held_by("a", 3);
        let Step::Take(spec) = decide(Some(&current), t0, t0, wall(), "a", LEASE) else {
            panic!("expected a renewal");
        };
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.acquire_time, current.acquire_time);
        assert_eq!(spec.renew_time, Some(MicroTime(wall())));
    }

    #[test]
    fn another_holder_is_waited_out_from_when_we_observed_it() {
        let t0 = Instant::now();
        let current = held_by("b", 3);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            decide(Some(&current), t0, at(14), wall(), "a", LEASE),
            Step::Wait {
                holder: "b".into(),
                expires: at(15)
            }
        );
        let Step::Take(spec) = decide(Some(&current), t0, at(15), wall(), "a", LEASE) else {
            panic!("expected a take-over once expired");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall())));
    }

    #[test]
    fn the_holders_duration_counts_not_ours() {
        let t0 = Instant::now();
        let mut current = held_by("b", 0);
        current.lease_duration_seconds = Some(3);
        assert!(matches!(
            decide(
                Some(&current),
                t0,
                t0 + Duration::from_secs(3),
                wall(),
                "a",
                LEASE
            ),
            Step::Take(_)
        ));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let current = released(&held_by("b", 2), wall());
        assert_eq!(current.holder_identity.as_deref(), Some(""));
        let Step::Take(spec) = decide(Some(&current), t0, t0, wall(), "a", LEASE) else {
            panic!("expected a take");
        };
        assert_eq!(spec.lease_transitions, Some(3));
    }
}
