//! Auditor reads (the whole ledger, read-only), proofs and checkpoints (anyone may check a
//! receipt), and the public transparency totals.

use actix_web::{web, HttpResponse};
use ledger::domain::Entry;
use ledger::EventFilter;
use serde::Deserialize;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::merchant::{statement, StatementQuery, StatementView};
use crate::wire::{self, money, Page};
use crate::{blocking, AppState};
pub use client::wire::{
    AccessLog, AccessLogLine, BalanceView, CheckpointKey, CheckpointKeys, ConsistencyProof, Entries, EntryView,
    InclusionProof, LeafView, Leaves, PostingView, ReceiptDetail, TrialBalance, TrialLine,
};

/// Registers the audit and public routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/audit/leaves", web::get().to(leaves))
        .route("/v1/audit/entries", web::get().to(entries))
        .route("/v1/audit/accounts/{id}/balance", web::get().to(balance))
        .route("/v1/audit/accounts/{id}/statement", web::get().to(account_statement))
        .route("/v1/audit/trial-balance", web::get().to(trial_balance))
        .route("/v1/audit/checkpoints/latest", web::get().to(latest_checkpoint))
        .route("/v1/audit/proofs/inclusion", web::get().to(inclusion))
        .route("/v1/audit/proofs/consistency", web::get().to(consistency))
        .route("/v1/audit/access-log", web::get().to(access_log))
        .route("/v1/audit/public-key", web::get().to(public_key))
        .route("/v1/audit/public-keys", web::get().to(public_keys))
        .route("/v1/receipts/{seq}", web::get().to(receipt))
        .route("/v1/transparency", web::get().to(crate::transparency::transparency));
}

fn auditor(caller: &Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Auditor, Role::Operator])
}

/// Leaves query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LeavesQuery {
    /// First leaf index (default 0).
    #[param(minimum = 0)]
    pub from: Option<i64>,
    /// How many (1 to 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`: continues there (instead of `from`).
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
}

impl LeavesQuery {
    /// The first leaf of the page: `cursor` when given (with no `from`), else `from`.
    fn start(&self) -> Result<i64, ApiError> {
        let from = match (&self.cursor, self.from) {
            (None, from) => from.unwrap_or(0),
            (Some(c), None) => c
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request("invalid_query", "cursor is not one this server gave"))?,
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("invalid_query", "send from or cursor, not both"));
            }
        };
        if from < 0 {
            return Err(ApiError::bad_request("invalid_query", "from must be 0 or more"));
        }
        Ok(from)
    }
}

/// The audit log's leaves: anyone holding them recomputes the tree. Page with `from` and
/// `limit`, or pass `next_cursor` back as `cursor`.
#[utoipa::path(get, path = "/v1/audit/leaves", tag = "auditor", params(LeavesQuery), responses((status = 200, body = Leaves)))]
pub async fn leaves(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<LeavesQuery>,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let limit = Page { limit: q.limit, cursor: None }.limit()?;
    let from = q.start()?;
    let st = state.clone();
    let rows = blocking(move || Ok(st.ledger.leaves(from, limit)?)).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| (from + limit).to_string());
    Ok(HttpResponse::Ok().json(Leaves {
        leaves: rows
            .into_iter()
            .map(|r| LeafView {
                leaf_index: r.leaf_index,
                kind: r.kind,
                leaf: hex::encode(&r.leaf),
                leaf_hash: hex::encode(&r.leaf_hash),
            })
            .collect(),
        next_cursor,
    }))
}

fn entry_view(e: &Entry) -> EntryView {
    let r = &e.references;
    EntryView {
        entry_seq: e.seq,
        kind: e.kind.as_str().to_owned(),
        time: wire::time(e.time_us),
        amount: money(e.amount_minor, e.currency),
        fee: money(e.fee_minor, e.currency),
        account_id: e.account_id.map(|a| a.to_string()),
        counterparty_id: e.counterparty_id.map(|a| a.to_string()),
        related_seq: e.related_seq,
        expires_at: e.expires_at_us.map(wire::time),
        terminal_id: r.terminal_id.clone(),
        card_id: r.card_id.map(|c| c.to_string()),
        card_read_counter: r.card_read_counter,
        merchant_reference: r.merchant_reference.clone(),
        memo: r.memo.clone(),
        postings: e
            .postings
            .iter()
            .map(|p| PostingView {
                account_id: p.account_id.to_string(),
                amount: money(p.amount_minor, p.currency),
                balance_after: money(p.balance_after_minor, p.currency),
            })
            .collect(),
        leaf_index: e.audit.map(|a| a.leaf_index),
        leaf_hash: e.audit.map(|a| hex::encode(a.leaf_hash)),
        leaf: hex::encode(ledger::audit::entry_leaf(e)),
    }
}

