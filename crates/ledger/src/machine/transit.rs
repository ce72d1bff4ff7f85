//! Transit taps in the writer (issue 18): a tap (or the close of rides whose time limit
//! passed) prices the card's taps of the affected weeks again with `domain::fares`, the
//! same code an offline validator runs, and posts for every ride what differs from what
//! the ledger already holds for it:
//!
//! - an **open** ride (a distance route, tapped on, not yet off, within its time limit, and
//!   the card's last tap) holds its fare so far (the route's maximum after transfers and
//!   caps) in the holds account;
//! - a **closed** ride is charged its fare: its hold is captured for (at most) the fare and
//!   the rest released, and any difference is a payment (more) or a refund (less).
//!
//! So taps that arrive late and out of order (a bus that was offline) leave every card
//! exactly where an always-online system would have put it: the corrections are ordinary
//! entries, each linked to its ride (`transit_entries`) and naming the rules that applied
//! in its memo. An online boarding the wallet cannot pay for is refused (the gate stays
//! shut); what a ride costs beyond the wallet otherwise (an offline tap, a correction)
//! becomes the card's debt through the offline-risk account, like an offline payment.

use std::collections::HashMap;

use chrono::TimeZone;
use domain::fares::{self, Ride, Schedule, Tap, TapKind};
use domain::money::{Amount, AMOUNT_MAX_MINOR};

use super::{Draft, Machine};
use crate::domain::{
    AccountId, AccountKind, Command, Entry, EntryKind, Event, OfflineTransit, References, Rejection, RideEntry,
    RouteOperators, TapRow, TransitTap,
};
use crate::money::Currency;

/// A ride's hold is voided by the ordinary hold expiry only this long after its time
/// limit: the writer closes it at the limit (the transit sweep), charging the maximum.
pub(crate) const RIDE_HOLD_GRACE_US: i64 = 86_400_000_000;

const DAY_US: i64 = 86_400_000_000;

/// What the writer prices transit with, loaded when a batch has transit taps.
#[derive(Debug, Default)]
pub(crate) struct TransitState {
    /// Every fare table.
    pub schedule: Schedule,
    /// The city's time zone (UTC when none was set).
    pub tz: Option<chrono_tz::Tz>,
    /// Each route's operator account and fee rate.
    pub routes: RouteOperators,
    /// The fee revenue account of each currency.
    pub fee_accounts: HashMap<Currency, AccountId>,
    /// The cards of the batch.
    pub cards: HashMap<i64, CardRides>,
}

/// A card's taps of the weeks a batch may reprice (and the day before), and the entries of
/// its rides.
#[derive(Debug, Default)]
pub(crate) struct CardRides {
    /// In time order.
    pub taps: Vec<TapRow>,
    /// Each ride's entries (by its boarding's event id), oldest first.
    pub entries: HashMap<i64, Vec<i64>>,
}

/// The start (µs) of the ISO week (Monday 00:00 in `tz`) that holds `time_us`.
pub(crate) fn week_start_us(tz: &chrono_tz::Tz, time_us: i64) -> i64 {
    use chrono::Datelike;
    let Some(local) = tz.timestamp_micros(time_us).single() else { return time_us - 7 * DAY_US };
    let monday = local.date_naive() - chrono::Days::new(u64::from(local.weekday().num_days_from_monday()));
    let midnight = monday.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight).earliest().map_or(time_us - 7 * DAY_US, |t| t.timestamp_micros())
}

/// The first ride a tap at `time_us` may change: from the start of the week before the
/// tap's, so a ride left open late in a week (and closed by the first tap of the next) is
/// settled with its own week's caps.
pub(crate) fn correct_from_us(tz: &chrono_tz::Tz, time_us: i64) -> i64 {
    week_start_us(tz, week_start_us(tz, time_us) - 1)
}

/// The earliest tap whose card's rides the writer must load for a tap at `time_us`: a
/// day before [`correct_from_us`], so a journey begun late on a Sunday is known on Monday.
pub(crate) fn load_from_us(tz: &chrono_tz::Tz, time_us: i64) -> i64 {
    correct_from_us(tz, time_us) - DAY_US
}

/// What a ride should hold and be charged now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    held: i64,
    charged: i64,
}

/// What a ride holds and was charged so far, from its entries.
#[derive(Debug, Default)]
struct Current {
    open_holds: Vec<(i64, i64)>,
    /// Payments and captures: `(seq, amount not refunded)`.
    charges: Vec<(i64, i64)>,
}

