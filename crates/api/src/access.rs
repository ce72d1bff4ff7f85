//! Access to public services (SPEC §8): a service point's policy decides allow or deny with
//! a reason code; a clinic gives queue numbers; every decision is a leaf of the audit log.

use actix_web::{web, HttpResponse};
use chrono::{NaiveTime, TimeZone};
use ledger::domain::{AccessLimit, Event, Rejection};
use ledger::registry::ServicePoint;
use ledger::LedgerError;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Caller, IdempotencyKey, Role};
use crate::error::ApiError;
use crate::operator::{split_categories, CATEGORIES};
use crate::wire::{self, Tap};
use crate::{blocking, AppState};

/// Registers the service point route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/access-checks", web::post().to(access_check));
}

/// Who may enter a service point, and when.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Holder categories admitted (resident, student, senior, insured, staff); empty admits
    /// every registered holder.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Opening time, local "HH:MM".
    pub opens: Option<String>,
    /// Closing time, local "HH:MM" (exclusive).
    pub closes: Option<String>,
    /// IANA time zone of the opening hours and of the day (default Asia/Makassar).
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// Entries allowed per holder per local day.
    pub daily_quota: Option<u32>,
    /// A holder allowed in may not be allowed again within this many minutes.
    pub anti_passback_minutes: Option<u32>,
    /// Allowed entries get the day's next queue number.
    #[serde(default)]
    pub issues_queue_numbers: bool,
}

fn default_tz() -> String {
    "Asia/Makassar".into()
}

fn hhmm(field: &str, v: &Option<String>) -> Result<Option<NaiveTime>, ApiError> {
    v.as_deref()
        .map(|t| {
            NaiveTime::parse_from_str(t, "%H:%M")
                .map_err(|_| ApiError::unprocessable("invalid_field", format!("policy.{field} must be HH:MM")))
        })
        .transpose()
}

impl Policy {
    /// Checks the policy.
    pub fn check(&self) -> Result<(), ApiError> {
        if let Some(bad) = self.categories.iter().find(|c| !CATEGORIES.contains(&c.as_str())) {
            return Err(ApiError::unprocessable("invalid_field", format!("unknown category {bad:?}")));
        }
        let (o, c) = (hhmm("opens", &self.opens)?, hhmm("closes", &self.closes)?);
        if o.is_some() != c.is_some() {
            return Err(ApiError::unprocessable("invalid_field", "policy.opens and policy.closes go together"));
        }
        self.tz()?;
        if self.daily_quota == Some(0) {
            return Err(ApiError::unprocessable("invalid_field", "policy.daily_quota must be at least 1"));
        }
        Ok(())
    }

    fn tz(&self) -> Result<chrono_tz::Tz, ApiError> {
        self.timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| ApiError::unprocessable("invalid_field", "policy.timezone is not an IANA time zone"))
    }
}

/// `POST /v1/access-checks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessCheck {
    /// The card's tap.
    pub tap: Tap,
}

/// The decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// allow or deny.
    pub decision: String,
    /// Why: entitled, or card_blocked, card_unknown, replay, not_entitled, closed,
    /// quota_reached, passback.
    pub reason: String,
    /// For clinics: today's queue number.
    pub queue_number: Option<i64>,
    /// The card, when known.
    pub card_id: Option<String>,
    /// When (RFC 3339).
    pub checked_at: String,
    /// The decision's leaf in the audit log.
    pub leaf_index: Option<i64>,
    /// Its leaf hash.
    pub leaf_hash: Option<String>,
}

/// The decision a policy gives a holder now by who they are and the opening hours, before
/// the tap's freshness is known; with the holder's quota and passback for the writer to
/// check against the decisions it already recorded (so concurrent checks cannot exceed
/// them).
fn decide(
    sp: &ServicePoint,
    policy: &Policy,
    holder_id: i64,
    holder_categories: &[String],
    now_us: i64,
) -> Result<(&'static str, Option<String>, Option<AccessLimit>), ApiError> {
    if !policy.categories.is_empty() && !holder_categories.iter().any(|c| policy.categories.contains(c)) {
        return Ok(("not_entitled", None, None));
    }
    let tz = policy.tz()?;
    let now = tz.timestamp_micros(now_us).single().ok_or_else(|| ApiError::internal("time"))?;
    if let (Some(o), Some(c)) = (hhmm("opens", &policy.opens)?, hhmm("closes", &policy.closes)?) {
        let t = now.time();
        let open = if o <= c { t >= o && t < c } else { t >= o || t < c };
        if !open {
            return Ok(("closed", None, None));
        }
    }
    let day = now.date_naive();
    let day_start = tz
        .from_local_datetime(&day.and_time(NaiveTime::MIN))
        .earliest()
        .map(|d| d.timestamp_micros())
        .unwrap_or(now_us);
    let queue = policy.issues_queue_numbers.then(|| format!("service_point:{}:{}", sp.id, day.format("%Y-%m-%d")));
    // The holder, not the card: a replaced card does not reset the quota.
    let limit = (policy.daily_quota.is_some() || policy.anti_passback_minutes.is_some()).then(|| AccessLimit {
        holder_key: format!("service_point:{}:holder:{holder_id}", sp.id),
        day_start_us: day_start,
        daily_quota: policy.daily_quota,
        passback_us: policy.anti_passback_minutes.map(|m| i64::from(m) * 60_000_000),
    });
    Ok(("entitled", queue, limit))
}

