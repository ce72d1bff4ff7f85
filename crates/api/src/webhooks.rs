//! Webhooks for merchants and operators: `settlement.paid`, `hold.expired`,
//! `card.replay_flagged`. The ledger's writer puts each event in an outbox in the same
//! transaction as the entry or refusal it tells of ([`ledger::webhooks`]); this module's
//! sender POSTs it to every subscription that wants it, signed, and retries with
//! exponential backoff until the receiver answers 2xx (at least once: a receiver keeps
//! the event ids it has seen). Every attempt is logged and readable by the operator.
//!
//! A request carries `Kartu-Event-Id: evt_<n>` and `Kartu-Signature: t=<unix seconds>,
//! v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; the body is `{"id", "type", "created",
//! "data"}`. A receiver recomputes the HMAC with its secret (shown once, when the
//! subscription is made), compares in constant time and refuses an old `t`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use domain::registry::Role;
use ledger::webhooks::Subscription;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Caller, IdempotencyHeader};
use crate::error::ApiError;
use crate::operator::log_action;
use crate::wire::{self, Page};
use crate::{blocking, AppState};

/// The event kinds a subscription may ask for.
pub const KINDS: [&str; 3] = ["settlement.paid", "hold.expired", "card.replay_flagged"];
/// Attempts before a delivery is given up.
pub const ATTEMPTS_MAX: i32 = 12;
/// How long a sender holds a delivery it claimed.
const LEASE: Duration = Duration::from_secs(60);
/// How long one attempt may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Registers the webhook routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/webhooks", web::post().to(create))
        .route("/v1/webhooks", web::get().to(list))
        .route("/v1/webhooks/{id}", web::delete().to(revoke))
        .route("/v1/webhooks/{id}/attempts", web::get().to(attempts));
}

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are POSTed (http or https).
    #[schema(min_length = 8, max_length = 500)]
    pub url: String,
    /// The kinds wanted: `settlement.paid`, `hold.expired`, `card.replay_flagged`.
    pub events: Vec<String>,
    /// A merchant's subscription: only that merchant's events (settlements, expired
    /// holds). Without it, an operators' subscription: every event.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub merchant_id: Option<String>,
}

/// A subscription; `secret` only in the answer that made it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Its id.
    pub id: String,
    /// Where events go.
    pub url: String,
    /// The kinds it gets.
    pub events: Vec<String>,
    /// The merchant whose events it gets (absent: every event).
    pub merchant_id: Option<String>,
    /// The HMAC-SHA256 key of its signatures: shown once, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When it was made.
    pub created_at: String,
}

/// Every subscription.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// By id, revoked ones too.
    pub webhooks: Vec<WebhookView>,
}

/// Merchant ids by their account: a subscription names the account, its view the merchant.
fn merchants_by_account(state: &AppState) -> Result<HashMap<i64, i64>, ApiError> {
    Ok(state.ledger.registry(|r| r.merchants())?.into_iter().map(|m| (m.account_id.get(), m.id)).collect())
}

fn view(s: &Subscription, secret: Option<String>, merchants: &HashMap<i64, i64>) -> WebhookView {
    WebhookView {
        id: s.id.to_string(),
        url: s.url.clone(),
        events: s.kinds.split(',').map(str::to_owned).collect(),
        merchant_id: s.account_id.and_then(|a| merchants.get(&a)).map(|m| m.to_string()),
        secret,
        revoked: s.revoked_at_us.is_some(),
        created_at: wire::time(s.created_at_us),
    }
}

/// The subscription `id`, or 404.
fn subscription(state: &AppState, id: i64) -> Result<Subscription, ApiError> {
    state.ledger.webhook_subscription(id)?.ok_or_else(|| ApiError::not_found("not_found", "no such webhook"))
}

fn check_new(body: &NewWebhook) -> Result<String, ApiError> {
    let bad = |detail: &str| ApiError::unprocessable("invalid_field", detail.to_owned());
    let url = body.url.trim();
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.len() > 500 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("url must be an http:// or https:// URL of at most 500 characters"));
    }
    if body.events.is_empty() || body.events.iter().any(|e| !KINDS.contains(&e.as_str())) {
        return Err(bad("events must list one or more of settlement.paid, hold.expired, card.replay_flagged"));
    }
    let mut kinds: Vec<&str> = KINDS.iter().copied().filter(|k| body.events.iter().any(|e| e == k)).collect();
    kinds.dedup();
    Ok(kinds.join(","))
}

/// Subscribes a URL to events; the signing secret is in this answer only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "operator", request_body = NewWebhook, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = WebhookView),
        (status = 404, description = "`not_found`: no such merchant", body = crate::error::Problem),
        (status = 422, description = "`invalid_field`: the URL or an event kind", body = crate::error::Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let kinds = check_new(&body)?;
    let account = match body.merchant_id.as_deref() {
        Some(m) => {
            let id = wire::id(m)?;
            let st = state.clone();
            let m = blocking(move || st.merchant(id)).await?;
            Some(m.ok_or_else(|| ApiError::not_found("not_found", "no such merchant"))?.account_id)
        }
        None => None,
    };
    let url = body.url.trim().to_owned();
    let details = json!({"url": url, "events": kinds, "merchant_id": body.merchant_id});
    let rec = log_action(&state, &caller, &key, "create_webhook", details).await?;
    // A retry finds the subscription its event made; its secret is not shown again.
    let secret = crate::auth::new_token()?.replacen(crate::auth::TOKEN_PREFIX, "whsec_", 1);
    let st = state.clone();
    let (sub, fresh) = blocking(move || {
        let s = st.ledger.add_webhook_subscription(&url, &secret, account, &kinds, rec.event.id)?;
        let fresh = s.secret == secret;
        Ok((s, fresh))
    })
    .await?;
    let st = state.clone();
    let shown = fresh.then(|| sub.secret.clone());
    let v = blocking(move || Ok(view(&sub, shown, &merchants_by_account(&st)?))).await?;
    Ok(HttpResponse::Created().json(v))
}

