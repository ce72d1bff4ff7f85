//! The auditor: random sequences of top-ups, payments, refunds, holds, captures, voids,
//! expiries and idempotent retries go through the real ledger and through this simple,
//! independent model. Every result, every balance and the trial balance must agree.

use std::collections::HashMap;

use ledger::domain::{AccountId, Command, IdempotencyKey, Rejection, Request};
use ledger::{Backend, LedgerError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::support::{idr, open, City, TestClock, TestDb};

const WALLETS: usize = 3;
const MERCHANTS: usize = 2;
const AGENT_FLOAT: i64 = 400_000_000;
const WALLET_MAX: i64 = 200_000_000;
const MINUTE_US: i64 = 60_000_000;

#[derive(Debug, Clone)]
enum Op {
    Topup {
        card: usize,
        minor: i64,
    },
    Pay {
        card: usize,
        merchant: usize,
        minor: i64,
        fee_permille: i64,
    },
    /// Refund `eighths`/8 of the payment (above 8: more than was paid).
    Refund {
        payment: usize,
        eighths: i64,
    },
    Hold {
        card: usize,
        merchant: usize,
        minor: i64,
        ttl_minutes: i64,
    },
    Capture {
        hold: usize,
        minor: i64,
        fee_permille: i64,
    },
    Void {
        hold: usize,
    },
    Advance {
        minutes: i64,
    },
    Expire,
    Retry {
        back: usize,
    },
}

fn op() -> impl Strategy<Value = (Op, bool, bool)> {
    let card = 0..WALLETS;
    let merchant = 0..MERCHANTS;
    let o = prop_oneof![
        3 => (card.clone(), 1i64..=80_000_000).prop_map(|(card, minor)| Op::Topup { card, minor }),
        4 => (card.clone(), merchant.clone(), prop_oneof![1i64..=2_000, 1i64..=40_000_000], 0i64..=30)
            .prop_map(|(card, merchant, minor, fee_permille)| Op::Pay { card, merchant, minor, fee_permille }),
        2 => (0usize..8, 1i64..=10).prop_map(|(payment, eighths)| Op::Refund { payment, eighths }),
        2 => (card, merchant, 1i64..=30_000_000, 1i64..=60)
            .prop_map(|(card, merchant, minor, ttl_minutes)| Op::Hold { card, merchant, minor, ttl_minutes }),
        2 => (0usize..6, 1i64..=30_000_000, 0i64..=30).prop_map(|(hold, minor, fee_permille)| Op::Capture { hold, minor, fee_permille }),
        1 => (0usize..6).prop_map(|hold| Op::Void { hold }),
        1 => (1i64..=45).prop_map(|minutes| Op::Advance { minutes }),
        1 => Just(Op::Expire),
        1 => (0usize..10).prop_map(|back| Op::Retry { back }),
    ];
    // (op, give it an idempotency key, batch it with the next op)
    (o, any::<bool>(), any::<bool>())
}

/// The independent model: balances and the objects the rules depend on, nothing else.
#[derive(Debug, Default)]
struct Model {
    balance: HashMap<AccountId, i64>,
    next_seq: i64,
    now_us: i64,
    /// seq -> (wallet, merchant, amount, fee, refunded)
    payments: HashMap<i64, (AccountId, AccountId, i64, i64, i64)>,
    /// seq -> (wallet, merchant, amount, expires, closed)
    holds: HashMap<i64, (AccountId, AccountId, i64, i64, bool)>,
    /// key -> seq of the entry written with it
    keys: HashMap<String, i64>,
}

/// A request as the model sees it, with references resolved to sequence numbers.
#[derive(Debug, Clone)]
enum Resolved {
    Topup { wallet: AccountId, minor: i64 },
    Pay { wallet: AccountId, merchant: AccountId, minor: i64, fee: i64 },
    Refund { payment_seq: i64, minor: i64 },
    Hold { wallet: AccountId, merchant: AccountId, minor: i64, expires_at_us: i64 },
    Capture { hold_seq: i64, minor: i64, fee: i64 },
    Void { hold_seq: i64 },
}

fn half_even(fee: i64, part: i64, whole: i64) -> i64 {
    (Decimal::from(fee) * Decimal::from(part) / Decimal::from(whole))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .unwrap_or(i64::MIN)
}

impl Model {
    fn get(&self, a: AccountId) -> i64 {
        self.balance.get(&a).copied().unwrap_or(0)
    }
    fn add(&mut self, a: AccountId, minor: i64) {
        *self.balance.entry(a).or_default() += minor;
    }

    /// Applies one request; `Ok(seq)` or the rejection.
    fn apply(
        &mut self,
        city: &City,
        holds_account: AccountId,
        r: &Resolved,
        key: Option<&str>,
    ) -> Result<i64, Rejection> {
        if let Some(seq) = key.and_then(|k| self.keys.get(k)) {
            return Ok(*seq);
        }
        match *r {
            Resolved::Topup { wallet, minor } => {
                if self.get(wallet) + minor > WALLET_MAX {
                    return Err(Rejection::ExceedsMaxBalance);
                }
                if self.get(city.agent) < minor {
                    return Err(Rejection::InsufficientFunds);
                }
                self.add(wallet, minor);
                self.add(city.agent, -minor);
            }
            Resolved::Pay { wallet, merchant, minor, fee } => {
                if self.get(wallet) < minor {
                    return Err(Rejection::InsufficientFunds);
                }
                self.add(wallet, -minor);
                self.add(merchant, minor - fee);
                self.add(city.fees, fee);
                self.payments.insert(self.next_seq, (wallet, merchant, minor, fee, 0));
            }
            Resolved::Refund { payment_seq, minor } => {
                let Some(&(wallet, merchant, amount, fee, refunded)) = self.payments.get(&payment_seq) else {
                    return Err(Rejection::PaymentNotFound);
                };
                if refunded + minor > amount {
                    return Err(Rejection::RefundExceedsPayment);
                }
                let fee_back = half_even(fee, refunded + minor, amount) - half_even(fee, refunded, amount);
                self.add(wallet, minor);
                self.add(merchant, -(minor - fee_back));
                self.add(city.fees, -fee_back);
                self.payments.insert(payment_seq, (wallet, merchant, amount, fee, refunded + minor));
            }
            Resolved::Hold { wallet, merchant, minor, expires_at_us } => {
                if self.get(wallet) < minor {
                    return Err(Rejection::InsufficientFunds);
                }
                self.add(wallet, -minor);
                self.add(holds_account, minor);
                self.holds.insert(self.next_seq, (wallet, merchant, minor, expires_at_us, false));
            }
            Resolved::Capture { hold_seq, minor, fee } => {
                let Some(&(wallet, merchant, amount, expires, closed)) = self.holds.get(&hold_seq) else {
                    return Err(Rejection::HoldNotFound);
                };
                if closed {
                    return Err(Rejection::HoldClosed);
                }
                if self.now_us >= expires {
                    return Err(Rejection::HoldExpired);
                }
                if minor > amount {
                    return Err(Rejection::CaptureExceedsHold);
                }
                self.add(holds_account, -amount);
                self.add(merchant, minor - fee);
                self.add(city.fees, fee);
                self.add(wallet, amount - minor);
                self.holds.insert(hold_seq, (wallet, merchant, amount, expires, true));
            }
            Resolved::Void { hold_seq } => {
                let Some(&(wallet, merchant, amount, expires, closed)) = self.holds.get(&hold_seq) else {
                    return Err(Rejection::HoldNotFound);
                };
                if closed {
                    return Err(Rejection::HoldClosed);
                }
                self.add(holds_account, -amount);
                self.add(wallet, amount);
                self.holds.insert(hold_seq, (wallet, merchant, amount, expires, true));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(k) = key {
            self.keys.insert(k.to_owned(), seq);
        }
        Ok(seq)
    }
}

fn to_request(city: &City, r: &Resolved) -> Request {
    match *r {
        Resolved::Topup { wallet, minor } => city.topup(wallet, minor),
        Resolved::Pay { wallet, merchant, minor, fee } => city.pay(wallet, merchant, minor, fee),
        Resolved::Refund { payment_seq, minor } => Request::new(Command::Refund { payment_seq, amount: idr(minor) }),
        Resolved::Hold { wallet, merchant, minor, expires_at_us } => {
            Request::new(Command::Hold { wallet, merchant, amount: idr(minor), expires_at_us })
        }
        Resolved::Capture { hold_seq, minor, fee } => {
            Request::new(Command::Capture { hold_seq, amount: idr(minor), fee_minor: fee, fee_account: city.fees })
        }
        Resolved::Void { hold_seq } => Request::new(Command::Void { hold_seq }),
    }
}

fn outcome(r: &Result<ledger::domain::Posted, LedgerError>) -> Result<i64, String> {
    match r {
        Ok(p) => Ok(p.entry.seq),
        Err(LedgerError::Rejected(x)) => Err(x.code().to_owned()),
        Err(e) => Err(format!("error: {e}")),
    }
}

fn run_case(backend: Backend, ops: &[(Op, bool, bool)]) -> Result<(), String> {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, WALLETS, MERCHANTS, AGENT_FLOAT)?;
    let holds_account = ledger
        .system_account(ledger::domain::AccountKind::Holds, ledger::money::Currency::IDR)
        .map_err(|e| e.to_string())?
        .id;
    let mut model = Model { next_seq: 2, now_us: clock.now(), ..Model::default() };
    model.add(city.agent, AGENT_FLOAT);
    model.add(city.bank, -AGENT_FLOAT);
    let mut payments: Vec<i64> = Vec::new();
    let mut holds: Vec<i64> = Vec::new();
    let mut sent: Vec<(Resolved, Option<String>)> = Vec::new();
    let mut pending: Vec<(Resolved, Option<String>)> = Vec::new();
    let accounts: Vec<AccountId> = [city.bank, city.fees, city.agent, holds_account]
        .into_iter()
        .chain(city.wallets.iter().copied())
        .chain(city.merchants.iter().copied())
        .collect();

    let flush = |pending: &mut Vec<(Resolved, Option<String>)>,
                 model: &mut Model,
                 payments: &mut Vec<i64>,
                 holds: &mut Vec<i64>,
                 sent: &mut Vec<(Resolved, Option<String>)>|
     -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        let requests: Vec<Request> = pending
            .iter()
            .map(|(r, k)| {
                let req = to_request(&city, r);
                match k {
                    Some(k) => req.with_key(IdempotencyKey::parse(k).expect("key")),
                    None => req,
                }
            })
            .collect();
        let results = ledger.submit_many_blocking(requests).map_err(|e| e.to_string())?;
        for ((r, k), got) in pending.drain(..).zip(results) {
            let want = model.apply(&city, holds_account, &r, k.as_deref()).map_err(|x| x.code().to_owned());
            let got = outcome(&got);
            if got != want {
                return Err(format!("{r:?} key {k:?}: ledger {got:?}, model {want:?}"));
            }
            if let Ok(seq) = got {
                match r {
                    Resolved::Pay { .. } if !payments.contains(&seq) => payments.push(seq),
                    Resolved::Hold { .. } if !holds.contains(&seq) => holds.push(seq),
                    _ => {}
                }
            }
            sent.push((r, k));
        }
        for a in &accounts {
            let got = ledger.balance(*a).map_err(|e| e.to_string())?;
            if got != model.get(*a) {
                return Err(format!("balance of account {a}: ledger {got}, model {}", model.get(*a)));
            }
        }
        Ok(())
    };

    for (i, (op, keyed, batch_with_next)) in ops.iter().enumerate() {
        let key = keyed.then(|| format!("key-{i}"));
        let resolved = match op {
            Op::Topup { card, minor } => Some(Resolved::Topup { wallet: city.wallets[*card], minor: *minor }),
            Op::Pay { card, merchant, minor, fee_permille } => Some(Resolved::Pay {
                wallet: city.wallets[*card],
                merchant: city.merchants[*merchant],
                minor: *minor,
                fee: minor * fee_permille / 1000,
            }),
            Op::Refund { payment, eighths } => {
                let payment_seq = payments.get(*payment).copied().unwrap_or(1_000_000);
                let paid = model.payments.get(&payment_seq).map_or(1_000, |p| p.2);
                Some(Resolved::Refund { payment_seq, minor: (paid * eighths / 8).max(1) })
            }
            Op::Hold { card, merchant, minor, ttl_minutes } => Some(Resolved::Hold {
                wallet: city.wallets[*card],
                merchant: city.merchants[*merchant],
                minor: *minor,
                expires_at_us: clock.now() + ttl_minutes * MINUTE_US,
            }),
            Op::Capture { hold, minor, fee_permille } => Some(Resolved::Capture {
                hold_seq: holds.get(*hold).copied().unwrap_or(1_000_000),
                minor: *minor,
                fee: minor * fee_permille / 1000,
            }),
            Op::Void { hold } => Some(Resolved::Void { hold_seq: holds.get(*hold).copied().unwrap_or(1_000_000) }),
            Op::Advance { .. } | Op::Expire | Op::Retry { .. } => None,
        };
        match (resolved, op) {
            (Some(r), _) => {
                pending.push((r, key));
                if !batch_with_next {
                    flush(&mut pending, &mut model, &mut payments, &mut holds, &mut sent)?;
                }
            }
            (None, Op::Retry { back }) => {
                flush(&mut pending, &mut model, &mut payments, &mut holds, &mut sent)?;
                if let Some(earlier) = sent.iter().rev().nth(*back).cloned() {
                    pending.push(earlier);
                    flush(&mut pending, &mut model, &mut payments, &mut holds, &mut sent)?;
                }
            }
            (None, Op::Advance { minutes }) => {
                flush(&mut pending, &mut model, &mut payments, &mut holds, &mut sent)?;
                clock.advance_us(minutes * MINUTE_US);
                model.now_us = clock.now();
            }
            (None, _) => {
                flush(&mut pending, &mut model, &mut payments, &mut holds, &mut sent)?;
                let voided = ledger.expire_holds().map_err(|e| e.to_string())?;
                let mut expected: Vec<i64> =
                    model.holds.iter().filter(|(_, h)| !h.4 && h.3 <= model.now_us).map(|(seq, _)| *seq).collect();
                expected.sort();
                let got: Vec<i64> = voided.iter().filter_map(|p| p.entry.related_seq).collect();
                if got != expected {
                    return Err(format!("expired holds: ledger voided {got:?}, model expected {expected:?}"));
                }
                for seq in expected {
                    model
                        .apply(&city, holds_account, &Resolved::Void { hold_seq: seq }, None)
                        .map_err(|x| x.code().to_owned())?;
                }
            }
        }
    }
    flush(&mut pending, &mut model, &mut payments, &mut holds, &mut sent)?;
    let tb = ledger.trial_balance().map_err(|e| e.to_string())?;
    if tb.iter().any(|l| l.balances_sum_minor != 0 || l.debits_minor != l.credits_minor) {
        return Err(format!("trial balance is off: {tb:?}"));
    }
    let model_sum: i64 = model.balance.values().sum();
    if model_sum != 0 {
        return Err(format!("the model does not balance: {model_sum}"));
    }
    let last = ledger.last_seq().map_err(|e| e.to_string())?;
    if last != model.next_seq - 1 {
        return Err(format!("ledger wrote {last} entries, the model {}", model.next_seq - 1));
    }
    crate::cases::check_gapless(&ledger, last)
}

/// Random operation sequences agree with the model.
pub fn agrees_with_model(backend: Backend) -> Result<(), String> {
    let cases = match backend {
        Backend::Sqlite => 48,
        Backend::Postgres => 24,
    };
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| run_case(backend, &ops).map_err(TestCaseError::fail))
        .map_err(|e| e.to_string())
}
