//! Settlements: every merchant's balance paid out to the city bank, with a report of the
//! period each payout closes.

use actix_web::{web, HttpResponse};
use ledger::domain::{AccountKind, Command, EntryKind, References, Request};
use ledger::registry::Merchant;
use ledger::LedgerError;
use serde::Serialize;
use serde_json::json;

use super::{ledger_key, log_action};
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire::{money, Money};
use crate::{blocking, AppState};

/// One merchant's settlement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettlementLine {
    /// The merchant settled.
    pub merchant_id: String,
    /// Card payments and captures since the last settlement.
    pub gross: Money,
    /// Merchant discount on them, net of fees returned by refunds.
    pub fee: Money,
    /// Paid out to the merchant's bank: the account's whole balance.
    pub net: Money,
    /// The settlement entry.
    pub entry_seq: i64,
}

/// The settlement run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Settlements {
    /// One line per merchant that had a balance.
    pub lines: Vec<SettlementLine>,
}

/// Pays every merchant's balance out to the city bank (which pays the merchant's bank).
#[utoipa::path(post, path = "/v1/settlements", tag = "operator", params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = Settlements)))]
pub async fn settle(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    log_action(&state, &caller, &key, "settle", json!({})).await?;
    let st = state.clone();
    let merchants = blocking(move || Ok(st.ledger.registry(|r| r.merchants())?)).await?;
    let currency = state.settings.currency;
    let st = state.clone();
    let bank = blocking(move || st.system_account(AccountKind::CityBank, currency)).await?;
    let mut lines = Vec::new();
    for m in merchants {
        // The writer pays exactly the merchant's payable balance at this point of the log;
        // a retry of this run finds the entry it made by key and pays nothing twice.
        let request = Request::new(Command::Settle { merchant: m.account_id, bank })
            .with_key(ledger_key(&caller, &key, &format!(":m{}", m.id))?)
            .with_references(References {
                terminal_id: Some(caller.reference()),
                memo: Some(format!("settlement of merchant {}", m.id)),
                ..Default::default()
            });
        let entry = match state.ledger.submit(request).await {
            Ok(p) => p.entry,
            Err(LedgerError::Rejected(ledger::domain::Rejection::NothingToSettle)) => continue,
            Err(e) => return Err(e.into()),
        };
        // The report: what the period this settlement closed held (read after the fact,
        // pinned to the entry; it decides nothing).
        let st = state.clone();
        let (mm, upto) = (m.clone(), entry.seq);
        let (gross, fee) = blocking(move || since_last_settlement(&st, &mm, upto)).await?;
        lines.push(SettlementLine {
            merchant_id: m.id.to_string(),
            gross: money(gross, currency),
            fee: money(fee, currency),
            net: money(entry.amount_minor, currency),
            entry_seq: entry.seq,
        });
    }
    Ok(HttpResponse::Created().json(Settlements { lines }))
}

/// Gross and fees of a merchant's payments, captures and refunds between its settlement
/// before entry `upto` and `upto` (the settlement entry that closed the period).
fn since_last_settlement(state: &AppState, m: &Merchant, upto: i64) -> Result<(i64, i64), ApiError> {
    let account = m.account_id;
    let (mut gross, mut fee) = (0i64, 0i64);
    let mut after = 0;
    let mut since_settlement: Vec<ledger::StatementLine> = Vec::new();
    'pages: loop {
        let page = state.ledger.statement(account, 0, i64::MAX, after, ledger::PAGE_MAX)?;
        let Some(last) = page.lines.last() else { break };
        after = last.entry_seq;
        for line in page.lines {
            if line.entry_seq >= upto {
                break 'pages;
            }
            if line.kind == EntryKind::Settlement {
                since_settlement.clear();
            } else {
                since_settlement.push(line);
            }
        }
    }
    for line in since_settlement {
        if matches!(line.kind, EntryKind::Payment | EntryKind::Capture | EntryKind::Refund) {
            if let Some(e) = state.ledger.entry(line.entry_seq)? {
                match e.kind {
                    EntryKind::Refund => {
                        gross -= e.amount_minor;
                        fee -= e.fee_minor;
                    }
                    _ => {
                        gross += e.amount_minor;
                        fee += e.fee_minor;
                    }
                }
            }
        }
    }
    Ok((gross, fee))
}
