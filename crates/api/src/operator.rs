//! Operator calls: holders, cards, merchants, service points, agents, credentials, agent
//! floats, adjustments with a second operator's approval, settlements.
//!
//! Every operator write is first an `operator_action` event in the audit log (with the
//! caller's idempotency key), then applied to the registry keyed by that event: a retried
//! request finds what its event created instead of creating it twice.

use actix_web::{web, HttpResponse};
use ledger::domain::{
    AccountId, AccountKind, Command, EntryKind, Event, Leg, NewAccount, Recorded, References, Request,
};
use ledger::registry::{Agent, Card, Credential, Holder, Merchant, NewCredentialRow, ServicePoint};
use ledger::LedgerError;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::access::Policy;
use crate::auth::{new_token, token_hash, Caller, IdempotencyKey, Role};
use crate::error::ApiError;
use crate::wire::{self, money, receipt, Money, Receipt};
use crate::{blocking, AppState};

/// Registers the operator routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/holders", web::post().to(create_holder))
        .route("/v1/cards", web::post().to(issue_card))
        .route("/v1/cards/{id}", web::get().to(get_card))
        .route("/v1/cards/{id}/block", web::post().to(block_card))
        .route("/v1/cards/{id}/unblock", web::post().to(unblock_card))
        .route("/v1/cards/{id}/replace", web::post().to(replace_card))
        .route("/v1/merchants", web::post().to(create_merchant))
        .route("/v1/service-points", web::post().to(create_service_point))
        .route("/v1/agents", web::post().to(create_agent))
        .route("/v1/agents/{id}/float", web::post().to(fund_agent))
        .route("/v1/credentials", web::post().to(create_credential))
        .route("/v1/credentials/{id}", web::delete().to(revoke_credential))
        .route("/v1/adjustments", web::post().to(request_adjustment))
        .route("/v1/adjustments/{id}/approve", web::post().to(approve_adjustment))
        .route("/v1/settlements", web::post().to(settle));
}

/// Logs an operator action (idempotent under the caller's key).
pub async fn log_action(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyKey,
    action: &str,
    details: serde_json::Value,
) -> Result<Recorded, ApiError> {
    let payload = json!({"action": action, "by": caller.credential.id, "details": details}).to_string();
    let event = Event {
        kind: "operator_action".into(),
        scope: Some(format!("operator:{}", caller.credential.id)),
        card_id: None,
        card_read_counter: None,
        queue_key: None,
        idempotency_key: Some(
            ledger::domain::IdempotencyKey::parse(&caller.key(&key.0)).map_err(|_| ApiError::internal("key"))?,
        ),
        payload,
        access: None,
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
    key: &IdempotencyKey,
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

fn ledger_key(caller: &Caller, key: &IdempotencyKey, suffix: &str) -> Result<ledger::domain::IdempotencyKey, ApiError> {
    ledger::domain::IdempotencyKey::parse(&format!("{}{suffix}", caller.key(&key.0)))
        .map_err(|_| ApiError::internal("idempotency key"))
}

// ---- holders ----

/// Holder categories that policies refer to.
pub use domain::access::CATEGORIES;

/// `POST /v1/holders`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHolder {
    /// Full name.
    pub name: String,
    /// National identity number (16 digits); stored keyed-hashed, never returned.
    pub nik: String,
    /// Categories: resident, student, senior, insured, staff.
    pub categories: Vec<String>,
}

/// A holder as returned (no NIK).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HolderView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Categories.
    pub categories: Vec<String>,
    /// Created.
    pub created_at: String,
}

fn holder_view(h: &Holder) -> HolderView {
    HolderView {
        id: h.id.to_string(),
        name: h.name.clone(),
        categories: split_categories(&h.categories),
        created_at: wire::time(h.created_at_us),
    }
}

/// Categories as stored (comma-separated).
pub fn split_categories(s: &str) -> Vec<String> {
    s.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

/// Registers a card holder.
#[utoipa::path(post, path = "/v1/holders", tag = "operator", request_body = NewHolder,
    params(("Idempotency-Key" = String, Header, description = "unique per write")),
    responses((status = 201, body = HolderView), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create_holder(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: web::Json<NewHolder>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    if body.nik.len() != 16 || !body.nik.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::unprocessable("invalid_field", "nik must be 16 digits"));
    }
    let mut categories = body.categories.clone();
    categories.sort();
    categories.dedup();
    if let Some(bad) = categories.iter().find(|c| !CATEGORIES.contains(&c.as_str())) {
        return Err(ApiError::unprocessable("invalid_field", format!("unknown category {bad:?}")));
    }
    let nik_hash = state.nik_hash(&body.nik);
    let st = state.clone();
    let (hash, k) = (nik_hash.clone(), caller.key(&key.0));
    let existing = blocking(move || {
        let holder = st.ledger.registry(|r| r.holder_by_nik(&hash))?;
        let mine = st.ledger.event_by_key(&k)?.map(|e| e.id);
        Ok(holder.map(|h| (mine == Some(h.event_id), h)))
    })
    .await?;
    // A holder made by this key is a retry: the logged action below tells a retry of the
    // same request (its holder comes back) from another request with the same key (409).
    if let Some((false, _)) = existing {
        return Err(ApiError::conflict("holder_exists", "a holder with this NIK is registered"));
    }
    // The NIK is not in the log: the log is read by auditors, the NIK is personal data.
    let details = json!({"name": name, "categories": categories, "nik_hash": hex::encode(&nik_hash)});
    let rec = log_action(&state, &caller, &key, "create_holder", details).await?;
    let st = state.clone();
    let joined = categories.join(",");
    let holder = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry_transaction(|r| {
            if let Some(h) = r.holder_by_event(rec.event.id)? {
                return Ok(Ok(h));
            }
            if r.holder_by_nik(&nik_hash)?.is_some() {
                return Ok(Err(ApiError::conflict("holder_exists", "a holder with this NIK is registered")));
            }
            Ok(Ok(r.insert_holder(&name, &nik_hash, &joined, now, rec.event.id)?))
        })?
    })
    .await?;
    Ok(HttpResponse::Created().json(holder_view(&holder)))
}

