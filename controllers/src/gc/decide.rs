//! What to do with an object once each of its owners has been classified (Kubernetes'
//! `attemptToDeleteItem`): keep it while any owner is solid (dropping references to owners that
//! are gone or going), otherwise delete it — in the foreground when an owner is waiting on it and
//! it has dependents of its own, so the wait covers the whole chain.

use super::graph::{FOREGROUND, ORPHAN};

/// What became of one owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists and is not deleting in the foreground.
    Solid,
    /// Gone, or replaced by another object of the same name (another UID).
    Dangling,
    /// Being deleted in the foreground: waits for its dependents.
    Waiting,
}

/// How a dependent is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Background,
    Foreground,
    Orphan,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Background => "Background",
            Policy::Foreground => "Foreground",
            Policy::Orphan => "Orphan",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Keep it, without its references to these owners (UIDs).
    DropOwners(Vec<String>),
    Delete(Policy),
}

/// Decides for an object whose owners are `owners` (UID and state), which itself has
/// dependents or not, and carries `finalizers`.
pub fn decide(
    owners: &[(String, OwnerState)],
    has_dependents: bool,
    finalizers: &[String],
) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    if solid {
        let gone: Vec<String> = owners
            .iter()
            .filter(|(_, s)| *s != OwnerState::Solid)
            .map(|(uid, _)| uid.clone())
            .collect();
        return if gone.is_empty() {
            Decision::Keep
        } else {
            Decision::DropOwners(gone)
        };
    }
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    if waiting && has_dependents {
        return Decision::Delete(Policy::Foreground);
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    // The object's own pending deletion mode is kept, as Kubernetes does.
    let policy = if has(ORPHAN) {
        Policy::Orphan
    } else if has(FOREGROUND) {
        Policy::Foreground
    } else {
        Policy::Background
    };
    Decision::Delete(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OwnerState::*;

    fn owners(states: &[OwnerState]) -> Vec<(String, OwnerState)> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("o{i}"), *s))
            .collect()
    }

    #[test]
    fn a_solid_owner_keeps_the_object() {
        assert_eq!(decide(&owners(&[Solid]), false, &[]), Decision::Keep);
        assert_eq!(decide(&[], false, &[]), Decision::Keep);
        assert_eq!(
            decide(&owners(&[Dangling, Solid, Waiting]), true, &[]),
            Decision::DropOwners(vec!["o0".into(), "o2".into()])
        );
    }

    #[test]
    fn without_solid_owners_the_object_is_deleted() {
        assert_eq!(
            decide(&owners(&[Dangling]), true, &[]),
            Decision::Delete(Policy::Background)
        );
        assert_eq!(
            decide(&owners(&[Dangling, Dangling]), false, &[]),
            Decision::Delete(Policy::Background)
        );
        // A foreground owner waits for the whole chain below this object.
        assert_eq!(
            decide(&owners(&[Waiting]), true, &[]),
            Decision::Delete(Policy::Foreground)
        );
        assert_eq!(
            decide(&owners(&[Waiting, Dangling]), false, &[]),
            Decision::Delete(Policy::Background)
        );
        assert_eq!(
            decide(&owners(&[Dangling]), false, &["orphan".into()]),
            Decision::Delete(Policy::Orphan)
        );
        assert_eq!(
            decide(&owners(&[Dangling]), false, &["foregroundDeletion".into()]),
            Decision::Delete(Policy::Foreground)
        );
    }
}
