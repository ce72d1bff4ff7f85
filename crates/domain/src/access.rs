//! Access to public services (SPEC §8): a service point's [`Policy`] admits holders by
//! category during its opening hours, and limits each holder's entries per local day
//! ([`Limits::check`]: daily quota, anti-passback).
//!
//! The order of the checks is the contract, shared by the server and offline gates:
//! entitlement, opening hours, passback, quota. The first that fails is the reason.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone as _};
use serde::{Deserialize, Serialize};

use crate::registry::{Categories, Category};

/// Holder categories that policies refer to.
pub const CATEGORIES: &[&str] = Category::NAMES;

/// The default time zone of a policy's hours and days.
pub const DEFAULT_TIMEZONE: &str = "Asia/Makassar";

const MINUTE_US: i64 = 60_000_000;

/// Who may enter a service point, and when: the policy as the operator writes it (JSON).
/// [`Policy::rules`] checks it and gives the typed [`Rules`] that decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Holder categories admitted (resident, student, senior, insured, staff); empty admits
    /// every registered holder.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Opening time, local "HH:MM".
    pub opens: Option<String>,
    /// Closing time, local "HH:MM" (exclusive); before `opens` for a night shift.
    pub closes: Option<String>,
    /// IANA time zone of the opening hours and of the day (default Asia/Makassar).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Entries allowed per holder per local day.
    pub daily_quota: Option<u32>,
    /// A holder allowed in may not be allowed again within this many minutes.
    pub anti_passback_minutes: Option<u32>,
    /// Allowed entries get the day's next queue number.
    #[serde(default)]
    pub issues_queue_numbers: bool,
}

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.into()
}

/// What is wrong with a policy; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A category that is not one of [`CATEGORIES`].
    #[error("unknown category {0:?}")]
    UnknownCategory(String),
    /// `opens` or `closes` is not HH:MM.
    #[error("policy.{0} must be HH:MM")]
    Time(&'static str),
    /// Only one of `opens` and `closes`.
    #[error("policy.opens and policy.closes go together")]
    HoursTogether,
    /// Not an IANA time zone.
    #[error("policy.timezone is not an IANA time zone")]
    TimeZone,
    /// A quota of zero would admit nobody.
    #[error("policy.daily_quota must be at least 1")]
    ZeroQuota,
}

/// Why a card is refused entry; [`Refusal::code`] is the reason the API and the audit log
/// give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The card is blocked (online) or on the deny list (offline).
    #[error("this card is blocked")]
    CardBlocked,
    /// The policy does not admit the holder's categories.
    #[error("the holder is not entitled here")]
    NotEntitled,
    /// Outside the opening hours.
    #[error("closed")]
    Closed,
    /// Allowed in too recently.
    #[error("entered too recently")]
    Passback,
    /// The day's entries are used up.
    #[error("today's entries are used up")]
    QuotaReached,
    /// The policy cannot be read (an offline gate's synced copy with a bad time zone or
    /// time): nobody is let in on it.
    #[error("the policy is unreadable")]
    BadPolicy,
}

impl Refusal {
    /// The reason code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Refusal::CardBlocked => "card_blocked",
            Refusal::NotEntitled => "not_entitled",
            Refusal::Closed => "closed",
            Refusal::Passback => "passback",
            Refusal::QuotaReached => "quota_reached",
            Refusal::BadPolicy => "bad_policy",
        }
    }
}

/// Opening hours: open from `opens` (inclusive) to `closes` (exclusive), local time; when
/// `closes` is not after `opens`, the hours span midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    /// Opening time.
    pub opens: NaiveTime,
    /// Closing time (exclusive).
    pub closes: NaiveTime,
}

impl Hours {
    /// Whether the hours include local time `t`.
    #[must_use]
    pub fn include(self, t: NaiveTime) -> bool {
        if self.opens <= self.closes {
            t >= self.opens && t < self.closes
        } else {
            t >= self.opens || t < self.closes
        }
    }
}

