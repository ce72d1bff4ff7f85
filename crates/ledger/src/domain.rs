//! The ledger's vocabulary: accounts, journal entries, postings, write requests and the
//! stable result codes of a rejected request.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::{Amount, Currency};

/// Default maximum balance of a card wallet: Rp 2,000,000.00, the limit for unregistered
/// e-money in Indonesia.
pub const WALLET_BALANCE_MAX_DEFAULT_MINOR: i64 = 200_000_000;
/// Longest idempotency key accepted.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;
/// How far below a card's last read counter an unused tap is still accepted online, by
/// default: taps of one card that race to the server arrive out of order.
pub const TAP_RACE_COUNTERS_DEFAULT: i64 = 4;
/// How long after the tap that raised a card's last counter a lower one may still race in,
/// by default (µs).
pub const TAP_RACE_WINDOW_US_DEFAULT: i64 = 10_000_000;
/// The window of a merchant's offline-risk exposure: shortfalls (debts) of its offline
/// payments and of rides it operates posted in the last 24 hours.
pub const OFFLINE_RISK_WINDOW_US: i64 = 24 * 3600 * 1_000_000;
/// Longest free-text reference (terminal id, merchant reference, memo).
pub const REFERENCE_TEXT_MAX: usize = 200;
/// Most postings in one entry.
pub const POSTINGS_PER_ENTRY_MAX: usize = 16;

/// The identity of an account. Assigned by the database (a positive number); never reused.
/// Outside this crate an id is only made from a number that passes [`AccountId::try_from`]
/// or from text that passes [`str::parse`]: both refuse zero and negative numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct AccountId(pub(crate) i64);

impl AccountId {
    /// The number the database knows the account by.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A number that is not an account id: zero or negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not an account id (ids are positive numbers)")]
pub struct NotAnAccountId(pub i64);

/// What diesel reads an account column of a registry row into, and what a request's
/// number becomes.
impl TryFrom<i64> for AccountId {
    type Error = NotAnAccountId;
    fn try_from(id: i64) -> Result<AccountId, NotAnAccountId> {
        if id > 0 {
            Ok(AccountId(id))
        } else {
            Err(NotAnAccountId(id))
        }
    }
}

impl From<AccountId> for i64 {
    fn from(id: AccountId) -> i64 {
        id.0
    }
}

/// An account id written in decimal, as in a URL path.
impl std::str::FromStr for AccountId {
    type Err = NotAnAccountId;
    fn from_str(s: &str) -> Result<AccountId, NotAnAccountId> {
        // Digits only: no sign, no spaces, no `+`.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NotAnAccountId(0));
        }
        s.parse::<i64>().map_err(|_| NotAnAccountId(0)).and_then(AccountId::try_from)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What an account is for. The kind decides the account's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A card holder's e-money: never negative, capped at a maximum balance.
    CardWallet,
    /// A merchant's takings, settled to the merchant's bank.
    Merchant,
    /// A top-up agent's prefunded float: never negative.
    AgentFloat,
    /// The city's bank (settlement): money enters and leaves the system here.
    CityBank,
    /// The city's fee revenue (merchant discount).
    FeeRevenue,
    /// Suspense: amounts waiting to be resolved.
    Suspense,
    /// Funds reserved by holds (pre-authorisations): one system account per currency.
    Holds,
    /// Shortfalls of offline taps that a wallet could not cover: its balance is minus what
    /// cards owe (each card's debt is kept by the writer beside it, see `wallet_debts`).
    OfflineRisk,
}

impl AccountKind {
    /// Every kind, in a fixed order.
    pub const ALL: [AccountKind; 8] = [
        AccountKind::CardWallet,
        AccountKind::Merchant,
        AccountKind::AgentFloat,
        AccountKind::CityBank,
        AccountKind::FeeRevenue,
        AccountKind::Suspense,
        AccountKind::Holds,
        AccountKind::OfflineRisk,
    ];

    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::CardWallet => "card_wallet",
            AccountKind::Merchant => "merchant",
            AccountKind::AgentFloat => "agent_float",
            AccountKind::CityBank => "city_bank",
            AccountKind::FeeRevenue => "fee_revenue",
            AccountKind::Suspense => "suspense",
            AccountKind::Holds => "holds",
            AccountKind::OfflineRisk => "offline_risk",
        }
    }

    /// Parses [`AccountKind::as_str`].
    pub fn parse(s: &str) -> Option<AccountKind> {
        AccountKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the balance of such an account may never go below zero.
    pub fn never_negative(self) -> bool {
        matches!(self, AccountKind::CardWallet | AccountKind::AgentFloat | AccountKind::Holds)
    }

    /// System accounts exist once per currency and are created on demand.
    pub fn is_system(self) -> bool {
        matches!(
            self,
            AccountKind::CityBank
                | AccountKind::FeeRevenue
                | AccountKind::Suspense
                | AccountKind::Holds
                | AccountKind::OfflineRisk
        )
    }
}

