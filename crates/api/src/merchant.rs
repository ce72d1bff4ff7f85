//! Money moved by a card: payments, refunds, holds (capture, void) at merchant terminals;
//! top-ups at agents; balance inquiries at kiosks; the merchant's own reads.

use actix_web::{web, HttpResponse};
use ledger::domain::{AccountId, AccountKind, Command, Entry, EntryKind, Event, Posted, References, Request};
use ledger::registry::Card;
use serde::Deserialize;

use crate::auth::{BearerToken, Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::taps::VerifiedTap;
use crate::wire::{self, money, receipt, Page, Tap};
use crate::{blocking, hot_reads, within, AppState};
pub use client::wire::{
    CaptureBody, InquiryView, NewHold, NewInquiry, NewPayment, NewRefund, NewTopup, PaymentList, PaymentView,
    RecentLine, StatementLineView, StatementView, TopupView,
};

/// Registers the merchant, agent and kiosk routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/payments", web::post().to(pay))
        .route("/v1/payments", web::get().to(list_payments))
        .route("/v1/payments/{id}/refunds", web::post().to(refund))
        .route("/v1/holds", web::post().to(hold))
        .route("/v1/holds/{id}/capture", web::post().to(capture))
        .route("/v1/holds/{id}/void", web::post().to(void))
        .route("/v1/merchant/statement", web::get().to(merchant_statement))
        .route("/v1/topups", web::post().to(topup))
        .route("/v1/balance-inquiries", web::post().to(balance_inquiry));
}

/// Verifies a tap and finds its card; the card must be active.
pub async fn card_of_tap(state: &web::Data<AppState>, tap: &Tap) -> Result<(VerifiedTap, Card), ApiError> {
    let verified = state.taps.verify(tap)?;
    let st = state.clone();
    let uid = verified.uid;
    let card = blocking(move || Ok(st.ledger.registry(|r| r.card_by_uid(uid))?))
        .await?
        .ok_or_else(|| ApiError::unprocessable("card_unknown", "this card is not registered"))?;
    check_active(&card)?;
    check_tap_key(&verified, &card)?;
    Ok((verified, card))
}

/// Refuses a tap that verifies only with an older card key version than the card was
/// personalised (or rotated) with: it was made with keys the card no longer holds, so it
/// is a copy, not the card.
pub fn check_tap_key(tap: &VerifiedTap, card: &Card) -> Result<(), ApiError> {
    domain::lifecycle::tap_key(tap.key_version, card.key_version)
        .map_err(|e| ApiError::unprocessable("tap_key_outdated", e.to_string()))
}

/// Refuses blocked and replaced cards (`domain::lifecycle::usable`).
pub fn check_active(card: &Card) -> Result<(), ApiError> {
    domain::lifecycle::usable(card.status).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))
}

fn key(caller: &Caller, key: &IdempotencyHeader) -> Result<ledger::domain::IdempotencyKey, ApiError> {
    ledger::domain::IdempotencyKey::parse(&caller.key(&key.0)).map_err(|_| ApiError::internal("idempotency key"))
}

fn reference(text: &Option<String>) -> Result<Option<String>, ApiError> {
    text.as_deref().map(|t| wire::text("reference", t, 120)).transpose()
}

fn balance_after(e: &Entry, account: AccountId) -> i64 {
    e.postings.iter().rev().find(|p| p.account_id == account).map_or(0, |p| p.balance_after_minor)
}

fn count(state: &AppState, operation: &str, r: &Result<ledger::domain::Posted, ledger::LedgerError>) {
    let result = match r {
        Ok(_) => "approved",
        Err(ledger::LedgerError::Rejected(x)) => x.code(),
        Err(_) => "error",
    };
    state.metrics.payment(operation, result);
}

/// The card's balance after a card write: the writer's (the new card's when the card was
/// replaced), or, for a retried request, read now.
async fn card_balance(state: &web::Data<AppState>, posted: &Posted) -> Result<i64, ApiError> {
    match (posted.wallet_balance_minor, posted.entry.account_id) {
        (Some(b), _) => Ok(b),
        (None, Some(wallet)) => {
            let st = state.clone();
            blocking(move || Ok(st.ledger.balance(wallet)?)).await
        }
        (None, None) => Ok(0),
    }
}

