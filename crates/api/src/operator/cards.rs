//! Cards: issue, read, block, unblock and replace (the balance moves to the new card in
//! one ledger entry).

use actix_web::{web, HttpResponse};
use card::CardUid;
use domain::lifecycle::{self, Change};
use domain::registry::{BlockReason, CardStatus};
use ledger::domain::{AccountKind, Command, NewAccount, References, Request};
use ledger::registry::Card;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ledger_key, log_action};
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire::{self, money, receipt, Money, Receipt};
use crate::{blocking, AppState};

/// `POST /v1/cards`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCard {
    /// 7-byte UID, 14 hex digits.
    #[schema(pattern = "^[0-9A-Fa-f]{14}$", example = "04A1B2C3D4C080")]
    pub uid: String,
    /// The holder.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub holder_id: String,
    /// The card key version it was personalised with (`kartu card personalize
    /// --key-version`); the key file's newest when omitted. A tap that verifies only with
    /// an older version is refused.
    #[schema(minimum = 1)]
    pub key_version: Option<u8>,
}

/// A card as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CardView {
    /// The card's id (the ledger's card_id reference).
    pub id: String,
    /// The card's 7-byte UID, 14 upper-case hex digits.
    pub uid: String,
    /// The holder the card belongs to.
    pub holder_id: String,
    /// Where the card is in its life: active, blocked or replaced.
    pub status: CardStatus,
    /// Why it was blocked.
    pub block_reason: Option<String>,
    /// The card that replaced it.
    pub replaced_by: Option<String>,
    /// The card wallet.
    pub account_id: String,
    /// Balance now.
    pub balance: Money,
    /// What the card owes after offline payments its balance could not cover (repaid
    /// first by the next top-up or a refund of that payment).
    pub owed: Money,
    /// The card key version it was personalised with.
    pub key_version: i32,
    /// Last accepted tap counter.
    pub last_counter: Option<i64>,
    /// Taps refused as replays: a possible clone.
    pub suspected_clone: bool,
    /// How many taps were refused as replays.
    pub replays: usize,
}

pub(super) fn card_view(state: &AppState, c: &Card) -> Result<CardView, ApiError> {
    let balance = state.ledger.balance(c.account_id)?;
    let replays = state.ledger.card_replays(c.id, ledger::PAGE_MAX)?.len();
    Ok(CardView {
        id: c.id.to_string(),
        uid: c.uid.to_string(),
        holder_id: c.holder_id.to_string(),
        status: c.status,
        block_reason: c.block_reason.clone(),
        replaced_by: c.replaced_by.map(|r| r.to_string()),
        account_id: c.account_id.to_string(),
        balance: money(balance, state.settings.currency),
        owed: money(state.ledger.wallet_debt(c.account_id)?, state.settings.currency),
        key_version: c.key_version,
        last_counter: state.ledger.card_last_counter(c.id)?,
        suspected_clone: replays > 0,
        replays,
    })
}

fn parse_uid(uid: &str) -> Result<CardUid, ApiError> {
    uid.parse().map_err(|_| ApiError::unprocessable("invalid_field", "uid must be 14 hex digits (7 bytes)"))
}

/// Creates the wallet and the card row for an issue or a replacement, keyed by the event.
fn create_card(
    state: &AppState,
    uid: CardUid,
    holder_id: i64,
    key_version: u8,
    event_id: i64,
) -> Result<Card, ApiError> {
    if let Some(c) = state.ledger.registry(|r| r.card_by_event(event_id))? {
        return Ok(c);
    }
    if state.ledger.registry(|r| r.card_by_uid(uid))?.is_some() {
        return Err(ApiError::conflict("card_exists", "a card with this UID is registered"));
    }
    let account = state.ledger.create_account(NewAccount {
        kind: AccountKind::CardWallet,
        currency: state.settings.currency,
        name: format!("card {uid}"),
        balance_max_minor: None,
    })?;
    let now = state.ledger.now_us();
    let version = i32::from(key_version);
    Ok(state.ledger.registry(|r| {
        let new = ledger::registry::NewCardRow { uid, holder_id, account_id: account.id, key_version: version };
        r.insert_card(new, now, event_id)
    })?)
}

/// Issues a card to a holder: a new wallet at zero.
#[utoipa::path(post, path = "/v1/cards", tag = "operator", request_body = NewCard,
    params(("Idempotency-Key" = String, Header, description = "unique per write")),
    responses((status = 201, body = CardView), (status = 409, description = "`card_exists`: a card with this UID is registered", body = crate::error::Problem),
        (status = 422, description = "`invalid_field`: the UID is not 14 hex digits or the key version unknown; `holder_unknown`", body = crate::error::Problem)))]