/// An account. Accounts are never changed after creation; their balance is the balance
/// after of their latest posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The account's id.
    pub id: AccountId,
    /// Kind, which decides the flags.
    pub kind: AccountKind,
    /// Every posting on the account is in this currency.
    pub currency: Currency,
    /// Display name.
    pub name: String,
    /// The balance may not go below zero.
    pub never_negative: bool,
    /// The balance may not exceed this (card wallets).
    pub balance_max_minor: Option<i64>,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_us: i64,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// What the account is for.
    pub kind: AccountKind,
    /// The one currency the account holds.
    pub currency: Currency,
    /// Display name.
    pub name: String,
    /// Maximum balance; card wallets get [`WALLET_BALANCE_MAX_DEFAULT_MINOR`] (or the
    /// ledger's configured default) when this is `None`.
    pub balance_max_minor: Option<i64>,
}

/// The kind of a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Money loaded onto a card wallet (from an agent float or the city bank).
    Topup,
    /// A card payment to a merchant, possibly with a fee leg.
    Payment,
    /// Money back from a merchant to the card of an earlier payment.
    Refund,
    /// Funds reserved from a wallet.
    Hold,
    /// A hold taken by the merchant (the rest released).
    Capture,
    /// A hold released in full (by the merchant, or at expiry).
    Void,
    /// A plain transfer between accounts.
    Transfer,
    /// A correction approved by two operators.
    Adjustment,
    /// Merchant takings paid out to the bank.
    Settlement,
    /// A balance moved from a replaced card to its successor.
    CardReplacement,
}

impl EntryKind {
    /// Every kind, in a fixed order.
    pub const ALL: [EntryKind; 10] = [
        EntryKind::Topup,
        EntryKind::Payment,
        EntryKind::Refund,
        EntryKind::Hold,
        EntryKind::Capture,
        EntryKind::Void,
        EntryKind::Transfer,
        EntryKind::Adjustment,
        EntryKind::Settlement,
        EntryKind::CardReplacement,
    ];

    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Topup => "topup",
            EntryKind::Payment => "payment",
            EntryKind::Refund => "refund",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Void => "void",
            EntryKind::Transfer => "transfer",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Settlement => "settlement",
            EntryKind::CardReplacement => "card_replacement",
        }
    }

    /// Parses [`EntryKind::as_str`].
    pub fn parse(s: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A client-chosen key that makes a write safe to retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// 1 to [`IDEMPOTENCY_KEY_MAX`] printable ASCII characters without spaces.
    pub fn parse(s: &str) -> Result<IdempotencyKey, Rejection> {
        let ok = !s.is_empty() && s.len() <= IDEMPOTENCY_KEY_MAX && s.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(IdempotencyKey(s.to_owned()))
        } else {
            Err(Rejection::InvalidReference)
        }
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// References carried by an entry, for tracing it back to the terminal, card and tap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// The terminal (or credential) that asked.
    pub terminal_id: Option<String>,
    /// The card that was tapped.
    pub card_id: Option<i64>,
    /// The card's SDM read counter of the tap: accepted only when it is above the last one
    /// accepted for the card (by an entry or an event).
    pub card_read_counter: Option<i64>,
    /// The merchant's own reference (order number, ticket).
    pub merchant_reference: Option<String>,
    /// Free text: a reason, a note.
    pub memo: Option<String>,
}

impl References {
    fn check(&self) -> Result<(), Rejection> {
        let texts = [&self.terminal_id, &self.merchant_reference, &self.memo];
        let too_long = texts.iter().any(|t| t.as_ref().is_some_and(|t| t.len() > REFERENCE_TEXT_MAX));
        let bad_counter = self.card_read_counter.is_some_and(|c| !(0..=0xFF_FFFF).contains(&c));
        let counter_without_card = self.card_read_counter.is_some() && self.card_id.is_none();
        if too_long || bad_counter || counter_without_card {
            Err(Rejection::InvalidReference)
        } else {
            Ok(())
        }
    }
}

/// One leg of a [`Command::Transfer`]: a signed amount on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    /// The account.
    pub account: AccountId,
    /// Positive raises the account's balance, negative lowers it; never zero.
    pub amount_minor: i64,
}

