//! Money, taps and receipts as every endpoint writes them.

use serde::{Deserialize, Serialize};

/// An amount and its currency, as sent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Decimal string, e.g. `"12500.00"`.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
}

/// A card tap: the SUN message mirrored in the card's NDEF URL.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    /// Encrypted PICCData, 32 hex digits.
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub picc_data: String,
    /// Truncated SUN MAC, 16 hex digits.
    #[schema(pattern = "^[0-9A-Fa-f]{16}$")]
    pub cmac: String,
}

/// The receipt of a posted entry.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    /// The entry's sequence number.
    pub entry_seq: i64,
    /// Its leaf in the audit log.
    pub leaf_index: Option<i64>,
    /// SHA-256(0x00 || leaf bytes), hex.
    pub leaf_hash: Option<String>,
    /// The receipt's page, which anyone holding this link can read and verify in a browser:
    /// `/receipts/{entry_seq}?h={leaf_hash}`, relative to the server's address. POS
    /// receipts print it as a QR code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_url: Option<String>,
}
