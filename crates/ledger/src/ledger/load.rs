//! What a batch touches, loaded in the writer's transaction before the state machine runs:
//! holds, payments, replaced wallets and debts, system accounts, offline and access totals,
//! accounts (from the cache when valid), idempotency keys and card counters already used.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet};

use crate::domain::{AccountId, AccountKind, Command, Op, Request, OFFLINE_RISK_WINDOW_US};
use crate::machine::{load_from_us, utc_day, AccountState, Needs, State};
use crate::money::Currency;
use crate::store::Db;
use crate::LedgerError;

/// Merchants' offline shortfalls are read this much further back than the risk window,
/// so a payment recorded at the window's edge is still counted.
const SHORTFALL_MARGIN_US: i64 = 60_000_000;

/// Loads what a batch touches.
pub(super) fn load(
    db: &mut Db,
    cache: &mut HashMap<AccountId, AccountState>,
    holds_accounts: &mut HashMap<Currency, AccountId>,
    requests: &[Op],
    now_us: i64,
) -> Result<State, LedgerError> {
    let needs = Needs::of(requests);
    let mut state = State {
        holds: db.holds(&needs.holds.iter().copied().collect::<Vec<_>>())?,
        payments: db.payments(&needs.payments.iter().copied().collect::<Vec<_>>())?,
        ..State::default()
    };
    let mut ids = needs.accounts.clone();
    ids.extend(state.holds.values().flat_map(|h| [h.wallet, h.merchant, h.holds_account]));
    ids.extend(state.payments.values().flat_map(|p| [p.wallet, p.merchant, p.fee_account]));
    ids.extend(successors(db, &needs, &mut state, requests)?);
    state.debts = db.debts(&debtors(&needs, &state))?;
    ids.extend(system_accounts(db, &needs, &mut state, holds_accounts, requests, now_us)?);
    offline_and_access(db, &needs, &mut state, now_us)?;
    accounts(db, cache, &mut state, ids)?;
    transit(db, cache, &needs, &mut state, holds_accounts, now_us)?;
    keyed(db, &needs, &mut state)?;
    taps(db, &needs, &mut state)?;
    Ok(state)
}

/// Replaced wallets pass credits to their successors, which must be loaded too; and a
/// wallet that already took over from a card cannot take over from another, so for each
/// wallet a replacement names the writer must see whether it is a successor. Returns the
/// wallets involved.
fn successors(
    db: &mut Db,
    needs: &Needs,
    state: &mut State,
    requests: &[Op],
) -> Result<HashSet<AccountId>, LedgerError> {
    let mut wallets = needs.wallets.clone();
    wallets.extend(state.holds.values().map(|h| h.wallet));
    wallets.extend(state.payments.values().map(|p| p.wallet));
    state.successors = db.successors(&wallets)?;
    let new_wallets: HashSet<AccountId> = requests
        .iter()
        .filter_map(|op| match op {
            Op::Entry(Request { command: Command::ReplaceCard { new_wallet, .. }, .. }) => Some(*new_wallet),
            _ => None,
        })
        .collect();
    state.successors.extend(db.predecessors(&new_wallets)?);
    wallets.extend(state.successors.values().copied());
    Ok(wallets)
}

/// The wallets whose debts the batch reads, through any replacements: only where a
/// command reads them, so the usual payment batch costs no debt lookup.
fn debtors(needs: &Needs, state: &State) -> Vec<AccountId> {
    let mut debtors = Vec::new();
    for w in needs.debtors.iter().chain(state.payments.values().map(|p| &p.wallet)) {
        let mut w = *w;
        debtors.push(w);
        while let Some(next) = state.successors.get(&w) {
            w = *next;
            debtors.push(w);
        }
    }
    debtors
}

/// The offline-risk accounts of the batch's currencies, and the holds account of each
/// hold's currency (created on first use; holds accounts are remembered, they never
/// change). Returns their ids.
fn system_accounts(
    db: &mut Db,
    needs: &Needs,
    state: &mut State,
    holds_accounts: &mut HashMap<Currency, AccountId>,
    requests: &[Op],
    now_us: i64,
) -> Result<Vec<AccountId>, LedgerError> {
    let mut ids = Vec::new();
    for currency in &needs.risk_currencies {
        let id = db.system_account(AccountKind::OfflineRisk, *currency, now_us)?.id;
        state.risk_accounts.insert(*currency, id);
        ids.push(id);
    }
    for r in requests {
        if let Op::Entry(Request { command: Command::Hold { amount, .. }, .. }) = r {
            let currency = amount.currency();
            let id = match holds_accounts.get(&currency) {
                Some(id) => *id,
                None => {
                    let id = db.system_account(AccountKind::Holds, currency, now_us)?.id;
                    holds_accounts.insert(currency, id);
                    id
                }
            };
            ids.push(id);
        }
    }
    state.holds_accounts = holds_accounts.clone();
    Ok(ids)
}

