//! `kartu terminal`: what a shop's POS, a parking or library gate, a clinic desk, a kiosk
//! or a top-up counter runs. It reads a tap through the reader crate, calls the API, and
//! shows the result. When the server cannot be reached, a POS takes payments within its
//! risk limits and a gate decides from its last synced deny list; each offline tap is a
//! record of the terminal's signed, hash-chained journal (`kartu-offline`), kept in a file
//! and uploaded when the server is back.
//!
//! Only an unreachable server (a refused or reset connection, a timeout) sends a tap
//! offline. A TLS or certificate error, or a URL that is not `http(s)://HOST`, refuses the
//! tap with an error that says so and writes nothing to the journal: a misconfigured
//! terminal must not quietly approve payments offline ([`client::transport::classify`]).
//!
//! [`Terminal::handle`] is the logic for one tap (no PC/SC, so it is tested against a real
//! server with taps made in the test); [`run`] is the loop over a real reader.

mod answer;
mod validator;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client::wire::{AccessCheck, DenyList, NewInquiry, NewPayment, NewTopup, NewTransitTap, Tap, TransitSync, Upload};
use client::{Client, ClientError};
use domain::fares::{Tap as FareTap, TapKind};
use domain::money::{Amount, Currency};
use offline::{
    AccessRefusal, JournalWriter, NewRecord, OfflineAccess, RecordKind, RiskLimits, RiskState, SignedRecord,
};

pub use answer::Answer;
pub use validator::{Direction, Journeys, PriceError, Priced, ValidatorSettings};

/// What the terminal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A merchant's point of sale: amount, tap, payment.
    Pos,
    /// A service point's gate or desk: tap, allow or deny.
    Gate,
    /// A balance kiosk.
    Kiosk,
    /// A top-up counter.
    Agent,
    /// A transit validator: on a vehicle (bound to a route) or a station's gate (bound to
    /// a stop); decides fares offline with the synced fare tables.
    Validator,
}

impl Mode {
    /// Parses `pos`, `gate`, `kiosk`, `agent`, `validator`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "pos" => Some(Mode::Pos),
            "gate" => Some(Mode::Gate),
            "kiosk" => Some(Mode::Kiosk),
            "agent" => Some(Mode::Agent),
            "validator" => Some(Mode::Validator),
            _ => None,
        }
    }
}

/// Errors of the terminal.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// The reader failed.
    #[error("reader: {0}")]
    Reader(#[from] reader::ReaderError),
    /// The local journal or key file failed.
    #[error("local storage: {0}")]
    Storage(String),
    /// The journal refused a record.
    #[error("offline journal: {0}")]
    Journal(#[from] offline::JournalError),
    /// Bad input (amount, mode, URL, CA file).
    #[error("{0}")]
    Input(String),
    /// The server was reached wrongly (TLS, certificate, protocol): the tap is refused, not
    /// taken offline.
    #[error("REFUSED, not taken offline: {0}")]
    Connection(String),
}

/// One card read: the UID from the reader and the SUN tap from the card's URL.
#[derive(Debug, Clone)]
pub struct CardRead {
    /// UID, 14 hex.
    pub uid: String,
    /// PICCData, 32 hex.
    pub picc_data: String,
    /// SUN MAC, 16 hex.
    pub cmac: String,
}

/// What happened at one tap, for the display.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Approved / allowed / shown.
    pub ok: bool,
    /// Whether the server answered (false: decided offline).
    pub online: bool,
    /// One line for the screen.
    pub line: String,
    /// The server's answer, or the offline record.
    pub detail: Answer,
}

/// The terminal's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// What it is.
    pub mode: Mode,
    /// The API's base URL.
    pub server: String,
    /// Its credential's token.
    pub token: String,
    /// Where it keeps its key, journal and deny list.
    pub data_dir: PathBuf,
    /// The installation's currency.
    pub currency: String,
    /// How long to wait for the server before deciding offline.
    pub timeout: Duration,
    /// A PEM file of the CA certificates to trust for an `https://` server (else the
    /// system's roots).
    pub ca_file: Option<PathBuf>,
    /// A validator's direction and stop (other modes ignore it).
    pub validator: ValidatorSettings,
}

