//! Money integrity (issue 12): random interleavings of online and offline payments, refunds
//! (of payments, offline payments and captures), holds, captures, voids, expiries, top-ups
//! that repay debts, card replacements (onto fresh or existing wallets), operations on
//! replaced wallets, settlements and idempotent retries go through the real ledger and
//! through this model, written from the rules as stated, not from the writer's code.
//!
//! After every batch: each result (the entry's number and the wallet balance it reports, or
//! the exact rejection), every balance, every wallet's debt and successor agree; the
//! offline-risk account holds minus the sum of the debts; no never-negative account is below
//! zero; the model balances. At the end: the trial balance, the gapless journal, and
//! `ledger::verify::verify` on the database (which recomputes the debts from the entries).

use std::cell::RefCell;
use std::collections::HashMap;

use ledger::domain::{
    AccountId, AccountKind, Command, EntryKind, IdempotencyKey, NewAccount, OfflineTerms, References, Rejection,
    Request,
};
use ledger::money::Currency;
use ledger::verify::{verify, VerifyOptions};
use ledger::{Backend, Ledger, LedgerError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::support::{idr, open, transfer, City, TestClock, TestDb};

const WALLETS: usize = 3;
const MERCHANTS: usize = 2;
const AGENT_FLOAT: i64 = 300_000_000;
const WALLET_MAX: i64 = 200_000_000;
const MINUTE_US: i64 = 60_000_000;
const DAY_US: i64 = 86_400_000_000;
/// The merchant's offline-risk window.
const RISK_WINDOW_US: i64 = 24 * 3600 * 1_000_000;
/// Indices of cards are taken modulo the number of wallets made so far.
const CARD_PICK: usize = 12;

/// Offline limits of a terminal with tight terms; others get [`OPEN`].
const TIGHT: Limits =
    Limits { per_tap: 12_000_000, card_day: 15_000_000, outstanding: 25_000_000, risk_cap: 20_000_000 };
const OPEN: Limits =
    Limits { per_tap: i64::MAX / 4, card_day: i64::MAX / 4, outstanding: i64::MAX / 4, risk_cap: i64::MAX / 4 };

#[derive(Debug, Clone, Copy)]
struct Limits {
    per_tap: i64,
    card_day: i64,
    outstanding: i64,
    risk_cap: i64,
}

#[derive(Debug, Clone)]
enum Op {
    /// `Command::Topup` from the agent's float (or the city bank): repays the debt first.
    Topup {
        card: usize,
        minor: i64,
        from_bank: bool,
    },
    /// A plain transfer of kind top-up: credits the named wallet (its successor, if the card
    /// was replaced), repays nothing.
    PlainTopup {
        card: usize,
        minor: i64,
    },
    Pay {
        card: usize,
        merchant: usize,
        minor: i64,
        fee_permille: i64,
    },
    Offline {
        card: usize,
        merchant: usize,
        minor: i64,
        fee_permille: i64,
        credential: i64,
        sync: i64,
        tight: bool,
        /// How long before the upload the terminal took it.
        minutes_ago: i64,
    },
    /// Refund `eighths`/8 of a payment, offline payment or capture (above 8: too much).
    Refund {
        target: usize,
        eighths: i64,
    },
    Hold {
        card: usize,
        merchant: usize,
        minor: i64,
        ttl_minutes: i64,
    },
    /// Capture `eighths`/8 of the held amount (above 8: more than was held).
    Capture {
        hold: usize,
        eighths: i64,
        fee_permille: i64,
    },
    Void {
        hold: usize,
    },
    /// Replace a card: onto a fresh wallet, or onto an existing one.
    Replace {
        card: usize,
        onto: Option<usize>,
    },
    Settle {
        merchant: usize,
    },
    Advance {
        minutes: i64,
    },
    Expire,
    Retry {
        back: usize,
    },
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![1i64..=2_000, 1i64..=30_000_000]
}

fn op() -> impl Strategy<Value = (Op, bool, bool)> {
    let card = 0..CARD_PICK;
    let merchant = 0..MERCHANTS;
    let o = prop_oneof![
        3 => (card.clone(), 1i64..=60_000_000, prop::bool::weighted(0.2))
            .prop_map(|(card, minor, from_bank)| Op::Topup { card, minor, from_bank }),
        1 => (card.clone(), 1i64..=20_000_000).prop_map(|(card, minor)| Op::PlainTopup { card, minor }),
        3 => (card.clone(), merchant.clone(), amount(), 0i64..=30)
            .prop_map(|(card, merchant, minor, fee_permille)| Op::Pay { card, merchant, minor, fee_permille }),
        4 => (card.clone(), merchant.clone(), amount(), 0i64..=30, 1i64..=2, 1i64..=3, any::<bool>(), 0i64..=600)
            .prop_map(|(card, merchant, minor, fee_permille, credential, sync, tight, minutes_ago)| Op::Offline {
                card, merchant, minor, fee_permille, credential, sync, tight, minutes_ago
            }),
        3 => (0usize..10, 1i64..=10).prop_map(|(target, eighths)| Op::Refund { target, eighths }),
        2 => (card.clone(), merchant.clone(), amount(), 1i64..=60)
            .prop_map(|(card, merchant, minor, ttl_minutes)| Op::Hold { card, merchant, minor, ttl_minutes }),
        2 => (0usize..6, 1i64..=9, 0i64..=30)
            .prop_map(|(hold, eighths, fee_permille)| Op::Capture { hold, eighths, fee_permille }),
        1 => (0usize..6).prop_map(|hold| Op::Void { hold }),
        2 => (card.clone(), prop::option::weighted(0.25, card))
            .prop_map(|(card, onto)| Op::Replace { card, onto }),
        1 => merchant.prop_map(|merchant| Op::Settle { merchant }),
        1 => prop_oneof![1i64..=45, 60i64..=1_800].prop_map(|minutes| Op::Advance { minutes }),
        1 => Just(Op::Expire),
        1 => (0usize..10).prop_map(|back| Op::Retry { back }),
    ];
    // (op, give it an idempotency key, batch it with the next op)
    (o, any::<bool>(), any::<bool>())
}

/// A request as the model sees it, with every reference resolved.
#[derive(Debug, Clone)]
enum Resolved {
    Topup { source: AccountId, wallet: AccountId, minor: i64 },
    PlainTopup { wallet: AccountId, minor: i64 },
    Pay { wallet: AccountId, merchant: AccountId, minor: i64, fee: i64 },
    Offline { wallet: AccountId, merchant: AccountId, minor: i64, fee: i64, card_id: i64, terms: OfflineTerms },
    Refund { payment_seq: i64, minor: i64 },
    Hold { wallet: AccountId, merchant: AccountId, minor: i64, expires_at_us: i64 },
    Capture { hold_seq: i64, minor: i64, fee: i64 },
    Void { hold_seq: i64 },
    Replace { old: AccountId, new: AccountId },
    Settle { merchant: AccountId },
}

/// Something that can be refunded: a payment, an offline payment or a capture.
#[derive(Debug, Clone, Copy)]
struct Refundable {
    /// The wallet that paid (the successor, for a replaced card).
    wallet: AccountId,
    merchant: AccountId,
    amount: i64,
    fee: i64,
    refunded: i64,
    /// What is still owed of this offline payment's shortfall and not repaid by its refunds.
    shortfall_owed: i64,
    /// A capture of a hold (for the tally).
    capture: bool,
}

#[derive(Debug, Clone, Copy)]
struct HoldModel {
    /// The wallet named by the hold (credits follow its successors).
    wallet: AccountId,
    merchant: AccountId,
    amount: i64,
    expires: i64,
    closed: bool,
}

/// The independent model.
#[derive(Debug)]
struct Model {
    bank: AccountId,
    fees: AccountId,
    agent: AccountId,
    holds_account: AccountId,
    risk: AccountId,
    balance: HashMap<AccountId, i64>,
    debt: HashMap<AccountId, i64>,
    /// Replaced wallet -> the wallet that took over.
    successor: HashMap<AccountId, AccountId>,
    next_seq: i64,
    now_us: i64,
    refundable: HashMap<i64, Refundable>,
    holds: HashMap<i64, HoldModel>,
    /// key -> seq of the entry written with it.
    keys: HashMap<String, i64>,
    /// Offline amounts per (credential, card, UTC day of the record).
    card_day: HashMap<(i64, i64, i64), i64>,
    /// Offline amounts per (credential, sync).
    since_sync: HashMap<(i64, i64), i64>,
    /// Shortfalls per merchant: (entry time, amount).
    shortfalls: HashMap<AccountId, Vec<(i64, i64)>>,
    /// What the last accepted request did of note (for the tally of what was covered).
    note: Vec<&'static str>,
}

fn half_even(fee: i64, part: i64, whole: i64) -> i64 {
    (Decimal::from(fee) * Decimal::from(part) / Decimal::from(whole))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .unwrap_or(i64::MIN)
}

/// What the ledger answers, as the model predicts it: the entry's number and the card
/// wallet's balance it reports (none for a replay or a non-card entry), or the rejection.
type Answer = Result<(i64, Option<i64>), Rejection>;

impl Model {
    fn get(&self, a: AccountId) -> i64 {
        self.balance.get(&a).copied().unwrap_or(0)
    }
    fn add(&mut self, a: AccountId, minor: i64) {
        *self.balance.entry(a).or_default() += minor;
    }
    fn owes(&self, w: AccountId) -> i64 {
        self.debt.get(&w).copied().unwrap_or(0)
    }
    fn add_debt(&mut self, w: AccountId, minor: i64) {
        *self.debt.entry(w).or_default() += minor;
    }
    /// The wallet that holds the card's money now.
    fn current(&self, mut w: AccountId) -> AccountId {
        while let Some(next) = self.successor.get(&w) {
            w = *next;
        }
        w
    }
    fn replaced(&self, w: AccountId) -> bool {
        self.successor.contains_key(&w)
    }
    fn noted(&mut self, cond: bool, what: &'static str) {
        if cond {
            self.note.push(what);
        }
    }

    fn apply(&mut self, r: &Resolved, key: Option<&str>) -> Answer {
        if let Some(seq) = key.and_then(|k| self.keys.get(k)) {
            return Ok((*seq, None));
        }
        let seq = self.next_seq;
        self.note.clear();
        let wallet_after = self.decide(r, seq)?;
        self.next_seq += 1;
        if let Some(k) = key {
            self.keys.insert(k.to_owned(), seq);
        }
        Ok((seq, wallet_after))
    }

    /// Checks and applies one request as entry `seq`; returns the card wallet's balance the
    /// answer reports.
    fn decide(&mut self, r: &Resolved, seq: i64) -> Result<Option<i64>, Rejection> {
        match *r {
            Resolved::Topup { source, wallet, minor } => self.topup(source, wallet, minor),
            Resolved::PlainTopup { wallet, minor } => self.plain_topup(wallet, minor),
            Resolved::Pay { wallet, merchant, minor, fee } => self.pay(wallet, merchant, minor, fee, seq),
            Resolved::Offline { wallet, merchant, minor, fee, card_id, terms } => {
                self.offline(wallet, merchant, (minor, fee), (card_id, terms), seq)
            }
            Resolved::Refund { payment_seq, minor } => self.refund(payment_seq, minor),
            Resolved::Hold { wallet, merchant, minor, expires_at_us } => {
                self.hold(wallet, merchant, minor, expires_at_us, seq)
            }
            Resolved::Capture { hold_seq, minor, fee } => self.capture(hold_seq, minor, fee, seq),
            Resolved::Void { hold_seq } => self.void(hold_seq),
            Resolved::Replace { old, new } => self.replace(old, new),
            Resolved::Settle { merchant } => self.settle(merchant),
        }
    }

    /// `Command::Topup`: to the card's current wallet; repays its debt first, and only what
    /// is left counts against the wallet's maximum.
    fn topup(&mut self, source: AccountId, wallet: AccountId, minor: i64) -> Result<Option<i64>, Rejection> {
        let w = self.current(wallet);
        let repay = self.owes(w).min(minor);
        if source == self.agent && self.get(source) < minor {
            return Err(Rejection::InsufficientFunds);
        }
        if minor > repay && self.get(w) + (minor - repay) > WALLET_MAX {
            return Err(Rejection::ExceedsMaxBalance);
        }
        self.noted(w != wallet, "to successor");
        self.noted(repay > 0, "repays debt");
        self.add(source, -minor);
        self.add(w, minor - repay);
        self.add(self.risk, repay);
        self.add_debt(w, -repay);
        Ok(Some(self.get(w)))
    }

    /// A plain transfer of kind top-up from the agent: no debt is repaid.
    fn plain_topup(&mut self, wallet: AccountId, minor: i64) -> Result<Option<i64>, Rejection> {
        // A plain transfer's credit to a replaced card's wallet goes to its successor.
        let w = self.current(wallet);
        self.noted(w != wallet, "plain credit to successor");
        // The ledger checks a transfer's legs in their order, and the wallet's credit is
        // the first (`support::transfer`): over its maximum is said before the agent's
        // shortfall when both hold.
        if self.get(w) + minor > WALLET_MAX {
            return Err(Rejection::ExceedsMaxBalance);
        }
        if self.get(self.agent) < minor {
            return Err(Rejection::InsufficientFunds);
        }
        self.add(w, minor);
        self.add(self.agent, -minor);
        Ok(None)
    }

    /// An online payment: not from a replaced card's wallet, nor more than it holds.
    fn pay(
        &mut self,
        wallet: AccountId,
        merchant: AccountId,
        minor: i64,
        fee: i64,
        seq: i64,
    ) -> Result<Option<i64>, Rejection> {
        if self.replaced(wallet) {
            return Err(Rejection::CardReplaced);
        }
        if self.get(wallet) < minor {
            return Err(Rejection::InsufficientFunds);
        }
        self.add(wallet, -minor);
        self.add(merchant, minor - fee);
        self.add(self.fees, fee);
        let p = Refundable { wallet, merchant, amount: minor, fee, refunded: 0, shortfall_owed: 0, capture: false };
        self.refundable.insert(seq, p);
        Ok(Some(self.get(wallet)))
    }

    /// An offline payment of `(minor, fee)` by the physical card of `(card_id, terms)`:
    /// within the terminal's limits, it is paid in full to the merchant; the card's
    /// current wallet pays what it holds and owes the shortfall, which the offline-risk
    /// account advances (within the merchant's risk cap).
    fn offline(
        &mut self,
        wallet: AccountId,
        merchant: AccountId,
        (minor, fee): (i64, i64),
        (card_id, terms): (i64, OfflineTerms),
        seq: i64,
    ) -> Result<Option<i64>, Rejection> {
        let w = self.current(wallet);
        let from_wallet = self.get(w).min(minor);
        let shortfall = minor - from_wallet;
        let limits = Limits {
            per_tap: terms.per_tap_minor,
            card_day: terms.per_card_per_day_minor,
            outstanding: terms.outstanding_minor,
            risk_cap: terms.merchant_risk_cap_minor,
        };
        let day = (terms.credential_id, card_id, terms.record_time_us.div_euclid(DAY_US));
        let sync = (terms.credential_id, terms.sync_id);
        if minor > limits.per_tap {
            return Err(Rejection::OfflineLimitPerTap);
        }
        if self.card_day.get(&day).copied().unwrap_or(0) + minor > limits.card_day {
            return Err(Rejection::OfflineLimitCardDay);
        }
        if self.since_sync.get(&sync).copied().unwrap_or(0) + minor > limits.outstanding {
            return Err(Rejection::OfflineLimitOutstanding);
        }
        if shortfall > 0 {
            let from = self.now_us - RISK_WINDOW_US;
            let exposure: i64 =
                self.shortfalls.get(&merchant).map_or(0, |v| v.iter().filter(|(t, _)| *t > from).map(|(_, a)| a).sum());
            if exposure + shortfall > limits.risk_cap {
                return Err(Rejection::OfflineRiskCap);
            }
        }
        self.noted(w != wallet, "by successor");
        self.noted(shortfall > 0, "shortfall");
        self.add(w, -from_wallet);
        self.add(self.risk, -shortfall);
        self.add(merchant, minor - fee);
        self.add(self.fees, fee);
        self.add_debt(w, shortfall);
        *self.card_day.entry(day).or_default() += minor;
        *self.since_sync.entry(sync).or_default() += minor;
        if shortfall > 0 {
            self.shortfalls.entry(merchant).or_default().push((self.now_us, shortfall));
        }
        let p = Refundable {
            wallet: w,
            merchant,
            amount: minor,
            fee,
            refunded: 0,
            shortfall_owed: shortfall,
            capture: false,
        };
        self.refundable.insert(seq, p);
        Ok(Some(self.get(w)))
    }

    /// A refund of part of a payment, offline payment or capture, with its share of the
    /// fee: to the payer's current wallet, after repaying what is still owed of the
    /// payment's shortfall.
    fn refund(&mut self, payment_seq: i64, minor: i64) -> Result<Option<i64>, Rejection> {
        let Some(p) = self.refundable.get(&payment_seq).copied() else {
            return Err(Rejection::PaymentNotFound);
        };
        if p.refunded + minor > p.amount {
            return Err(Rejection::RefundExceedsPayment);
        }
        let fee_back = half_even(p.fee, p.refunded + minor, p.amount) - half_even(p.fee, p.refunded, p.amount);
        let w = self.current(p.wallet);
        let repay = minor.min(p.shortfall_owed).min(self.owes(w));
        self.noted(w != p.wallet, "to successor");
        self.noted(repay > 0, "repays debt");
        self.noted(p.shortfall_owed > repay && repay == minor, "all to debt");
        self.noted(p.capture, "of capture");
        self.add(w, minor - repay);
        self.add(self.risk, repay);
        self.add_debt(w, -repay);
        self.add(p.merchant, -(minor - fee_back));
        self.add(self.fees, -fee_back);
        let after = Refundable { refunded: p.refunded + minor, shortfall_owed: p.shortfall_owed - repay, ..p };
        self.refundable.insert(payment_seq, after);
        Ok(Some(self.get(w)))
    }

    /// A hold: not on a replaced card's wallet, nor more than it holds.
    fn hold(
        &mut self,
        wallet: AccountId,
        merchant: AccountId,
        minor: i64,
        expires_at_us: i64,
        seq: i64,
    ) -> Result<Option<i64>, Rejection> {
        if self.replaced(wallet) {
            return Err(Rejection::CardReplaced);
        }
        if self.get(wallet) < minor {
            return Err(Rejection::InsufficientFunds);
        }
        self.add(wallet, -minor);
        self.add(self.holds_account, minor);
        let h = HoldModel { wallet, merchant, amount: minor, expires: expires_at_us, closed: false };
        self.holds.insert(seq, h);
        Ok(Some(self.get(wallet)))
    }

    /// A capture of an open, unexpired hold: the rest of the hold goes to the card's
    /// current wallet; the capture can be refunded.
    fn capture(&mut self, hold_seq: i64, minor: i64, fee: i64, seq: i64) -> Result<Option<i64>, Rejection> {
        let Some(h) = self.holds.get(&hold_seq).copied() else {
            return Err(Rejection::HoldNotFound);
        };
        if h.closed {
            return Err(Rejection::HoldClosed);
        }
        if self.now_us >= h.expires {
            return Err(Rejection::HoldExpired);
        }
        if minor > h.amount {
            return Err(Rejection::CaptureExceedsHold);
        }
        let w = self.current(h.wallet);
        self.noted(w != h.wallet, "rest to successor");
        self.add(self.holds_account, -h.amount);
        self.add(h.merchant, minor - fee);
        self.add(self.fees, fee);
        self.add(w, h.amount - minor);
        self.holds.insert(hold_seq, HoldModel { closed: true, ..h });
        let p = Refundable {
            wallet: w,
            merchant: h.merchant,
            amount: minor,
            fee,
            refunded: 0,
            shortfall_owed: 0,
            capture: true,
        };
        self.refundable.insert(seq, p);
        Ok(Some(self.get(w)))
    }

    /// A void of an open hold: the whole amount goes back to the card's current wallet.
    fn void(&mut self, hold_seq: i64) -> Result<Option<i64>, Rejection> {
        let Some(h) = self.holds.get(&hold_seq).copied() else {
            return Err(Rejection::HoldNotFound);
        };
        if h.closed {
            return Err(Rejection::HoldClosed);
        }
        let w = self.current(h.wallet);
        self.noted(w != h.wallet, "to successor");
        self.add(self.holds_account, -h.amount);
        self.add(w, h.amount);
        self.holds.insert(hold_seq, HoldModel { closed: true, ..h });
        Ok(Some(self.get(w)))
    }

    /// A card replacement: the old wallet's balance and debt move to the new one, which
    /// becomes its successor.
    fn replace(&mut self, old: AccountId, new: AccountId) -> Result<Option<i64>, Rejection> {
        // When several rejections apply the lowest number is reported: a replaced
        // card (12) before a wrong wallet (21).
        if self.replaced(old) || self.replaced(new) {
            return Err(Rejection::CardReplaced);
        }
        // A wallet takes over from at most one card, and never from itself.
        if old == new || self.successor.values().any(|s| *s == new) {
            return Err(Rejection::AccountKindMismatch);
        }
        let (balance, owed) = (self.get(old), self.owes(old));
        self.noted(owed > 0, "moves debt");
        self.noted(self.get(new) > 0 || self.owes(new) > 0, "onto a used wallet");
        self.add(old, -balance);
        self.add(new, balance);
        self.add_debt(old, -owed);
        self.add_debt(new, owed);
        self.successor.insert(old, new);
        Ok(Some(self.get(new)))
    }

    /// A settlement pays the merchant's whole positive balance to the city bank.
    fn settle(&mut self, merchant: AccountId) -> Result<Option<i64>, Rejection> {
        let payable = self.get(merchant);
        if payable <= 0 {
            return Err(Rejection::NothingToSettle);
        }
        self.add(merchant, -payable);
        self.add(self.bank, payable);
        Ok(None)
    }
}

fn to_request(m: &Model, r: &Resolved) -> Request {
    match *r {
        Resolved::Topup { source, wallet, minor } => {
            Request::new(Command::Topup { source, wallet, amount: idr(minor) })
        }
        Resolved::PlainTopup { wallet, minor } => transfer(EntryKind::Topup, wallet, m.agent, minor),
        Resolved::Pay { wallet, merchant, minor, fee } => {
            Request::new(Command::Payment { wallet, merchant, fee_account: m.fees, amount: idr(minor), fee_minor: fee })
        }
        Resolved::Offline { wallet, merchant, minor, fee, card_id, terms } => Request::new(Command::OfflinePayment {
            wallet,
            merchant,
            fee_account: m.fees,
            risk_account: m.risk,
            amount: idr(minor),
            fee_minor: fee,
            terms,
        })
        .with_references(References {
            terminal_id: Some(format!("terminal-{}", terms.credential_id)),
            card_id: Some(card_id),
            ..References::default()
        }),
        Resolved::Refund { payment_seq, minor } => Request::new(Command::Refund { payment_seq, amount: idr(minor) }),
        Resolved::Hold { wallet, merchant, minor, expires_at_us } => {
            Request::new(Command::Hold { wallet, merchant, amount: idr(minor), expires_at_us })
        }
        Resolved::Capture { hold_seq, minor, fee } => {
            Request::new(Command::Capture { hold_seq, amount: idr(minor), fee_minor: fee, fee_account: m.fees })
        }
        Resolved::Void { hold_seq } => Request::new(Command::Void { hold_seq }),
        Resolved::Replace { old, new } => Request::new(Command::ReplaceCard { old_wallet: old, new_wallet: new }),
        Resolved::Settle { merchant } => Request::new(Command::Settle { merchant, bank: m.bank }),
    }
}

fn outcome(r: &Result<ledger::domain::Posted, LedgerError>) -> Result<(i64, Option<i64>), String> {
    match r {
        Ok(p) => Ok((p.entry.seq, p.wallet_balance_minor)),
        Err(LedgerError::Rejected(x)) => Err(x.code().to_owned()),
        Err(e) => Err(format!("error: {e}")),
    }
}

/// One of the newest `seqs` (by `i` from the end), or now and then a sequence number that
/// names nothing.
fn pick(seqs: &[i64], i: usize) -> i64 {
    match seqs.len() {
        0 => 1_000_000,
        n => {
            let i = i % (n + 1);
            if i == n {
                1_000_000
            } else {
                seqs[n - 1 - i]
            }
        }
    }
}

/// Everything a run keeps besides the model: what was made, sent and is waiting.
struct Run {
    wallets: Vec<AccountId>,
    merchants: Vec<AccountId>,
    /// Accepted payments, offline payments and captures, in order.
    refundable: Vec<i64>,
    holds: Vec<i64>,
    sent: Vec<(Resolved, Option<String>)>,
    pending: Vec<(Resolved, Option<String>)>,
    next_record_seq: i64,
    /// How many of each kind of answer, for the report at the end of the test.
    tally: HashMap<String, u64>,
}

impl Run {
    /// The wallet of card index `card` (taken modulo the wallets made so far).
    fn wallet(&self, card: usize) -> AccountId {
        self.wallets[card % self.wallets.len()]
    }
}

fn s(e: LedgerError) -> String {
    e.to_string()
}

fn run_case(backend: Backend, ops: &[(Op, bool, bool)], tally: &mut HashMap<String, u64>) -> Result<(), String> {
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
    let Case { model, run, .. } = case;
    let last = the_books_close(&ledger, &model)?;
    verify_agrees(&db, ledger, last)?;
    for (k, v) in run.tally {
        *tally.entry(k).or_default() += v;
    }
    Ok(())
}

/// One case against the real ledger: the ledger, its clock and city, the model and the run.
struct Case<'a> {
    ledger: &'a Ledger,
    clock: &'a TestClock,
    city: &'a City,
    model: Model,
    run: Run,
}