/// Journal entries in sequence order, with their leaf bytes. With `Accept: text/csv`, the
/// same page as CSV, one row per posting (the columns of `kartu ledger export`), and the
/// next page's cursor in `Next-Cursor`.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "auditor", params(Page),
    responses((status = 200, description = "a page of entries", content((Entries = "application/json"), (String = "text/csv")),
        headers(("Next-Cursor" = String, description = "CSV only: the cursor of the next page, when there is one")))))]
pub async fn entries(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<Page>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let (limit, after) = (page.limit()?, page.after()?);
    let st = state.clone();
    let list = blocking(move || Ok(st.reports.entries(after + 1, limit)?)).await?;
    let next_cursor = (list.len() as i64 == limit).then(|| list.last().map(|e| wire::cursor(e.seq))).flatten();
    if wire::wants_csv(&req) {
        let mut csv = String::from(ledger::export::JOURNAL_HEADER);
        list.iter().for_each(|e| ledger::export::journal_rows(e, &mut csv));
        return Ok(wire::csv_response(csv, next_cursor.as_deref()));
    }
    Ok(HttpResponse::Ok().json(Entries { entries: list.iter().map(entry_view).collect(), next_cursor }))
}

/// Balance query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AtQuery {
    /// RFC 3339 time; now when omitted.
    #[param(format = DateTime)]
    pub at: Option<String>,
}

/// An account's balance now or at any past time.
#[utoipa::path(get, path = "/v1/audit/accounts/{id}/balance", tag = "auditor", params(("id" = String, Path), AtQuery),
    responses((status = 200, body = BalanceView), (status = 404, body = crate::error::Problem)))]
pub async fn balance(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    q: web::Query<AtQuery>,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let id = wire::account_id(&id)?;
    let at = q.at.as_deref().map(wire::parse_time).transpose()?;
    let st = state.clone();
    let view = blocking(move || {
        let a = st.reports.account(id)?.ok_or_else(|| ApiError::not_found("not_found", "no such account"))?;
        let at_us = at.unwrap_or_else(|| st.ledger.now_us());
        let b = match at {
            Some(t) => st.reports.balance_at(id, t)?,
            None => st.reports.balance(id)?,
        };
        Ok(BalanceView {
            account_id: id.to_string(),
            kind: a.kind.as_str().to_owned(),
            balance: money(b, a.currency),
            at: wire::time(at_us),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Any account's statement for a period (CSV with `Accept: text/csv`).
#[utoipa::path(get, path = "/v1/audit/accounts/{id}/statement", tag = "auditor", params(("id" = String, Path), StatementQuery),
    responses((status = 200, description = "the statement", content((StatementView = "application/json"), (String = "text/csv")),
        headers(("Next-Cursor" = String, description = "CSV only: the cursor of the next page, when there is one"))),
        (status = 404, body = crate::error::Problem)))]
pub async fn account_statement(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    q: web::Query<StatementQuery>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let id = wire::account_id(&id)?;
    Ok(crate::merchant::statement_answer(&req, statement(&state, id, &q).await?))
}

/// Every currency sums to zero.
#[utoipa::path(get, path = "/v1/audit/trial-balance", tag = "auditor", responses((status = 200, body = TrialBalance)))]
pub async fn trial_balance(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let st = state.clone();
    let (lines, last, owed) = blocking(move || {
        let lines = st.reports.trial_balance()?;
        let mut owed = std::collections::HashMap::new();
        for l in &lines {
            let risk = st.system_account(ledger::domain::AccountKind::OfflineRisk, l.currency)?;
            owed.insert(l.currency, -st.reports.balance(risk)?);
        }
        Ok((lines, st.reports.last_seq()?, owed))
    })
    .await?;
    Ok(HttpResponse::Ok().json(TrialBalance {
        currencies: lines
            .iter()
            .map(|l| TrialLine {
                owed_by_cards: l.currency.format_minor(owed.get(&l.currency).copied().unwrap_or(0)),
                currency: l.currency.code().to_owned(),
                balances_sum: l.currency.format_minor(l.balances_sum_minor),
                debits: l.currency.format_minor(l.debits_minor),
                credits: l.currency.format_minor(l.credits_minor),
                balanced: l.balances_sum_minor == 0,
            })
            .collect(),
        last_entry_seq: last,
    }))
}

/// The newest signed checkpoint (C2SP signed note), for anyone.
#[utoipa::path(get, path = "/v1/audit/checkpoints/latest", tag = "public", security(()),
    responses((status = 200, description = "the signed note", content_type = "text/plain"), (status = 404, description = "`no_checkpoint`: none has been signed yet", body = crate::error::Problem)))]
pub async fn latest_checkpoint(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let cp = blocking(move || Ok(st.ledger.latest_checkpoint()?))
        .await?
        .ok_or_else(|| ApiError::not_found("no_checkpoint", "no checkpoint has been signed yet"))?;
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(cp.note))
}

