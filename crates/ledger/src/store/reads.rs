//! Reads for statements, audits and maintenance: balances as of a time, an account's
//! entries, statement lines, the trial balance, expired holds.

use std::collections::HashSet;

use diesel::prelude::*;

use super::schema::{journal_entries, postings};
use super::{corrupt, storage, Db};
use crate::domain::{AccountId, Entry, EntryKind, StatementLine, TrialBalanceLine};
use crate::money::Currency;
use crate::LedgerError;

#[derive(QueryableByName)]
struct TrialRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    currency: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    total: i64,
}

/// Reads for statements, audits and maintenance.
impl Db {
    /// The last entry recorded at or before `time_us`, or 0.
    pub fn seq_at(&mut self, time_us: i64) -> Result<i64, LedgerError> {
        let max: Option<i64> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::time_us.le(time_us))
            .select(diesel::dsl::max(journal_entries::seq))
            .get_result(c))
        .map_err(storage)?;
        Ok(max.unwrap_or(0))
    }

    pub fn balance_at(&mut self, id: AccountId, time_us: i64) -> Result<i64, LedgerError> {
        let seq = self.seq_at(time_us)?;
        let balance: Option<i64> = on_db!(self, |c| postings::table
            .filter(postings::account_id.eq(id.0).and(postings::entry_seq.le(seq)))
            .order(postings::entry_seq.desc())
            .select(postings::balance_after_minor)
            .first(c)
            .optional())
        .map_err(storage)?;
        Ok(balance.unwrap_or(0))
    }

    /// The entries posting to an account: after `after_seq` ascending, or (when
    /// `newest_first`) before `after_seq` descending (0 = from the newest).
    pub fn account_entries(
        &mut self,
        id: AccountId,
        after_seq: i64,
        limit: i64,
        newest_first: bool,
    ) -> Result<Vec<Entry>, LedgerError> {
        let seqs: Vec<i64> = if newest_first {
            let before = if after_seq <= 0 { i64::MAX } else { after_seq };
            on_db!(self, |c| postings::table
                .filter(postings::account_id.eq(id.0).and(postings::entry_seq.lt(before)))
                .order(postings::entry_seq.desc())
                .limit(limit)
                .select(postings::entry_seq)
                .load(c))
        } else {
            on_db!(self, |c| postings::table
                .filter(postings::account_id.eq(id.0).and(postings::entry_seq.gt(after_seq)))
                .order(postings::entry_seq)
                .limit(limit)
                .select(postings::entry_seq)
                .load(c))
        }
        .map_err(storage)?;
        let mut seqs = seqs;
        seqs.dedup();
        let mut entries = self.entries_by_seq(&seqs)?;
        if newest_first {
            entries.reverse();
        }
        Ok(entries)
    }

    pub fn statement_lines(
        &mut self,
        id: AccountId,
        from_us: i64,
        to_us: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StatementLine>, LedgerError> {
        let rows: Vec<(i64, i64, String, i64, i64)> = on_db!(self, |c| postings::table
            .inner_join(journal_entries::table)
            .filter(postings::account_id.eq(id.0))
            .filter(journal_entries::time_us.ge(from_us).and(journal_entries::time_us.lt(to_us)))
            .filter(postings::entry_seq.gt(after_seq))
            .order((postings::entry_seq, postings::leg))
            .limit(limit)
            .select((
                postings::entry_seq,
                journal_entries::time_us,
                journal_entries::kind,
                postings::amount_minor,
                postings::balance_after_minor,
            ))
            .load(c))
        .map_err(storage)?;
        rows.into_iter()
            .map(|(entry_seq, time_us, kind, amount_minor, balance_after_minor)| {
                Ok(StatementLine {
                    entry_seq,
                    time_us,
                    kind: EntryKind::parse(&kind).ok_or_else(|| corrupt("entry kind", &kind))?,
                    amount_minor,
                    balance_after_minor,
                })
            })
            .collect()
    }

    pub fn trial_balance(&mut self) -> Result<Vec<TrialBalanceLine>, LedgerError> {
        let balances = "SELECT a.currency AS currency, CAST(COALESCE(SUM(p.balance_after_minor), 0) AS BIGINT) AS total
             FROM accounts a JOIN postings p ON p.account_id = a.id
             WHERE p.entry_seq = (SELECT max(q.entry_seq) FROM postings q WHERE q.account_id = a.id)
             GROUP BY a.currency";
        let debits = "SELECT a.currency AS currency, CAST(COALESCE(SUM(-p.amount_minor), 0) AS BIGINT) AS total
             FROM accounts a JOIN postings p ON p.account_id = a.id WHERE p.amount_minor < 0 GROUP BY a.currency";
        let credits = "SELECT a.currency AS currency, CAST(COALESCE(SUM(p.amount_minor), 0) AS BIGINT) AS total
             FROM accounts a JOIN postings p ON p.account_id = a.id WHERE p.amount_minor > 0 GROUP BY a.currency";
        let mut lines: std::collections::BTreeMap<String, [i64; 3]> = Default::default();
        for (i, sql) in [balances, debits, credits].into_iter().enumerate() {
            let rows: Vec<TrialRow> = on_db!(self, |c| diesel::sql_query(sql).load(c)).map_err(storage)?;
            for r in rows {
                lines.entry(r.currency).or_default()[i] = r.total;
            }
        }
        lines
            .into_iter()
            .map(|(code, [balances_sum_minor, debits_minor, credits_minor])| {
                Ok(TrialBalanceLine {
                    currency: Currency::parse(&code).map_err(|_| corrupt("currency", &code))?,
                    balances_sum_minor,
                    debits_minor,
                    credits_minor,
                })
            })
            .collect()
    }

    /// Holds that expired at or before `now_us` and are neither captured nor voided.
    pub fn expired_open_holds(&mut self, now_us: i64, limit: i64) -> Result<Vec<i64>, LedgerError> {
        let candidates: Vec<i64> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::kind.eq("hold"))
            .filter(journal_entries::expires_at_us.le(now_us))
            .order(journal_entries::seq)
            .select(journal_entries::seq)
            .load(c))
        .map_err(storage)?;
        let closed: HashSet<i64> =
            self.related(&candidates, &["capture", "void"])?.into_iter().map(|(s, _)| s).collect();
        Ok(candidates.into_iter().filter(|s| !closed.contains(s)).take(limit as usize).collect())
    }
}
