//! `GET /v1/transparency`: a city day's totals (the day in the city's time zone) per merchant
//! category and public service, for anyone, with no personal data; the `/transparency`
//! page renders the same totals. Answers come from a per-day cache, so a flood of requests
//! costs one computation: a closed day (ended over a minute ago; no entry can still be
//! timed in it) is computed once and kept, today's totals at most
//! `transparency_cache_ms` old. One computation runs at a time; requests that arrive
//! meanwhile wait for it and take its answer. The `X-Kartu-Cache` header says `hit` or `miss`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use ledger::domain::{AccountId, EntryKind};
use ledger::EventFilter;
use serde::Deserialize;

use crate::error::ApiError;
use crate::wire::money;
use crate::{blocking, AppState};
pub use client::wire::{CategoryTotal, ServiceTotal, Transparency};

/// Closed days kept at most; the oldest are dropped past it (each is a few hundred bytes).
const CLOSED_DAYS_MAX: usize = 4096;
/// How long after a day's end its totals are final.
const CLOSE_AFTER_US: i64 = 60_000_000;

/// The per-day cache of [`DayTotals`].
#[derive(Debug, Default)]
pub struct TransparencyCache {
    /// One computation at a time; the others wait here and then find its answer.
    compute: tokio::sync::Mutex<()>,
    days: std::sync::Mutex<HashMap<chrono::NaiveDate, Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    totals: Arc<DayTotals>,
    closed: bool,
    made: Instant,
}

impl TransparencyCache {
    fn get(&self, day: chrono::NaiveDate, fresh_for: Duration) -> Option<Arc<DayTotals>> {
        let days = self.days.lock().ok()?;
        let c = days.get(&day)?;
        (c.closed || c.made.elapsed() < fresh_for).then(|| c.totals.clone())
    }

    fn put(&self, day: chrono::NaiveDate, totals: Arc<DayTotals>, closed: bool) {
        if let Ok(mut days) = self.days.lock() {
            if days.len() >= CLOSED_DAYS_MAX && !days.contains_key(&day) {
                if let Some(oldest) = days.keys().min().copied() {
                    days.remove(&oldest);
                }
            }
            days.insert(day, Cached { totals, closed, made: Instant::now() });
        }
    }
}

/// One public service's access decisions on a day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceCount {
    /// Entries allowed.
    pub allowed: u64,
    /// Entries refused.
    pub denied: u64,
    /// Refusals by reason code.
    pub reasons: BTreeMap<String, u64>,
}

/// A city day's totals in minor units of the installation's currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayTotals {
    /// The day (city time).
    pub day: chrono::NaiveDate,
    /// Per merchant category: (payments, amount, refunded).
    pub merchants: CategoryTotals,
    /// Per public service.
    pub services: BTreeMap<String, ServiceCount>,
    /// The day's top-ups, minor units.
    pub topups: i64,
    /// The log's size when they were computed.
    pub tree_size: i64,
}

impl DayTotals {
    /// Payments and captures, all categories.
    pub fn payments(&self) -> u64 {
        self.merchants.values().map(|t| t.0).sum()
    }
    /// Their amount.
    pub fn paid(&self) -> i64 {
        self.merchants.values().map(|t| t.1).sum()
    }
    /// Refunds, all categories.
    pub fn refunded(&self) -> i64 {
        self.merchants.values().map(|t| t.2).sum()
    }
    /// Access decisions, all services.
    pub fn decisions(&self) -> u64 {
        self.services.values().map(|s| s.allowed + s.denied).sum()
    }
}

/// Transparency query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DayQuery {
    /// The day in the city's time zone (`timezone` in `kartu.toml`), YYYY-MM-DD; today
    /// when omitted.
    #[param(format = Date)]
    pub date: Option<String>,
}

/// The day a query names, or the city's today.
pub fn day_of(state: &AppState, date: Option<&str>) -> Result<chrono::NaiveDate, ApiError> {
    match date {
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| ApiError::bad_request("invalid_query", "date must be YYYY-MM-DD")),
        None => Ok(today(state)),
    }
}

/// Today in the city's time zone.
pub fn today(state: &AppState) -> chrono::NaiveDate {
    domain::access::local_day(state.settings.timezone, state.ledger.now_us())
        .map(|(now, _)| now.date_naive())
        .unwrap_or_default()
}

/// Where a city day begins and ends, µs since the epoch: [start, end).
pub fn day_bounds(tz: chrono_tz::Tz, day: chrono::NaiveDate) -> (i64, i64) {
    use chrono::TimeZone as _;
    let midnight = |d: chrono::NaiveDate| {
        d.and_hms_opt(0, 0, 0).and_then(|t| tz.from_local_datetime(&t).earliest()).map_or(0, |t| t.timestamp_micros())
    };
    (midnight(day), midnight(day.succ_opt().unwrap_or(day)))
}

/// Daily totals per merchant category and public service: no personal data, for anyone.
#[utoipa::path(get, path = "/v1/transparency", tag = "public", security(()), params(DayQuery), responses((status = 200, body = Transparency)))]
pub async fn transparency(state: web::Data<AppState>, q: web::Query<DayQuery>) -> Result<HttpResponse, ApiError> {
    let day = day_of(&state, q.date.as_deref())?;
    let (totals, hit) = totals(&state, day).await?;
    let body = serde_json::to_vec(&wire(&state, &totals)).map_err(|_| ApiError::internal("transparency"))?;
    let fresh_for = state.settings.transparency_cache;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("x-kartu-cache", if hit { "hit" } else { "miss" }))
        .insert_header(("cache-control", format!("public, max-age={}", fresh_for.as_secs().max(1))))
        .body(body))
}