/// A holder's entry limits at one service point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Entries allowed per local day.
    pub daily_quota: Option<u32>,
    /// No second entry within this many microseconds.
    pub passback_us: Option<i64>,
}

impl Limits {
    /// Whether there is any limit to keep (and so any earlier entry to count).
    #[must_use]
    pub const fn any(self) -> bool {
        self.daily_quota.is_some() || self.passback_us.is_some()
    }

    /// Checks an entry at `now_us` against the times (µs) the holder was allowed in
    /// before; `day_start_us` is the start of `now_us`'s local day. Passback first, then
    /// the quota. A time after `now_us` (a clock that went back) counts as "too recent".
    ///
    /// # Errors
    /// [`Refusal::Passback`] or [`Refusal::QuotaReached`].
    pub fn check(self, now_us: i64, day_start_us: i64, allowed_before: &[i64]) -> Result<(), Refusal> {
        if let Some(window) = self.passback_us {
            if allowed_before.iter().any(|t| now_us.saturating_sub(*t) < window) {
                return Err(Refusal::Passback);
            }
        }
        if let Some(quota) = self.daily_quota {
            let today = allowed_before.iter().filter(|t| **t >= day_start_us).count();
            if today >= quota as usize {
                return Err(Refusal::QuotaReached);
            }
        }
        Ok(())
    }
}

/// A checked policy: what decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Admitted categories (empty: every holder).
    pub categories: Categories,
    /// Opening hours, when the service point has them.
    pub hours: Option<Hours>,
    /// The time zone of the hours and of the day.
    pub timezone: chrono_tz::Tz,
    /// The holder's limits.
    pub limits: Limits,
    /// Allowed entries get a queue number.
    pub issues_queue_numbers: bool,
}

/// The local day a time falls in, and when that day started (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDay {
    /// The date.
    pub date: NaiveDate,
    /// Its first microsecond.
    pub start_us: i64,
}

impl Policy {
    /// Checks the policy and gives the rules it stands for.
    ///
    /// # Errors
    /// [`PolicyError`], naming the field.
    pub fn rules(&self) -> Result<Rules, PolicyError> {
        let categories =
            Categories::parse_names(&self.categories).map_err(|e| PolicyError::UnknownCategory(e.value))?;
        let hours = hours(self.opens.as_deref(), self.closes.as_deref())?;
        let timezone = timezone(&self.timezone)?;
        if self.daily_quota == Some(0) {
            return Err(PolicyError::ZeroQuota);
        }
        let limits = Limits {
            daily_quota: self.daily_quota,
            passback_us: self.anti_passback_minutes.map(|m| i64::from(m) * MINUTE_US),
        };
        Ok(Rules { categories, hours, timezone, limits, issues_queue_numbers: self.issues_queue_numbers })
    }
}

/// Opening hours from their "HH:MM" texts (both or neither).
///
/// # Errors
/// [`PolicyError::Time`] or [`PolicyError::HoursTogether`].
pub fn hours(opens: Option<&str>, closes: Option<&str>) -> Result<Option<Hours>, PolicyError> {
    let hhmm = |field: &'static str, t: Option<&str>| {
        t.map(|t| NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| PolicyError::Time(field))).transpose()
    };
    match (hhmm("opens", opens)?, hhmm("closes", closes)?) {
        (Some(opens), Some(closes)) => Ok(Some(Hours { opens, closes })),
        (None, None) => Ok(None),
        _ => Err(PolicyError::HoursTogether),
    }
}

/// An IANA time zone.
///
/// # Errors
/// [`PolicyError::TimeZone`].
pub fn timezone(name: &str) -> Result<chrono_tz::Tz, PolicyError> {
    name.parse().map_err(|_| PolicyError::TimeZone)
}

