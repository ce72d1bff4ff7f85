//! Wire forms shared by the endpoints: amounts, taps, times, receipts.

use ledger::domain::{AccountId, AuditRef, Entry};
use ledger::money::{Amount, Currency, MoneyError};
use serde::Deserialize;

use crate::error::ApiError;
pub use client::wire::{Money, Receipt, Tap};

/// Time as RFC 3339 UTC with microseconds.
pub fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into µs.
pub fn parse_time(text: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|e| ApiError::bad_request("invalid_time", format!("{text:?} is not an RFC 3339 time: {e}")))
}

/// Formats minor units.
pub fn money(minor: i64, currency: Currency) -> Money {
    Money { amount: currency.format_minor(minor), currency: currency.code().to_owned() }
}

fn money_error(e: MoneyError) -> ApiError {
    ApiError::unprocessable("invalid_amount", e.to_string())
}

/// The currency of a request (the installation's when omitted). Every account of an
/// installation is in its currency, so another currency is refused here, before any
/// amount is read in its minor units.
pub fn currency(code: Option<&str>, default: Currency) -> Result<Currency, ApiError> {
    match code {
        None => Ok(default),
        Some(c) => match Currency::parse(c).map_err(money_error)? {
            c if c == default => Ok(c),
            other => Err(ApiError::unprocessable(
                "currency_mismatch",
                format!("this installation keeps its accounts in {}, not {}", default.code(), other.code()),
            )),
        },
    }
}

/// Parses a positive amount (§3: scale by ISO 4217, positive, at most the maximum).
pub fn amount(text: &str, currency: Currency, max_minor: i64) -> Result<Amount, ApiError> {
    Amount::parse(text, currency, max_minor).map_err(money_error)
}

/// Parses a signed, non-zero amount (adjustments).
pub fn signed_amount(text: &str, currency: Currency) -> Result<i64, ApiError> {
    let v = ledger::money::parse_signed_minor(text, currency).map_err(money_error)?;
    if v == 0 {
        return Err(ApiError::unprocessable("invalid_amount", "an adjustment amount must not be zero"));
    }
    Ok(v)
}

/// The receipt of an entry.
pub fn receipt(e: &Entry) -> Receipt {
    Receipt {
        entry_seq: e.seq,
        leaf_index: e.audit.map(|a: AuditRef| a.leaf_index),
        leaf_hash: e.audit.map(|a| hex::encode(a.leaf_hash)),
        receipt_url: e.audit.map(|a| format!("/receipts/{}?h={}", e.seq, hex::encode(a.leaf_hash))),
    }
}

/// Parses an id in a path or body (ids are strings on the wire).
pub fn id(text: &str) -> Result<i64, ApiError> {
    // Digits only (`parse` alone would take "+5"), as the published pattern says.
    Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::not_found("not_found", format!("no object has the id {text:?}")))
}

/// An account id from a URL path or a request body: an [`id`] (a positive decimal number,
/// else "not found").
pub fn account_id(text: &str) -> Result<AccountId, ApiError> {
    let n = id(text)?;
    AccountId::try_from(n).map_err(|e| ApiError::not_found("not_found", e.to_string()))
}

/// Checks a free text field: non-empty after trimming, at most `max` bytes.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let t = value.trim();
    if t.is_empty() || t.len() > max || t.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("{field} must be 1 to {max} bytes of text without control characters"),
        ));
    }
    Ok(t.to_owned())
}

/// Paging: `limit` (1..=1000, default 100) and an opaque `cursor`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
pub struct Page {
    /// How many (1 to 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl Page {
    /// The limit, checked.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(l) if (1..=1000).contains(&l) => Ok(l),
            Some(_) => Err(ApiError::bad_request("invalid_query", "limit must be 1 to 1000")),
        }
    }
    /// The position after which to continue (cursors are base-36 numbers behind a tag).
    pub fn after(&self) -> Result<i64, ApiError> {
        match &self.cursor {
            None => Ok(0),
            Some(c) => c
                .strip_prefix("k")
                .and_then(|n| i64::from_str_radix(n, 36).ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::bad_request("invalid_query", "cursor is not one this server gave")),
        }
    }
}

/// The cursor that continues after `position`.
pub fn cursor(position: i64) -> String {
    let mut n = position as u64;
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!("k{}", digits.into_iter().collect::<String>())
}

/// Whether the caller asked for CSV (`Accept: text/csv`) rather than JSON.
pub fn wants_csv(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv")))
}

/// A CSV answer (RFC 4180, UTF-8); the next page's cursor, when there is one, in the
/// `Next-Cursor` header.
pub fn csv_response(body: String, next_cursor: Option<&str>) -> actix_web::HttpResponse {
    let mut r = actix_web::HttpResponse::Ok();
    r.content_type("text/csv; charset=utf-8; header=present");
    if let Some(c) = next_cursor {
        r.insert_header(("Next-Cursor", c.to_owned()));
    }
    r.body(body)
}
