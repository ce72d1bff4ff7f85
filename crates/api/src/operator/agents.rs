//! Top-up agents and their floats: funding a float moves money from the city bank; a
//! large funding waits for a second operator's approval.

use actix_web::{web, HttpResponse};
use ledger::domain::{AccountKind, Command, EntryKind, Leg, NewAccount, References, Request};
use ledger::registry::Agent;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ledger_key, log_action};
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire::{self, money, receipt, Money, Receipt};
use crate::{blocking, AppState};

/// `POST /v1/agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// The agent's name, shown on top-up receipts.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

/// An agent as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    /// The agent's id, for its counter's credential.
    pub id: String,
    /// The agent's name, shown on top-up receipts.
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
        float: money(state.ledger.balance(a.account_id)?, state.settings.currency),
    })
}

/// Registers a top-up agent and opens its float (at zero).
#[utoipa::path(post, path = "/v1/agents", tag = "operator", request_body = NewAgent, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = AgentView), (status = 422, body = crate::error::Problem)))]
pub async fn create_agent(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
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
                st.ledger.registry(|r| {
                    r.insert_agent(
                        ledger::registry::NewAgentRow { name: &name, account_id: account.id },
                        now,
                        rec.event.id,
                    )
                })?
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
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,3})?$", max_length = 40, example = "12500.00")]
    pub amount: String,
    /// ISO 4217; the installation's when omitted.
    #[schema(pattern = "^[A-Z]{3}$", example = "IDR")]
    pub currency: Option<String>,
}

/// A posted transfer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Posting {
    /// The amount posted.
    pub amount: Money,
    /// The entry that posted it.
    #[serde(flatten)]
    pub receipt: Receipt,
    /// Balance of the account credited, after.
    pub balance: Money,
}

/// Funds an agent's float from the city bank (the agent paid the city). Above
/// `float_approval_threshold_minor` it is a request (202) that a second operator approves
/// (`POST /v1/approvals/{id}/approve`); at or below it is posted at once.
#[utoipa::path(post, path = "/v1/agents/{id}/float", tag = "operator", request_body = AmountBody, params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = Posting), (status = 202, body = crate::operator::approvals::ApprovalView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn fund_agent(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
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
        let a =
            crate::operator::approvals::request(&state, &caller, &key, crate::operator::approvals::FUND_AGENT, payload)
                .await?;
        return Ok(crate::operator::approvals::accepted(&a));
    }
    let st = state.clone();
    let bank = blocking(move || st.system_account(AccountKind::CityBank, currency)).await?;
    let request = Request::new(Command::Transfer {
        kind: EntryKind::Transfer,
        legs: vec![
            Leg { account: agent.account_id, amount_minor: amount.minor() },
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
        posted.entry.postings.iter().find(|p| p.account_id == agent.account_id).map_or(0, |p| p.balance_after_minor);
    Ok(HttpResponse::Created().json(Posting {
        amount: money(amount.minor(), currency),
        receipt: receipt(&posted.entry),
        balance: money(balance, currency),
    }))
}
