//! Maker-checker per person: what one operator asks and another approves.
//!
//! An operator credential belongs to a named person. Creating or revoking an operator
//! credential, an adjustment, an agent float above `float_approval_threshold_minor`, and a
//! transit fare table are requests (`approvals` rows); a second operator approves or rejects them. The
//! approver must be another person than the requester, must not be the person who created
//! the requester's credential, and must not hold a credential the requester created
//! ([`may_approve`]): a second token minted by the same operator approves nothing.
//!
//! Every request and every decision is first an `operator_action` event in the audit log.
//! A request leaves `pending` once (the registry guards the update); a money approval's
//! ledger entry is keyed by the approval, so it is never posted twice.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use ledger::domain::{AccountKind, Command, EntryKind, Leg, References, Request};
use ledger::registry::{Approval, Credential, Decision, NewCredentialRow};
use ledger::LedgerError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::credentials::{credential_view, CredentialView};
use super::log_action;
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::{blocking, wire, AppState};

/// Creating an operator credential.
pub const CREATE_OPERATOR_CREDENTIAL: &str = "create_operator_credential";
/// Revoking an operator credential.
pub const REVOKE_OPERATOR_CREDENTIAL: &str = "revoke_operator_credential";
/// An adjustment.
pub const ADJUSTMENT: &str = "adjustment";
/// Funding an agent's float above the threshold.
pub const FUND_AGENT: &str = "fund_agent";

/// The statuses of a request.
pub const STATUSES: [&str; 3] = ["pending", "approved", "rejected"];

/// Registers the approval routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/approvals", web::get().to(list))
        .route("/v1/approvals/{id}", web::get().to(get))
        .route("/v1/approvals/{id}/approve", web::post().to(approve))
        .route("/v1/approvals/{id}/reject", web::post().to(reject));
}

// ---- persons and the rule ----

/// A person's name as stored: trimmed, inner whitespace collapsed, 1 to 200 characters,
/// no control characters.
pub fn person_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable("invalid_field", "person must name a person (1 to 200 characters)"));
    }
    Ok(name)
}

/// Two names are the same person when they differ only in case and spacing.
pub fn same_person(a: &str, b: &str) -> bool {
    let key = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    key(a) == key(b)
}

/// The person a credential acts for: its `person`, or (an operator credential from before
/// persons were recorded) its name.
pub fn person_of(c: &Credential) -> &str {
    c.person.as_deref().unwrap_or(&c.name)
}

/// Why a credential may not approve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The approver is not an operator credential.
    NotAnOperator,
    /// The approver's credential is revoked.
    Revoked,
    /// The approver's credential belongs to no named person.
    NoPerson,
    /// The approver is the requester.
    OwnRequest,
    /// The requester's credential was revoked after asking: a revoked operator's requests
    /// are not carried out (another operator may ask again).
    RequesterRevoked,
    /// The approver is the same person as the requester.
    SamePerson,
    /// The approver created (or is the person who created) the requester's credential.
    CreatedRequester,
    /// The requester created (or is the person who created) the approver's credential.
    CreatedByRequester,
}

impl Refusal {
    /// The explanation in the 403.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::NotAnOperator => "only an operator credential approves requests",
            Refusal::Revoked => "this operator credential is revoked",
            Refusal::NoPerson => "this operator credential belongs to no named person",
            Refusal::OwnRequest => "a request must be approved by another operator than the one who asked",
            Refusal::RequesterRevoked => {
                "the operator who asked has been revoked since; a current operator must ask again"
            }
            Refusal::SamePerson => "a request must be approved by another person than the one who asked",
            Refusal::CreatedRequester => {
                "the operator who created the requester's credential may not approve the requester's requests"
            }
            Refusal::CreatedByRequester => {
                "a credential the requester created may not approve the requester's requests"
            }
        }
    }
}