impl<'a> Case<'a> {
    /// The model of a new city, whose only entry is the agent's float, and an empty run.
    fn start(ledger: &'a Ledger, clock: &'a TestClock, city: &'a City) -> Result<Case<'a>, String> {
        let holds_account = ledger.system_account(AccountKind::Holds, Currency::IDR).map_err(s)?.id;
        let risk = ledger.system_account(AccountKind::OfflineRisk, Currency::IDR).map_err(s)?.id;
        let mut model = Model {
            bank: city.bank,
            fees: city.fees,
            agent: city.agent,
            holds_account,
            risk,
            balance: HashMap::new(),
            debt: HashMap::new(),
            successor: HashMap::new(),
            next_seq: 2,
            now_us: clock.now(),
            refundable: HashMap::new(),
            holds: HashMap::new(),
            keys: HashMap::new(),
            card_day: HashMap::new(),
            since_sync: HashMap::new(),
            shortfalls: HashMap::new(),
            note: Vec::new(),
        };
        model.add(city.agent, AGENT_FLOAT);
        model.add(city.bank, -AGENT_FLOAT);
        let run = Run {
            wallets: city.wallets.clone(),
            merchants: city.merchants.clone(),
            refundable: Vec::new(),
            holds: Vec::new(),
            sent: Vec::new(),
            pending: Vec::new(),
            next_record_seq: 1,
            tally: HashMap::new(),
        };
        Ok(Case { ledger, clock, city, model, run })
    }

    /// Sends the waiting requests as one batch: every answer agrees with the model's and
    /// is tallied, then [`compare`] checks every balance, debt and successor.
    fn flush(&mut self) -> Result<(), String> {
        let (run, model) = (&mut self.run, &mut self.model);
        if run.pending.is_empty() {
            return Ok(());
        }
        let requests: Vec<Request> = run
            .pending
            .iter()
            .map(|(r, k)| {
                let req = to_request(model, r);
                match k {
                    Some(k) => req.with_key(IdempotencyKey::parse(k).expect("key")),
                    None => req,
                }
            })
            .collect();
        let results = self.ledger.submit_many_blocking(requests).map_err(|e| e.to_string())?;
        for ((r, k), got) in std::mem::take(&mut run.pending).into_iter().zip(results) {
            let want = model.apply(&r, k.as_deref()).map_err(|x| x.code().to_owned());
            let got = outcome(&got);
            if got != want {
                return Err(format!("{r:?} key {k:?}: ledger {got:?}, model {want:?}"));
            }
            let name = format!("{:?}", r).split([' ', '{']).next().unwrap_or("").to_owned();
            let result = match &got {
                Ok((_, None)) if k.as_ref().is_some_and(|k| run.sent.iter().any(|(_, s)| s.as_ref() == Some(k))) => {
                    "replayed".to_owned()
                }
                Ok(_) => ["ok"].iter().chain(&model.note).copied().collect::<Vec<_>>().join(", "),
                Err(code) => code.clone(),
            };
            *run.tally.entry(format!("{name} {result}")).or_default() += 1;
            if let Ok((seq, _)) = got {
                match r {
                    Resolved::Pay { .. } | Resolved::Offline { .. } | Resolved::Capture { .. }
                        if !run.refundable.contains(&seq) =>
                    {
                        run.refundable.push(seq)
                    }
                    Resolved::Hold { .. } if !run.holds.contains(&seq) => run.holds.push(seq),
                    _ => {}
                }
            }
            run.sent.push((r, k));
        }
        compare(self.ledger, model, run)
    }

    /// One operation: a request waits to be sent (now, or with the next operation's in one
    /// batch); or an earlier request is sent again, the clock moves, or holds expire.
    fn step(&mut self, op: &Op, key: Option<String>, batch_with_next: bool) -> Result<(), String> {
        match (self.resolve(op)?, op) {
            (Some(r), _) => {
                self.run.pending.push((r, key));
                if !batch_with_next {
                    self.flush()?;
                }
            }
            (None, Op::Retry { back }) => {
                self.flush()?;
                if let Some((mut r, k)) = self.run.sent.iter().rev().nth(*back).cloned() {
                    // Without a key an offline record sent again is a new record: the
                    // terminal numbers it anew ((credential, record) is unique).
                    if let (Resolved::Offline { terms, .. }, None) = (&mut r, &k) {
                        terms.record_seq = self.run.next_record_seq;
                        self.run.next_record_seq += 1;
                    }
                    self.run.pending.push((r, k));
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

    /// The request an operation makes, with every reference resolved (an offline payment
    /// takes the next record number; a replacement onto a fresh wallet makes it); none
    /// for a retry, a clock move or an expiry.
    fn resolve(&mut self, op: &Op) -> Result<Option<Resolved>, String> {
        let run = &self.run;
        Ok(match *op {
            Op::Topup { card, minor, from_bank } => Some(Resolved::Topup {
                source: if from_bank { self.city.bank } else { self.city.agent },
                wallet: run.wallet(card),
                minor,
            }),
            Op::PlainTopup { card, minor } => Some(Resolved::PlainTopup { wallet: run.wallet(card), minor }),
            Op::Pay { card, merchant, minor, fee_permille } => Some(Resolved::Pay {
                wallet: run.wallet(card),
                merchant: run.merchants[merchant],
                minor,
                fee: minor * fee_permille / 1000,
            }),
            Op::Offline { card, merchant, minor, fee_permille, credential, sync, tight, minutes_ago } => {
                let terms = self.terms(credential, sync, tight, minutes_ago);
                let run = &self.run;
                Some(Resolved::Offline {
                    wallet: run.wallet(card),
                    merchant: run.merchants[merchant],
                    minor,
                    fee: minor * fee_permille / 1000,
                    // The physical card: one per wallet.
                    card_id: (card % run.wallets.len()) as i64 + 1,
                    terms,
                })
            }
            Op::Refund { target, eighths } => {
                let payment_seq = pick(&run.refundable, target);
                let paid = self.model.refundable.get(&payment_seq).map_or(1_000, |p| p.amount);
                Some(Resolved::Refund { payment_seq, minor: (paid * eighths / 8).max(1) })
            }
            Op::Hold { card, merchant, minor, ttl_minutes } => Some(Resolved::Hold {
                wallet: run.wallet(card),
                merchant: run.merchants[merchant],
                minor,
                expires_at_us: self.clock.now() + ttl_minutes * MINUTE_US,
            }),
            Op::Capture { hold, eighths, fee_permille } => {
                let hold_seq = pick(&run.holds, hold);
                let held = self.model.holds.get(&hold_seq).map_or(1_000, |h| h.amount);
                let minor = (held * eighths / 8).max(1);
                Some(Resolved::Capture { hold_seq, minor, fee: minor * fee_permille / 1000 })
            }
            Op::Void { hold } => Some(Resolved::Void { hold_seq: pick(&run.holds, hold) }),
            Op::Replace { card, onto } => Some(self.replace(card, onto)?),
            Op::Settle { merchant } => Some(Resolved::Settle { merchant: run.merchants[merchant] }),
            Op::Advance { .. } | Op::Expire | Op::Retry { .. } => None,
        })
    }

    /// The terms of the next offline record: numbered by the terminal, taken
    /// `minutes_ago`, with tight or open limits.
    fn terms(&mut self, credential: i64, sync: i64, tight: bool, minutes_ago: i64) -> OfflineTerms {
        let limits = if tight { TIGHT } else { OPEN };
        let record_seq = self.run.next_record_seq;
        self.run.next_record_seq += 1;
        OfflineTerms {
            credential_id: credential,
            record_seq,
            record_time_us: self.clock.now() - minutes_ago * MINUTE_US,
            sync_id: sync,
            counter_floor: None,
            per_tap_minor: limits.per_tap,
            per_card_per_day_minor: limits.card_day,
            outstanding_minor: limits.outstanding,
            merchant_risk_cap_minor: limits.risk_cap,
        }
    }

    /// A replacement of a card's wallet onto another card's, or onto a fresh wallet made
    /// now in the ledger.
    fn replace(&mut self, card: usize, onto: Option<usize>) -> Result<Resolved, String> {
        let old = self.run.wallet(card);
        let new = match onto {
            Some(other) => self.run.wallet(other),
            None => {
                let name = format!("wallet {}", self.run.wallets.len());
                let new = NewAccount {
                    kind: AccountKind::CardWallet,
                    currency: Currency::IDR,
                    name,
                    balance_max_minor: None,
                };
                let id = self.ledger.create_account(new).map_err(s)?.id;
                self.run.wallets.push(id);
                id
            }
        };
        Ok(Resolved::Replace { old, new })
    }

    /// After the waiting requests, the ledger expires holds: it voids exactly those the
    /// model finds due, each with the entry number and wallet balance the model predicts.
    fn expire(&mut self) -> Result<(), String> {
        self.flush()?;
        let voided = self.ledger.expire_holds().map_err(s)?;
        let model = &mut self.model;
        let mut expected: Vec<i64> =
            model.holds.iter().filter(|(_, h)| !h.closed && h.expires <= model.now_us).map(|(seq, _)| *seq).collect();
        expected.sort();
        let got: Vec<i64> = voided.iter().filter_map(|p| p.entry.related_seq).collect();
        if got != expected {
            return Err(format!("expired holds: ledger voided {got:?}, model expected {expected:?}"));
        }
        for (seq, posted) in expected.into_iter().zip(&voided) {
            let want = model.apply(&Resolved::Void { hold_seq: seq }, None).map_err(|x| x.code().to_owned())?;
            if (posted.entry.seq, posted.wallet_balance_minor) != want {
                return Err(format!(
                    "expiry of hold {seq}: ledger {:?}, model {want:?}",
                    (posted.entry.seq, posted.wallet_balance_minor)
                ));
            }
        }
        compare(self.ledger, &self.model, &self.run)
    }
}

/// At the end: the trial balance is even, the ledger wrote as many entries as the model,
/// and the journal has no gap. Returns the last entry's number.
fn the_books_close(ledger: &Ledger, model: &Model) -> Result<i64, String> {
    let tb = ledger.trial_balance().map_err(s)?;
    if tb.iter().any(|l| l.balances_sum_minor != 0 || l.debits_minor != l.credits_minor) {
        return Err(format!("trial balance is off: {tb:?}"));
    }
    let last = ledger.last_seq().map_err(s)?;
    if last != model.next_seq - 1 {
        return Err(format!("ledger wrote {last} entries, the model {}", model.next_seq - 1));
    }
    crate::cases::check_gapless(ledger, last)?;
    Ok(last)
}

/// With the ledger shut down, `verify` on the database checks all `last` entries
/// (recomputing the debts from them).
fn verify_agrees(db: &TestDb, ledger: Ledger, last: i64) -> Result<(), String> {
    ledger.shutdown();
    drop(ledger);
    let (_, verifier) = crate::audit::keys()?;
    let options = VerifyOptions { allow_unsigned_tail: true, ..VerifyOptions::default() };
    let report = verify(&db.url, &verifier, &options, |_, _| {}).map_err(|e| format!("verify: {e}"))?;
    if report.entries != last {
        return Err(format!("verify checked {} entries of {last}", report.entries));
    }
    Ok(())
}

/// Every balance, debt and successor agrees with the model, and the invariants hold.
fn compare(ledger: &ledger::Ledger, model: &Model, run: &Run) -> Result<(), String> {
    let s = |e: LedgerError| e.to_string();
    let fixed = [model.bank, model.fees, model.agent, model.holds_account, model.risk];
    for a in fixed.iter().chain(&run.wallets).chain(&run.merchants) {
        let got = ledger.balance(*a).map_err(s)?;
        if got != model.get(*a) {
            return Err(format!("balance of account {a}: ledger {got}, model {}", model.get(*a)));
        }
    }
    for w in &run.wallets {
        let got = ledger.wallet_debt(*w).map_err(s)?;
        if got != model.owes(*w) {
            return Err(format!("debt of wallet {w}: ledger {got}, model {}", model.owes(*w)));
        }
        if got < 0 {
            return Err(format!("wallet {w} owes {got}: a debt below zero"));
        }
        let next = ledger.wallet_successor(*w).map_err(s)?;
        if next != model.successor.get(w).copied() {
            return Err(format!("successor of wallet {w}: ledger {next:?}, model {:?}", model.successor.get(w)));
        }
    }
    let debts: i64 = run.wallets.iter().map(|w| model.owes(*w)).sum();
    if model.get(model.risk) != -debts {
        return Err(format!("the offline-risk account holds {}, the wallets owe {debts}", model.get(model.risk)));
    }
    for a in [model.agent, model.holds_account].iter().chain(&run.wallets) {
        if model.get(*a) < 0 {
            return Err(format!("never-negative account {a} is at {}", model.get(*a)));
        }
    }
    let sum: i64 = model.balance.values().sum();
    if sum != 0 {
        return Err(format!("the model does not balance: {sum}"));
    }
    Ok(())
}

/// Random interleavings agree with the model; money is conserved and debts match.
pub fn integrity_agrees_with_model(backend: Backend) -> Result<(), String> {
    let cases = match backend {
        Backend::Sqlite => 48,
        Backend::Postgres => 16,
    };
    let started = std::time::Instant::now();
    let tally: RefCell<HashMap<String, u64>> = RefCell::default();
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&proptest::collection::vec(op(), 1..70), |ops| {
            run_case(backend, &ops, &mut tally.borrow_mut()).map_err(TestCaseError::fail)
        })
        .map_err(|e| e.to_string())?;
    if std::env::var_os("KARTU_MODEL_TALLY").is_some() {
        let mut lines: Vec<_> = tally.into_inner().into_iter().collect();
        lines.sort();
        eprintln!("{cases} cases in {:?}", started.elapsed());
        for (k, v) in lines {
            eprintln!("  {k}: {v}");
        }
    }
    Ok(())
}