pub async fn issue_card(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewCard>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let uid = parse_uid(&body.uid)?;
    let holder_id =
        wire::id(&body.holder_id).map_err(|_| ApiError::unprocessable("holder_unknown", "no holder has this id"))?;
    let key_version = match body.key_version {
        None => state.taps.0.newest().version(),
        Some(v) if state.taps.0.version(v).is_some() => v,
        Some(v) => {
            return Err(ApiError::unprocessable("invalid_field", format!("the key file has no card key version {v}")))
        }
    };
    let st = state.clone();
    let k = caller.key(&key.0);
    let (holder, taken, mine) = blocking(move || {
        let (h, c) = st.ledger.registry(|r| Ok((r.holder(holder_id)?, r.card_by_uid(uid)?)))?;
        Ok((h, c, st.ledger.event_by_key(&k)?.map(|e| e.id)))
    })
    .await?;
    if holder.is_none() {
        return Err(ApiError::unprocessable("holder_unknown", "no holder has this id"));
    }
    if let Some(c) = taken {
        if Some(c.event_id) != mine {
            return Err(ApiError::conflict("card_exists", "a card with this UID is registered"));
        }
    }
    let details = json!({"uid": uid.to_string(), "holder_id": holder_id, "key_version": key_version});
    let rec = log_action(&state, &caller, &key, "issue_card", details).await?;
    let st = state.clone();
    let view = blocking(move || {
        let card = create_card(&st, uid, holder_id, key_version, rec.event.id)?;
        card_view(&st, &card)
    })
    .await?;
    Ok(HttpResponse::Created().json(view))
}

pub(super) async fn load_card(state: &web::Data<AppState>, id: &str) -> Result<Card, ApiError> {
    let id = wire::id(id)?;
    let st = state.clone();
    blocking(move || {
        st.ledger.registry(|r| r.card(id))?.ok_or_else(|| ApiError::not_found("not_found", "no such card"))
    })
    .await
}

/// A card, with its balance and clone suspicion.
#[utoipa::path(get, path = "/v1/cards/{id}", tag = "operator", params(("id" = String, Path)),
    responses((status = 200, body = CardView), (status = 404, body = crate::error::Problem)))]
pub async fn get_card(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let card = load_card(&state, &id).await?;
    let st = state.clone();
    Ok(HttpResponse::Ok().json(blocking(move || card_view(&st, &card)).await?))
}

/// `POST /v1/cards/{id}/block`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockCard {
    /// lost, stolen, damaged, fraud, other.
    #[schema(pattern = "^(lost|stolen|damaged|fraud|other)$")]
    pub reason: String,
}

async fn set_status(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: String,
    change: Change,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let card = load_card(&state, &id).await?;
    let status = lifecycle::change(card.status, change).map_err(|e| ApiError::conflict(e.code(), e.to_string()))?;
    let reason = match change {
        Change::Block(reason) => Some(reason),
        Change::Unblock | Change::Replace => None,
    };
    let details = json!({"card_id": card.id, "reason": reason.map(BlockReason::as_str)});
    let rec = log_action(&state, &caller, &key, change.action(), details).await?;
    let st = state.clone();
    let view = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry(|r| r.set_card_status(card.id, status, reason, None, now, rec.event.id))?;
        let card = st.ledger.registry(|r| r.card(card.id))?.ok_or_else(|| ApiError::internal("card vanished"))?;
        card_view(&st, &card)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Blocks a card: its taps are refused at once.
#[utoipa::path(post, path = "/v1/cards/{id}/block", tag = "operator", request_body = BlockCard, params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = CardView), (status = 404, body = crate::error::Problem), (status = 409, description = "`card_replaced`: the card was replaced and cannot change any more", body = crate::error::Problem),
        (status = 422, description = "`invalid_field`: the reason is not one of the list", body = crate::error::Problem)))]
pub async fn block_card(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: web::Path<String>,
    body: web::Json<BlockCard>,
) -> Result<HttpResponse, ApiError> {
    let Ok(reason) = BlockReason::parse(&body.reason) else {
        return Err(ApiError::unprocessable("invalid_field", "reason must be lost, stolen, damaged, fraud or other"));
    };
    set_status(state, caller, key, id.into_inner(), Change::Block(reason)).await
}

/// Unblocks a card.
#[utoipa::path(post, path = "/v1/cards/{id}/unblock", tag = "operator", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = CardView), (status = 404, body = crate::error::Problem), (status = 409, description = "`card_replaced`: the card was replaced and cannot change any more", body = crate::error::Problem)))]
pub async fn unblock_card(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_status(state, caller, key, id.into_inner(), Change::Unblock).await
}