/// The per-person rule: may `approver` approve a request of `requester`? Each creator is
/// the credential that created that credential (`created_by`), when there is one.
pub fn may_approve(
    requester: &Credential,
    requester_creator: Option<&Credential>,
    approver: &Credential,
    approver_creator: Option<&Credential>,
) -> Result<(), Refusal> {
    if approver.role != Role::Operator {
        return Err(Refusal::NotAnOperator);
    }
    if approver.revoked_at_us.is_some() {
        return Err(Refusal::Revoked);
    }
    let Some(approver_person) = approver.person.as_deref() else {
        return Err(Refusal::NoPerson);
    };
    if approver.id == requester.id {
        return Err(Refusal::OwnRequest);
    }
    if requester.revoked_at_us.is_some() {
        return Err(Refusal::RequesterRevoked);
    }
    let requester_person = person_of(requester);
    if same_person(approver_person, requester_person) {
        return Err(Refusal::SamePerson);
    }
    if requester.created_by == Some(approver.id)
        || requester_creator.is_some_and(|c| c.id == approver.id || same_person(person_of(c), approver_person))
    {
        return Err(Refusal::CreatedRequester);
    }
    if approver.created_by == Some(requester.id)
        || approver_creator.is_some_and(|c| c.id == requester.id || same_person(person_of(c), requester_person))
    {
        return Err(Refusal::CreatedByRequester);
    }
    Ok(())
}

fn second_operator_required(detail: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "second_operator_required", detail)
}

fn closed(a: &Approval) -> ApiError {
    ApiError::conflict("approval_closed", format!("this request was {} already", a.status))
}

/// Checks the rule for `approver` on `approval` (blocking: reads the credentials).
pub fn check_rule(state: &AppState, approval: &Approval, approver: &Credential) -> Result<(), ApiError> {
    let (requester, requester_creator, approver_creator) = state.ledger.registry(|r| {
        let requester = r.credential(approval.requested_by)?;
        let rc = match requester.as_ref().and_then(|c| c.created_by) {
            Some(id) => r.credential(id)?,
            None => None,
        };
        let ac = match approver.created_by {
            Some(id) => r.credential(id)?,
            None => None,
        };
        Ok((requester, rc, ac))
    })?;
    let requester = requester.ok_or_else(|| ApiError::internal("approval of an unknown credential"))?;
    may_approve(&requester, requester_creator.as_ref(), approver, approver_creator.as_ref())
        .map_err(|r| second_operator_required(r.detail()))
}

// ---- views ----

/// A request for a second operator's approval.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalView {
    /// The approval's id, for approve and reject.
    pub id: String,
    /// create_operator_credential, revoke_operator_credential, adjustment, fund_agent or
    /// fare_table.
    pub kind: String,
    /// pending, approved or rejected.
    pub status: String,
    /// What was asked.
    #[schema(value_type = Object)]
    pub request: Value,
    /// The operator credential that asked.
    pub requested_by: String,
    /// Its person.
    pub requested_person: String,
    /// The operator credential that decided.
    pub decided_by: Option<String>,
    /// Its person.
    pub decided_person: Option<String>,
    /// What the approval did: `credential_id`, `entry_seq`, or `refused` (the ledger's code).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// When it was requested (RFC 3339).
    pub created_at: String,
    /// When a second operator decided it (RFC 3339), if one has.
    pub decided_at: Option<String>,
    /// The request's operator_action event.
    pub event_id: i64,
    /// The decision's operator_action event.
    pub decided_event_id: Option<i64>,
    /// The operator credential an approval created, with its token: in the approving
    /// response only, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialView>,
}

/// The view of an approval row.
pub fn approval_view(a: &Approval) -> ApprovalView {
    ApprovalView {
        id: a.id.to_string(),
        kind: a.kind.clone(),
        status: a.status.clone(),
        request: serde_json::from_str(&a.payload).unwrap_or(Value::Null),
        requested_by: a.requested_by.to_string(),
        requested_person: a.requested_person.clone(),
        decided_by: a.decided_by.map(|v| v.to_string()),
        decided_person: a.decided_person.clone(),
        result: a.result.as_deref().and_then(|r| serde_json::from_str(r).ok()),
        created_at: wire::time(a.created_at_us),
        decided_at: a.decided_at_us.map(wire::time),
        event_id: a.event_id,
        decided_event_id: a.decided_event_id,
        credential: None,
    }
}

