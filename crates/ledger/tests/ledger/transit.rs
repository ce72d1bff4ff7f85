//! Transit fares in the writer (issue 18): docs/TRANSIT.md's worked examples posted through
//! the ledger, and random riding days, online (a tap at a time, the writer's clock at the
//! tap) and offline (every tap uploaded late, in random order), against the fare model
//! written apart from the code (`domain`'s `fares/model.rs`, shared with its tests): each
//! ride ends up charged what an always-online system charges, nothing stays held, every
//! operator gets its rides' fares less the city's fee.

use std::collections::HashMap;

use card::CardUid;
use domain::fares::{Tap, TapKind};
use domain::money::FeeRate;
use domain::registry::{Categories, Category, MerchantCategory};
use ledger::domain::{
    AccountId, AccountKind, EntryKind, Event, OfflineTerms, OfflineTransit, Op, Outcome, Rejection, TransitTap,
};
use ledger::money::Currency;
use ledger::registry::{NewCardRow, NewHolderRow, NewMerchantRow};
use ledger::transit::NewRouteRow;
use ledger::{Backend, Ledger, LedgerError};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::support::{City, TestClock, TestDb};
use crate::{check, check_eq};

#[allow(unused_imports)]
#[path = "../../../domain/src/fares/model.rs"]
mod fare_model;

type TestResult = Result<(), String>;

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The fee the city takes from transit operators.
const FEE: &str = "0.02";