/// The answer of a card write, with the card's balance after it.
async fn posted_view(state: &web::Data<AppState>, posted: &Posted, status: &str) -> Result<PaymentView, ApiError> {
    let mut v = view(&posted.entry, status, None);
    v.balance = money(card_balance(state, posted).await?, posted.entry.currency);
    Ok(v)
}

fn view(e: &Entry, status: &str, wallet: Option<AccountId>) -> PaymentView {
    PaymentView {
        id: e.seq.to_string(),
        status: status.into(),
        amount: money(e.amount_minor, e.currency),
        fee: money(e.fee_minor, e.currency),
        balance: money(wallet.map_or(0, |w| balance_after(e, w)), e.currency),
        card_id: e.references.card_id.map(|c| c.to_string()),
        reference: e.references.merchant_reference.clone(),
        created_at: wire::time(e.time_us),
        expires_at: e.expires_at_us.map(wire::time),
        receipt: receipt(e),
    }
}

/// A card payment: the tap is verified, the card must be active, the wallet must cover
/// the amount; the merchant discount goes to the city's fee account.
#[utoipa::path(post, path = "/v1/payments", tag = "merchant", request_body = NewPayment, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = PaymentView), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn pay(
    state: web::Data<AppState>,
    token: BearerToken,
    idem: IdempotencyHeader,
    body: web::Json<NewPayment>,
) -> Result<HttpResponse, ApiError> {
    // One pass for everything the payment reads (see `hot_reads`): the caller's
    // credential (fresh, so a revoked token stops at once) and the card the tap claims, in
    // one statement; the merchant and fee account (cached after the first payment). The
    // claimed UID is decrypted, not verified: the tap is checked after the caller, so that
    // no one without a token can ask which taps are genuine, and the card read with the
    // credential is used only if it is the verified tap's.
    let st = state.clone();
    let (caller, tap, card, merchant, fees, amount, merchant_reference) = hot_reads(&state, move || {
        // Parsed once: its refusal (`invalid_tap`) waits for the caller's checks.
        let sun = crate::taps::parse(&body.tap);
        let claimed = sun.as_ref().ok().and_then(|sun| st.taps.claimed_uid(sun));
        let (caller, card) = Caller::resolve_with_card(&st, token, claimed)?;
        let merchant_id = caller.merchant_id()?;
        let currency = wire::currency(body.currency.as_deref(), st.settings.currency)?;
        let amount = wire::amount(&body.amount, currency, st.settings.amount_max_minor)?;
        within(&amount, st.settings.limits.payment_max_minor, "a payment")?;
        let merchant_reference = reference(&body.reference)?;
        let tap = st.taps.verify_parsed(&sun?)?;
        let card = if claimed == Some(tap.uid) { card } else { st.ledger.registry(|r| r.card_by_uid(tap.uid))? }
            .ok_or_else(|| ApiError::unprocessable("card_unknown", "this card is not registered"))?;
        check_active(&card)?;
        check_tap_key(&tap, &card)?;
        let m = st.merchant(merchant_id)?.ok_or_else(|| ApiError::forbidden("the terminal's merchant is gone"))?;
        let fees = st.system_account(AccountKind::FeeRevenue, currency)?;
        Ok((caller, tap, card, m, fees, amount, merchant_reference))
    })
    .await?;
    let request = Request::new(Command::Payment {
        wallet: card.account_id,
        merchant: merchant.account_id,
        fee_account: fees,
        amount,
        fee_minor: merchant.fee_rate.fee_minor(amount.minor()),
    })
    .with_key(key(&caller, &idem)?)
    .with_references(References {
        terminal_id: Some(caller.reference()),
        card_id: Some(card.id),
        card_read_counter: Some(tap.counter_value()),
        merchant_reference,
        memo: None,
    });
    let result = state.ledger.submit(request).await;
    count(&state, "payment", &result);
    let posted = result?;
    // A retry gets the first answer whole, status included (as every other write does).
    let mut v = view(&posted.entry, "approved", Some(card.account_id));
    if let Some(b) = posted.wallet_balance_minor {
        v.balance = money(b, posted.entry.currency);
    }
    Ok(HttpResponse::Created().json(v))
}

