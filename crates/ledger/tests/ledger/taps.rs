//! Card taps (replay and clone detection) and audit events.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ledger::domain::{AccountId, Event, IdempotencyKey, Outcome, Posted, References, Rejection, Request};
use ledger::verify::{verify, VerifyError, VerifyOptions};
use ledger::{Backend, EventFilter, Ledger, LedgerError};

use crate::support::{raw_sql, City, TestClock, TestDb};
use crate::{check, check_eq};

type TestResult = Result<(), String>;

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn rejection<T>(r: Result<T, LedgerError>) -> Option<Rejection> {
    match r {
        Err(LedgerError::Rejected(x)) => Some(x),
        _ => None,
    }
}

fn tap(card: i64, counter: i64) -> References {
    References {
        card_id: Some(card),
        card_read_counter: Some(counter),
        terminal_id: Some("pos-1".into()),
        ..Default::default()
    }
}

fn event(kind: &str, card: Option<(i64, i64)>, queue: Option<&str>, payload: &str) -> Event {
    Event {
        kind: kind.into(),
        scope: Some("service_point:1".into()),
        card_id: card.map(|c| c.0),
        card_read_counter: card.map(|c| c.1),
        queue_key: queue.map(str::to_owned),
        idempotency_key: None,
        payload: payload.into(),
        access: None,
        transit: None,
    }
}

/// A payment of 100 from the city's first wallet to its first merchant, made by a tap.
fn tapped_payment(city: &City, references: References) -> Request {
    city.pay(city.wallets[0], city.merchants[0], 100, 0).with_references(references)
}

/// A tap is accepted with a counter above the card's last, or once with an unused one at
/// most 4 below it less than 10 s after the last rose (taps of one card racing to the
/// server); a used one, one further below, or one that comes later, is refused, recorded
/// as a suspected clone, and writes nothing else.
pub fn strictly_increasing(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = crate::support::open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    ledger.submit_blocking(city.topup(city.wallets[0], 100_000)).map_err(s)?;
    replays_and_races_of_one_card(&ledger, &city, &clock)?;
    taps_in_one_batch(&ledger, &city)?;
    refusals_are_on_record(&ledger)?;
    refused_payments_and_retries_use_no_tap(&ledger, &city)?;
    // The database itself refuses to move a counter back.
    let back = raw_sql(&db, "UPDATE card_counters SET last_counter = 1 WHERE card_id = 7");
    check!(back.is_err(), "moving a counter back must fail");
    check_eq!(ledger.card_last_counter(7).map_err(s)?, Some(146));
    Ok(())
}

/// Card 7: a used counter or one far below the last is a replay and writes no entry;
/// counters may skip; an unused one at most 4 below races the last tap for 10 s after it
/// rose, and a newer tap opens a new window.
fn replays_and_races_of_one_card(ledger: &Ledger, city: &City, clock: &TestClock) -> TestResult {
    let pay = |r| tapped_payment(city, r);
    ledger.submit_blocking(pay(tap(7, 141))).map_err(s)?;
    let before = ledger.last_seq().map_err(s)?;
    check_eq!(rejection(ledger.submit_blocking(pay(tap(7, 141)))), Some(Rejection::CardReplay));
    // Below the last is a replay unless it races the last tap: far below, never used or not.
    check_eq!(rejection(ledger.submit_blocking(pay(tap(7, 77)))), Some(Rejection::CardReplay));
    check_eq!(rejection(ledger.submit_blocking(pay(tap(7, 3)))), Some(Rejection::CardReplay));
    check_eq!(ledger.last_seq().map_err(s)?, before);
    // Counters may skip (taps at other readers that never reached us); another card is
    // independent.
    ledger.submit_blocking(pay(tap(7, 145))).map_err(s)?;
    ledger.submit_blocking(pay(tap(8, 141))).map_err(s)?;
    // Racing the last tap: an unused counter at most 4 below is accepted once, and the
    // last one stays; 5 below is a replay.
    ledger.submit_blocking(pay(tap(7, 144))).map_err(s)?;
    ledger.submit_blocking(pay(tap(7, 141 + 1))).map_err(s)?;
    check_eq!(rejection(ledger.submit_blocking(pay(tap(7, 144)))), Some(Rejection::CardReplay));
    check_eq!(rejection(ledger.submit_blocking(pay(tap(7, 140)))), Some(Rejection::CardReplay));
    // 10 s after the last rose, nothing below it races any more: a skimmed tap held back
    // is refused, however close its counter.
    clock.advance_us(10_000_000);
    check_eq!(rejection(ledger.submit_blocking(pay(tap(7, 143)))), Some(Rejection::CardReplay));
    // A newer tap opens a new window: the same counter is now a genuine race.
    ledger.submit_blocking(pay(tap(7, 146))).map_err(s)?;
    clock.advance_us(9_999_999);
    ledger.submit_blocking(pay(tap(7, 143))).map_err(s)?;
    Ok(())
}