/// 202 Accepted with the pending request.
pub fn accepted(a: &Approval) -> HttpResponse {
    HttpResponse::Accepted().json(approval_view(a))
}

// ---- requests ----

/// Files a request: logs it (under the caller's key) and records it pending. A retried
/// request finds the approval its event created.
pub async fn request(
    state: &web::Data<AppState>,
    caller: &Caller,
    key: &IdempotencyHeader,
    kind: &'static str,
    payload: Value,
) -> Result<Approval, ApiError> {
    caller.require(&[Role::Operator])?;
    let rec = log_action(state, caller, key, "request_approval", json!({"kind": kind, "request": payload})).await?;
    let st = state.clone();
    let (by, person) = (caller.credential.id, person_of(&caller.credential).to_owned());
    let text = payload.to_string();
    blocking(move || {
        let now = st.ledger.now_us();
        Ok(st.ledger.registry_transaction(|r| match r.approval_by_event(rec.event.id)? {
            Some(a) => Ok(a),
            None => {
                let new = ledger::registry::NewApprovalRow {
                    kind,
                    payload: &text,
                    requested_by: by,
                    requested_person: &person,
                };
                r.insert_approval(new, now, rec.event.id)
            }
        })?)
    })
    .await
}

// ---- reads ----

/// `GET /v1/approvals` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// pending, approved or rejected; all when omitted.
    #[param(pattern = "^(pending|approved|rejected)$")]
    pub status: Option<String>,
    /// Only requests with a larger id (the previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// At most this many (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page of requests.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalPage {
    /// Oldest first.
    pub approvals: Vec<ApprovalView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// Requests for a second operator's approval, oldest first (operators and auditors).
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ListQuery),
    responses((status = 200, body = ApprovalPage), (status = 403, body = crate::error::Problem), (status = 422, description = "`invalid_field`: an unknown status, a limit outside 1 to 500 or a cursor this server did not give", body = crate::error::Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) if STATUSES.contains(&s) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::unprocessable("invalid_field", "status must be pending, approved or rejected"))
        }
    };
    let after = match query.cursor.as_deref() {
        None => 0,
        Some(c) => wire::id(c).map_err(|_| ApiError::unprocessable("invalid_field", "cursor is not a cursor"))?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::unprocessable("invalid_field", "limit must be 1 to 500"));
    }
    let st = state.clone();
    let rows = blocking(move || Ok(st.ledger.registry(|r| r.approvals(status.as_deref(), after, limit))?)).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|a| a.id.to_string())).flatten();
    Ok(HttpResponse::Ok().json(ApprovalPage { approvals: rows.iter().map(approval_view).collect(), next_cursor }))
}

async fn load(state: &web::Data<AppState>, id: i64) -> Result<Approval, ApiError> {
    let st = state.clone();
    blocking(move || {
        st.ledger.registry(|r| r.approval(id))?.ok_or_else(|| ApiError::not_found("not_found", "no such request"))
    })
    .await
}

/// One request (operators and auditors).
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalView), (status = 404, body = crate::error::Problem)))]
pub async fn get(state: web::Data<AppState>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let a = load(&state, wire::id(&id)?).await?;
    Ok(HttpResponse::Ok().json(approval_view(&a)))
}

// ---- decisions ----