/// The merchant's own payments, captures and refunds, newest first.
#[utoipa::path(get, path = "/v1/payments", tag = "merchant", params(Page),
    responses((status = 200, body = PaymentList)))]
pub async fn list_payments(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let merchant_id = caller.merchant_id()?;
    let (limit, before) = (page.limit()?, page.after()?);
    let st = state.clone();
    let (entries, account) = blocking(move || {
        let m = st.merchant(merchant_id)?.ok_or_else(|| ApiError::forbidden("the terminal's merchant is gone"))?;
        Ok((st.ledger.account_entries(m.account_id, before, limit, true)?, m.account_id))
    })
    .await?;
    let next_cursor = (entries.len() as i64 == limit).then(|| entries.last().map(|e| wire::cursor(e.seq))).flatten();
    let payments = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Payment | EntryKind::Capture | EntryKind::Refund))
        .map(|e| {
            let status = match e.kind {
                EntryKind::Refund => "refunded",
                EntryKind::Capture => "captured",
                _ => "approved",
            };
            let mut v = view(e, status, e.account_id);
            v.balance = money(balance_after(e, account), e.currency);
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(PaymentList { payments, next_cursor }))
}

/// Loads an entry of `kind` that belongs to the caller's merchant (else 404: a merchant
/// never learns about another's entries).
async fn own_entry(
    state: &web::Data<AppState>,
    caller: &Caller,
    id: &str,
    kinds: &[EntryKind],
) -> Result<Entry, ApiError> {
    let merchant_id = caller.merchant_id()?;
    let seq = wire::id(id)?;
    let st = state.clone();
    let kinds = kinds.to_vec();
    blocking(move || {
        let m = st.merchant(merchant_id)?.ok_or_else(|| ApiError::forbidden("the terminal's merchant is gone"))?;
        match st.ledger.entry(seq)? {
            Some(e) if kinds.contains(&e.kind) && e.counterparty_id == Some(m.account_id) => Ok(e),
            _ => Err(ApiError::not_found("not_found", "no such payment or hold of this merchant")),
        }
    })
    .await
}

/// Refunds part or all of a payment to the card; the merchant discount comes back in
/// proportion.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", tag = "merchant", request_body = NewRefund, params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = PaymentView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn refund(
    state: web::Data<AppState>,
    caller: Caller,
    idem: IdempotencyHeader,
    id: web::Path<String>,
    body: web::Json<NewRefund>,
) -> Result<HttpResponse, ApiError> {
    caller.merchant_id()?;
    let currency = wire::currency(body.currency.as_deref(), state.settings.currency)?;
    let amount = wire::amount(&body.amount, currency, state.settings.amount_max_minor)?;
    let reason = body.reason.as_deref().map(|r| wire::text("reason", r, 200)).transpose()?;
    // Payments and captures (a capture is the merchant's payment of a hold: a hotel's early
    // check-out, a parking overcharge); the writer refunds at most what was taken.
    let payment = own_entry(&state, &caller, &id, &[EntryKind::Payment, EntryKind::Capture]).await?;
    let request = Request::new(Command::Refund { payment_seq: payment.seq, amount })
        .with_key(key(&caller, &idem)?)
        .with_references(References {
            terminal_id: Some(caller.reference()),
            card_id: payment.references.card_id,
            memo: reason,
            ..Default::default()
        });
    let result = state.ledger.submit(request).await;
    count(&state, "refund", &result);
    let posted = result?;
    Ok(HttpResponse::Created().json(posted_view(&state, &posted, "refunded").await?))
}