/// `POST /v1/cards/{id}/replace`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceCard {
    /// The new card's UID.
    #[schema(pattern = "^[0-9A-Fa-f]{14}$", example = "04A1B2C3D4C080")]
    pub new_uid: String,
}

/// The result of a replacement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replacement {
    /// The old card, now `replaced`.
    pub old_card: CardView,
    /// The new card, holding the balance.
    pub new_card: CardView,
    /// The amount moved.
    pub moved: Money,
    /// The card_replacement entry, when there was a balance to move.
    pub receipt: Option<Receipt>,
}

/// Refuses a replacement of a card already replaced (unless this is a retry of the same
/// replacement, which finds what it created) and a new UID another request registered.
async fn check_replacement(
    state: &web::Data<AppState>,
    caller: &Caller,
    key: &IdempotencyHeader,
    old: &Card,
    new_uid: CardUid,
) -> Result<(), ApiError> {
    if lifecycle::change(old.status, Change::Replace).is_err() {
        let k = caller.key(&key.0);
        let st = state.clone();
        if blocking(move || Ok(st.ledger.event_by_key(&k)?)).await?.is_none() {
            return Err(ApiError::conflict("card_replaced", "this card was already replaced"));
        }
    }
    let st = state.clone();
    let k = caller.key(&key.0);
    let (taken, mine) = blocking(move || {
        Ok((st.ledger.registry(|r| r.card_by_uid(new_uid))?, st.ledger.event_by_key(&k)?.map(|e| e.id)))
    })
    .await?;
    if let Some(t) = taken {
        if Some(t.event_id) != mine {
            return Err(ApiError::conflict("card_exists", "a card with this UID is registered"));
        }
    }
    Ok(())
}

/// Replaces a card (lost, damaged): a new card for the same holder, the old one stops
/// working, and the balance moves to the new card in one entry.
#[utoipa::path(post, path = "/v1/cards/{id}/replace", tag = "operator", request_body = ReplaceCard, params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = Replacement), (status = 404, body = crate::error::Problem), (status = 409, description = "`card_replaced`: the card was already replaced; `card_exists`: another card has the new UID", body = crate::error::Problem),
        (status = 422, description = "`invalid_field`: the new UID is not 14 hex digits", body = crate::error::Problem)))]
pub async fn replace_card(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: web::Path<String>,
    body: web::Json<ReplaceCard>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let new_uid = parse_uid(&body.new_uid)?;
    let old = load_card(&state, &id).await?;
    check_replacement(&state, &caller, &key, &old, new_uid).await?;
    let version = state.taps.0.newest().version();
    let details = json!({"card_id": old.id, "new_uid": new_uid.to_string(), "key_version": version});
    let rec = log_action(&state, &caller, &key, "replace_card", details).await?;
    let st = state.clone();
    let new = blocking(move || create_card(&st, new_uid, old.holder_id, version, rec.event.id)).await?;
    let st = state.clone();
    let now = state.ledger.now_us();
    let new_id = new.id;
    blocking(move || {
        st.ledger
            .registry(|r| r.set_card_status(old.id, CardStatus::Replaced, None, Some(new_id), now, rec.event.id))?;
        Ok(())
    })
    .await?;
    // The writer moves whatever the old wallet holds at that point of the log, with what
    // it owes; from then on the old wallet pays nothing and every credit to it (a refund, a
    // released hold) goes to the new card in the same entry. A retry finds its entry by key.
    let request = Request::new(Command::ReplaceCard { old_wallet: old.account_id, new_wallet: new.account_id })
        .with_key(ledger_key(&caller, &key, ":move")?)
        .with_references(References {
            terminal_id: Some(caller.reference()),
            card_id: Some(new.id),
            memo: Some(format!("replaces card {}", old.id)),
            ..Default::default()
        });
    let posted = state.ledger.submit(request).await?;
    let moved = posted.entry.amount_minor;
    let posted = Some(posted.entry);
    let st = state.clone();
    let (old_view, new_view) = blocking(move || {
        let old = st.ledger.registry(|r| r.card(old.id))?.ok_or_else(|| ApiError::internal("card vanished"))?;
        Ok((card_view(&st, &old)?, card_view(&st, &new)?))
    })
    .await?;
    Ok(HttpResponse::Created().json(Replacement {
        old_card: old_view,
        new_card: new_view,
        moved: money(moved, state.settings.currency),
        receipt: posted.as_ref().map(receipt),
    }))
}
