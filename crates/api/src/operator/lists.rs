//! The back office's reads: cards (by UID, holder, status), holders (by name or NIK),
//! merchants, credentials (never their tokens), and merchants' offline terminals with
//! their last upload and exposure. Operator only; pages by id with `limit` and `cursor`.

use actix_web::{web, HttpResponse};
use domain::registry::{CardStatus, Role};
use ledger::registry::{Card, CardFilter};
use serde::{Deserialize, Serialize};

use super::credentials::{credential_view, CredentialView};
use super::holders::{holder_view, HolderView};
use super::merchants::{merchant_view, MerchantView};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::wire::{self, money, Money, Page};
use crate::{blocking, AppState};

/// Registers the list routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/cards", web::get().to(list_cards))
        .route("/v1/holders", web::get().to(list_holders))
        .route("/v1/merchants", web::get().to(list_merchants))
        .route("/v1/credentials", web::get().to(list_credentials))
        .route("/v1/offline/terminals", web::get().to(offline_terminals));
}

/// `GET /v1/cards` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CardsQuery {
    /// One card by its UID (14 hex digits).
    #[param(pattern = "^[0-9A-Fa-f]{14}$")]
    pub uid: Option<String>,
    /// The cards of one holder.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub holder_id: Option<String>,
    /// Only cards in this state.
    pub status: Option<CardStatus>,
    /// How many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A card in a list (its balance and replays: `GET /v1/cards/{id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CardSummary {
    /// The card's id.
    pub id: String,
    /// Its UID, 14 upper-case hex digits.
    pub uid: String,
    /// The holder it belongs to.
    pub holder_id: String,
    /// active, blocked or replaced.
    pub status: CardStatus,
    /// The card key version it holds.
    pub key_version: i32,
    /// Its wallet.
    pub account_id: String,
}

/// A page of cards.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CardList {
    /// The cards, by id.
    pub cards: Vec<CardSummary>,
    /// Continue with this cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

fn page_of(limit: Option<i64>, cursor: &Option<String>) -> Result<(i64, i64), ApiError> {
    let page = Page { limit, cursor: cursor.clone() };
    Ok((page.limit()?, page.after()?))
}

fn next_cursor(len: usize, limit: i64, last_id: Option<i64>) -> Option<String> {
    (len as i64 == limit).then_some(last_id).flatten().map(wire::cursor)
}

fn id_param(text: &Option<String>, name: &str) -> Result<Option<i64>, ApiError> {
    text.as_deref()
        .map(|t| t.parse::<i64>().map_err(|_| ApiError::bad_request("invalid_query", format!("{name} must be an id"))))
        .transpose()
}

/// Cards, by id: search by UID, holder or status.
#[utoipa::path(get, path = "/v1/cards", tag = "operator", params(CardsQuery),
    responses((status = 200, body = CardList), (status = 400, description = "`invalid_query`", body = crate::error::Problem)))]
pub async fn list_cards(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<CardsQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let (limit, after) = page_of(q.limit, &q.cursor)?;
    let uid = q
        .uid
        .as_deref()
        .map(|u| u.parse().map_err(|_| ApiError::bad_request("invalid_query", "uid must be 14 hex digits")))
        .transpose()?;
    let filter = CardFilter { uid, holder_id: id_param(&q.holder_id, "holder_id")?, status: q.status };
    let st = state.clone();
    let cards: Vec<Card> = blocking(move || Ok(st.ledger.registry(|r| r.cards_page(&filter, after, limit))?)).await?;
    let next = next_cursor(cards.len(), limit, cards.last().map(|c| c.id));
    let cards = cards
        .iter()
        .map(|c| CardSummary {
            id: c.id.to_string(),
            uid: c.uid.to_string(),
            holder_id: c.holder_id.to_string(),
            status: c.status,
            key_version: c.key_version,
            account_id: c.account_id.to_string(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(CardList { cards, next_cursor: next }))
}

/// `GET /v1/holders` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct HoldersQuery {
    /// Holders whose name holds this (letters compared without case).
    #[param(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// The holder with this NIK (16 digits; looked up by its keyed hash, never stored).
    #[param(pattern = "^[0-9]{16}$")]
    pub nik: Option<String>,
    /// How many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of holders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HolderList {
    /// The holders, by id.
    pub holders: Vec<HolderView>,
    /// Continue with this cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Holders, by id: search by name, or find one by NIK.
#[utoipa::path(get, path = "/v1/holders", tag = "operator", params(HoldersQuery),
    responses((status = 200, body = HolderList), (status = 400, description = "`invalid_query`", body = crate::error::Problem)))]
