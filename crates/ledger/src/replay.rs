//! The replay of the books from the audit log's leaves, written once for both verifiers:
//! `kartu audit verify` on a database (`verify`) and `kartu audit verify --url` on a live
//! server (through its API). A [`Replayer`] is fed the decoded leaves in log order and
//! checks what every log obeys — entries numbered without a gap, events too, time never
//! going back, at least two postings that sum to zero per currency, every account's
//! balance chain — and, at the end, that the balances of each currency sum to zero.
//!
//! Given the accounts table ([`Replayer::with_accounts`]) it checks each posting against
//! its account too (it exists, its currency, never below zero when it may not be) and
//! follows what each card owes after offline shortfalls. Without it (a client sees only the
//! leaves), an account keeps the currency of its first posting.
//!
//! Pure: no I/O. A refusal is a sentence; the verifier names the entry and the leaf.

use std::collections::HashMap;

use crate::domain::{Account, AccountId, AccountKind, Entry, EntryKind};
use crate::money::Currency;

/// The books replayed so far.
#[derive(Debug, Default)]
pub struct Replayer {
    /// The accounts table, when the verifier has one.
    accounts: Option<HashMap<AccountId, Account>>,
    /// Each account's currency and balance after the last entry replayed.
    balances: HashMap<AccountId, (Currency, i64)>,
    /// What each card wallet owes (only with the accounts table).
    debts: HashMap<AccountId, i64>,
    entries: i64,
    events: i64,
    last_time_us: Option<i64>,
}

impl Replayer {
    /// A replay from the first leaf, knowing only what the leaves say.
    pub fn new() -> Replayer {
        Replayer::default()
    }

    /// A replay from the first leaf that checks each posting against the accounts table.
    pub fn with_accounts(accounts: HashMap<AccountId, Account>) -> Replayer {
        Replayer { accounts: Some(accounts), ..Replayer::default() }
    }

    /// The sequence number the next entry must have.
    pub fn next_seq(&self) -> i64 {
        self.entries + 1
    }

    /// The id the next event must have.
    pub fn next_event_id(&self) -> i64 {
        self.events + 1
    }

    /// Entries replayed.
    pub fn entries(&self) -> i64 {
        self.entries
    }

    /// Events replayed.
    pub fn events(&self) -> i64 {
        self.events
    }

    /// Accounts with postings.
    pub fn accounts(&self) -> usize {
        self.balances.len()
    }

    /// What each card wallet owes by the entries (empty without the accounts table).
    pub fn debts(&self) -> &HashMap<AccountId, i64> {
        &self.debts
    }

    /// Refuses an entry leaf that is not the next entry.
    pub fn expect_entry(&self, seq: i64) -> Result<(), String> {
        if seq != self.next_seq() {
            return Err(format!("expected entry {} here, the leaf holds entry {seq}", self.next_seq()));
        }
        Ok(())
    }

    /// Replays the next entry: its number, its time, its postings and the balance chain
    /// of every account it posts to. Nothing is kept of a refused entry's postings.
    pub fn entry(&mut self, e: &Entry) -> Result<(), String> {
        self.expect_entry(e.seq)?;
        self.time(e.time_us)?;
        // A replacement of a card that held nothing moves nothing, but is still recorded:
        // from then on the old card's credits go to the new one.
        let empty_replacement = e.kind == EntryKind::CardReplacement && e.amount_minor == 0;
        if e.postings.len() < 2 && !(empty_replacement && e.postings.is_empty()) {
            return Err("fewer than two postings".into());
        }
        self.debts_of(e);
        let mut sums: HashMap<Currency, i128> = HashMap::new();
        for p in &e.postings {
            *sums.entry(p.currency).or_default() += i128::from(p.amount_minor);
            let expected = self.posting(p.account_id, p.currency, p.amount_minor, p.balance_after_minor)?;
            self.balances.insert(p.account_id, (p.currency, expected));
        }
        if let Some((c, s)) = sums.iter().find(|(_, s)| **s != 0) {
            return Err(format!("postings in {c} sum to {s}, not zero"));
        }
        self.entries += 1;
        Ok(())
    }

    /// Checks one posting against the account and its balance chain; the balance after it.
    fn posting(&self, account: AccountId, currency: Currency, amount: i64, after: i64) -> Result<i64, String> {
        let known = match &self.accounts {
            Some(accounts) => {
                let a = accounts.get(&account).ok_or(format!("account {account} does not exist"))?;
                Some(a)
            }
            None => None,
        };
        let (held, before) = match (known, self.balances.get(&account)) {
            (Some(a), b) => (a.currency, b.map_or(0, |b| b.1)),
            (None, Some((c, b))) => (*c, *b),
            (None, None) => (currency, 0),
        };
        if held != currency {
            return Err(format!("account {account} is in {held}, the posting in {currency}"));
        }
        let expected = before.checked_add(amount).ok_or("balance overflows")?;
        if after != expected {
            return Err(format!(
                "account {account}: balance after {after} but the previous balance {before} plus {amount} is {expected}"
            ));
        }
        if known.is_some_and(|a| a.never_negative) && expected < 0 {
            return Err(format!("account {account} may not go below zero but does ({expected})"));
        }
        Ok(expected)
    }

