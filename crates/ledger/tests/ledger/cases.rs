//! Behaviour of the ledger, each test run on SQLite and on PostgreSQL.

use std::sync::{Arc, Barrier};

use ledger::domain::{
    AccountKind, Command, EntryKind, IdempotencyKey, Leg, NewAccount, References, Rejection, Request,
};
use ledger::money::{Amount, Currency, MoneyError, AMOUNT_MAX_MINOR};
use ledger::{Backend, LedgerError};

use crate::support::{idr, open, raw_sql, transfer, City, TestClock, TestDb};
use crate::{check, check_eq};

type TestResult = Result<(), String>;

fn rejected(r: Result<ledger::domain::Posted, LedgerError>) -> Option<Rejection> {
    match r {
        Err(LedgerError::Rejected(x)) => Some(x),
        _ => None,
    }
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).expect("key")
}

/// A payment with a fee is three postings that sum to zero, each with the balance after.
pub fn payment_with_fee(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    ledger.submit_blocking(city.topup(w, 5_000_000)).map_err(|e| e.to_string())?;
    let fee = ledger::money::FeeRate::parse("0.007").map_err(|e| e.to_string())?.fee_minor(1_250_000);
    check_eq!(fee, 8_750);
    let posted = ledger.submit_blocking(city.pay(w, m, 1_250_000, fee)).map_err(|e| e.to_string())?;
    let e = &posted.entry;
    check_eq!(e.seq, 3);
    check_eq!(e.kind, EntryKind::Payment);
    check_eq!(e.amount_minor, 1_250_000);
    check_eq!(e.fee_minor, 8_750);
    check_eq!(e.postings.len(), 3);
    check_eq!(e.postings.iter().map(|p| p.amount_minor).sum::<i64>(), 0);
    check_eq!(
        (e.postings[0].account_id, e.postings[0].amount_minor, e.postings[0].balance_after_minor),
        (w, -1_250_000, 3_750_000)
    );
    check_eq!((e.postings[1].account_id, e.postings[1].balance_after_minor), (m, 1_241_250));
    check_eq!((e.postings[2].account_id, e.postings[2].balance_after_minor), (city.fees, 8_750));
    // What was returned is what is stored.
    let stored = ledger.entry(3).map_err(|e| e.to_string())?;
    check_eq!(stored.as_ref(), Some(e));
    check_eq!(ledger.balance(w).map_err(|e| e.to_string())?, 3_750_000);
    check_eq!(ledger.balance(m).map_err(|e| e.to_string())?, 1_241_250);
    Ok(())
}

/// Wallets and agent floats never go below zero; wallets never above their maximum.
pub fn limits_are_enforced(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 2, 1, 300_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    let wallet = ledger.account(w).map_err(|e| e.to_string())?.ok_or("no wallet")?;
    check_eq!(wallet.balance_max_minor, Some(200_000_000));
    check!(wallet.never_negative, "wallets are never negative");
    // Rp 2,000,000.00 fits exactly; one more rupiah cent does not.
    ledger.submit_blocking(city.topup(w, 200_000_000)).map_err(|e| e.to_string())?;
    check_eq!(rejected(ledger.submit_blocking(city.topup(w, 1))), Some(Rejection::ExceedsMaxBalance));
    // The agent float has 100,000,000 left: a top-up above it is refused.
    check_eq!(
        rejected(ledger.submit_blocking(city.topup(city.wallets[1], 100_000_001))),
        Some(Rejection::InsufficientFunds)
    );
    check_eq!(rejected(ledger.submit_blocking(city.pay(w, m, 200_000_001, 0))), Some(Rejection::InsufficientFunds));
    // A wallet with its own lower limit.
    let small = ledger
        .create_account(NewAccount {
            kind: AccountKind::CardWallet,
            currency: Currency::IDR,
            name: "kid".into(),
            balance_max_minor: Some(50_000),
        })
        .map_err(|e| e.to_string())?;
    check_eq!(rejected(ledger.submit_blocking(city.topup(small.id, 50_001))), Some(Rejection::ExceedsMaxBalance));
    check_eq!(ledger.last_seq().map_err(|e| e.to_string())?, 2);
    check_eq!(ledger.balance(city.agent).map_err(|e| e.to_string())?, 100_000_000);
    Ok(())
}

