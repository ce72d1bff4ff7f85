//! The offline journal (SPEC §7): while the server cannot be reached, a terminal may accept
//! taps within its risk limits. Each one becomes a record of a hash chain — its
//! `prev_hash` is the SHA-256 of the previous record's canonical bytes — signed with the
//! terminal's Ed25519 key. The server checks an upload record by record: the signature,
//! the sequence (a missing record is a gap), the chain (another history is a fork, a
//! changed record breaks the next link), and posts each good record exactly once. The
//! good records before the first bad one are kept. No I/O here.

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

/// Format of the canonical bytes (2: records name the sync they were taken under).
pub const RECORD_FORMAT: u8 = 2;
/// Longest merchant reference.
pub const REFERENCE_MAX: usize = 120;

/// What an offline record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A payment at a POS.
    Payment,
    /// A gate or desk decision.
    Access,
    /// A tap at a transit validator: `decision` is its direction and stop (`on:3`,
    /// `off:7`), `amount_minor` the fare the validator charged offline (the server prices
    /// the ride again with every tap of the card it knows).
    Transit,
}

impl RecordKind {
    fn tag(self) -> u8 {
        match self {
            RecordKind::Payment => 1,
            RecordKind::Access => 2,
            RecordKind::Transit => 3,
        }
    }
}

/// A transit record's direction (`true`: on) and stop, from its `decision` (`on:3`).
pub fn transit_tap(decision: Option<&str>) -> Option<(bool, i64)> {
    let (direction, stop) = decision?.split_once(':')?;
    let on = match direction {
        "on" => true,
        "off" => false,
        _ => return None,
    };
    let plain = !stop.is_empty() && stop.len() <= 6 && stop.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| stop.parse().ok()).flatten().map(|stop| (on, stop))
}

/// One offline tap as the terminal recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1, 2, 3, ... per terminal, never reused.
    pub seq: u64,
    /// SHA-256 of the previous record's canonical bytes (zeros for the first), hex.
    pub prev_hash: String,
    /// When the terminal took it, µs since the Unix epoch (terminal clock).
    pub time_us: i64,
    /// Payment or access.
    pub kind: RecordKind,
    /// The card's UID as the reader read it (14 hex).
    pub uid: String,
    /// The tap: PICCData (32 hex).
    pub picc_data: String,
    /// The tap: SUN MAC (16 hex).
    pub cmac: String,
    /// Amount in minor units (0 for access).
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// The merchant's reference.
    pub reference: Option<String>,
    /// For access records: the terminal's decision, `allow` or `deny`; for transit records
    /// the tap's direction and stop (`on:3`, `off:7`).
    pub decision: Option<String>,
    /// The sync (deny list and limits) the terminal took it under; the server judges the
    /// record by what that sync said (0: none, which the server refuses).
    #[serde(default)]
    pub sync_id: u64,
}

/// Why a record or a journal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// A field is malformed.
    #[error("record {seq}: {field} is malformed")]
    Malformed {
        /// The record's sequence number.
        seq: u64,
        /// The field that is malformed.
        field: &'static str,
    },
    /// The signature does not verify with the terminal's key.
    #[error("record {seq}: the signature does not verify with the terminal's key")]
    BadSignature {
        /// The record's sequence number.
        seq: u64,
    },
    /// A record is missing (or the journal was reordered).
    #[error("record {got} arrived where record {expected} was due: a record is missing or out of order")]
    Gap {
        /// Expected sequence number.
        expected: u64,
        /// The sequence number received.
        got: u64,
    },
    /// The record does not continue the chain: the one before it was changed, or this is
    /// another history (a fork).
    #[error("record {seq} does not continue the chain: an earlier record was changed or this is a forked journal")]
    Fork {
        /// The record's sequence number.
        seq: u64,
    },
}

fn hex32(seq: u64, field: &'static str, s: &str, len: usize) -> Result<Vec<u8>, JournalError> {
    match hex::decode(s) {
        Ok(b) if b.len() == len => Ok(b),
        _ => Err(JournalError::Malformed { seq, field }),
    }
}

