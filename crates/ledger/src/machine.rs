//! The ledger's rules as a pure state machine: given the state a batch of requests touches
//! (loaded by the store), apply the requests in order and produce the entries to write.
//! No I/O here, so the same rules run on every backend and the property test's model can
//! be compared with them.

use std::collections::{HashMap, HashSet};

use crate::domain::{
    Account, AccountId, AccountKind, CardReplay, Command, Entry, EntryKind, Event, EventRecord, IdempotencyKey, Leg,
    OfflineTerms, Op, Posted, Posting, Recorded, References, Rejection, Request, TapRow, OFFLINE_RISK_WINDOW_US,
};
use crate::money::{Amount, Currency};

mod transit;
pub(crate) use transit::{load_from_us, TransitState, RIDE_HOLD_GRACE_US};

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
    /// What of an offline payment's shortfall is still owed and was not repaid by a refund
    /// of this payment (0 for others).
    pub shortfall_outstanding: i64,
}

/// How taps that race to the server are judged: a counter at most `race_counters` below
/// the card's last, never used, within `race_window_us` of the tap that raised the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapRules {
    /// How far below the last counter.
    pub race_counters: i64,
    /// How long after the last counter was raised, µs.
    pub race_window_us: i64,
}

impl Default for TapRules {
    fn default() -> Self {
        TapRules {
            race_counters: crate::domain::TAP_RACE_COUNTERS_DEFAULT,
            race_window_us: crate::domain::TAP_RACE_WINDOW_US_DEFAULT,
        }
    }
}

/// A change of a wallet's debt, written beside its entry (`wallet_debts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DebtRow {
    pub entry_seq: i64,
    pub wallet: AccountId,
    pub delta_minor: i64,
    pub payment_seq: Option<i64>,
    pub merchant: Option<AccountId>,
    pub time_us: i64,
}

/// An offline payment as posted (`offline_payments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfflineRow {
    pub entry_seq: i64,
    pub terms: OfflineTerms,
    pub card_id: i64,
    pub amount_minor: i64,
}

/// Days since the Unix epoch (UTC) of a time in µs.
pub(crate) fn utc_day(time_us: i64) -> i64 {
    time_us.div_euclid(86_400_000_000)
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
    /// Card wallets named by the batch: their successors (replaced cards).
    pub wallets: HashSet<AccountId>,
    /// Wallets whose debt the batch reads (top-ups, offline payments, replacements; a
    /// refund's wallet is known once its payment is loaded). A plain payment reads none.
    pub debtors: HashSet<AccountId>,
    /// Currencies whose offline-risk account the batch needs (top-ups and refunds).
    pub risk_currencies: HashSet<Currency>,
    /// Offline records (payments and transit taps): `(credential, card, UTC day)` totals and
    /// `(credential, sync)` totals.
    pub offline: Vec<(OfflineTerms, i64)>,
    /// Merchants with offline payments: their shortfalls of the last 24 hours.
    pub offline_merchants: HashSet<AccountId>,
    /// Whether the batch has offline transit taps: every route operator's shortfalls of
    /// the last 24 hours are needed (a tap may reprice rides of any route).
    pub offline_transit: bool,
    /// Holder keys of access decisions with limits, and the earliest time that matters.
    pub access: HashMap<String, i64>,
    /// Cards of transit taps: their wallet and the earliest tap time of the batch (µs).
    pub transit: HashMap<i64, (AccountId, i64)>,
}

impl Needs {
    pub fn of(ops: &[Op]) -> Needs {
        let mut n = Needs::default();
        for op in ops {
            match op {
                Op::Entry(r) => n.entry(r),
                Op::Event(e) => n.event(e),
            }
        }
        n
    }

    /// An event needs its key, its card's counter, its queue and (an access decision with
    /// limits) the holder's recent decisions.
    fn event(&mut self, e: &Event) {
        self.events = true;
        self.keys.extend(e.idempotency_key.clone());
        self.cards.extend(e.card_id.filter(|_| e.card_read_counter.is_some()));
        self.taps.extend(e.card_id.zip(e.card_read_counter));
        self.queues.extend(e.queue_key.clone());
        if let Some(a) = &e.access {
            // Decisions that count: today's for the quota, recent ones for passback
            // (the writer's clock is never far from the caller's; a day is ample).
            let from = a.day_start_us.min(a.day_start_us - a.passback_us.unwrap_or(0).max(0));
            let at = self.access.entry(a.holder_key.clone()).or_insert(from);
            *at = (*at).min(from);
        }
        if let (Some(t), Some(card)) = (&e.transit, e.card_id) {
            // An online tap is at the writer's time, never before the caller's.
            let time = t.tap.map_or(i64::MAX, |tap| tap.time_us);
            let at = self.transit.entry(card).or_insert((t.wallet, time));
            at.1 = at.1.min(time);
            self.accounts.insert(t.wallet);
            self.wallets.insert(t.wallet);
            self.debtors.insert(t.wallet);
            if let Some(o) = &t.offline {
                self.offline.push((o.terms, card));
                self.offline_transit = true;
            }
        }
    }