/// Decides whether a card holder may enter or be served, logs the decision, and gives a
/// queue number when the service point issues them.
#[utoipa::path(post, path = "/v1/access-checks", tag = "service point", request_body = AccessCheck, params(("Idempotency-Key" = String, Header)),
    responses((status = 200, body = Decision), (status = 422, body = crate::error::Problem)))]
pub async fn access_check(
    state: web::Data<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    body: web::Json<AccessCheck>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::ServicePoint])?;
    let sp_id = caller.credential.service_point_id.ok_or_else(|| ApiError::forbidden("no service point"))?;
    let tap = state.taps.verify(&body.tap)?;
    let st = state.clone();
    let k = caller.key(&idem.0);
    if let Some(earlier) = blocking(move || Ok(st.ledger.event_by_key(&k)?)).await? {
        // A retry gets the first decision, not a new one (which could differ: a passback
        // gate would now say no, a clinic would give another number).
        let p: serde_json::Value = serde_json::from_str(&earlier.payload).unwrap_or_default();
        let same = earlier.kind == "access_decision"
            && earlier.scope.as_deref() == Some(format!("service_point:{sp_id}").as_str())
            && p["uid"] == tap.uid.as_str()
            && p["counter"] == tap.counter;
        if !same {
            return Err(ApiError::conflict(
                "idempotency_conflict",
                "this Idempotency-Key was already used for another request",
            ));
        }
        return Ok(HttpResponse::Ok().json(decision_view(&earlier)?));
    }
    let st = state.clone();
    let uid = tap.uid.clone();
    let now_us = state.ledger.now_us();
    let tap_key = tap.clone();
    let (decision, reason, card_id, queue, limit) = blocking(move || {
        let sp =
            st.ledger.registry(|r| r.service_point(sp_id))?.ok_or_else(|| ApiError::forbidden("service point gone"))?;
        let policy: Policy = serde_json::from_str(&sp.policy).map_err(ApiError::internal)?;
        let Some(card) = st.ledger.registry(|r| r.card_by_uid(&uid))? else {
            return Ok(("deny", "card_unknown", None, None, None));
        };
        if card.status != "active" {
            return Ok(("deny", "card_blocked", Some(card.id), None, None));
        }
        if crate::merchant::check_tap_key(&tap_key, &card).is_err() {
            return Ok(("deny", "tap_key_outdated", Some(card.id), None, None));
        }
        let holder = st.ledger.registry(|r| r.holder(card.holder_id))?.ok_or_else(|| ApiError::internal("holder"))?;
        let (reason, queue, limit) = decide(&sp, &policy, holder.id, &split_categories(&holder.categories), now_us)?;
        Ok((if reason == "entitled" { "allow" } else { "deny" }, reason, Some(card.id), queue, limit))
    })
    .await?;
    let key = ledger::domain::IdempotencyKey::parse(&caller.key(&idem.0)).map_err(|_| ApiError::internal("key"))?;
    let event = |decision: &str, reason: &str, counter: Option<i64>, queue: Option<String>, limit| Event {
        kind: "access_decision".into(),
        scope: Some(format!("service_point:{sp_id}")),
        card_id,
        card_read_counter: counter,
        queue_key: queue,
        idempotency_key: Some(key.clone()),
        payload: json!({"decision": decision, "reason": reason, "uid": tap.uid, "counter": tap.counter}).to_string(),
        access: limit,
    };
    let counter = card_id.map(|_| tap.counter);
    let recorded = match state.ledger.record(event(decision, reason, counter, queue, limit)).await {
        // The tap is not fresh: a replay or a clone. The refusal is itself a decision.
        Err(LedgerError::Rejected(Rejection::CardReplay)) => {
            state.ledger.record(event("deny", "replay", None, None, None)).await?
        }
        // The writer found the holder's quota used up or the passback window open: a
        // refusal too, and the tap is spent.
        Err(LedgerError::Rejected(r @ (Rejection::QuotaReached | Rejection::Passback))) => {
            state.ledger.record(event("deny", r.code(), counter, None, None)).await?
        }
        other => other?,
    };
    Ok(HttpResponse::Ok().json(decision_view(&recorded.event)?))
}

/// The decision an access_decision event recorded.
fn decision_view(event: &ledger::domain::EventRecord) -> Result<Decision, ApiError> {
    let payload: serde_json::Value = serde_json::from_str(&event.payload).map_err(ApiError::internal)?;
    Ok(Decision {
        decision: payload["decision"].as_str().unwrap_or("deny").to_owned(),
        reason: payload["reason"].as_str().unwrap_or("").to_owned(),
        queue_number: event.queue_number,
        card_id: event.card_id.map(|c| c.to_string()),
        checked_at: wire::time(event.time_us),
        leaf_index: event.audit.map(|a| a.leaf_index),
        leaf_hash: event.audit.map(|a| hex::encode(a.leaf_hash)),
    })
}
