//! The state the writer decides money with besides balances: wallets' debts, replaced
//! wallets' successors, offline payments as posted (and what offline transit taps counted,
//! kept in their `transit_taps` rows), and the access decisions that count against a
//! holder's limits. Written only by the writer, in the batch's transaction.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;

use super::in_list::in_list;
use super::schema::{audit_events, offline_payments, transit_taps, wallet_debts, wallet_successors};
use super::{storage, Db};
use crate::domain::AccountId;
use crate::machine::{utc_day, DebtRow, OfflineRow};
use crate::LedgerError;

const DAY_US: i64 = 86_400_000_000;

impl Db {
    /// The successors of these wallets and of their successors, transitively.
    pub fn successors(&mut self, wallets: &HashSet<AccountId>) -> Result<HashMap<AccountId, AccountId>, LedgerError> {
        let mut out = HashMap::new();
        let mut ask: Vec<i64> = wallets.iter().map(|w| w.0).collect();
        // A chain is as long as a holder's replacements.
        for _ in 0..64 {
            if ask.is_empty() {
                break;
            }
            let rows: Vec<(i64, i64)> = on_db!(self, |c| wallet_successors::table
                .filter(in_list!(wallet_successors::wallet_id, &ask))
                .select((wallet_successors::wallet_id, wallet_successors::successor_id))
                .load(c))
            .map_err(storage)?;
            ask = rows.iter().map(|r| r.1).filter(|s| !out.contains_key(&AccountId(*s))).collect();
            out.extend(rows.into_iter().map(|(w, s)| (AccountId(w), AccountId(s))));
        }
        Ok(out)
    }