/// Bad amounts are refused at parsing with a named error, and bad requests write nothing.
pub fn bad_input_writes_nothing(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    let parse = |t: &str| Amount::parse(t, Currency::IDR, AMOUNT_MAX_MINOR);
    check!(matches!(parse("10.001"), Err(MoneyError::TooManyDecimals { .. })), "too many decimals");
    check_eq!(parse("-10"), Err(MoneyError::Negative));
    check_eq!(parse("0"), Err(MoneyError::Zero));
    check!(matches!(parse("ten"), Err(MoneyError::NotANumber(_))), "not a number");
    check!(matches!(parse("1000000000000.01"), Err(MoneyError::AboveMaximum { .. })), "above the maximum");
    check!(matches!(Currency::parse("XXX"), Err(MoneyError::UnknownCurrency(_))), "unknown currency");
    let before = ledger.last_seq().map_err(|e| e.to_string())?;
    let usd = ledger
        .create_account(NewAccount {
            kind: AccountKind::Merchant,
            currency: Currency::parse("USD").map_err(|e| e.to_string())?,
            name: "usd".into(),
            balance_max_minor: None,
        })
        .map_err(|e| e.to_string())?;
    let cases: Vec<(Request, Rejection)> = vec![
        (transfer(EntryKind::Transfer, w, usd.id, 100), Rejection::Unbalanced),
        (transfer(EntryKind::Payment, w, city.agent, 100), Rejection::InvalidKind),
        (
            Request::new(Command::Transfer { kind: EntryKind::Topup, legs: vec![Leg { account: w, amount_minor: 5 }] }),
            Rejection::InvalidLegs,
        ),
        (
            Request::new(Command::Transfer {
                kind: EntryKind::Topup,
                legs: vec![Leg { account: w, amount_minor: 0 }, Leg { account: city.agent, amount_minor: 0 }],
            }),
            Rejection::InvalidLegs,
        ),
        (
            Request::new(Command::Transfer {
                kind: EntryKind::Topup,
                legs: vec![Leg { account: w, amount_minor: 5 }, Leg { account: city.agent, amount_minor: -4 }],
            }),
            Rejection::Unbalanced,
        ),
        (transfer(EntryKind::Topup, "999999".parse().expect("an id"), city.agent, 5), Rejection::AccountNotFound),
        (city.pay(w, m, 100, 101), Rejection::InvalidFee),
        (city.pay(w, m, 100, -1), Rejection::InvalidFee),
        (city.pay(m, w, 100, 0), Rejection::AccountKindMismatch),
        (city.pay(w, usd.id, 100, 0), Rejection::CurrencyMismatch),
        (Request::new(Command::Refund { payment_seq: 424_242, amount: idr(1) }), Rejection::PaymentNotFound),
        (Request::new(Command::Void { hold_seq: 424_242 }), Rejection::HoldNotFound),
        (
            city.pay(w, m, 100, 0).with_references(References { card_read_counter: Some(5), ..Default::default() }),
            Rejection::InvalidReference,
        ),
        (
            city.pay(w, m, 100, 0).with_references(References { memo: Some("x".repeat(201)), ..Default::default() }),
            Rejection::InvalidReference,
        ),
    ];
    let (requests, expected): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    let results = ledger.submit_many_blocking(requests).map_err(|e| e.to_string())?;
    for (r, want) in results.into_iter().zip(expected) {
        check_eq!(rejected(r), Some(want));
    }
    check!(IdempotencyKey::parse("").is_err() && IdempotencyKey::parse("a b").is_err(), "bad keys");
    check!(IdempotencyKey::parse(&"k".repeat(129)).is_err(), "long key");
    check_eq!(ledger.last_seq().map_err(|e| e.to_string())?, before);
    check_eq!(ledger.balance(w).map_err(|e| e.to_string())?, 0);
    Ok(())
}