// ---- cards ----

/// `POST /v1/cards`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCard {
    /// 7-byte UID, 14 hex digits.
    pub uid: String,
    /// The holder.
    pub holder_id: String,
    /// The card key version it was personalised with (`kartu card personalize
    /// --key-version`); the key file's newest when omitted. A tap that verifies only with
    /// an older version is refused.
    pub key_version: Option<u8>,
}

/// A card as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CardView {
    /// Id.
    pub id: String,
    /// UID.
    pub uid: String,
    /// Holder.
    pub holder_id: String,
    /// active, blocked or replaced.
    pub status: String,
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

fn card_view(state: &AppState, c: &Card) -> Result<CardView, ApiError> {
    let balance = state.ledger.balance(AccountId(c.account_id))?;
    let replays = state.ledger.card_replays(c.id, ledger::PAGE_MAX)?.len();
    Ok(CardView {
        id: c.id.to_string(),
        uid: c.uid.clone(),
        holder_id: c.holder_id.to_string(),
        status: c.status.clone(),
        block_reason: c.block_reason.clone(),
        replaced_by: c.replaced_by.map(|r| r.to_string()),
        account_id: c.account_id.to_string(),
        balance: money(balance, state.settings.currency),
        owed: money(state.ledger.wallet_debt(AccountId(c.account_id))?, state.settings.currency),
        key_version: c.key_version,
        last_counter: state.ledger.card_last_counter(c.id)?,
        suspected_clone: replays > 0,
        replays,
    })
}

fn parse_uid(uid: &str) -> Result<String, ApiError> {
    if uid.len() == 14 && uid.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(uid.to_ascii_uppercase())
    } else {
        Err(ApiError::unprocessable("invalid_field", "uid must be 14 hex digits (7 bytes)"))
    }
}

/// Creates the wallet and the card row for an issue or a replacement, keyed by the event.
fn create_card(state: &AppState, uid: &str, holder_id: i64, key_version: u8, event_id: i64) -> Result<Card, ApiError> {
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
    Ok(state.ledger.registry(|r| r.insert_card(uid, holder_id, account.id.0, version, now, event_id))?)
}