impl Record {
    /// Checks the fields' shapes.
    pub fn check(&self) -> Result<(), JournalError> {
        let seq = self.seq;
        hex32(seq, "prev_hash", &self.prev_hash, 32)?;
        hex32(seq, "uid", &self.uid, 7)?;
        hex32(seq, "picc_data", &self.picc_data, 16)?;
        hex32(seq, "cmac", &self.cmac, 8)?;
        let bad = |field| Err(JournalError::Malformed { seq, field });
        if seq == 0 {
            return bad("seq");
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad("currency");
        }
        if self.amount_minor < 0 || (self.kind == RecordKind::Payment && self.amount_minor == 0) {
            return bad("amount_minor");
        }
        if self.reference.as_ref().is_some_and(|r| r.len() > REFERENCE_MAX) {
            return bad("reference");
        }
        let decision_ok = match self.kind {
            RecordKind::Payment => self.decision.is_none(),
            RecordKind::Access => matches!(self.decision.as_deref(), Some("allow" | "deny")),
            RecordKind::Transit => transit_tap(self.decision.as_deref()).is_some(),
        };
        if !decision_ok {
            return bad("decision");
        }
        Ok(())
    }

    /// The canonical bytes that are hashed and signed: fixed order, length-prefixed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160);
        b.push(RECORD_FORMAT);
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&hex::decode(&self.prev_hash).unwrap_or_default());
        b.extend_from_slice(&self.time_us.to_be_bytes());
        b.extend_from_slice(&self.sync_id.to_be_bytes());
        b.push(self.kind.tag());
        for text in [Some(&self.uid), Some(&self.picc_data), Some(&self.cmac), Some(&self.currency)] {
            let t = text.map_or("", |s| s.as_str()).to_ascii_uppercase();
            b.extend_from_slice(&(t.len() as u16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&self.amount_minor.to_be_bytes());
        for text in [&self.reference, &self.decision] {
            match text {
                Some(t) => {
                    b.push(1);
                    b.extend_from_slice(&(t.len() as u16).to_be_bytes());
                    b.extend_from_slice(t.as_bytes());
                }
                None => b.push(0),
            }
        }
        b
    }

    /// SHA-256 of the canonical bytes: the next record's `prev_hash`.
    pub fn hash(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.canonical_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

/// A record and the terminal's signature over its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRecord {
    /// The record.
    pub record: Record,
    /// Ed25519 signature, hex (128 digits).
    pub signature: String,
}

/// The terminal's side: appends records to the chain and signs them.
pub struct JournalWriter {
    key: Ed25519KeyPair,
    next_seq: u64,
    last_hash: [u8; 32],
}

impl std::fmt::Debug for JournalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalWriter").field("next_seq", &self.next_seq).finish_non_exhaustive()
    }
}

/// What a new record says (the writer fills in seq and the chain).
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// When the terminal decided, µs (its clock).
    pub time_us: i64,
    /// Payment or access.
    pub kind: RecordKind,
    /// UID, 14 hex.
    pub uid: String,
    /// PICCData, 32 hex.
    pub picc_data: String,
    /// MAC, 16 hex.
    pub cmac: String,
    /// Amount (0 for access).
    pub amount_minor: i64,
    /// The ISO 4217 currency of the amount.
    pub currency: String,
    /// The merchant's own reference (an invoice, an order).
    pub reference: Option<String>,
    /// For access: allow or deny; for a transit tap: its direction and stop (`on:3`).
    pub decision: Option<String>,
    /// The sync it was taken under.
    pub sync_id: u64,
}

/// A new Ed25519 key for a terminal (PKCS#8 bytes; keep them secret).
pub fn generate_key() -> Result<Vec<u8>, JournalError> {
    Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| JournalError::Malformed { seq: 0, field: "key" })
}