    /// The replaced wallets whose successor is one of these, as `(replaced, successor)`.
    pub fn predecessors(&mut self, wallets: &HashSet<AccountId>) -> Result<Vec<(AccountId, AccountId)>, LedgerError> {
        let ids: Vec<i64> = wallets.iter().map(|w| w.0).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, i64)> = on_db!(self, |c| wallet_successors::table
            .filter(in_list!(wallet_successors::successor_id, &ids))
            .select((wallet_successors::wallet_id, wallet_successors::successor_id))
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().map(|(w, s)| (AccountId(w), AccountId(s))).collect())
    }

    /// What each of these wallets owes (only those that owe something, or owed and repaid).
    pub fn debts(&mut self, wallets: &[AccountId]) -> Result<HashMap<AccountId, i64>, LedgerError> {
        if wallets.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<i64> = wallets.iter().map(|w| w.0).collect();
        let rows: Vec<(i64, i64)> = on_db!(self, |c| wallet_debts::table
            .filter(in_list!(wallet_debts::wallet_id, &ids))
            .select((wallet_debts::wallet_id, wallet_debts::delta_minor))
            .load(c))
        .map_err(storage)?;
        let mut out = HashMap::new();
        for (w, d) in rows {
            *out.entry(AccountId(w)).or_default() += d;
        }
        Ok(out)
    }

    /// What is still owed of each of these offline payments' shortfalls (net of refunds).
    pub fn payment_shortfalls(&mut self, seqs: &[i64]) -> Result<HashMap<i64, i64>, LedgerError> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(Option<i64>, i64)> = on_db!(self, |c| wallet_debts::table
            .filter(in_list!(wallet_debts::payment_seq, seqs))
            .select((wallet_debts::payment_seq, wallet_debts::delta_minor))
            .load(c))
        .map_err(storage)?;
        let mut out = HashMap::new();
        for (p, d) in rows {
            if let Some(p) = p {
                *out.entry(p).or_default() += d;
            }
        }
        Ok(out)
    }

    /// What a terminal took offline from a card on the UTC day of `record_time_us`: its
    /// offline payments and what its offline transit taps counted (by the records' times).
    pub fn offline_card_day(&mut self, credential: i64, card: i64, record_time_us: i64) -> Result<i64, LedgerError> {
        let start = utc_day(record_time_us) * DAY_US;
        let amounts: Vec<i64> = on_db!(self, |c| offline_payments::table
            .filter(offline_payments::credential_id.eq(credential))
            .filter(offline_payments::card_id.eq(card))
            .filter(offline_payments::record_time_us.ge(start))
            .filter(offline_payments::record_time_us.lt(start + DAY_US))
            .select(offline_payments::amount_minor)
            .load(c))
        .map_err(storage)?;
        let taps: Vec<Option<i64>> = on_db!(self, |c| transit_taps::table
            .filter(transit_taps::card_id.eq(card))
            .filter(transit_taps::tap_time_us.ge(start))
            .filter(transit_taps::tap_time_us.lt(start + DAY_US))
            .filter(transit_taps::credential_id.eq(credential))
            .filter(transit_taps::offline_minor.is_not_null())
            .select(transit_taps::offline_minor)
            .load(c))
        .map_err(storage)?;
        Ok(amounts.iter().sum::<i64>() + taps.iter().flatten().sum::<i64>())
    }

    /// What a terminal took offline under one sync: its offline payments and what its
    /// offline transit taps counted.
    pub fn offline_sync_total(&mut self, credential: i64, sync: i64) -> Result<i64, LedgerError> {
        let amounts: Vec<i64> = on_db!(self, |c| offline_payments::table
            .filter(offline_payments::credential_id.eq(credential))
            .filter(offline_payments::sync_id.eq(sync))
            .select(offline_payments::amount_minor)
            .load(c))
        .map_err(storage)?;
        let taps: Vec<Option<i64>> = on_db!(self, |c| transit_taps::table
            .filter(transit_taps::credential_id.eq(credential))
            .filter(transit_taps::sync_id.eq(sync))
            .select(transit_taps::offline_minor)
            .load(c))
        .map_err(storage)?;
        Ok(amounts.iter().sum::<i64>() + taps.iter().flatten().sum::<i64>())
    }

    /// Shortfalls of a merchant's offline payments posted after `since_us`: `(time, amount)`.
    pub fn merchant_shortfalls(&mut self, merchant: AccountId, since_us: i64) -> Result<Vec<(i64, i64)>, LedgerError> {
        on_db!(self, |c| wallet_debts::table
            .filter(wallet_debts::merchant_id.eq(merchant.0))
            .filter(wallet_debts::time_us.gt(since_us))
            .filter(wallet_debts::delta_minor.gt(0))
            .select((wallet_debts::time_us, wallet_debts::delta_minor))
            .load(c))
        .map_err(storage)
    }

    /// The merchant whose offline shortfalls posted after `since_us` sum highest, and the
    /// sum (the offline-risk exposure the per-merchant cap bounds); `None` without any.
    pub fn largest_merchant_exposure(&mut self, since_us: i64) -> Result<Option<(AccountId, i64)>, LedgerError> {
        let rows: Vec<(Option<i64>, i64)> = on_db!(self, |c| wallet_debts::table
            .filter(wallet_debts::time_us.gt(since_us))
            .filter(wallet_debts::delta_minor.gt(0))
            .filter(wallet_debts::merchant_id.is_not_null())
            .select((wallet_debts::merchant_id, wallet_debts::delta_minor))
            .load(c))
        .map_err(storage)?;
        let mut sums: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
        for (merchant, amount) in rows {
            if let Some(m) = merchant {
                *sums.entry(m).or_default() += amount;
            }
        }
        Ok(sums.into_iter().max_by_key(|(m, sum)| (*sum, -*m)).map(|(m, sum)| (AccountId(m), sum)))
    }

    /// Times of the decisions recorded under a holder key since `since_us`.
    pub fn access_times(&mut self, holder_key: &str, since_us: i64) -> Result<Vec<i64>, LedgerError> {
        on_db!(self, |c| audit_events::table
            .filter(audit_events::holder_key.eq(holder_key))
            .filter(audit_events::time_us.ge(since_us))
            .select(audit_events::time_us)
            .load(c))
        .map_err(storage)
    }

    /// Writes what a batch changed besides entries: debts, successors, offline payments.
    pub fn insert_integrity(
        &mut self,
        debts: &[DebtRow],
        successors: &[(AccountId, AccountId, i64)],
        offline: &[OfflineRow],
    ) -> Result<(), LedgerError> {
        for d in debts {
            let row = (
                wallet_debts::entry_seq.eq(d.entry_seq),
                wallet_debts::wallet_id.eq(d.wallet.0),
                wallet_debts::delta_minor.eq(d.delta_minor),
                wallet_debts::payment_seq.eq(d.payment_seq),
                wallet_debts::merchant_id.eq(d.merchant.map(|m| m.0)),
                wallet_debts::time_us.eq(d.time_us),
            );
            on_db!(self, |c| diesel::insert_into(wallet_debts::table).values(row).execute(c)).map_err(storage)?;
        }
        for (old, new, seq) in successors {
            let row = (
                wallet_successors::wallet_id.eq(old.0),
                wallet_successors::successor_id.eq(new.0),
                wallet_successors::entry_seq.eq(*seq),
            );
            on_db!(self, |c| diesel::insert_into(wallet_successors::table).values(row).execute(c)).map_err(storage)?;
        }
        for o in offline {
            let row = (
                offline_payments::entry_seq.eq(o.entry_seq),
                offline_payments::credential_id.eq(o.terms.credential_id),
                offline_payments::record_seq.eq(o.terms.record_seq),
                offline_payments::sync_id.eq(o.terms.sync_id),
                offline_payments::card_id.eq(o.card_id),
                offline_payments::record_time_us.eq(o.terms.record_time_us),
                offline_payments::amount_minor.eq(o.amount_minor),
            );
            on_db!(self, |c| diesel::insert_into(offline_payments::table).values(row).execute(c)).map_err(storage)?;
        }
        Ok(())
    }

    /// What every wallet owes, by the `wallet_debts` table.
    pub fn all_debts(&mut self) -> Result<HashMap<AccountId, i64>, LedgerError> {
        let rows: Vec<(i64, i64)> =
            on_db!(self, |c| wallet_debts::table.select((wallet_debts::wallet_id, wallet_debts::delta_minor)).load(c))
                .map_err(storage)?;
        let mut out = HashMap::new();
        for (w, d) in rows {
            *out.entry(AccountId(w)).or_default() += d;
        }
        Ok(out)
    }

    /// What a wallet owes now.
    pub fn wallet_debt(&mut self, wallet: AccountId) -> Result<i64, LedgerError> {
        Ok(self.debts(&[wallet])?.get(&wallet).copied().unwrap_or(0))
    }

    /// The wallet that took over a replaced wallet, if any.
    pub fn successor(&mut self, wallet: AccountId) -> Result<Option<AccountId>, LedgerError> {
        Ok(self.successors(&HashSet::from([wallet]))?.get(&wallet).copied())
    }
}
