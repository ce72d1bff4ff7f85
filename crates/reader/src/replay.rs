//! A small replay check: a tap is accepted only if its counter is above the last one seen
//! for the same card (SPEC §6). The server keeps this in its database; a terminal or a
//! test keeps it in memory with a [`ReplayGuard`].

use std::collections::HashMap;

use card::{CardUid, ReadCounter, VerifiedSun};

/// Most cards one [`ReplayGuard`] remembers.
pub const REPLAY_GUARD_CARDS_MAX: usize = 65_536;

/// Why a tap was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The counter is not above the last one seen: a replayed or cloned tap.
    #[error("card {uid}: counter {counter} is not above the last one seen, {last_seen} (replay or clone)")]
    Replayed {
        /// The card.
        uid: CardUid,
        /// The counter of the refused tap.
        counter: ReadCounter,
        /// The highest counter accepted before.
        last_seen: ReadCounter,
    },
    /// The guard already remembers [`REPLAY_GUARD_CARDS_MAX`] cards. Forgetting one would
    /// let its old taps through again, so new cards are refused instead.
    #[error("the replay guard is full ({max} cards)")]
    Full {
        /// The limit.
        max: usize,
    },
}

/// The last counter seen per card.
#[derive(Debug, Default, Clone)]
pub struct ReplayGuard {
    last_seen: HashMap<CardUid, ReadCounter>,
}

impl ReplayGuard {
    /// An empty guard.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts the tap and remembers its counter if it is above the last one seen for the
    /// card.
    ///
    /// # Errors
    /// [`ReplayError::Replayed`] for a counter not above the last one, [`ReplayError::Full`].
    pub fn check(&mut self, tap: &VerifiedSun) -> Result<(), ReplayError> {
        self.check_counter(tap.uid(), tap.counter())
    }

    /// As [`ReplayGuard::check`], for a UID and counter.
    ///
    /// # Errors
    /// As [`ReplayGuard::check`].
    pub fn check_counter(&mut self, uid: CardUid, counter: ReadCounter) -> Result<(), ReplayError> {
        match self.last_seen.get(&uid) {
            Some(&last_seen) if counter <= last_seen => Err(ReplayError::Replayed { uid, counter, last_seen }),
            Some(_) => {
                self.last_seen.insert(uid, counter);
                Ok(())
            }
            None if self.last_seen.len() >= REPLAY_GUARD_CARDS_MAX => {
                Err(ReplayError::Full { max: REPLAY_GUARD_CARDS_MAX })
            }
            None => {
                self.last_seen.insert(uid, counter);
                Ok(())
            }
        }
    }

    /// The highest counter accepted for `uid`.
    #[must_use]
    pub fn last_seen(&self, uid: &CardUid) -> Option<ReadCounter> {
        self.last_seen.get(uid).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(value: u32) -> ReadCounter {
        ReadCounter::new(value).expect("24 bits")
    }

    #[test]
    fn only_increasing_counters_pass() {
        let uid = CardUid::from_bytes([4, 1, 2, 3, 4, 5, 6]);
        let other = CardUid::from_bytes([4, 6, 5, 4, 3, 2, 1]);
        let mut guard = ReplayGuard::new();
        assert_eq!(guard.check_counter(uid, counter(5)), Ok(()));
        assert_eq!(guard.check_counter(other, counter(1)), Ok(()));
        assert_eq!(
            guard.check_counter(uid, counter(5)),
            Err(ReplayError::Replayed { uid, counter: counter(5), last_seen: counter(5) })
        );
        assert!(guard.check_counter(uid, counter(4)).is_err());
        assert_eq!(guard.check_counter(uid, counter(7)), Ok(()));
        assert_eq!(guard.last_seen(&uid), Some(counter(7)));
    }
}
