//! A service point's access check and its decision.

use serde::{Deserialize, Serialize};

use super::Tap;

/// `POST /v1/access-checks`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessCheck {
    /// The card's tap.
    pub tap: Tap,
}

/// The decision.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    /// allow or deny.
    pub decision: String,
    /// Why: entitled, or card_blocked, card_unknown, replay, not_entitled, closed,
    /// quota_reached, passback.
    pub reason: String,
    /// For clinics: today's queue number.
    pub queue_number: Option<i64>,
    /// The card, when known.
    pub card_id: Option<String>,
    /// When (RFC 3339).
    pub checked_at: String,
    /// The decision's leaf in the audit log.
    pub leaf_index: Option<i64>,
    /// Its leaf hash.
    pub leaf_hash: Option<String>,
}