/// `now_us` in `tz`, and its local day.
#[must_use]
pub fn local_day(tz: chrono_tz::Tz, now_us: i64) -> Option<(DateTime<chrono_tz::Tz>, LocalDay)> {
    let now = tz.timestamp_micros(now_us).single()?;
    let date = now.date_naive();
    // The first local microsecond of the day (a day whose midnight a DST change skips
    // starts at the change; none of Indonesia's zones has DST).
    let start_us =
        tz.from_local_datetime(&date.and_time(NaiveTime::MIN)).earliest().map_or(now_us, |d| d.timestamp_micros());
    Some((now, LocalDay { date, start_us }))
}

impl Rules {
    /// Whether the policy admits a holder of these categories.
    #[must_use]
    pub fn admits(&self, holder_categories: Categories) -> bool {
        self.categories.is_empty() || self.categories.intersects(holder_categories)
    }

    /// The decision before the holder's earlier entries are known: entitlement, then the
    /// opening hours. On success, the local day of `now_us` (for the limits and the queue).
    ///
    /// # Errors
    /// [`Refusal::NotEntitled`] or [`Refusal::Closed`].
    pub fn admit(&self, holder_categories: Categories, now_us: i64) -> Result<LocalDay, Refusal> {
        if !self.admits(holder_categories) {
            return Err(Refusal::NotEntitled);
        }
        self.open_at(now_us)
    }