/// The request of one online tap.
enum Request {
    Pay(NewPayment),
    Topup(NewTopup),
    Access(AccessCheck),
    Inquiry(NewInquiry),
}

/// The terminal's state.
pub struct Terminal {
    config: Config,
    /// The API client, with the terminal's token.
    api: Client,
    writer: JournalWriter,
    journal_path: PathBuf,
    risk: RiskState,
    limits: Option<RiskLimits>,
    deny: HashSet<String>,
    /// A gate's policy and entitled cards, as last synced.
    access: Option<OfflineAccess>,
    /// The last sync's id: offline records name it, and the server judges them by it.
    sync_id: u64,
    /// When this gate let each card in offline (its own journal): for quota and passback.
    allowed: HashMap<String, Vec<i64>>,
    /// Records not yet uploaded.
    pending: Vec<SignedRecord>,
    next_key: u64,
    /// A validator's last transit sync and the taps it saw since.
    journeys: Journeys,
    /// A validator that found the server unreachable decides offline until then, rather
    /// than keep riders waiting for a timeout at every tap.
    offline_until: Option<Instant>,
}

/// How long a validator stays offline after the server could not be reached.
pub const VALIDATOR_RETRY: Duration = Duration::from_secs(20);

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").field("mode", &self.config.mode).field("pending", &self.pending.len()).finish()
    }
}