/// Holds reserve funds (not spendable), capture at most the held amount releasing the rest,
/// void releases everything, expiry voids, a closed hold cannot be used again.
pub fn holds_capture_void_expiry(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    let s = |e: LedgerError| e.to_string();
    ledger.submit_blocking(city.topup(w, 100_000)).map_err(s)?;
    let hour = 3_600_000_000;
    let hold = |minor| {
        Request::new(Command::Hold { wallet: w, merchant: m, amount: idr(minor), expires_at_us: clock.now() + hour })
    };
    let h1 = ledger.submit_blocking(hold(60_000)).map_err(s)?.entry.seq;
    check_eq!(ledger.balance(w).map_err(s)?, 40_000);
    // Held funds are not spendable.
    check_eq!(rejected(ledger.submit_blocking(city.pay(w, m, 40_001, 0))), Some(Rejection::InsufficientFunds));
    let capture = |seq, minor, fee| {
        Request::new(Command::Capture { hold_seq: seq, amount: idr(minor), fee_minor: fee, fee_account: city.fees })
    };
    check_eq!(rejected(ledger.submit_blocking(capture(h1, 60_001, 0))), Some(Rejection::CaptureExceedsHold));
    let c = ledger.submit_blocking(capture(h1, 45_000, 315)).map_err(s)?;
    check_eq!(c.entry.related_seq, Some(h1));
    check_eq!(c.entry.postings.iter().map(|p| p.amount_minor).sum::<i64>(), 0);
    check_eq!(ledger.balance(w).map_err(s)?, 55_000);
    check_eq!(ledger.balance(m).map_err(s)?, 44_685);
    check_eq!(ledger.balance(city.fees).map_err(s)?, 315);
    check_eq!(rejected(ledger.submit_blocking(capture(h1, 1, 0))), Some(Rejection::HoldClosed));
    check_eq!(
        rejected(ledger.submit_blocking(Request::new(Command::Void { hold_seq: h1 }))),
        Some(Rejection::HoldClosed)
    );
    // Void gives everything back.
    let h2 = ledger.submit_blocking(hold(50_000)).map_err(s)?.entry.seq;
    check_eq!(ledger.balance(w).map_err(s)?, 5_000);
    ledger.submit_blocking(Request::new(Command::Void { hold_seq: h2 })).map_err(s)?;
    check_eq!(ledger.balance(w).map_err(s)?, 55_000);
    // Expiry: after the hour, capture is refused and the sweep voids it.
    let h3 = ledger.submit_blocking(hold(30_000)).map_err(s)?.entry.seq;
    check_eq!(ledger.expire_holds().map_err(s)?.len(), 0);
    clock.advance_us(hour);
    check_eq!(rejected(ledger.submit_blocking(capture(h3, 1_000, 0))), Some(Rejection::HoldExpired));
    let voided = ledger.expire_holds().map_err(s)?;
    check_eq!(voided.len(), 1);
    check_eq!(voided[0].entry.kind, EntryKind::Void);
    check_eq!(voided[0].entry.related_seq, Some(h3));
    check_eq!(ledger.balance(w).map_err(s)?, 55_000);
    check_eq!(ledger.expire_holds().map_err(s)?.len(), 0);
    // The holds account is back to zero.
    let holds = ledger.system_account(AccountKind::Holds, Currency::IDR).map_err(s)?;
    check_eq!(ledger.balance(holds.id).map_err(s)?, 0);
    Ok(())
}

