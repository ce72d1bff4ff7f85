//! Credentials: bearer tokens for terminals and people, shown once. An operator
//! credential is a request that a second operator approves.

use actix_web::{web, HttpResponse};
use ledger::registry::{Credential, NewCredentialRow};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{log_action, token_for};
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire;
use crate::{blocking, AppState};

/// `POST /v1/credentials`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    /// operator, merchant_terminal, service_point, top_up_agent, kiosk, auditor.
    pub role: Role,
    /// The terminal or the person.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// For merchant terminals.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub merchant_id: Option<String>,
    /// For service points.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub service_point_id: Option<String>,
    /// For top-up agents.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub agent_id: Option<String>,
    /// Ed25519 public key of a terminal, 64 hex digits (offline journals).
    #[schema(pattern = "^[0-9A-Fa-f]{64}$")]
    pub public_key: Option<String>,
    /// Offline risk limits of a terminal.
    #[schema(value_type = Option<Object>)]
    pub offline_limits: Option<serde_json::Value>,
    /// For role operator (required): the named person the credential belongs to.
    #[schema(min_length = 1, max_length = 200)]
    pub person: Option<String>,
}

/// A credential as returned; `token` only in the response that created it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    /// The credential's id, for revocation.
    pub id: String,
    /// What the credential may do.
    pub role: Role,
    /// What the credential is called (a till, a desk, a person's name).
    pub name: String,
    /// The merchant a merchant terminal acts for.
    pub merchant_id: Option<String>,
    /// The service point a gate or desk acts for.
    pub service_point_id: Option<String>,
    /// The top-up agent a counter acts for.
    pub agent_id: Option<String>,
    /// The bearer token: shown once, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Whether the credential was revoked (its token is refused).
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
        role: c.role,
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
    key: &IdempotencyHeader,
    body: &NewCredential,
) -> Result<Created, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    let person = person_of_request(body)?;
    let scope = scope_of(body)?;
    let limits = terminal_limits(body)?;
    if let Some(person) = person {
        if body.public_key.is_some() || limits.is_some() {
            return Err(ApiError::unprocessable(
                "invalid_field",
                "an operator credential takes no terminal keys or limits",
            ));
        }
        let payload = json!({"role": "operator", "name": name, "person": person});
        let a = crate::operator::approvals::request(
            state,
            caller,
            key,
            crate::operator::approvals::CREATE_OPERATOR_CREDENTIAL,
            payload,
        )
        .await?;
        return Ok(Created::Requested(Box::new(a)));
    }
    let st = state.clone();
    if !blocking(move || scope_exists(&st, scope)).await? {
        return Err(ApiError::unprocessable("invalid_field", "the merchant, service point or agent does not exist"));
    }
    let (merchant, service_point, agent) = scope;
    // The leaf records the row as it will be: the limits as stored, the token's hash.
    let logged_limits = limits.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose();
    let (token, hash) = token_for(state, caller, key).await?;
    let details = json!({"role": body.role, "name": name, "merchant_id": merchant, "service_point_id": service_point,
        "agent_id": agent, "public_key": body.public_key, "offline_limits": logged_limits.map_err(ApiError::internal)?,
        "token_hash": hex::encode(hash)});
    let rec = log_action(state, caller, key, "create_credential", details).await?;
    let row = CredentialRow {
        role: body.role,
        name,
        hash,
        scope,
        public_key: body.public_key.clone(),
        limits,
        by: caller.credential.id,
    };
    let st = state.clone();
    let (credential, fresh) = blocking(move || insert_credential(&st, &row, rec.event.id)).await?;
    Ok(Created::Credential(Box::new(credential_view(&credential, token.filter(|_| fresh)))))
}

/// The scope of a credential: (merchant, service point, agent).
type Scope = (Option<i64>, Option<i64>, Option<i64>);

/// The person of an operator credential (required), refused on any other role.
fn person_of_request(body: &NewCredential) -> Result<Option<String>, ApiError> {
    match (body.role, body.person.as_deref()) {
        (Role::Operator, Some(p)) => Ok(Some(crate::operator::approvals::person_name(p)?)),
        (Role::Operator, None) => {
            Err(ApiError::unprocessable("invalid_field", "an operator credential needs person: who holds it"))
        }
        (_, Some(_)) => Err(ApiError::unprocessable("invalid_field", "only an operator credential names a person")),
        (_, None) => Ok(None),
    }
}

/// The scope ids of a request, checked against what its role needs.
fn scope_of(body: &NewCredential) -> Result<Scope, ApiError> {
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
    Ok((merchant, service_point, agent))
}

