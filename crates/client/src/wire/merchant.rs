//! Money moved by a card: payments, refunds, holds, statements, top-ups and balance
//! inquiries.

use serde::{Deserialize, Serialize};

use super::{Money, Receipt, Tap};

/// `POST /v1/payments`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    /// The card's tap.
    pub tap: Tap,
    /// Price, decimal string.
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,3})?$", max_length = 40, example = "12500.00")]
    pub amount: String,
    /// ISO 4217; the installation's when omitted.
    #[schema(pattern = "^[A-Z]{3}$", example = "IDR")]
    pub currency: Option<String>,
    /// The merchant's own reference (order, ticket).
    #[schema(min_length = 1, max_length = 120)]
    pub reference: Option<String>,
}

/// A payment (or hold, capture, refund) as returned: the receipt and the card's balance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentView {
    /// Id (the entry's sequence number).
    pub id: String,
    /// approved, held, captured, voided, refunded.
    pub status: String,
    /// The amount of the payment or hold.
    pub amount: Money,
    /// Merchant discount.
    pub fee: Money,
    /// The card's balance after.
    pub balance: Money,
    /// The card.
    pub card_id: Option<String>,
    /// The merchant's reference.
    pub reference: Option<String>,
    /// When it was posted (RFC 3339).
    pub created_at: String,
    /// For holds: when it expires.
    pub expires_at: Option<String>,
    /// The entry's receipt: sequence number, leaf and balance after.
    #[serde(flatten)]
    pub receipt: Receipt,
}

/// The merchant's payments (and captures), newest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentList {
    /// One page.
    pub payments: Vec<PaymentView>,
    /// Continue with this cursor.
    pub next_cursor: Option<String>,
}

/// `POST /v1/payments/{id}/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    /// Up to what is left of the payment.
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,3})?$", max_length = 40, example = "12500.00")]
    pub amount: String,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$", example = "IDR")]
    pub currency: Option<String>,
    /// Why the money goes back, for the holder's statement and the auditors.
    #[schema(min_length = 1, max_length = 200)]
    pub reason: Option<String>,
}

/// `POST /v1/holds`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    /// The card's tap.
    pub tap: Tap,
    /// Amount to reserve.
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,3})?$", max_length = 40, example = "12500.00")]
    pub amount: String,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$", example = "IDR")]
    pub currency: Option<String>,
    /// The merchant's reference (ticket, booking).
    #[schema(min_length = 1, max_length = 120)]
    pub reference: Option<String>,
    /// Minutes until the hold lapses and the funds return (default 24 h).
    #[schema(minimum = 1)]
    pub expires_in_minutes: Option<i64>,
}

/// `POST /v1/holds/{id}/capture`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    /// At most the held amount; the rest returns to the card.
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,3})?$", max_length = 40, example = "12500.00")]
    pub amount: String,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$", example = "IDR")]
    pub currency: Option<String>,
}

/// A statement.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementView {
    /// The account.
    pub account_id: String,
    /// Period start.
    pub from: String,
    /// Period end.
    pub to: String,
    /// Balance before the period.
    pub opening: Money,
    /// Balance at its end.
    pub closing: Money,
    /// Postings in the period.
    pub lines: Vec<StatementLineView>,
    /// Continue with this cursor.
    pub next_cursor: Option<String>,
}

/// One posting of a statement.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementLineView {
    /// The entry.
    pub entry_seq: i64,
    /// When it was posted (RFC 3339).
    pub time: String,
    /// Entry kind.
    pub kind: String,
    /// Signed amount on the account.
    pub amount: Money,
    /// Balance after.
    pub balance_after: Money,
}

/// `POST /v1/topups`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTopup {
    /// The card's tap (at the counter), or
    pub tap: Option<Tap>,
    /// the card's id (by phone, with the holder's card number).
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub card_id: Option<String>,
    /// The amount to top up, a decimal string such as "50000.00".
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,3})?$", max_length = 40, example = "12500.00")]
    pub amount: String,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$", example = "IDR")]
    pub currency: Option<String>,
}

/// A top-up as returned.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopupView {
    /// Id (entry sequence number).
    pub id: String,
    /// Amount loaded.
    pub amount: Money,
    /// The card's balance after.
    pub balance: Money,
    /// The agent's float after.
    pub float: Money,
    /// The card.
    pub card_id: String,
    /// What went to repay an offline shortfall the card owed (the card is off the deny
    /// list once nothing is owed).
    pub repaid: Money,
    /// The entry's receipt: sequence number, leaf and balance after.
    #[serde(flatten)]
    pub receipt: Receipt,
}

/// `POST /v1/balance-inquiries`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInquiry {
    /// The card's tap.
    pub tap: Tap,
}

/// A kiosk's answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InquiryView {
    /// The balance.
    pub balance: String,
    /// Its currency.
    pub currency: String,
    /// The last movements, newest first.
    pub recent: Vec<RecentLine>,
}

/// A recent movement.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecentLine {
    /// When it was posted (RFC 3339).
    pub time: String,
    /// What moved (payment, topup, refund, ...).
    pub kind: String,
    /// Signed amount on the card.
    pub amount: Money,
    /// The entry's sequence number, for its receipt.
    pub entry_seq: i64,
}