/// The accounts one card's moves use.
#[derive(Debug, Clone, Copy)]
struct Accounts {
    wallet: AccountId,
    currency: Currency,
    fee: AccountId,
}

/// What is being priced: the card, the new tap's row (if any) and who tapped.
struct Pricing<'t> {
    card: i64,
    transit: &'t TransitTap,
    ride_of_tap: Option<i64>,
    rules: HashMap<i64, String>,
}

impl Machine<'_> {
    /// Prices a transit event's card again and posts what changed, before the event is
    /// recorded (its id is the next one). An offline tap is then held to its validator's
    /// limits ([`Machine::check_offline_transit`]). On a refusal nothing of it stays.
    pub(super) fn apply_transit(&mut self, event: &Event, t: &TransitTap) -> Result<Vec<Entry>, Rejection> {
        let card = event.card_id.ok_or(Rejection::InvalidEvent)?;
        let tz = self.transit_tz();
        let (mut taps, at) = self.taps_with(card, t);
        let tap_row = at.map(|i| taps[i]);
        let from = correct_from_us(&tz, tap_row.map_or(self.time_us, |r| r.tap.time_us).min(self.time_us));
        let plain: Vec<Tap> = taps.iter().map(|r| r.tap).collect();
        let rides =
            self.transit().schedule.price(&t.categories, &plain, &tz).map_err(|_| Rejection::FareUnavailable)?;
        let wallet = self.current_wallet(t.wallet);
        let currency = self.state.accounts.get(&wallet).ok_or(Rejection::AccountNotFound)?.account.currency;
        let fee = *self.transit().fee_accounts.get(&currency).ok_or(Rejection::AccountNotFound)?;
        let accounts = Accounts { wallet, currency, fee };
        let ride_of_tap = tap_row.filter(|r| r.tap.kind == TapKind::On).map(|r| r.event_id);
        let rules = rides.iter().map(|r| (taps[r.on].event_id, describe(r))).collect();
        let pricing = Pricing { card, transit: t, ride_of_tap, rules };
        let mark = self.mark(card, wallet, currency);
        let debts_from = mark.debt_rows;
        let mut made = Vec::new();
        let mut settled = Ok(());
        for ride in rides.iter().filter(|r| taps[r.on].tap.time_us >= from) {
            let target = self.target(ride, &taps);
            settled = self.settle_ride(&pricing, accounts, taps[ride.on].event_id, ride, target, &mut made);
            if settled.is_err() {
                break;
            }
        }
        if let (Ok(()), Some(o), Some(i)) = (&settled, &t.offline, at) {
            // A tap off counts nothing: its boarding counted the ride (offline) or held it.
            let charged = (taps[i].tap.kind == TapKind::On)
                .then(|| rides.iter().find(|r| r.on == i).map_or(0, |r| r.charge_minor));
            settled = self.check_offline_transit(o, card, charged, debts_from).map(|n| taps[i].offline_minor = Some(n));
        }
        if let Err(r) = settled {
            self.undo(mark);
            return Err(r);
        }
        self.remember_rides(card, t, taps, at, &made, debts_from);
        let first = self.written.len() - made.len();
        Ok(self.written[first..].to_vec())
    }

    /// The card's taps with the event's own (online: at the writer's time) in its place by
    /// time, and that place.
    fn taps_with(&self, card: i64, t: &TransitTap) -> (Vec<TapRow>, Option<usize>) {
        let mut taps = self.transit().cards.get(&card).map(|c| c.taps.clone()).unwrap_or_default();
        let Some(mut tap) = t.tap else { return (taps, None) };
        if t.offline.is_none() && !t.fix {
            tap.time_us = self.time_us;
        }
        let row = TapRow {
            event_id: self.state.next_event_id,
            card_id: card,
            credential_id: t.credential_id,
            tap,
            offline: t.offline.is_some() || t.fix,
            sync_id: t.offline.map(|o| o.terms.sync_id),
            offline_minor: None,
        };
        let at = taps.partition_point(|r| r.tap.time_us <= row.tap.time_us);
        taps.insert(at, row);
        (taps, Some(at))
    }

    /// The writer's checks of an offline tap once its card's rides are posted: a boarding
    /// counts the validator's fare or `charged` (what the writer charges or holds for its
    /// ride), whichever is more, within the validator's limits per tap, per card per day and
    /// since its sync (a tap off, `None`, counts nothing); and the shortfalls it made (debt
    /// rows from `debts_from` on) within each operator's risk cap. Returns what it counts.
    fn check_offline_transit(
        &self,
        o: &OfflineTransit,
        card: i64,
        charged: Option<i64>,
        debts_from: usize,
    ) -> Result<i64, Rejection> {
        let counted = charged.map_or(0, |c| o.fare_minor.max(c));
        self.check_offline(&o.terms, card, counted)?;
        let mut shortfalls: Vec<(AccountId, i64)> = Vec::new();
        for d in self.debt_rows[debts_from..].iter().filter(|d| d.delta_minor > 0) {
            let Some(merchant) = d.merchant else { continue };
            match shortfalls.iter_mut().find(|s| s.0 == merchant) {
                Some(s) => s.1 += d.delta_minor,
                None => shortfalls.push((merchant, d.delta_minor)),
            }
        }
        for (merchant, shortfall) in shortfalls {
            self.check_risk_cap(&o.terms, merchant, shortfall)?;
        }
        Ok(counted)
    }

    /// Keeps what a transit op did for the rest of the batch and for the writer to store:
    /// the card's taps and rides' entries, the tap's row, the entries' links, and (offline)
    /// what the tap counts and the shortfalls it made (debt rows from `debts_from` on).
    fn remember_rides(
        &mut self,
        card: i64,
        t: &TransitTap,
        taps: Vec<TapRow>,
        at: Option<usize>,
        made: &[(i64, i64)],
        debts_from: usize,
    ) {
        let event_id = self.state.next_event_id;
        let tap_row = at.map(|i| taps[i]);
        if let (Some(o), Some(n)) = (&t.offline, tap_row.and_then(|r| r.offline_minor)) {
            self.count_offline(&o.terms, card, n);
        }
        // Every shortfall owed to an operator counts towards its risk cap, online or not.
        for d in self.debt_rows[debts_from..].iter().filter(|d| d.delta_minor > 0) {
            if let Some(v) = d.merchant.and_then(|m| self.state.merchant_shortfalls.get_mut(&m)) {
                v.push((d.time_us, d.delta_minor));
            }
        }
        let rides_of = self.transit_mut().cards.entry(card).or_default();
        rides_of.taps = taps;
        for (seq, ride) in made {
            rides_of.entries.entry(*ride).or_default().push(*seq);
        }
        self.transit_rows.extend(tap_row);
        self.transit_entries.extend(made.iter().map(|(seq, ride)| RideEntry {
            entry_seq: *seq,
            card_id: card,
            ride_event_id: *ride,
            event_id,
        }));
    }

    fn transit(&self) -> &TransitState {
        &self.state.transit
    }

    fn transit_mut(&mut self) -> &mut TransitState {
        &mut self.state.transit
    }

    fn transit_tz(&self) -> chrono_tz::Tz {
        self.transit().tz.unwrap_or(chrono_tz::UTC)
    }

    /// What a ride should hold and be charged as of the writer's time.
    fn target(&self, ride: &Ride, taps: &[TapRow]) -> Target {
        let on = taps[ride.on].tap;
        let limit_us = match self.transit().schedule.at(on.time_us).and_then(|t| t.routes.get(&on.route)) {
            Some(fares::RouteFare::Distance { time_limit_minutes, .. }) => Some(time_limit_minutes * 60_000_000),
            _ => None,
        };
        let last = ride.on + 1 == taps.len();
        let open = ride.off.is_none() && last && limit_us.is_some_and(|limit| self.time_us < on.time_us + limit);
        if open {
            Target { held: ride.charge_minor, charged: 0 }
        } else {
            Target { held: 0, charged: ride.charge_minor }
        }
    }

    /// What a ride holds and was charged, from its entries.
    fn current(&self, card: i64, ride: i64) -> Current {
        let mut c = Current::default();
        let seqs = self.transit().cards.get(&card).and_then(|r| r.entries.get(&ride)).cloned().unwrap_or_default();
        for seq in seqs {
            if let Some(h) = self.state.holds.get(&seq).filter(|h| !h.closed) {
                c.open_holds.push((seq, h.amount_minor));
            }
            if let Some(p) = self.state.payments.get(&seq) {
                c.charges.push((seq, p.amount_minor - p.refunded_minor));
            }
        }
        c
    }

    /// Posts what takes a ride from what it holds and was charged to `target`; pushes
    /// `(entry seq, ride)` for each entry.
    fn settle_ride(
        &mut self,
        p: &Pricing<'_>,
        a: Accounts,
        ride_id: i64,
        ride: &Ride,
        target: Target,
        made: &mut Vec<(i64, i64)>,
    ) -> Result<(), Rejection> {
        let &(operator, rate) = self.transit().routes.get(&ride.route).ok_or(Rejection::FareUnavailable)?;
        let current = self.current(p.card, ride_id);
        let references = ride_references(p, ride_id);
        // The tapped ride of an online boarding must be paid from the wallet (or the gate
        // stays shut); anything else the wallet cannot cover becomes a debt.
        let strict = p.transit.offline.is_none() && p.ride_of_tap == Some(ride_id);
        let mut post = |m: &mut Self, command: Command, draft: Draft| -> Result<(), Rejection> {
            let entry = m.commit(&command, draft, &references, None, None)?;
            made.push((entry.seq, ride_id));
            Ok(())
        };
        if target.held > 0 {
            if current.open_holds.is_empty() {
                let (command, draft) = self.ride_hold(a, operator, ride, target.held)?;
                post(self, command, draft)?;
            }
            return Ok(());
        }
        let charged: i64 = current.charges.iter().map(|c| c.1).sum();
        let mut need = target.charged - charged;
        for (hold_seq, held) in current.open_holds {
            let take = need.clamp(0, held);
            let (command, draft) = if take > 0 {
                let amount = amount(take, a.currency)?;
                let fee_minor = rate.fee_minor(take);
                let command = Command::Capture { hold_seq, amount, fee_minor, fee_account: a.fee };
                let draft = self.capture_at_any_time(hold_seq, amount, fee_minor, a.fee)?;
                (command, draft)
            } else {
                (Command::Void { hold_seq }, self.void(hold_seq)?)
            };
            post(self, command, draft)?;
            need -= take;
        }
        if need > 0 {
            let amount = amount(need, a.currency)?;
            let fee_minor = rate.fee_minor(need);
            let command =
                Command::Payment { wallet: a.wallet, merchant: operator, fee_account: a.fee, amount, fee_minor };
            let draft = if strict {
                self.payment(a.wallet, operator, a.fee, amount, fee_minor)?
            } else {
                self.payment_or_debt(a.wallet, operator, a.fee, amount, fee_minor)?
            };
            post(self, command, draft)?;
        }
        // Less than charged: refunds, newest charge first.
        let mut back = -need;
        for (payment_seq, left) in current.charges.into_iter().rev().filter(|c| c.1 > 0) {
            let part = back.min(left);
            if part <= 0 {
                break;
            }
            let amount = amount(part, a.currency)?;
            let draft = self.refund(payment_seq, amount)?;
            post(self, Command::Refund { payment_seq, amount }, draft)?;
            back -= part;
        }
        Ok(())
    }

    /// The hold of an open ride: its fare so far, until a grace period after its time limit.
    fn ride_hold(
        &self,
        a: Accounts,
        operator: AccountId,
        ride: &Ride,
        held: i64,
    ) -> Result<(Command, Draft), Rejection> {
        let amount = amount(held, a.currency)?;
        let expires_at_us = self.time_us + RIDE_HOLD_GRACE_US + limit_of(self.transit(), ride, self.time_us);
        let command = Command::Hold { wallet: a.wallet, merchant: operator, amount, expires_at_us };
        let draft = self.hold(a.wallet, operator, amount, expires_at_us)?;
        Ok((command, draft))
    }

    /// A payment the wallet pays what it can of; the offline-risk account pays the rest,
    /// which the card owes, like an offline payment (an offline tap is then held to its
    /// validator's limits; a correction is not: the ride was taken).
    fn payment_or_debt(
        &self,
        wallet: AccountId,
        merchant: AccountId,
        fee_account: AccountId,
        amount: Amount,
        fee_minor: i64,
    ) -> Result<Draft, Rejection> {
        let currency = amount.currency();
        self.expect(wallet, AccountKind::CardWallet, currency)?;
        self.expect(merchant, AccountKind::Merchant, currency)?;
        self.expect(fee_account, AccountKind::FeeRevenue, currency)?;
        let from_wallet = self.balance(wallet).max(0).min(amount.minor());
        let shortfall = amount.minor() - from_wallet;
        let mut legs = vec![(wallet, -from_wallet), (merchant, amount.minor() - fee_minor), (fee_account, fee_minor)];
        if shortfall > 0 {
            legs.push((self.risk_account(currency)?, -shortfall));
        }
        let mut d = Draft::card(EntryKind::Payment, wallet, merchant, currency, amount.minor(), fee_minor, legs);
        if shortfall > 0 {
            d.debts.push((wallet, shortfall, Some(self.next_seq), Some(merchant)));
        }
        Ok(d)
    }

    /// What undoing a refused transit op needs ([`Mark`]).
    fn mark(&self, card: i64, wallet: AccountId, currency: Currency) -> Mark {
        let mut ids = vec![wallet];
        ids.extend(self.state.holds_accounts.get(&currency));
        ids.extend(self.state.risk_accounts.get(&currency));
        ids.extend(self.transit().fee_accounts.get(&currency));
        ids.extend(self.transit().routes.values().map(|r| r.0));
        // Only the card's rides' holds and payments can change (and new ones appear).
        let seqs: Vec<i64> = self
            .transit()
            .cards
            .get(&card)
            .map(|c| c.entries.values().flatten().copied().collect())
            .unwrap_or_default();
        Mark {
            balances: ids.iter().filter_map(|id| self.state.accounts.get(id).map(|a| (*id, a.balance_minor))).collect(),
            holds: seqs.iter().filter_map(|s| self.state.holds.get(s).map(|h| (*s, h.clone()))).collect(),
            payments: seqs.iter().filter_map(|s| self.state.payments.get(s).map(|p| (*s, p.clone()))).collect(),
            debt: (wallet, self.state.debts.get(&wallet).copied()),
            next_seq: self.next_seq,
            written: self.written.len(),
            leaf_order: self.leaf_order.len(),
            debt_rows: self.debt_rows.len(),
        }
    }

    fn undo(&mut self, mark: Mark) {
        for (id, balance) in mark.balances {
            if let Some(a) = self.state.accounts.get_mut(&id) {
                a.balance_minor = balance;
            }
        }
        let made = mark.next_seq..self.next_seq;
        self.state.holds.retain(|seq, _| !made.contains(seq));
        self.state.payments.retain(|seq, _| !made.contains(seq));
        self.state.holds.extend(mark.holds);
        self.state.payments.extend(mark.payments);
        match mark.debt {
            (wallet, Some(debt)) => drop(self.state.debts.insert(wallet, debt)),
            (wallet, None) => drop(self.state.debts.remove(&wallet)),
        }
        self.next_seq = mark.next_seq;
        self.written.truncate(mark.written);
        self.leaf_order.truncate(mark.leaf_order);
        self.debt_rows.truncate(mark.debt_rows);
    }
}

