//! Offline store-and-forward, the server's side (SPEC §7): a terminal that took taps while
//! the server was away uploads its signed, hash-chained journal. Each record is checked
//! (signature, sequence, chain) and posted exactly once — an upload cut short and sent
//! again posts nothing twice, because every record's entry carries the idempotency key
//! `offline:c<credential>:<seq>`. A gap, a fork or a changed record stops the upload with
//! a clear error; the good records before it are kept. When a wallet cannot cover an
//! offline payment the merchant is still paid: the shortfall goes to the offline-risk
//! account, the card owes it and is on the deny list until a top-up repays it.

use actix_web::{web, HttpResponse};
use ledger::domain::{AccountKind, Command, Event, OfflineTerms, OfflineTransit, References, Request};
use ledger::LedgerError;
use offline::{check_upload, ChainHead, JournalError, OfflineAccess, RecordKind, RiskLimits, SignedRecord};
use serde_json::json;

use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire::Tap;
use crate::{blocking, AppState};
pub use client::wire::{DenyList, Head, RecordResult, Upload, Uploaded};

/// Most records in one upload.
pub const UPLOAD_RECORDS_MAX: usize = 500;
/// Largest upload body.
pub const UPLOAD_BYTES_MAX: usize = 1024 * 1024;

/// Registers the offline routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/offline/journals")
            .app_data(web::JsonConfig::default().limit(UPLOAD_BYTES_MAX).error_handler(crate::error::json_error))
            .route(web::post().to(upload))
            .default_service(web::to(crate::not_found)),
    )
    .route("/v1/offline/head", web::get().to(head))
    .route("/v1/offline/deny-list", web::get().to(deny_list));
}

fn terminal(caller: &Caller) -> Result<Vec<u8>, ApiError> {
    caller.require(&[Role::MerchantTerminal, Role::ServicePoint])?;
    let pk =
        caller.credential.public_key.as_deref().ok_or_else(|| {
            ApiError::forbidden("this credential has no terminal public key: it may not work offline")
        })?;
    hex::decode(pk).map_err(|_| ApiError::internal("stored public key is not hex"))
}

async fn load_head(state: &web::Data<AppState>, credential: i64) -> Result<ChainHead, ApiError> {
    let st = state.clone();
    let found = blocking(move || Ok(st.ledger.registry(|r| r.offline_head(credential))?)).await?;
    Ok(match found {
        Some((seq, hash)) if hash.len() == 32 => {
            let mut h = [0u8; 32];
            h.copy_from_slice(&hash);
            ChainHead { seq: seq as u64, hash: h }
        }
        _ => ChainHead::EMPTY,
    })
}

/// The terminal's journal head on the server: upload from the record after it.
#[utoipa::path(get, path = "/v1/offline/head", tag = "terminal", responses((status = 200, body = Head)))]
pub async fn head(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    terminal(&caller)?;
    let h = load_head(&state, caller.credential.id).await?;
    Ok(HttpResponse::Ok().json(Head { seq: h.seq as i64, hash: hex::encode(h.hash) }))
}

/// The deny list and the terminal's limits, to sync while online.
#[utoipa::path(get, path = "/v1/offline/deny-list", tag = "terminal", responses((status = 200, body = DenyList)))]
pub async fn deny_list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    terminal(&caller)?;
    let limits = caller.credential.offline_limits.as_deref().and_then(|l| serde_json::from_str::<RiskLimits>(l).ok());
    let st = state.clone();
    let service_point = caller.credential.service_point_id.filter(|_| caller.role == Role::ServicePoint);
    let (cred, limits_json) = (caller.credential.id, caller.credential.offline_limits.clone());
    let (uids, access, sync_id) = blocking(move || {
        let uids = st.ledger.registry(|r| r.deny_list())?;
        let now = st.ledger.now_us();
        let sync_id = st.ledger.registry(|r| r.insert_offline_sync(cred, now, limits_json.as_deref(), &uids))?;
        let Some(sp_id) = service_point else { return Ok((uids, None, sync_id)) };
        let sp =
            st.ledger.registry(|r| r.service_point(sp_id))?.ok_or_else(|| ApiError::forbidden("service point gone"))?;
        let policy: crate::access::Policy = serde_json::from_str(&sp.policy).map_err(ApiError::internal)?;
        let rules = policy.rules().map_err(ApiError::internal)?;
        let entitled = st
            .ledger
            .registry(|r| r.active_cards_with_categories())?
            .into_iter()
            .filter(|(_, categories)| rules.admits(*categories))
            .map(|(uid, _)| uid)
            .collect();
        let access = OfflineAccess {
            entitled,
            opens: policy.opens,
            closes: policy.closes,
            timezone: policy.timezone,
            daily_quota: policy.daily_quota,
            anti_passback_minutes: policy.anti_passback_minutes,
        };
        Ok((uids, Some(access), sync_id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(DenyList {
        uids,
        limits,
        access,
        as_of: crate::wire::time(state.ledger.now_us()),
        sync_id,
    }))
}

fn journal_error(e: &JournalError, posted_through: u64) -> ApiError {
    let code = match e {
        JournalError::Malformed { .. } => "offline_record_malformed",
        JournalError::BadSignature { .. } => "offline_bad_signature",
        JournalError::Gap { .. } => "offline_gap",
        JournalError::Fork { .. } => "offline_fork",
    };
    ApiError::unprocessable(code, format!("{e}; records up to {posted_through} are posted and kept"))
}

/// Uploads a terminal's offline journal.
#[utoipa::path(post, path = "/v1/offline/journals", tag = "terminal", request_body = Upload, params(("Idempotency-Key" = String, Header)),
    responses((status = 200, body = Uploaded), (status = 422, body = crate::error::Problem)))]
