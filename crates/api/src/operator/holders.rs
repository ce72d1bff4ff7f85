//! Card holders: who a card belongs to. The NIK is kept only as a keyed hash; the
//! categories (resident, student, ...) are what access policies refer to.

use actix_web::{web, HttpResponse};
use ledger::registry::Holder;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::log_action;
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire;
use crate::{blocking, AppState};

use domain::registry::Categories;

/// `POST /v1/holders`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHolder {
    /// Full name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// National identity number (16 digits); stored keyed-hashed, never returned.
    #[schema(pattern = "^[0-9]{16}$")]
    pub nik: String,
    /// Categories: resident, student, senior, insured, staff.
    #[schema(max_items = 5)]
    pub categories: Vec<String>,
}

/// A holder as returned (no NIK).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HolderView {
    /// The holder's id, for `POST /v1/cards`.
    pub id: String,
    /// The holder's full name, as registered.
    pub name: String,
    /// The holder's categories, alphabetically (what service points' policies admit).
    pub categories: Vec<String>,
    /// When the holder was registered (RFC 3339, UTC).
    pub created_at: String,
}

pub(crate) fn holder_view(h: &Holder) -> HolderView {
    HolderView {
        id: h.id.to_string(),
        name: h.name.clone(),
        categories: h.categories.names(),
        created_at: wire::time(h.created_at_us),
    }
}

/// Registers a card holder.
#[utoipa::path(post, path = "/v1/holders", tag = "operator", request_body = NewHolder,
    params(("Idempotency-Key" = String, Header, description = "unique per write")),
    responses((status = 201, body = HolderView), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create_holder(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewHolder>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    if !domain::registry::is_nik(&body.nik) {
        return Err(ApiError::unprocessable("invalid_field", "nik must be 16 digits"));
    }
    let categories = Categories::parse_names(&body.categories)
        .map_err(|e| ApiError::unprocessable("invalid_field", format!("unknown category {:?}", e.value)))?;
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
    let details = json!({"name": name, "categories": categories.names(), "nik_hash": hex::encode(&nik_hash)});
    let rec = log_action(&state, &caller, &key, "create_holder", details).await?;
    let st = state.clone();
    let holder = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry_transaction(|r| {
            if let Some(h) = r.holder_by_event(rec.event.id)? {
                return Ok(Ok(h));
            }
            if r.holder_by_nik(&nik_hash)?.is_some() {
                return Ok(Err(ApiError::conflict("holder_exists", "a holder with this NIK is registered")));
            }
            Ok(Ok(r.insert_holder(
                ledger::registry::NewHolderRow { name: &name, nik_hash: &nik_hash, categories },
                now,
                rec.event.id,
            )?))
        })?
    })
    .await?;
    Ok(HttpResponse::Created().json(holder_view(&holder)))
}
