//! Offline store-and-forward: a terminal's journal head, its deny list and limits, and the
//! upload of its signed records.

use offline::{OfflineAccess, RiskLimits, SignedRecord};
use serde::{Deserialize, Serialize};

/// Where the server's copy of a terminal's journal stands.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Head {
    /// The last record posted (0: none).
    pub seq: i64,
    /// Its hash, hex (zeros: none).
    pub hash: String,
}

/// What a terminal needs before it goes offline.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DenyList {
    /// UIDs to refuse offline: blocked or replaced cards, cards owing a shortfall.
    pub uids: Vec<String>,
    /// This terminal's offline limits (none: it may not accept payments offline).
    #[schema(value_type = Option<Object>)]
    pub limits: Option<RiskLimits>,
    /// For a service point's gate: its policy and who is entitled, to decide offline.
    #[schema(value_type = Option<Object>)]
    pub access: Option<OfflineAccess>,
    /// As of.
    pub as_of: String,
    /// This sync's id: every offline record names the sync it was taken under, and the
    /// server judges it by what this sync said (these UIDs, these limits).
    pub sync_id: i64,
}

/// An upload.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// Records in sequence order, from the one after the server's head (earlier ones
    /// already posted are skipped).
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<SignedRecord>,
}

/// What became of one record.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordResult {
    /// The record.
    pub seq: i64,
    /// `posted`, `posted_with_shortfall`, `logged:event:<id>` (access), or
    /// `refused:<code>`: the tap was not genuine (`tap_mac_invalid`), the card unknown, the
    /// tap used or older than the sync (`card_replay`), the card denied at the sync
    /// (`card_denied_at_sync`), the record stale (`offline_record_stale`) or under an
    /// unknown sync (`offline_sync_unknown`), above a limit (`amount_too_large`,
    /// `offline_limit_per_tap`, `offline_limit_card_day`, `offline_limit_outstanding`,
    /// `offline_risk_cap`), or of a kind this credential may not upload
    /// (`offline_not_allowed`).
    pub result: String,
    /// The entry, when one was posted.
    pub entry_seq: Option<i64>,
    /// What the card could not cover (the card owes it).
    pub shortfall_minor: Option<i64>,
    /// The audit event of a refused record or an access record.
    pub event_id: Option<i64>,
}

/// The upload's outcome when every record was good.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Uploaded {
    /// Per record, in order.
    pub records: Vec<RecordResult>,
    /// The head after the upload.
    pub head: Head,
}