/// Issues a card to a holder: a new wallet at zero.
#[utoipa::path(post, path = "/v1/cards", tag = "operator", request_body = NewCard,
    params(("Idempotency-Key" = String, Header, description = "unique per write")),
    responses((status = 201, body = CardView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn issue_card(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
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
    let (u, k) = (uid.clone(), caller.key(&key.0));
    let (holder, taken, mine) = blocking(move || {
        let (h, c) = st.ledger.registry(|r| Ok((r.holder(holder_id)?, r.card_by_uid(&u)?)))?;
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
    let details = json!({"uid": uid, "holder_id": holder_id, "key_version": key_version});
    let rec = log_action(&state, &caller, &key, "issue_card", details).await?;
    let st = state.clone();
    let view = blocking(move || {
        let card = create_card(&st, &uid, holder_id, key_version, rec.event.id)?;
        card_view(&st, &card)
    })
    .await?;
    Ok(HttpResponse::Created().json(view))
}

async fn load_card(state: &web::Data<AppState>, id: &str) -> Result<Card, ApiError> {
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
    pub reason: String,
}

async fn set_status(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: String,
    status: &'static str,
    reason: Option<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let card = load_card(&state, &id).await?;
    if card.status == "replaced" {
        return Err(ApiError::conflict("card_replaced", "this card was replaced; it cannot change any more"));
    }
    let action = if status == "blocked" { "block_card" } else { "unblock_card" };
    let rec = log_action(&state, &caller, &key, action, json!({"card_id": card.id, "reason": reason})).await?;
    let st = state.clone();
    let view = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry(|r| r.set_card_status(card.id, status, reason.as_deref(), None, now, rec.event.id))?;
        let card = st.ledger.registry(|r| r.card(card.id))?.ok_or_else(|| ApiError::internal("card vanished"))?;
        card_view(&st, &card)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Blocks a card: its taps are refused at once.
#[utoipa::path(post, path = "/v1/cards/{id}/block", tag = "operator", request_body = BlockCard, params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = CardView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn block_card(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<String>,
    body: web::Json<BlockCard>,
) -> Result<HttpResponse, ApiError> {
    if !["lost", "stolen", "damaged", "fraud", "other"].contains(&body.reason.as_str()) {
        return Err(ApiError::unprocessable("invalid_field", "reason must be lost, stolen, damaged, fraud or other"));
    }
    set_status(state, caller, key, id.into_inner(), "blocked", Some(body.reason.clone())).await
}

/// Unblocks a card.
#[utoipa::path(post, path = "/v1/cards/{id}/unblock", tag = "operator", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = CardView), (status = 404, body = crate::error::Problem)))]
pub async fn unblock_card(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_status(state, caller, key, id.into_inner(), "active", None).await
}

/// `POST /v1/cards/{id}/replace`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceCard {
    /// The new card's UID.
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

/// Replaces a card (lost, damaged): a new card for the same holder, the old one stops
/// working, and the balance moves to the new card in one entry.
#[utoipa::path(post, path = "/v1/cards/{id}/replace", tag = "operator", request_body = ReplaceCard, params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = Replacement), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn replace_card(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<String>,
    body: web::Json<ReplaceCard>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let new_uid = parse_uid(&body.new_uid)?;
    let old = load_card(&state, &id).await?;
    if old.status == "replaced" {
        // Only a retry of the same replacement may go on (it finds what it created).
        let k = caller.key(&key.0);
        let st = state.clone();
        if blocking(move || Ok(st.ledger.event_by_key(&k)?)).await?.is_none() {
            return Err(ApiError::conflict("card_replaced", "this card was already replaced"));
        }
    }
    let st = state.clone();
    let (u, k) = (new_uid.clone(), caller.key(&key.0));
    let (taken, mine) =
        blocking(move || Ok((st.ledger.registry(|r| r.card_by_uid(&u))?, st.ledger.event_by_key(&k)?.map(|e| e.id))))
            .await?;
    if let Some(t) = taken {
        if Some(t.event_id) != mine {
            return Err(ApiError::conflict("card_exists", "a card with this UID is registered"));
        }
    }
    let version = state.taps.0.newest().version();
    let details = json!({"card_id": old.id, "new_uid": new_uid, "key_version": version});
    let rec = log_action(&state, &caller, &key, "replace_card", details).await?;
    let st = state.clone();
    let new = blocking(move || create_card(&st, &new_uid, old.holder_id, version, rec.event.id)).await?;
    let st = state.clone();
    let now = state.ledger.now_us();
    let new_id = new.id;
    blocking(move || {
        st.ledger.registry(|r| r.set_card_status(old.id, "replaced", None, Some(new_id), now, rec.event.id))?;
        Ok(())
    })
    .await?;
    // The writer moves whatever the old wallet holds at that point of the log, with what
    // it owes; from then on the old wallet pays nothing and every credit to it (a refund, a
    // released hold) goes to the new card in the same entry. A retry finds its entry by key.
    let request = Request::new(Command::ReplaceCard {
        old_wallet: AccountId(old.account_id),
        new_wallet: AccountId(new.account_id),
    })
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

// ---- merchants, service points, agents ----

/// Merchant categories.
pub const MERCHANT_CATEGORIES: [&str; 7] =
    ["grocery", "hotel", "restaurant", "hospital", "parking", "transport", "other"];

/// `POST /v1/merchants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMerchant {
    /// Name.
    pub name: String,
    /// grocery, hotel, restaurant, hospital, parking, transport, other.
    pub category: String,
    /// Merchant discount rate, e.g. "0.007".
    pub fee_rate: String,
}

/// A merchant as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MerchantView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Merchant discount rate.
    pub fee_rate: String,
    /// The merchant's account.
    pub account_id: String,
}

fn merchant_view(m: &Merchant) -> MerchantView {
    MerchantView {
        id: m.id.to_string(),
        name: m.name.clone(),
        category: m.category.clone(),
        fee_rate: m.fee_rate.clone(),
        account_id: m.account_id.to_string(),
    }
}

/// Registers a merchant and opens its account.
#[utoipa::path(post, path = "/v1/merchants", tag = "operator", request_body = NewMerchant, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = MerchantView), (status = 422, body = crate::error::Problem)))]
pub async fn create_merchant(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: web::Json<NewMerchant>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    if !MERCHANT_CATEGORIES.contains(&body.category.as_str()) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("category must be one of {MERCHANT_CATEGORIES:?}"),
        ));
    }
    let rate = ledger::money::FeeRate::parse(&body.fee_rate)
        .map_err(|e| ApiError::unprocessable("invalid_field", format!("fee_rate: {e}")))?;
    let fee_rate = rate.as_decimal().normalize().to_string();
    let category = body.category.clone();
    let rec = log_action(
        &state,
        &caller,
        &key,
        "create_merchant",
        json!({"name": name, "category": category, "fee_rate": fee_rate}),
    )
    .await?;
    let st = state.clone();
    let m = blocking(move || {
        if let Some(m) = st.ledger.registry(|r| r.merchant_by_event(rec.event.id))? {
            return Ok(m);
        }
        let account = st.ledger.create_account(NewAccount {
            kind: AccountKind::Merchant,
            currency: st.settings.currency,
            name: format!("merchant {name}"),
            balance_max_minor: None,
        })?;
        let now = st.ledger.now_us();
        Ok(st.ledger.registry(|r| r.insert_merchant(&name, &category, &fee_rate, account.id.0, now, rec.event.id))?)
    })
    .await?;
    Ok(HttpResponse::Created().json(merchant_view(&m)))
}