/// Approves a request and carries it out: another person than the requester, who neither
/// created the requester's credential nor holds one the requester created. A new operator
/// credential's token is in this response only.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = ApprovalView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 422, description = "the ledger or the registry refuses what the request asked (e.g. `insufficient_funds`)", body = crate::error::Problem)))]
pub async fn approve(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = approve_inner(&state, &caller, &key, wire::id(&id)?).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The approval's decision event if it was made by this caller under this key (a retry).
async fn own_decision(
    state: &web::Data<AppState>,
    caller: &Caller,
    key: &IdempotencyHeader,
    a: &Approval,
) -> Result<bool, ApiError> {
    let st = state.clone();
    let k = caller.key(&key.0);
    let mine = blocking(move || Ok(st.ledger.event_by_key(&k)?.map(|e| e.id))).await?;
    Ok(mine.is_some() && mine == a.decided_event_id)
}

/// Checks the rule and carries the request out (see [`approve`]).
pub async fn approve_inner(
    state: &web::Data<AppState>,
    caller: &Caller,
    key: &IdempotencyHeader,
    id: i64,
) -> Result<ApprovalView, ApiError> {
    caller.require(&[Role::Operator])?;
    let a = load(state, id).await?;
    let st = state.clone();
    let (aa, approver) = (a.clone(), caller.credential.clone());
    blocking(move || check_rule(&st, &aa, &approver)).await?;
    if a.status != "pending" && !(a.status == "approved" && own_decision(state, caller, key, &a).await?) {
        return Err(closed(&a));
    }
    // The decision's leaf names the request's leaf, and for a new operator credential the
    // hash of its token: `kartu audit verify` recomputes the credential from the two.
    let mut details = json!({"approval_id": a.id, "kind": a.kind, "request_event_id": a.event_id});
    let token = if a.kind == CREATE_OPERATOR_CREDENTIAL {
        let (token, hash) = crate::operator::token_for(state, caller, key).await?;
        details["token_hash"] = json!(hex::encode(hash));
        Some((token, hash))
    } else {
        None
    };
    let rec = log_action(state, caller, key, "approve_request", details).await?;
    let decision = (caller.credential.id, person_of(&caller.credential).to_owned(), rec.event.id);
    match (a.kind.as_str(), token) {
        (CREATE_OPERATOR_CREDENTIAL, Some((token, hash))) => create_operator(state, a, decision, token, hash).await,
        (REVOKE_OPERATOR_CREDENTIAL, _) => revoke_operator(state, a, decision).await,
        (ADJUSTMENT | FUND_AGENT, _) => post_money(state, a, decision).await,
        (super::fares::FARE_TABLE, _) => super::fares::put_in_force(state, a, decision, rec.event.time_us).await,
        (other, _) => Err(ApiError::internal(format!("approval of unknown kind {other}"))),
    }
}

/// Who decides: credential, person, decision event.
type Decider = (i64, String, i64);

/// Decides `a` as `status` by `d` inside a registry transaction: Ok(true) when this call
/// decided it, Ok(false) when this decision (same event) had decided it before, Err when
/// another decision closed it.
pub fn decide_in(
    r: &mut ledger::registry::Registry<'_>,
    a: &Approval,
    status: &str,
    d: &Decider,
    now_us: i64,
) -> Result<Result<bool, ApiError>, LedgerError> {
    decide(r, a, status, d, now_us)
}

fn decide(
    r: &mut ledger::registry::Registry<'_>,
    a: &Approval,
    status: &str,
    d: &Decider,
    now_us: i64,
) -> Result<Result<bool, ApiError>, LedgerError> {
    let decision = Decision { status, by: d.0, person: &d.1, now_us, event_id: d.2 };
    if r.decide_approval(a.id, decision)? {
        return Ok(Ok(true));
    }
    let now = r.approval(a.id)?.unwrap_or_else(|| a.clone());
    Ok(if now.decided_event_id == Some(d.2) { Ok(false) } else { Err(closed(&now)) })
}

fn payload_id(a: &Approval, field: &str) -> Result<i64, ApiError> {
    let v: Value = serde_json::from_str(&a.payload).map_err(ApiError::internal)?;
    v[field].as_i64().ok_or_else(|| ApiError::internal(format!("approval {} has no {field}", a.id)))
}

/// Makes the operator credential an approval asked for, with the token whose hash the
/// decision's leaf recorded (`token` is none on a retry: it was shown once).
async fn create_operator(
    state: &web::Data<AppState>,
    a: Approval,
    d: Decider,
    token: Option<String>,
    hash: [u8; 32],
) -> Result<ApprovalView, ApiError> {
    let v: Value = serde_json::from_str(&a.payload).map_err(ApiError::internal)?;
    let (name, person) = match (v["name"].as_str(), v["person"].as_str()) {
        (Some(n), Some(p)) => (n.to_owned(), p.to_owned()),
        _ => return Err(ApiError::internal("operator request without name or person")),
    };
    let st = state.clone();
    let (approval, credential, fresh) = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger
            .registry_transaction(|r| {
                if let Some(c) = r.credential_by_event(d.2)? {
                    return Ok(Ok((c, false)));
                }
                if let Err(e) = decide(r, &a, "approved", &d, now)? {
                    return Ok(Err(e));
                }
                let row = NewCredentialRow {
                    role: Role::Operator,
                    name: &name,
                    token_hash: &hash,
                    scope: (None, None, None),
                    public_key: None,
                    offline_limits: None,
                    person: Some(&person),
                    created_by: Some(a.requested_by),
                };
                let c = r.insert_credential(row, now, d.2)?;
                r.set_approval_result(a.id, &json!({"credential_id": c.id.to_string()}).to_string())?;
                Ok(Ok((c, true)))
            })?
            .and_then(|(c, fresh)| {
                let a =
                    st.ledger.registry(|r| r.approval(a.id))?.ok_or_else(|| ApiError::internal("approval vanished"))?;
                Ok((a, c, fresh))
            })
    })
    .await?;
    let mut view = approval_view(&approval);
    view.credential = Some(credential_view(&credential, token.filter(|_| fresh)));
    Ok(view)
}

