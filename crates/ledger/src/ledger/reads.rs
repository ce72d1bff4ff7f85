//! The read side: a pool of read connections, and every read of accounts, balances,
//! statements, entries, events and the registry.

use super::{Ledger, PAGE_MAX, READ_CONNECTIONS_MAX};
use crate::domain::{
    Account, AccountId, AccountKind, CardReplay, Entry, EventRecord, NewAccount, Rejection, Statement, TrialBalanceLine,
};
use crate::money::Currency;
use crate::registry::Registry;
use crate::store::{Db, EventFilter};
use crate::LedgerError;

impl Ledger {
    /// Creates an account. Card wallets get the configured maximum balance unless one is given.
    pub fn create_account(&self, new: NewAccount) -> Result<Account, LedgerError> {
        let new = self.account_defaults(new)?;
        let now = (self.inner.config.clock)();
        self.read(|db| db.create_account(&new, now))
    }

    /// Creates many accounts in one transaction: all or none (bulk card issuance).
    pub fn create_accounts(&self, new: Vec<NewAccount>) -> Result<Vec<Account>, LedgerError> {
        let new = new.into_iter().map(|n| self.account_defaults(n)).collect::<Result<Vec<_>, _>>()?;
        let now = (self.inner.config.clock)();
        self.read(|db| db.create_accounts(&new, now))
    }

    fn account_defaults(&self, mut new: NewAccount) -> Result<NewAccount, LedgerError> {
        if new.kind.is_system() {
            return Err(LedgerError::Rejected(Rejection::InvalidKind));
        }
        if new.kind == AccountKind::CardWallet && new.balance_max_minor.is_none() {
            new.balance_max_minor = Some(self.inner.config.wallet_balance_max_minor);
        }
        Ok(new)
    }

    /// The system account of `kind` (city bank, fee revenue, suspense, holds, offline risk)
    /// in `currency`, created on first use.
    pub fn system_account(&self, kind: AccountKind, currency: Currency) -> Result<Account, LedgerError> {
        if !kind.is_system() {
            return Err(LedgerError::Rejected(Rejection::InvalidKind));
        }
        let now = (self.inner.config.clock)();
        self.read(|db| db.system_account(kind, currency, now))
    }

    /// Runs `f` on a pooled connection.
    pub(super) fn read<T>(&self, f: impl FnOnce(&mut Db) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        let pooled = self.inner.reads.lock().map_err(|_| LedgerError::Stopped)?.pop();
        let mut db = match pooled {
            Some(db) => db,
            None => Db::open(&self.inner.url)?,
        };
        let result = f(&mut db);
        // A connection that failed may be broken: only healthy ones go back.
        if result.is_ok() {
            if let Ok(mut pool) = self.inner.reads.lock() {
                if pool.len() < READ_CONNECTIONS_MAX {
                    pool.push(db);
                }
            }
        }
        result
    }

    /// An account, if it exists.
    pub fn account(&self, id: AccountId) -> Result<Option<Account>, LedgerError> {
        self.read(|db| Ok(db.accounts(&[id])?.pop()))
    }

    /// The balance now (as of the last committed entry).
    pub fn balance(&self, id: AccountId) -> Result<i64, LedgerError> {
        self.read(|db| Ok(db.balances(&[id])?.get(&id).copied().unwrap_or(0)))
    }

    /// The balance as it was at `time_us` (after every entry recorded at or before it).
    pub fn balance_at(&self, id: AccountId, time_us: i64) -> Result<i64, LedgerError> {
        self.read(|db| db.balance_at(id, time_us))
    }

