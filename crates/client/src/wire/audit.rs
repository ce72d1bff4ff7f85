//! What an auditor reads: leaves, entries, balances, the trial balance, proofs and the
//! access log.

use serde::{Deserialize, Serialize};

use super::Money;

/// One leaf.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeafView {
    /// 0-based index.
    pub leaf_index: i64,
    /// `entry` or the event's kind.
    pub kind: String,
    /// The canonical leaf bytes (docs/AUDIT.md), hex.
    pub leaf: String,
    /// SHA-256(0x00 || leaf), hex.
    pub leaf_hash: String,
}

/// A page of leaves.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Leaves {
    /// The leaves.
    pub leaves: Vec<LeafView>,
    /// The `from` of the next page, when there is one.
    pub next_cursor: Option<String>,
}

/// A posting.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostingView {
    /// The account posted to.
    pub account_id: String,
    /// Signed amount.
    pub amount: Money,
    /// The account's balance after.
    pub balance_after: Money,
}

/// A journal entry, whole, with its leaf.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntryView {
    /// Sequence number.
    pub entry_seq: i64,
    /// What the entry records (payment, topup, refund, hold, ...).
    pub kind: String,
    /// When it was posted (RFC 3339).
    pub time: String,
    /// Principal amount.
    pub amount: Money,
    /// Fee part.
    pub fee: Money,
    /// Principal account.
    pub account_id: Option<String>,
    /// Other side.
    pub counterparty_id: Option<String>,
    /// Related entry.
    pub related_seq: Option<i64>,
    /// Hold expiry.
    pub expires_at: Option<String>,
    /// Terminal or credential.
    pub terminal_id: Option<String>,
    /// The card that paid or was topped up, if one did.
    pub card_id: Option<String>,
    /// Tap counter.
    pub card_read_counter: Option<i64>,
    /// Merchant reference.
    pub merchant_reference: Option<String>,
    /// A note the ledger keeps with the entry (e.g. an offline record's number).
    pub memo: Option<String>,
    /// Its postings, which sum to zero per currency.
    pub postings: Vec<PostingView>,
    /// Leaf index.
    pub leaf_index: Option<i64>,
    /// Leaf hash, hex.
    pub leaf_hash: Option<String>,
    /// Leaf bytes, hex.
    pub leaf: String,
}

/// A page of entries.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entries {
    /// The entries, in sequence order.
    pub entries: Vec<EntryView>,
    /// Continue with this cursor.
    pub next_cursor: Option<String>,
}

/// A balance at a time.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BalanceView {
    /// The account.
    pub account_id: String,
    /// What the account is for (card_wallet, merchant, fee_revenue, ...).
    pub kind: String,
    /// Its balance at that time.
    pub balance: Money,
    /// As of.
    pub at: String,
}

/// One currency of the trial balance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrialLine {
    /// The ISO 4217 currency of this line.
    pub currency: String,
    /// Sum of every balance: zero when the books balance.
    pub balances_sum: String,
    /// All debits ever.
    pub debits: String,
    /// All credits ever.
    pub credits: String,
    /// balances_sum is zero.
    pub balanced: bool,
    /// What cards owe the city after offline payments their balances could not cover: minus
    /// the offline-risk account's balance (every card's debt is kept beside its wallet and
    /// recomputed by `kartu audit verify`).
    pub owed_by_cards: String,
}

/// The trial balance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrialBalance {
    /// Per currency.
    pub currencies: Vec<TrialLine>,
    /// Entries so far.
    pub last_entry_seq: i64,
}

/// An inclusion proof (RFC 9162 §2.1.3).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InclusionProof {
    /// The leaf.
    pub leaf_index: i64,
    /// The tree size.
    pub tree_size: i64,
    /// Hex hashes in RFC 9162 order.
    pub hashes: Vec<String>,
}

/// A consistency proof (RFC 9162 §2.1.4).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    /// Older size.
    pub first: i64,
    /// Newer size.
    pub second: i64,
    /// Hex hashes in RFC 9162 order.
    pub hashes: Vec<String>,
}

/// One access decision.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessLogLine {
    /// Event id.
    pub id: String,
    /// When the decision was made (RFC 3339).
    pub time: String,
    /// The service point.
    pub service_point_id: Option<String>,
    /// The card.
    pub card_id: Option<String>,
    /// allow or deny.
    pub decision: String,
    /// Reason code.
    pub reason: String,
    /// Queue number.
    pub queue_number: Option<i64>,
    /// The decision's leaf in the audit log.
    pub leaf_index: Option<i64>,
}

/// A page of the access log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessLog {
    /// Decisions, oldest first.
    pub decisions: Vec<AccessLogLine>,
    /// Continue with this cursor.
    pub next_cursor: Option<String>,
}

/// A receipt, for anyone holding its link (`GET /v1/receipts/{seq}?h=<leaf_hash>`): the
/// entry's leaf bytes, which the reader hashes and decodes itself, and what the server says
/// they hold.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptDetail {
    /// The entry's sequence number.
    pub entry_seq: i64,
    /// Its leaf in the audit log.
    pub leaf_index: i64,
    /// SHA-256(0x00 || leaf), hex.
    pub leaf_hash: String,
    /// The leaf bytes (docs/AUDIT.md), hex.
    pub leaf: String,
    /// The entry kind (payment, topup, refund, ...).
    pub kind: String,
    /// The principal amount.
    pub amount: Money,
    /// The merchant fee (payments, captures) or the fee returned (refunds).
    pub fee: Money,
    /// When it was posted (RFC 3339).
    pub time: String,
    /// The merchant's or agent's name, when the entry has one.
    pub place: Option<String>,
}

/// The log's checkpoint keys, oldest first (`GET /v1/audit/public-keys`): each key signs
/// the checkpoints from its `from_tree_size` until the next key's.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointKeys {
    /// The key that signs new checkpoints now (the last of `keys`).
    pub current: String,
    /// Every key so far.
    pub keys: Vec<CheckpointKey>,
}

/// One checkpoint key and the checkpoints it signs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointKey {
    /// The verifier key line (`<name>+<key id>+<base64 key>`).
    pub key: String,
    /// The smallest tree size it signs.
    pub from_tree_size: i64,
    /// The leaf that announced it (a `checkpoint_key_rotation` event signed by the key
    /// before); absent for the log's first key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_leaf: Option<i64>,
}