/// The state a refused transit op restores: the balances it may move, its card's rides'
/// holds and payments, the wallet's debt, and how far the batch's output went.
struct Mark {
    balances: Vec<(AccountId, i64)>,
    holds: Vec<(i64, super::HoldState)>,
    payments: Vec<(i64, super::PaymentState)>,
    debt: (AccountId, Option<i64>),
    next_seq: i64,
    written: usize,
    leaf_order: usize,
    debt_rows: usize,
}

/// The references of a ride's entries: the validator, the card, the ride, and the rules
/// that priced it (the receipt's "why").
fn ride_references(p: &Pricing<'_>, ride_id: i64) -> References {
    References {
        terminal_id: Some(format!("credential:{}", p.transit.credential_id)),
        card_id: Some(p.card),
        card_read_counter: None,
        merchant_reference: Some(format!("ride:{ride_id}")),
        memo: p.rules.get(&ride_id).cloned(),
    }
}

fn amount(minor: i64, currency: Currency) -> Result<Amount, Rejection> {
    Amount::from_minor(minor, currency, AMOUNT_MAX_MINOR).map_err(|_| Rejection::Overflow)
}

/// A ride's time limit (0 for a flat route).
fn limit_of(t: &TransitState, ride: &Ride, at_us: i64) -> i64 {
    match t.schedule.at(at_us).and_then(|table| table.routes.get(&ride.route)) {
        Some(fares::RouteFare::Distance { time_limit_minutes, .. }) => time_limit_minutes * 60_000_000,
        _ => 0,
    }
}

/// The rules of a ride as its entries' memo: "5 stops; transfer within 60 min".
fn describe(ride: &Ride) -> String {
    ride.rules.iter().map(fares::Rule::describe).collect::<Vec<_>>().join("; ")
}