/// Partial refunds up to the original amount; the fee comes back in proportion.
pub fn refunds(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    let s = |e: LedgerError| e.to_string();
    ledger.submit_blocking(city.topup(w, 100_000)).map_err(s)?;
    let p = ledger.submit_blocking(city.pay(w, m, 1_000, 7)).map_err(s)?.entry.seq;
    let refund = |minor| Request::new(Command::Refund { payment_seq: p, amount: idr(minor) });
    let r1 = ledger.submit_blocking(refund(500)).map_err(s)?;
    // 7 * 500 / 1000 = 3.5 -> 4 (half-even)
    check_eq!(r1.entry.fee_minor, 4);
    check_eq!(r1.entry.related_seq, Some(p));
    check_eq!(rejected(ledger.submit_blocking(refund(501))), Some(Rejection::RefundExceedsPayment));
    let r2 = ledger.submit_blocking(refund(500)).map_err(s)?;
    check_eq!(r2.entry.fee_minor, 3);
    check_eq!(rejected(ledger.submit_blocking(refund(1))), Some(Rejection::RefundExceedsPayment));
    check_eq!(ledger.balance(w).map_err(s)?, 100_000);
    check_eq!(ledger.balance(m).map_err(s)?, 0);
    check_eq!(ledger.balance(city.fees).map_err(s)?, 0);
    // 5 * 500 / 1000 = 2.5 -> 2 (half-even rounds to the even neighbour).
    let p2 = ledger.submit_blocking(city.pay(w, m, 1_000, 5)).map_err(s)?.entry.seq;
    let half =
        ledger.submit_blocking(Request::new(Command::Refund { payment_seq: p2, amount: idr(500) })).map_err(s)?;
    check_eq!(half.entry.fee_minor, 2);
    check_eq!(ledger.balance(city.fees).map_err(s)?, 3);
    Ok(())
}

/// The keyed payment the idempotency test sends again and again.
fn keyed_pay(city: &City) -> Request {
    city.pay(city.wallets[0], city.merchants[0], 1_000, 0).with_key(key("pos-1:order-77"))
}