pub async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    _key: IdempotencyHeader,
    body: web::Json<Upload>,
) -> Result<HttpResponse, ApiError> {
    let public_key = terminal(&caller)?;
    if body.records.len() > UPLOAD_RECORDS_MAX {
        return Err(ApiError::unprocessable(
            "invalid_body",
            format!("at most {UPLOAD_RECORDS_MAX} records per upload"),
        ));
    }
    let cred = caller.credential.id;
    let head = load_head(&state, cred).await?;
    let (good, error) = check_upload(&public_key, head, &body.records);
    let mut results = Vec::new();
    let mut at = head;
    for r in good {
        let result = post_record(&state, &caller, r).await?;
        let hash = r.record.hash();
        let st = state.clone();
        let (seq, old, res, entry) = (r.record.seq as i64, at.seq as i64, result.result.clone(), result.entry_seq);
        let event = result.event_id;
        blocking(move || {
            let now = st.ledger.now_us();
            st.ledger.registry(|x| x.insert_offline_record(cred, seq, &hash, &res, entry, event, now))?;
            // Another upload of the same journal may have moved the head first: both post
            // the same records (same keys), so either move is the same move.
            st.ledger.registry(|x| x.advance_offline_head(cred, old, seq, &hash, now))?;
            Ok(())
        })
        .await?;
        at = ChainHead { seq: r.record.seq, hash };
        results.push(result);
    }
    if let Some(e) = error {
        return Err(journal_error(&e, at.seq));
    }
    Ok(HttpResponse::Ok()
        .json(Uploaded { records: results, head: Head { seq: at.seq as i64, hash: hex::encode(at.hash) } }))
}

/// What became of a record the server refuses: nothing is posted, the refusal is a leaf of
/// the audit log (`offline_record_refused`), and the terminal's chain goes on.
async fn refuse(
    state: &web::Data<AppState>,
    caller: &Caller,
    rec: &offline::Record,
    code: &str,
) -> Result<RecordResult, ApiError> {
    let seq = rec.seq as i64;
    let key = ledger::domain::IdempotencyKey::parse(&format!("offline:c{}:{seq}:refused", caller.credential.id))
        .map_err(|_| ApiError::internal("key"))?;
    let recorded = state
        .ledger
        .record(Event {
            kind: "offline_record_refused".into(),
            scope: Some(caller.reference()),
            card_id: None,
            card_read_counter: None,
            queue_key: None,
            idempotency_key: Some(key),
            payload: json!({"offline_seq": seq, "code": code, "uid": rec.uid, "amount_minor": rec.amount_minor,
                "currency": rec.currency, "sync_id": rec.sync_id, "terminal_time_us": rec.time_us})
            .to_string(),
            access: None,
            transit: None,
        })
        .await?;
    state.metrics.payment("offline_payment", code);
    Ok(RecordResult {
        seq,
        result: format!("refused:{code}"),
        entry_seq: None,
        shortfall_minor: None,
        event_id: Some(recorded.event.id),
    })
}