fn storage(e: impl std::fmt::Display) -> TerminalError {
    TerminalError::Storage(e.to_string())
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Parses a decimal amount of `currency` (ISO 4217) into minor units, with the domain's
/// grammar (`domain::money::Amount::parse`).
pub fn parse_amount(text: &str, currency: &str) -> Result<i64, TerminalError> {
    let currency = Currency::parse(currency).map_err(|e| TerminalError::Input(format!("currency: {e}")))?;
    Amount::parse(text.trim(), currency, domain::money::AMOUNT_MAX_MINOR)
        .map(|a| a.minor())
        .map_err(|e| TerminalError::Input(format!("{text:?} is not an amount like 12500.00: {e}")))
}

fn format_minor(minor: i64, currency: &str) -> String {
    Currency::parse(currency).unwrap_or(Currency::IDR).format_minor(minor)
}

/// What the server said to a call: its answer, a refusal, or nothing (unreachable, or a
/// 5xx: the server cannot serve now).
enum Reply<T> {
    Answer(T),
    Refused(ClientError),
    Unreachable,
}

/// Sorts a call's result; a connection that is wrong (TLS, certificate, URL, protocol) is
/// an error, never "offline".
fn reply<T>(result: Result<T, ClientError>) -> Result<Reply<T>, TerminalError> {
    match result {
        Ok(answer) => Ok(Reply::Answer(answer)),
        Err(ClientError::Broken(why)) => Err(TerminalError::Connection(why)),
        Err(e) if e.is_unavailable() => {
            tracing::warn!(why = %e, "the server cannot be reached");
            Ok(Reply::Unreachable)
        }
        Err(e) => Ok(Reply::Refused(e)),
    }
}

/// The deny list, limits and access policy of the last sync, as kept in the data directory.
fn read_deny_cache(path: &Path) -> Option<DenyList> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// A validator's last transit sync, as kept in the data directory.
fn read_transit_cache(path: &Path) -> Option<TransitSync> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The tap a transit record journaled (its record time, direction and stop) on `route`.
fn journaled_tap(record: &offline::Record, route: i64) -> Option<domain::fares::Tap> {
    let (on, stop) = offline::transit_tap(record.decision.as_deref())?;
    let kind = if on { domain::fares::TapKind::On } else { domain::fares::TapKind::Off };
    Some(domain::fares::Tap { time_us: record.time_us, route, stop, kind })
}

impl Terminal {
    /// Opens the terminal's data directory: its Ed25519 key (created on first use; register
    /// the printed public key with the terminal's credential) and its journal.
    pub fn open(config: Config) -> Result<Terminal, TerminalError> {
        let api = Client::new(&config.server, config.ca_file.as_deref(), Some(config.timeout))
            .map_err(|e| TerminalError::Input(format!("the server URL: {e}")))?
            .with_token(&config.token);
        std::fs::create_dir_all(&config.data_dir).map_err(storage)?;
        let key_path = config.data_dir.join("terminal.key");
        let key = match std::fs::read_to_string(&key_path) {
            Ok(text) => hex::decode(text.trim()).map_err(storage)?,
            Err(_) => {
                let key = offline::generate_key()?;
                files::create_private(&key_path, hex::encode(&key).as_bytes()).map_err(storage)?;
                key
            }
        };
        let journal_path = config.data_dir.join("journal.jsonl");
        let records = read_journal(&journal_path)?;
        let writer = JournalWriter::new(&key, records.last().map(|r| &r.record))?;
        let uploaded = std::fs::read_to_string(config.data_dir.join("uploaded"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut allowed: HashMap<String, Vec<i64>> = HashMap::new();
        for r in records.iter().filter(|r| r.record.kind == RecordKind::Access) {
            if r.record.decision.as_deref() == Some("allow") {
                allowed.entry(r.record.uid.clone()).or_default().push(r.record.time_us);
            }
        }
        let pending: Vec<SignedRecord> = records.into_iter().filter(|r| r.record.seq > uploaded).collect();
        let mut risk = RiskState::default();
        for r in &pending {
            if counts_against_limits(&r.record) {
                risk.record(&r.record.uid, r.record.time_us / 86_400_000_000, r.record.amount_minor);
            }
        }
        let journeys = Journeys::new(read_transit_cache(&config.data_dir.join("transit-sync.json")));
        let mut terminal = Terminal {
            config,
            api,
            writer,
            journal_path,
            risk,
            limits: None,
            deny: HashSet::new(),
            access: None,
            sync_id: 0,
            allowed,
            pending,
            next_key: now_us() as u64,
            journeys,
            offline_until: None,
        };
        terminal.see_pending();
        if let Some(list) = read_deny_cache(&terminal.config.data_dir.join("deny-list.json")) {
            terminal.take_deny_list(list);
        }
        Ok(terminal)
    }

    /// The public key to register with the terminal's credential (hex).
    pub fn public_key_hex(&self) -> String {
        self.writer.public_key_hex()
    }

    /// Offline records not yet uploaded.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn key(&mut self) -> String {
        self.next_key += 1;
        format!("term-{}", self.next_key)
    }

    /// Notes the pending transit records' taps (taken since the last sync) in the journeys.
    fn see_pending(&mut self) {
        let Some(route) = self.journeys.route() else { return };
        for r in self.pending.iter().filter(|r| r.record.kind == RecordKind::Transit) {
            if let Some(tap) = journaled_tap(&r.record, route) {
                self.journeys.saw(&r.record.uid, tap);
            }
        }
    }

    /// What the validator knows of journeys (its last transit sync and the taps since).
    pub fn journeys(&self) -> &Journeys {
        &self.journeys
    }

    /// Sets a vehicle validator's stop (the bus has moved on).
    pub fn set_stop(&mut self, stop: i64) {
        self.config.validator.stop = Some(stop);
    }

    /// Sets a validator's direction.
    pub fn set_direction(&mut self, direction: Direction) {
        self.config.validator.direction = direction;
    }

    fn take_deny_list(&mut self, list: DenyList) {
        self.deny = list.uids.into_iter().collect();
        self.limits = list.limits;
        self.access = list.access;
        self.sync_id = u64::try_from(list.sync_id).unwrap_or(0);
    }

    /// Uploads pending offline records and refreshes the deny list and limits. Returns how
    /// many records the server posted; `None` when the server could not be reached; an error
    /// when it was reached wrongly (TLS, certificate).
    pub fn sync(&mut self) -> Result<Option<usize>, TerminalError> {
        let mut posted = 0;
        if !self.pending.is_empty() {
            match self.upload()? {
                Some(n) => posted = n,
                None => return Ok(None),
            }
        }
        match reply(self.api.deny_list())? {
            Reply::Answer(list) => {
                let text = serde_json::to_string(&list).map_err(storage)?;
                std::fs::write(self.config.data_dir.join("deny-list.json"), text).map_err(storage)?;
                self.take_deny_list(list);
            }
            // A validator registered without a journal key works online only; it still
            // syncs its route and fares (to tell taps on from taps off).
            Reply::Refused(e) if self.config.mode == Mode::Validator => {
                tracing::info!(why = %e, "no offline deny list: this validator decides online only");
            }
            _ => return Ok(None),
        }
        if self.config.mode == Mode::Validator {
            let Reply::Answer(sync) = reply(self.api.transit_sync())? else { return Ok(None) };
            let text = serde_json::to_string(&sync).map_err(storage)?;
            std::fs::write(self.config.data_dir.join("transit-sync.json"), text).map_err(storage)?;
            self.journeys = Journeys::new(Some(sync));
            self.see_pending();
        }
        self.offline_until = None;
        Ok(Some(posted))
    }

    /// Uploads the pending records; how many the server posted (`None`: unreachable).
    fn upload(&mut self) -> Result<Option<usize>, TerminalError> {
        let key = format!("upload-{}", self.pending[0].record.seq);
        let answer = match reply(self.api.upload_journal(&key, &Upload { records: self.pending.clone() }))? {
            Reply::Unreachable => return Ok(None),
            Reply::Answer(_) => None,
            Reply::Refused(e) => Some(e),
        };
        // Whatever the answer, ask where the server stands: records at or below its
        // head are posted (and kept there), so they are no longer ours to send.
        let head = match reply(self.api.offline_head())? {
            Reply::Answer(h) => u64::try_from(h.seq).unwrap_or(0),
            _ => return Ok(None),
        };
        let before = self.pending.len();
        let done: i64 = self
            .pending
            .iter()
            .filter(|r| r.record.seq <= head && counts_against_limits(&r.record))
            .map(|r| r.record.amount_minor)
            .sum();
        self.pending.retain(|r| r.record.seq > head);
        self.risk.uploaded(done);
        std::fs::write(self.config.data_dir.join("uploaded"), head.to_string()).map_err(storage)?;
        if let Some(refusal) = answer {
            tracing::error!(%refusal, "the server refused part of the offline journal");
            return Err(TerminalError::Storage(format!("the server refused the journal: {refusal}")));
        }
        Ok(Some(before - self.pending.len()))
    }

    /// Handles one tap: online when the server answers, else offline within the limits when
    /// it cannot be reached. A server reached wrongly (TLS, certificate, protocol) refuses
    /// the tap with [`TerminalError::Connection`]; nothing is written to the journal.
    pub fn handle(
        &mut self,
        read: &CardRead,
        amount_minor: Option<i64>,
        reference: Option<&str>,
    ) -> Result<Outcome, TerminalError> {
        if self.config.mode == Mode::Validator {
            return self.validate(read);
        }
        let tap = Tap { picc_data: read.picc_data.clone(), cmac: read.cmac.clone() };
        let amount = amount_minor.map(|m| format_minor(m, &self.config.currency));
        let currency = Some(self.config.currency.clone());
        let request = match (self.config.mode, amount) {
            (Mode::Pos, Some(amount)) => {
                Request::Pay(NewPayment { tap, amount, currency, reference: reference.map(str::to_owned) })
            }
            (Mode::Pos, None) => return Err(TerminalError::Input("a payment needs an amount".into())),
            (Mode::Agent, Some(amount)) => Request::Topup(NewTopup { tap: Some(tap), card_id: None, amount, currency }),
            (Mode::Agent, None) => return Err(TerminalError::Input("a top-up needs an amount".into())),
            (Mode::Gate, _) => Request::Access(AccessCheck { tap }),
            (Mode::Kiosk, _) => Request::Inquiry(NewInquiry { tap }),
            (Mode::Validator, _) => return self.validate(read),
        };
        // Before a new online request, send what was taken offline (the server is back).
        if !self.pending.is_empty() {
            let _ = self.sync();
        }
        let key = self.key();
        let sent = match &request {
            Request::Pay(body) => self.api.pay(&key, body).map(Answer::Payment),
            Request::Topup(body) => self.api.topup(&key, body).map(Answer::Topup),
            Request::Access(body) => self.api.access_check(&key, body).map(Answer::Access),
            Request::Inquiry(body) => self.api.balance_inquiry(&key, body).map(Answer::Balance),
        };
        match reply(sent)? {
            Reply::Answer(answer) => Ok(answer::online(answer, &self.config.server)),
            Reply::Refused(e) => Ok(answer::refused(self.config.mode, &e)),
            Reply::Unreachable => self.offline(read, amount_minor, reference),
        }
    }

    /// A gate's decision offline: the last synced policy decides; a gate that never synced
    /// one goes by the deny list alone.
    fn gate_decision(&self, uid: &str, now: i64) -> Result<(), AccessRefusal> {
        let before = self.allowed.get(uid).map_or(&[][..], Vec::as_slice);
        match &self.access {
            Some(access) => access.decide(uid, now, &self.deny, before),
            None if self.deny.contains(uid) => Err(AccessRefusal::CardBlocked),
            None => Ok(()),
        }
    }

    fn offline(
        &mut self,
        read: &CardRead,
        amount_minor: Option<i64>,
        reference: Option<&str>,
    ) -> Result<Outcome, TerminalError> {
        let uid = read.uid.to_ascii_uppercase();
        let now = now_us();
        let refuse = |why: String| refused_offline(format!("REFUSED offline: {why}"));
        let mut reason = "";
        let (kind, amount, decision) = match self.config.mode {
            Mode::Pos => {
                let amount = amount_minor.ok_or_else(|| TerminalError::Input("a payment needs an amount".into()))?;
                let Some(limits) = self.limits else {
                    return Ok(refuse("this terminal has no offline limits".into()));
                };
                if let Err(r) = self.risk.check(&limits, &self.deny, &uid, now / 86_400_000_000, amount) {
                    return Ok(refuse(r.to_string()));
                }
                (RecordKind::Payment, amount, None)
            }
            Mode::Gate => {
                let decided = self.gate_decision(&uid, now);
                reason = decided.err().map_or("entitled", AccessRefusal::code);
                let decision = if decided.is_ok() { "allow" } else { "deny" };
                (RecordKind::Access, 0, Some(decision.to_owned()))
            }
            Mode::Kiosk | Mode::Agent | Mode::Validator => {
                return Ok(refuse("the server cannot be reached; try again later".into()))
            }
        };
        let signed = self.writer.append(NewRecord {
            time_us: now,
            kind,
            uid: uid.clone(),
            picc_data: read.picc_data.clone(),
            cmac: read.cmac.clone(),
            amount_minor: amount,
            currency: self.config.currency.clone(),
            reference: reference.map(str::to_owned),
            decision: decision.clone(),
            sync_id: self.sync_id,
        })?;
        append_journal(&self.journal_path, &signed)?;
        if kind == RecordKind::Payment {
            self.risk.record(&uid, now / 86_400_000_000, amount);
        }
        let allowed = decision.as_deref() == Some("allow");
        if allowed {
            self.allowed.entry(uid.clone()).or_default().push(now);
        }
        let seq = signed.record.seq;
        let detail = Answer::Offline(Box::new(signed.clone()));
        self.pending.push(signed);
        let line = match kind {
            RecordKind::Payment => {
                format!("APPROVED OFFLINE {} — offline record #{seq}", format_minor(amount, &self.config.currency))
            }
            RecordKind::Access => {
                format!("{} ({reason}, offline) — offline record #{seq}", decision.unwrap_or_default().to_uppercase())
            }
            RecordKind::Transit => format!("RIDE OFFLINE — offline record #{seq}"),
        };
        Ok(Outcome { ok: kind == RecordKind::Payment || allowed, online: false, line, detail })
    }
}

impl Terminal {
    /// A validator's tap: online unless the server was found unreachable in the last
    /// [`VALIDATOR_RETRY`]; offline, priced from the last transit sync with the server's
    /// own fare function, within the offline limits, and journaled.
    fn validate(&mut self, read: &CardRead) -> Result<Outcome, TerminalError> {
        let uid = read.uid.to_ascii_uppercase();
        let kind = self.journeys.direction(&uid, self.config.validator.direction, now_us());
        let gate = self.journeys.gate_stop();
        let stop = gate.or(self.config.validator.stop);
        let mut online = self.offline_until.is_none_or(|t| Instant::now() >= t);
        if online && !self.pending.is_empty() {
            // Back in coverage: the journal goes first, so the server prices in tap order.
            match self.sync() {
                Ok(reached) => online = reached.is_some(),
                Err(e @ TerminalError::Connection(_)) => return Err(e),
                Err(e) => tracing::error!(%e, "the validator's upload"),
            }
        }
        if online {
            let direction = if kind == TapKind::On { "on" } else { "off" };
            let tap = Tap { picc_data: read.picc_data.clone(), cmac: read.cmac.clone() };
            // A gate's stop is its own: the server knows it.
            let body =
                NewTransitTap { tap, direction: direction.into(), stop: if gate.is_some() { None } else { stop } };
            let key = self.key();
            match reply(self.api.transit_tap(&key, &body))? {
                Reply::Answer(view) => {
                    if let Some(route) = self.journeys.route() {
                        let time_us = validator::rfc3339_us(&view.time).unwrap_or_else(now_us);
                        self.journeys.saw(&uid, FareTap { time_us, route, stop: view.stop, kind });
                    }
                    return Ok(answer::online(Answer::Ride(view), &self.config.server));
                }
                Reply::Refused(e) => return Ok(answer::refused(Mode::Validator, &e)),
                Reply::Unreachable => {}
            }
        }
        self.offline_until = Some(Instant::now() + VALIDATOR_RETRY);
        self.ride_offline(read, kind, stop)
    }

    /// Decides a validator's tap offline and journals it.
    fn ride_offline(&mut self, read: &CardRead, kind: TapKind, stop: Option<i64>) -> Result<Outcome, TerminalError> {
        let uid = read.uid.to_ascii_uppercase();
        let now = now_us();
        let refuse = |why: String| refused_offline(format!("SHUT offline: {why}"));
        let Some(route) = self.journeys.route() else {
            return Ok(refuse("this validator never synced its route and fares".into()));
        };
        let Some(stop) = stop.filter(|s| (0..self.journeys.stops() as i64).contains(s)) else {
            return Ok(refuse(format!("stop {stop:?} is not on this validator's route")));
        };
        let Some(limits) = self.limits else {
            return Ok(refuse("this validator has no offline limits".into()));
        };
        let tap = FareTap { time_us: now, route, stop, kind };
        let priced = match self.journeys.price(&uid, tap) {
            Ok(p) => p,
            Err(e) => return Ok(refuse(e.to_string())),
        };
        // A boarding counts against the limits with what it holds or charges; a tap off
        // never costs more than its boarding held.
        let counted = if kind == TapKind::On { priced.charge_minor } else { 0 };
        if let Err(r) = self.risk.check(&limits, &self.deny, &uid, now / 86_400_000_000, counted) {
            return Ok(refuse(r.to_string()));
        }
        let direction = if kind == TapKind::On { "on" } else { "off" };
        let signed = self.writer.append(NewRecord {
            time_us: now,
            kind: RecordKind::Transit,
            uid: uid.clone(),
            picc_data: read.picc_data.clone(),
            cmac: read.cmac.clone(),
            amount_minor: priced.charge_minor,
            currency: self.config.currency.clone(),
            reference: None,
            decision: Some(format!("{direction}:{stop}")),
            sync_id: self.sync_id,
        })?;
        append_journal(&self.journal_path, &signed)?;
        self.risk.record(&uid, now / 86_400_000_000, counted);
        self.journeys.saw(&uid, tap);
        let seq = signed.record.seq;
        let line = format!(
            "OPEN {} stop {stop} OFFLINE: {} ({}) — offline record #{seq}",
            direction.to_uppercase(),
            format_minor(priced.charge_minor, &self.config.currency),
            priced.rules
        );
        self.pending.push(signed.clone());
        Ok(Outcome { ok: true, online: false, line, detail: Answer::Offline(Box::new(signed)) })
    }
}

/// A tap refused offline: nothing was written.
fn refused_offline(line: String) -> Outcome {
    Outcome { ok: false, online: false, line, detail: Answer::None }
}

/// Whether a journaled record counts against the terminal's offline limits: a payment, or
/// a transit boarding (its fare; a tap off never costs more than its boarding held).
fn counts_against_limits(record: &offline::Record) -> bool {
    match record.kind {
        RecordKind::Payment => true,
        RecordKind::Transit => offline::transit_tap(record.decision.as_deref()).is_some_and(|(on, _)| on),
        RecordKind::Access => false,
    }
}

fn read_journal(path: &Path) -> Result<Vec<SignedRecord>, TerminalError> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(storage)?;
        if line.trim().is_empty() {
            continue;
        }
        // A torn last line (power cut mid-write) was never acknowledged: stop there.
        match serde_json::from_str::<SignedRecord>(&line) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Appends a record and syncs it to disk before the customer is told "approved".
fn append_journal(path: &Path, record: &SignedRecord) -> Result<(), TerminalError> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(storage)?;
    let mut line = serde_json::to_string(record).map_err(storage)?;
    line.push('\n');
    f.write_all(line.as_bytes()).map_err(storage)?;
    f.sync_all().map_err(storage)
}

/// A vehicle's validator without a fixed `--stop` asks for the stop before each tap (a
/// gate's is its own); false at the end of stdin.
fn ask_stop(terminal: &mut Terminal, out: &mut dyn Write) -> Result<bool, TerminalError> {
    if terminal.journeys.gate_stop().is_some() {
        return Ok(true);
    }
    write!(out, "stop> ").map_err(storage)?;
    out.flush().map_err(storage)?;
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).map_err(storage)? == 0 {
        return Ok(false);
    }
    let stop =
        line.trim().parse().map_err(|_| TerminalError::Input(format!("{:?} is not a stop number", line.trim())))?;
    terminal.set_stop(stop);
    Ok(true)
}

