//! Money: currencies with their ISO 4217 minor units, and amounts held as integer minor units.
//!
//! Amounts enter the system as decimal strings (`"12500.00"`) and are parsed here, at the
//! boundary, into [`Amount`]: a positive number of minor units that never exceeds
//! [`AMOUNT_MAX_MINOR`]. Inside the ledger every sum uses checked `i64` arithmetic; an
//! overflow is a named rejection, never a wrap.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// The largest amount of a single request, in minor units: one trillion major units of a
/// two-decimal currency. Far above any real payment, far below `i64::MAX`, so that sums of a
/// few thousand such amounts cannot overflow before they are checked.
pub const AMOUNT_MAX_MINOR: i64 = 100_000_000_000_000;

/// The longest decimal string we read; anything longer is rejected before parsing.
const AMOUNT_TEXT_MAX: usize = 40;

/// Why an amount or currency could not be parsed. Every variant is a client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency code is not a supported ISO 4217 code.
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    /// The text is not a plain decimal number such as `12500.00`.
    #[error("amount {0:?} is not a decimal number")]
    NotANumber(String),
    /// More decimal places than the currency's minor units allow.
    #[error("amount {text:?} has more than {minor_units} decimal places allowed for {currency}")]
    TooManyDecimals {
        /// The text as given.
        text: String,
        /// The currency's minor units.
        minor_units: u32,
        /// The currency code.
        currency: Currency,
    },
    /// A negative amount where a positive one is needed.
    #[error("amount must not be negative")]
    Negative,
    /// A zero amount where a positive one is needed.
    #[error("amount must be greater than zero")]
    Zero,
    /// Above [`AMOUNT_MAX_MINOR`] or a configured limit.
    #[error("amount is above the maximum of {max}")]
    AboveMaximum {
        /// The maximum, formatted in major units.
        max: String,
    },
    /// A fee rate outside `0 ..= 1`.
    #[error("fee rate {0:?} must be a decimal between 0 and 1")]
    BadFeeRate(String),
}

/// An ISO 4217 currency supported by Kartu. The list is short on purpose: a city card
/// system meets a handful of currencies, and an unknown code must be a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    minor_units: u8,
}

/// `(code, minor units)` as published in ISO 4217.
const CURRENCIES: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("CNY", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("IDR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MYR", 2),
    ("PHP", 2),
    ("SGD", 2),
    ("THB", 2),
    ("USD", 2),
    ("VND", 0),
];

impl Currency {
    /// Indonesian rupiah, the default installation currency.
    pub const IDR: Currency = Currency { code: *b"IDR", minor_units: 2 };

    /// Looks a code up in the ISO 4217 table (upper case only, as the standard writes it).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(c, minor_units)| {
                let b = c.as_bytes();
                Currency { code: [b[0], b[1], b[2]], minor_units: *minor_units }
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(8).collect()))
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The code bytes come from the ASCII table above.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Number of decimal places of the minor unit (IDR: 2, JPY: 0, KWD: 3).
    pub fn minor_units(&self) -> u32 {
        u32::from(self.minor_units)
    }

    /// Formats minor units as a decimal string with exactly the currency's decimals.
    pub fn format_minor(&self, minor: i64) -> String {
        let mut d = Decimal::from(minor);
        d.set_scale(self.minor_units()).unwrap_or_default();
        format!("{d}")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_owned()
    }
}

/// A positive amount of one currency in minor units, at most [`AMOUNT_MAX_MINOR`].
/// The only ways to build one check those bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Amount {
    minor: i64,
    currency: Currency,
}

impl Amount {
    /// Parses a decimal string (`"12500.00"`, `"7"`) in `currency`. Rejects signs, exponents,
    /// spaces, more decimals than the minor units, zero, and values above `max_minor`
    /// (pass [`AMOUNT_MAX_MINOR`] when no tighter limit applies).
    pub fn parse(text: &str, currency: Currency, max_minor: i64) -> Result<Amount, MoneyError> {
        let minor = parse_minor(text, currency)?;
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Amount::from_minor(minor, currency, max_minor)
    }