async fn revoke_operator(state: &web::Data<AppState>, a: Approval, d: Decider) -> Result<ApprovalView, ApiError> {
    let target = payload_id(&a, "credential_id")?;
    let st = state.clone();
    let approval = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry_transaction(|r| {
            match decide(r, &a, "approved", &d, now)? {
                Err(e) => return Ok(Err(e)),
                Ok(false) => {}
                Ok(true) => {
                    let revoked = r.revoke_credential(target, now, d.2)?;
                    let result = json!({"credential_id": target.to_string(), "revoked": revoked});
                    r.set_approval_result(a.id, &result.to_string())?;
                }
            }
            Ok(r.approval(a.id)?.ok_or_else(|| ApiError::internal("approval vanished")))
        })?
    })
    .await?;
    Ok(approval_view(&approval))
}

/// Claims the approval, then posts its entry (keyed by the approval: never twice), then
/// records the entry or the ledger's refusal. A claim whose posting did not finish (the
/// ledger busy, the process stopped) is finished by the same approver's retry.
async fn post_money(state: &web::Data<AppState>, a: Approval, d: Decider) -> Result<ApprovalView, ApiError> {
    let st = state.clone();
    let (aa, dd) = (a.clone(), d.clone());
    let claimed = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry_transaction(|r| {
            if let Err(e) = decide(r, &aa, "approved", &dd, now)? {
                return Ok(Err(e));
            }
            Ok(r.approval(aa.id)?.ok_or_else(|| ApiError::internal("approval vanished")))
        })?
    })
    .await?;
    if claimed.result.is_some() {
        return Ok(approval_view(&claimed));
    }
    let request = money_request(state, &a).await?;
    let adjustment = (a.kind == ADJUSTMENT).then(|| payload_id(&a, "adjustment_id")).transpose()?;
    let posted = state.ledger.submit(request).await;
    let (result, outcome) = match posted {
        Ok(p) => (json!({"entry_seq": p.entry.seq}), Ok(p.entry.seq)),
        Err(LedgerError::Rejected(r)) => (json!({"refused": r.code()}), Err(LedgerError::Rejected(r))),
        Err(e) => return Err(e.into()),
    };
    let st = state.clone();
    let (id, by) = (a.id, d.0);
    let seq = outcome.as_ref().ok().copied();
    let approval = blocking(move || {
        st.ledger.registry_transaction(|r| {
            r.set_approval_result(id, &result.to_string())?;
            if let Some(adj) = adjustment {
                match seq {
                    Some(seq) => r.adjustment_posted(adj, by, seq)?,
                    None => r.adjustment_rejected(adj)?,
                };
            }
            Ok(r.approval(id)?.ok_or_else(|| ApiError::internal("approval vanished")))
        })?
    })
    .await?;
    outcome?;
    Ok(approval_view(&approval))
}