/// A payment whose key holds quotes, a backslash and JSON's brackets and comma (SQLite
/// looks keys up as one JSON array: see store/in_list.rs).
fn odd_keyed_pay(city: &City) -> Request {
    city.pay(city.wallets[0], city.merchants[0], 4_000, 0).with_key(key(r#"pos-1:"order"\79[,]"#))
}

/// Same key and request: the first result again, nothing new written. Same key, other
/// request: a conflict. Also inside one batch, and after a restart.
pub fn idempotency(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let s = |e: LedgerError| e.to_string();
    let (first, city) = {
        let ledger = open(&db, &clock)?;
        let city = City::new(&ledger, 1, 1, 10_000_000)?;
        ledger.submit_blocking(city.topup(city.wallets[0], 100_000)).map_err(s)?;
        let pay = keyed_pay(&city);
        let first = ledger.submit_blocking(pay.clone()).map_err(s)?;
        check!(!first.replayed, "the first is not a replay");
        let again = ledger.submit_blocking(pay.clone()).map_err(s)?;
        check!(again.replayed, "the second is a replay");
        check_eq!(again.entry, first.entry);
        let other = city.pay(city.wallets[0], city.merchants[0], 2_000, 0).with_key(key("pos-1:order-77"));
        check_eq!(rejected(ledger.submit_blocking(other)), Some(Rejection::IdempotencyConflict));
        // In one batch: the second of two identical keyed requests is a replay of the first.
        let twin = city.pay(city.wallets[0], city.merchants[0], 3_000, 0).with_key(key("pos-1:order-78"));
        let results = ledger.submit_many_blocking(vec![twin.clone(), twin]).map_err(s)?;
        let (a, b) = (results[0].clone().map_err(s)?, results[1].clone().map_err(s)?);
        check!(!a.replayed && b.replayed && a.entry == b.entry, "in-batch replay");
        // Any printable key is found again, quotes and backslashes too.
        check!(!ledger.submit_blocking(odd_keyed_pay(&city)).map_err(s)?.replayed, "the odd key's first payment");
        (first, city)
    };
    // A new process: the key is found in the database.
    let ledger = open(&db, &clock)?;
    let again = ledger.submit_blocking(keyed_pay(&city)).map_err(s)?;
    check!(again.replayed && again.entry == first.entry, "replay after restart");
    let (odd_again, both) = {
        let r = ledger.submit_many_blocking(vec![odd_keyed_pay(&city), keyed_pay(&city)]).map_err(s)?;
        (r[0].clone().map_err(s)?, r[1].clone().map_err(s)?)
    };
    check!(odd_again.replayed && both.replayed, "replays of an odd key and a plain one in one batch");
    check_eq!(ledger.last_seq().map_err(s)?, 5);
    check_eq!(ledger.balance(city.wallets[0]).map_err(s)?, 92_000);
    Ok(())
}

/// Gapless sequence, non-decreasing time, balance at a past time, statements, trial balance.
pub fn reads(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    let s = |e: LedgerError| e.to_string();
    let minute = 60_000_000;
    let t0 = clock.now();
    ledger.submit_blocking(city.topup(w, 100_000)).map_err(s)?; // seq 2 at t0
    clock.advance_us(minute);
    let t1 = clock.now();
    ledger.submit_blocking(city.pay(w, m, 10_000, 70)).map_err(s)?; // seq 3 at t1
    clock.advance_us(minute);
    ledger.submit_blocking(city.pay(w, m, 20_000, 140)).map_err(s)?; // seq 4 at t2
    check_eq!(ledger.balance_at(w, t0 - 1).map_err(s)?, 0);
    check_eq!(ledger.balance_at(w, t0).map_err(s)?, 100_000);
    check_eq!(ledger.balance_at(w, t1 - 1).map_err(s)?, 100_000);
    check_eq!(ledger.balance_at(w, t1).map_err(s)?, 90_000);
    check_eq!(ledger.balance_at(w, clock.now() + minute).map_err(s)?, 70_000);
    let st = ledger.statement(w, t1, clock.now() + 1, 0, 100).map_err(s)?;
    check_eq!((st.opening_minor, st.closing_minor), (100_000, 70_000));
    let lines: Vec<_> = st.lines.iter().map(|l| (l.entry_seq, l.kind, l.amount_minor, l.balance_after_minor)).collect();
    check_eq!(lines, vec![(3, EntryKind::Payment, -10_000, 90_000), (4, EntryKind::Payment, -20_000, 70_000)]);
    let page = ledger.statement(w, t0, clock.now() + 1, 2, 1).map_err(s)?;
    check_eq!(page.lines.iter().map(|l| l.entry_seq).collect::<Vec<_>>(), vec![3]);
    let entries = ledger.entries(1, 100).map_err(s)?;
    check_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    check!(entries.windows(2).all(|p| p[0].time_us <= p[1].time_us), "time never decreases");
    let tb = ledger.trial_balance().map_err(s)?;
    check_eq!(tb.len(), 1);
    check_eq!(tb[0].balances_sum_minor, 0);
    check_eq!(tb[0].debits_minor, tb[0].credits_minor);
    check_eq!(tb[0].credits_minor, 10_000_000 + 100_000 + 10_000 + 20_000);
    Ok(())
}

/// A broken invariant met by the writer (here a payment without its merchant, which no
/// code writes) stops the writer: the batch is answered with it, later writes fail fast
/// with it and write nothing, and reads still work.
pub fn broken_invariant_stops_the_writer(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    let (w, m) = (city.wallets[0], city.merchants[0]);
    let s = |e: LedgerError| e.to_string();
    ledger.submit_blocking(city.topup(w, 100_000)).map_err(s)?;
    let p = ledger.submit_blocking(city.pay(w, m, 1_000, 7)).map_err(s)?.entry.seq;
    check!(ledger.writer_halted().is_none(), "the writer runs");
    crate::audit::drop_append_only_triggers(&db)?;
    raw_sql(&db, &format!("UPDATE journal_entries SET counterparty_id = NULL WHERE seq = {p}"))?;
    let refund = ledger.submit_blocking(Request::new(Command::Refund { payment_seq: p, amount: idr(500) }));
    check!(matches!(refund, Err(LedgerError::Invariant(_))), "{refund:?}");
    let reason = ledger.writer_halted().ok_or("the writer should have stopped")?;
    check!(reason.contains("payment entry"), "{reason}");
    let last = ledger.last_seq().map_err(s)?;
    let topup = ledger.submit_blocking(city.topup(w, 1_000));
    check!(matches!(&topup, Err(LedgerError::Invariant(r)) if *r == reason), "{topup:?}");
    check_eq!(ledger.last_seq().map_err(s)?, last);
    check_eq!(ledger.balance(w).map_err(s)?, 99_000);
    Ok(())
}

/// The journal, its postings and the accounts reject UPDATE and DELETE at the database.
pub fn append_only(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    ledger.submit_blocking(city.topup(city.wallets[0], 100_000)).map_err(|e| e.to_string())?;
    let attacks = [
        "UPDATE journal_entries SET amount_minor = 1 WHERE seq = 2",
        "DELETE FROM journal_entries WHERE seq = 2",
        "UPDATE postings SET balance_after_minor = 99999999 WHERE entry_seq = 2",
        "DELETE FROM postings WHERE entry_seq = 2",
        "UPDATE accounts SET never_negative = false",
        "DELETE FROM accounts",
    ];
    for sql in attacks {
        let err = raw_sql(&db, sql).err().ok_or_else(|| format!("{sql} was allowed"))?;
        check!(err.contains("append-only"), "{sql}: {err}");
    }
    if backend == Backend::Postgres {
        // Every table that refers to the journal must be named, or PostgreSQL refuses for
        // the foreign keys before the triggers speak.
        let truncate = "TRUNCATE postings, journal_entries, wallet_debts, wallet_successors, offline_payments";
        let err = raw_sql(&db, truncate).err().ok_or("TRUNCATE was allowed")?;
        check!(err.contains("append-only"), "{err}");
    }
    check_eq!(ledger.entry(2).map_err(|e| e.to_string())?.map(|e| e.amount_minor), Some(100_000));
    check_eq!(ledger.balance(city.wallets[0]).map_err(|e| e.to_string())?, 100_000);
    Ok(())
}

/// 32 threads each debit 1,000 from a wallet holding 10,000 at the same moment: exactly 10
/// succeed, the others are refused for insufficient funds, and the wallet ends at zero.
pub fn concurrent_debits(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = Arc::new(City::new(&ledger, 1, 1, 10_000_000)?);
    ledger.submit_blocking(city.topup(city.wallets[0], 10_000)).map_err(|e| e.to_string())?;
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (ledger, city, barrier) = (ledger.clone(), city.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                ledger.submit_blocking(city.pay(city.wallets[0], city.merchants[0], 1_000, 0))
            })
        })
        .collect();
    let results: Vec<_> =
        handles.into_iter().map(|h| h.join().map_err(|_| "thread panicked".to_string())).collect::<Result<_, _>>()?;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused =
        results.iter().filter(|r| matches!(r, Err(LedgerError::Rejected(Rejection::InsufficientFunds)))).count();
    check_eq!((ok, refused), (10, 22));
    check_eq!(ledger.balance(city.wallets[0]).map_err(|e| e.to_string())?, 0);
    check_eq!(ledger.balance(city.merchants[0]).map_err(|e| e.to_string())?, 10_000);
    check_gapless(&ledger, 12)
}

