//! The ledger's rules as a pure state machine: given the state a batch of requests touches
//! (loaded by the store), apply the requests in order and produce the entries to write.
//! No I/O here, so the same rules run on every backend and the property test's model can
//! be compared with them.

use std::collections::{HashMap, HashSet};

use crate::domain::{
    Account, AccountId, AccountKind, CardReplay, Command, Entry, EntryKind, Event, EventRecord, IdempotencyKey, Op,
    Posted, Posting, Recorded, Rejection, Request, TAP_WINDOW,
};
use crate::money::Currency;

/// An account and its current balance.
#[derive(Debug, Clone)]
pub(crate) struct AccountState {
    pub account: Account,
    pub balance_minor: i64,
}

/// A hold as recorded, and whether it was captured or voided since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HoldState {
    pub wallet: AccountId,
    pub merchant: AccountId,
    pub holds_account: AccountId,
    pub currency: Currency,
    pub amount_minor: i64,
    pub expires_at_us: i64,
    pub closed: bool,
}

/// A payment as recorded, and how much of it was refunded since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaymentState {
    pub wallet: AccountId,
    pub merchant: AccountId,
    pub fee_account: AccountId,
    pub currency: Currency,
    pub amount_minor: i64,
    pub fee_minor: i64,
    pub refunded_minor: i64,
}

/// What a batch needs loaded before it can be applied.
#[derive(Debug, Default)]
pub(crate) struct Needs {
    pub accounts: HashSet<AccountId>,
    pub holds: HashSet<i64>,
    pub payments: HashSet<i64>,
    pub keys: HashSet<IdempotencyKey>,
    /// Cards tapped: their last counters are needed.
    pub cards: HashSet<i64>,
    /// Queues an event takes a number in.
    pub queues: HashSet<String>,
    /// Whether the batch has events (their next id is needed).
    pub events: bool,
    /// `(card, counter)` of offline payments: they must not have been used by any entry.
    pub offline_taps: HashSet<(i64, i64)>,
    /// `(card, counter)` of every tap: those at or below their card's last counter are
    /// looked up as used or not.
    pub taps: HashSet<(i64, i64)>,
}

impl Needs {
    pub fn of(ops: &[Op]) -> Needs {
        let mut n = Needs::default();
        for op in ops {
            let r = match op {
                Op::Entry(r) => r,
                Op::Event(e) => {
                    n.events = true;
                    n.keys.extend(e.idempotency_key.clone());
                    n.cards.extend(e.card_id.filter(|_| e.card_read_counter.is_some()));
                    n.taps.extend(e.card_id.zip(e.card_read_counter));
                    n.queues.extend(e.queue_key.clone());
                    continue;
                }
            };
            if let Some(k) = &r.idempotency_key {
                n.keys.insert(k.clone());
            }
            if let (Some(card), Some(ctr)) = (r.references.card_id, r.references.card_read_counter) {
                n.cards.insert(card);
                n.taps.insert((card, ctr));
                if matches!(r.command, Command::OfflinePayment { .. }) {
                    n.offline_taps.insert((card, ctr));
                }
            }
            match &r.command {
                Command::Transfer { legs, .. } => n.accounts.extend(legs.iter().map(|l| l.account)),
                Command::Payment { wallet, merchant, fee_account, .. } => {
                    n.accounts.extend([*wallet, *merchant, *fee_account]);
                }
                Command::OfflinePayment { wallet, merchant, fee_account, risk_account, .. } => {
                    n.accounts.extend([*wallet, *merchant, *fee_account, *risk_account]);
                }
                Command::Refund { payment_seq, .. } => {
                    n.payments.insert(*payment_seq);
                }
                Command::Hold { wallet, merchant, .. } => n.accounts.extend([*wallet, *merchant]),
                Command::Capture { hold_seq, fee_account, .. } => {
                    n.holds.insert(*hold_seq);
                    n.accounts.insert(*fee_account);
                }
                Command::Void { hold_seq } => {
                    n.holds.insert(*hold_seq);
                }
            }
        }
        n
    }
}

