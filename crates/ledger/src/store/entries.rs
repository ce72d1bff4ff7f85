//! Journal entries (`journal_entries`) with their postings (`postings`): written by the
//! writer, read back whole, and what the writer needs of earlier holds and payments.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;

use super::in_list::in_list;
use super::schema::{accounts, journal_entries, postings};
use super::{corrupt, storage, Db};
use crate::domain::{AccountId, AuditRef, Entry, EntryKind, IdempotencyKey, Posting, References};
use crate::machine::{HoldState, PaymentState};
use crate::money::Currency;
use crate::LedgerError;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = journal_entries, treat_none_as_default_value = false)]
struct EntryRow {
    seq: i64,
    kind: String,
    time_us: i64,
    currency: String,
    amount_minor: i64,
    fee_minor: i64,
    account_id: Option<i64>,
    counterparty_id: Option<i64>,
    related_seq: Option<i64>,
    expires_at_us: Option<i64>,
    terminal_id: Option<String>,
    card_id: Option<i64>,
    card_read_counter: Option<i64>,
    merchant_reference: Option<String>,
    memo: Option<String>,
    idempotency_key: Option<String>,
    request_hash: Option<Vec<u8>>,
    leaf_index: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = postings, treat_none_as_default_value = false)]
struct PostingRow {
    entry_seq: i64,
    leg: i32,
    account_id: i64,
    amount_minor: i64,
    balance_after_minor: i64,
}

impl EntryRow {
    fn of(e: &Entry) -> EntryRow {
        let r = &e.references;
        EntryRow {
            seq: e.seq,
            kind: e.kind.as_str().to_owned(),
            time_us: e.time_us,
            currency: e.currency.code().to_owned(),
            amount_minor: e.amount_minor,
            fee_minor: e.fee_minor,
            account_id: e.account_id.map(|a| a.0),
            counterparty_id: e.counterparty_id.map(|a| a.0),
            related_seq: e.related_seq,
            expires_at_us: e.expires_at_us,
            terminal_id: r.terminal_id.clone(),
            card_id: r.card_id,
            card_read_counter: r.card_read_counter,
            merchant_reference: r.merchant_reference.clone(),
            memo: r.memo.clone(),
            idempotency_key: e.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            request_hash: e.request_hash.map(|h| h.to_vec()),
            leaf_index: e.audit.map(|a| a.leaf_index),
        }
    }

    fn into_entry(self, postings: Vec<Posting>, leaf_hash: Option<[u8; 32]>) -> Result<Entry, LedgerError> {
        let request_hash = match self.request_hash {
            Some(h) => Some(<[u8; 32]>::try_from(h.as_slice()).map_err(|_| corrupt("request hash", "?"))?),
            None => None,
        };
        let idempotency_key = match self.idempotency_key {
            Some(k) => Some(IdempotencyKey::parse(&k).map_err(|_| corrupt("idempotency key", &k))?),
            None => None,
        };
        Ok(Entry {
            seq: self.seq,
            kind: EntryKind::parse(&self.kind).ok_or_else(|| corrupt("entry kind", &self.kind))?,
            time_us: self.time_us,
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("currency", &self.currency))?,
            amount_minor: self.amount_minor,
            fee_minor: self.fee_minor,
            account_id: self.account_id.map(AccountId),
            counterparty_id: self.counterparty_id.map(AccountId),
            related_seq: self.related_seq,
            expires_at_us: self.expires_at_us,
            references: References {
                terminal_id: self.terminal_id,
                card_id: self.card_id,
                card_read_counter: self.card_read_counter,
                merchant_reference: self.merchant_reference,
                memo: self.memo,
            },
            idempotency_key,
            request_hash,
            postings,
            audit: self.leaf_index.zip(leaf_hash).map(|(leaf_index, leaf_hash)| AuditRef { leaf_index, leaf_hash }),
        })
    }
}

