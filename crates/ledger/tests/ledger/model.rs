//! The auditor: random sequences of top-ups, payments, refunds, holds, captures, voids,
//! expiries and idempotent retries go through the real ledger and through this simple,
//! independent model. Every result, every balance and the trial balance must agree.

use std::collections::HashMap;

use ledger::domain::{AccountId, Command, IdempotencyKey, Rejection, Request};
use ledger::{Backend, Ledger, LedgerError};
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
            Resolved::Topup { wallet, minor } => self.topup(city, wallet, minor)?,
            Resolved::Pay { wallet, merchant, minor, fee } => self.pay(city, wallet, merchant, minor, fee)?,
            Resolved::Refund { payment_seq, minor } => self.refund(city, payment_seq, minor)?,
            Resolved::Hold { wallet, merchant, minor, expires_at_us } => {
                self.hold(holds_account, wallet, merchant, minor, expires_at_us)?
            }
            Resolved::Capture { hold_seq, minor, fee } => self.capture(city, holds_account, hold_seq, minor, fee)?,
            Resolved::Void { hold_seq } => self.void(holds_account, hold_seq)?,
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(k) = key {
            self.keys.insert(k.to_owned(), seq);
        }
        Ok(seq)
    }

    /// A top-up from the agent's float, within the wallet's maximum.
    fn topup(&mut self, city: &City, wallet: AccountId, minor: i64) -> Result<(), Rejection> {
        if self.get(wallet) + minor > WALLET_MAX {
            return Err(Rejection::ExceedsMaxBalance);
        }
        if self.get(city.agent) < minor {
            return Err(Rejection::InsufficientFunds);
        }
        self.add(wallet, minor);
        self.add(city.agent, -minor);
        Ok(())
    }

    /// A payment from what the wallet holds, less the fee to the merchant.
    fn pay(
        &mut self,
        city: &City,
        wallet: AccountId,
        merchant: AccountId,
        minor: i64,
        fee: i64,
    ) -> Result<(), Rejection> {
        if self.get(wallet) < minor {
            return Err(Rejection::InsufficientFunds);
        }
        self.add(wallet, -minor);
        self.add(merchant, minor - fee);
        self.add(city.fees, fee);
        self.payments.insert(self.next_seq, (wallet, merchant, minor, fee, 0));
        Ok(())
    }

    /// A refund of part of a payment, with its share of the fee (rounded half to even).
    fn refund(&mut self, city: &City, payment_seq: i64, minor: i64) -> Result<(), Rejection> {
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
        Ok(())
    }

    /// A hold moves the amount from the wallet to the holds account.
    fn hold(
        &mut self,
        holds_account: AccountId,
        wallet: AccountId,
        merchant: AccountId,
        minor: i64,
        expires_at_us: i64,
    ) -> Result<(), Rejection> {
        if self.get(wallet) < minor {
            return Err(Rejection::InsufficientFunds);
        }
        self.add(wallet, -minor);
        self.add(holds_account, minor);
        self.holds.insert(self.next_seq, (wallet, merchant, minor, expires_at_us, false));
        Ok(())
    }

    /// A capture of an open, unexpired hold: the merchant gets the amount less the fee,
    /// the wallet the rest of the hold.
    fn capture(
        &mut self,
        city: &City,
        holds_account: AccountId,
        hold_seq: i64,
        minor: i64,
        fee: i64,
    ) -> Result<(), Rejection> {
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
        Ok(())
    }

    /// A void of an open hold (expired or not) returns the whole amount to the wallet.
    fn void(&mut self, holds_account: AccountId, hold_seq: i64) -> Result<(), Rejection> {
        let Some(&(wallet, merchant, amount, expires, closed)) = self.holds.get(&hold_seq) else {
            return Err(Rejection::HoldNotFound);
        };
        if closed {
            return Err(Rejection::HoldClosed);
        }
        self.add(holds_account, -amount);
        self.add(wallet, amount);
        self.holds.insert(hold_seq, (wallet, merchant, amount, expires, true));
        Ok(())
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

/// One case against the real ledger: the ledger and its city, the model, and what was
/// made, sent and is waiting.
struct Case<'a> {
    ledger: &'a Ledger,
    clock: &'a TestClock,
    city: &'a City,
    holds_account: AccountId,
    /// The accounts whose balances are compared after every batch.
    accounts: Vec<AccountId>,
    model: Model,
    /// Accepted payments, in order.
    payments: Vec<i64>,
    /// Accepted holds, in order.
    holds: Vec<i64>,
    sent: Vec<(Resolved, Option<String>)>,
    pending: Vec<(Resolved, Option<String>)>,
}