/// `POST /v1/service-points`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServicePoint {
    /// Name.
    pub name: String,
    /// clinic, library, city_office, other.
    pub service: String,
    /// Who may enter and when.
    pub policy: Policy,
}

/// A service point as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServicePointView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Service.
    pub service: String,
    /// Policy.
    pub policy: Policy,
}

fn service_point_view(s: &ServicePoint) -> Result<ServicePointView, ApiError> {
    Ok(ServicePointView {
        id: s.id.to_string(),
        name: s.name.clone(),
        service: s.service.clone(),
        policy: serde_json::from_str(&s.policy).map_err(ApiError::internal)?,
    })
}

/// Registers a service point with its access policy.
#[utoipa::path(post, path = "/v1/service-points", tag = "operator", request_body = NewServicePoint, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = ServicePointView), (status = 422, body = crate::error::Problem)))]
pub async fn create_service_point(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: web::Json<NewServicePoint>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    if !["clinic", "library", "city_office", "other"].contains(&body.service.as_str()) {
        return Err(ApiError::unprocessable("invalid_field", "service must be clinic, library, city_office or other"));
    }
    crate::access::rules(&body.policy)?;
    let policy = serde_json::to_string(&body.policy).map_err(ApiError::internal)?;
    let service = body.service.clone();
    let details = json!({"name": name, "service": service, "policy": body.policy});
    let rec = log_action(&state, &caller, &key, "create_service_point", details).await?;
    let st = state.clone();
    let s = blocking(move || {
        let now = st.ledger.now_us();
        Ok(st.ledger.registry_transaction(|r| match r.service_point_by_event(rec.event.id)? {
            Some(s) => Ok(s),
            None => r.insert_service_point(&name, &service, &policy, now, rec.event.id),
        })?)
    })
    .await?;
    Ok(HttpResponse::Created().json(service_point_view(&s)?))
}

/// `POST /v1/agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// Name.
    pub name: String,
}

/// An agent as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The float account.
    pub account_id: String,
    /// The float's balance.
    pub float: Money,
}

fn agent_view(state: &AppState, a: &Agent) -> Result<AgentView, ApiError> {
    Ok(AgentView {
        id: a.id.to_string(),
        name: a.name.clone(),
        account_id: a.account_id.to_string(),
        float: money(state.ledger.balance(AccountId(a.account_id))?, state.settings.currency),
    })
}

/// Registers a top-up agent and opens its float (at zero).
#[utoipa::path(post, path = "/v1/agents", tag = "operator", request_body = NewAgent, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = AgentView), (status = 422, body = crate::error::Problem)))]
pub async fn create_agent(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: web::Json<NewAgent>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    let rec = log_action(&state, &caller, &key, "create_agent", json!({"name": name})).await?;
    let st = state.clone();
    let view = blocking(move || {
        let a = match st.ledger.registry(|r| r.agent_by_event(rec.event.id))? {
            Some(a) => a,
            None => {
                let account = st.ledger.create_account(NewAccount {
                    kind: AccountKind::AgentFloat,
                    currency: st.settings.currency,
                    name: format!("agent {name}"),
                    balance_max_minor: None,
                })?;
                let now = st.ledger.now_us();
                st.ledger.registry(|r| r.insert_agent(&name, account.id.0, now, rec.event.id))?
            }
        };
        agent_view(&st, &a)
    })
    .await?;
    Ok(HttpResponse::Created().json(view))
}

/// An amount, with the installation's currency when omitted.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    /// Decimal string.
    pub amount: String,
    /// ISO 4217; the installation's when omitted.
    pub currency: Option<String>,
}

/// A posted transfer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Posting {
    /// Amount.
    pub amount: Money,
    /// Receipt.
    #[serde(flatten)]
    pub receipt: Receipt,
    /// Balance of the account credited, after.
    pub balance: Money,
}