/// Entries and postings.
impl Db {
    /// Entries with their postings, in sequence order.
    pub fn entries_by_seq(&mut self, seqs: &[i64]) -> Result<Vec<Entry>, LedgerError> {
        let rows: Vec<EntryRow> = on_db!(self, |c| journal_entries::table
            .filter(in_list!(journal_entries::seq, seqs))
            .order(journal_entries::seq)
            .select(EntryRow::as_select())
            .load(c))
        .map_err(storage)?;
        self.with_postings(rows)
    }

    /// Entries written with these idempotency keys.
    pub fn entries_by_key(&mut self, keys: &[&str]) -> Result<Vec<Entry>, LedgerError> {
        let rows: Vec<EntryRow> = on_db!(self, |c| journal_entries::table
            .filter(in_list!(journal_entries::idempotency_key, keys))
            .select(EntryRow::as_select())
            .load(c))
        .map_err(storage)?;
        self.with_postings(rows)
    }

    /// Entries with `from <= seq`, at most `limit`, in sequence order.
    pub fn entries_from(&mut self, from_seq: i64, limit: i64) -> Result<Vec<Entry>, LedgerError> {
        let rows: Vec<EntryRow> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::seq.ge(from_seq))
            .order(journal_entries::seq)
            .limit(limit)
            .select(EntryRow::as_select())
            .load(c))
        .map_err(storage)?;
        self.with_postings(rows)
    }

    fn with_postings(&mut self, rows: Vec<EntryRow>) -> Result<Vec<Entry>, LedgerError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let posting_rows: Vec<(PostingRow, String)> = on_db!(self, |c| postings::table
            .inner_join(accounts::table)
            .filter(in_list!(postings::entry_seq, &seqs))
            .order((postings::entry_seq, postings::leg))
            .select((PostingRow::as_select(), accounts::currency))
            .load(c))
        .map_err(storage)?;
        let mut by_seq: HashMap<i64, Vec<Posting>> = HashMap::new();
        for (p, currency) in posting_rows {
            by_seq.entry(p.entry_seq).or_default().push(Posting {
                account_id: AccountId(p.account_id),
                currency: Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?,
                amount_minor: p.amount_minor,
                balance_after_minor: p.balance_after_minor,
            });
        }
        let leaf_indexes: Vec<i64> = rows.iter().filter_map(|r| r.leaf_index).collect();
        let hashes = self.leaf_hashes(&leaf_indexes)?;
        rows.into_iter()
            .map(|r| {
                let postings = by_seq.remove(&r.seq).unwrap_or_default();
                let hash = r.leaf_index.and_then(|i| hashes.get(&i).copied());
                r.into_entry(postings, hash)
            })
            .collect()
    }

    /// Entries of `kinds` that refer to one of `seqs`: `(related_seq, amount_minor)`.
    pub(super) fn related(&mut self, seqs: &[i64], kinds: &[&str]) -> Result<Vec<(i64, i64)>, LedgerError> {
        let rows: Vec<(Option<i64>, i64)> = on_db!(self, |c| journal_entries::table
            .filter(in_list!(journal_entries::related_seq, seqs))
            .filter(in_list!(journal_entries::kind, kinds))
            .select((journal_entries::related_seq, journal_entries::amount_minor))
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().filter_map(|(s, a)| s.map(|s| (s, a))).collect())
    }

    /// The holds among `seqs`, and whether each was captured or voided since.
    pub fn holds(&mut self, seqs: &[i64]) -> Result<HashMap<i64, HoldState>, LedgerError> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let closed: HashSet<i64> = self.related(seqs, &["capture", "void"])?.into_iter().map(|(s, _)| s).collect();
        let mut out = HashMap::new();
        for e in self.entries_by_seq(seqs)?.into_iter().filter(|e| e.kind == EntryKind::Hold) {
            let (Some(wallet), Some(merchant), Some(expires_at_us), Some(holds)) =
                (e.account_id, e.counterparty_id, e.expires_at_us, e.postings.get(1))
            else {
                return Err(corrupt("hold entry", &e.seq.to_string()));
            };
            out.insert(
                e.seq,
                HoldState {
                    wallet,
                    merchant,
                    holds_account: holds.account_id,
                    currency: e.currency,
                    amount_minor: e.amount_minor,
                    expires_at_us,
                    closed: closed.contains(&e.seq),
                },
            );
        }
        Ok(out)
    }

    /// The payments among `seqs`, with how much of each was refunded.
    pub fn payments(&mut self, seqs: &[i64]) -> Result<HashMap<i64, PaymentState>, LedgerError> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let mut refunded: HashMap<i64, i64> = HashMap::new();
        for (seq, amount) in self.related(seqs, &["refund"])? {
            *refunded.entry(seq).or_default() += amount;
        }
        let shortfalls = self.payment_shortfalls(seqs)?;
        let mut out = HashMap::new();
        // A capture is the merchant's payment of a hold, refunded like a payment.
        for e in
            self.entries_by_seq(seqs)?.into_iter().filter(|e| matches!(e.kind, EntryKind::Payment | EntryKind::Capture))
        {
            let (Some(wallet), Some(merchant)) = (e.account_id, e.counterparty_id) else {
                return Err(corrupt("payment entry", &e.seq.to_string()));
            };
            // The fee leg, when there is one: the credit of the fee to an account that is
            // neither the wallet nor the merchant (zero legs are not posted, and an offline
            // payment has a shortfall leg, so it is found by role, not by position).
            let fee_account = e
                .postings
                .iter()
                .find(|p| {
                    p.amount_minor > 0
                        && p.amount_minor == e.fee_minor
                        && p.account_id != merchant
                        && p.account_id != wallet
                })
                .map(|p| p.account_id);
            out.insert(
                e.seq,
                PaymentState {
                    wallet,
                    merchant,
                    fee_account: fee_account.unwrap_or(merchant),
                    currency: e.currency,
                    amount_minor: e.amount_minor,
                    fee_minor: e.fee_minor,
                    refunded_minor: refunded.get(&e.seq).copied().unwrap_or(0),
                    shortfall_outstanding: shortfalls.get(&e.seq).copied().unwrap_or(0).max(0),
                },
            );
        }
        Ok(out)
    }

    /// Writes entries and their postings.
    /// A posting of no entry, when the journal holds the gapless entries `1..=last_seq`: one
    /// whose entry number lies outside that range (`(entry_seq, leg, account_id)`). The
    /// schema does not forbid one (no foreign key on this hot path; see migration 000009).
    pub fn posting_of_no_entry(&mut self, last_seq: i64) -> Result<Option<(i64, i32, i64)>, LedgerError> {
        on_db!(self, |c| postings::table
            .filter(postings::entry_seq.gt(last_seq).or(postings::entry_seq.lt(1)))
            .select((postings::entry_seq, postings::leg, postings::account_id))
            .first(c)
            .optional())
        .map_err(storage)
    }

    pub fn insert_entries(&mut self, entries: &[Entry]) -> Result<(), LedgerError> {
        let entry_rows: Vec<EntryRow> = entries.iter().map(EntryRow::of).collect();
        let posting_rows: Vec<PostingRow> = entries
            .iter()
            .flat_map(|e| {
                e.postings.iter().enumerate().map(|(leg, p)| PostingRow {
                    entry_seq: e.seq,
                    leg: leg as i32,
                    account_id: p.account_id.0,
                    amount_minor: p.amount_minor,
                    balance_after_minor: p.balance_after_minor,
                })
            })
            .collect();
        match self {
            // SQLite runs in-process: multi-row statements of fixed sizes, each prepared once.
            Db::Sqlite(c) => {
                sqlite_insert_chunked!(c, journal_entries::table, entry_rows);
                sqlite_insert_chunked!(c, postings::table, posting_rows);
            }
            // PostgreSQL is a round trip away: binary COPY, one per table and batch.
            Db::Pg(c) => {
                diesel::copy_from(journal_entries::table).from_insertable(&entry_rows).execute(c).map_err(storage)?;
                diesel::copy_from(postings::table).from_insertable(&posting_rows).execute(c).map_err(storage)?;
            }
        }
        Ok(())
    }
}