/// What a write asks the ledger to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Any balanced multi-leg movement: top-ups, adjustments, settlements, card
    /// replacements, transfers. `kind` must be one of those.
    Transfer {
        /// The entry kind to record.
        kind: EntryKind,
        /// Two or more legs summing to zero per currency.
        legs: Vec<Leg>,
    },
    /// A card payment: wallet -amount, merchant +(amount - fee), fee account +fee.
    Payment {
        /// The paying card's wallet.
        wallet: AccountId,
        /// The merchant.
        merchant: AccountId,
        /// Where the fee goes.
        fee_account: AccountId,
        /// The price.
        amount: Amount,
        /// The merchant discount, `0 ..= amount`.
        fee_minor: i64,
    },
    /// Money back for an earlier payment; all refunds of a payment together never exceed it.
    /// The fee comes back in proportion.
    Refund {
        /// The payment's entry sequence number.
        payment_seq: i64,
        /// How much.
        amount: Amount,
    },
    /// Reserve funds of a wallet for a merchant until `expires_at_us`.
    Hold {
        /// The card's wallet.
        wallet: AccountId,
        /// The merchant that may capture.
        merchant: AccountId,
        /// How much to reserve.
        amount: Amount,
        /// After this time the hold can no longer be captured and is voided.
        expires_at_us: i64,
    },
    /// Take at most the held amount; the rest goes back to the wallet.
    Capture {
        /// The hold's entry sequence number.
        hold_seq: i64,
        /// How much to take.
        amount: Amount,
        /// Merchant discount on the captured amount.
        fee_minor: i64,
        /// Where the fee goes.
        fee_account: AccountId,
    },
    /// Release a hold in full.
    Void {
        /// The hold's entry sequence number.
        hold_seq: i64,
    },
    /// A payment a terminal accepted offline, posted when it is uploaded: the merchant is
    /// paid in full; the wallet pays what it holds and the offline-risk account the rest
    /// (the shortfall, which the card owes until a top-up repays it). The writer checks the
    /// record against the terminal's limits as of the sync it names ([`OfflineTerms`]).
    OfflinePayment {
        /// The paying card's wallet (a replaced card's successor pays).
        wallet: AccountId,
        /// The merchant.
        merchant: AccountId,
        /// Where the fee goes.
        fee_account: AccountId,
        /// The offline-risk account of the currency.
        risk_account: AccountId,
        /// What the card paid.
        amount: Amount,
        /// Merchant discount, part of the amount.
        fee_minor: i64,
        /// What the record is checked against.
        terms: OfflineTerms,
    },
    /// Money loaded onto a card: what the card owes after an offline shortfall is repaid
    /// first (to the offline-risk account), the rest goes to the wallet.
    Topup {
        /// Where the money comes from: an agent's float or the city bank.
        source: AccountId,
        /// The card's wallet (a replaced card's successor is credited).
        wallet: AccountId,
        /// How much.
        amount: Amount,
    },
    /// A card replaced by a new one: whatever the old wallet holds, and whatever it owes,
    /// moves to the new wallet; from then on the old wallet pays nothing and every credit
    /// to it goes to its successor.
    ReplaceCard {
        /// The old card's wallet.
        old_wallet: AccountId,
        /// The new card's wallet.
        new_wallet: AccountId,
    },
    /// Pays a merchant's whole payable balance at this point of the log to the city bank.
    Settle {
        /// The merchant's account.
        merchant: AccountId,
        /// The city bank account of its currency.
        bank: AccountId,
    },
}

/// What the server knows of an offline record when it posts it: the terminal's limits and
/// the card's counter as of the sync the record names (the terminal could know no newer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OfflineTerms {
    /// The terminal's credential.
    pub credential_id: i64,
    /// The record's number in the terminal's journal.
    pub record_seq: i64,
    /// When the terminal took it (terminal clock), µs.
    pub record_time_us: i64,
    /// The sync the record names.
    pub sync_id: i64,
    /// The card's last read counter at that sync: the tap must be above it.
    pub counter_floor: Option<i64>,
    /// The terminal's largest offline payment (or transit tap).
    pub per_tap_minor: i64,
    /// Most one card may spend offline at this terminal per UTC day (by record time),
    /// payments and transit taps together.
    pub per_card_per_day_minor: i64,
    /// Most the terminal may take offline between two syncs.
    pub outstanding_minor: i64,
    /// Most the city covers in shortfalls of this merchant in 24 hours (its offline
    /// payments' and its rides').
    pub merchant_risk_cap_minor: i64,
}

/// A write request: a command, its references and an optional idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The same key with the same request returns the first result; with another, a conflict.
    pub idempotency_key: Option<IdempotencyKey>,
    /// References recorded with the entry.
    pub references: References,
    /// What to do.
    pub command: Command,
}

impl Request {
    /// A request without key or references.
    pub fn new(command: Command) -> Request {
        Request { idempotency_key: None, references: References::default(), command }
    }

    /// Sets the idempotency key.
    pub fn with_key(mut self, key: IdempotencyKey) -> Request {
        self.idempotency_key = Some(key);
        self
    }

    /// Sets the references.
    pub fn with_references(mut self, references: References) -> Request {
        self.references = references;
        self
    }