/// Funds an agent's float from the city bank (the agent paid the city). Above
/// `float_approval_threshold_minor` it is a request (202) that a second operator approves
/// (`POST /v1/approvals/{id}/approve`); at or below it is posted at once.
#[utoipa::path(post, path = "/v1/agents/{id}/float", tag = "operator", request_body = AmountBody, params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = Posting), (status = 202, body = crate::approvals::ApprovalView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn fund_agent(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<String>,
    body: web::Json<AmountBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let agent_id = wire::id(&id)?;
    let currency = wire::currency(body.currency.as_deref(), state.settings.currency)?;
    let amount = wire::amount(&body.amount, currency, state.settings.amount_max_minor)?;
    crate::within(&amount, state.settings.limits.float_funding_max_minor, "a float funding")?;
    let st = state.clone();
    let agent = blocking(move || Ok(st.ledger.registry(|r| r.agent(agent_id))?))
        .await?
        .ok_or_else(|| ApiError::not_found("not_found", "no such agent"))?;
    if amount.minor() > state.settings.float_approval_threshold_minor {
        let payload = json!({"agent_id": agent.id, "amount_minor": amount.minor(), "currency": currency.code(),
            "amount": currency.format_minor(amount.minor())});
        let a = crate::approvals::request(&state, &caller, &key, crate::approvals::FUND_AGENT, payload).await?;
        return Ok(crate::approvals::accepted(&a));
    }
    let st = state.clone();
    let bank = blocking(move || st.system_account(AccountKind::CityBank, currency)).await?;
    let request = Request::new(Command::Transfer {
        kind: EntryKind::Transfer,
        legs: vec![
            Leg { account: AccountId(agent.account_id), amount_minor: amount.minor() },
            Leg { account: bank, amount_minor: -amount.minor() },
        ],
    })
    .with_key(ledger_key(&caller, &key, "")?)
    .with_references(References {
        terminal_id: Some(caller.reference()),
        memo: Some(format!("float for agent {}", agent.id)),
        ..Default::default()
    });
    let posted = state.ledger.submit(request).await?;
    let balance =
        posted.entry.postings.iter().find(|p| p.account_id.0 == agent.account_id).map_or(0, |p| p.balance_after_minor);
    Ok(HttpResponse::Created().json(Posting {
        amount: money(amount.minor(), currency),
        receipt: receipt(&posted.entry),
        balance: money(balance, currency),
    }))
}

// ---- credentials ----

/// `POST /v1/credentials`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    /// operator, merchant_terminal, service_point, top_up_agent, kiosk, auditor.
    pub role: Role,
    /// The terminal or the person.
    pub name: String,
    /// For merchant terminals.
    pub merchant_id: Option<String>,
    /// For service points.
    pub service_point_id: Option<String>,
    /// For top-up agents.
    pub agent_id: Option<String>,
    /// Ed25519 public key of a terminal, 64 hex digits (offline journals).
    pub public_key: Option<String>,
    /// Offline risk limits of a terminal.
    #[schema(value_type = Option<Object>)]
    pub offline_limits: Option<serde_json::Value>,
    /// For role operator (required): the named person the credential belongs to.
    pub person: Option<String>,
}

/// A credential as returned; `token` only in the response that created it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    /// Id.
    pub id: String,
    /// Role.
    pub role: String,
    /// Name.
    pub name: String,
    /// Scope.
    pub merchant_id: Option<String>,
    /// Scope.
    pub service_point_id: Option<String>,
    /// Scope.
    pub agent_id: Option<String>,
    /// The bearer token: shown once, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Revoked.
    pub revoked: bool,
    /// The person an operator credential belongs to.
    pub person: Option<String>,
    /// The credential that created it (null: made on the host).
    pub created_by: Option<String>,
}

/// The view of a credential, with its token when just created.
pub fn credential_view(c: &Credential, token: Option<String>) -> CredentialView {
    CredentialView {
        id: c.id.to_string(),
        role: c.role.clone(),
        name: c.name.clone(),
        merchant_id: c.merchant_id.map(|v| v.to_string()),
        service_point_id: c.service_point_id.map(|v| v.to_string()),
        agent_id: c.agent_id.map(|v| v.to_string()),
        token,
        revoked: c.revoked_at_us.is_some(),
        person: c.person.clone(),
        created_by: c.created_by.map(|v| v.to_string()),
    }
}

/// What `create_credential` does with a valid body: an operator credential is a request
/// for a second operator's approval; any other is made at once.
enum Created {
    Credential(Box<CredentialView>),
    Requested(Box<ledger::registry::Approval>),
}