/// Every subscription, never a secret.
#[utoipa::path(get, path = "/v1/webhooks", tag = "operator", responses((status = 200, body = WebhookList)))]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let st = state.clone();
    let webhooks = blocking(move || {
        let (subs, merchants) = (st.ledger.webhook_subscriptions(true)?, merchants_by_account(&st)?);
        Ok(subs.iter().map(|s| view(s, None, &merchants)).collect())
    })
    .await?;
    Ok(HttpResponse::Ok().json(WebhookList { webhooks }))
}

/// Stops a subscription: nothing more is sent to it, pending deliveries are given up.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "operator", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = WebhookView), (status = 404, body = crate::error::Problem)))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let id = wire::id(&id)?;
    let st = state.clone();
    blocking(move || subscription(&st, id)).await?;
    log_action(&state, &caller, &key, "revoke_webhook", json!({"webhook_id": id})).await?;
    let st = state.clone();
    let v = blocking(move || {
        st.ledger.revoke_webhook_subscription(id)?;
        Ok(view(&subscription(&st, id)?, None, &merchants_by_account(&st)?))
    })
    .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// One attempt of the delivery log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// The event (`evt_<n>`, as sent in `Kartu-Event-Id`).
    pub event_id: String,
    /// 1 for the first try.
    pub attempt: i32,
    /// When it was made (RFC 3339).
    pub time: String,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<i32>,
    /// What went wrong; absent when delivered.
    pub error: Option<String>,
    /// How long it took, ms.
    pub duration_ms: f64,
}

/// A page of the delivery log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attempts {
    /// Oldest first.
    pub attempts: Vec<AttemptView>,
    /// Continue with this cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A subscription's delivery log: every attempt, oldest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/attempts", tag = "operator", params(("id" = String, Path), Page),
    responses((status = 200, body = Attempts), (status = 404, body = crate::error::Problem)))]
pub async fn attempts(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let id = wire::id(&id)?;
    let (limit, after) = (page.limit()?, page.after()?);
    let st = state.clone();
    let list = blocking(move || {
        subscription(&st, id)?;
        Ok(st.ledger.webhook_attempts(id, after, limit)?)
    })
    .await?;
    let next_cursor = (list.len() as i64 == limit).then(|| list.last().map(|a| wire::cursor(a.id))).flatten();
    let attempts = list
        .iter()
        .map(|a| AttemptView {
            event_id: format!("evt_{}", a.outbox_id),
            attempt: a.attempt,
            time: wire::time(a.time_us),
            status: a.status,
            error: a.error.clone(),
            duration_ms: a.duration_us as f64 / 1000.0,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Attempts { attempts, next_cursor }))
}

/// The sender: every `every`, claims the deliveries due and sends them, each on the
/// blocking pool. Runs while the server does (each server of a city; the lease keeps two
/// from sending the same delivery at once).
pub async fn send_due(state: web::Data<AppState>, every: Duration) {
    let mut tick = actix_web::rt::time::interval(every);
    loop {
        tick.tick().await;
        let st = state.clone();
        let sent = web::block(move || -> Result<usize, ledger::LedgerError> {
            let due = st.ledger.claim_due_webhooks(LEASE, 32)?;
            for d in &due {
                let outcome = deliver(d, st.settings.webhook_retry_base, st.ledger.now_us());
                st.ledger.record_webhook_attempt(d, &outcome)?;
            }
            Ok(due.len())
        })
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "sending webhooks failed; trying again"),
            Err(e) => tracing::warn!(error = %e, "the webhook sender's task failed; trying again"),
        }
    }
}

/// The body of an event as sent.
pub fn body(d: &ledger::webhooks::Due) -> String {
    let data: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null);
    json!({"id": format!("evt_{}", d.outbox_id), "type": d.kind, "created": wire::time(d.created_at_us), "data": data})
        .to_string()
}

/// `Kartu-Signature` for `body` sent at `t` (Unix seconds) under `secret`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(tag.as_ref()))
}

/// One attempt: POST, and what came of it (when to retry, if it failed).
fn deliver(d: &ledger::webhooks::Due, retry_base: Duration, now_us: i64) -> ledger::webhooks::Outcome {
    let started = Instant::now();
    let body = body(d);
    let t = now_us / 1_000_000;
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(SEND_TIMEOUT)).http_status_as_error(false).build().into();
    let sent = agent
        .post(&d.url)
        .header("content-type", "application/json")
        .header("kartu-event-id", &format!("evt_{}", d.outbox_id))
        .header("kartu-signature", &signature(&d.secret, t, &body))
        .header("user-agent", concat!("kartu-webhooks/", env!("CARGO_PKG_VERSION")))
        .send(body.as_bytes());
    let (status, error) = match sent {
        Ok(r) if r.status().is_success() => (Some(i32::from(r.status().as_u16())), None),
        Ok(r) => (Some(i32::from(r.status().as_u16())), Some(format!("the receiver answered {}", r.status()))),
        Err(e) => (None, Some(e.to_string())),
    };
    let attempt = d.attempts + 1;
    let retry_at_us = (error.is_some() && attempt < ATTEMPTS_MAX).then(|| {
        let wait = retry_base.saturating_mul(1 << (attempt - 1).min(20)).min(Duration::from_secs(3600));
        now_us + wait.as_micros() as i64
    });
    ledger::webhooks::Outcome { status, error, duration_us: started.elapsed().as_micros() as i64, retry_at_us }
}