fn run_case(backend: Backend, ops: &[(Op, bool, bool)]) -> Result<(), String> {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let ledger = open(&db, &clock)?;
    let city = City::new(&ledger, WALLETS, MERCHANTS, AGENT_FLOAT)?;
    let mut case = Case::start(&ledger, &clock, &city)?;
    for (i, (op, keyed, batch_with_next)) in ops.iter().enumerate() {
        let key = keyed.then(|| format!("key-{i}"));
        case.step(op, key, *batch_with_next)?;
    }
    case.flush()?;
    case.the_books_balance()
}

impl<'a> Case<'a> {
    /// The model of a new city: the agent's float is its only entry.
    fn start(ledger: &'a Ledger, clock: &'a TestClock, city: &'a City) -> Result<Case<'a>, String> {
        let holds_account = ledger
            .system_account(ledger::domain::AccountKind::Holds, ledger::money::Currency::IDR)
            .map_err(|e| e.to_string())?
            .id;
        let mut model = Model { next_seq: 2, now_us: clock.now(), ..Model::default() };
        model.add(city.agent, AGENT_FLOAT);
        model.add(city.bank, -AGENT_FLOAT);
        let accounts: Vec<AccountId> = [city.bank, city.fees, city.agent, holds_account]
            .into_iter()
            .chain(city.wallets.iter().copied())
            .chain(city.merchants.iter().copied())
            .collect();
        Ok(Case {
            ledger,
            clock,
            city,
            holds_account,
            accounts,
            model,
            payments: Vec::new(),
            holds: Vec::new(),
            sent: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// Sends the waiting requests as one batch: every result agrees with the model's, then
    /// every balance does.
    fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let requests: Vec<Request> = self
            .pending
            .iter()
            .map(|(r, k)| {
                let req = to_request(self.city, r);
                match k {
                    Some(k) => req.with_key(IdempotencyKey::parse(k).expect("key")),
                    None => req,
                }
            })
            .collect();
        let results = self.ledger.submit_many_blocking(requests).map_err(|e| e.to_string())?;
        for ((r, k), got) in self.pending.drain(..).zip(results) {
            let want =
                self.model.apply(self.city, self.holds_account, &r, k.as_deref()).map_err(|x| x.code().to_owned());
            let got = outcome(&got);
            if got != want {
                return Err(format!("{r:?} key {k:?}: ledger {got:?}, model {want:?}"));
            }
            if let Ok(seq) = got {
                match r {
                    Resolved::Pay { .. } if !self.payments.contains(&seq) => self.payments.push(seq),
                    Resolved::Hold { .. } if !self.holds.contains(&seq) => self.holds.push(seq),
                    _ => {}
                }
            }
            self.sent.push((r, k));
        }
        for a in &self.accounts {
            let got = self.ledger.balance(*a).map_err(|e| e.to_string())?;
            if got != self.model.get(*a) {
                return Err(format!("balance of account {a}: ledger {got}, model {}", self.model.get(*a)));
            }
        }
        Ok(())
    }

    /// One operation: a request waits to be sent (now, or with the next operation's in one
    /// batch); or an earlier request is sent again, the clock moves, or holds expire.
    fn step(&mut self, op: &Op, key: Option<String>, batch_with_next: bool) -> Result<(), String> {
        match (self.resolve(op), op) {
            (Some(r), _) => {
                self.pending.push((r, key));
                if !batch_with_next {
                    self.flush()?;
                }
            }
            (None, Op::Retry { back }) => {
                self.flush()?;
                if let Some(earlier) = self.sent.iter().rev().nth(*back).cloned() {
                    self.pending.push(earlier);
                    self.flush()?;
                }
            }
            (None, Op::Advance { minutes }) => {
                self.flush()?;
                self.clock.advance_us(minutes * MINUTE_US);
                self.model.now_us = self.clock.now();
            }
            (None, _) => self.expire()?,
        }
        Ok(())
    }

    /// The request an operation makes, with its references resolved to sequence numbers
    /// (one that names nothing when the index is past those accepted); none for a retry,
    /// a clock move or an expiry.
    fn resolve(&self, op: &Op) -> Option<Resolved> {
        let city = self.city;
        match op {
            Op::Topup { card, minor } => Some(Resolved::Topup { wallet: city.wallets[*card], minor: *minor }),
            Op::Pay { card, merchant, minor, fee_permille } => Some(Resolved::Pay {
                wallet: city.wallets[*card],
                merchant: city.merchants[*merchant],
                minor: *minor,
                fee: minor * fee_permille / 1000,
            }),
            Op::Refund { payment, eighths } => {
                let payment_seq = self.payments.get(*payment).copied().unwrap_or(1_000_000);
                let paid = self.model.payments.get(&payment_seq).map_or(1_000, |p| p.2);
                Some(Resolved::Refund { payment_seq, minor: (paid * eighths / 8).max(1) })
            }
            Op::Hold { card, merchant, minor, ttl_minutes } => Some(Resolved::Hold {
                wallet: city.wallets[*card],
                merchant: city.merchants[*merchant],
                minor: *minor,
                expires_at_us: self.clock.now() + ttl_minutes * MINUTE_US,
            }),
            Op::Capture { hold, minor, fee_permille } => Some(Resolved::Capture {
                hold_seq: self.holds.get(*hold).copied().unwrap_or(1_000_000),
                minor: *minor,
                fee: minor * fee_permille / 1000,
            }),
            Op::Void { hold } => Some(Resolved::Void { hold_seq: self.holds.get(*hold).copied().unwrap_or(1_000_000) }),
            Op::Advance { .. } | Op::Expire | Op::Retry { .. } => None,
        }
    }

    /// After the waiting requests, the ledger expires holds: it voids exactly those the
    /// model finds due, and the model voids them too.
    fn expire(&mut self) -> Result<(), String> {
        self.flush()?;
        let voided = self.ledger.expire_holds().map_err(|e| e.to_string())?;
        let model = &mut self.model;
        let mut expected: Vec<i64> =
            model.holds.iter().filter(|(_, h)| !h.4 && h.3 <= model.now_us).map(|(seq, _)| *seq).collect();
        expected.sort();
        let got: Vec<i64> = voided.iter().filter_map(|p| p.entry.related_seq).collect();
        if got != expected {
            return Err(format!("expired holds: ledger voided {got:?}, model expected {expected:?}"));
        }
        for seq in expected {
            model
                .apply(self.city, self.holds_account, &Resolved::Void { hold_seq: seq }, None)
                .map_err(|x| x.code().to_owned())?;
        }
        Ok(())
    }

    /// At the end: the ledger's trial balance and the model balance, the ledger wrote as
    /// many entries as the model, and the journal has no gap.
    fn the_books_balance(&self) -> Result<(), String> {
        let tb = self.ledger.trial_balance().map_err(|e| e.to_string())?;
        if tb.iter().any(|l| l.balances_sum_minor != 0 || l.debits_minor != l.credits_minor) {
            return Err(format!("trial balance is off: {tb:?}"));
        }
        let model_sum: i64 = self.model.balance.values().sum();
        if model_sum != 0 {
            return Err(format!("the model does not balance: {model_sum}"));
        }
        let last = self.ledger.last_seq().map_err(|e| e.to_string())?;
        if last != self.model.next_seq - 1 {
            return Err(format!("ledger wrote {last} entries, the model {}", self.model.next_seq - 1));
        }
        crate::cases::check_gapless(self.ledger, last)
    }
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