/// Creates a credential; its token is in this response only. A retried request returns
/// the credential without the token (it cannot be shown twice): revoke it and create
/// another if the first response was lost. An operator credential is only requested here.
async fn create_credential_inner(
    state: &web::Data<AppState>,
    caller: &Caller,
    key: &IdempotencyKey,
    body: &NewCredential,
) -> Result<Created, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    let person = match (body.role, body.person.as_deref()) {
        (Role::Operator, Some(p)) => Some(crate::approvals::person_name(p)?),
        (Role::Operator, None) => {
            return Err(ApiError::unprocessable("invalid_field", "an operator credential needs person: who holds it"))
        }
        (_, Some(_)) => {
            return Err(ApiError::unprocessable("invalid_field", "only an operator credential names a person"))
        }
        (_, None) => None,
    };
    let scope_id = |v: &Option<String>, field: &str| -> Result<Option<i64>, ApiError> {
        v.as_deref()
            .map(|t| {
                wire::id(t).map_err(|_| ApiError::unprocessable("invalid_field", format!("{field} names nothing")))
            })
            .transpose()
    };
    let merchant = scope_id(&body.merchant_id, "merchant_id")?;
    let service_point = scope_id(&body.service_point_id, "service_point_id")?;
    let agent = scope_id(&body.agent_id, "agent_id")?;
    let needs = match body.role {
        Role::MerchantTerminal => (merchant.is_some(), service_point.is_none(), agent.is_none()),
        Role::ServicePoint => (merchant.is_none(), service_point.is_some(), agent.is_none()),
        Role::TopUpAgent => (merchant.is_none(), service_point.is_none(), agent.is_some()),
        _ => (merchant.is_none(), service_point.is_none(), agent.is_none()),
    };
    if needs != (true, true, true) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            "a merchant_terminal needs merchant_id, a service_point service_point_id, a top_up_agent agent_id; other roles none",
        ));
    }
    if let Some(pk) = &body.public_key {
        if pk.len() != 64 || !pk.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::unprocessable("invalid_field", "public_key must be 64 hex digits (Ed25519)"));
        }
    }
    let limits = match &body.offline_limits {
        Some(v) => match serde_json::from_value::<offline::RiskLimits>(v.clone()) {
            Ok(l) if l.per_tap_minor >= 0 && l.per_card_per_day_minor >= 0 && l.outstanding_minor >= 0 => {
                Some(serde_json::to_string(&l).map_err(ApiError::internal)?)
            }
            _ => {
                return Err(ApiError::unprocessable(
                    "invalid_field",
                    "offline_limits is {per_tap_minor, per_card_per_day_minor, outstanding_minor}, each 0 or more",
                ))
            }
        },
        None => None,
    };
    if let Some(person) = person {
        if body.public_key.is_some() || limits.is_some() {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "an operator credential takes no terminal keys or limits",
            ));
        }
        let payload = json!({"role": "operator", "name": name, "person": person});
        let a = crate::approvals::request(state, caller, key, crate::approvals::CREATE_OPERATOR_CREDENTIAL, payload)
            .await?;
        return Ok(Created::Requested(Box::new(a)));
    }
    let st = state.clone();
    let exists = blocking(move || {
        Ok(st.ledger.registry(|r| {
            Ok(merchant.is_none_or(|m| r.merchant(m).ok().flatten().is_some())
                && service_point.is_none_or(|s| r.service_point(s).ok().flatten().is_some())
                && agent.is_none_or(|a| r.agent(a).ok().flatten().is_some()))
        })?)
    })
    .await?;
    if !exists {
        return Err(ApiError::unprocessable("invalid_field", "the merchant, service point or agent does not exist"));
    }
    let role = body.role;
    // The leaf records the row as it will be: the limits as stored, the token's hash.
    let logged_limits = limits.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose();
    let (token, hash) = token_for(state, caller, key).await?;
    let details = json!({"role": role, "name": name, "merchant_id": merchant, "service_point_id": service_point,
        "agent_id": agent, "public_key": body.public_key, "offline_limits": logged_limits.map_err(ApiError::internal)?,
        "token_hash": hex::encode(hash)});
    let rec = log_action(state, caller, key, "create_credential", details).await?;
    let public_key = body.public_key.clone();
    let st = state.clone();
    let by = caller.credential.id;
    let (credential, fresh) = blocking(move || {
        let now = st.ledger.now_us();
        Ok(st.ledger.registry_transaction(|r| match r.credential_by_event(rec.event.id)? {
            Some(c) => Ok((c, false)),
            None => r
                .insert_credential(
                    NewCredentialRow {
                        role: role.as_str(),
                        name: &name,
                        token_hash: &hash,
                        scope: (merchant, service_point, agent),
                        public_key: public_key.as_deref(),
                        offline_limits: limits.as_deref(),
                        person: None,
                        created_by: Some(by),
                    },
                    now,
                    rec.event.id,
                )
                .map(|c| (c, true)),
        })?)
    })
    .await?;
    Ok(Created::Credential(Box::new(credential_view(&credential, token.filter(|_| fresh)))))
}

/// Creates a credential (a token for a terminal or a person), shown once. An operator
/// credential (which names its `person`) is a request instead: 202 with the pending
/// approval; the token comes in the response of the second operator's approval.
#[utoipa::path(post, path = "/v1/credentials", tag = "operator", request_body = NewCredential, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = CredentialView), (status = 202, body = crate::approvals::ApprovalView), (status = 422, body = crate::error::Problem)))]
pub async fn create_credential(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: web::Json<NewCredential>,
) -> Result<HttpResponse, ApiError> {
    Ok(match create_credential_inner(&state, &caller, &key, &body).await? {
        Created::Credential(view) => HttpResponse::Created().json(view),
        Created::Requested(a) => crate::approvals::accepted(&a),
    })
}

