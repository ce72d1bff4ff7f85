//! `GET /v1/transparency`: a day's totals per merchant category and public service, for
//! anyone, with no personal data. Answers come from a per-day cache, so a flood of requests
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

/// The per-day cache of [`Transparency`] answers (serialised JSON).
#[derive(Debug, Default)]
pub struct TransparencyCache {
    /// One computation at a time; the others wait here and then find its answer.
    compute: tokio::sync::Mutex<()>,
    days: std::sync::Mutex<HashMap<chrono::NaiveDate, Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    json: Arc<[u8]>,
    closed: bool,
    made: Instant,
}

impl TransparencyCache {
    fn get(&self, day: chrono::NaiveDate, fresh_for: Duration) -> Option<Arc<[u8]>> {
        let days = self.days.lock().ok()?;
        let c = days.get(&day)?;
        (c.closed || c.made.elapsed() < fresh_for).then(|| c.json.clone())
    }

    fn put(&self, day: chrono::NaiveDate, json: Arc<[u8]>, closed: bool) {
        if let Ok(mut days) = self.days.lock() {
            if days.len() >= CLOSED_DAYS_MAX && !days.contains_key(&day) {
                if let Some(oldest) = days.keys().min().copied() {
                    days.remove(&oldest);
                }
            }
            days.insert(day, Cached { json, closed, made: Instant::now() });
        }
    }
}

/// Transparency query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DayQuery {
    /// The UTC day, YYYY-MM-DD; today when omitted.
    #[param(format = Date)]
    pub date: Option<String>,
}

/// Daily totals per merchant category and public service: no personal data, for anyone.
#[utoipa::path(get, path = "/v1/transparency", tag = "public", security(()), params(DayQuery), responses((status = 200, body = Transparency)))]
pub async fn transparency(state: web::Data<AppState>, q: web::Query<DayQuery>) -> Result<HttpResponse, ApiError> {
    let day = match &q.date {
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| ApiError::bad_request("invalid_query", "date must be YYYY-MM-DD"))?,
        None => {
            chrono::DateTime::from_timestamp_micros(state.ledger.now_us()).map(|t| t.date_naive()).unwrap_or_default()
        }
    };
    let start = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros()).unwrap_or(0);
    let end = start + 86_400_000_000;
    let cache = &state.transparency;
    let fresh_for = state.settings.transparency_cache;
    if let Some(json) = cache.get(day, fresh_for) {
        return Ok(answer(json, true, fresh_for));
    }
    let _computing = cache.compute.lock().await;
    if let Some(json) = cache.get(day, fresh_for) {
        return Ok(answer(json, true, fresh_for));
    }
    let closed = state.ledger.now_us() >= end.saturating_add(CLOSE_AFTER_US);
    let st = state.clone();
    let t = blocking(move || day_totals(&st, day, start, end)).await?;
    let json: Arc<[u8]> = serde_json::to_vec(&t).map_err(|_| ApiError::internal("transparency"))?.into();
    cache.put(day, json.clone(), closed);
    Ok(answer(json, false, fresh_for))
}

/// A day's totals (blocking): the day is [`start`, `end`) in µs.
fn day_totals(state: &AppState, day: chrono::NaiveDate, start: i64, end: i64) -> Result<Transparency, ApiError> {
    let currency = state.settings.currency;
    let (merchants, topups) = merchant_totals(state, start, end)?;
    Ok(Transparency {
        date: day.format("%Y-%m-%d").to_string(),
        merchants: merchants
            .into_iter()
            .map(|(category, (n, amount, refunded))| CategoryTotal {
                category,
                payments: n,
                amount: money(amount, currency),
                refunded: money(refunded, currency),
            })
            .collect(),
        services: service_totals(state, start, end)?
            .into_iter()
            .map(|(service, (allowed, denied))| ServiceTotal { service, allowed, denied })
            .collect(),
        topups: money(topups, currency),
        tree_size: state.ledger.tree_size()?,
    })
}

/// Per merchant category: (payments, amount, refunded), minor units.
type CategoryTotals = BTreeMap<String, (u64, i64, i64)>;

/// Per merchant category and the day's top-ups, in the installation's currency.
fn merchant_totals(state: &AppState, start: i64, end: i64) -> Result<(CategoryTotals, i64), ApiError> {
    let currency = state.settings.currency;
    let categories: HashMap<AccountId, String> = state
        .ledger
        .registry(|r| r.merchants())?
        .into_iter()
        .map(|m| (m.account_id, m.category.as_str().to_owned()))
        .collect();
    let mut merchants = CategoryTotals::new();
    let mut topups = 0i64;
    let mut next = state.ledger.seq_at(start - 1)? + 1;
    'entries: loop {
        let page = state.ledger.entries(next, ledger::PAGE_MAX)?;
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
fn service_totals(state: &AppState, start: i64, end: i64) -> Result<BTreeMap<String, (u64, u64)>, ApiError> {
    let services: HashMap<String, String> = state
        .ledger
        .registry(|r| r.service_points())?
        .into_iter()
        .map(|s| (format!("service_point:{}", s.id), s.service))
        .collect();
    let mut by_service: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let filter = EventFilter { kind: Some("access_decision".into()), since_us: Some(start), ..Default::default() };
    let mut after = 0;
    'events: loop {
        let page = state.ledger.events(&filter, after, ledger::PAGE_MAX)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in &page {
            if e.time_us >= end {
                break 'events;
            }
            let service = e.scope.as_ref().and_then(|s| services.get(s)).cloned().unwrap_or_else(|| "other".into());
            let allowed = serde_json::from_str::<serde_json::Value>(&e.payload).is_ok_and(|p| p["decision"] == "allow");
            let t = by_service.entry(service).or_default();
            if allowed {
                t.0 += 1;
            } else {
                t.1 += 1;
            }
        }
    }
    Ok(by_service)
}

fn answer(json: Arc<[u8]>, hit: bool, fresh_for: Duration) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("x-kartu-cache", if hit { "hit" } else { "miss" }))
        .insert_header(("cache-control", format!("public, max-age={}", fresh_for.as_secs().max(1))))
        .body(json.to_vec())
}