impl JournalWriter {
    /// Continues a journal after `last` (None: a new journal).
    pub fn new(pkcs8: &[u8], last: Option<&Record>) -> Result<JournalWriter, JournalError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| JournalError::Malformed { seq: 0, field: "key" })?;
        let (next_seq, last_hash) = match last {
            Some(r) => (r.seq + 1, r.hash()),
            None => (1, [0u8; 32]),
        };
        Ok(JournalWriter { key, next_seq, last_hash })
    }

    /// The terminal's public key, hex (register it with the terminal's credential).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.public_key().as_ref())
    }

    /// Makes, signs and chains the next record.
    pub fn append(&mut self, new: NewRecord) -> Result<SignedRecord, JournalError> {
        let record = Record {
            seq: self.next_seq,
            prev_hash: hex::encode(self.last_hash),
            time_us: new.time_us,
            kind: new.kind,
            uid: new.uid.to_ascii_uppercase(),
            picc_data: new.picc_data.to_ascii_uppercase(),
            cmac: new.cmac.to_ascii_uppercase(),
            amount_minor: new.amount_minor,
            currency: new.currency,
            reference: new.reference,
            decision: new.decision,
            sync_id: new.sync_id,
        };
        record.check()?;
        let signature = hex::encode(self.key.sign(&record.canonical_bytes()).as_ref());
        self.next_seq += 1;
        self.last_hash = record.hash();
        Ok(SignedRecord { record, signature })
    }
}

/// Where the server's view of a terminal's journal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The last record accepted (0: none).
    pub seq: u64,
    /// Its hash (zeros: none).
    pub hash: [u8; 32],
}

impl ChainHead {
    /// An empty journal.
    pub const EMPTY: ChainHead = ChainHead { seq: 0, hash: [0u8; 32] };
}

/// The server's side: checks an upload against the terminal's key and the last accepted
/// record. Records at or below `head.seq` that are byte-identical to what was accepted are
/// a retried upload; they are skipped by the caller (it knows them by seq). Returns the
/// records that continue the chain, in order, and the first error after them, if any.
pub fn check_upload<'a>(
    public_key: &[u8],
    head: ChainHead,
    records: &'a [SignedRecord],
) -> (Vec<&'a SignedRecord>, Option<JournalError>) {
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    let mut good = Vec::new();
    let mut expect_hash = head.hash;
    for (expect_seq, r) in (head.seq + 1..).zip(records.iter().skip_while(|r| r.record.seq <= head.seq)) {
        let seq = r.record.seq;
        if let Err(e) = r.record.check() {
            return (good, Some(e));
        }
        let signature = match hex::decode(&r.signature) {
            Ok(s) if s.len() == 64 => s,
            _ => return (good, Some(JournalError::Malformed { seq, field: "signature" })),
        };
        if key.verify(&r.record.canonical_bytes(), &signature).is_err() {
            return (good, Some(JournalError::BadSignature { seq }));
        }
        if seq != expect_seq {
            return (good, Some(JournalError::Gap { expected: expect_seq, got: seq }));
        }
        if r.record.prev_hash != hex::encode(expect_hash) {
            return (good, Some(JournalError::Fork { seq }));
        }
        expect_hash = r.record.hash();
        good.push(r);
    }
    (good, None)
}

/// A terminal's offline risk limits, set by the operator with the terminal's credential
/// (`offline_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskLimits {
    /// Largest single offline payment, minor units.
    pub per_tap_minor: i64,
    /// Most one card may spend offline at this terminal per day.
    pub per_card_per_day_minor: i64,
    /// Most this terminal may take offline between two syncs (the server counts the
    /// records that name one sync).
    pub outstanding_minor: i64,
    /// Oldest record the server accepts, hours (the installation's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_offline_hours: Option<u32>,
}

/// Why an offline tap is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The card is on the deny list the terminal last synced.
    #[error("this card is on the deny list")]
    DenyListed,
    /// Above the per-tap limit.
    #[error("above the offline limit per tap")]
    PerTap,
    /// Above what this card may spend offline today.
    #[error("above the card's offline limit for today")]
    PerCardPerDay,
    /// The terminal holds too much not yet uploaded.
    #[error("the terminal's offline total is reached; go online")]
    Outstanding,
}

/// The terminal's running offline exposure.
#[derive(Debug, Clone, Default)]
pub struct RiskState {
    outstanding_minor: i64,
    /// (uid, day) → spent offline.
    per_card_day: std::collections::HashMap<(String, i64), i64>,
}