/// Revokes a credential: it stops working at once. Revoking an operator credential is a
/// request instead: 202 with the pending approval; it is revoked when a second operator
/// approves.
#[utoipa::path(delete, path = "/v1/credentials/{id}", tag = "operator", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = CredentialView), (status = 202, body = crate::approvals::ApprovalView), (status = 404, body = crate::error::Problem)))]
pub async fn revoke_credential(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let id = wire::id(&id)?;
    let st = state.clone();
    let c = blocking(move || Ok(st.ledger.registry(|r| r.credential(id))?))
        .await?
        .ok_or_else(|| ApiError::not_found("not_found", "no such credential"))?;
    if c.role == Role::Operator.as_str() && c.revoked_at_us.is_none() {
        let payload = json!({"credential_id": c.id, "name": c.name, "person": crate::approvals::person_of(&c)});
        let a = crate::approvals::request(&state, &caller, &key, crate::approvals::REVOKE_OPERATOR_CREDENTIAL, payload)
            .await?;
        return Ok(crate::approvals::accepted(&a));
    }
    let rec = log_action(&state, &caller, &key, "revoke_credential", json!({"credential_id": c.id})).await?;
    let st = state.clone();
    let c = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry(|r| r.revoke_credential(id, now, rec.event.id))?;
        st.ledger.registry(|r| r.credential(id))?.ok_or_else(|| ApiError::internal("credential vanished"))
    })
    .await?;
    Ok(HttpResponse::Ok().json(credential_view(&c, None)))
}

// ---- adjustments ----

/// `POST /v1/adjustments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdjustment {
    /// The account to correct.
    pub account_id: String,
    /// Signed decimal: positive credits the account, negative debits it. The other side is
    /// the suspense account.
    pub amount: String,
    /// Currency.
    pub currency: Option<String>,
    /// Why.
    pub reason: String,
}

/// An adjustment as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdjustmentView {
    /// Id.
    pub id: String,
    /// Account.
    pub account_id: String,
    /// Signed amount.
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// pending or posted.
    pub status: String,
    /// Who asked.
    pub requested_by: String,
    /// Who approved.
    pub approved_by: Option<String>,
    /// The entry, once posted.
    pub entry_seq: Option<i64>,
}

fn adjustment_view(a: &ledger::registry::Adjustment, currency: ledger::money::Currency) -> AdjustmentView {
    AdjustmentView {
        id: a.id.to_string(),
        account_id: a.account_id.to_string(),
        amount: money(a.amount_minor, currency),
        reason: a.reason.clone(),
        status: a.status.clone(),
        requested_by: a.requested_by.to_string(),
        approved_by: a.approved_by.map(|v| v.to_string()),
        entry_seq: a.entry_seq,
    }
}

/// Asks for an adjustment; it is posted only when a second operator approves it.
#[utoipa::path(post, path = "/v1/adjustments", tag = "operator", request_body = NewAdjustment, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = AdjustmentView), (status = 422, body = crate::error::Problem)))]
pub async fn request_adjustment(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: web::Json<NewAdjustment>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let currency = wire::currency(body.currency.as_deref(), state.settings.currency)?;
    let amount = wire::signed_amount(&body.amount, currency)?;
    if amount.unsigned_abs() > state.settings.amount_max_minor as u64 {
        return Err(ApiError::unprocessable("invalid_amount", "the amount is above the maximum"));
    }
    let reason = wire::text("reason", &body.reason, 200)?;
    let account_id =
        wire::id(&body.account_id).map_err(|_| ApiError::unprocessable("account_unknown", "no such account"))?;
    let st = state.clone();
    let account = blocking(move || Ok(st.ledger.account(AccountId(account_id))?)).await?;
    match account {
        Some(a) if a.currency == currency && !a.kind.is_system() => {}
        Some(_) => {
            return Err(ApiError::unprocessable("invalid_field", "that account cannot be adjusted in this currency"))
        }
        None => return Err(ApiError::unprocessable("account_unknown", "no such account")),
    }
    let rec = log_action(
        &state,
        &caller,
        &key,
        "request_adjustment",
        json!({"account_id": account_id, "amount_minor": amount, "currency": currency.code(), "reason": reason}),
    )
    .await?;
    let st = state.clone();
    let by = caller.credential.id;
    let person = crate::approvals::person_of(&caller.credential).to_owned();
    // The adjustment and its approval request, both keyed by the request's event.
    let a = blocking(move || {
        let now = st.ledger.now_us();
        Ok(st.ledger.registry_transaction(|r| {
            let a = match r.adjustment_by_event(rec.event.id)? {
                Some(a) => a,
                None => r.insert_adjustment(account_id, amount, currency.code(), &reason, by, now, rec.event.id)?,
            };
            if r.approval_by_event(rec.event.id)?.is_none() {
                let payload = json!({"adjustment_id": a.id, "account_id": account_id, "amount_minor": amount,
                    "currency": currency.code(), "reason": reason});
                r.insert_approval(crate::approvals::ADJUSTMENT, &payload.to_string(), by, &person, now, rec.event.id)?;
            }
            Ok(a)
        })?)
    })
    .await?;
    Ok(HttpResponse::Created().json(adjustment_view(&a, currency)))
}