/// Card 9 in batches: the same counter twice, the second is refused; out of order, both
/// are accepted, then neither again. Cards 7 and 9 end at 146 and 5; card 10 has none.
fn taps_in_one_batch(ledger: &Ledger, city: &City) -> TestResult {
    let pay = |r| tapped_payment(city, r);
    // Twice in one batch: the second is refused.
    let results = ledger.submit_many_blocking(vec![pay(tap(9, 1)), pay(tap(9, 1)), pay(tap(9, 2))]).map_err(s)?;
    check!(results[0].is_ok() && results[2].is_ok(), "first and third in the batch");
    check_eq!(rejection(results[1].clone()), Some(Rejection::CardReplay));
    // Out of order in one batch: both accepted, then neither again.
    let results = ledger.submit_many_blocking(vec![pay(tap(9, 5)), pay(tap(9, 4))]).map_err(s)?;
    check!(results.iter().all(|r| r.is_ok()), "4 after 5 in one batch: {results:?}");
    let results = ledger.submit_many_blocking(vec![pay(tap(9, 4)), pay(tap(9, 5))]).map_err(s)?;
    check!(results.iter().all(|r| rejection(r.clone()) == Some(Rejection::CardReplay)), "{results:?}");
    check_eq!(ledger.card_last_counter(7).map_err(s)?, Some(146));
    check_eq!(ledger.card_last_counter(9).map_err(s)?, Some(5));
    check_eq!(ledger.card_last_counter(10).map_err(s)?, None);
    Ok(())
}

/// The refusals are on record for the operator, with what the card had reached, and each
/// is a leaf of the audit log, which uses no counter.
fn refusals_are_on_record(ledger: &Ledger) -> TestResult {
    let replays = ledger.card_replays(7, 100).map_err(s)?;
    let seen: Vec<(i64, i64, Option<&str>)> =
        replays.iter().map(|r| (r.counter, r.last_counter, r.source.as_deref())).collect();
    let expected = [(141, 141), (77, 141), (3, 141), (144, 145), (140, 145), (143, 145)];
    check_eq!(seen, expected.iter().map(|&(c, l)| (c, l, Some("pos-1"))).collect::<Vec<_>>());
    // Each refusal is also a leaf of the audit log, which uses no counter.
    let filter = EventFilter { kind: Some("card_replay".into()), card_id: Some(7), ..Default::default() };
    let leaves = ledger.events(&filter, 0, 100).map_err(s)?;
    let logged: Vec<(i64, i64)> = leaves
        .iter()
        .map(|e| {
            let p: serde_json::Value = serde_json::from_str(&e.payload).unwrap_or_default();
            (p["counter"].as_i64().unwrap_or(-1), p["last_counter"].as_i64().unwrap_or(-1))
        })
        .collect();
    check_eq!(logged, expected.to_vec());
    check!(leaves.iter().all(|e| e.audit.is_some() && e.card_read_counter.is_none()), "{leaves:?}");
    check_eq!(ledger.card_replays(9, 100).map_err(s)?.len(), 3);
    Ok(())
}

/// A payment refused for want of funds does not use up its tap; an idempotent retry of an
/// accepted tap is not a replay.
fn refused_payments_and_retries_use_no_tap(ledger: &Ledger, city: &City) -> TestResult {
    // A rejected payment (no funds) does not use up its tap: the holder tops up and the
    // same tap goes through.
    let big = city.pay(city.wallets[0], city.merchants[0], 10_000_000, 0).with_references(tap(11, 5));
    check_eq!(rejection(ledger.submit_blocking(big.clone())), Some(Rejection::InsufficientFunds));
    check_eq!(ledger.card_last_counter(11).map_err(s)?, None);
    // An idempotent retry of an accepted tap is not a replay: it returns the first result.
    let keyed = tapped_payment(city, tap(12, 1)).with_key(IdempotencyKey::parse("retry-1").map_err(|_| "key")?);
    let first = ledger.submit_blocking(keyed.clone()).map_err(s)?;
    let again = ledger.submit_blocking(keyed).map_err(s)?;
    check!(again.replayed && again.entry == first.entry, "retry returns the first entry");
    check_eq!(ledger.card_replays(12, 100).map_err(s)?.len(), 0);
    Ok(())
}

