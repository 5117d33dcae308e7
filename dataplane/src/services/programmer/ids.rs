//! Frontend and backend ids.

use std::collections::HashSet;

/// Ids from 1 to `max`, handed out round-robin: a freed id comes back only after every other
/// free id has been used, so LRU entries (affinity, conntrack) still naming it are most likely
/// gone by the time it means another backend or frontend.
#[derive(Debug)]
pub(super) struct Ids {
    pub(super) max: u32,
    next: u32,
    used: HashSet<u32>,
}

impl Ids {
    pub(super) fn new(max: u32) -> Self {
        Self {
            max,
            next: 1,
            used: HashSet::new(),
        }
    }

    pub(super) fn alloc(&mut self) -> Option<u32> {
        if self.used.len() >= self.max as usize {
            return None;
        }
        loop {
            let id = self.next;
            self.next = if self.next >= self.max {
                1
            } else {
                self.next + 1
            };
            if self.used.insert(id) {
                return Some(id);
            }
        }
    }

    pub(super) fn free(&mut self, id: u32) {
        self.used.remove(&id);
    }

    /// Marks an id found in the maps as used; false if it is out of range or taken.
    pub(super) fn claim(&mut self, id: u32) -> bool {
        (1..=self.max).contains(&id) && self.used.insert(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_zero_and_come_back_after_free() {
        let mut ids = Ids::new(3);
        assert_eq!(
            (ids.alloc(), ids.alloc(), ids.alloc()),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(ids.alloc(), None);
        ids.free(2);
        assert_eq!(ids.alloc(), Some(2));
        ids.free(1);
        ids.free(3);
        assert_eq!(
            ids.alloc(),
            Some(3),
            "round-robin: the oldest free id first"
        );
        assert_eq!(ids.alloc(), Some(1));
    }
}
