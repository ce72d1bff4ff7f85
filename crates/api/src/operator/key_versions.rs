//! A card's key version after a rotation (`kartu card rotate`): recorded only when the
//! operator shows a genuine tap of the card made with exactly the new version's keys, so
//! the registry never says a card holds keys it does not.

use actix_web::{web, HttpResponse};
use domain::registry::CardStatus;
use ledger::registry::Card;
use serde::Deserialize;
use serde_json::json;

use super::cards::{card_view, load_card};
use super::log_tap_action;
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::taps::VerifiedTap;
use crate::wire::Tap;
use crate::{blocking, AppState};

/// `POST /v1/cards/{id}/key-version`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyVersion {
    /// The key version the card now holds, a `[cards.N]` of the server's key file above the
    /// card's recorded version.
    #[schema(minimum = 1, maximum = 255)]
    pub key_version: u8,
    /// A tap read from the card after the rotation: it must verify with exactly this
    /// version's keys (both SDM keys), and its counter must be above the card's last.
    pub tap: Tap,
}

/// Records that a card now holds the keys of a newer key version (after `kartu card
/// rotate`). From then on, taps that verify only with an older version are refused
/// `tap_key_outdated`. The tap is consumed like a payment's.
#[utoipa::path(post, path = "/v1/cards/{id}/key-version", tag = "operator", request_body = NewKeyVersion,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "unique per write")),
    responses((status = 200, description = "recorded (or a retry of the same request)", body = super::cards::CardView),
        (status = 404, description = "`not_found`: no such card", body = crate::error::Problem),
        (status = 409, description = "`key_version_not_newer`: the card is already at this version or a newer one; `card_replaced`: the card was replaced; `card_replay`: the tap's counter is not above the card's last (a copied tap); `idempotency_conflict`", body = crate::error::Problem),
        (status = 422, description = "`invalid_field`: the key file has no such version; `invalid_tap`, `tap_mac_invalid`: not a genuine tap; `tap_card_mismatch`: a tap of another card; `tap_version_mismatch`: the tap does not verify with exactly this version's keys (the card was not rotated, or only half-way)", body = crate::error::Problem)))]
pub async fn record_key_version(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: web::Path<String>,
    body: web::Json<NewKeyVersion>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let card = load_card(&state, &id).await?;
    let version = body.key_version;
    if state.taps.0.version(version).is_none() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("the key file has no card key version {version}"),
        ));
    }
    let tap = state.taps.verify(&body.tap)?;
    check_tap(&tap, &card, version)?;
    let (st, k) = (state.clone(), caller.key(&key.0));
    let retry = blocking(move || Ok(st.ledger.event_by_key(&k)?)).await?.is_some();
    // A retry of a recorded request finds the card at its version and gets the same answer.
    if !retry {
        check_card(&card, version)?;
    }
    let details = json!({"card_id": card.id, "key_version": version});
    let consumed = Some((card.id, tap.counter_value()));
    log_tap_action(&state, &caller, &key, "rotate_card_keys", details, consumed).await?;
    let st = state.clone();
    let view = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry(|r| r.raise_card_key_version(card.id, i32::from(version), now))?;
        let card = st.ledger.registry(|r| r.card(card.id))?.ok_or_else(|| ApiError::internal("card vanished"))?;
        card_view(&st, &card)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The tap is of this card and verifies with both SDM keys of exactly `version`.
fn check_tap(tap: &VerifiedTap, card: &Card, version: u8) -> Result<(), ApiError> {
    if tap.uid != card.uid {
        return Err(ApiError::unprocessable(
            "tap_card_mismatch",
            format!("the tap is of card {}, not of card {}", tap.uid, card.uid),
        ));
    }
    let v = tap.versions;
    if !(v.meta_read == version && v.file_read == version) {
        let found = if v.consistent() {
            format!("key version {}", v.meta_read)
        } else {
            format!(
                "key version {} (meta-read key) and {} (file-read key): a rotation torn half-way",
                v.meta_read, v.file_read
            )
        };
        return Err(ApiError::unprocessable(
            "tap_version_mismatch",
            format!("the tap verifies with {found}, not {version}: the card does not hold version {version}'s keys; run kartu card rotate again"),
        ));
    }
    Ok(())
}

/// The card may take `version`: not replaced, and `version` above its recorded one.
fn check_card(card: &Card, version: u8) -> Result<(), ApiError> {
    if card.status == CardStatus::Replaced {
        return Err(ApiError::conflict("card_replaced", "this card was replaced and cannot change any more"));
    }
    if i32::from(version) <= card.key_version {
        return Err(ApiError::conflict(
            "key_version_not_newer",
            format!(
                "the card is recorded at key version {}: a rotation only goes to a newer version",
                card.key_version
            ),
        ));
    }
    Ok(())
}