/// Many threads present taps of one card at once, as a cloned card would at several
/// terminals: each counter is accepted at most once, a fresh one is refused only if far
/// below the last, each refused tap is recorded, and one counter presented by 16 threads at once is accepted
/// exactly once — by an entry or an event, never both.
pub fn concurrent(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = crate::support::open(&db, &clock)?;
    let city = Arc::new(City::new(&ledger, 1, 1, 100_000_000)?);
    ledger.submit_blocking(city.topup(city.wallets[0], 1_000_000)).map_err(s)?;
    let accepted = eight_threads_tap_one_card(&ledger, &city)?;
    accepted_counters_increase(&ledger, accepted)?;
    one_counter_sixteen_presenters(&ledger, &city)
}

/// Eight threads present 40 taps each of card 5, with counters taken in turn, half as
/// payments and half as events: each tap is accepted or refused as a replay, and every
/// refusal is recorded and is a leaf. Returns how many were accepted.
fn eight_threads_tap_one_card(ledger: &Ledger, city: &Arc<City>) -> Result<usize, String> {
    const THREADS: usize = 8;
    const TAPS: usize = 40;
    let next = Arc::new(AtomicI64::new(1));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ledger, city, next, barrier) = (ledger.clone(), city.clone(), next.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut out = Vec::new();
                for _ in 0..TAPS {
                    let counter = next.fetch_add(1, Ordering::SeqCst);
                    let r = if t % 2 == 0 {
                        let req = city.pay(city.wallets[0], city.merchants[0], 10, 0).with_references(tap(5, counter));
                        ledger.submit_blocking(req).map(|_| ())
                    } else {
                        ledger.record_blocking(event("balance_inquiry", Some((5, counter)), None, "{}")).map(|_| ())
                    };
                    out.push((counter, r));
                }
                out
            })
        })
        .collect();
    let mut accepted = 0;
    let mut refused = 0;
    for h in handles {
        for (_, r) in h.join().map_err(|_| "thread panicked")? {
            match r {
                Ok(()) => accepted += 1,
                Err(LedgerError::Rejected(Rejection::CardReplay)) => refused += 1,
                Err(e) => return Err(format!("unexpected: {e}")),
            }
        }
    }
    check_eq!(accepted + refused, THREADS * TAPS);
    check_eq!(ledger.card_replays(5, 1_000).map_err(s)?.len(), refused);
    let replay_leaves = EventFilter { kind: Some("card_replay".into()), card_id: Some(5), ..Default::default() };
    check_eq!(ledger.events(&replay_leaves, 0, 1_000).map_err(s)?.len(), refused);
    Ok(accepted)
}

/// Card 5's accepted counters, in the order the log recorded them (entries and events
/// alike), strictly increase and are each accepted once; the last is the card's last
/// counter; every refused one was far below it.
fn accepted_counters_increase(ledger: &Ledger, accepted: usize) -> TestResult {
    // Accepted counters, in the order the log recorded them, strictly increase.
    let mut order: Vec<(i64, i64)> = Vec::new(); // (leaf index, counter)
    for e in ledger.entries(1, 1_000).map_err(s)? {
        if let (Some(5), Some(c), Some(a)) = (e.references.card_id, e.references.card_read_counter, e.audit) {
            order.push((a.leaf_index, c));
        }
    }
    let inquiries = EventFilter { kind: Some("balance_inquiry".into()), card_id: Some(5), ..Default::default() };
    for e in ledger.events(&inquiries, 0, 1_000).map_err(s)? {
        order.push((e.audit.ok_or("event without leaf")?.leaf_index, e.card_read_counter.ok_or("no counter")?));
    }
    order.sort();
    check_eq!(order.len(), accepted);
    // Each counter is accepted at most once, whatever the order of arrival.
    let mut counters: Vec<i64> = order.iter().map(|o| o.1).collect();
    counters.sort();
    check!(counters.windows(2).all(|w| w[0] < w[1]), "a counter was accepted twice: {counters:?}");
    let last = counters.last().copied();
    check_eq!(ledger.card_last_counter(5).map_err(s)?, last);
    // A counter is refused only if it was more than 4 below the last accepted at the time
    // (the clock stands still, so every race is within 10 s), so at least that far below
    // the final last one (each was presented once).
    let refused_counters: Vec<i64> = ledger.card_replays(5, 1_000).map_err(s)?.iter().map(|r| r.counter).collect();
    let last = last.unwrap_or(0);
    check!(
        refused_counters.iter().all(|c| *c < last - ledger::domain::TAP_RACE_COUNTERS_DEFAULT),
        "refused within the race allowance: {refused_counters:?} (last {last})"
    );
    Ok(())
}