    /// Checks what can be checked without the ledger's state.
    pub(crate) fn check_shape(&self) -> Result<(), Rejection> {
        self.references.check()?;
        match &self.command {
            Command::Transfer { kind, legs } => {
                let allowed = matches!(
                    kind,
                    EntryKind::Topup
                        | EntryKind::Transfer
                        | EntryKind::Adjustment
                        | EntryKind::Settlement
                        | EntryKind::CardReplacement
                );
                if !allowed {
                    return Err(Rejection::InvalidKind);
                }
                if legs.len() < 2 || legs.len() > POSTINGS_PER_ENTRY_MAX {
                    return Err(Rejection::InvalidLegs);
                }
                if legs.iter().any(|l| {
                    l.amount_minor == 0 || l.amount_minor.unsigned_abs() > crate::money::AMOUNT_MAX_MINOR as u64
                }) {
                    return Err(Rejection::InvalidLegs);
                }
                Ok(())
            }
            Command::Payment { amount, fee_minor, .. }
            | Command::Capture { amount, fee_minor, .. }
            | Command::OfflinePayment { amount, fee_minor, .. } => {
                if *fee_minor < 0 || *fee_minor > amount.minor() {
                    Err(Rejection::InvalidFee)
                } else {
                    Ok(())
                }
            }
            Command::Refund { .. }
            | Command::Hold { .. }
            | Command::Void { .. }
            | Command::Topup { .. }
            | Command::ReplaceCard { .. }
            | Command::Settle { .. } => Ok(()),
        }
    }

    /// SHA-256 of a canonical encoding of everything but the key: two requests with the
    /// same key are "the same request" exactly when these agree. The encoding is
    /// length-prefixed fields in a fixed order, so it is stable across versions.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut e = Encoder(Vec::with_capacity(128));
        let r = &self.references;
        e.opt_text(&r.terminal_id);
        e.opt_int(r.card_id);
        e.opt_int(r.card_read_counter);
        e.opt_text(&r.merchant_reference);
        e.opt_text(&r.memo);
        encode_command(&mut e, &self.command);
        let digest = ring::digest::digest(&ring::digest::SHA256, &e.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }
}

/// The command's part of a request's fingerprint: its name, then its fields in a fixed
/// order (changing either changes every stored fingerprint).
fn encode_command(e: &mut Encoder, command: &Command) {
    match command {
        Command::Transfer { kind, legs } => {
            e.text("transfer");
            e.text(kind.as_str());
            for l in legs {
                e.int(l.account.0);
                e.int(l.amount_minor);
            }
        }
        Command::Payment { wallet, merchant, fee_account, amount, fee_minor } => {
            e.text("payment");
            e.ints(&[wallet.0, merchant.0, fee_account.0, amount.minor(), *fee_minor]);
            e.text(amount.currency().code());
        }
        Command::Refund { payment_seq, amount } => {
            e.text("refund");
            e.ints(&[*payment_seq, amount.minor()]);
            e.text(amount.currency().code());
        }
        Command::Hold { wallet, merchant, amount, expires_at_us } => {
            e.text("hold");
            e.ints(&[wallet.0, merchant.0, amount.minor(), *expires_at_us]);
            e.text(amount.currency().code());
        }
        Command::Capture { hold_seq, amount, fee_minor, fee_account } => {
            e.text("capture");
            e.ints(&[*hold_seq, amount.minor(), *fee_minor, fee_account.0]);
            e.text(amount.currency().code());
        }
        Command::Void { hold_seq } => {
            e.text("void");
            e.int(*hold_seq);
        }
        Command::OfflinePayment { wallet, merchant, fee_account, risk_account, amount, fee_minor, terms } => {
            e.text("offline_payment");
            e.ints(&[wallet.0, merchant.0, fee_account.0, risk_account.0, amount.minor(), *fee_minor]);
            e.text(amount.currency().code());
            encode_terms(e, terms);
        }
        Command::Topup { source, wallet, amount } => {
            e.text("topup");
            e.ints(&[source.0, wallet.0, amount.minor()]);
            e.text(amount.currency().code());
        }
        Command::ReplaceCard { old_wallet, new_wallet } => {
            e.text("replace_card");
            e.ints(&[old_wallet.0, new_wallet.0]);
        }
        Command::Settle { merchant, bank } => {
            e.text("settle");
            e.ints(&[merchant.0, bank.0]);
        }
    }
}

/// Offline terms' part of a fingerprint (an offline payment's, an offline transit tap's).
fn encode_terms(e: &mut Encoder, terms: &OfflineTerms) {
    e.ints(&[
        terms.credential_id,
        terms.record_seq,
        terms.record_time_us,
        terms.sync_id,
        terms.per_tap_minor,
        terms.per_card_per_day_minor,
        terms.outstanding_minor,
        terms.merchant_risk_cap_minor,
    ]);
    e.opt_int(terms.counter_floor);
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn text(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_text(&mut self, s: &Option<String>) {
        match s {
            Some(s) => {
                self.0.push(1);
                self.text(s);
            }
            None => self.0.push(0),
        }
    }
    fn int(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn ints(&mut self, vs: &[i64]) {
        vs.iter().for_each(|v| self.int(*v));
    }
    fn opt_int(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.0.push(1);
                self.int(v);
            }
            None => self.0.push(0),
        }
    }
}

/// One posting: a signed amount on an account, with the account's balance after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Posting {
    /// The account.
    pub account_id: AccountId,
    /// The account's currency.
    pub currency: Currency,
    /// Signed amount in the account's currency minor units.
    pub amount_minor: i64,
    /// The account's balance right after this posting.
    pub balance_after_minor: i64,
}