/// The sequence is 1..=n without gaps, and every entry sums to zero.
pub fn check_gapless(ledger: &ledger::Ledger, n: i64) -> TestResult {
    let entries = ledger.entries(1, 1_000).map_err(|e| e.to_string())?;
    check_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
    for e in &entries {
        check_eq!(e.postings.iter().map(|p| p.amount_minor).sum::<i64>(), 0);
    }
    Ok(())
}

/// The same race from two OS processes, 16 threads each, on one database: exactly 10 succeed.
pub fn two_processes(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 1, 10_000_000)?;
    ledger.submit_blocking(city.topup(city.wallets[0], 10_000)).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let start_at = std::time::SystemTime::now() + std::time::Duration::from_millis(1_500);
    let start_ms = start_at.duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .env(crate::CHILD_ENV, "debit-race")
                .env("KARTU_CHILD_URL", &db.url)
                .env("KARTU_CHILD_WALLET", city.wallets[0].to_string())
                .env("KARTU_CHILD_MERCHANT", city.merchants[0].to_string())
                .env("KARTU_CHILD_FEES", city.fees.to_string())
                .env("KARTU_CHILD_START_MS", start_ms.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut ok = 0;
    for child in children {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        check!(out.status.success(), "child failed: {:?}", out);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find_map(|l| l.strip_prefix("approved ")).ok_or(format!("child said {text:?}"))?;
        ok += line.trim().parse::<usize>().map_err(|e| e.to_string())?;
    }
    check_eq!(ok, 10);
    // A fresh handle reads what both processes wrote.
    drop(ledger);
    let ledger = open(&db, &clock)?;
    check_eq!(ledger.balance(city.wallets[0]).map_err(|e| e.to_string())?, 0);
    check_gapless(&ledger, 12)
}