/// Reserves funds on a card (parking entry, hotel check-in).
#[utoipa::path(post, path = "/v1/holds", tag = "merchant", request_body = NewHold, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = PaymentView), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn hold(
    state: web::Data<AppState>,
    caller: Caller,
    idem: IdempotencyHeader,
    body: web::Json<NewHold>,
) -> Result<HttpResponse, ApiError> {
    let merchant_id = caller.merchant_id()?;
    let currency = wire::currency(body.currency.as_deref(), state.settings.currency)?;
    let amount = wire::amount(&body.amount, currency, state.settings.amount_max_minor)?;
    within(&amount, state.settings.limits.payment_max_minor, "a hold")?;
    let minutes = body.expires_in_minutes.unwrap_or(24 * 60);
    if !(1..=state.settings.hold_minutes_max).contains(&minutes) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("expires_in_minutes must be 1 to {}", state.settings.hold_minutes_max),
        ));
    }
    let merchant_reference = reference(&body.reference)?;
    let (tap, card) = card_of_tap(&state, &body.tap).await?;
    let st = state.clone();
    let ledger_key = key(&caller, &idem)?;
    let k = ledger_key.as_str().to_owned();
    let (merchant, earlier) = blocking(move || {
        let m = st.merchant(merchant_id)?.ok_or_else(|| ApiError::forbidden("merchant gone"))?;
        Ok((m, st.ledger.entry_by_key(&k)?))
    })
    .await?;
    // The expiry is computed from the time of the request, so a retry takes the first
    // request's expiry (else it would differ and be refused as another request); the
    // minutes asked for are in the memo, so a retry asking for others is still refused.
    let expires_at_us =
        earlier.and_then(|e| e.expires_at_us).unwrap_or_else(|| state.ledger.now_us() + minutes * 60_000_000);
    let request =
        Request::new(Command::Hold { wallet: card.account_id, merchant: merchant.account_id, amount, expires_at_us })
            .with_key(ledger_key)
            .with_references(References {
                terminal_id: Some(caller.reference()),
                card_id: Some(card.id),
                card_read_counter: Some(tap.counter_value()),
                merchant_reference,
                memo: Some(format!("expires in {minutes} min")),
            });
    let result = state.ledger.submit(request).await;
    count(&state, "hold", &result);
    let posted = result?;
    Ok(HttpResponse::Created().json(posted_view(&state, &posted, "held").await?))
}

/// Captures a hold (at most the held amount); the rest goes back to the card.
#[utoipa::path(post, path = "/v1/holds/{id}/capture", tag = "merchant", request_body = CaptureBody, params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = PaymentView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn capture(
    state: web::Data<AppState>,
    caller: Caller,
    idem: IdempotencyHeader,
    id: web::Path<String>,
    body: web::Json<CaptureBody>,
) -> Result<HttpResponse, ApiError> {
    let merchant_id = caller.merchant_id()?;
    let currency = wire::currency(body.currency.as_deref(), state.settings.currency)?;
    let amount = wire::amount(&body.amount, currency, state.settings.amount_max_minor)?;
    let hold = own_entry(&state, &caller, &id, &[EntryKind::Hold]).await?;
    let st = state.clone();
    let (merchant, fees) = blocking(move || {
        let m = st.merchant(merchant_id)?.ok_or_else(|| ApiError::forbidden("merchant gone"))?;
        Ok((m, st.system_account(AccountKind::FeeRevenue, currency)?))
    })
    .await?;
    let request = Request::new(Command::Capture {
        hold_seq: hold.seq,
        amount,
        fee_minor: merchant.fee_rate.fee_minor(amount.minor()),
        fee_account: fees,
    })
    .with_key(key(&caller, &idem)?)
    .with_references(References {
        terminal_id: Some(caller.reference()),
        card_id: hold.references.card_id,
        ..Default::default()
    });
    let result = state.ledger.submit(request).await;
    count(&state, "capture", &result);
    let posted = result?;
    Ok(HttpResponse::Created().json(posted_view(&state, &posted, "captured").await?))
}

/// Voids a hold: everything goes back to the card.
#[utoipa::path(post, path = "/v1/holds/{id}/void", tag = "merchant", params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = PaymentView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn void(
    state: web::Data<AppState>,
    caller: Caller,
    idem: IdempotencyHeader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hold = own_entry(&state, &caller, &id, &[EntryKind::Hold]).await?;
    let request =
        Request::new(Command::Void { hold_seq: hold.seq }).with_key(key(&caller, &idem)?).with_references(References {
            terminal_id: Some(caller.reference()),
            card_id: hold.references.card_id,
            ..Default::default()
        });
    let posted = state.ledger.submit(request).await?;
    Ok(HttpResponse::Created().json(posted_view(&state, &posted, "voided").await?))
}