/// A city day's totals, from the cache when it may answer (`true`), else computed.
pub async fn totals(state: &web::Data<AppState>, day: chrono::NaiveDate) -> Result<(Arc<DayTotals>, bool), ApiError> {
    let cache = &state.transparency;
    let fresh_for = state.settings.transparency_cache;
    if let Some(t) = cache.get(day, fresh_for) {
        return Ok((t, true));
    }
    let _computing = cache.compute.lock().await;
    if let Some(t) = cache.get(day, fresh_for) {
        return Ok((t, true));
    }
    let (start, end) = day_bounds(state.settings.timezone, day);
    let closed = state.ledger.now_us() >= end.saturating_add(CLOSE_AFTER_US);
    let st = state.clone();
    let t = Arc::new(blocking(move || day_totals(&st, day, start, end)).await?);
    cache.put(day, t.clone(), closed);
    Ok((t, false))
}

fn wire(state: &AppState, t: &DayTotals) -> Transparency {
    let currency = state.settings.currency;
    Transparency {
        date: t.day.format("%Y-%m-%d").to_string(),
        timezone: state.settings.timezone.name().to_owned(),
        merchants: t
            .merchants
            .iter()
            .map(|(category, (n, amount, refunded))| CategoryTotal {
                category: category.clone(),
                payments: *n,
                amount: money(*amount, currency),
                refunded: money(*refunded, currency),
            })
            .collect(),
        services: t
            .services
            .iter()
            .map(|(service, s)| ServiceTotal {
                service: service.clone(),
                allowed: s.allowed,
                denied: s.denied,
                denied_by_reason: s.reasons.clone(),
            })
            .collect(),
        topups: money(t.topups, currency),
        tree_size: t.tree_size,
    }
}

/// A day's totals (blocking): the day is [`start`, `end`) in µs.
fn day_totals(state: &AppState, day: chrono::NaiveDate, start: i64, end: i64) -> Result<DayTotals, ApiError> {
    let (merchants, topups) = merchant_totals(state, start, end)?;
    Ok(DayTotals {
        day,
        merchants,
        services: service_totals(state, start, end)?,
        topups,
        tree_size: state.reports.tree_size()?,
    })
}

/// Per merchant category: (payments, amount, refunded), minor units.
pub type CategoryTotals = BTreeMap<String, (u64, i64, i64)>;

/// Per merchant category and the day's top-ups, in the installation's currency.
fn merchant_totals(state: &AppState, start: i64, end: i64) -> Result<(CategoryTotals, i64), ApiError> {
    let currency = state.settings.currency;
    let categories: HashMap<AccountId, String> = state
        .reports
        .registry(|r| r.merchants())?
        .into_iter()
        .map(|m| (m.account_id, m.category.as_str().to_owned()))
        .collect();
    let mut merchants = CategoryTotals::new();
    let mut topups = 0i64;
    let mut next = state.reports.seq_at(start - 1)? + 1;
    'entries: loop {
        let page = state.reports.entries(next, ledger::PAGE_MAX)?;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for e in &page {
            if e.time_us >= end {
                break 'entries;
            }
            if e.currency != currency {
                continue;
            }
            let category = e.counterparty_id.and_then(|a| categories.get(&a)).cloned();
            match (e.kind, category) {
                (EntryKind::Payment | EntryKind::Capture, Some(c)) => {
                    let t = merchants.entry(c).or_default();
                    t.0 += 1;
                    t.1 += e.amount_minor;
                }
                (EntryKind::Refund, Some(c)) => merchants.entry(c).or_default().2 += e.amount_minor,
                (EntryKind::Topup, _) => topups += e.amount_minor,
                _ => {}
            }
        }
    }
    Ok((merchants, topups))
}

/// Per public service, the day's access decisions: (allowed, denied).
fn service_totals(state: &AppState, start: i64, end: i64) -> Result<BTreeMap<String, ServiceCount>, ApiError> {
    let services: HashMap<String, String> = state
        .reports
        .registry(|r| r.service_points())?
        .into_iter()
        .map(|s| (format!("service_point:{}", s.id), s.service))
        .collect();
    let mut by_service: BTreeMap<String, ServiceCount> = BTreeMap::new();
    let filter = EventFilter { kind: Some("access_decision".into()), since_us: Some(start), ..Default::default() };
    let mut after = 0;
    'events: loop {
        let page = state.reports.events(&filter, after, ledger::PAGE_MAX)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in &page {
            if e.time_us >= end {
                break 'events;
            }
            let service = e.scope.as_ref().and_then(|s| services.get(s)).cloned().unwrap_or_else(|| "other".into());
            let payload = serde_json::from_str::<serde_json::Value>(&e.payload).unwrap_or_default();
            let t = by_service.entry(service).or_default();
            if payload["decision"] == "allow" {
                t.allowed += 1;
            } else {
                t.denied += 1;
                let reason = payload["reason"].as_str().filter(|r| !r.is_empty()).unwrap_or("other");
                *t.reasons.entry(reason.to_owned()).or_default() += 1;
            }
        }
    }
    Ok(by_service)
}