    /// Builds an amount from minor units, with the same bounds as [`Amount::parse`].
    pub fn from_minor(minor: i64, currency: Currency, max_minor: i64) -> Result<Amount, MoneyError> {
        let max = max_minor.min(AMOUNT_MAX_MINOR);
        if minor < 0 {
            Err(MoneyError::Negative)
        } else if minor == 0 {
            Err(MoneyError::Zero)
        } else if minor > max {
            Err(MoneyError::AboveMaximum { max: currency.format_minor(max) })
        } else {
            Ok(Amount { minor, currency })
        }
    }

    /// The value in minor units (always `1 ..= AMOUNT_MAX_MINOR`).
    pub fn minor(&self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency.format_minor(self.minor), self.currency)
    }
}

/// A signed amount for adjustments (`"-5000.00"` takes money out of an account). Zero is
/// rejected; the magnitude has the same bounds as [`Amount`].
pub fn parse_signed_minor(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    let minor = parse_minor(text, currency)?;
    if minor == 0 {
        return Err(MoneyError::Zero);
    }
    if minor.unsigned_abs() > AMOUNT_MAX_MINOR.unsigned_abs() {
        return Err(MoneyError::AboveMaximum { max: currency.format_minor(AMOUNT_MAX_MINOR) });
    }
    Ok(minor)
}

/// A balance as the API writes it (`"12500.00"`, `"0.00"`, `"-3.50"`) in minor units: any
/// sign, zero allowed, the currency's decimals at most.
pub fn parse_balance_minor(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    parse_minor(text, currency)
}

/// Strict decimal grammar: optional `-`, digits, optionally `.` and digits. Nothing else.
fn parse_minor(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    let not_a_number = || MoneyError::NotANumber(text.chars().take(AMOUNT_TEXT_MAX).collect());
    if text.is_empty() || text.len() > AMOUNT_TEXT_MAX {
        return Err(not_a_number());
    }
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (unsigned, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(not_a_number());
    }
    if fraction.map_or(0, str::len) > currency.minor_units() as usize {
        return Err(MoneyError::TooManyDecimals {
            text: text.to_owned(),
            minor_units: currency.minor_units(),
            currency,
        });
    }
    let decimal = Decimal::from_str_exact(text).map_err(|_| {
        // Only a value beyond Decimal's 96-bit range gets here.
        MoneyError::AboveMaximum { max: currency.format_minor(AMOUNT_MAX_MINOR) }
    })?;
    let scaled = decimal
        .checked_mul(Decimal::from(10_i64.pow(currency.minor_units())))
        .ok_or_else(|| MoneyError::AboveMaximum { max: currency.format_minor(AMOUNT_MAX_MINOR) })?;
    i64::try_from(scaled.trunc())
        .ok()
        .filter(|m| m.unsigned_abs() <= AMOUNT_MAX_MINOR.unsigned_abs())
        .ok_or_else(|| MoneyError::AboveMaximum { max: currency.format_minor(AMOUNT_MAX_MINOR) })
}

/// A merchant discount rate such as `0.007` (0.7 %), between 0 and 1 inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeRate(Decimal);

impl FeeRate {
    /// No fee.
    pub const ZERO: FeeRate = FeeRate(Decimal::ZERO);

    /// Parses a decimal string between 0 and 1 with at most 6 decimal places.
    pub fn parse(text: &str) -> Result<FeeRate, MoneyError> {
        let bad = || MoneyError::BadFeeRate(text.chars().take(AMOUNT_TEXT_MAX).collect());
        // Digits, then at most one point with digits after it: "1." and ".5" are not rates.
        let (whole, fraction) = text.split_once('.').unwrap_or((text, "1"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let plain = text.len() <= 12 && digits(whole) && digits(fraction);
        let rate = if plain { Decimal::from_str_exact(text).map_err(|_| bad())? } else { return Err(bad()) };
        if rate > Decimal::ONE || rate.scale() > 6 {
            return Err(bad());
        }
        Ok(FeeRate(rate))
    }

    /// The fee on `amount_minor`, rounded half-even to the minor unit (banker's rounding,
    /// so that rounding errors do not drift one way over many payments).
    pub fn fee_minor(&self, amount_minor: i64) -> i64 {
        let fee =
            (Decimal::from(amount_minor) * self.0).round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
        // 0 <= rate <= 1, so 0 <= fee <= amount, which fits in i64.
        i64::try_from(fee).unwrap_or(amount_minor).clamp(0, amount_minor)
    }

    /// The rate as a decimal string.
    pub fn as_decimal(&self) -> Decimal {
        self.0
    }
}

/// The stored and wire form: the shortest decimal, `0.007` (never `0.0070`).
impl fmt::Display for FeeRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.normalize())
    }
}