/// The child side of [`two_processes`]: 16 threads race, prints how many were approved.
pub fn debit_race_child() -> Result<(), String> {
    let var = |n: &str| std::env::var(n).map_err(|e| format!("{n}: {e}"));
    let num = |n: &str| var(n)?.parse::<i64>().map_err(|e| e.to_string());
    let ledger =
        ledger::Ledger::open(&var("KARTU_CHILD_URL")?, ledger::LedgerConfig::default()).map_err(|e| e.to_string())?;
    let account = |n: &str| var(n)?.parse::<ledger::domain::AccountId>().map_err(|e| e.to_string());
    let wallet = account("KARTU_CHILD_WALLET")?;
    let merchant = account("KARTU_CHILD_MERCHANT")?;
    let fees = account("KARTU_CHILD_FEES")?;
    let start_ms = num("KARTU_CHILD_START_MS")? as u128;
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (ledger, barrier) = (ledger.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Both processes start at the same wall-clock moment.
                while std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
                    < start_ms
                {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                ledger.submit_blocking(Request::new(Command::Payment {
                    wallet,
                    merchant,
                    fee_account: fees,
                    amount: idr(1_000),
                    fee_minor: 0,
                }))
            })
        })
        .collect();
    let mut approved = 0;
    for h in handles {
        match h.join().map_err(|_| "panicked")? {
            Ok(_) => approved += 1,
            Err(LedgerError::Rejected(Rejection::InsufficientFunds)) => {}
            Err(e) => return Err(format!("unexpected: {e}")),
        }
    }
    println!("approved {approved}");
    Ok(())
}

/// A bulk batch of 1,000 payments in one call: one transaction, every one applied in order,
/// the ones beyond the balance refused.
pub fn bulk_batch(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, 1, 2, 10_000_000)?;
    ledger.submit_blocking(city.topup(city.wallets[0], 900_000)).map_err(|e| e.to_string())?;
    let requests: Vec<_> = (0..1_000).map(|i| city.pay(city.wallets[0], city.merchants[i % 2], 1_000, 7)).collect();
    let results = ledger.submit_many_blocking(requests).map_err(|e| e.to_string())?;
    check!(results[..900].iter().all(|r| r.is_ok()), "the first 900 fit");
    check!(
        results[900..].iter().all(|r| rejected(r.clone()) == Some(Rejection::InsufficientFunds)),
        "the last 100 do not"
    );
    check_eq!(results[899].as_ref().map(|p| p.entry.seq).ok(), Some(902));
    check_eq!(ledger.balance(city.wallets[0]).map_err(|e| e.to_string())?, 0);
    check_eq!(ledger.balance(city.fees).map_err(|e| e.to_string())?, 6_300);
    check_gapless(&ledger, 902)
}