/// The sync an offline payment record names, checked against the record: it must be the
/// terminal's newest, with offline limits; the record must be dated after it, not after
/// the upload, and no older than the terminal's maximum offline age. A terminal uploads
/// before it syncs again, so an honest record always names the newest sync; one that names
/// an older sync (to be judged by an older deny list or counter, with a date picked to
/// fit) is refused.
async fn record_sync(
    state: &web::Data<AppState>,
    caller: &Caller,
    rec: &offline::Record,
) -> Result<Result<(ledger::registry::OfflineSync, RiskLimits), &'static str>, ApiError> {
    let (st, cred, sync_id) = (state.clone(), caller.credential.id, rec.sync_id as i64);
    let (sync, newest) = blocking(move || {
        let sync = st.ledger.registry(|r| r.offline_sync(cred, sync_id))?;
        let newest = st.ledger.registry(|r| r.offline_sync_latest(cred))?;
        Ok((sync, newest))
    })
    .await?;
    let Some(sync) = sync else { return Ok(Err("offline_sync_unknown")) };
    let Some(limits) = sync.limits.as_deref().and_then(|l| serde_json::from_str::<RiskLimits>(l).ok()) else {
        return Ok(Err("offline_not_allowed"));
    };
    let now = state.ledger.now_us();
    let max_age =
        limits.max_offline_hours.map_or(state.settings.limits.offline_max_age_us, |h| i64::from(h) * 3_600_000_000);
    // Under an older sync, dated before its sync, after the upload, or older than the
    // terminal may stay offline.
    if newest != Some(sync.id) || rec.time_us < sync.time_us || rec.time_us > now || now - rec.time_us > max_age {
        return Ok(Err("offline_record_stale"));
    }
    Ok(Ok((sync, limits)))
}

/// A refusal already recorded for this record (an upload cut short after it and sent
/// again): the record keeps its first outcome, whatever the time is now.
async fn refused_before(
    state: &web::Data<AppState>,
    caller: &Caller,
    seq: i64,
) -> Result<Option<RecordResult>, ApiError> {
    let (st, key) = (state.clone(), format!("offline:c{}:{seq}:refused", caller.credential.id));
    let Some(event) = blocking(move || Ok(st.ledger.event_by_key(&key)?)).await? else { return Ok(None) };
    let payload: serde_json::Value = serde_json::from_str(&event.payload).map_err(ApiError::internal)?;
    let code = payload["code"].as_str().ok_or_else(|| ApiError::internal("refusal without a code"))?;
    Ok(Some(RecordResult {
        seq,
        result: format!("refused:{code}"),
        entry_seq: None,
        shortfall_minor: None,
        event_id: Some(event.id),
    }))
}

/// Posts one record of an upload: an access record is logged, a payment posted within the
/// sync's limits; a record that cannot be is refused (and the refusal logged).
async fn post_record(state: &web::Data<AppState>, caller: &Caller, r: &SignedRecord) -> Result<RecordResult, ApiError> {
    let rec = &r.record;
    let seq = rec.seq as i64;
    if let Some(earlier) = refused_before(state, caller, seq).await? {
        return Ok(earlier);
    }
    let key = ledger::domain::IdempotencyKey::parse(&format!("offline:c{}:{seq}", caller.credential.id))
        .map_err(|_| ApiError::internal("key"))?;
    // Only a gate's credential may log access records, only a POS's may take payments.
    let allowed = match rec.kind {
        RecordKind::Access => caller.role == Role::ServicePoint,
        RecordKind::Payment | RecordKind::Transit => caller.role == Role::MerchantTerminal,
    };
    if !allowed {
        return refuse(state, caller, rec, "offline_not_allowed").await;
    }
    let tap = match state.taps.verify(&Tap { picc_data: rec.picc_data.clone(), cmac: rec.cmac.clone() }) {
        Ok(t) if rec.uid.parse::<card::CardUid>() == Ok(t.uid) => t,
        // A fake card taken offline: nothing is posted; the terminal's risk.
        _ => return refuse(state, caller, rec, "tap_mac_invalid").await,
    };
    let st = state.clone();
    let uid = tap.uid;
    let Some(card) = blocking(move || Ok(st.ledger.registry(|x| x.card_by_uid(uid))?)).await? else {
        return refuse(state, caller, rec, "card_unknown").await;
    };
    if crate::merchant::check_tap_key(&tap, &card).is_err() {
        return refuse(state, caller, rec, "tap_key_outdated").await;
    }
    let record = Verified { rec, seq, key, tap, card };
    match rec.kind {
        RecordKind::Access => log_access_record(state, caller, record).await,
        RecordKind::Payment => post_payment_record(state, caller, record).await,
        RecordKind::Transit => post_transit_record(state, caller, record).await,
    }
}