    /// Postings of an account recorded in `[from_us, to_us)`, with the balances before and
    /// after the period. Pages of at most `limit` (≤ [`PAGE_MAX`]) lines, continuing after
    /// `after_seq`.
    pub fn statement(
        &self,
        id: AccountId,
        from_us: i64,
        to_us: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<Statement, LedgerError> {
        let limit = limit.clamp(1, PAGE_MAX);
        self.read(|db| {
            let opening_minor = db.balance_at(id, from_us.saturating_sub(1))?;
            let closing_minor = db.balance_at(id, to_us.saturating_sub(1))?;
            let lines = db.statement_lines(id, from_us, to_us, after_seq, limit)?;
            Ok(Statement { account_id: id, from_us, to_us, opening_minor, closing_minor, lines })
        })
    }

    /// Entries that post to an account, oldest first after `after_seq`, or newest first
    /// before `after_seq` (0: from the newest).
    pub fn account_entries(
        &self,
        id: AccountId,
        after_seq: i64,
        limit: i64,
        newest_first: bool,
    ) -> Result<Vec<Entry>, LedgerError> {
        self.read(|db| db.account_entries(id, after_seq, limit.clamp(1, PAGE_MAX), newest_first))
    }

    /// The last entry recorded at or before `time_us` (0 when none).
    pub fn seq_at(&self, time_us: i64) -> Result<i64, LedgerError> {
        self.read(|db| db.seq_at(time_us))
    }

    /// Per currency: the sum of every account's balance (zero when the books balance), and
    /// the totals of all debits and credits ever posted.
    pub fn trial_balance(&self) -> Result<Vec<TrialBalanceLine>, LedgerError> {
        self.read(|db| db.trial_balance())
    }

    /// One entry with its postings.
    pub fn entry(&self, seq: i64) -> Result<Option<Entry>, LedgerError> {
        self.read(|db| Ok(db.entries_by_seq(&[seq])?.pop()))
    }

    /// Entries from `from_seq` on, at most `limit` (≤ [`PAGE_MAX`]).
    pub fn entries(&self, from_seq: i64, limit: i64) -> Result<Vec<Entry>, LedgerError> {
        self.read(|db| db.entries_from(from_seq, limit.clamp(1, PAGE_MAX)))
    }

    /// The number of entries written (= the last sequence number).
    pub fn last_seq(&self) -> Result<i64, LedgerError> {
        self.read(|db| db.last_seq())
    }

    /// The entry written with this idempotency key, if any.
    pub fn entry_by_key(&self, key: &str) -> Result<Option<Entry>, LedgerError> {
        self.read(|db| Ok(db.entries_by_key(&[key])?.pop()))
    }

    /// Runs `f` on the registry (holders, cards, merchants, credentials...), each statement
    /// on its own (reads; single-row writes).
    pub fn registry<T>(&self, f: impl FnOnce(&mut Registry<'_>) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        self.read(|db| f(&mut Registry(db)))
    }

    /// Runs `f` on the registry in one write transaction: all of it or nothing.
    pub fn registry_transaction<T>(
        &self,
        f: impl FnOnce(&mut Registry<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.read(|db| db.transaction(|db| f(&mut Registry(db))))
    }

    /// The event written with this idempotency key, if any.
    pub fn event_by_key(&self, key: &str) -> Result<Option<EventRecord>, LedgerError> {
        self.read(|db| Ok(db.events_by_key(&[key])?.pop()))
    }

    /// The last read counter accepted for a card, if it was ever tapped.
    pub fn card_last_counter(&self, card_id: i64) -> Result<Option<i64>, LedgerError> {
        self.read(|db| db.card_last_counter(card_id))
    }

    /// What a card wallet owes after offline shortfalls (0: nothing).
    pub fn wallet_debt(&self, wallet: AccountId) -> Result<i64, LedgerError> {
        self.read(|db| db.wallet_debt(wallet))
    }

    /// The wallet that took over a replaced card's wallet, if any.
    pub fn wallet_successor(&self, wallet: AccountId) -> Result<Option<AccountId>, LedgerError> {
        self.read(|db| db.successor(wallet))
    }

    /// A card's last read counter as of `time_us` (entries and events recorded by then).
    pub fn card_counter_at(&self, card_id: i64, time_us: i64) -> Result<Option<i64>, LedgerError> {
        self.read(|db| db.card_counter_at(card_id, time_us))
    }

    /// Taps of a card refused as replays (suspected clones), oldest first.
    pub fn card_replays(&self, card_id: i64, limit: i64) -> Result<Vec<CardReplay>, LedgerError> {
        self.read(|db| db.card_replays(card_id, limit.clamp(1, PAGE_MAX)))
    }

    /// The largest offline-risk exposure of one merchant now: the sum of its offline
    /// shortfalls within [`crate::domain::OFFLINE_RISK_WINDOW_US`], and whose it is.
    pub fn offline_risk_exposure(&self) -> Result<Option<(AccountId, i64)>, LedgerError> {
        let since = self.now_us() - crate::domain::OFFLINE_RISK_WINDOW_US;
        self.read(|db| db.largest_merchant_exposure(since))
    }

    /// Events with an id above `after_id` that match `filter`, oldest first.
    pub fn events(&self, filter: &EventFilter, after_id: i64, limit: i64) -> Result<Vec<EventRecord>, LedgerError> {
        self.read(|db| db.events(filter, after_id, limit.clamp(1, PAGE_MAX)))
    }
}

/// Webhooks' storage, for the API's routes and its sender.
impl Ledger {
    /// Subscriptions by id (revoked ones too when asked).
    pub fn webhook_subscriptions(&self, revoked: bool) -> Result<Vec<crate::webhooks::Subscription>, LedgerError> {
        self.read(|db| db.webhook_subscriptions(revoked))
    }

    /// The subscription `id` (revoked or not).
    pub fn webhook_subscription(&self, id: i64) -> Result<Option<crate::webhooks::Subscription>, LedgerError> {
        self.read(|db| db.webhook_subscription(id))
    }

    /// Adds a subscription for the operator action `event_id` (a retry finds it).
    pub fn add_webhook_subscription(
        &self,
        url: &str,
        secret: &str,
        account_id: Option<AccountId>,
        kinds: &str,
        event_id: i64,
    ) -> Result<crate::webhooks::Subscription, LedgerError> {
        let now = self.now_us();
        self.read(|db| db.insert_webhook_subscription(url, secret, account_id.map(|a| a.0), kinds, now, event_id))
    }

    /// Revokes a subscription; false when there was none to revoke.
    pub fn revoke_webhook_subscription(&self, id: i64) -> Result<bool, LedgerError> {
        let now = self.now_us();
        self.read(|db| db.transaction(|db| db.revoke_webhook_subscription(id, now)))
    }

    /// Claims up to `limit` due deliveries for `lease`.
    pub fn claim_due_webhooks(
        &self,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<crate::webhooks::Due>, LedgerError> {
        let now = self.now_us();
        self.read(|db| db.claim_due_webhooks(now, lease.as_micros() as i64, limit))
    }

    /// Logs an attempt and moves its delivery on.
    pub fn record_webhook_attempt(
        &self,
        due: &crate::webhooks::Due,
        outcome: &crate::webhooks::Outcome,
    ) -> Result<(), LedgerError> {
        let now = self.now_us();
        self.read(|db| db.transaction(|db| db.record_attempt(due, now, outcome)))
    }

    /// A subscription's delivery log: attempts with an id above `after`.
    pub fn webhook_attempts(
        &self,
        subscription: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::webhooks::Attempt>, LedgerError> {
        self.read(|db| db.webhook_attempts(subscription, after, limit.clamp(1, PAGE_MAX)))
    }
}
