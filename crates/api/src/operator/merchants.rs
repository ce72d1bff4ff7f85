//! Merchants: registered with a category and a fee rate, each with its own account.

use actix_web::{web, HttpResponse};
use ledger::domain::{AccountKind, NewAccount};
use ledger::registry::Merchant;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::log_action;
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire;
use crate::{blocking, AppState};

use domain::money::FeeRate;
use domain::registry::MerchantCategory;

/// `POST /v1/merchants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMerchant {
    /// The merchant's trading name, shown on receipts.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// grocery, hotel, restaurant, hospital, parking, transport, other.
    #[schema(pattern = "^(grocery|hotel|restaurant|hospital|parking|transport|transit|other)$")]
    pub category: String,
    /// Merchant discount rate, e.g. "0.007".
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,6})?$", example = "0.007")]
    pub fee_rate: String,
}

/// A merchant as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MerchantView {
    /// The merchant's id, for its terminals' credentials.
    pub id: String,
    /// The merchant's trading name, shown on receipts.
    pub name: String,
    /// What the merchant sells: the city's books total by it.
    pub category: MerchantCategory,
    /// Merchant discount rate, the shortest decimal (`0.007`).
    pub fee_rate: String,
    /// The merchant's account.
    pub account_id: String,
}

pub(crate) fn merchant_view(m: &Merchant) -> MerchantView {
    MerchantView {
        id: m.id.to_string(),
        name: m.name.clone(),
        category: m.category,
        fee_rate: m.fee_rate.to_string(),
        account_id: m.account_id.to_string(),
    }
}

/// Registers a merchant and opens its account.
#[utoipa::path(post, path = "/v1/merchants", tag = "operator", request_body = NewMerchant, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = MerchantView), (status = 422, body = crate::error::Problem)))]
pub async fn create_merchant(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewMerchant>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    let category = MerchantCategory::parse(&body.category).map_err(|_| {
        ApiError::unprocessable("invalid_field", format!("category must be one of {:?}", MerchantCategory::NAMES))
    })?;
    let fee_rate = FeeRate::parse(&body.fee_rate)
        .map_err(|e| ApiError::unprocessable("invalid_field", format!("fee_rate: {e}")))?;
    let rec = log_action(
        &state,
        &caller,
        &key,
        "create_merchant",
        json!({"name": name, "category": category.as_str(), "fee_rate": fee_rate.to_string()}),
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
        Ok(st.ledger.registry(|r| {
            let new = ledger::registry::NewMerchantRow { name: &name, category, fee_rate, account_id: account.id };
            r.insert_merchant(new, now, rec.event.id)
        })?)
    })
    .await?;
    Ok(HttpResponse::Created().json(merchant_view(&m)))
}