/// URLs choose the backend; bad ones and unmigrated databases are clear errors.
pub fn urls_and_migrations(backend: Backend) -> TestResult {
    check!(matches!(ledger::migrate("mysql://x"), Err(LedgerError::BadUrl(_))), "mysql refused");
    check!(matches!(ledger::migrate("sqlite://"), Err(LedgerError::BadUrl(_))), "empty path refused");
    let db = TestDb::fresh(backend)?;
    check_eq!(ledger::migrate(&db.url).map_err(|e| e.to_string())?, 0);
    check_eq!(Backend::of_url(&db.url).map_err(|e| e.to_string())?, backend);
    if backend == Backend::Sqlite {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let err =
            ledger::Ledger::open(&url, ledger::LedgerConfig::default()).err().ok_or("unmigrated database opened")?;
        check!(matches!(err, LedgerError::Migration(_)), "{err}");
        let mode = {
            let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/sqlite"))
                .map_err(|e| e.to_string())?
                .count();
            check_eq!(ledger::migrate(&url).map_err(|e| e.to_string())?, migrations);
            let path = url.trim_start_matches("sqlite://");
            let mut c =
                <diesel::sqlite::SqliteConnection as diesel::Connection>::establish(path).map_err(|e| e.to_string())?;
            #[derive(diesel::QueryableByName)]
            struct Mode {
                #[diesel(sql_type = diesel::sql_types::Text)]
                journal_mode: String,
            }
            use diesel::RunQueryDsl;
            diesel::sql_query("PRAGMA journal_mode").get_result::<Mode>(&mut c).map_err(|e| e.to_string())?.journal_mode
        };
        check_eq!(mode.as_str(), "wal");
    }
    Ok(())
}

/// Accounts in several currencies: the trial balance is zero per currency, and a transfer
/// across currencies that is balanced per currency (an exchange) is one entry.
pub fn currencies(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let s = |e: LedgerError| e.to_string();
    let usd = Currency::parse("USD").map_err(|e| e.to_string())?;
    let bank_idr = ledger.system_account(AccountKind::CityBank, Currency::IDR).map_err(s)?.id;
    let bank_usd = ledger.system_account(AccountKind::CityBank, usd).map_err(s)?.id;
    check_eq!(ledger.system_account(AccountKind::CityBank, usd).map_err(s)?.id, bank_usd);
    let mk = |c, n: &str| {
        ledger
            .create_account(NewAccount {
                kind: AccountKind::Merchant,
                currency: c,
                name: n.into(),
                balance_max_minor: None,
            })
            .map(|a| a.id)
            .map_err(s)
    };
    let a_idr = mk(Currency::IDR, "a")?;
    let a_usd = mk(usd, "b")?;
    let fx = Request::new(Command::Transfer {
        kind: EntryKind::Transfer,
        legs: vec![
            Leg { account: a_idr, amount_minor: 1_600_000 },
            Leg { account: bank_idr, amount_minor: -1_600_000 },
            Leg { account: bank_usd, amount_minor: 100 },
            Leg { account: a_usd, amount_minor: -100 },
        ],
    });
    ledger.submit_blocking(fx).map_err(s)?;
    let tb = ledger.trial_balance().map_err(s)?;
    check_eq!(
        tb.iter().map(|l| (l.currency.code().to_owned(), l.balances_sum_minor)).collect::<Vec<_>>(),
        vec![("IDR".to_owned(), 0), ("USD".to_owned(), 0)]
    );
    Ok(())
}