/// A city with the page's two routes (route 1 a bus of operator A, route 2 a ferry of
/// operator B), the page's fare table in force, and riders with a card each.
struct Network {
    _db: TestDb,
    clock: TestClock,
    ledger: Ledger,
    city: City,
    /// The operators' accounts, by route.
    operators: HashMap<i64, AccountId>,
    /// Riders: (card id, wallet, category).
    riders: Vec<(i64, AccountId, Option<&'static str>)>,
}

fn network(backend: Backend, categories: &[Option<&'static str>]) -> Result<Network, String> {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    clock.0.store(fare_model::local_us("2026-12-06T00:00"), std::sync::atomic::Ordering::SeqCst);
    let ledger = crate::support::open(&db, &clock)?;
    let city = City::new(&ledger, categories.len(), 2, 1_000_000_000)?;
    let now = clock.now();
    let mut operators = HashMap::new();
    let mut riders = Vec::new();
    ledger
        .registry_transaction(|r| {
            for (i, route) in [(0usize, 1i64), (1, 2)] {
                let m = r.insert_merchant(
                    NewMerchantRow {
                        name: &format!("operator {i}"),
                        category: MerchantCategory::Transit,
                        fee_rate: FeeRate::parse(FEE).expect("a rate"),
                        account_id: city.merchants[i],
                    },
                    now,
                    1000 + i as i64,
                )?;
                let stops =
                    serde_json::to_string(&(0..20).map(|s| format!("stop {s}")).collect::<Vec<_>>()).expect("stops");
                let mode = if route == 1 { "bus" } else { "ferry" };
                let new = NewRouteRow { merchant_id: m.id, name: &format!("route {route}"), mode, stops: &stops };
                let made = r.insert_route(new, now, 1100 + route)?;
                assert_eq!(made.id, route, "the page's route ids");
                operators.insert(route, city.merchants[i]);
            }
            let table = serde_json::to_string(&fare_model::page_table()).expect("table");
            r.insert_fare_table(0, "Asia/Jakarta", &table, now, 1200)?;
            for (i, category) in categories.iter().enumerate() {
                let cats = Categories::of(
                    &category.map(|c| Category::parse(c).expect("a category")).into_iter().collect::<Vec<_>>(),
                );
                let nik = [i as u8; 32];
                let h = r.insert_holder(
                    NewHolderRow { name: "rider", nik_hash: &nik, categories: cats },
                    now,
                    2000 + i as i64,
                )?;
                let uid = CardUid::from([4, 0, 0, 0, 0, (i >> 8) as u8, i as u8]);
                let card = r.insert_card(
                    NewCardRow { uid, holder_id: h.id, account_id: city.wallets[i], key_version: 1 },
                    now,
                    3000 + i as i64,
                )?;
                riders.push((card.id, city.wallets[i], *category));
            }
            Ok(())
        })
        .map_err(s)?;
    for w in &city.wallets {
        ledger.submit_blocking(city.topup(*w, 1_000_000)).map_err(s)?;
    }
    Ok(Network { _db: db, clock, ledger, city, operators, riders })
}

/// The validator the tests' taps are at.
const VALIDATOR: i64 = 7;

/// An uploaded tap's record, within limits no test reaches.
fn uploaded(tap: Tap) -> Option<OfflineTransit> {
    let terms = OfflineTerms { credential_id: VALIDATOR, ..crate::support::open_terms(0, tap.time_us) };
    Some(OfflineTransit { terms, fare_minor: 0 })
}

fn tap_event(rider: (i64, AccountId, Option<&'static str>), tap: Tap, offline: Option<OfflineTransit>) -> Event {
    Event {
        kind: "transit_tap".into(),
        scope: Some(format!("route:{}", tap.route)),
        card_id: Some(rider.0),
        card_read_counter: None,
        queue_key: None,
        idempotency_key: None,
        payload: "{}".into(),
        access: None,
        transit: Some(TransitTap {
            wallet: rider.1,
            categories: rider.2.map(str::to_owned).into_iter().collect(),
            tap: Some(tap),
            credential_id: VALIDATOR,
            offline,
            fix: false,
        }),
    }
}

/// Each ride's net charge (payments and captures less refunds), in boarding order, and
/// what its open holds still hold.
fn ride_charges(ledger: &Ledger, card: i64) -> Result<(Vec<i64>, i64), String> {
    let taps = ledger.registry(|r| r.card_taps(card, 0)).map_err(s)?;
    let rides: Vec<i64> = taps.iter().filter(|t| t.2.kind == TapKind::On).map(|t| t.0).collect();
    let entries = ledger.registry(|r| r.ride_entries(card, &rides)).map_err(s)?;
    let mut net: HashMap<i64, i64> = HashMap::new();
    let mut held = 0;
    for (seq, ride) in entries {
        let e = ledger.entry(seq).map_err(s)?.ok_or("an entry is gone")?;
        let n = net.entry(ride).or_default();
        match e.kind {
            EntryKind::Payment | EntryKind::Capture => *n += e.amount_minor,
            EntryKind::Refund => *n -= e.amount_minor,
            EntryKind::Hold => held += e.amount_minor,
            EntryKind::Void => {}
            other => return Err(format!("a ride's entry of kind {other:?}")),
        }
        if matches!(e.kind, EntryKind::Capture | EntryKind::Void) {
            let hold = ledger.entry(e.related_seq.ok_or("a capture of no hold")?).map_err(s)?.ok_or("no hold")?;
            held -= hold.amount_minor;
        }
    }
    Ok((rides.iter().map(|r| net.get(r).copied().unwrap_or(0)).collect(), held))
}

/// Moves the clock past every time limit and lets the sweep close the rides left open.
fn close_all(n: &Network, after_us: i64) -> TestResult {
    let now = n.clock.now().max(after_us) + 3 * 3_600_000_000;
    n.clock.0.store(now, std::sync::atomic::Ordering::SeqCst);
    n.ledger.close_due_rides().map_err(s)?;
    check_eq!(n.ledger.close_due_rides().map_err(s)?.len(), 0);
    Ok(())
}

/// docs/TRANSIT.md's worked examples, each a rider, posted through the writer as late
/// uploads in order: each ride is charged what the page says.
pub fn worked_examples(backend: Backend) -> TestResult {
    let examples = fare_model::examples();
    let n = network(backend, &examples.iter().map(|e| e.category).collect::<Vec<_>>())?;
    let mut last = 0;
    for (i, ex) in examples.iter().enumerate() {
        for tap in &ex.taps {
            n.ledger.record_blocking(tap_event(n.riders[i], *tap, uploaded(*tap))).map_err(s)?;
            last = last.max(tap.time_us);
        }
    }
    close_all(&n, last)?;
    for (i, ex) in examples.iter().enumerate() {
        let (charges, held) = ride_charges(&n.ledger, n.riders[i].0)?;
        let expected: Vec<i64> = ex.charges.iter().map(|c| c.0).collect();
        check!(charges == expected, "example {:?}: charged {charges:?}, the page says {expected:?}", ex.lines);
        check_eq!(held, 0);
        let paid = 1_000_000 - n.ledger.balance(n.riders[i].1).map_err(s)?;
        check_eq!(paid, expected.iter().sum::<i64>());
    }
    Ok(())
}

/// Random riding days: half the riders tap online (the clock at each tap), the others'
/// taps are uploaded late, in random order, some while the day is still going. Every ride
/// ends up charged what the model charges; nothing stays held; the operators got exactly
/// their rides' fares less the fee.
pub fn late_uploads_match_always_online(backend: Backend) -> TestResult {
    for seed in [18, 7, 42, 2026, 9] {
        riding_days(backend, seed).map_err(|e| format!("seed {seed}: {e}"))?;
    }
    Ok(())
}

fn riding_days(backend: Backend, seed: u64) -> TestResult {
    let categories = [None, Some("student"), Some("senior"), None, Some("student"), None, None, Some("resident")];
    let n = network(backend, &categories)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = fare_model::local_us("2026-12-06T21:00");
    let journeys = random_journeys(&mut rng, categories.len(), start);
    // Online riders, all interleaved in time order; then the late uploads, shuffled.
    let mut online: Vec<(usize, Tap)> = journeys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .flat_map(|(i, j)| j.iter().map(move |t| (i, *t)))
        .collect();
    online.sort_by_key(|(_, t)| t.time_us);
    for (i, tap) in &online {
        n.clock.0.store(tap.time_us, std::sync::atomic::Ordering::SeqCst);
        n.ledger.close_due_rides().map_err(s)?;
        n.ledger.record_blocking(tap_event(n.riders[*i], *tap, None)).map_err(s)?;
    }
    let mut late: Vec<(usize, Tap)> = journeys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .flat_map(|(i, j)| j.iter().map(move |t| (i, *t)))
        .collect();
    late.shuffle(&mut rng);
    for (i, tap) in &late {
        n.ledger.record_blocking(tap_event(n.riders[*i], *tap, uploaded(*tap))).map_err(s)?;
    }
    let last = journeys.iter().flatten().map(|t| t.time_us).max().unwrap_or(start);
    close_all(&n, last)?;
    let table = fare_model::page_table();
    let mut due: HashMap<i64, i64> = HashMap::new();
    let rate = FeeRate::parse(FEE).map_err(s)?;
    for (i, taps) in journeys.iter().enumerate() {
        let (charges, held) = ride_charges(&n.ledger, n.riders[i].0)?;
        let expected = fare_model::model(&table, categories[i], taps);
        check!(
            charges == expected,
            "rider {i} ({:?}): charged {charges:?}, the model says {expected:?}",
            categories[i]
        );
        check_eq!(held, 0);
        check_eq!(1_000_000 - n.ledger.balance(n.riders[i].1).map_err(s)?, expected.iter().sum::<i64>());
        // Which operator each ride pays: the boarding's route.
        let ons: Vec<&Tap> = {
            let mut sorted: Vec<&Tap> = taps.iter().collect();
            sorted.sort_by_key(|t| t.time_us);
            sorted.into_iter().filter(|t| t.kind == TapKind::On).collect()
        };
        for (on, charge) in ons.iter().zip(&expected) {
            *due.entry(on.route).or_default() += charge - rate.fee_minor(*charge);
        }
    }
    for (route, account) in &n.operators {
        let got = n.ledger.balance(*account).map_err(s)?;
        let want = due.get(route).copied().unwrap_or(0);
        check!(got == want, "route {route}: the operator has {got}, the model's fares less the fee {want}");
    }
    let holds = n.ledger.system_account(AccountKind::Holds, Currency::IDR).map_err(s)?;
    check_eq!(n.ledger.balance(holds.id).map_err(s)?, 0);
    let books: i64 = n.ledger.trial_balance().map_err(s)?.iter().map(|l| l.balances_sum_minor).sum();
    check_eq!(books, 0);
    Ok(())
}

/// Each rider's taps from `start`: 8 to 30, 1 to 300 minutes apart, on either route, 70 %
/// boardings; from a Sunday evening, so rides cross days and an ISO week.
fn random_journeys(rng: &mut rand::rngs::StdRng, riders: usize, start: i64) -> Vec<Vec<Tap>> {
    (0..riders)
        .map(|_| {
            let mut t = start;
            (0..rng.random_range(8..30))
                .map(|_| {
                    t += rng.random_range(1..300) * 60_000_000;
                    let kind = if rng.random_bool(0.7) { TapKind::On } else { TapKind::Off };
                    Tap { time_us: t, route: rng.random_range(1..=2), stop: rng.random_range(0..15), kind }
                })
                .collect()
        })
        .collect()
}

/// An online boarding the wallet cannot pay is refused and writes nothing; a tap before
/// any fare table, or on a route the table does not price, is `fare_unavailable`.
pub fn refusals(backend: Backend) -> TestResult {
    let n = network(backend, &[None, None])?;
    let rider = n.riders[0];
    // Empty the wallet but 1000: a bus ride is 3500.
    n.ledger.submit_blocking(n.city.pay(rider.1, n.city.merchants[0], 1_000_000 - 1000, 0)).map_err(s)?;
    let now = n.clock.now();
    let on = |route| Tap { time_us: now, route, stop: 0, kind: TapKind::On };
    let before = n.ledger.last_seq().map_err(s)?;
    let refused = n.ledger.record_blocking(tap_event(rider, on(1), None));
    check!(matches!(refused, Err(LedgerError::Rejected(Rejection::InsufficientFunds))), "{refused:?}");
    check_eq!(n.ledger.last_seq().map_err(s)?, before);
    check_eq!(n.ledger.registry(|r| r.card_taps(rider.0, 0)).map_err(s)?.len(), 0);
    let unknown = n.ledger.record_blocking(tap_event(n.riders[1], on(9), None));
    check!(matches!(unknown, Err(LedgerError::Rejected(Rejection::FareUnavailable))), "{unknown:?}");
    // Offline, the same ride is owed: the wallet pays 1000, the card owes 2500.
    n.ledger.record_blocking(tap_event(rider, on(1), uploaded(on(1)))).map_err(s)?;
    check_eq!(n.ledger.balance(rider.1).map_err(s)?, 0);
    check_eq!(n.ledger.wallet_debt(rider.1).map_err(s)?, 2500);
    a_refused_boarding_undoes_the_rides_it_closed(&n)
}

/// A ferry ride is open (6000 held); an hour later the rider boards a bus (3500) with 2000
/// left: closing the ferry ride (its hold captured) comes first, then the bus fare, which
/// the wallet cannot pay. The refusal undoes the capture too: the ferry is still held, the
/// balances as they were, no tap recorded. Topped up, the same boarding goes through.
fn a_refused_boarding_undoes_the_rides_it_closed(n: &Network) -> TestResult {
    let rider = n.riders[1];
    n.ledger.submit_blocking(n.city.pay(rider.1, n.city.merchants[0], 992_000, 0)).map_err(s)?;
    let ferry = Tap { time_us: n.clock.now(), route: 2, stop: 0, kind: TapKind::On };
    n.ledger.record_blocking(tap_event(rider, ferry, None)).map_err(s)?;
    check_eq!(ride_charges(&n.ledger, rider.0)?, (vec![0], 6000));
    check_eq!(n.ledger.balance(rider.1).map_err(s)?, 2000);
    n.clock.advance_us(61 * 60_000_000);
    let operator = n.ledger.balance(n.operators[&2]).map_err(s)?;
    let bus = Tap { time_us: n.clock.now(), route: 1, stop: 0, kind: TapKind::On };
    let refused = n.ledger.record_blocking(tap_event(rider, bus, None));
    check!(matches!(refused, Err(LedgerError::Rejected(Rejection::InsufficientFunds))), "{refused:?}");
    check_eq!(ride_charges(&n.ledger, rider.0)?, (vec![0], 6000));
    check_eq!(n.ledger.balance(rider.1).map_err(s)?, 2000);
    check_eq!(n.ledger.balance(n.operators[&2]).map_err(s)?, operator);
    // The same batch goes on from the state before the refusal: a top-up, then the bus.
    n.ledger.submit_blocking(n.city.topup(rider.1, 10_000)).map_err(s)?;
    n.ledger.record_blocking(tap_event(rider, bus, None)).map_err(s)?;
    check_eq!(ride_charges(&n.ledger, rider.0)?, (vec![6000, 3500], 0));
    check_eq!(n.ledger.balance(rider.1).map_err(s)?, 2000 + 10_000 - 3500);
    Ok(())
}

/// The validator's limits as of sync `sync` (what `api::offline` puts in an uploaded
/// tap's terms): a bus ride is 3500.
fn bus_terms(sync: i64, time_us: i64) -> OfflineTerms {
    OfflineTerms {
        credential_id: VALIDATOR,
        record_seq: 0,
        record_time_us: time_us,
        sync_id: sync,
        counter_floor: None,
        per_tap_minor: 6000,
        per_card_per_day_minor: 8000,
        outstanding_minor: 12_000,
        merchant_risk_cap_minor: 3000,
    }
}

/// A bus boarding uploaded under sync `sync`, the validator having charged `fare`.
fn bus_upload(rider: (i64, AccountId, Option<&'static str>), local: &str, sync: i64, fare: i64) -> Event {
    let tap = Tap { time_us: fare_model::local_us(local), route: 1, stop: 0, kind: TapKind::On };
    tap_event(rider, tap, Some(OfflineTransit { terms: bus_terms(sync, tap.time_us), fare_minor: fare }))
}

/// What a refused tap must leave as it was: the journal's length, the riders' balances,
/// debts and taps, the operators' and the offline-risk account's balances.
fn books(ledger: &Ledger, n: &Network) -> Result<Vec<i64>, String> {
    let mut out = vec![ledger.last_seq().map_err(s)?];
    for (card, wallet, _) in &n.riders {
        out.push(ledger.balance(*wallet).map_err(s)?);
        out.push(ledger.wallet_debt(*wallet).map_err(s)?);
        out.push(ledger.registry(|r| r.card_taps(*card, 0)).map_err(s)?.len() as i64);
    }
    for account in n.operators.values() {
        out.push(ledger.balance(*account).map_err(s)?);
    }
    out.push(ledger.balance(ledger.system_account(AccountKind::OfflineRisk, Currency::IDR).map_err(s)?.id).map_err(s)?);
    Ok(out)
}

/// Records `event` on `ledger` and expects `refusal`, with nothing written.
fn refused(ledger: &Ledger, n: &Network, event: Event, refusal: Rejection) -> TestResult {
    let before = books(ledger, n)?;
    let got = ledger.record_blocking(event);
    check!(matches!(&got, Err(LedgerError::Rejected(r)) if *r == refusal), "expected {refusal:?}, got {got:?}");
    check_eq!(books(ledger, n)?, before);
    Ok(())
}

/// Offline taps are held to the validator's limits as of its sync in the writer, like
/// offline payments: per card per UTC day, in total since the sync, and the city's cap on
/// the operator's shortfalls in 24 hours. A tap counts the validator's fare or the writer's
/// charge of its ride, whichever is more (a validator that journals a fare of 0 still
/// counts the ride). A refused tap writes nothing; taps in one batch count against each
/// other; a later batch and a ledger opened again read the totals from the database.
pub fn offline_limits(backend: Backend) -> TestResult {
    let n = network(backend, &[None, None, None, None, None])?;
    n.clock.0.store(fare_model::local_us("2026-12-08T20:00"), std::sync::atomic::Ordering::SeqCst);
    let r = n.riders.clone();
    // Riders 2 and 3 can pay 1000 and 500.
    n.ledger.submit_blocking(n.city.pay(r[2].1, n.city.merchants[1], 1_000_000 - 1000, 0)).map_err(s)?;
    n.ledger.submit_blocking(n.city.pay(r[3].1, n.city.merchants[1], 1_000_000 - 500, 0)).map_err(s)?;
    // Per card per day (8000): two rides journaled at 0 count 3500 each; the third, 3000
    // under the daily cap, would make 10000.
    n.ledger.record_blocking(bus_upload(r[0], "2026-12-07T07:00", 3, 0)).map_err(s)?;
    n.ledger.record_blocking(bus_upload(r[0], "2026-12-07T09:00", 3, 0)).map_err(s)?;
    let card_day = || bus_upload(r[0], "2026-12-07T11:00", 3, 0);
    refused(&n.ledger, &n, card_day(), Rejection::OfflineLimitCardDay)?;
    // Since the sync (12000): 7000, then rider 1's 3500, then no more.
    n.ledger.record_blocking(bus_upload(r[1], "2026-12-07T07:30", 3, 3500)).map_err(s)?;
    let outstanding = || bus_upload(r[1], "2026-12-07T09:30", 3, 3500);
    refused(&n.ledger, &n, outstanding(), Rejection::OfflineLimitOutstanding)?;
    one_batch_counts_its_own_taps(&n)?;
    // The operator's shortfalls (3000): rider 2 owes 2500 (in the batch); rider 3's 3000
    // alone would fit, not with rider 2's.
    let risk = || bus_upload(r[3], "2026-12-07T08:00", 4, 3500);
    refused(&n.ledger, &n, risk(), Rejection::OfflineRiskCap)?;
    // Opened again: the totals come from the database.
    let Network { _db, clock, ledger, city, operators, riders } = n;
    drop(ledger);
    let n = Network { ledger: crate::support::open(&_db, &clock)?, _db, clock, city, operators, riders };
    refused(&n.ledger, &n, card_day(), Rejection::OfflineLimitCardDay)?;
    refused(&n.ledger, &n, outstanding(), Rejection::OfflineLimitOutstanding)?;
    refused(&n.ledger, &n, risk(), Rejection::OfflineRiskCap)?;
    // The next day, under a new sync, rider 0 rides again.
    n.ledger.record_blocking(bus_upload(n.riders[0], "2026-12-08T07:00", 6, 3500)).map_err(s)?;
    a_tap_off_counts_nothing(&n)
}

/// Rider 4 on the ferry offline (route 2, at most 6000): the tap on counts the maximum
/// (6000 of the card's 8000 a day), the tap off (two stops, 3000 journaled) nothing, so it
/// is taken; the ride costs 3000.
fn a_tap_off_counts_nothing(n: &Network) -> TestResult {
    let rider = n.riders[4];
    let ferry = |local: &str, stop: i64, kind: TapKind, fare: i64| {
        let tap = Tap { time_us: fare_model::local_us(local), route: 2, stop, kind };
        tap_event(rider, tap, Some(OfflineTransit { terms: bus_terms(7, tap.time_us), fare_minor: fare }))
    };
    n.ledger.record_blocking(ferry("2026-12-08T10:00", 0, TapKind::On, 6000)).map_err(s)?;
    n.ledger.record_blocking(ferry("2026-12-08T10:30", 2, TapKind::Off, 3000)).map_err(s)?;
    check_eq!(ride_charges(&n.ledger, rider.0)?.0.last().copied(), Some(3000));
    let third = n.ledger.record_blocking(ferry("2026-12-08T11:00", 0, TapKind::On, 6000));
    check!(third.is_err(), "a second ferry boarding over the day's limit was taken: {third:?}");
    Ok(())
}

/// Writes `events` in one batch; each one's refusal, if any.
fn batch(ledger: &Ledger, events: Vec<Event>) -> Result<Vec<Option<Rejection>>, String> {
    let rt = tokio::runtime::Builder::new_current_thread().build().map_err(s)?;
    let outcomes = rt.block_on(ledger.submit_ops(events.into_iter().map(Op::Event).collect())).map_err(s)?;
    let mut codes = Vec::new();
    for o in outcomes {
        codes.push(match o {
            Ok(Outcome::Recorded(_)) => None,
            Err(LedgerError::Rejected(r)) => Some(r),
            other => return Err(format!("an upload's outcome: {other:?}")),
        });
    }
    Ok(codes)
}

/// Uploads that count against each other in one batch. Under sync 5, three of rider 4's
/// rides and one of rider 1's: rider 4's first two make 7000 of the card's 8000 a day, the
/// third (3500 journaled) is refused, and the batch goes on with rider 1's (10500 of the
/// sync's 12000). Under sync 4, riders 2 and 3 ride with 1000 and 500: rider 2 owes 2500
/// of the operator's 3000, so rider 3 (3000 short) is refused and nothing of it written.
fn one_batch_counts_its_own_taps(n: &Network) -> TestResult {
    let rider = n.riders[4];
    let mut events: Vec<Event> = ["2026-12-07T07:00", "2026-12-07T09:00", "2026-12-07T11:00"]
        .iter()
        .map(|t| bus_upload(rider, t, 5, 3500))
        .collect();
    events.push(bus_upload(n.riders[1], "2026-12-08T07:00", 5, 3500));
    check_eq!(batch(&n.ledger, events)?, vec![None, None, Some(Rejection::OfflineLimitCardDay), None]);
    check_eq!(ride_charges(&n.ledger, rider.0)?, (vec![3500, 3500], 0));
    let (r2, r3) = (n.riders[2], n.riders[3]);
    let events = vec![bus_upload(r2, "2026-12-07T08:00", 4, 3500), bus_upload(r3, "2026-12-07T08:00", 4, 3500)];
    check_eq!(batch(&n.ledger, events)?, vec![None, Some(Rejection::OfflineRiskCap)]);
    check_eq!(n.ledger.wallet_debt(r2.1).map_err(s)?, 2500);
    check_eq!(n.ledger.wallet_debt(r3.1).map_err(s)?, 0);
    check_eq!(n.ledger.balance(r3.1).map_err(s)?, 500);
    check_eq!(n.ledger.registry(|r| r.card_taps(r3.0, 0)).map_err(s)?.len(), 0);
    Ok(())
}