/// Approves an adjustment: the approval request of the adjustment
/// (`POST /v1/approvals/{id}/approve`, the same per-person rule); posts it against the
/// suspense account.
#[utoipa::path(post, path = "/v1/adjustments/{id}/approve", tag = "operator", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = AdjustmentView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn approve_adjustment(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let id = wire::id(&id)?;
    let st = state.clone();
    let (a, approval) = blocking(move || {
        Ok(st.ledger.registry(|r| {
            let a = r.adjustment(id)?;
            let approval = match &a {
                Some(a) => r.approval_by_event(a.event_id)?,
                None => None,
            };
            Ok((a, approval))
        })?)
    })
    .await?;
    let a = a.ok_or_else(|| ApiError::not_found("not_found", "no such adjustment"))?;
    let currency = ledger::money::Currency::parse(&a.currency).map_err(ApiError::internal)?;
    let Some(approval) = approval else {
        // Decided before approvals were recorded.
        return Ok(HttpResponse::Ok().json(adjustment_view(&a, currency)));
    };
    if a.status != "pending" {
        // The rule first: the requester learns nothing it could not approve anyway.
        let st = state.clone();
        let approver = caller.credential.clone();
        blocking(move || crate::approvals::check_rule(&st, &approval, &approver)).await?;
        return Ok(HttpResponse::Ok().json(adjustment_view(&a, currency)));
    }
    crate::approvals::approve_inner(&state, &caller, &key, approval.id).await?;
    let st = state.clone();
    let a = blocking(move || {
        st.ledger.registry(|r| r.adjustment(id))?.ok_or_else(|| ApiError::internal("adjustment vanished"))
    })
    .await?;
    Ok(HttpResponse::Ok().json(adjustment_view(&a, currency)))
}

// ---- settlements ----

/// One merchant's settlement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettlementLine {
    /// Merchant.
    pub merchant_id: String,
    /// Card payments and captures since the last settlement.
    pub gross: Money,
    /// Merchant discount on them, net of fees returned by refunds.
    pub fee: Money,
    /// Paid out to the merchant's bank: the account's whole balance.
    pub net: Money,
    /// The settlement entry.
    pub entry_seq: i64,
}

/// The settlement run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Settlements {
    /// One line per merchant that had a balance.
    pub lines: Vec<SettlementLine>,
}

/// Pays every merchant's balance out to the city bank (which pays the merchant's bank).
#[utoipa::path(post, path = "/v1/settlements", tag = "operator", params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = Settlements)))]
pub async fn settle(state: web::Data<AppState>, caller: Caller, key: IdempotencyKey) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    log_action(&state, &caller, &key, "settle", json!({})).await?;
    let st = state.clone();
    let merchants = blocking(move || Ok(st.ledger.registry(|r| r.merchants())?)).await?;
    let currency = state.settings.currency;
    let st = state.clone();
    let bank = blocking(move || st.system_account(AccountKind::CityBank, currency)).await?;
    let mut lines = Vec::new();
    for m in merchants {
        // The writer pays exactly the merchant's payable balance at this point of the log;
        // a retry of this run finds the entry it made by key and pays nothing twice.
        let request = Request::new(Command::Settle { merchant: AccountId(m.account_id), bank })
            .with_key(ledger_key(&caller, &key, &format!(":m{}", m.id))?)
            .with_references(References {
                terminal_id: Some(caller.reference()),
                memo: Some(format!("settlement of merchant {}", m.id)),
                ..Default::default()
            });
        let entry = match state.ledger.submit(request).await {
            Ok(p) => p.entry,
            Err(LedgerError::Rejected(ledger::domain::Rejection::NothingToSettle)) => continue,
            Err(e) => return Err(e.into()),
        };
        // The report: what the period this settlement closed held (read after the fact,
        // pinned to the entry; it decides nothing).
        let st = state.clone();
        let (mm, upto) = (m.clone(), entry.seq);
        let (gross, fee) = blocking(move || since_last_settlement(&st, &mm, upto)).await?;
        lines.push(SettlementLine {
            merchant_id: m.id.to_string(),
            gross: money(gross, currency),
            fee: money(fee, currency),
            net: money(entry.amount_minor, currency),
            entry_seq: entry.seq,
        });
    }
    Ok(HttpResponse::Created().json(Settlements { lines }))
}

/// Gross and fees of a merchant's payments, captures and refunds between its settlement
/// before entry `upto` and `upto` (the settlement entry that closed the period).
fn since_last_settlement(state: &AppState, m: &Merchant, upto: i64) -> Result<(i64, i64), ApiError> {
    let account = AccountId(m.account_id);
    let (mut gross, mut fee) = (0i64, 0i64);
    let mut after = 0;
    let mut since_settlement: Vec<ledger::StatementLine> = Vec::new();
    'pages: loop {
        let page = state.ledger.statement(account, 0, i64::MAX, after, ledger::PAGE_MAX)?;
        let Some(last) = page.lines.last() else { break };
        after = last.entry_seq;
        for line in page.lines {
            if line.entry_seq >= upto {
                break 'pages;
            }
            if line.kind == EntryKind::Settlement {
                since_settlement.clear();
            } else {
                since_settlement.push(line);
            }
        }
    }
    for line in since_settlement {
        if matches!(line.kind, EntryKind::Payment | EntryKind::Capture | EntryKind::Refund) {
            if let Some(e) = state.ledger.entry(line.entry_seq)? {
                match e.kind {
                    EntryKind::Refund => {
                        gross -= e.amount_minor;
                        fee -= e.fee_minor;
                    }
                    _ => {
                        gross += e.amount_minor;
                        fee += e.fee_minor;
                    }
                }
            }
        }
    }
    Ok((gross, fee))
}
