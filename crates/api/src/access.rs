//! Access to public services (SPEC §8): a service point's policy decides allow or deny with
//! a reason code; a clinic gives queue numbers; every decision is a leaf of the audit log.

use actix_web::{web, HttpResponse};
use ledger::domain::{AccessLimit, Event, Rejection};
use ledger::registry::ServicePoint;
use ledger::LedgerError;
use serde_json::json;

use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire;
use crate::{blocking, AppState};
pub use client::wire::{AccessCheck, Decision};

/// Registers the service point route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/access-checks", web::post().to(access_check));
}

/// Who may enter a service point, and when: the domain layer's policy.
pub use domain::access::Policy;

/// The decision a policy gives a holder now by who they are and the opening hours, before
/// the tap's freshness is known; with the holder's quota and passback for the writer to
/// check against the decisions it already recorded (so concurrent checks cannot exceed
/// them).
fn decide(
    sp: &ServicePoint,
    policy: &Policy,
    holder_id: i64,
    holder_categories: domain::registry::Categories,
    now_us: i64,
) -> Result<(&'static str, Option<String>, Option<AccessLimit>), ApiError> {
    let rules = policy.rules().map_err(ApiError::internal)?;
    let day = match rules.admit(holder_categories, now_us) {
        Ok(day) => day,
        Err(refusal) => return Ok((refusal.code(), None, None)),
    };
    let queue = rules.issues_queue_numbers.then(|| format!("service_point:{}:{}", sp.id, day.date.format("%Y-%m-%d")));
    // The holder, not the card: a replaced card does not reset the quota.
    let limit = rules.limits.any().then(|| AccessLimit {
        holder_key: format!("service_point:{}:holder:{holder_id}", sp.id),
        day_start_us: day.start_us,
        daily_quota: rules.limits.daily_quota,
        passback_us: rules.limits.passback_us,
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
    idem: IdempotencyHeader,
    body: web::Json<AccessCheck>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::ServicePoint])?;
    let sp_id = caller.credential.service_point_id.ok_or_else(|| ApiError::forbidden("no service point"))?;
    let tap = state.taps.verify(&body.tap)?;
    if let Some(earlier) = earlier_decision(&state, &caller, &idem, sp_id, &tap).await? {
        return Ok(HttpResponse::Ok().json(earlier));
    }
    let st = state.clone();
    let uid = tap.uid;
    let now_us = state.ledger.now_us();
    let tap_key = tap.clone();
    let (decision, reason, card_id, queue, limit) = blocking(move || {
        let sp =
            st.ledger.registry(|r| r.service_point(sp_id))?.ok_or_else(|| ApiError::forbidden("service point gone"))?;
        let policy: Policy = serde_json::from_str(&sp.policy).map_err(ApiError::internal)?;
        let Some(card) = st.ledger.registry(|r| r.card_by_uid(uid))? else {
            return Ok(("deny", "card_unknown", None, None, None));
        };
        if let Err(unusable) = domain::lifecycle::usable(card.status) {
            return Ok(("deny", unusable.code(), Some(card.id), None, None));
        }
        if crate::merchant::check_tap_key(&tap_key, &card).is_err() {
            return Ok(("deny", "tap_key_outdated", Some(card.id), None, None));
        }
        let holder = st.ledger.registry(|r| r.holder(card.holder_id))?.ok_or_else(|| ApiError::internal("holder"))?;
        let (reason, queue, limit) = decide(&sp, &policy, holder.id, holder.categories, now_us)?;
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
        payload:
            json!({"decision": decision, "reason": reason, "uid": tap.uid.to_string(), "counter": tap.counter_value()})
                .to_string(),
        access: limit,
        transit: None,
    };
    let counter = card_id.map(|_| tap.counter_value());
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

/// The decision this caller's key already recorded (a retry gets the first decision, not a
/// new one, which could differ: a passback gate would now say no, a clinic would give
/// another number); `409 idempotency_conflict` when the key was used for another request.
async fn earlier_decision(
    state: &web::Data<AppState>,
    caller: &Caller,
    idem: &IdempotencyHeader,
    sp_id: i64,
    tap: &crate::taps::VerifiedTap,
) -> Result<Option<Decision>, ApiError> {
    let st = state.clone();
    let k = caller.key(&idem.0);
    let Some(earlier) = blocking(move || Ok(st.ledger.event_by_key(&k)?)).await? else {
        return Ok(None);
    };
    let p: serde_json::Value = serde_json::from_str(&earlier.payload).unwrap_or_default();
    let same = earlier.kind == "access_decision"
        && earlier.scope.as_deref() == Some(format!("service_point:{sp_id}").as_str())
        && p["uid"] == tap.uid.to_string().as_str()
        && p["counter"] == tap.counter_value();
    if !same {
        return Err(ApiError::conflict(
            "idempotency_conflict",
            "this Idempotency-Key was already used for another request",
        ));
    }
    Ok(Some(decision_view(&earlier)?))
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