/// Statement query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatementQuery {
    /// Start (RFC 3339, inclusive); the beginning when omitted.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); now when omitted.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Page size (1 to 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Continue from a previous page.
    pub cursor: Option<String>,
}

/// A statement of any account for a period (shared with the auditor's read).
pub async fn statement(
    state: &web::Data<AppState>,
    account: AccountId,
    q: &StatementQuery,
) -> Result<StatementView, ApiError> {
    let from = q.from.as_deref().map(wire::parse_time).transpose()?.unwrap_or(0);
    let to = q.to.as_deref().map(wire::parse_time).transpose()?.unwrap_or(i64::MAX);
    if from >= to {
        return Err(ApiError::bad_request("invalid_query", "from must be before to"));
    }
    let page = Page { limit: q.limit, cursor: q.cursor.clone() };
    let (limit, after) = (page.limit()?, page.after()?);
    let st = state.clone();
    let s = blocking(move || {
        let a = st.reports.account(account)?.ok_or_else(|| ApiError::not_found("not_found", "no such account"))?;
        Ok((st.reports.statement(account, from, to, after, limit)?, a.currency))
    })
    .await?;
    let (s, currency) = s;
    let next_cursor =
        (s.lines.len() as i64 == limit).then(|| s.lines.last().map(|l| wire::cursor(l.entry_seq))).flatten();
    Ok(StatementView {
        account_id: account.to_string(),
        from: wire::time(from),
        to: if to == i64::MAX { wire::time(state.ledger.now_us()) } else { wire::time(to) },
        opening: money(s.opening_minor, currency),
        closing: money(s.closing_minor, currency),
        lines: s
            .lines
            .iter()
            .map(|l| StatementLineView {
                entry_seq: l.entry_seq,
                time: wire::time(l.time_us),
                kind: l.kind.as_str().to_owned(),
                amount: money(l.amount_minor, currency),
                balance_after: money(l.balance_after_minor, currency),
            })
            .collect(),
        next_cursor,
    })
}

/// The merchant's own account statement (CSV with `Accept: text/csv`, for its accounts).
#[utoipa::path(get, path = "/v1/merchant/statement", tag = "merchant", params(StatementQuery),
    responses((status = 200, description = "the statement", content((StatementView = "application/json"), (String = "text/csv")),
        headers(("Next-Cursor" = String, description = "CSV only: the cursor of the next page, when there is one")))))]
pub async fn merchant_statement(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<StatementQuery>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let merchant_id = caller.merchant_id()?;
    let st = state.clone();
    let m = blocking(move || st.merchant(merchant_id)?.ok_or_else(|| ApiError::forbidden("merchant gone"))).await?;
    Ok(statement_answer(&req, statement(&state, m.account_id, &q).await?))
}

/// The header row of a statement as CSV.
pub const STATEMENT_CSV_HEADER: &str = "entry_seq,time,kind,amount,currency,balance_after\r\n";

/// A statement as JSON, or as CSV (one row per statement line, each with the balance after
/// it) when the caller asks for `text/csv`.
pub fn statement_answer(req: &actix_web::HttpRequest, view: StatementView) -> HttpResponse {
    if !wire::wants_csv(req) {
        return HttpResponse::Ok().json(view);
    }
    let mut csv = String::from(STATEMENT_CSV_HEADER);
    for l in &view.lines {
        let cells = [
            l.entry_seq.to_string(),
            l.time.clone(),
            l.kind.clone(),
            l.amount.amount.clone(),
            l.amount.currency.clone(),
            l.balance_after.amount.clone(),
        ];
        ledger::export::row(&cells, &mut csv);
    }
    wire::csv_response(csv, view.next_cursor.as_deref())
}