/// The state a batch reads and changes.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub accounts: HashMap<AccountId, AccountState>,
    pub holds: HashMap<i64, HoldState>,
    pub payments: HashMap<i64, PaymentState>,
    /// Entries already written with these keys.
    pub keyed: HashMap<IdempotencyKey, Entry>,
    /// Events already written with these keys.
    pub keyed_events: HashMap<IdempotencyKey, EventRecord>,
    /// The last accepted read counter of each tapped card that has one.
    pub last_counters: HashMap<i64, i64>,
    /// The highest number taken so far in each queue of the batch.
    pub queue_max: HashMap<String, i64>,
    /// The next event id.
    pub next_event_id: i64,
    /// Offline taps already used by an entry.
    pub used_taps: HashSet<(i64, i64)>,
    /// The holds account of each currency.
    pub holds_accounts: HashMap<Currency, AccountId>,
}

/// Applies requests one after another, numbering new entries from `next_seq`.
#[derive(Debug)]
pub(crate) struct Machine<'s> {
    state: &'s mut State,
    next_seq: i64,
    time_us: i64,
    /// Entries made by this batch, in sequence order.
    pub written: Vec<Entry>,
    /// Events made by this batch, in id order.
    pub events: Vec<EventRecord>,
    /// The order of the new leaves: `true` for the next entry, `false` for the next event.
    pub leaf_order: Vec<bool>,
    /// Taps refused as replays (recorded even though nothing else is written for them).
    pub replays: Vec<CardReplay>,
    /// Cards whose last counter moved, and where to.
    pub counters: HashMap<i64, i64>,
}