/// A journal entry as recorded. Never changed after it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Gapless sequence number, from 1.
    pub seq: i64,
    /// What the entry records.
    pub kind: EntryKind,
    /// Time of recording, microseconds since the Unix epoch; never decreases with `seq`.
    pub time_us: i64,
    /// The principal currency.
    pub currency: Currency,
    /// The principal amount (price, top-up, held amount...), positive.
    pub amount_minor: i64,
    /// The fee part of the amount, if any.
    pub fee_minor: i64,
    /// The principal account (the card wallet for card operations).
    pub account_id: Option<AccountId>,
    /// The other side (the merchant, the agent float).
    pub counterparty_id: Option<AccountId>,
    /// The entry this one refers to (the payment of a refund, the hold of a capture).
    pub related_seq: Option<i64>,
    /// For holds: when the hold expires.
    pub expires_at_us: Option<i64>,
    /// Where it came from: terminal, card, counter, references.
    pub references: References,
    /// The idempotency key it was written with.
    pub idempotency_key: Option<IdempotencyKey>,
    /// [`Request::fingerprint`] of the request that wrote it.
    pub request_hash: Option<[u8; 32]>,
    /// Two or more postings summing to zero per currency.
    pub postings: Vec<Posting>,
    /// Where the entry stands in the audit log (none when the log is switched off).
    pub audit: Option<AuditRef>,
}

/// An entry's place in the audit log: its leaf index and leaf hash (the receipt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRef {
    /// 0-based index of the leaf in the Merkle log.
    pub leaf_index: i64,
    /// SHA-256(0x00 || leaf bytes).
    pub leaf_hash: [u8; 32],
}

/// A successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The entry (the earlier one, for a replayed idempotent request).
    pub entry: Entry,
    /// True when this is the stored result of an earlier request with the same key.
    pub replayed: bool,
    /// The card wallet's balance right after the entry, for card operations (the successor's
    /// when the card was replaced); none for a replayed request.
    pub wallet_balance_minor: Option<i64>,
}

/// Why a request was refused. The numbers and codes are stable: clients may rely on them
/// forever. When several apply, the lowest number is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u16)]
pub enum Rejection {
    /// A key, reference or counter is malformed or too long.
    #[error("a reference or idempotency key is malformed")]
    InvalidReference = 1,
    /// The entry kind does not fit the command.
    #[error("entry kind not allowed for this command")]
    InvalidKind = 2,
    /// A transfer needs 2 to 16 non-zero legs.
    #[error("a transfer needs 2 to 16 non-zero legs")]
    InvalidLegs = 3,
    /// A fee must be between zero and the amount.
    #[error("the fee must be between zero and the amount")]
    InvalidFee = 4,
    /// An event's kind, scope, queue or payload is malformed or too long.
    #[error("an event's kind, scope, queue or payload is malformed")]
    InvalidEvent = 5,
    /// The same idempotency key was used for a different request.
    #[error("idempotency key already used for a different request")]
    IdempotencyConflict = 10,
    /// The tap's read counter is not above the last one accepted for this card: a replayed
    /// tap or a cloned card. Recorded for the operator (see `Ledger::card_replays`).
    #[error("this card's read counter is not above the last one seen: a replayed tap or a cloned card")]
    CardReplay = 11,
    /// The card was replaced: its wallet pays nothing more (credits go to its successor).
    #[error("this card was replaced; its balance is on the new card")]
    CardReplaced = 12,
    /// An account does not exist.
    #[error("account not found")]
    AccountNotFound = 20,
    /// An account has the wrong kind for this command.
    #[error("account has the wrong kind for this operation")]
    AccountKindMismatch = 21,
    /// The amount's currency differs from an account's.
    #[error("currency does not match the account")]
    CurrencyMismatch = 22,
    /// Legs do not sum to zero per currency.
    #[error("legs do not sum to zero per currency")]
    Unbalanced = 23,
    /// The payment to refund does not exist.
    #[error("payment not found")]
    PaymentNotFound = 30,
    /// Refunds would exceed the payment.
    #[error("refunds would exceed the payment amount")]
    RefundExceedsPayment = 31,
    /// The hold does not exist.
    #[error("hold not found")]
    HoldNotFound = 40,
    /// The hold was already captured or voided.
    #[error("hold already captured or voided")]
    HoldClosed = 41,
    /// The hold expired.
    #[error("hold expired")]
    HoldExpired = 42,
    /// Capture above the held amount.
    #[error("capture exceeds the held amount")]
    CaptureExceedsHold = 43,
    /// An account that may not go negative would.
    #[error("insufficient funds")]
    InsufficientFunds = 50,
    /// A wallet would exceed its maximum balance.
    #[error("the wallet's maximum balance would be exceeded")]
    ExceedsMaxBalance = 51,
    /// A balance would overflow.
    #[error("a balance would overflow")]
    Overflow = 52,
    /// A settlement of a merchant whose payable balance is zero.
    #[error("the merchant has nothing to settle")]
    NothingToSettle = 53,
    /// An offline payment above the terminal's per-tap limit.
    #[error("the offline payment is above the terminal's per-tap limit")]
    OfflineLimitPerTap = 60,
    /// An offline payment above what the card may spend offline at this terminal per day.
    #[error("the offline payment is above the card's daily offline limit at this terminal")]
    OfflineLimitCardDay = 61,
    /// The terminal took more offline since its last sync than its outstanding limit.
    #[error("the terminal's offline total since its last sync is above its limit")]
    OfflineLimitOutstanding = 62,
    /// The city's offline-risk cap for this merchant would be exceeded.
    #[error("the city's offline-risk cap for this merchant is reached")]
    OfflineRiskCap = 63,
    /// A service point's daily quota for this holder is used up.
    #[error("today's entries are used up")]
    QuotaReached = 70,
    /// The holder was let in too recently.
    #[error("the holder entered too recently")]
    Passback = 71,
    /// A transit tap the fare table cannot price: no table was in force, or the route has
    /// no fare or no operator.
    #[error("no fare applies to this tap: no fare table in force, or the route has no fare")]
    FareUnavailable = 80,
}