/// A record whose tap verified, with its card and its idempotency key.
struct Verified<'a> {
    rec: &'a offline::Record,
    seq: i64,
    key: ledger::domain::IdempotencyKey,
    tap: crate::taps::VerifiedTap,
    card: ledger::registry::Card,
}

/// The terms an offline record is posted under: its terminal's limits as of sync `sync`,
/// the card's counter then (`floor`), and the city's cap on a merchant's shortfalls.
fn offline_terms(
    state: &AppState,
    caller: &Caller,
    v: &Verified<'_>,
    sync: i64,
    floor: Option<i64>,
    limits: &RiskLimits,
) -> OfflineTerms {
    OfflineTerms {
        credential_id: caller.credential.id,
        record_seq: v.seq,
        record_time_us: v.rec.time_us,
        sync_id: sync,
        counter_floor: floor,
        per_tap_minor: limits.per_tap_minor,
        per_card_per_day_minor: limits.per_card_per_day_minor,
        outstanding_minor: limits.outstanding_minor,
        merchant_risk_cap_minor: state.settings.limits.offline_risk_per_merchant_minor,
    }
}

/// Prices a validator's offline tap: judged by its sync like a payment record (the deny
/// list, the per-tap limit on the fare the validator charged), then the ledger's writer
/// puts it among the card's taps by its time, prices the card's rides again, correcting
/// those the late tap changes, and holds the tap to the validator's limits as of its sync
/// like an offline payment (per tap, per card per day, since the sync; the operator's risk
/// cap), counting the fare or the writer's charge of its ride, whichever is more.
async fn post_transit_record(
    state: &web::Data<AppState>,
    caller: &Caller,
    v: Verified<'_>,
) -> Result<RecordResult, ApiError> {
    let (sync, limits) = match record_sync(state, caller, v.rec).await? {
        Ok(found) => found,
        Err(code) => return refuse(state, caller, v.rec, code).await,
    };
    let uid = v.tap.uid.to_string();
    if sync.denied.iter().any(|u| u.eq_ignore_ascii_case(&uid)) {
        return refuse(state, caller, v.rec, "card_denied_at_sync").await;
    }
    if v.rec.amount_minor > limits.per_tap_minor {
        return refuse(state, caller, v.rec, "offline_limit_per_tap").await;
    }
    let (st, cred, card, sync_time) = (state.clone(), caller.credential.id, v.card.clone(), sync.time_us);
    let place = blocking(move || crate::transit::offline_tap_place(&st, cred, &card, sync_time)).await?;
    let Some((tap, categories, floor)) = place.and_then(|p| p.tap(v.rec)) else {
        return refuse(state, caller, v.rec, "transit_stop_invalid").await;
    };
    let terms = offline_terms(state, caller, &v, sync.id, floor, &limits);
    let offline = OfflineTransit { terms, fare_minor: v.rec.amount_minor };
    let by = crate::transit::TapBy {
        card: &v.card,
        counter: Some(v.tap.counter_value()),
        credential: cred,
        key: v.key.clone(),
    };
    let event = crate::transit::transit_event(by, tap, categories, crate::transit::TapSource::Offline(offline));
    let recorded = match state.ledger.record(event).await {
        Ok(r) => r,
        Err(LedgerError::Rejected(r)) => return refuse(state, caller, v.rec, r.code()).await,
        Err(e) => return Err(e.into()),
    };
    Ok(RecordResult {
        seq: v.seq,
        result: format!("priced:event:{}", recorded.event.id),
        entry_seq: recorded.entries.last().map(|e| e.seq),
        shortfall_minor: None,
        event_id: Some(recorded.event.id),
    })
}

