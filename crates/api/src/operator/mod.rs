//! Operator calls: holders, cards, merchants, service points, agents, credentials, agent
//! floats, adjustments with a second operator's approval, settlements.
//!
//! Every operator write is first an `operator_action` event in the audit log (with the
//! caller's idempotency key), then applied to the registry keyed by that event: a retried
//! request finds what its event created instead of creating it twice.

pub mod adjustments;
pub mod agents;
pub mod approvals;
pub mod cards;
pub mod credentials;
pub mod fares;
pub mod holders;
pub mod key_versions;
pub mod lists;
pub mod merchants;
pub mod service_points;
pub mod settlements;

use actix_web::web;
use ledger::domain::{Event, Recorded};
use serde_json::json;

use crate::auth::{new_token, token_hash, Caller, IdempotencyHeader};
use crate::error::ApiError;
use crate::{blocking, AppState};

/// Registers the operator routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/holders", web::post().to(holders::create_holder))
        .route("/v1/cards", web::post().to(cards::issue_card))
        .route("/v1/cards/{id}", web::get().to(cards::get_card))
        .route("/v1/cards/{id}/block", web::post().to(cards::block_card))
        .route("/v1/cards/{id}/unblock", web::post().to(cards::unblock_card))
        .route("/v1/cards/{id}/replace", web::post().to(cards::replace_card))
        .route("/v1/cards/{id}/key-version", web::post().to(key_versions::record_key_version))
        .route("/v1/merchants", web::post().to(merchants::create_merchant))
        .route("/v1/service-points", web::post().to(service_points::create_service_point))
        .route("/v1/agents", web::post().to(agents::create_agent))
        .route("/v1/agents/{id}/float", web::post().to(agents::fund_agent))
        .route("/v1/credentials", web::post().to(credentials::create_credential))
        .route("/v1/credentials/{id}", web::delete().to(credentials::revoke_credential))
        .route("/v1/adjustments", web::post().to(adjustments::request_adjustment))
        .route("/v1/adjustments/{id}/approve", web::post().to(adjustments::approve_adjustment))
        .route("/v1/settlements", web::post().to(settlements::settle))
        .configure(lists::routes);
}

/// Logs an operator action (idempotent under the caller's key).
pub async fn log_action(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyHeader,
    action: &str,
    details: serde_json::Value,
) -> Result<Recorded, ApiError> {
    log_tap_action(state, caller, key, action, details, None).await
}

/// [`log_action`] for an action shown a card's tap: `tap` (card id, read counter) is
/// consumed like a payment's, the ledger writer refusing a counter not above the card's
/// last (`409 card_replay`, nothing logged but the replay).
pub async fn log_tap_action(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyHeader,
    action: &str,
    details: serde_json::Value,
    tap: Option<(i64, i64)>,
) -> Result<Recorded, ApiError> {
    let payload = json!({"action": action, "by": caller.credential.id, "details": details}).to_string();
    let event = Event {
        kind: "operator_action".into(),
        scope: Some(format!("operator:{}", caller.credential.id)),
        card_id: tap.map(|(card, _)| card),
        card_read_counter: tap.map(|(_, counter)| counter),
        queue_key: None,
        idempotency_key: Some(
            ledger::domain::IdempotencyKey::parse(&caller.key(&key.0)).map_err(|_| ApiError::internal("key"))?,
        ),
        payload,
        access: None,
        transit: None,
    };
    Ok(state.ledger.record(event).await?)
}

/// The token of a credential about to be made, and the hash its operator_action leaf
/// records (so `kartu audit verify` can tell a swapped token hash): a new token, or — when
/// this caller's key already logged the request (a retry) — the hash logged then and no
/// token (a token is shown once; a retry that finds no credential row makes it with the
/// logged hash, and its token is lost like a lost response's). A retry with another body
/// keeps its conflict: the logged hash is reused, the rest of the request differs.
pub async fn token_for(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyHeader,
) -> Result<(Option<String>, [u8; 32]), ApiError> {
    let (ledger, k) = (state.ledger.clone(), caller.key(&key.0));
    let earlier = blocking(move || Ok(ledger.event_by_key(&k)?)).await?;
    let logged = earlier
        .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.payload).ok())
        .and_then(|p| p["details"]["token_hash"].as_str().and_then(|h| hex::decode(h).ok()))
        .and_then(|h| <[u8; 32]>::try_from(h).ok());
    Ok(match logged {
        Some(hash) => (None, hash),
        None => {
            let token = new_token()?;
            let hash = token_hash(&token);
            (Some(token), hash)
        }
    })
}

fn ledger_key(
    caller: &Caller,
    key: &IdempotencyHeader,
    suffix: &str,
) -> Result<ledger::domain::IdempotencyKey, ApiError> {
    ledger::domain::IdempotencyKey::parse(&format!("{}{suffix}", caller.key(&key.0)))
        .map_err(|_| ApiError::internal("idempotency key"))
}