impl<'s> Machine<'s> {
    pub fn new(state: &'s mut State, next_seq: i64, time_us: i64) -> Machine<'s> {
        Machine {
            state,
            next_seq,
            time_us,
            written: Vec::new(),
            events: Vec::new(),
            leaf_order: Vec::new(),
            replays: Vec::new(),
            counters: HashMap::new(),
        }
    }

    /// Checks a tap's counter against the card's: above the last one it is fresh; within
    /// [`TAP_WINDOW`] below it, fresh if no entry or event has used it (taps of one card
    /// that race to the server arrive out of order); further below, or used, it is a replay,
    /// remembered for the operator.
    fn check_tap(&mut self, tap: Option<(i64, i64)>, source: Option<&str>) -> Result<(), Rejection> {
        let Some((card, counter)) = tap else { return Ok(()) };
        match self.state.last_counters.get(&card) {
            Some(&last)
                if counter <= last
                    && (counter <= last - TAP_WINDOW || self.state.used_taps.contains(&(card, counter))) =>
            {
                self.replays.push(CardReplay {
                    card_id: card,
                    counter,
                    last_counter: last,
                    time_us: self.time_us,
                    source: source.map(str::to_owned),
                });
                Err(Rejection::CardReplay)
            }
            _ => Ok(()),
        }
    }

    fn accept_tap(&mut self, tap: Option<(i64, i64)>) {
        if let Some((card, counter)) = tap {
            // An offline tap may be older than the card's last online one: the counter
            // never moves back.
            let last = self.state.last_counters.get(&card).copied();
            if last.is_none_or(|l| counter > l) {
                self.state.last_counters.insert(card, counter);
                self.counters.insert(card, counter);
            }
            self.state.used_taps.insert((card, counter));
        }
    }

    /// An offline tap is uploaded after the fact, maybe after newer online taps of the same
    /// card: it is checked for single use, not for order.
    fn check_offline_tap(&mut self, tap: Option<(i64, i64)>, source: Option<&str>) -> Result<(), Rejection> {
        let Some((card, counter)) = tap else { return Ok(()) };
        if self.state.used_taps.contains(&(card, counter)) {
            self.replays.push(CardReplay {
                card_id: card,
                counter,
                last_counter: self.state.last_counters.get(&card).copied().unwrap_or(counter),
                time_us: self.time_us,
                source: source.map(str::to_owned),
            });
            return Err(Rejection::CardReplay);
        }
        Ok(())
    }

    /// Applies one write of either kind.
    pub fn apply_op(&mut self, op: &Op) -> Result<crate::domain::Outcome, Rejection> {
        match op {
            Op::Entry(r) => self.apply(r).map(crate::domain::Outcome::Posted),
            Op::Event(e) => self.apply_event(e).map(crate::domain::Outcome::Recorded),
        }
    }

    /// Records one event: its tap must be fresh, it may take a queue number.
    pub fn apply_event(&mut self, event: &Event) -> Result<Recorded, Rejection> {
        event.check_shape()?;
        let fingerprint = event.fingerprint();
        if let Some(key) = &event.idempotency_key {
            if let Some(e) = self.state.keyed_events.get(key) {
                return if e.request_hash == Some(fingerprint) {
                    Ok(Recorded { event: e.clone(), replayed: true })
                } else {
                    Err(Rejection::IdempotencyConflict)
                };
            }
            if self.state.keyed.contains_key(key) {
                return Err(Rejection::IdempotencyConflict);
            }
        }
        let tap = event.card_id.zip(event.card_read_counter);
        self.check_tap(tap, event.scope.as_deref())?;
        let queue_number = match &event.queue_key {
            Some(q) => {
                let n = self.state.queue_max.entry(q.clone()).or_insert(0);
                *n += 1;
                Some(*n)
            }
            None => None,
        };
        self.accept_tap(tap);
        let record = EventRecord {
            id: self.state.next_event_id,
            kind: event.kind.clone(),
            time_us: self.time_us,
            scope: event.scope.clone(),
            card_id: event.card_id,
            card_read_counter: event.card_read_counter,
            queue_key: event.queue_key.clone(),
            queue_number,
            idempotency_key: event.idempotency_key.clone(),
            request_hash: Some(fingerprint),
            payload: event.payload.clone(),
            audit: None,
        };
        self.state.next_event_id += 1;
        if let Some(key) = &event.idempotency_key {
            self.state.keyed_events.insert(key.clone(), record.clone());
        }
        self.events.push(record.clone());
        self.leaf_order.push(false);
        Ok(Recorded { event: record, replayed: false })
    }

    /// Applies one request: either an entry is made (and the state moves on) or nothing
    /// changes and the reason is returned.
    pub fn apply(&mut self, request: &Request) -> Result<Posted, Rejection> {
        request.check_shape()?;
        let fingerprint = request.fingerprint();
        if let Some(key) = &request.idempotency_key {
            if let Some(entry) = self.state.keyed.get(key) {
                return if entry.request_hash == Some(fingerprint) {
                    Ok(Posted { entry: entry.clone(), replayed: true })
                } else {
                    Err(Rejection::IdempotencyConflict)
                };
            }
            if self.state.keyed_events.contains_key(key) {
                return Err(Rejection::IdempotencyConflict);
            }
        }
        let counter = request.references.card_id.zip(request.references.card_read_counter);
        let source = request.references.terminal_id.as_deref();
        if matches!(request.command, Command::OfflinePayment { .. }) {
            self.check_offline_tap(counter, source)?;
        } else {
            self.check_tap(counter, source)?;
        }
        let draft = self.draft(&request.command)?;
        let postings = self.post(&draft.legs, draft.kind)?;
        // Past this point nothing can fail: record the entry and its consequences.
        let entry = Entry {
            seq: self.next_seq,
            kind: draft.kind,
            time_us: self.time_us,
            currency: draft.currency,
            amount_minor: draft.amount_minor,
            fee_minor: draft.fee_minor,
            account_id: draft.account,
            counterparty_id: draft.counterparty,
            related_seq: draft.related_seq,
            expires_at_us: draft.expires_at_us,
            references: request.references.clone(),
            idempotency_key: request.idempotency_key.clone(),
            request_hash: Some(fingerprint),
            postings,
            audit: None,
        };
        self.next_seq += 1;
        self.remember(&entry, &request.command);
        self.accept_tap(counter);
        if let Some(key) = &request.idempotency_key {
            self.state.keyed.insert(key.clone(), entry.clone());
        }
        self.written.push(entry.clone());
        self.leaf_order.push(true);
        Ok(Posted { entry, replayed: false })
    }

    /// Turns a command into legs, checking everything about the referenced objects.
    fn draft(&self, command: &Command) -> Result<Draft, Rejection> {
        match command {
            Command::Transfer { kind, legs } => {
                let first = self.account(legs[0].account)?;
                let mut sums: HashMap<Currency, i64> = HashMap::new();
                for leg in legs {
                    let account = self.account(leg.account)?;
                    let sum = sums.entry(account.currency).or_default();
                    *sum = sum.checked_add(leg.amount_minor).ok_or(Rejection::Overflow)?;
                }
                if sums.values().any(|s| *s != 0) {
                    return Err(Rejection::Unbalanced);
                }
                let amount_minor = legs
                    .iter()
                    .filter(|l| {
                        l.amount_minor > 0 && self.account(l.account).is_ok_and(|a| a.currency == first.currency)
                    })
                    .map(|l| l.amount_minor)
                    .sum();
                Ok(Draft {
                    kind: *kind,
                    currency: first.currency,
                    amount_minor,
                    fee_minor: 0,
                    account: Some(legs[0].account),
                    counterparty: Some(legs[1].account),
                    related_seq: None,
                    expires_at_us: None,
                    legs: legs.iter().map(|l| (l.account, l.amount_minor)).collect(),
                })
            }
            Command::Payment { wallet, merchant, fee_account, amount, fee_minor } => {
                self.expect(*wallet, AccountKind::CardWallet, amount.currency())?;
                self.expect(*merchant, AccountKind::Merchant, amount.currency())?;
                self.expect(*fee_account, AccountKind::FeeRevenue, amount.currency())?;
                let mut legs = vec![(*wallet, -amount.minor()), (*merchant, amount.minor() - fee_minor)];
                if *fee_minor > 0 {
                    legs.push((*fee_account, *fee_minor));
                }
                Ok(Draft::card(
                    EntryKind::Payment,
                    *wallet,
                    *merchant,
                    amount.currency(),
                    amount.minor(),
                    *fee_minor,
                    legs,
                ))
            }
            Command::OfflinePayment { wallet, merchant, fee_account, risk_account, amount, fee_minor } => {
                self.expect(*wallet, AccountKind::CardWallet, amount.currency())?;
                self.expect(*merchant, AccountKind::Merchant, amount.currency())?;
                self.expect(*fee_account, AccountKind::FeeRevenue, amount.currency())?;
                self.expect(*risk_account, AccountKind::OfflineRisk, amount.currency())?;
                let held = self.state.accounts.get(wallet).map_or(0, |a| a.balance_minor).max(0);
                let from_wallet = held.min(amount.minor());
                let legs = vec![
                    (*wallet, -from_wallet),
                    (*risk_account, -(amount.minor() - from_wallet)),
                    (*merchant, amount.minor() - fee_minor),
                    (*fee_account, *fee_minor),
                ];
                Ok(Draft::card(
                    EntryKind::Payment,
                    *wallet,
                    *merchant,
                    amount.currency(),
                    amount.minor(),
                    *fee_minor,
                    legs,
                ))
            }
            Command::Refund { payment_seq, amount } => {
                let p = self.state.payments.get(payment_seq).ok_or(Rejection::PaymentNotFound)?;
                if p.currency != amount.currency() {
                    return Err(Rejection::CurrencyMismatch);
                }
                let refunded_after = p.refunded_minor.checked_add(amount.minor()).ok_or(Rejection::Overflow)?;
                if refunded_after > p.amount_minor {
                    return Err(Rejection::RefundExceedsPayment);
                }
                // The fee comes back in proportion, rounded so that refunding the whole
                // payment returns exactly the whole fee.
                let fee_back = fee_share(p.fee_minor, refunded_after, p.amount_minor)
                    - fee_share(p.fee_minor, p.refunded_minor, p.amount_minor);
                let mut legs = vec![(p.wallet, amount.minor()), (p.merchant, -(amount.minor() - fee_back))];
                if fee_back > 0 {
                    legs.push((p.fee_account, -fee_back));
                }
                let mut d =
                    Draft::card(EntryKind::Refund, p.wallet, p.merchant, p.currency, amount.minor(), fee_back, legs);
                d.related_seq = Some(*payment_seq);
                Ok(d)
            }
            Command::Hold { wallet, merchant, amount, expires_at_us } => {
                self.expect(*wallet, AccountKind::CardWallet, amount.currency())?;
                self.expect(*merchant, AccountKind::Merchant, amount.currency())?;
                let holds = *self.state.holds_accounts.get(&amount.currency()).ok_or(Rejection::AccountNotFound)?;
                let legs = vec![(*wallet, -amount.minor()), (holds, amount.minor())];
                let mut d =
                    Draft::card(EntryKind::Hold, *wallet, *merchant, amount.currency(), amount.minor(), 0, legs);
                d.expires_at_us = Some(*expires_at_us);
                Ok(d)
            }
            Command::Capture { hold_seq, amount, fee_minor, fee_account } => {
                let h = self.open_hold(*hold_seq)?;
                if h.expires_at_us <= self.time_us {
                    return Err(Rejection::HoldExpired);
                }
                if h.currency != amount.currency() {
                    return Err(Rejection::CurrencyMismatch);
                }
                self.expect(*fee_account, AccountKind::FeeRevenue, h.currency)?;
                if amount.minor() > h.amount_minor {
                    return Err(Rejection::CaptureExceedsHold);
                }
                let mut legs = vec![(h.holds_account, -h.amount_minor), (h.merchant, amount.minor() - fee_minor)];
                if *fee_minor > 0 {
                    legs.push((*fee_account, *fee_minor));
                }
                if h.amount_minor > amount.minor() {
                    legs.push((h.wallet, h.amount_minor - amount.minor()));
                }
                let mut d =
                    Draft::card(EntryKind::Capture, h.wallet, h.merchant, h.currency, amount.minor(), *fee_minor, legs);
                d.related_seq = Some(*hold_seq);
                Ok(d)
            }
            Command::Void { hold_seq } => {
                let h = self.open_hold(*hold_seq)?;
                let legs = vec![(h.holds_account, -h.amount_minor), (h.wallet, h.amount_minor)];
                let mut d = Draft::card(EntryKind::Void, h.wallet, h.merchant, h.currency, h.amount_minor, 0, legs);
                d.related_seq = Some(*hold_seq);
                Ok(d)
            }
        }
    }

    fn account(&self, id: AccountId) -> Result<&Account, Rejection> {
        self.state.accounts.get(&id).map(|a| &a.account).ok_or(Rejection::AccountNotFound)
    }

    fn expect(&self, id: AccountId, kind: AccountKind, currency: Currency) -> Result<(), Rejection> {
        let a = self.account(id)?;
        if a.kind != kind {
            Err(Rejection::AccountKindMismatch)
        } else if a.currency != currency {
            Err(Rejection::CurrencyMismatch)
        } else {
            Ok(())
        }
    }

    fn open_hold(&self, seq: i64) -> Result<&HoldState, Rejection> {
        let h = self.state.holds.get(&seq).ok_or(Rejection::HoldNotFound)?;
        if h.closed {
            Err(Rejection::HoldClosed)
        } else {
            Ok(h)
        }
    }

    /// Computes the balances after each leg and checks the accounts' limits; changes the
    /// balances only when every leg passes.
    fn post(&mut self, legs: &[(AccountId, i64)], kind: EntryKind) -> Result<Vec<Posting>, Rejection> {
        // Money coming back to a holder (refunds, released holds) is never refused for
        // the wallet's maximum: refusing it would trap the holder's own money.
        let enforce_max = !matches!(kind, EntryKind::Refund | EntryKind::Capture | EntryKind::Void);
        let mut after: Vec<(AccountId, i64)> = Vec::with_capacity(legs.len());
        let mut postings = Vec::with_capacity(legs.len());
        // Computed legs can be zero (a fee of the whole amount leaves the merchant nothing;
        // a wallet that covers an offline payment leaves no shortfall): no posting for them.
        for &(id, amount) in legs.iter().filter(|(_, amount)| *amount != 0) {
            let state = self.state.accounts.get(&id).ok_or(Rejection::AccountNotFound)?;
            let before = after.iter().rev().find(|(a, _)| *a == id).map_or(state.balance_minor, |(_, b)| *b);
            let balance = before.checked_add(amount).ok_or(Rejection::Overflow)?;
            if state.account.never_negative && balance < 0 {
                return Err(Rejection::InsufficientFunds);
            }
            if enforce_max && amount > 0 && state.account.balance_max_minor.is_some_and(|max| balance > max) {
                return Err(Rejection::ExceedsMaxBalance);
            }
            after.push((id, balance));
            let currency = state.account.currency;
            postings.push(Posting { account_id: id, currency, amount_minor: amount, balance_after_minor: balance });
        }
        assert_balanced(&postings);
        for (id, balance) in after {
            if let Some(a) = self.state.accounts.get_mut(&id) {
                a.balance_minor = balance;
            }
        }
        Ok(postings)
    }

    fn remember(&mut self, entry: &Entry, command: &Command) {
        match command {
            Command::Payment { wallet, merchant, fee_account, .. }
            | Command::OfflinePayment { wallet, merchant, fee_account, .. } => {
                self.state.payments.insert(
                    entry.seq,
                    PaymentState {
                        wallet: *wallet,
                        merchant: *merchant,
                        fee_account: *fee_account,
                        currency: entry.currency,
                        amount_minor: entry.amount_minor,
                        fee_minor: entry.fee_minor,
                        refunded_minor: 0,
                    },
                );
            }
            Command::Refund { payment_seq, amount } => {
                if let Some(p) = self.state.payments.get_mut(payment_seq) {
                    p.refunded_minor += amount.minor();
                }
            }
            Command::Hold { wallet, merchant, amount, expires_at_us } => {
                let holds_account = entry.postings[1].account_id;
                self.state.holds.insert(
                    entry.seq,
                    HoldState {
                        wallet: *wallet,
                        merchant: *merchant,
                        holds_account,
                        currency: amount.currency(),
                        amount_minor: amount.minor(),
                        expires_at_us: *expires_at_us,
                        closed: false,
                    },
                );
            }
            Command::Capture { hold_seq, .. } | Command::Void { hold_seq } => {
                if let Some(h) = self.state.holds.get_mut(hold_seq) {
                    h.closed = true;
                }
            }
            Command::Transfer { .. } => {}
        }
    }
}

/// `fee * part / whole`, rounded half-even, in exact integer arithmetic.
fn fee_share(fee: i64, part: i64, whole: i64) -> i64 {
    if whole == 0 {
        return 0;
    }
    let num = i128::from(fee) * i128::from(part);
    let whole = i128::from(whole);
    let (q, r) = (num / whole, num % whole);
    let twice = 2 * r;
    let rounded = if twice > whole || (twice == whole && q % 2 == 1) { q + 1 } else { q };
    // fee <= whole and part <= whole, so the share is at most fee.
    i64::try_from(rounded).unwrap_or(fee)
}

/// A programmer error, not an operating one: every entry we make sums to zero per currency.
fn assert_balanced(postings: &[Posting]) {
    let mut sums: HashMap<Currency, i128> = HashMap::new();
    for p in postings {
        *sums.entry(p.currency).or_default() += i128::from(p.amount_minor);
    }
    assert!(sums.values().all(|s| *s == 0), "entry does not sum to zero: {postings:?}");
}

struct Draft {
    kind: EntryKind,
    currency: Currency,
    amount_minor: i64,
    fee_minor: i64,
    account: Option<AccountId>,
    counterparty: Option<AccountId>,
    related_seq: Option<i64>,
    expires_at_us: Option<i64>,
    legs: Vec<(AccountId, i64)>,
}

impl Draft {
    fn card(
        kind: EntryKind,
        wallet: AccountId,
        merchant: AccountId,
        currency: Currency,
        amount_minor: i64,
        fee_minor: i64,
        legs: Vec<(AccountId, i64)>,
    ) -> Draft {
        Draft {
            kind,
            currency,
            amount_minor,
            fee_minor,
            account: Some(wallet),
            counterparty: Some(merchant),
            related_seq: None,
            expires_at_us: None,
            legs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fee_share;

    #[test]
    fn fee_share_returns_the_whole_fee_at_the_end() {
        // A 1,000 payment with a fee of 7 refunded in three parts.
        let parts = [333, 333, 334];
        let mut refunded = 0;
        let mut back = 0;
        for p in parts {
            back += fee_share(7, refunded + p, 1000) - fee_share(7, refunded, 1000);
            refunded += p;
        }
        assert_eq!(back, 7);
        assert_eq!(fee_share(7, 500, 1000), 4); // 3.5 -> 4 (even)
        assert_eq!(fee_share(5, 500, 1000), 2); // 2.5 -> 2 (even)
        assert_eq!(fee_share(0, 500, 1000), 0);
    }
}