/// Logs a gate's offline access decision as an event.
async fn log_access_record(
    state: &web::Data<AppState>,
    caller: &Caller,
    v: Verified<'_>,
) -> Result<RecordResult, ApiError> {
    let sp = caller.credential.service_point_id.map_or_else(|| caller.reference(), |id| format!("service_point:{id}"));
    let recorded = state
        .ledger
        .record(Event {
            kind: "access_decision".into(),
            scope: Some(sp),
            card_id: Some(v.card.id),
            card_read_counter: None,
            queue_key: None,
            idempotency_key: Some(v.key),
            payload: json!({"decision": v.rec.decision, "reason": "offline", "offline_seq": v.seq,
                "counter": v.tap.counter_value(), "terminal_time_us": v.rec.time_us})
            .to_string(),
            access: None,
            transit: None,
        })
        .await?;
    Ok(RecordResult {
        seq: v.seq,
        result: format!("logged:event:{}", recorded.event.id),
        entry_seq: None,
        shortfall_minor: None,
        event_id: Some(recorded.event.id),
    })
}

/// The sync, limits and amount of a payment record, or the code it is refused with.
async fn payment_terms(
    state: &web::Data<AppState>,
    caller: &Caller,
    v: &Verified<'_>,
) -> Result<Result<(ledger::registry::OfflineSync, RiskLimits, ledger::money::Amount), &'static str>, ApiError> {
    let (sync, limits) = match record_sync(state, caller, v.rec).await? {
        Ok(found) => found,
        Err(code) => return Ok(Err(code)),
    };
    // The deny list holds upper-case UIDs as synced: compare text, not a parse per entry.
    let uid = v.tap.uid.to_string();
    if sync.denied.iter().any(|u| u.eq_ignore_ascii_case(&uid)) {
        return Ok(Err("card_denied_at_sync"));
    }
    let Ok(currency) = ledger::money::Currency::parse(&v.rec.currency) else {
        return Ok(Err("invalid_amount"));
    };
    if currency != state.settings.currency {
        return Ok(Err("currency_mismatch"));
    }
    match ledger::money::Amount::from_minor(v.rec.amount_minor, currency, state.settings.amount_max_minor) {
        Ok(a) if a.minor() <= state.settings.limits.payment_max_minor => Ok(Ok((sync, limits, a))),
        _ => Ok(Err("amount_too_large")),
    }
}

/// Posts a terminal's offline payment; the writer checks the sync's limits and moves what
/// the card cannot cover to the offline-risk account.
async fn post_payment_record(
    state: &web::Data<AppState>,
    caller: &Caller,
    v: Verified<'_>,
) -> Result<RecordResult, ApiError> {
    let merchant_id = caller.merchant_id()?;
    let (sync, limits, amount) = match payment_terms(state, caller, &v).await? {
        Ok(terms) => terms,
        Err(code) => return refuse(state, caller, v.rec, code).await,
    };
    let (st, currency) = (state.clone(), amount.currency());
    let (card_id, sync_time) = (v.card.id, sync.time_us);
    let (merchant, fees, risk, floor) = blocking(move || {
        let m = st.merchant(merchant_id)?.ok_or_else(|| ApiError::forbidden("merchant gone"))?;
        Ok((
            m,
            st.system_account(AccountKind::FeeRevenue, currency)?,
            st.system_account(AccountKind::OfflineRisk, currency)?,
            st.ledger.card_counter_at(card_id, sync_time)?,
        ))
    })
    .await?;
    let terms = offline_terms(state, caller, &v, sync.id, floor, &limits);
    let request = Request::new(Command::OfflinePayment {
        wallet: v.card.account_id,
        merchant: merchant.account_id,
        fee_account: fees,
        risk_account: risk,
        amount,
        fee_minor: merchant.fee_rate.fee_minor(amount.minor()),
        terms,
    })
    .with_key(v.key.clone())
    .with_references(References {
        terminal_id: Some(caller.reference()),
        card_id: Some(v.card.id),
        card_read_counter: Some(v.tap.counter_value()),
        merchant_reference: v.rec.reference.clone(),
        memo: Some(format!("offline record {}", v.seq)),
    });
    let posted = match state.ledger.submit(request).await {
        Ok(p) => p,
        Err(LedgerError::Rejected(r)) => return refuse(state, caller, v.rec, r.code()).await,
        Err(e) => return Err(e.into()),
    };
    state.metrics.payment("offline_payment", "approved");
    let shortfall: i64 =
        -posted.entry.postings.iter().filter(|p| p.account_id == risk).map(|p| p.amount_minor).sum::<i64>();
    Ok(RecordResult {
        seq: v.seq,
        result: if shortfall > 0 { "posted_with_shortfall".into() } else { "posted".into() },
        entry_seq: Some(posted.entry.seq),
        shortfall_minor: (shortfall > 0).then_some(shortfall),
        event_id: None,
    })
}