impl Rejection {
    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::InvalidReference => "invalid_reference",
            Rejection::InvalidKind => "invalid_kind",
            Rejection::InvalidLegs => "invalid_legs",
            Rejection::InvalidFee => "invalid_fee",
            Rejection::InvalidEvent => "invalid_event",
            Rejection::IdempotencyConflict => "idempotency_conflict",
            Rejection::CardReplay => "card_replay",
            Rejection::CardReplaced => "card_replaced",
            Rejection::AccountNotFound => "account_not_found",
            Rejection::AccountKindMismatch => "account_kind_mismatch",
            Rejection::CurrencyMismatch => "currency_mismatch",
            Rejection::Unbalanced => "unbalanced",
            Rejection::PaymentNotFound => "payment_not_found",
            Rejection::RefundExceedsPayment => "refund_exceeds_payment",
            Rejection::HoldNotFound => "hold_not_found",
            Rejection::HoldClosed => "hold_closed",
            Rejection::HoldExpired => "hold_expired",
            Rejection::CaptureExceedsHold => "capture_exceeds_hold",
            Rejection::InsufficientFunds => "insufficient_funds",
            Rejection::ExceedsMaxBalance => "exceeds_max_balance",
            Rejection::Overflow => "overflow",
            Rejection::NothingToSettle => "nothing_to_settle",
            Rejection::OfflineLimitPerTap => "offline_limit_per_tap",
            Rejection::OfflineLimitCardDay => "offline_limit_card_day",
            Rejection::OfflineLimitOutstanding => "offline_limit_outstanding",
            Rejection::OfflineRiskCap => "offline_risk_cap",
            Rejection::QuotaReached => "quota_reached",
            Rejection::Passback => "passback",
            Rejection::FareUnavailable => "fare_unavailable",
        }
    }

    /// The stable number.
    pub fn number(self) -> u16 {
        self as u16
    }
}

/// Longest event kind, scope or queue key.
pub const EVENT_TEXT_MAX: usize = 64;
/// Longest event payload (JSON text).
pub const EVENT_PAYLOAD_MAX: usize = 8 * 1024;

/// Something that happened that is not a movement of money but must be in the audit log:
/// an access decision, an operator action, a tap for a balance inquiry. The caller encodes
/// the details as JSON in `payload`; the ledger stores the bytes as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened: 1 to 64 of `a-z`, `0-9`, `_`, `.` (e.g. `access_decision`).
    pub kind: String,
    /// Who it belongs to, for scoped reads (e.g. `service_point:7`); printable ASCII.
    pub scope: Option<String>,
    /// The card tapped and its read counter; the counter must be above the card's last,
    /// like an entry's.
    pub card_id: Option<i64>,
    /// The tap's SDM read counter (needs `card_id`).
    pub card_read_counter: Option<i64>,
    /// When set, the event takes the next number of this queue (1, 2, ...), e.g.
    /// `clinic:7:2026-11-27` for a clinic's queue of the day.
    pub queue_key: Option<String>,
    /// The idempotency key (shared with entries: a key names one write).
    pub idempotency_key: Option<IdempotencyKey>,
    /// The details, JSON text.
    pub payload: String,
    /// For an allowed access decision: the holder's quota and passback at the service
    /// point, checked by the writer against the decisions it already recorded.
    pub access: Option<AccessLimit>,
    /// For a transit tap (or the close of rides whose time limit passed): the writer prices
    /// the card's rides again and posts what changed ([`TransitTap`]).
    pub transit: Option<TransitTap>,
}

/// A tap as the writer stores it (`transit_taps`), keyed by its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TapRow {
    pub event_id: i64,
    pub card_id: i64,
    pub credential_id: i64,
    pub tap: domain::fares::Tap,
    pub offline: bool,
    /// An offline tap: the sync its record names.
    pub sync_id: Option<i64>,
    /// An offline tap: what it counts against the validator's limits (the validator's
    /// fare or the writer's charge of its ride, whichever is more).
    pub offline_minor: Option<i64>,
}