/// A terminal's Ed25519 public key as a credential request writes it: 64 hex digits.
pub fn is_public_key(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A terminal's public key checked, and its offline limits as stored (JSON).
fn terminal_limits(body: &NewCredential) -> Result<Option<String>, ApiError> {
    if let Some(pk) = &body.public_key {
        if !is_public_key(pk) {
            return Err(ApiError::unprocessable("invalid_field", "public_key must be 64 hex digits (Ed25519)"));
        }
    }
    let Some(v) = &body.offline_limits else { return Ok(None) };
    match serde_json::from_value::<offline::RiskLimits>(v.clone()) {
        Ok(l) if l.per_tap_minor >= 0 && l.per_card_per_day_minor >= 0 && l.outstanding_minor >= 0 => {
            Ok(Some(serde_json::to_string(&l).map_err(ApiError::internal)?))
        }
        _ => Err(ApiError::unprocessable(
            "invalid_field",
            "offline_limits is {per_tap_minor, per_card_per_day_minor, outstanding_minor}, each 0 or more",
        )),
    }
}

/// Whether the merchant, service point and agent a scope names exist (blocking).
fn scope_exists(state: &AppState, (merchant, service_point, agent): Scope) -> Result<bool, ApiError> {
    Ok(state.ledger.registry(|r| {
        Ok(merchant.is_none_or(|m| r.merchant(m).ok().flatten().is_some())
            && service_point.is_none_or(|s| r.service_point(s).ok().flatten().is_some())
            && agent.is_none_or(|a| r.agent(a).ok().flatten().is_some()))
    })?)
}

/// A checked credential about to be stored.
struct CredentialRow {
    role: Role,
    name: String,
    hash: [u8; 32],
    scope: Scope,
    public_key: Option<String>,
    limits: Option<String>,
    by: i64,
}

/// Stores the credential its event made, or finds the one a retry of the event made:
/// (credential, whether it was made now).
fn insert_credential(state: &AppState, row: &CredentialRow, event_id: i64) -> Result<(Credential, bool), ApiError> {
    let now = state.ledger.now_us();
    Ok(state.ledger.registry_transaction(|r| match r.credential_by_event(event_id)? {
        Some(c) => Ok((c, false)),
        None => r
            .insert_credential(
                NewCredentialRow {
                    role: row.role,
                    name: &row.name,
                    token_hash: &row.hash,
                    scope: row.scope,
                    public_key: row.public_key.as_deref(),
                    offline_limits: row.limits.as_deref(),
                    person: None,
                    created_by: Some(row.by),
                },
                now,
                event_id,
            )
            .map(|c| (c, true)),
    })?)
}

/// Creates a credential (a token for a terminal or a person), shown once. An operator
/// credential (which names its `person`) is a request instead: 202 with the pending
/// approval; the token comes in the response of the second operator's approval.
#[utoipa::path(post, path = "/v1/credentials", tag = "operator", request_body = NewCredential, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = CredentialView), (status = 202, body = crate::operator::approvals::ApprovalView), (status = 422, body = crate::error::Problem)))]
pub async fn create_credential(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewCredential>,
) -> Result<HttpResponse, ApiError> {
    Ok(match create_credential_inner(&state, &caller, &key, &body).await? {
        Created::Credential(view) => HttpResponse::Created().json(view),
        Created::Requested(a) => crate::operator::approvals::accepted(&a),
    })
}

/// Revokes a credential: it stops working at once. Revoking an operator credential is a
/// request instead: 202 with the pending approval; it is revoked when a second operator
/// approves.
#[utoipa::path(delete, path = "/v1/credentials/{id}", tag = "operator", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = CredentialView), (status = 202, body = crate::operator::approvals::ApprovalView), (status = 404, body = crate::error::Problem)))]
pub async fn revoke_credential(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let id = wire::id(&id)?;
    let st = state.clone();
    let c = blocking(move || Ok(st.ledger.registry(|r| r.credential(id))?))
        .await?
        .ok_or_else(|| ApiError::not_found("not_found", "no such credential"))?;
    if c.role == Role::Operator && c.revoked_at_us.is_none() {
        let payload =
            json!({"credential_id": c.id, "name": c.name, "person": crate::operator::approvals::person_of(&c)});
        let a = crate::operator::approvals::request(
            &state,
            &caller,
            &key,
            crate::operator::approvals::REVOKE_OPERATOR_CREDENTIAL,
            payload,
        )
        .await?;
        return Ok(crate::operator::approvals::accepted(&a));
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