/// One counter of card 6, sixteen presenters at once (half payments, half events): it is
/// accepted exactly once and the other fifteen are recorded as replays.
fn one_counter_sixteen_presenters(ledger: &Ledger, city: &Arc<City>) -> TestResult {
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let (ledger, city, barrier) = (ledger.clone(), city.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                if t % 2 == 0 {
                    let req = city.pay(city.wallets[0], city.merchants[0], 10, 0).with_references(tap(6, 77));
                    ledger.submit_blocking(req).is_ok()
                } else {
                    ledger.record_blocking(event("access_decision", Some((6, 77)), None, "{}")).is_ok()
                }
            })
        })
        .collect();
    let mut wins = 0;
    for h in handles {
        wins += usize::from(h.join().map_err(|_| "thread panicked")?);
    }
    check_eq!(wins, 1);
    check_eq!(ledger.card_replays(6, 100).map_err(s)?.len(), 15);
    Ok(())
}

/// The queue of the clinic whose access decisions the events scenario records.
const CLINIC_QUEUE: &str = "clinic:1:2026-11-27";

/// Events are leaves of the same log: queue numbers per queue, idempotency shared with
/// entries, taps checked like entries', verify recomputes them, and a changed event is
/// found.
pub fn events_in_the_log(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let (signer, verifier) = crate::audit::keys()?;
    let ledger: Ledger = crate::audit::open_signed(&db, &clock, &signer, Duration::from_secs(3600))?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    ledger.submit_blocking(city.topup(city.wallets[0], 100_000)).map_err(s)?;
    queue_numbers_per_queue(&ledger)?;
    let paid = taps_are_shared_with_entries(&ledger, &city)?;
    idempotency_is_shared_with_entries(&ledger, &city, &paid)?;
    // Malformed events are refused.
    for bad in
        [event("Access", None, None, "{}"), event("entry", None, None, "{}"), event("x", None, None, &"a".repeat(9000))]
    {
        check_eq!(rejection(ledger.record_blocking(bad)), Some(Rejection::InvalidEvent));
    }
    events_and_entries_interleave(&ledger, &city)?;
    // Reads by scope and kind.
    let scoped = ledger
        .events(
            &EventFilter {
                kind: Some("access_decision".into()),
                scope: Some("service_point:1".into()),
                ..Default::default()
            },
            0,
            100,
        )
        .map_err(s)?;
    check_eq!(scoped.len(), 4);
    ledger.checkpoint_now().map_err(s)?.ok_or("no checkpoint")?;
    ledger.shutdown();
    let report = verify(&db.url, &verifier, &VerifyOptions::default(), |_, _| {}).map_err(s)?;
    check!(report.leaves > 0, "verified");
    a_changed_event_is_found(&db, &verifier)
}