/// The ledger request an approved adjustment or float carries out. Its content does not
/// depend on who approved, so two approvers racing post one entry.
async fn money_request(state: &web::Data<AppState>, a: &Approval) -> Result<Request, ApiError> {
    let st = state.clone();
    let a = a.clone();
    blocking(move || {
        let reference = Some(format!("credential:{}", a.requested_by));
        if a.kind == ADJUSTMENT {
            let id = payload_id(&a, "adjustment_id")?;
            let adj = st.ledger.registry(|r| r.adjustment(id))?.ok_or_else(|| ApiError::internal("no adjustment"))?;
            let currency = ledger::money::Currency::parse(&adj.currency).map_err(ApiError::internal)?;
            let suspense = st.system_account(AccountKind::Suspense, currency)?;
            // The entry's key is the adjustment's own: it can never post twice.
            return Ok(Request::new(Command::Transfer {
                kind: EntryKind::Adjustment,
                legs: vec![
                    Leg { account: adj.account_id, amount_minor: adj.amount_minor },
                    Leg { account: suspense, amount_minor: -adj.amount_minor },
                ],
            })
            .with_key(
                ledger::domain::IdempotencyKey::parse(&format!("adjustment:{}", adj.id))
                    .map_err(|_| ApiError::internal("key"))?,
            )
            .with_references(References {
                terminal_id: reference,
                memo: Some(format!("adjustment {}: {}", adj.id, adj.reason)),
                ..Default::default()
            }));
        }
        let v: Value = serde_json::from_str(&a.payload).map_err(ApiError::internal)?;
        let agent_id = payload_id(&a, "agent_id")?;
        let amount = v["amount_minor"].as_i64().ok_or_else(|| ApiError::internal("no amount"))?;
        let currency =
            ledger::money::Currency::parse(v["currency"].as_str().unwrap_or_default()).map_err(ApiError::internal)?;
        let agent = st.ledger.registry(|r| r.agent(agent_id))?.ok_or_else(|| ApiError::internal("no agent"))?;
        let bank = st.system_account(AccountKind::CityBank, currency)?;
        Ok(Request::new(Command::Transfer {
            kind: EntryKind::Transfer,
            legs: vec![
                Leg { account: agent.account_id, amount_minor: amount },
                Leg { account: bank, amount_minor: -amount },
            ],
        })
        .with_key(
            ledger::domain::IdempotencyKey::parse(&format!("approval:{}", a.id))
                .map_err(|_| ApiError::internal("key"))?,
        )
        .with_references(References {
            terminal_id: reference,
            memo: Some(format!("float for agent {} (approval {})", agent.id, a.id)),
            ..Default::default()
        }))
    })
    .await
}