/// The checkpoint verifier key line, for anyone.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "public", security(()),
    responses((status = 200, description = "<name>+<key id>+<base64 key>", content_type = "text/plain")))]
pub async fn public_key(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let key = state
        .settings
        .verifier_key
        .clone()
        .ok_or_else(|| ApiError::not_found("no_key", "this server signs no checkpoints"))?;
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(format!("{key}\n")))
}

/// The log's checkpoint keys, oldest first, for anyone: the first key and each key a
/// rotation leaf announced, with the tree sizes each signs. Each rotation is checked as a
/// verifier checks it (signed by the key before, bound to the tree before its leaf).
#[utoipa::path(get, path = "/v1/audit/public-keys", tag = "public", security(()),
    responses((status = 200, body = CheckpointKeys),
        (status = 404, description = "`no_key`: this server signs no checkpoints", body = crate::error::Problem)))]
pub async fn public_keys(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let first = state
        .settings
        .first_checkpoint_key
        .clone()
        .ok_or_else(|| ApiError::not_found("no_key", "this server signs no checkpoints"))?;
    let ledger = state.ledger.clone();
    let periods = blocking(move || Ok(ledger.checkpoint_keys(&first)?)).await?;
    let keys: Vec<CheckpointKey> = periods
        .into_iter()
        .map(|p| CheckpointKey { key: p.key, from_tree_size: p.from_tree_size, rotation_leaf: p.rotation_leaf })
        .collect();
    let current = keys.last().map(|k| k.key.clone()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(CheckpointKeys { current, keys }))
}

/// Inclusion proof query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct InclusionQuery {
    /// The leaf.
    #[param(minimum = 0)]
    pub leaf_index: i64,
    /// The tree size (of a signed checkpoint).
    #[param(minimum = 1)]
    pub tree_size: i64,
}

/// Proves that a leaf (a receipt) is in the tree of a checkpoint; for anyone.
#[utoipa::path(get, path = "/v1/audit/proofs/inclusion", tag = "public", security(()), params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 400, body = crate::error::Problem)))]
pub async fn inclusion(state: web::Data<AppState>, q: web::Query<InclusionQuery>) -> Result<HttpResponse, ApiError> {
    let (i, n) = (q.leaf_index, q.tree_size);
    let st = state.clone();
    let hashes = blocking(move || st.ledger.inclusion_proof(i, n).map_err(proof_error)).await?;
    Ok(HttpResponse::Ok().json(InclusionProof {
        leaf_index: i,
        tree_size: n,
        hashes: hashes.iter().map(hex::encode).collect(),
    }))
}

fn proof_error(e: ledger::LedgerError) -> ApiError {
    match e {
        ledger::LedgerError::OutOfRange(m) => ApiError::bad_request("invalid_query", m),
        other => other.into(),
    }
}

/// Consistency proof query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ConsistencyQuery {
    /// The older tree size.
    #[param(minimum = 1)]
    pub first: i64,
    /// The newer tree size.
    #[param(minimum = 1)]
    pub second: i64,
}

/// Proves that the log of size `second` extends the log of size `first`; for anyone.
#[utoipa::path(get, path = "/v1/audit/proofs/consistency", tag = "public", security(()), params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 400, body = crate::error::Problem)))]
pub async fn consistency(
    state: web::Data<AppState>,
    q: web::Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (a, b) = (q.first, q.second);
    let st = state.clone();
    let hashes = blocking(move || st.ledger.consistency_proof(a, b).map_err(proof_error)).await?;
    Ok(HttpResponse::Ok().json(ConsistencyProof {
        first: a,
        second: b,
        hashes: hashes.iter().map(hex::encode).collect(),
    }))
}

/// Access log query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AccessLogQuery {
    /// Only this service point (an id that is not a number names none: 404).
    #[param(pattern = "^[0-9]{1,19}$")]
    pub service_point_id: Option<String>,
    /// Page size (1 to 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Continue from a previous page.
    pub cursor: Option<String>,
}

/// Every access decision.
#[utoipa::path(get, path = "/v1/audit/access-log", tag = "auditor", params(AccessLogQuery),
    responses((status = 200, body = AccessLog),
        (status = 404, description = "`not_found`: `service_point_id` is not a number, so it names none", body = crate::error::Problem)))]