/// Three access decisions in one queue take numbers 1, 2, 3; another queue starts at 1.
fn queue_numbers_per_queue(ledger: &Ledger) -> TestResult {
    let q = CLINIC_QUEUE;
    let mut numbers = Vec::new();
    for counter in 1..=3 {
        let r =
            ledger.record_blocking(event("access_decision", Some((3, counter)), Some(q), r#"{"decision":"allow"}"#));
        numbers.push(r.map_err(s)?.event.queue_number);
    }
    check_eq!(numbers, vec![Some(1), Some(2), Some(3)]);
    let other = ledger.record_blocking(event("access_decision", Some((4, 1)), Some("clinic:1:2026-11-28"), "{}"));
    check_eq!(other.map_err(s)?.event.queue_number, Some(1));
    Ok(())
}

/// A payment between events; then an event with a counter an event used is refused, a
/// payment with one an event used too, and an event with the payment's. Returns the
/// payment.
fn taps_are_shared_with_entries(ledger: &Ledger, city: &City) -> Result<Posted, String> {
    let q = CLINIC_QUEUE;
    let pay = city.pay(city.wallets[0], city.merchants[0], 100, 0).with_references(tap(3, 10));
    let paid = ledger.submit_blocking(pay).map_err(s)?;
    check_eq!(
        rejection(ledger.record_blocking(event("access_decision", Some((3, 2)), Some(q), "{}"))),
        Some(Rejection::CardReplay)
    );
    let pay = city.pay(city.wallets[0], city.merchants[0], 100, 0).with_references(tap(3, 3));
    check_eq!(rejection(ledger.submit_blocking(pay)), Some(Rejection::CardReplay));
    check_eq!(
        rejection(ledger.record_blocking(event("access_decision", Some((3, 10)), Some(q), "{}"))),
        Some(Rejection::CardReplay)
    );
    Ok(paid)
}

/// Idempotency: same key and body returns the first; another body conflicts; a key
/// used by an entry conflicts with an event and the other way round.
fn idempotency_is_shared_with_entries(ledger: &Ledger, city: &City, paid: &Posted) -> TestResult {
    let key = |k: &str| IdempotencyKey::parse(k).map_err(|_| format!("key {k}"));
    let mut e = event("operator_action", None, None, r#"{"action":"block_card","card":3}"#);
    e.idempotency_key = Some(key("op-1")?);
    let first = ledger.record_blocking(e.clone()).map_err(s)?;
    let again = ledger.record_blocking(e.clone()).map_err(s)?;
    check!(again.replayed && again.event == first.event, "event retry returns the first");
    let mut changed = e.clone();
    changed.payload = r#"{"action":"block_card","card":4}"#.into();
    check_eq!(rejection(ledger.record_blocking(changed)), Some(Rejection::IdempotencyConflict));
    let entry_keyed = city.topup(city.wallets[0], 1).with_key(key("op-1")?);
    check_eq!(rejection(ledger.submit_blocking(entry_keyed)), Some(Rejection::IdempotencyConflict));
    check!(paid.entry.audit.is_some(), "the payment has a leaf");
    let mut e2 = event("operator_action", None, None, "{}");
    e2.idempotency_key = Some(key("pay-key")?);
    let topup_keyed = city.topup(city.wallets[0], 1).with_key(key("pay-key")?);
    ledger.submit_blocking(topup_keyed).map_err(s)?;
    check_eq!(rejection(ledger.record_blocking(e2)), Some(Rejection::IdempotencyConflict));
    Ok(())
}

/// In several ops at once, events and entries interleave in the log in order: each op
/// has a leaf, and the leaves are consecutive.
fn events_and_entries_interleave(ledger: &Ledger, city: &City) -> TestResult {
    let ops = vec![
        ledger::domain::Op::Event(event("tap", Some((20, 1)), None, "{}")),
        ledger::domain::Op::Entry(city.topup(city.wallets[0], 5)),
        ledger::domain::Op::Event(event("tap", Some((20, 2)), None, "{}")),
    ];
    let rt = tokio::runtime::Builder::new_current_thread().build().map_err(s)?;
    let outcomes = rt.block_on(ledger.submit_ops(ops)).map_err(s)?;
    let leaf_of = |o: &Result<Outcome, LedgerError>| match o {
        Ok(Outcome::Posted(p)) => p.entry.audit.map(|a| a.leaf_index),
        Ok(Outcome::Recorded(r)) => r.event.audit.map(|a| a.leaf_index),
        Err(_) => None,
    };
    let leaves: Vec<_> = outcomes.iter().map(leaf_of).collect();
    check!(leaves.iter().all(Option::is_some), "every op has a leaf: {leaves:?}");
    check!(leaves.windows(2).all(|w| w[0].map(|x| x + 1) == w[1]), "consecutive leaves: {leaves:?}");
    Ok(())
}

/// Change an event's payload behind the log's back: verify names it.
fn a_changed_event_is_found(db: &TestDb, verifier: &merkle::Verifier) -> TestResult {
    match db.backend {
        Backend::Sqlite => raw_sql(db, "DROP TRIGGER audit_events_no_update")?,
        Backend::Postgres => raw_sql(db, "ALTER TABLE audit_events DISABLE TRIGGER USER")?,
    }
    raw_sql(db, r#"UPDATE audit_events SET payload = '{"decision":"deny"}' WHERE id = 2"#)?;
    match verify(&db.url, verifier, &VerifyOptions::default(), |_, _| {}) {
        Err(VerifyError::Failed { reason, .. }) => {
            check!(reason.contains("event 2"), "reason {reason:?} names event 2");
        }
        other => return Err(format!("verify should fail, got {other:?}")),
    }
    Ok(())
}

/// A fee of the whole amount leaves the merchant nothing: no zero posting, no failed batch
/// for the others; a refund of it returns the fee from the fee account. An offline payment
/// is paid in full to the merchant; the wallet pays what it holds and the offline-risk
/// account the shortfall.
pub fn zero_legs_and_offline_payments(backend: Backend) -> TestResult {
    use ledger::domain::{AccountKind, Command};
    use ledger::money::{Amount, Currency, AMOUNT_MAX_MINOR};
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = crate::support::open(&db, &clock)?;
    let city = City::new(&ledger, 2, 1, 10_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    ledger.submit_blocking(city.topup(w, 10_000)).map_err(s)?;
    let results = ledger
        .submit_many_blocking(vec![city.pay(w, m, 300, 300), city.pay(w, m, 200, 2), city.pay(w, m, 1, 1)])
        .map_err(s)?;
    let entries: Vec<_> = results.into_iter().collect::<Result<Vec<_>, _>>().map_err(s)?;
    check_eq!(entries[0].entry.postings.len(), 2);
    check!(entries.iter().all(|p| p.entry.postings.iter().all(|x| x.amount_minor != 0)), "no zero postings");
    let refund = Request::new(Command::Refund {
        payment_seq: entries[0].entry.seq,
        amount: Amount::from_minor(300, Currency::IDR, AMOUNT_MAX_MINOR).map_err(s)?,
    });
    let r = ledger.submit_blocking(refund).map_err(s)?;
    let fee_leg = r.entry.postings.iter().find(|p| p.account_id == city.fees).map(|p| p.amount_minor);
    check_eq!(fee_leg, Some(-300));
    check_eq!(ledger.balance(m).map_err(s)?, 198);
    // Offline: the second wallet holds 1,000 and spent 2,500 offline.
    let w2 = city.wallets[1];
    ledger.submit_blocking(city.topup(w2, 1_000)).map_err(s)?;
    let risk = ledger.system_account(AccountKind::OfflineRisk, Currency::IDR).map_err(s)?.id;
    let offline = |minor| {
        Request::new(Command::OfflinePayment {
            wallet: w2,
            merchant: m,
            fee_account: city.fees,
            risk_account: risk,
            amount: Amount::from_minor(minor, Currency::IDR, AMOUNT_MAX_MINOR).expect("amount"),
            fee_minor: 10,
            terms: crate::support::open_terms(minor, clock.now()),
        })
    };
    let p = ledger.submit_blocking(offline(2_500)).map_err(s)?;
    let legs: Vec<(AccountId, i64)> = p.entry.postings.iter().map(|x| (x.account_id, x.amount_minor)).collect();
    check_eq!(legs, vec![(w2, -1_000), (risk, -1_500), (m, 2_490), (city.fees, 10)]);
    check_eq!(ledger.balance(w2).map_err(s)?, 0);
    check_eq!(ledger.balance(risk).map_err(s)?, -1_500);
    // An empty wallet: all of it is shortfall; a wallet that covers it: none.
    let p = ledger.submit_blocking(offline(100)).map_err(s)?;
    check_eq!(p.entry.postings.iter().map(|x| x.account_id).collect::<Vec<_>>(), vec![risk, m, city.fees]);
    ledger.submit_blocking(city.topup(w2, 5_000)).map_err(s)?;
    let p = ledger.submit_blocking(offline(101)).map_err(s)?;
    check!(p.entry.postings.iter().all(|x| x.account_id != risk), "covered: no shortfall leg");
    let tb = ledger.trial_balance().map_err(s)?;
    check!(tb.iter().all(|l| l.balances_sum_minor == 0), "books balance");
    Ok(())
}

/// An offline tap uploaded after newer online taps of the same card is accepted once (its
/// counter is older: order is not required, single use is), and the card's last counter
/// does not move back.
pub fn offline_taps_once_not_in_order(backend: Backend) -> TestResult {
    use ledger::domain::{AccountKind, Command};
    use ledger::money::{Amount, Currency, AMOUNT_MAX_MINOR};
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = crate::support::open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    ledger.submit_blocking(city.topup(w, 100_000)).map_err(s)?;
    let risk = ledger.system_account(AccountKind::OfflineRisk, Currency::IDR).map_err(s)?.id;
    let offline = |counter| {
        Request::new(Command::OfflinePayment {
            wallet: w,
            merchant: m,
            fee_account: city.fees,
            risk_account: risk,
            amount: Amount::from_minor(1_000, Currency::IDR, AMOUNT_MAX_MINOR).expect("amount"),
            fee_minor: 0,
            terms: crate::support::open_terms(counter, clock.now()),
        })
        .with_references(tap(1, counter))
    };
    // Online taps 10 and 11 happened while the shop with tap 5 was offline.
    ledger.submit_blocking(city.pay(w, m, 100, 0).with_references(tap(1, 10))).map_err(s)?;
    ledger.submit_blocking(city.pay(w, m, 100, 0).with_references(tap(1, 11))).map_err(s)?;
    ledger.submit_blocking(offline(5)).map_err(s)?;
    check_eq!(ledger.card_last_counter(1).map_err(s)?, Some(11));
    // The same offline tap again (without the key): refused and recorded.
    check_eq!(rejection(ledger.submit_blocking(offline(5))), Some(Rejection::CardReplay));
    // An offline claim on a tap an online payment used: refused.
    check_eq!(rejection(ledger.submit_blocking(offline(10))), Some(Rejection::CardReplay));
    // Online, the tap the offline payment used is a replay too.
    check_eq!(
        rejection(ledger.submit_blocking(city.pay(w, m, 100, 0).with_references(tap(1, 5)))),
        Some(Rejection::CardReplay)
    );
    // A newer offline tap moves the counter forward.
    ledger.submit_blocking(offline(20)).map_err(s)?;
    check_eq!(ledger.card_last_counter(1).map_err(s)?, Some(20));
    check_eq!(ledger.card_replays(1, 100).map_err(s)?.len(), 3);
    Ok(())
}

/// A replaced card's wallet pays nothing more; whatever it held moved with what it owed,
/// and every later credit to it (a hold released at expiry, a refund) lands on the new
/// wallet in the same entry. Verify recomputes the debts from the entries.
pub fn replaced_wallets_pass_credits_on(backend: Backend) -> TestResult {
    use ledger::domain::{AccountKind, Command};
    use ledger::money::Currency;
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = crate::support::open(&db, &clock)?;
    let city = City::new(&ledger, 3, 1, 10_000_000)?;
    let (old, new, m) = (city.wallets[0], city.wallets[1], city.merchants[0]);
    ledger.submit_blocking(city.topup(old, 10_000)).map_err(s)?;
    let paid = ledger.submit_blocking(city.pay(old, m, 1_000, 0)).map_err(s)?;
    let hold = Request::new(Command::Hold {
        wallet: old,
        merchant: m,
        amount: crate::support::idr(4_000),
        expires_at_us: clock.now() + 60_000_000,
    });
    ledger.submit_blocking(hold).map_err(s)?;
    // An offline payment the wallet cannot cover leaves a debt of 2,000.
    let risk = ledger.system_account(AccountKind::OfflineRisk, Currency::IDR).map_err(s)?.id;
    let offline = Request::new(Command::OfflinePayment {
        wallet: old,
        merchant: m,
        fee_account: city.fees,
        risk_account: risk,
        amount: crate::support::idr(7_000),
        fee_minor: 0,
        terms: crate::support::open_terms(1, clock.now()),
    });
    ledger.submit_blocking(offline).map_err(s)?;
    check_eq!((ledger.balance(old).map_err(s)?, ledger.wallet_debt(old).map_err(s)?), (0, 2_000));
    let replaced =
        ledger.submit_blocking(Request::new(Command::ReplaceCard { old_wallet: old, new_wallet: new })).map_err(s)?;
    // Nothing to move but the debt: an entry without postings records the replacement.
    check_eq!((replaced.entry.amount_minor, replaced.entry.postings.len()), (0, 0));
    check_eq!((ledger.wallet_debt(old).map_err(s)?, ledger.wallet_debt(new).map_err(s)?), (0, 2_000));
    check_eq!(ledger.wallet_successor(old).map_err(s)?, Some(new));
    // The old wallet pays nothing and cannot be replaced again; the new one cannot be a
    // second card's successor.
    check_eq!(rejection(ledger.submit_blocking(city.pay(old, m, 1, 0))), Some(Rejection::CardReplaced));
    let again = Request::new(Command::ReplaceCard { old_wallet: old, new_wallet: city.wallets[2] });
    check_eq!(rejection(ledger.submit_blocking(again)), Some(Rejection::CardReplaced));
    // The refund of the online payment repays nothing (it was no shortfall) and lands on
    // the new wallet.
    let refund = Request::new(Command::Refund { payment_seq: paid.entry.seq, amount: crate::support::idr(1_000) });
    let r = ledger.submit_blocking(refund).map_err(s)?;
    check_eq!((r.entry.account_id, r.wallet_balance_minor), (Some(new), Some(1_000)));
    // The hold expires: its money goes to the new wallet.
    clock.advance_us(61_000_000);
    let voided = ledger.expire_holds().map_err(s)?;
    check_eq!(voided.len(), 1);
    check!(voided[0].entry.postings.iter().any(|p| p.account_id == new && p.amount_minor == 4_000), "{voided:?}");
    check_eq!((ledger.balance(old).map_err(s)?, ledger.balance(new).map_err(s)?), (0, 5_000));
    // A top-up through the new card repays the debt first.
    let topup = Request::new(Command::Topup { source: city.agent, wallet: old, amount: crate::support::idr(3_000) });
    let t = ledger.submit_blocking(topup).map_err(s)?;
    check_eq!(t.entry.account_id, Some(new));
    check_eq!((ledger.balance(new).map_err(s)?, ledger.wallet_debt(new).map_err(s)?), (6_000, 0));
    check_eq!(ledger.balance(risk).map_err(s)?, 0);
    let tb = ledger.trial_balance().map_err(s)?;
    check!(tb.iter().all(|l| l.balances_sum_minor == 0), "books balance");
    Ok(())
}

/// The writer checks offline records against the terminal's limits as of its sync: per
/// tap, per card per UTC day, in total since the sync, the merchant's shortfalls in 24
/// hours, and the card's counter at the sync. A refused record changes nothing.
pub fn offline_terms_are_enforced(backend: Backend) -> TestResult {
    use ledger::domain::{AccountKind, Command, OfflineTerms};
    use ledger::money::Currency;
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = crate::support::open(&db, &clock)?;
    let city = City::new(&ledger, 2, 1, 10_000_000)?;
    let (w, empty, m) = (city.wallets[0], city.wallets[1], city.merchants[0]);
    ledger.submit_blocking(city.topup(w, 100_000)).map_err(s)?;
    let risk = ledger.system_account(AccountKind::OfflineRisk, Currency::IDR).map_err(s)?.id;
    let terms = OfflineTerms {
        credential_id: 9,
        record_seq: 0,
        record_time_us: clock.now(),
        sync_id: 3,
        counter_floor: Some(10),
        per_tap_minor: 5_000,
        per_card_per_day_minor: 8_000,
        outstanding_minor: 12_000,
        merchant_risk_cap_minor: 3_000,
    };
    let seq = AtomicI64::new(0);
    let offline = |wallet, card: i64, counter: i64, minor: i64, t: OfflineTerms| {
        let record_seq = seq.fetch_add(1, Ordering::SeqCst) + 1;
        Request::new(Command::OfflinePayment {
            wallet,
            merchant: m,
            fee_account: city.fees,
            risk_account: risk,
            amount: crate::support::idr(minor),
            fee_minor: 0,
            terms: OfflineTerms { record_seq, ..t },
        })
        .with_references(tap(card, counter))
    };
    let outcome = |r: Request| match ledger.submit_blocking(r) {
        Ok(_) => None,
        Err(e) => rejection(Err::<(), _>(e)),
    };
    let before = ledger.last_seq().map_err(s)?;
    check_eq!(outcome(offline(w, 1, 11, 5_001, terms)), Some(Rejection::OfflineLimitPerTap));
    check_eq!(outcome(offline(w, 1, 10, 100, terms)), Some(Rejection::CardReplay));
    check_eq!(outcome(offline(w, 1, 11, 5_000, terms)), None);
    check_eq!(outcome(offline(w, 1, 12, 3_001, terms)), Some(Rejection::OfflineLimitCardDay));
    // The next UTC day is another day for the card, but not for the terminal's total.
    let tomorrow = OfflineTerms { record_time_us: terms.record_time_us + 86_400_000_000, ..terms };
    check_eq!(outcome(offline(w, 1, 12, 3_000, tomorrow)), None);
    check_eq!(outcome(offline(w, 1, 13, 4_001, tomorrow)), Some(Rejection::OfflineLimitOutstanding));
    // A new sync starts a new total.
    let next_sync = OfflineTerms { sync_id: 4, ..tomorrow };
    // The empty wallet's shortfalls: 3,000 is the merchant's cap for 24 hours.
    check_eq!(outcome(offline(empty, 2, 11, 3_000, next_sync)), None);
    check_eq!(outcome(offline(empty, 2, 12, 1, next_sync)), Some(Rejection::OfflineRiskCap));
    check_eq!(ledger.last_seq().map_err(s)?, before + 3);
    check_eq!(ledger.balance(risk).map_err(s)?, -3_000);
    check_eq!(ledger.wallet_debt(empty).map_err(s)?, 3_000);
    // 24 hours later the cap is free again.
    clock.advance_us(86_400_000_000 + 1);
    check_eq!(outcome(offline(empty, 2, 13, 1, OfflineTerms { sync_id: 5, ..next_sync })), None);
    Ok(())
}

/// Access decisions with a holder's limits are decided in the writer: the daily quota
/// counts the holder's recorded entries since the local day's start, passback the recent
/// ones; a refused decision takes no queue number.
pub fn access_limits_in_the_writer(backend: Backend) -> TestResult {
    use ledger::domain::AccessLimit;
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = crate::support::open(&db, &clock)?;
    let day_start = clock.now() - 3_600_000_000;
    let limit = AccessLimit {
        holder_key: "service_point:1:holder:7".into(),
        day_start_us: day_start,
        daily_quota: Some(2),
        passback_us: Some(600_000_000),
    };
    let check = |counter: i64| {
        let mut e = event("access_decision", Some((7, counter)), Some("service_point:1:2027-01-15"), "{}");
        e.access = Some(limit.clone());
        ledger.record_blocking(e)
    };
    check_eq!(check(1).map_err(s)?.event.queue_number, Some(1));
    check_eq!(rejection(check(2)), Some(Rejection::Passback));
    clock.advance_us(600_000_000);
    check_eq!(check(3).map_err(s)?.event.queue_number, Some(2));
    clock.advance_us(600_000_000);
    check_eq!(rejection(check(4)), Some(Rejection::QuotaReached));
    // A refused decision used neither its tap nor a queue number: the next holder gets 3.
    let mut other = event("access_decision", Some((8, 1)), Some("service_point:1:2027-01-15"), "{}");
    other.access = Some(AccessLimit { holder_key: "service_point:1:holder:8".into(), ..limit.clone() });
    check_eq!(ledger.record_blocking(other).map_err(s)?.event.queue_number, Some(3));
    check_eq!(ledger.card_last_counter(7).map_err(s)?, Some(3));
    Ok(())
}