impl RiskState {
    /// Whether a payment of `amount_minor` by `uid` on `day` (days since the epoch) may be
    /// taken offline now.
    pub fn check(
        &self,
        limits: &RiskLimits,
        deny_list: &std::collections::HashSet<String>,
        uid: &str,
        day: i64,
        amount_minor: i64,
    ) -> Result<(), Refusal> {
        let uid = uid.to_ascii_uppercase();
        if deny_list.contains(&uid) {
            return Err(Refusal::DenyListed);
        }
        if amount_minor > limits.per_tap_minor {
            return Err(Refusal::PerTap);
        }
        let spent = self.per_card_day.get(&(uid, day)).copied().unwrap_or(0);
        if spent.saturating_add(amount_minor) > limits.per_card_per_day_minor {
            return Err(Refusal::PerCardPerDay);
        }
        if self.outstanding_minor.saturating_add(amount_minor) > limits.outstanding_minor {
            return Err(Refusal::Outstanding);
        }
        Ok(())
    }

    /// Counts an accepted offline payment.
    pub fn record(&mut self, uid: &str, day: i64, amount_minor: i64) {
        self.outstanding_minor += amount_minor;
        *self.per_card_day.entry((uid.to_ascii_uppercase(), day)).or_default() += amount_minor;
    }

    /// After an upload: what the server posted is no longer outstanding.
    pub fn uploaded(&mut self, amount_minor: i64) {
        self.outstanding_minor = (self.outstanding_minor - amount_minor).max(0);
    }

    /// Not yet uploaded.
    pub fn outstanding_minor(&self) -> i64 {
        self.outstanding_minor
    }
}

/// A service point's access policy as its gate applies it offline (SPEC §7), synced with
/// the deny list: who is entitled (the UIDs of active cards whose holders the policy's
/// categories admit), opening hours, and the per-holder rules the gate can keep alone.
/// Offline, a gate knows only its own decisions, so quota and passback count the entries
/// it allowed itself; it gives no queue numbers (the server numbers queues).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineAccess {
    /// UIDs the policy admits, upper-case hex.
    pub entitled: Vec<String>,
    /// Opening time, local "HH:MM".
    pub opens: Option<String>,
    /// Closing time, local "HH:MM" (exclusive).
    pub closes: Option<String>,
    /// IANA time zone of the hours and of the day.
    pub timezone: String,
    /// Entries allowed per card per local day.
    pub daily_quota: Option<u32>,
    /// No second entry within this many minutes.
    pub anti_passback_minutes: Option<u32>,
}

/// Why a gate refuses a card offline: the domain's reasons, the server's too.
pub use domain::access::Refusal as AccessRefusal;

impl OfflineAccess {
    /// Decides for `uid` (hex, either case) at `now_us`, given the deny list (upper-case
    /// UIDs, as synced) and the times (µs) this gate allowed the card in before.
    ///
    /// # Errors
    /// The [`AccessRefusal`] that applies first: deny list, entitlement, hours, passback,
    /// quota (the server's order).
    pub fn decide(
        &self,
        uid: &str,
        now_us: i64,
        deny: &std::collections::HashSet<String>,
        allowed_before: &[i64],
    ) -> Result<(), AccessRefusal> {
        use domain::access::{hours, timezone, Limits};
        let uid = uid.to_ascii_uppercase();
        if deny.contains(&uid) {
            return Err(AccessRefusal::CardBlocked);
        }
        if !self.entitled.iter().any(|e| e.eq_ignore_ascii_case(&uid)) {
            return Err(AccessRefusal::NotEntitled);
        }
        // The same rules as the server's, from the synced fields.
        let rules = domain::access::Rules {
            categories: domain::registry::Categories::NONE,
            hours: hours(self.opens.as_deref(), self.closes.as_deref()).map_err(|_| AccessRefusal::BadPolicy)?,
            timezone: timezone(&self.timezone).map_err(|_| AccessRefusal::BadPolicy)?,
            limits: Limits {
                daily_quota: self.daily_quota,
                passback_us: self.anti_passback_minutes.map(|m| i64::from(m) * 60_000_000),
            },
            issues_queue_numbers: false,
        };
        let day = rules.open_at(now_us)?;
        rules.limits.check(now_us, day.start_us, allowed_before)
    }
}