/// An entry of a ride (`transit_entries`): the ride's boarding event and the event (tap or
/// close) that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RideEntry {
    /// The entry.
    pub entry_seq: i64,
    /// The card.
    pub card_id: i64,
    /// The ride's boarding tap's event.
    pub ride_event_id: i64,
    /// The tap or close that made it.
    pub event_id: i64,
}

/// Where each ride's money is: the operator's account and fee rate of each route.
pub(crate) type RouteOperators = std::collections::HashMap<i64, (AccountId, domain::money::FeeRate)>;

/// A tap at a transit validator as the writer prices it (issue 18): the card's taps of
/// the affected weeks are priced again with `domain::fares` and every ride whose charge or
/// hold differs from what the ledger holds gets an entry (a hold for an open ride, a
/// payment, a capture of its hold, a refund), linked to the ride in `transit_entries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitTap {
    /// The card's wallet.
    pub wallet: AccountId,
    /// The holder's categories (the largest concession applies).
    pub categories: Vec<String>,
    /// The tap: its route, stop and direction; its time for an offline tap (an online
    /// tap is at the writer's time). `None`: no tap, only the rides due are closed.
    pub tap: Option<domain::fares::Tap>,
    /// The validator's credential.
    pub credential_id: i64,
    /// A tap the validator accepted offline and uploaded later: what it charges beyond the
    /// wallet's balance becomes the card's debt, like an offline payment, within the
    /// validator's limits as of its sync. An online tap the wallet cannot pay for is
    /// refused.
    pub offline: Option<OfflineTransit>,
    /// A ride's missing tap-off set by its operator (`tap` is the tap-off, just after the
    /// boarding): priced at its own time, and what it shifts beyond the wallet becomes a
    /// debt. No terminal's limits: a fix never makes the card pay more in all.
    pub fix: bool,
}

/// What an offline validator's record adds to its tap: the terms it is judged by, as an
/// offline payment is (the tap's counter above the card's at the sync; per tap, per card
/// per UTC day and since the sync, the validator's limits; the city's cap on the
/// operator's shortfalls), and the fare the validator charged. The tap counts against the
/// limits with that fare or the writer's charge of its ride, whichever is more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineTransit {
    /// The validator's terms as of its sync (`record_time_us` is the tap's time).
    pub terms: OfflineTerms,
    /// The fare the validator charged (the record's `amount_minor`).
    pub fare_minor: i64,
}

/// A holder's limits at a service point, decided in the writer so that concurrent checks
/// cannot exceed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLimit {
    /// Names the holder at the service point, e.g. `service_point:7:holder:12`; every
    /// allowed decision recorded with it counts.
    pub holder_key: String,
    /// Start of the holder's local day at the service point, µs.
    pub day_start_us: i64,
    /// Entries allowed per local day.
    pub daily_quota: Option<u32>,
    /// No second entry within this many µs.
    pub passback_us: Option<i64>,
}

impl Event {
    /// Checks what can be checked without state.
    pub fn check_shape(&self) -> Result<(), Rejection> {
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= EVENT_TEXT_MAX
            && self.kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
        let text_ok = |t: &Option<String>| {
            t.as_ref()
                .is_none_or(|t| !t.is_empty() && t.len() <= EVENT_TEXT_MAX && t.bytes().all(|b| b.is_ascii_graphic()))
        };
        let payload_ok = self.payload.len() <= EVENT_PAYLOAD_MAX;
        let access_ok = self.access.as_ref().is_none_or(|a| text_ok(&Some(a.holder_key.clone())));
        if !(kind_ok && text_ok(&self.scope) && text_ok(&self.queue_key) && payload_ok && access_ok)
            || self.kind == "entry"
        {
            return Err(Rejection::InvalidEvent);
        }
        let bad_counter = self.card_read_counter.is_some_and(|c| !(0..=0xFF_FFFF).contains(&c));
        if bad_counter || (self.card_read_counter.is_some() && self.card_id.is_none()) {
            return Err(Rejection::InvalidReference);
        }
        // An offline tap is the validator's record: its tap at the record's time, by the
        // credential the terms name, for a fare of zero or more.
        let offline_ok = self.transit.as_ref().is_none_or(|t| {
            t.offline.is_none_or(|o| {
                t.tap.is_some_and(|tap| tap.time_us == o.terms.record_time_us)
                    && o.terms.credential_id == t.credential_id
                    && o.fare_minor >= 0
            })
        });
        if !offline_ok {
            return Err(Rejection::InvalidEvent);
        }
        Ok(())
    }