    /// Replays the next event: its id and its time.
    pub fn event(&mut self, id: i64, time_us: i64) -> Result<(), String> {
        if id != self.next_event_id() {
            return Err(format!("expected event {} here, the leaf holds event {id}", self.next_event_id()));
        }
        self.time(time_us)?;
        self.events += 1;
        Ok(())
    }

    fn time(&mut self, time_us: i64) -> Result<(), String> {
        if self.last_time_us.is_some_and(|last| time_us < last) {
            return Err("time goes backwards".into());
        }
        self.last_time_us = Some(time_us);
        Ok(())
    }

    /// Follows what cards owe: each entry that posts to an offline-risk account changes its
    /// card wallet's debt by the opposite amount; a replacement moves the old wallet's debt
    /// to the new one.
    fn debts_of(&mut self, e: &Entry) {
        let Some(accounts) = &self.accounts else { return };
        let is_wallet = |a: &AccountId| accounts.get(a).is_some_and(|a| a.kind == AccountKind::CardWallet);
        let wallet = e.account_id.filter(is_wallet).or_else(|| e.postings.iter().map(|p| p.account_id).find(is_wallet));
        let Some(wallet) = wallet else { return };
        if e.kind == EntryKind::CardReplacement {
            let owed = self.debts.remove(&wallet).unwrap_or(0);
            if let (Some(new), true) = (e.counterparty_id, owed != 0) {
                *self.debts.entry(new).or_default() += owed;
            }
            return;
        }
        for p in &e.postings {
            if accounts.get(&p.account_id).is_some_and(|a| a.kind == AccountKind::OfflineRisk) {
                *self.debts.entry(wallet).or_default() -= p.amount_minor;
            }
        }
    }

    /// At the end: the balances of each currency sum to zero.
    pub fn totals_zero(&self) -> Result<(), String> {
        let mut totals: HashMap<Currency, i128> = HashMap::new();
        for (currency, balance) in self.balances.values() {
            *totals.entry(*currency).or_default() += i128::from(*balance);
        }
        match totals.iter().find(|(_, t)| **t != 0) {
            Some((c, t)) => Err(format!("the balances in {c} sum to {t}, not zero")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Posting, References};

    /// Entry `seq` at `time_us` with these postings: (account, amount, balance after).
    fn entry(seq: i64, time_us: i64, postings: &[(i64, i64, i64)]) -> Entry {
        Entry {
            seq,
            kind: EntryKind::Topup,
            time_us,
            currency: Currency::IDR,
            amount_minor: postings.first().map_or(0, |p| p.1.abs()),
            fee_minor: 0,
            account_id: None,
            counterparty_id: None,
            related_seq: None,
            expires_at_us: None,
            references: References::default(),
            idempotency_key: None,
            request_hash: None,
            postings: postings
                .iter()
                .map(|&(account, amount, after)| Posting {
                    account_id: AccountId(account),
                    currency: Currency::IDR,
                    amount_minor: amount,
                    balance_after_minor: after,
                })
                .collect(),
            audit: None,
        }
    }

    /// Replays `entries` on a fresh replayer: the first refusal, or what the totals say.
    fn check(entries: &[Entry], expect: Result<(), &str>) {
        let mut replay = Replayer::new();
        let got = entries.iter().try_for_each(|e| replay.entry(e)).and_then(|()| replay.totals_zero());
        match (&got, expect) {
            (Ok(()), Ok(())) => {}
            (Err(reason), Err(words)) if reason.contains(words) => {}
            _ => panic!("expected {expect:?}, got {got:?}"),
        }
    }

    #[test]
    fn the_replay_rule() {
        let first = entry(1, 10, &[(1, -500, -500), (2, 500, 500)]);
        check(std::slice::from_ref(&first), Ok(()));
        check(&[first.clone(), entry(2, 20, &[(1, -100, -600), (2, 100, 600)])], Ok(()));
        check(&[entry(2, 10, &[(1, -1, -1), (2, 1, 1)])], Err("expected entry 1 here, the leaf holds entry 2"));
        check(&[first.clone(), entry(2, 5, &[(1, -1, -501), (2, 1, 501)])], Err("time goes backwards"));
        check(&[entry(1, 10, &[(1, -500, -500)])], Err("fewer than two postings"));
        check(&[entry(1, 10, &[(1, -500, -500), (2, 400, 400)])], Err("sum to -100, not zero"));
        check(
            &[first.clone(), entry(2, 20, &[(1, -100, -600), (2, 100, 700)])],
            Err("account 2: balance after 700 but the previous balance 500 plus 100 is 600"),
        );
    }

    #[test]
    fn events_are_numbered_and_in_time() {
        let mut replay = Replayer::new();
        assert_eq!(replay.event(1, 10), Ok(()));
        assert_eq!(replay.event(3, 20), Err("expected event 2 here, the leaf holds event 3".into()));
        assert_eq!(replay.event(2, 5), Err("time goes backwards".into()));
        assert_eq!((replay.events(), replay.next_event_id()), (1, 2));
    }
}