/// Offline records' totals (payments and transit taps, per terminal, card and day; per
/// sync), merchants' recent shortfalls, and the access decisions that count against
/// holders' limits.
fn offline_and_access(db: &mut Db, needs: &Needs, state: &mut State, now_us: i64) -> Result<(), LedgerError> {
    for (terms, card) in &needs.offline {
        let day = (terms.credential_id, *card, utc_day(terms.record_time_us));
        if let Slot::Vacant(v) = state.offline_card_day.entry(day) {
            v.insert(db.offline_card_day(terms.credential_id, *card, terms.record_time_us)?);
        }
        let sync = (terms.credential_id, terms.sync_id);
        if let Slot::Vacant(v) = state.offline_sync_total.entry(sync) {
            v.insert(db.offline_sync_total(terms.credential_id, terms.sync_id)?);
        }
    }
    for merchant in &needs.offline_merchants {
        let since = now_us - OFFLINE_RISK_WINDOW_US - SHORTFALL_MARGIN_US;
        state.merchant_shortfalls.insert(*merchant, db.merchant_shortfalls(*merchant, since)?);
    }
    for (key, since) in &needs.access {
        state.access_times.insert(key.clone(), db.access_times(key, *since)?);
    }
    Ok(())
}

/// The accounts the batch touches with their balances: from the cache when there, the
/// others from the database.
fn accounts(
    db: &mut Db,
    cache: &mut HashMap<AccountId, AccountState>,
    state: &mut State,
    ids: HashSet<AccountId>,
) -> Result<(), LedgerError> {
    let mut missing = Vec::new();
    for id in ids {
        match cache.remove(&id) {
            Some(a) => {
                state.accounts.insert(id, a);
            }
            None => missing.push(id),
        }
    }
    for a in db.account_states(&missing)? {
        state.accounts.insert(a.account.id, a);
    }
    Ok(())
}

/// For transit taps: the fare tables, the routes' operators, each card's taps of the
/// weeks the batch may reprice with its rides' holds and payments, and the accounts they
/// move money between.
fn transit(
    db: &mut Db,
    cache: &mut HashMap<AccountId, AccountState>,
    needs: &Needs,
    state: &mut State,
    holds_accounts: &mut HashMap<Currency, AccountId>,
    now_us: i64,
) -> Result<(), LedgerError> {
    if needs.transit.is_empty() {
        return Ok(());
    }
    let (schedule, tz) = db.fare_schedule()?;
    let tz: chrono_tz::Tz = tz.and_then(|z| z.parse().ok()).unwrap_or(chrono_tz::UTC);
    let routes = db.route_operators()?;
    let mut ids: HashSet<AccountId> = routes.values().map(|r| r.0).collect();
    if needs.offline_transit {
        operators_shortfalls(db, state, &ids, now_us)?;
    }
    let seqs = cards_rides(db, needs, state, &tz, now_us)?;
    let holds = db.holds(&seqs)?;
    let payments = db.payments(&seqs)?;
    ids.extend(holds.values().flat_map(|h| [h.wallet, h.merchant, h.holds_account]));
    ids.extend(payments.values().flat_map(|p| [p.wallet, p.merchant, p.fee_account]));
    state.holds.extend(holds);
    state.payments.extend(payments);
    let currencies: HashSet<Currency> = needs
        .transit
        .values()
        .filter_map(|(wallet, _)| state.accounts.get(wallet).map(|a| a.account.currency))
        .collect();
    for currency in currencies {
        let fee = db.system_account(AccountKind::FeeRevenue, currency, now_us)?.id;
        let risk = db.system_account(AccountKind::OfflineRisk, currency, now_us)?.id;
        let holds = match holds_accounts.get(&currency) {
            Some(id) => *id,
            None => db.system_account(AccountKind::Holds, currency, now_us)?.id,
        };
        holds_accounts.insert(currency, holds);
        state.holds_accounts.insert(currency, holds);
        state.risk_accounts.insert(currency, risk);
        state.transit.fee_accounts.insert(currency, fee);
        ids.extend([fee, risk, holds]);
    }
    ids.retain(|id| !state.accounts.contains_key(id));
    accounts(db, cache, state, ids)?;
    state.transit.schedule = schedule;
    state.transit.tz = Some(tz);
    state.transit.routes = routes;
    Ok(())
}