    /// SHA-256 of everything but the idempotency key, as [`Request::fingerprint`].
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut e = Encoder(Vec::with_capacity(64 + self.payload.len()));
        e.text("event");
        e.text(&self.kind);
        e.opt_text(&self.scope);
        e.opt_int(self.card_id);
        e.opt_int(self.card_read_counter);
        e.opt_text(&self.queue_key);
        e.text(&self.payload);
        if let Some(a) = &self.access {
            e.text(&a.holder_key);
            e.int(a.day_start_us);
            e.opt_int(a.daily_quota.map(i64::from));
            e.opt_int(a.passback_us);
        }
        if let Some(t) = &self.transit {
            e.text("transit");
            e.int(t.wallet.0);
            e.text(&t.categories.join(","));
            e.int(t.credential_id);
            e.int(i64::from(t.offline.is_some()));
            e.int(i64::from(t.fix));
            if let Some(tap) = &t.tap {
                // An online tap is at the writer's time: a retry's own clock is not part
                // of the request.
                e.int(if t.offline.is_some() || t.fix { tap.time_us } else { 0 });
                e.int(tap.route);
                e.int(tap.stop);
                e.int(i64::from(tap.kind == domain::fares::TapKind::On));
            }
            if let Some(o) = &t.offline {
                e.int(o.fare_minor);
                encode_terms(&mut e, &o.terms);
            }
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &e.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }
}

/// An event as recorded. Never changed after it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Gapless number among events, from 1.
    pub id: i64,
    /// What happened (e.g. access_decision, operator_action).
    pub kind: String,
    /// Time of recording, µs since the Unix epoch.
    pub time_us: i64,
    /// What it concerns (e.g. service_point:3), for filtering.
    pub scope: Option<String>,
    /// The card tapped.
    pub card_id: Option<i64>,
    /// The tap's read counter.
    pub card_read_counter: Option<i64>,
    /// The queue it took a number in.
    pub queue_key: Option<String>,
    /// The number it took.
    pub queue_number: Option<i64>,
    /// The idempotency key it was written with.
    pub idempotency_key: Option<IdempotencyKey>,
    /// [`Event::fingerprint`].
    pub request_hash: Option<[u8; 32]>,
    /// The details, JSON text.
    pub payload: String,
    /// The holder's key at a service point, when the decision counts against its limits.
    pub holder_key: Option<String>,
    /// Where it stands in the audit log.
    pub audit: Option<AuditRef>,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The event (the earlier one, for a replayed idempotent request).
    pub event: EventRecord,
    /// The entries a transit tap made (none when replayed: read them by the event).
    pub entries: Vec<Entry>,
    /// True when this is the stored result of an earlier request with the same key.
    pub replayed: bool,
}

/// A tap refused because its counter was not above the card's last: a replay or a clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardReplay {
    /// The card.
    pub card_id: i64,
    /// The counter the refused tap carried.
    pub counter: i64,
    /// The card's last accepted counter at that time.
    pub last_counter: i64,
    /// When, µs.
    pub time_us: i64,
    /// Who presented it (the terminal or the event scope).
    pub source: Option<String>,
}

/// One write of a batch: a journal entry or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A movement of money.
    Entry(Request),
    /// An event for the audit log.
    Event(Event),
}

/// The result of an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An entry was written (or an earlier one returned).
    Posted(Posted),
    /// An event was written (or an earlier one returned).
    Recorded(Recorded),
}

/// A statement of one account for a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The account.
    pub account_id: AccountId,
    /// Start of the period (inclusive), µs.
    pub from_us: i64,
    /// End of the period (exclusive), µs.
    pub to_us: i64,
    /// Balance before the period.
    pub opening_minor: i64,
    /// Balance at the end of the period.
    pub closing_minor: i64,
    /// The postings in the period (one page).
    pub lines: Vec<StatementLine>,
}

/// One posting on a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// The entry.
    pub entry_seq: i64,
    /// When the entry was posted, µs.
    pub time_us: i64,
    /// What kind of entry.
    pub kind: EntryKind,
    /// Signed amount on this account.
    pub amount_minor: i64,
    /// Balance after.
    pub balance_after_minor: i64,
}

/// One currency of the trial balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialBalanceLine {
    /// The currency.
    pub currency: Currency,
    /// Sum of the balances of every account: zero when the books balance.
    pub balances_sum_minor: i64,
    /// Total of all negative postings (as a positive number).
    pub debits_minor: i64,
    /// Total of all positive postings.
    pub credits_minor: i64,
}

#[cfg(test)]
mod tests {
    use super::AccountId;

    #[test]
    fn account_ids_are_positive_decimal_numbers() {
        let check = |text: &str, expect: Option<i64>| {
            assert_eq!(text.parse::<AccountId>().ok().map(AccountId::get), expect, "{text:?}");
        };
        check("1", Some(1));
        check("42", Some(42));
        check("9223372036854775807", Some(i64::MAX));
        for bad in ["", "0", "-1", "+1", " 1", "1 ", "1.0", "0x1", "9223372036854775808", "١"] {
            check(bad, None);
        }
        assert_eq!(AccountId::try_from(7).map(i64::from), Ok(7));
        assert!(AccountId::try_from(0).is_err() && AccountId::try_from(-3).is_err());
        // The wire form is the bare number, and a stored 0 does not come back as an id.
        assert_eq!(serde_json::to_string(&AccountId(5)).unwrap(), "5");
        assert!(serde_json::from_str::<AccountId>("0").is_err());
        assert_eq!(serde_json::from_str::<AccountId>("12").unwrap(), AccountId(12));
    }
}