pub async fn list_holders(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<HoldersQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let (limit, after) = page_of(q.limit, &q.cursor)?;
    let name = match q.name.as_deref().map(str::trim) {
        Some(n) if n.is_empty() || n.len() > 200 => {
            return Err(ApiError::bad_request("invalid_query", "name must be 1 to 200 bytes"))
        }
        other => other.map(str::to_owned),
    };
    let nik_hash = match q.nik.as_deref() {
        Some(nik) if nik.len() == 16 && nik.bytes().all(|b| b.is_ascii_digit()) => Some(state.nik_hash(nik)),
        Some(_) => return Err(ApiError::bad_request("invalid_query", "nik must be 16 digits")),
        None => None,
    };
    let st = state.clone();
    let holders = blocking(move || {
        Ok(st.ledger.registry(|r| match &nik_hash {
            Some(hash) => Ok(r.holder_by_nik(hash)?.into_iter().filter(|h| h.id > after).collect()),
            None => r.holders_page(name.as_deref(), after, limit),
        })?)
    })
    .await?;
    let next = next_cursor(holders.len(), limit, holders.last().map(|h| h.id));
    Ok(HttpResponse::Ok().json(HolderList { holders: holders.iter().map(holder_view).collect(), next_cursor: next }))
}

/// Every merchant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MerchantList {
    /// The merchants, by id.
    pub merchants: Vec<MerchantView>,
}

/// Every merchant, by id.
#[utoipa::path(get, path = "/v1/merchants", tag = "operator", responses((status = 200, body = MerchantList)))]
pub async fn list_merchants(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let st = state.clone();
    let merchants = blocking(move || Ok(st.ledger.registry(|r| r.merchants())?)).await?;
    Ok(HttpResponse::Ok().json(MerchantList { merchants: merchants.iter().map(merchant_view).collect() }))
}

/// `GET /v1/credentials` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CredentialsQuery {
    /// Only this role.
    pub role: Option<Role>,
    /// Revoked credentials too (default: active ones only).
    pub revoked: Option<bool>,
    /// How many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of credentials (never a token).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialList {
    /// The credentials, by id.
    pub credentials: Vec<CredentialView>,
    /// Continue with this cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Credentials, by id, without their tokens (a token is shown once, when made).
#[utoipa::path(get, path = "/v1/credentials", tag = "operator", params(CredentialsQuery),
    responses((status = 200, body = CredentialList), (status = 400, description = "`invalid_query`", body = crate::error::Problem)))]
pub async fn list_credentials(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<CredentialsQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let (limit, after) = page_of(q.limit, &q.cursor)?;
    let (role, revoked) = (q.role, q.revoked.unwrap_or(false));
    let st = state.clone();
    let list = blocking(move || Ok(st.ledger.registry(|r| r.credentials_page(role, revoked, after, limit))?)).await?;
    let next = next_cursor(list.len(), limit, list.last().map(|c| c.id));
    let credentials = list.iter().map(|c| credential_view(c, None)).collect();
    Ok(HttpResponse::Ok().json(CredentialList { credentials, next_cursor: next }))
}

/// A merchant terminal that may pay offline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OfflineTerminal {
    /// The terminal's credential.
    pub credential_id: String,
    /// Its name.
    pub name: String,
    /// The merchant it acts for.
    pub merchant_id: Option<String>,
    /// The number of the last journal record it uploaded (absent: none yet).
    pub last_record: Option<i64>,
    /// When an upload last advanced its journal (RFC 3339; absent: never).
    pub last_upload: Option<String>,
    /// When it last synced its limits and deny list (absent: never).
    pub last_sync: Option<String>,
    /// Its offline payments posted under that sync: the exposure its outstanding limit caps.
    pub exposure: Money,
}

/// Every merchant terminal that registered a journal key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OfflineTerminals {
    /// The terminals, by credential id.
    pub terminals: Vec<OfflineTerminal>,
}

/// Merchants' offline terminals: last upload, last sync and exposure, for the back office
/// to see a till that stopped uploading.
#[utoipa::path(get, path = "/v1/offline/terminals", tag = "operator", responses((status = 200, body = OfflineTerminals)))]
pub async fn offline_terminals(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let st = state.clone();
    let terminals = blocking(move || {
        let currency = st.settings.currency;
        st.ledger
            .registry(|r| {
                let mut out = Vec::new();
                let mut after = 0;
                loop {
                    let page = r.credentials_page(Some(Role::MerchantTerminal), false, after, ledger::PAGE_MAX)?;
                    let Some(last) = page.last() else { break };
                    after = last.id;
                    for c in page.iter().filter(|c| c.public_key.is_some()) {
                        let upload = r.offline_upload(c.id)?;
                        let sync = r.offline_sync_latest(c.id)?;
                        let sync_time =
                            sync.map(|id| r.offline_sync(c.id, id)).transpose()?.flatten().map(|s| s.time_us);
                        let exposure = sync.map(|id| r.offline_exposure(c.id, id)).transpose()?.unwrap_or(0);
                        out.push(OfflineTerminal {
                            credential_id: c.id.to_string(),
                            name: c.name.clone(),
                            merchant_id: c.merchant_id.map(|m| m.to_string()),
                            last_record: upload.map(|(seq, _)| seq),
                            last_upload: upload.map(|(_, t)| wire::time(t)),
                            last_sync: sync_time.map(wire::time),
                            exposure: money(exposure, currency),
                        });
                    }
                }
                Ok(out)
            })
            .map_err(ApiError::from)
    })
    .await?;
    Ok(HttpResponse::Ok().json(OfflineTerminals { terminals }))
}