pub async fn access_log(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<AccessLogQuery>,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let page = Page { limit: q.limit, cursor: q.cursor.clone() };
    let (limit, after) = (page.limit()?, page.after()?);
    let scope =
        q.service_point_id.as_deref().map(|s| wire::id(s).map(|id| format!("service_point:{id}"))).transpose()?;
    let st = state.clone();
    let filter = EventFilter { kind: Some("access_decision".into()), scope, ..Default::default() };
    let events = blocking(move || Ok(st.reports.events(&filter, after, limit)?)).await?;
    let next_cursor = (events.len() as i64 == limit).then(|| events.last().map(|e| wire::cursor(e.id))).flatten();
    let decisions = events
        .iter()
        .map(|e| {
            let p: serde_json::Value = serde_json::from_str(&e.payload).unwrap_or_default();
            AccessLogLine {
                id: e.id.to_string(),
                time: wire::time(e.time_us),
                service_point_id: e.scope.as_deref().and_then(|s| s.strip_prefix("service_point:")).map(str::to_owned),
                card_id: e.card_id.map(|c| c.to_string()),
                decision: p["decision"].as_str().unwrap_or("").to_owned(),
                reason: p["reason"].as_str().unwrap_or("").to_owned(),
                queue_number: e.queue_number,
                leaf_index: e.audit.map(|a| a.leaf_index),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(AccessLog { decisions, next_cursor }))
}

/// Receipt query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReceiptQuery {
    /// The receipt's leaf hash, 64 hex digits, as printed on it: any other value shows no
    /// entry (`404`).
    pub h: String,
}

/// A receipt for anyone holding it: the entry's leaf bytes and what they hold, to check
/// with an inclusion proof against a signed checkpoint (`kartu audit receipt`, the
/// `/receipts/{seq}` page). `404` unless `h` is the entry's leaf hash.
#[utoipa::path(get, path = "/v1/receipts/{seq}", tag = "public", security(()), params(("seq" = String, Path), ReceiptQuery),
    responses((status = 200, body = ReceiptDetail), (status = 404, body = crate::error::Problem)))]
pub async fn receipt(
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<ReceiptQuery>,
) -> Result<HttpResponse, ApiError> {
    let seq = wire::id(&path)?;
    let f = find_receipt(&state, seq, &q.h)
        .await?
        .ok_or_else(|| ApiError::not_found("not_found", "no receipt has this entry and leaf hash"))?;
    let e = &f.entry;
    Ok(HttpResponse::Ok().json(ReceiptDetail {
        entry_seq: e.seq,
        leaf_index: f.leaf_index,
        leaf_hash: hex::encode(f.leaf_hash),
        leaf: hex::encode(&f.leaf),
        kind: e.kind.as_str().to_owned(),
        amount: money(e.amount_minor, e.currency),
        fee: money(e.fee_minor, e.currency),
        time: wire::time(e.time_us),
        place: f.place.clone(),
    }))
}

/// An entry, its leaf's bytes and the name of where it happened.
#[derive(Debug)]
pub struct FoundReceipt {
    /// The entry.
    pub entry: Entry,
    /// Its leaf's position in the log.
    pub leaf_index: i64,
    /// SHA-256(0x00 || leaf).
    pub leaf_hash: [u8; 32],
    /// The leaf's bytes.
    pub leaf: Vec<u8>,
    /// The merchant's or agent's name.
    pub place: Option<String>,
}

/// The entry `seq` when `h` is its leaf hash (hex, either case), compared in constant time;
/// `None` for any other hash, so receipts cannot be listed by counting.
pub async fn find_receipt(state: &web::Data<AppState>, seq: i64, h: &str) -> Result<Option<FoundReceipt>, ApiError> {
    use subtle::ConstantTimeEq as _;
    let Ok(claimed) = hex::decode(h) else { return Ok(None) };
    let st = state.clone();
    blocking(move || {
        let Some(entry) = st.ledger.entry(seq)? else { return Ok(None) };
        let Some(audit) = entry.audit else { return Ok(None) };
        if claimed.len() != 32 || !bool::from(claimed.as_slice().ct_eq(&audit.leaf_hash[..])) {
            return Ok(None);
        }
        let Some(row) = st.ledger.leaves(audit.leaf_index, 1)?.into_iter().next() else { return Ok(None) };
        let place = match entry.counterparty_id {
            Some(account) => place_names(&st)?.remove(&account),
            None => None,
        };
        Ok(Some(FoundReceipt {
            leaf_index: audit.leaf_index,
            leaf_hash: audit.leaf_hash,
            leaf: row.leaf,
            place,
            entry,
        }))
    })
    .await
}

/// The names entries' counterparties go by on receipts and the card page: merchants' and
/// top-up agents' accounts (blocking).
pub fn place_names(state: &AppState) -> Result<std::collections::HashMap<ledger::domain::AccountId, String>, ApiError> {
    let mut names = std::collections::HashMap::new();
    for m in state.ledger.registry(|r| r.merchants())? {
        names.insert(m.account_id, m.name);
    }
    for a in state.ledger.registry(|r| r.all_agents())? {
        names.insert(a.account_id, a.name);
    }
    Ok(names)
}