/// Rejects a pending request (any operator, the requester too: a withdrawal).
#[utoipa::path(post, path = "/v1/approvals/{id}/reject", tag = "approvals", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = ApprovalView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn reject(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let a = load(&state, wire::id(&id)?).await?;
    if a.status != "pending" && !(a.status == "rejected" && own_decision(&state, &caller, &key, &a).await?) {
        return Err(closed(&a));
    }
    let details = json!({"approval_id": a.id, "kind": a.kind, "request_event_id": a.event_id});
    let rec = log_action(&state, &caller, &key, "reject_request", details).await?;
    let d: Decider = (caller.credential.id, person_of(&caller.credential).to_owned(), rec.event.id);
    let adjustment = (a.kind == ADJUSTMENT).then(|| payload_id(&a, "adjustment_id")).transpose()?;
    let st = state.clone();
    let approval = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry_transaction(|r| {
            if let Err(e) = decide(r, &a, "rejected", &d, now)? {
                return Ok(Err(e));
            }
            if let Some(adj) = adjustment {
                r.adjustment_rejected(adj)?;
            }
            Ok(r.approval(a.id)?.ok_or_else(|| ApiError::internal("approval vanished")))
        })?
    })
    .await?;
    Ok(HttpResponse::Ok().json(approval_view(&approval)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(id: i64, role: &str, person: Option<&str>, created_by: Option<i64>) -> Credential {
        Credential {
            id,
            role: Role::parse(role).expect("a role name"),
            name: format!("credential {id}"),
            token_hash: vec![0; 32],
            merchant_id: None,
            service_point_id: None,
            agent_id: None,
            public_key: None,
            offline_limits: None,
            created_at_us: 0,
            revoked_at_us: None,
            event_id: id,
            revoked_event_id: None,
            person: person.map(str::to_owned),
            created_by,
        }
    }

    /// Every case of the rule: (what, requester, requester's creator, approver, approver's
    /// creator, expected).
    #[test]
    fn the_per_person_rule() {
        let ani = cred(1, "operator", Some("Ani"), None);
        let budi = cred(2, "operator", Some("Budi"), None);
        // Ani's second token, made by Ani (approved by someone) or on the host.
        let ani_again = cred(3, "operator", Some("  ani "), Some(2));
        // A credential Ani asked for, for a made-up person.
        let made_by_ani = cred(4, "operator", Some("Citra"), Some(1));
        // Dewi's credential, asked for by Budi.
        let made_by_budi = cred(5, "operator", Some("Dewi"), Some(2));
        let mut revoked = cred(6, "operator", Some("Eka"), None);
        revoked.revoked_at_us = Some(1);
        let auditor = cred(7, "auditor", None, Some(1));
        let unnamed = cred(8, "operator", None, None);
        let budi_second = cred(9, "operator", Some("Budi"), Some(1));
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &str,
            &Credential,
            Option<&Credential>,
            &Credential,
            Option<&Credential>,
            Result<(), Refusal>,
        )] = &[
            ("another person approves", &ani, None, &budi, None, Ok(())),
            ("the requester itself", &ani, None, &ani, None, Err(Refusal::OwnRequest)),
            ("the requester's second token", &ani, None, &ani_again, Some(&budi), Err(Refusal::SamePerson)),
            ("second token asks, first approves", &ani_again, Some(&budi), &ani, None, Err(Refusal::SamePerson)),
            ("a credential the requester made", &ani, None, &made_by_ani, Some(&ani), Err(Refusal::CreatedByRequester)),
            ("its maker approves its request", &made_by_ani, Some(&ani), &ani, None, Err(Refusal::CreatedRequester)),
            (
                "the maker's other token approves its request",
                &made_by_ani,
                Some(&ani),
                &ani_again,
                Some(&budi),
                Err(Refusal::CreatedRequester),
            ),
            (
                "a credential made by the requester's other token",
                &ani_again,
                Some(&budi),
                &made_by_ani,
                Some(&ani),
                Err(Refusal::CreatedByRequester),
            ),
            ("the creator of the requester", &made_by_budi, Some(&budi), &budi, None, Err(Refusal::CreatedRequester)),
            ("an unrelated person", &made_by_budi, Some(&budi), &ani, None, Ok(())),
            ("two made by others", &made_by_ani, Some(&ani), &made_by_budi, Some(&budi), Ok(())),
            ("revoked approver", &ani, None, &revoked, None, Err(Refusal::Revoked)),
            ("a revoked operator's request", &revoked, None, &ani, None, Err(Refusal::RequesterRevoked)),
            ("an auditor", &ani, None, &auditor, Some(&ani), Err(Refusal::NotAnOperator)),
            ("an operator without a person", &ani, None, &unnamed, None, Err(Refusal::NoPerson)),
            ("same person, other credential", &budi, None, &budi_second, Some(&ani), Err(Refusal::SamePerson)),
        ];
        for (what, requester, rc, approver, ac, expected) in cases {
            assert_eq!(may_approve(requester, *rc, approver, *ac), *expected, "{what}");
        }
    }

    #[test]
    fn person_names() {
        assert_eq!(person_name("  Ani   Wijaya ").map_err(|e| e.code), Ok("Ani Wijaya".to_owned()));
        assert!(person_name("   ").is_err());
        assert!(person_name(&"x".repeat(201)).is_err());
        assert!(same_person("Ani  Wijaya", "ani wijaya"));
        assert!(!same_person("Ani", "Budi"));
    }
}