/// What diesel reads a stored rate into.
impl TryFrom<String> for FeeRate {
    type Error = MoneyError;
    fn try_from(text: String) -> Result<FeeRate, MoneyError> {
        FeeRate::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idr(text: &str) -> Result<i64, MoneyError> {
        Amount::parse(text, Currency::IDR, AMOUNT_MAX_MINOR).map(|a| a.minor())
    }

    #[test]
    fn amounts_parse_to_minor_units() {
        assert_eq!(idr("12500.00"), Ok(1_250_000));
        assert_eq!(idr("12500.5"), Ok(1_250_050));
        assert_eq!(idr("7"), Ok(700));
        assert_eq!(idr("0.01"), Ok(1));
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Amount::parse("150", jpy, AMOUNT_MAX_MINOR).unwrap().minor(), 150);
        assert!(matches!(Amount::parse("150.0", jpy, AMOUNT_MAX_MINOR), Err(MoneyError::TooManyDecimals { .. })));
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(Amount::parse("1.234", kwd, AMOUNT_MAX_MINOR).unwrap().minor(), 1234);
    }

    #[test]
    fn bad_amounts_are_named() {
        assert!(matches!(idr("1.001"), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!(idr("12.500"), Err(MoneyError::TooManyDecimals { .. })));
        assert_eq!(idr("-5"), Err(MoneyError::Negative));
        assert_eq!(idr("0"), Err(MoneyError::Zero));
        assert_eq!(idr("0.00"), Err(MoneyError::Zero));
        for text in ["", "abc", "1e5", " 1", "1 ", "+1", "1.", ".5", "1,000", "NaN", "0x10", "١٢"] {
            assert!(matches!(idr(text), Err(MoneyError::NotANumber(_))), "{text:?}");
        }
        assert!(matches!(idr("1000000000000.01"), Err(MoneyError::AboveMaximum { .. })));
        assert!(matches!(idr("99999999999999999999999999999"), Err(MoneyError::AboveMaximum { .. })));
        assert!(matches!(
            Amount::parse("2000000.01", Currency::IDR, 200_000_000),
            Err(MoneyError::AboveMaximum { .. })
        ));
        assert!(matches!(Currency::parse("XYZ"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(Currency::parse("idr"), Err(MoneyError::UnknownCurrency(_))));
    }

    #[test]
    fn formats_with_the_currency_decimals() {
        assert_eq!(Currency::IDR.format_minor(1_250_000), "12500.00");
        assert_eq!(Currency::IDR.format_minor(-5), "-0.05");
        assert_eq!(Currency::parse("JPY").unwrap().format_minor(150), "150");
    }

    #[test]
    fn fees_round_half_even() {
        let rate = FeeRate::parse("0.007").unwrap();
        // 0.7 % of Rp 12,500.00 = Rp 87.50 exactly.
        assert_eq!(rate.fee_minor(1_250_000), 8_750);
        // 0.5 % of 100 minor = 0.5 -> 0 (even); of 300 minor = 1.5 -> 2 (even).
        let half = FeeRate::parse("0.005").unwrap();
        assert_eq!(half.fee_minor(100), 0);
        assert_eq!(half.fee_minor(300), 2);
        assert_eq!(half.fee_minor(500), 2); // 2.5 -> 2
        assert_eq!(FeeRate::parse("1").unwrap().fee_minor(42), 42);
        for bad in ["1.01", "-0.1", "abc", "", "0.0000001", "1.", ".5", ".", "0..1", "0.1.2"] {
            assert!(FeeRate::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,50}") {
            let _ = idr(&text);
            let _ = parse_signed_minor(&text, Currency::IDR);
            let _ = FeeRate::parse(&text);
        }

        #[test]
        fn format_and_parse_round_trip(minor in 1i64..=AMOUNT_MAX_MINOR) {
            let text = Currency::IDR.format_minor(minor);
            proptest::prop_assert_eq!(idr(&text), Ok(minor));
        }
    }
}