    /// The opening-hours check alone (an offline gate knows entitlement by UID).
    ///
    /// # Errors
    /// [`Refusal::Closed`].
    pub fn open_at(&self, now_us: i64) -> Result<LocalDay, Refusal> {
        // A time the time zone cannot place (far outside chrono's range) is refused: closed.
        let (now, day) = local_day(self.timezone, now_us).ok_or(Refusal::Closed)?;
        if self.hours.is_some_and(|h| !h.include(now.time())) {
            return Err(Refusal::Closed);
        }
        Ok(day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;
    const M: i64 = MINUTE_US;
    /// 2026-12-02 00:00 in Asia/Makassar (UTC+8), µs.
    const DAY: i64 = 1_796_140_800_000_000;

    fn policy(json: &str) -> Policy {
        serde_json::from_str(json).expect("policy JSON")
    }

    fn check_policy(json: &str, expect: Result<(), PolicyError>) {
        assert_eq!(policy(json).rules().map(|_| ()), expect, "{json}");
    }

    #[test]
    fn policies_are_checked_field_by_field() {
        check_policy(r#"{}"#, Ok(()));
        check_policy(r#"{"categories":["insured","student"],"opens":"07:30","closes":"16:00"}"#, Ok(()));
        check_policy(r#"{"opens":"22:00","closes":"06:00","timezone":"Asia/Jakarta"}"#, Ok(()));
        check_policy(r#"{"categories":["pirate"]}"#, Err(PolicyError::UnknownCategory("pirate".into())));
        check_policy(r#"{"opens":"7:30pm","closes":"16:00"}"#, Err(PolicyError::Time("opens")));
        check_policy(r#"{"opens":"07:30","closes":"24:00"}"#, Err(PolicyError::Time("closes")));
        check_policy(r#"{"opens":"07:30"}"#, Err(PolicyError::HoursTogether));
        check_policy(r#"{"closes":"07:30"}"#, Err(PolicyError::HoursTogether));
        check_policy(r#"{"timezone":"Mars/Olympus"}"#, Err(PolicyError::TimeZone));
        check_policy(r#"{"daily_quota":0}"#, Err(PolicyError::ZeroQuota));
        assert!(serde_json::from_str::<Policy>(r#"{"quota":1}"#).is_err(), "unknown fields are refused");
        assert_eq!(PolicyError::Time("opens").to_string(), "policy.opens must be HH:MM");
    }

    fn check_admit(json: &str, categories: &[&str], now_us: i64, expect: Result<i64, Refusal>) {
        let rules = policy(json).rules().expect("rules");
        let categories = Categories::parse_names(categories).expect("categories");
        let got = rules.admit(categories, now_us).map(|day| day.start_us);
        assert_eq!(got, expect, "{json} {categories:?} at +{} min", (now_us - DAY) / M);
    }

    #[test]
    fn entitlement_then_hours() {
        let clinic = r#"{"categories":["insured"],"opens":"07:30","closes":"16:00"}"#;
        check_admit(clinic, &["resident", "insured"], DAY + 9 * H, Ok(DAY));
        check_admit(clinic, &["resident"], DAY + 9 * H, Err(Refusal::NotEntitled));
        // Entitlement is checked first: not entitled and closed says not entitled.
        check_admit(clinic, &["resident"], DAY + 20 * H, Err(Refusal::NotEntitled));
        check_admit(clinic, &["insured"], DAY + 7 * H + 29 * M, Err(Refusal::Closed));
        check_admit(clinic, &["insured"], DAY + 7 * H + 30 * M, Ok(DAY));
        check_admit(clinic, &["insured"], DAY + 16 * H - 1, Ok(DAY));
        check_admit(clinic, &["insured"], DAY + 16 * H, Err(Refusal::Closed));
        check_admit(r#"{}"#, &[], DAY + 3 * H, Ok(DAY));
        // A night shift spans midnight; the day is the local date.
        let night = r#"{"opens":"22:00","closes":"06:00"}"#;
        check_admit(night, &[], DAY + 23 * H, Ok(DAY));
        check_admit(night, &[], DAY + 24 * H + 5 * H, Ok(DAY + 24 * H));
        check_admit(night, &[], DAY + 6 * H, Err(Refusal::Closed));
        check_admit(night, &[], DAY + 12 * H, Err(Refusal::Closed));
        // Another zone moves the day: 2026-12-02 00:00 WITA is 2026-12-01 23:00 WIB.
        check_admit(r#"{"timezone":"Asia/Jakarta"}"#, &[], DAY, Ok(DAY - 23 * H));
    }

    fn check_limits(limits: Limits, now_us: i64, before: &[i64], expect: Result<(), Refusal>) {
        assert_eq!(limits.check(now_us, DAY, before), expect, "{limits:?} at {now_us} after {before:?}");
    }

    #[test]
    fn passback_then_quota() {
        let both = Limits { daily_quota: Some(2), passback_us: Some(30 * M) };
        let at = |h: i64, m: i64| DAY + h * H + m * M;
        check_limits(both, at(9, 0), &[], Ok(()));
        check_limits(both, at(9, 29), &[at(9, 0)], Err(Refusal::Passback));
        check_limits(both, at(9, 30), &[at(9, 0)], Ok(()));
        check_limits(both, at(15, 0), &[at(7, 0), at(9, 0)], Err(Refusal::QuotaReached));
        // Passback is checked first.
        check_limits(both, at(9, 10), &[at(7, 0), at(9, 0)], Err(Refusal::Passback));
        // Yesterday's entries do not count against today's quota, and passback crosses midnight.
        check_limits(both, at(10, 0), &[at(-2, 0), at(-1, 0)], Ok(()));
        check_limits(both, at(0, 10), &[at(0, -5)], Err(Refusal::Passback));
        // A time after now (a clock that went back) is too recent.
        check_limits(both, at(9, 0), &[at(10, 0)], Err(Refusal::Passback));
        check_limits(Limits::default(), at(9, 0), &[at(9, 0), at(9, 0), at(9, 0)], Ok(()));
        check_limits(
            Limits { daily_quota: Some(1), passback_us: None },
            at(9, 0),
            &[at(8, 59)],
            Err(Refusal::QuotaReached),
        );
        assert!(!Limits::default().any() && both.any());
    }

    #[test]
    fn reason_codes_are_stable() {
        let codes: Vec<&str> = [
            Refusal::CardBlocked,
            Refusal::NotEntitled,
            Refusal::Closed,
            Refusal::Passback,
            Refusal::QuotaReached,
            Refusal::BadPolicy,
        ]
        .into_iter()
        .map(Refusal::code)
        .collect();
        assert_eq!(codes, ["card_blocked", "not_entitled", "closed", "passback", "quota_reached", "bad_policy"]);
    }
}
