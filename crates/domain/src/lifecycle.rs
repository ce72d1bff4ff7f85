//! A card's lifecycle: which status changes an operator may make, and whether a card in a
//! status may pay or enter. The API asks here before it logs a change; the writer's
//! balance move on replacement and the registry's rows follow from the answer.
//!
//! ```text
//!   issue ──► active ◄──unblock── blocked
//!               │ └────block────►   │
//!               └──────replace──────┴──► replaced (final)
//! ```

use crate::registry::{BlockReason, CardStatus};

/// A change an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Block, for a reason: every tap is refused at once.
    Block(BlockReason),
    /// Unblock: the card pays again.
    Unblock,
    /// Replace by a new card, which takes the balance.
    Replace,
}

impl Change {
    /// The name of the operator action the audit log records for it.
    #[must_use]
    pub const fn action(self) -> &'static str {
        match self {
            Change::Block(_) => "block_card",
            Change::Unblock => "unblock_card",
            Change::Replace => "replace_card",
        }
    }
}

/// Why a change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A replaced card never changes again (its balance lives on the new card).
    #[error("this card was replaced; it cannot change any more")]
    Replaced,
}

impl Refused {
    /// The problem code the API answers with.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Refused::Replaced => "card_replaced",
        }
    }
}

/// The status after `change`, or why it may not happen. Blocking a blocked card (a new
/// reason) and unblocking an active one are allowed and change nothing but the record.
///
/// # Errors
/// [`Refused::Replaced`] for any change of a replaced card.
pub const fn change(from: CardStatus, change: Change) -> Result<CardStatus, Refused> {
    match (from, change) {
        (CardStatus::Replaced, _) => Err(Refused::Replaced),
        (_, Change::Block(_)) => Ok(CardStatus::Blocked),
        (_, Change::Unblock) => Ok(CardStatus::Active),
        (_, Change::Replace) => Ok(CardStatus::Replaced),
    }
}

/// Why a card may not be used (pay, top up, enter): the problem code is `card_blocked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// Blocked by an operator.
    #[error("this card is blocked")]
    Blocked,
    /// Replaced by another card.
    #[error("this card was replaced")]
    Replaced,
}

impl Unusable {
    /// The problem (and access refusal) code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        "card_blocked"
    }
}

/// Whether a card in `status` may pay, be topped up or open a door.
///
/// # Errors
/// [`Unusable`] for a blocked or replaced card.
pub const fn usable(status: CardStatus) -> Result<(), Unusable> {
    match status {
        CardStatus::Active => Ok(()),
        CardStatus::Blocked => Err(Unusable::Blocked),
        CardStatus::Replaced => Err(Unusable::Replaced),
    }
}

/// A tap made with keys older than the card now holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this tap verifies with card key version {tap} but the card holds version {card}: not the card")]
pub struct KeyOutdated {
    /// The key version the tap verified with.
    pub tap: u8,
    /// The version the card was personalised (or rotated) with.
    pub card: i32,
}

/// Refuses a tap that verifies only with an older card key version than the card holds
/// (0 on the card: not known, any version passes): it was made with keys the card no
/// longer holds, so it is a copy, not the card.
///
/// # Errors
/// [`KeyOutdated`] when the tap's version is older.
pub fn tap_key(tap_version: u8, card_version: i32) -> Result<(), KeyOutdated> {
    if i32::from(tap_version) < card_version {
        return Err(KeyOutdated { tap: tap_version, card: card_version });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use CardStatus::{Active, Blocked, Replaced};

    #[test]
    fn changes() {
        fn check(from: CardStatus, c: Change, expect: Result<CardStatus, Refused>) {
            assert_eq!(change(from, c), expect, "{from} {c:?}");
        }
        let lost = Change::Block(BlockReason::Lost);
        check(Active, lost, Ok(Blocked));
        check(Blocked, Change::Block(BlockReason::Fraud), Ok(Blocked));
        check(Blocked, Change::Unblock, Ok(Active));
        check(Active, Change::Unblock, Ok(Active));
        check(Active, Change::Replace, Ok(Replaced));
        check(Blocked, Change::Replace, Ok(Replaced));
        check(Replaced, lost, Err(Refused::Replaced));
        check(Replaced, Change::Unblock, Err(Refused::Replaced));
        check(Replaced, Change::Replace, Err(Refused::Replaced));
        assert_eq!(Refused::Replaced.code(), "card_replaced");
        assert_eq!(lost.action(), "block_card");
    }

    #[test]
    fn use_by_status() {
        fn check(status: CardStatus, expect: Result<(), Unusable>) {
            assert_eq!(usable(status), expect, "{status}");
        }
        check(Active, Ok(()));
        check(Blocked, Err(Unusable::Blocked));
        check(Replaced, Err(Unusable::Replaced));
        assert_eq!(Unusable::Replaced.code(), "card_blocked");
    }

    #[test]
    fn key_versions() {
        fn check(tap: u8, card: i32, ok: bool) {
            assert_eq!(tap_key(tap, card).is_ok(), ok, "tap {tap} card {card}");
        }
        check(0, 0, true);
        check(1, 0, true);
        check(1, 1, true);
        check(2, 1, true);
        check(1, 2, false);
        check(0, 1, false);
        assert_eq!(
            tap_key(1, 2).unwrap_err().to_string(),
            "this tap verifies with card key version 1 but the card holds version 2: not the card"
        );
    }
}
