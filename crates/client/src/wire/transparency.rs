//! The public daily totals (no personal data).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Money;

/// Totals of one merchant category.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CategoryTotal {
    /// The merchant category (grocery, hotel, ...).
    pub category: String,
    /// Payments and captures.
    pub payments: u64,
    /// Their total.
    pub amount: Money,
    /// What was refunded to cards that day.
    pub refunded: Money,
}

/// Totals of one public service.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceTotal {
    /// The public service (clinic, library, ...).
    pub service: String,
    /// Entries allowed.
    pub allowed: u64,
    /// Entries refused, for any reason.
    pub denied: u64,
    /// The refusals by reason code (`not_entitled`, `closed`, `quota_reached`, ...).
    #[serde(default)]
    pub denied_by_reason: BTreeMap<String, u64>,
}

/// The day's totals, with no personal data.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transparency {
    /// The day, in the city's time zone.
    pub date: String,
    /// The city's time zone (IANA name), in which the day begins and ends.
    #[serde(default)]
    pub timezone: String,
    /// Per merchant category.
    pub merchants: Vec<CategoryTotal>,
    /// Per public service.
    pub services: Vec<ServiceTotal>,
    /// Top-ups on the day.
    pub topups: Money,
    /// The audit log's size when these totals were computed (a closed day's totals are
    /// computed once; `/v1/audit/checkpoints/latest` has the size now).
    pub tree_size: i64,
}
