//! Kartu's domain rules: pure functions over typed values, with no I/O, no clock and no
//! storage. Each rule lives here once and every part that applies it calls it: the API
//! (online decisions), the ledger's writer (the decisions that must hold under
//! concurrency) and offline terminals (the same decision with synced tables).
//!
//! - [`access`]: a service point's policy (who, when), and a holder's daily quota and
//!   anti-passback window.
//! - [`money`]: currencies, amounts and fee rates (a merchant's fee on a payment is
//!   [`money::FeeRate::fee_minor`]); the only place that parses a decimal amount (the API,
//!   the ledger, terminals and the demo all use it).
//! - [`registry`]: the typed values of the registry's rows (roles, holder and merchant
//!   categories, card status, block reasons), stored by name.
//! - [`lifecycle`]: a card's status changes, whether a card may be used, and the tap key
//!   version check.
//! - [`fares`]: public transport fares: a card's taps priced ride by ride (route fare,
//!   concession, transfer window, daily and weekly caps).

pub mod access;
pub mod fares;
pub mod lifecycle;
pub mod money;
pub mod registry;

// The fare model (`fares/model.rs`) is shared with the ledger's tests, which name this
// crate `domain`; inside it the same paths resolve through this alias.
#[cfg(test)]
extern crate self as domain;