/// Loads money onto a card from the agent's prefunded float.
#[utoipa::path(post, path = "/v1/topups", tag = "agent", request_body = NewTopup, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = TopupView), (status = 422, body = crate::error::Problem)))]
pub async fn topup(
    state: web::Data<AppState>,
    caller: Caller,
    idem: IdempotencyHeader,
    body: web::Json<NewTopup>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::TopUpAgent])?;
    let agent_id = caller.credential.agent_id.ok_or_else(|| ApiError::forbidden("this credential has no agent"))?;
    let currency = wire::currency(body.currency.as_deref(), state.settings.currency)?;
    let amount = wire::amount(&body.amount, currency, state.settings.amount_max_minor)?;
    within(&amount, state.settings.limits.topup_max_minor, "a top-up")?;
    let (counter, card) = match (&body.tap, &body.card_id) {
        (Some(tap), None) => {
            let (t, c) = card_of_tap(&state, tap).await?;
            (Some(t.counter_value()), c)
        }
        (None, Some(id)) => {
            let id = wire::id(id).map_err(|_| ApiError::unprocessable("card_unknown", "no such card"))?;
            let st = state.clone();
            let c = blocking(move || Ok(st.ledger.registry(|r| r.card(id))?))
                .await?
                .ok_or_else(|| ApiError::unprocessable("card_unknown", "no such card"))?;
            check_active(&c)?;
            (None, c)
        }
        _ => return Err(ApiError::unprocessable("invalid_body", "send either tap or card_id")),
    };
    let st = state.clone();
    let agent = blocking(move || Ok(st.ledger.registry(|r| r.agent(agent_id))?))
        .await?
        .ok_or_else(|| ApiError::forbidden("the credential's agent is gone"))?;
    // The writer repays what the card owes after an offline shortfall first, out of the
    // top-up, and credits the rest (to the new card, if this one was replaced meanwhile).
    let request = Request::new(Command::Topup { source: agent.account_id, wallet: card.account_id, amount })
        .with_key(key(&caller, &idem)?)
        .with_references(References {
            terminal_id: Some(caller.reference()),
            card_id: Some(card.id),
            card_read_counter: counter,
            ..Default::default()
        });
    let result = state.ledger.submit(request).await;
    count(&state, "topup", &result);
    let posted = result?;
    let e = &posted.entry;
    let repaid: i64 = e
        .postings
        .iter()
        .filter(|p| p.amount_minor > 0 && Some(p.account_id) != e.account_id && p.account_id != agent.account_id)
        .map(|p| p.amount_minor)
        .sum();
    let balance = card_balance(&state, &posted).await?;
    Ok(HttpResponse::Created().json(TopupView {
        id: e.seq.to_string(),
        amount: money(amount.minor(), currency),
        balance: money(balance, currency),
        float: money(balance_after(e, agent.account_id), currency),
        card_id: card.id.to_string(),
        repaid: money(repaid, currency),
        receipt: receipt(e),
    }))
}

/// A kiosk shows a card's balance and last movements; the tap is used up (logged).
#[utoipa::path(post, path = "/v1/balance-inquiries", tag = "kiosk", request_body = NewInquiry, params(("Idempotency-Key" = String, Header)),
    responses((status = 200, body = InquiryView), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn balance_inquiry(
    state: web::Data<AppState>,
    caller: Caller,
    idem: IdempotencyHeader,
    body: web::Json<NewInquiry>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Kiosk])?;
    let (tap, card) = card_of_tap(&state, &body.tap).await?;
    // The tap is spent like a payment's, so a tap read at a kiosk cannot be replayed at a shop.
    state
        .ledger
        .record(Event {
            kind: "balance_inquiry".into(),
            scope: Some(format!("kiosk:{}", caller.credential.id)),
            card_id: Some(card.id),
            card_read_counter: Some(tap.counter_value()),
            queue_key: None,
            idempotency_key: Some(key(&caller, &idem)?),
            payload: "{}".into(),
            access: None,
            transit: None,
        })
        .await?;
    let st = state.clone();
    let (balance, recent) = blocking(move || {
        let account = card.account_id;
        Ok((st.ledger.balance(account)?, st.ledger.account_entries(account, 0, 5, true)?))
    })
    .await?;
    let currency = state.settings.currency;
    Ok(HttpResponse::Ok().json(InquiryView {
        balance: currency.format_minor(balance),
        currency: currency.code().to_owned(),
        recent: recent
            .iter()
            .map(|e| RecentLine {
                time: wire::time(e.time_us),
                kind: e.kind.as_str().to_owned(),
                amount: money(
                    e.postings.iter().filter(|p| p.account_id == card.account_id).map(|p| p.amount_minor).sum(),
                    e.currency,
                ),
                entry_seq: e.seq,
            })
            .collect(),
    }))
}