/// Every batch card's taps and rides' entries in two reads: from the earliest card's start,
/// then each card keeps its own (as if read alone). The entries' sequence numbers.
fn cards_rides(
    db: &mut Db,
    needs: &Needs,
    state: &mut State,
    tz: &chrono_tz::Tz,
    now_us: i64,
) -> Result<Vec<i64>, LedgerError> {
    let from: HashMap<i64, i64> =
        needs.transit.iter().map(|(card, (_, time))| (*card, load_from_us(tz, (*time).min(now_us)))).collect();
    let cards: Vec<i64> = from.keys().copied().collect();
    let earliest = from.values().copied().min().unwrap_or(now_us);
    for tap in db.cards_taps(&cards, earliest)? {
        if from.get(&tap.card_id).is_some_and(|f| tap.tap.time_us >= *f) {
            state.transit.cards.entry(tap.card_id).or_default().taps.push(tap);
        }
    }
    let rides: Vec<i64> = state
        .transit
        .cards
        .values()
        .flat_map(|c| c.taps.iter().filter(|t| t.tap.kind == domain::fares::TapKind::On).map(|t| t.event_id))
        .collect();
    let mut seqs = Vec::new();
    for (card, seq, ride) in db.cards_ride_entries(&cards, &rides)? {
        if let Some(c) = state.transit.cards.get_mut(&card) {
            c.entries.entry(ride).or_default().push(seq);
            seqs.push(seq);
        }
    }
    Ok(seqs)
}

/// The recent shortfalls of every route's operator (`operators`), for a batch with offline
/// transit taps: a tap may reprice rides of any route, and each shortfall it makes counts
/// against the operator's risk cap.
fn operators_shortfalls(
    db: &mut Db,
    state: &mut State,
    operators: &HashSet<AccountId>,
    now_us: i64,
) -> Result<(), LedgerError> {
    let since = now_us - OFFLINE_RISK_WINDOW_US - SHORTFALL_MARGIN_US;
    for operator in operators {
        if let Slot::Vacant(v) = state.merchant_shortfalls.entry(*operator) {
            v.insert(db.merchant_shortfalls(*operator, since)?);
        }
    }
    Ok(())
}

/// The entries and events already written with the batch's idempotency keys.
fn keyed(db: &mut Db, needs: &Needs, state: &mut State) -> Result<(), LedgerError> {
    if needs.keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = needs.keys.iter().map(|k| k.as_str()).collect();
    for e in db.entries_by_key(&keys)? {
        if let Some(k) = e.idempotency_key.clone() {
            state.keyed.insert(k, e);
        }
    }
    for e in db.events_by_key(&keys)? {
        if let Some(k) = e.idempotency_key.clone() {
            state.keyed_events.insert(k, e);
        }
    }
    Ok(())
}

/// Cards' last counters, the taps among the batch's already used, and (for a batch with
/// events) the next event id and the queues' numbers.
fn taps(db: &mut Db, needs: &Needs, state: &mut State) -> Result<(), LedgerError> {
    state.last_counters = db.card_counters(&needs.cards)?;
    // Only taps that are not above their card's last counter can have been used; the
    // usual tap, above it, costs no lookup.
    let mut maybe_used = needs.offline_taps.clone();
    maybe_used.extend(
        needs.taps.iter().filter(|(card, ctr)| state.last_counters.get(card).is_some_and(|last| *ctr <= last.0)),
    );
    state.used_taps = db.used_counters(&maybe_used)?;
    // A batch of entries only learns the next event id if it refuses a tap (see the
    // writer's `write_batch`): the usual payment batch costs no lookup.
    if needs.events {
        state.next_event_id = db.last_event_id()? + 1;
        state.queue_max = db.queue_max(&needs.queues)?;
    }
    Ok(())
}