    /// A request needs its key, its tap's card and what its command names.
    fn entry(&mut self, r: &Request) {
        if let Some(k) = &r.idempotency_key {
            self.keys.insert(k.clone());
        }
        if let (Some(card), Some(ctr)) = (r.references.card_id, r.references.card_read_counter) {
            self.cards.insert(card);
            self.taps.insert((card, ctr));
            if matches!(r.command, Command::OfflinePayment { .. }) {
                self.offline_taps.insert((card, ctr));
            }
        }
        self.command(&r.command, r.references.card_id);
    }

    /// The accounts, wallets, debts, holds, payments and offline totals a command reads.
    fn command(&mut self, command: &Command, card: Option<i64>) {
        let n = self;
        match command {
            Command::Transfer { legs, .. } => {
                n.accounts.extend(legs.iter().map(|l| l.account));
                // Any leg may name a replaced card's wallet (an adjustment, a top-up).
                n.wallets.extend(legs.iter().map(|l| l.account));
            }
            Command::Payment { wallet, merchant, fee_account, .. } => {
                n.accounts.extend([*wallet, *merchant, *fee_account]);
                n.wallets.insert(*wallet);
            }
            Command::OfflinePayment { wallet, merchant, fee_account, risk_account, amount, terms, .. } => {
                n.accounts.extend([*wallet, *merchant, *fee_account, *risk_account]);
                n.wallets.insert(*wallet);
                n.debtors.insert(*wallet);
                n.offline.push((*terms, card.unwrap_or(0)));
                n.offline_merchants.insert(*merchant);
                n.risk_currencies.insert(amount.currency());
            }
            Command::Refund { payment_seq, amount } => {
                n.payments.insert(*payment_seq);
                n.risk_currencies.insert(amount.currency());
            }
            Command::Hold { wallet, merchant, .. } => {
                n.accounts.extend([*wallet, *merchant]);
                n.wallets.insert(*wallet);
            }
            Command::Topup { source, wallet, amount } => {
                n.accounts.extend([*source, *wallet]);
                n.wallets.insert(*wallet);
                n.debtors.insert(*wallet);
                n.risk_currencies.insert(amount.currency());
            }
            Command::ReplaceCard { old_wallet, new_wallet } => {
                n.accounts.extend([*old_wallet, *new_wallet]);
                n.wallets.extend([*old_wallet, *new_wallet]);
                n.debtors.extend([*old_wallet, *new_wallet]);
            }
            Command::Settle { merchant, bank } => n.accounts.extend([*merchant, *bank]),
            Command::Capture { hold_seq, fee_account, .. } => {
                n.holds.insert(*hold_seq);
                n.accounts.insert(*fee_account);
            }
            Command::Void { hold_seq } => {
                n.holds.insert(*hold_seq);
            }
        }
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
    /// The last accepted read counter of each tapped card that has one, and when it was
    /// raised (µs).
    pub last_counters: HashMap<i64, (i64, i64)>,
    /// The highest number taken so far in each queue of the batch.
    pub queue_max: HashMap<String, i64>,
    /// The next event id.
    pub next_event_id: i64,
    /// Offline taps already used by an entry.
    pub used_taps: HashSet<(i64, i64)>,
    /// The holds account of each currency.
    pub holds_accounts: HashMap<Currency, AccountId>,
    /// The offline-risk account of each currency the batch needs.
    pub risk_accounts: HashMap<Currency, AccountId>,
    /// Replaced wallets and the wallet that took over (loaded for every wallet named and
    /// every successor found, so chains resolve in memory).
    pub successors: HashMap<AccountId, AccountId>,
    /// What each loaded wallet owes (absent: nothing).
    pub debts: HashMap<AccountId, i64>,
    /// Offline records posted (payments, and what transit taps counted) per `(credential,
    /// card, UTC day of the record)`.
    pub offline_card_day: HashMap<(i64, i64, i64), i64>,
    /// Offline records posted (payments, and what transit taps counted) per `(credential,
    /// sync)`.
    pub offline_sync_total: HashMap<(i64, i64), i64>,
    /// Shortfalls (debts) owed to each merchant posted in the last 24 hours, as `(time,
    /// amount)`: its offline payments' and its rides'.
    pub merchant_shortfalls: HashMap<AccountId, Vec<(i64, i64)>>,
    /// Times of the decisions recorded under each holder key (allowed entries that count).
    pub access_times: HashMap<String, Vec<i64>>,
    /// Fare tables, routes and the cards' rides, for transit taps.
    pub transit: TransitState,
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
    /// Changes of wallets' debts made by this batch.
    pub debt_rows: Vec<DebtRow>,
    /// Wallets replaced by this batch: `(old, new, entry)`.
    pub successor_rows: Vec<(AccountId, AccountId, i64)>,
    /// Offline payments posted by this batch.
    pub offline_rows: Vec<OfflineRow>,
    /// Transit taps recorded by this batch.
    pub transit_rows: Vec<TapRow>,
    /// Transit entries of this batch and their rides.
    pub transit_entries: Vec<crate::domain::RideEntry>,
    rules: TapRules,
}

impl<'s> Machine<'s> {
    pub fn new(state: &'s mut State, next_seq: i64, time_us: i64, rules: TapRules) -> Machine<'s> {
        Machine {
            state,
            next_seq,
            time_us,
            written: Vec::new(),
            events: Vec::new(),
            leaf_order: Vec::new(),
            replays: Vec::new(),
            counters: HashMap::new(),
            debt_rows: Vec::new(),
            successor_rows: Vec::new(),
            offline_rows: Vec::new(),
            transit_rows: Vec::new(),
            transit_entries: Vec::new(),
            rules,
        }
    }

    /// The wallet that holds a card's money now: the wallet itself, or the last of its
    /// successors when the card was replaced (perhaps more than once).
    fn current_wallet(&self, wallet: AccountId) -> AccountId {
        let mut w = wallet;
        // A chain is as long as a holder's replacements; the bound only stops a cycle,
        // which the unique successor column and the writer's checks never allow.
        for _ in 0..64 {
            match self.state.successors.get(&w) {
                Some(next) => w = *next,
                None => break,
            }
        }
        w
    }

    fn refuse_replaced(&self, wallet: AccountId) -> Result<(), Rejection> {
        if self.state.successors.contains_key(&wallet) {
            Err(Rejection::CardReplaced)
        } else {
            Ok(())
        }
    }

    fn debt(&self, wallet: AccountId) -> i64 {
        self.state.debts.get(&wallet).copied().unwrap_or(0)
    }

    fn balance(&self, id: AccountId) -> i64 {
        self.state.accounts.get(&id).map_or(0, |a| a.balance_minor)
    }

    fn risk_account(&self, currency: Currency) -> Result<AccountId, Rejection> {
        self.state.risk_accounts.get(&currency).copied().ok_or(Rejection::AccountNotFound)
    }

    /// Checks a tap's counter against the card's: above the last one it is fresh. A lower
    /// one is fresh only when no entry or event used it, it is at most
    /// [`TapRules::race_counters`] below the last, and the last was raised less than
    /// [`TapRules::race_window_us`] ago: taps of one card that race to the server. Anything
    /// else is a replay (a skimmed tap held back, a clone), remembered for the operator.
    fn check_tap(&mut self, tap: Option<(i64, i64)>, source: Option<&str>) -> Result<(), Rejection> {
        let Some((card, counter)) = tap else { return Ok(()) };
        let Some(&(last, raised_us)) = self.state.last_counters.get(&card) else { return Ok(()) };
        let racing = last - counter <= self.rules.race_counters
            && self.time_us - raised_us < self.rules.race_window_us
            && !self.state.used_taps.contains(&(card, counter));
        if counter > last || racing {
            return Ok(());
        }
        self.replay(card, counter, last, source)
    }

    /// Refuses a tap as a replay: the refusal is recorded for the operator (`card_replays`)
    /// and is a leaf of the audit log (a `card_replay` event, which uses no counter), so an
    /// auditor sees every suspected clone, though nothing else of the request is written.
    fn replay(&mut self, card: i64, counter: i64, last: i64, source: Option<&str>) -> Result<(), Rejection> {
        self.replays.push(CardReplay {
            card_id: card,
            counter,
            last_counter: last,
            time_us: self.time_us,
            source: source.map(str::to_owned),
        });
        let payload = serde_json::json!({"counter": counter, "last_counter": last, "source": source}).to_string();
        self.events.push(EventRecord {
            id: self.state.next_event_id,
            kind: "card_replay".into(),
            time_us: self.time_us,
            scope: None,
            card_id: Some(card),
            card_read_counter: None,
            queue_key: None,
            queue_number: None,
            idempotency_key: None,
            request_hash: None,
            payload,
            holder_key: None,
            audit: None,
        });
        self.state.next_event_id += 1;
        self.leaf_order.push(false);
        Err(Rejection::CardReplay)
    }

    fn accept_tap(&mut self, tap: Option<(i64, i64)>) {
        if let Some((card, counter)) = tap {
            // An offline tap may be older than the card's last online one: the counter
            // never moves back.
            let last = self.state.last_counters.get(&card).map(|l| l.0);
            if last.is_none_or(|l| counter > l) {
                self.state.last_counters.insert(card, (counter, self.time_us));
                self.counters.insert(card, counter);
            }
            self.state.used_taps.insert((card, counter));
        }
    }

    /// An offline tap is uploaded after the fact, maybe after newer online taps of the same
    /// card: it must be unused, and above the card's last counter as of the terminal's last
    /// sync (a tap skimmed before it is refused).
    fn check_offline_tap(
        &mut self,
        tap: Option<(i64, i64)>,
        floor: Option<i64>,
        source: Option<&str>,
    ) -> Result<(), Rejection> {
        let Some((card, counter)) = tap else { return Ok(()) };
        let stale = floor.is_some_and(|f| counter <= f);
        if self.state.used_taps.contains(&(card, counter)) || stale {
            let last = self.state.last_counters.get(&card).map_or(counter, |l| l.0);
            return self.replay(card, counter, last.max(floor.unwrap_or(0)), source);
        }
        Ok(())
    }

    /// The writer's checks of an offline record (a payment or a transit tap) against the
    /// terminal's limits as of its sync: per tap, per card per UTC day, since the sync.
    fn check_offline(&self, terms: &OfflineTerms, card: i64, amount: i64) -> Result<(), Rejection> {
        if amount > terms.per_tap_minor {
            return Err(Rejection::OfflineLimitPerTap);
        }
        let day = (terms.credential_id, card, utc_day(terms.record_time_us));
        let spent = self.state.offline_card_day.get(&day).copied().unwrap_or(0);
        if spent.saturating_add(amount) > terms.per_card_per_day_minor {
            return Err(Rejection::OfflineLimitCardDay);
        }
        let since_sync = self.state.offline_sync_total.get(&(terms.credential_id, terms.sync_id)).copied().unwrap_or(0);
        if since_sync.saturating_add(amount) > terms.outstanding_minor {
            return Err(Rejection::OfflineLimitOutstanding);
        }
        Ok(())
    }

    /// The city's cap on one merchant's shortfalls in [`OFFLINE_RISK_WINDOW_US`]: an
    /// offline record may add `shortfall` (what the wallet cannot cover) only within it.
    fn check_risk_cap(&self, terms: &OfflineTerms, merchant: AccountId, shortfall: i64) -> Result<(), Rejection> {
        if shortfall <= 0 {
            return Ok(());
        }
        let from = self.time_us - OFFLINE_RISK_WINDOW_US;
        let exposure: i64 = self
            .state
            .merchant_shortfalls
            .get(&merchant)
            .map_or(0, |v| v.iter().filter(|(t, _)| *t > from).map(|(_, a)| a).sum());
        if exposure.saturating_add(shortfall) > terms.merchant_risk_cap_minor {
            return Err(Rejection::OfflineRiskCap);
        }
        Ok(())
    }

    /// Counts an offline record that was posted in the batch's offline totals.
    fn count_offline(&mut self, terms: &OfflineTerms, card: i64, amount: i64) {
        let day = (terms.credential_id, card, utc_day(terms.record_time_us));
        *self.state.offline_card_day.entry(day).or_default() += amount;
        *self.state.offline_sync_total.entry((terms.credential_id, terms.sync_id)).or_default() += amount;
    }

    /// The writer's check of a holder's quota and passback at a service point (the domain
    /// rule, against every decision the writer recorded).
    fn check_access(&self, access: &crate::domain::AccessLimit) -> Result<(), Rejection> {
        let times = self.state.access_times.get(&access.holder_key).map(Vec::as_slice).unwrap_or(&[]);
        let limits = domain::access::Limits { daily_quota: access.daily_quota, passback_us: access.passback_us };
        limits.check(self.time_us, access.day_start_us, times).map_err(|refusal| match refusal {
            domain::access::Refusal::QuotaReached => Rejection::QuotaReached,
            _ => Rejection::Passback,
        })
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
                    Ok(Recorded { event: e.clone(), replayed: true, entries: Vec::new() })
                } else {
                    Err(Rejection::IdempotencyConflict)
                };
            }
            if self.state.keyed.contains_key(key) {
                return Err(Rejection::IdempotencyConflict);
            }
        }
        let tap = event.card_id.zip(event.card_read_counter);
        match &event.transit {
            Some(t) if t.offline.is_some() => {
                let floor = t.offline.and_then(|o| o.terms.counter_floor);
                self.check_offline_tap(tap, floor, event.scope.as_deref())?;
            }
            _ => self.check_tap(tap, event.scope.as_deref())?,
        }
        if let Some(access) = &event.access {
            self.check_access(access)?;
        }
        // A transit tap's entries come after its event in the log.
        let event_leaf = self.leaf_order.len();
        let entries = match &event.transit {
            Some(t) => self.apply_transit(event, t)?,
            None => Vec::new(),
        };
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
            holder_key: event.access.as_ref().map(|a| a.holder_key.clone()),
            audit: None,
        };
        if let Some(access) = &event.access {
            self.state.access_times.entry(access.holder_key.clone()).or_default().push(self.time_us);
        }
        self.state.next_event_id += 1;
        if let Some(key) = &event.idempotency_key {
            self.state.keyed_events.insert(key.clone(), record.clone());
        }
        self.events.push(record.clone());
        self.leaf_order.insert(event_leaf, false);
        Ok(Recorded { event: record, replayed: false, entries })
    }

    /// Applies one request: either an entry is made (and the state moves on) or nothing
    /// changes and the reason is returned.
    pub fn apply(&mut self, request: &Request) -> Result<Posted, Rejection> {
        request.check_shape()?;
        let fingerprint = request.fingerprint();
        if let Some(key) = &request.idempotency_key {
            if let Some(entry) = self.state.keyed.get(key) {
                return if entry.request_hash == Some(fingerprint) {
                    Ok(Posted { entry: entry.clone(), replayed: true, wallet_balance_minor: None })
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
        if let Command::OfflinePayment { terms, .. } = &request.command {
            self.check_offline_tap(counter, terms.counter_floor, source)?;
        } else {
            self.check_tap(counter, source)?;
        }
        let draft = self.draft(&request.command, request.references.card_id)?;
        let wallet = draft.wallet;
        let entry = self.commit(
            &request.command,
            draft,
            &request.references,
            request.idempotency_key.as_ref(),
            Some(fingerprint),
        )?;
        self.accept_tap(counter);
        let wallet_balance_minor = wallet.map(|w| self.balance(w));
        Ok(Posted { entry, replayed: false, wallet_balance_minor })
    }

    /// Posts a drafted entry: its legs, then the entry and what it changes besides balances.
    /// Fails only when a leg would break an account's limits; then nothing changed.
    fn commit(
        &mut self,
        command: &Command,
        draft: Draft,
        references: &References,
        key: Option<&IdempotencyKey>,
        request_hash: Option<[u8; 32]>,
    ) -> Result<Entry, Rejection> {
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
            references: references.clone(),
            idempotency_key: key.cloned(),
            request_hash,
            postings,
            audit: None,
        };
        self.next_seq += 1;
        self.remember(&entry, command, &draft);
        if let Some(key) = key {
            self.state.keyed.insert(key.clone(), entry.clone());
        }
        self.written.push(entry.clone());
        self.leaf_order.push(true);
        Ok(entry)
    }

    /// Turns a command into legs, checking everything about the referenced objects.
    fn draft(&self, command: &Command, card: Option<i64>) -> Result<Draft, Rejection> {
        match command {
            Command::Transfer { kind, legs } => self.transfer(*kind, legs),
            Command::Payment { wallet, merchant, fee_account, amount, fee_minor } => {
                self.payment(*wallet, *merchant, *fee_account, *amount, *fee_minor)
            }
            Command::OfflinePayment { wallet, merchant, fee_account, risk_account, amount, fee_minor, terms } => {
                let accounts = OfflineAccounts {
                    wallet: *wallet,
                    merchant: *merchant,
                    fee_account: *fee_account,
                    risk_account: *risk_account,
                };
                self.offline_payment(accounts, *amount, *fee_minor, terms, card)
            }
            Command::Refund { payment_seq, amount } => self.refund(*payment_seq, *amount),
            Command::Hold { wallet, merchant, amount, expires_at_us } => {
                self.hold(*wallet, *merchant, *amount, *expires_at_us)
            }
            Command::Capture { hold_seq, amount, fee_minor, fee_account } => {
                self.capture(*hold_seq, *amount, *fee_minor, *fee_account)
            }
            Command::Void { hold_seq } => self.void(*hold_seq),
            Command::Topup { source, wallet, amount } => self.topup(*source, *wallet, *amount),
            Command::ReplaceCard { old_wallet, new_wallet } => self.replace_card(*old_wallet, *new_wallet),
            Command::Settle { merchant, bank } => self.settle(*merchant, *bank),
        }
    }

    /// A transfer between any accounts: legs that balance per currency; a replaced card's
    /// wallet pays nothing and its credits go to its successor.
    fn transfer(&self, kind: EntryKind, legs: &[Leg]) -> Result<Draft, Rejection> {
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
            .filter(|l| l.amount_minor > 0 && self.account(l.account).is_ok_and(|a| a.currency == first.currency))
            .map(|l| l.amount_minor)
            .sum();
        // A replaced card's wallet pays nothing; a credit to it goes to its successor.
        let mut moved = Vec::with_capacity(legs.len());
        for l in legs {
            if self.state.successors.contains_key(&l.account) && l.amount_minor < 0 {
                return Err(Rejection::CardReplaced);
            }
            moved.push((self.current_wallet(l.account), l.amount_minor));
        }
        let mut d = Draft::new(kind, first.currency, amount_minor, 0);
        d.account = Some(moved[0].0);
        d.counterparty = Some(moved[1].0);
        d.legs = moved;
        Ok(d)
    }

    /// A card payment to a merchant, the fee to the fee account.
    fn payment(
        &self,
        wallet: AccountId,
        merchant: AccountId,
        fee_account: AccountId,
        amount: Amount,
        fee_minor: i64,
    ) -> Result<Draft, Rejection> {
        self.expect(wallet, AccountKind::CardWallet, amount.currency())?;
        self.expect(merchant, AccountKind::Merchant, amount.currency())?;
        self.expect(fee_account, AccountKind::FeeRevenue, amount.currency())?;
        self.refuse_replaced(wallet)?;
        let mut legs = vec![(wallet, -amount.minor()), (merchant, amount.minor() - fee_minor)];
        if fee_minor > 0 {
            legs.push((fee_account, fee_minor));
        }
        Ok(Draft::card(EntryKind::Payment, wallet, merchant, amount.currency(), amount.minor(), fee_minor, legs))
    }

    /// An offline payment as posted: the wallet pays what it can, the offline-risk account the
    /// shortfall (a debt of the card), within the terminal's offline terms.
    fn offline_payment(
        &self,
        accounts: OfflineAccounts,
        amount: Amount,
        fee_minor: i64,
        terms: &OfflineTerms,
        card: Option<i64>,
    ) -> Result<Draft, Rejection> {
        let OfflineAccounts { wallet: wallet_named, merchant, fee_account, risk_account } = accounts;
        self.expect(wallet_named, AccountKind::CardWallet, amount.currency())?;
        self.expect(merchant, AccountKind::Merchant, amount.currency())?;
        self.expect(fee_account, AccountKind::FeeRevenue, amount.currency())?;
        self.expect(risk_account, AccountKind::OfflineRisk, amount.currency())?;
        // The card may have been replaced after the terminal's sync: its money, and
        // so its debt, is on the new card.
        let wallet = self.current_wallet(wallet_named);
        let from_wallet = self.balance(wallet).max(0).min(amount.minor());
        let shortfall = amount.minor() - from_wallet;
        self.check_offline(terms, card.unwrap_or(0), amount.minor())?;
        self.check_risk_cap(terms, merchant, shortfall)?;
        let legs = vec![
            (wallet, -from_wallet),
            (risk_account, -shortfall),
            (merchant, amount.minor() - fee_minor),
            (fee_account, fee_minor),
        ];
        let mut d =
            Draft::card(EntryKind::Payment, wallet, merchant, amount.currency(), amount.minor(), fee_minor, legs);
        if shortfall > 0 {
            d.debts.push((wallet, shortfall, Some(self.next_seq), Some(merchant)));
        }
        d.offline = Some((*terms, card.unwrap_or(0), amount.minor(), shortfall));
        Ok(d)
    }

    /// A refund of (part of) a payment: the fee back in proportion, the card's debt of that
    /// payment repaid first.
    fn refund(&self, payment_seq: i64, amount: Amount) -> Result<Draft, Rejection> {
        let p = self.state.payments.get(&payment_seq).ok_or(Rejection::PaymentNotFound)?;
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
        // The money goes to whoever holds the card's money now, and repays first
        // what the card still owes of this payment's shortfall.
        let wallet = self.current_wallet(p.wallet);
        let repay = amount.minor().min(p.shortfall_outstanding).min(self.debt(wallet)).max(0);
        let mut legs = vec![(wallet, amount.minor() - repay), (p.merchant, -(amount.minor() - fee_back))];
        if fee_back > 0 {
            legs.push((p.fee_account, -fee_back));
        }
        let mut d = Draft::card(EntryKind::Refund, wallet, p.merchant, p.currency, amount.minor(), fee_back, legs);
        if repay > 0 {
            d.legs.push((self.risk_account(p.currency)?, repay));
            d.debts.push((wallet, -repay, Some(payment_seq), None));
        }
        d.related_seq = Some(payment_seq);
        Ok(d)
    }

    /// A hold: the amount moves from the wallet to the holds account until captured or voided.
    fn hold(
        &self,
        wallet: AccountId,
        merchant: AccountId,
        amount: Amount,
        expires_at_us: i64,
    ) -> Result<Draft, Rejection> {
        self.expect(wallet, AccountKind::CardWallet, amount.currency())?;
        self.expect(merchant, AccountKind::Merchant, amount.currency())?;
        self.refuse_replaced(wallet)?;
        let holds = *self.state.holds_accounts.get(&amount.currency()).ok_or(Rejection::AccountNotFound)?;
        let legs = vec![(wallet, -amount.minor()), (holds, amount.minor())];
        let mut d = Draft::card(EntryKind::Hold, wallet, merchant, amount.currency(), amount.minor(), 0, legs);
        d.expires_at_us = Some(expires_at_us);
        Ok(d)
    }

    /// The capture of an open hold: the merchant is paid, the rest goes back to the wallet.
    fn capture(
        &self,
        hold_seq: i64,
        amount: Amount,
        fee_minor: i64,
        fee_account: AccountId,
    ) -> Result<Draft, Rejection> {
        if self.open_hold(hold_seq)?.expires_at_us <= self.time_us {
            return Err(Rejection::HoldExpired);
        }
        self.capture_at_any_time(hold_seq, amount, fee_minor, fee_account)
    }

    /// [`Machine::capture`] without the expiry: the writer closes a transit ride's hold
    /// after its time limit.
    fn capture_at_any_time(
        &self,
        hold_seq: i64,
        amount: Amount,
        fee_minor: i64,
        fee_account: AccountId,
    ) -> Result<Draft, Rejection> {
        let h = self.open_hold(hold_seq)?;
        if h.currency != amount.currency() {
            return Err(Rejection::CurrencyMismatch);
        }
        self.expect(fee_account, AccountKind::FeeRevenue, h.currency)?;
        if amount.minor() > h.amount_minor {
            return Err(Rejection::CaptureExceedsHold);
        }
        let wallet = self.current_wallet(h.wallet);
        let mut legs = vec![(h.holds_account, -h.amount_minor), (h.merchant, amount.minor() - fee_minor)];
        if fee_minor > 0 {
            legs.push((fee_account, fee_minor));
        }
        if h.amount_minor > amount.minor() {
            legs.push((wallet, h.amount_minor - amount.minor()));
        }
        let mut d = Draft::card(EntryKind::Capture, wallet, h.merchant, h.currency, amount.minor(), fee_minor, legs);
        d.related_seq = Some(hold_seq);
        Ok(d)
    }

    /// The void of an open hold: the amount goes back to the wallet.
    fn void(&self, hold_seq: i64) -> Result<Draft, Rejection> {
        let h = self.open_hold(hold_seq)?;
        let wallet = self.current_wallet(h.wallet);
        let legs = vec![(h.holds_account, -h.amount_minor), (wallet, h.amount_minor)];
        let mut d = Draft::card(EntryKind::Void, wallet, h.merchant, h.currency, h.amount_minor, 0, legs);
        d.related_seq = Some(hold_seq);
        Ok(d)
    }

    /// A top-up from an agent's float or the city bank; it repays the card's debt first.
    fn topup(&self, source: AccountId, wallet: AccountId, amount: Amount) -> Result<Draft, Rejection> {
        self.expect(wallet, AccountKind::CardWallet, amount.currency())?;
        let src = self.account(source)?;
        if !matches!(src.kind, AccountKind::AgentFloat | AccountKind::CityBank) {
            return Err(Rejection::AccountKindMismatch);
        }
        if src.currency != amount.currency() {
            return Err(Rejection::CurrencyMismatch);
        }
        let wallet = self.current_wallet(wallet);
        let repay = self.debt(wallet).clamp(0, amount.minor());
        let mut legs = vec![(source, -amount.minor()), (wallet, amount.minor() - repay)];
        let mut d = Draft::card(EntryKind::Topup, wallet, source, amount.currency(), amount.minor(), 0, legs.clone());
        if repay > 0 {
            legs.push((self.risk_account(amount.currency())?, repay));
            d.legs = legs;
            d.debts.push((wallet, -repay, None, None));
        }
        Ok(d)
    }

    /// A card replacement: the old wallet's balance and debt move to the new wallet.
    fn replace_card(&self, old_wallet: AccountId, new_wallet: AccountId) -> Result<Draft, Rejection> {
        let old = self.account(old_wallet)?;
        let currency = old.currency;
        self.expect(old_wallet, AccountKind::CardWallet, currency)?;
        self.expect(new_wallet, AccountKind::CardWallet, currency)?;
        // The lowest number first: a replaced card (12) before a wrong wallet (21).
        self.refuse_replaced(old_wallet)?;
        self.refuse_replaced(new_wallet)?;
        let new_is_old = self.state.successors.values().any(|w| *w == new_wallet);
        if old_wallet == new_wallet || new_is_old {
            return Err(Rejection::AccountKindMismatch);
        }
        let balance = self.balance(old_wallet).max(0);
        let legs = vec![(old_wallet, -balance), (new_wallet, balance)];
        let mut d = Draft::card(EntryKind::CardReplacement, old_wallet, new_wallet, currency, balance, 0, legs);
        let owed = self.debt(old_wallet);
        if owed != 0 {
            d.debts.push((old_wallet, -owed, None, None));
            d.debts.push((new_wallet, owed, None, None));
        }
        d.successor = Some((old_wallet, new_wallet));
        d.wallet = Some(new_wallet);
        Ok(d)
    }

    /// A settlement: the merchant's whole payable balance moves to the city bank.
    fn settle(&self, merchant: AccountId, bank: AccountId) -> Result<Draft, Rejection> {
        let m = self.account(merchant)?;
        let currency = m.currency;
        self.expect(merchant, AccountKind::Merchant, currency)?;
        self.expect(bank, AccountKind::CityBank, currency)?;
        let payable = self.balance(merchant);
        if payable <= 0 {
            return Err(Rejection::NothingToSettle);
        }
        let mut d = Draft::new(EntryKind::Settlement, currency, payable, 0);
        d.account = Some(merchant);
        d.counterparty = Some(bank);
        d.legs = vec![(merchant, -payable), (bank, payable)];
        Ok(d)
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
        let enforce_max =
            !matches!(kind, EntryKind::Refund | EntryKind::Capture | EntryKind::Void | EntryKind::CardReplacement);
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

    /// Records what an entry changes besides balances, for the rest of the batch and for
    /// the writer to store.
    fn remember(&mut self, entry: &Entry, command: &Command, draft: &Draft) {
        self.remember_integrity(entry, draft);
        self.remember_objects(entry, command, draft);
    }

    /// Debts, replacements and offline totals.
    fn remember_integrity(&mut self, entry: &Entry, draft: &Draft) {
        for &(wallet, delta, payment_seq, merchant) in &draft.debts {
            *self.state.debts.entry(wallet).or_default() += delta;
            if let Some(p) = payment_seq.and_then(|s| self.state.payments.get_mut(&s)) {
                p.shortfall_outstanding += delta;
            }
            self.debt_rows.push(DebtRow {
                entry_seq: entry.seq,
                wallet,
                delta_minor: delta,
                payment_seq,
                merchant,
                time_us: entry.time_us,
            });
        }
        if let Some((old, new)) = draft.successor {
            self.state.successors.insert(old, new);
            self.successor_rows.push((old, new, entry.seq));
        }
        if let Some((terms, card, amount, shortfall)) = draft.offline {
            self.count_offline(&terms, card, amount);
            if shortfall > 0 {
                if let Some(merchant) = entry.counterparty_id {
                    self.state.merchant_shortfalls.entry(merchant).or_default().push((entry.time_us, shortfall));
                }
            }
            self.offline_rows.push(OfflineRow { entry_seq: entry.seq, terms, card_id: card, amount_minor: amount });
        }
    }

    /// The payments and holds a later request of the batch may refer to, and how far
    /// each was refunded, captured or voided.
    fn remember_objects(&mut self, entry: &Entry, command: &Command, draft: &Draft) {
        match command {
            Command::Payment { merchant, fee_account, .. } | Command::OfflinePayment { merchant, fee_account, .. } => {
                let shortfall = draft.debts.iter().map(|d| d.1).sum::<i64>().max(0);
                self.state.payments.insert(
                    entry.seq,
                    PaymentState {
                        wallet: entry.account_id.unwrap_or(*merchant),
                        merchant: *merchant,
                        fee_account: *fee_account,
                        currency: entry.currency,
                        amount_minor: entry.amount_minor,
                        fee_minor: entry.fee_minor,
                        refunded_minor: 0,
                        shortfall_outstanding: shortfall,
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
            Command::Capture { hold_seq, fee_account, .. } => {
                if let Some(h) = self.state.holds.get_mut(hold_seq) {
                    h.closed = true;
                }
                // A capture is the merchant's payment: it can be refunded like one.
                if let (Some(wallet), Some(merchant)) = (entry.account_id, entry.counterparty_id) {
                    self.state.payments.insert(
                        entry.seq,
                        PaymentState {
                            wallet,
                            merchant,
                            fee_account: *fee_account,
                            currency: entry.currency,
                            amount_minor: entry.amount_minor,
                            fee_minor: entry.fee_minor,
                            refunded_minor: 0,
                            shortfall_outstanding: 0,
                        },
                    );
                }
            }
            Command::Void { hold_seq } => {
                if let Some(h) = self.state.holds.get_mut(hold_seq) {
                    h.closed = true;
                }
            }
            Command::Transfer { .. } | Command::Topup { .. } | Command::ReplaceCard { .. } | Command::Settle { .. } => {
            }
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

/// The accounts an offline payment names.
#[derive(Debug, Clone, Copy)]
struct OfflineAccounts {
    /// The paying card's wallet (its successor pays when the card was replaced).
    wallet: AccountId,
    merchant: AccountId,
    fee_account: AccountId,
    risk_account: AccountId,
}

/// What a command becomes: the entry's fields, its legs, and the state it changes besides
/// balances.
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
    /// The card wallet whose balance the answer reports.
    wallet: Option<AccountId>,
    /// Debt changes: `(wallet, delta, offline payment, merchant)`.
    debts: Vec<(AccountId, i64, Option<i64>, Option<AccountId>)>,
    /// A replacement: `(old wallet, new wallet)`.
    successor: Option<(AccountId, AccountId)>,
    /// An offline payment: its terms, card, amount and shortfall.
    offline: Option<(OfflineTerms, i64, i64, i64)>,
}

impl Draft {
    fn new(kind: EntryKind, currency: Currency, amount_minor: i64, fee_minor: i64) -> Draft {
        Draft {
            kind,
            currency,
            amount_minor,
            fee_minor,
            account: None,
            counterparty: None,
            related_seq: None,
            expires_at_us: None,
            legs: Vec::new(),
            wallet: None,
            debts: Vec::new(),
            successor: None,
            offline: None,
        }
    }

    fn card(
        kind: EntryKind,
        wallet: AccountId,
        counterparty: AccountId,
        currency: Currency,
        amount_minor: i64,
        fee_minor: i64,
        legs: Vec<(AccountId, i64)>,
    ) -> Draft {
        let mut d = Draft::new(kind, currency, amount_minor, fee_minor);
        d.account = Some(wallet);
        d.counterparty = Some(counterparty);
        d.wallet = Some(wallet);
        d.legs = legs;
        d
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