/// The loop over a PC/SC reader: wait for a card, read it, handle it, show the result, wait
/// for the card to go. `amount` gives every POS/agent tap the same amount (scripted use);
/// otherwise the amount is read from stdin before each tap. `taps` stops after that many.
pub fn run(
    terminal: &mut Terminal,
    reader_name: Option<&str>,
    amount: Option<i64>,
    taps: Option<usize>,
    out: &mut dyn Write,
) -> Result<(), TerminalError> {
    let pcsc = reader::Terminal::establish()?;
    let mut done = 0;
    let ask_for_stop = terminal.config.mode == Mode::Validator && terminal.config.validator.stop.is_none();
    if let Err(e) = terminal.sync() {
        writeln!(out, "{e}").map_err(storage)?;
    }
    while taps.is_none_or(|n| done < n) {
        let amount = match (terminal.config.mode, amount) {
            (Mode::Pos | Mode::Agent, Some(a)) => Some(a),
            (Mode::Pos | Mode::Agent, None) => {
                write!(out, "amount> ").map_err(storage)?;
                out.flush().map_err(storage)?;
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line).map_err(storage)? == 0 {
                    return Ok(());
                }
                Some(parse_amount(&line, &terminal.config.currency)?)
            }
            _ => None,
        };
        if ask_for_stop && !ask_stop(terminal, out)? {
            return Ok(());
        }
        writeln!(out, "tap a card…").map_err(storage)?;
        let name = pcsc.wait_for_card(reader_name, Duration::from_secs(3600))?;
        let started = Instant::now();
        let read = {
            let mut card = pcsc.connect(&name)?;
            let uid = card.read_uid()?;
            let sun = card.read_sun()?;
            CardRead { uid: hex::encode_upper(uid.as_bytes()), picc_data: sun.picc_data_hex(), cmac: sun.cmac_hex() }
        };
        match terminal.handle(&read, amount, None) {
            Ok(outcome) => writeln!(
                out,
                "{}  [{} ms{}]",
                outcome.line,
                started.elapsed().as_millis(),
                if outcome.online { "" } else { ", offline" }
            )
            .map_err(storage)?,
            // The operator must fix the configuration; the next card is refused too.
            Err(e @ TerminalError::Connection(_)) => writeln!(out, "{e}").map_err(storage)?,
            Err(e) => return Err(e),
        }
        done += 1;
        let _ = pcsc.wait_for_removal(&name, Duration::from_secs(60));
    }
    Ok(())
}
