//! Adjustments: a signed correction of an account against the suspense account, posted
//! only when a second operator approves it.

use actix_web::{web, HttpResponse};
use ledger::registry::{NewAdjustmentRow, NewApprovalRow};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::log_action;
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire::{self, money, Money};
use crate::{blocking, AppState};

/// `POST /v1/adjustments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdjustment {
    /// The account to correct.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub account_id: String,
    /// Signed decimal: positive credits the account, negative debits it. The other side is
    /// the suspense account.
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]{1,3})?$", max_length = 40, example = "-2500.00")]
    pub amount: String,
    /// The ISO 4217 currency (default: the installation's).
    #[schema(pattern = "^[A-Z]{3}$", example = "IDR")]
    pub currency: Option<String>,
    /// Why the adjustment is needed, for the second operator and the auditors.
    #[schema(min_length = 1, max_length = 200)]
    pub reason: String,
}

/// An adjustment as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdjustmentView {
    /// The adjustment's id.
    pub id: String,
    /// The account it credits or debits.
    pub account_id: String,
    /// Signed amount.
    pub amount: Money,
    /// Why it was asked for, as the requester wrote it.
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
    key: IdempotencyHeader,
    body: web::Json<NewAdjustment>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let currency = wire::currency(body.currency.as_deref(), state.settings.currency)?;
    let amount = wire::signed_amount(&body.amount, currency)?;
    if amount.unsigned_abs() > state.settings.amount_max_minor as u64 {
        return Err(ApiError::unprocessable("invalid_amount", "the amount is above the maximum"));
    }
    let reason = wire::text("reason", &body.reason, 200)?;
    let account_id = wire::account_id(&body.account_id)
        .map_err(|_| ApiError::unprocessable("account_unknown", "no such account"))?;
    let st = state.clone();
    let account = blocking(move || Ok(st.ledger.account(account_id)?)).await?;
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
    let person = crate::operator::approvals::person_of(&caller.credential).to_owned();
    // The adjustment and its approval request, both keyed by the request's event.
    let a = blocking(move || {
        let now = st.ledger.now_us();
        Ok(st.ledger.registry_transaction(|r| {
            let a = match r.adjustment_by_event(rec.event.id)? {
                Some(a) => a,
                None => {
                    let new = NewAdjustmentRow {
                        account_id,
                        amount_minor: amount,
                        currency: currency.code(),
                        reason: &reason,
                        requested_by: by,
                    };
                    r.insert_adjustment(new, now, rec.event.id)?
                }
            };
            if r.approval_by_event(rec.event.id)?.is_none() {
                let payload = json!({"adjustment_id": a.id, "account_id": account_id, "amount_minor": amount,
                    "currency": currency.code(), "reason": reason});
                let text = payload.to_string();
                let new = NewApprovalRow {
                    kind: crate::operator::approvals::ADJUSTMENT,
                    payload: &text,
                    requested_by: by,
                    requested_person: &person,
                };
                r.insert_approval(new, now, rec.event.id)?;
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
    responses((status = 200, body = AdjustmentView),
        (status = 403, description = "`second_operator_required`: the requester (or the same person) may not approve it", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, description = "the ledger refuses the posting (e.g. `insufficient_funds`: a debit above the balance)", body = crate::error::Problem)))]
pub async fn approve_adjustment(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
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
        blocking(move || crate::operator::approvals::check_rule(&st, &approval, &approver)).await?;
        return Ok(HttpResponse::Ok().json(adjustment_view(&a, currency)));
    }
    crate::operator::approvals::approve_inner(&state, &caller, &key, approval.id).await?;
    let st = state.clone();
    let a = blocking(move || {
        st.ledger.registry(|r| r.adjustment(id))?.ok_or_else(|| ApiError::internal("adjustment vanished"))
    })
    .await?;
    Ok(HttpResponse::Ok().json(adjustment_view(&a, currency)))
}
