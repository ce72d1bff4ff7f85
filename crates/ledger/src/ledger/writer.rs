//! The writer: callers put requests on a bounded queue; one thread takes everything
//! waiting (up to [`BATCH_REQUESTS_MAX`]), applies it to the state machine and writes it in
//! one database transaction, then answers every caller.
//!
//! A failed batch is answered with its error and the next one tries again on a fresh
//! connection, except a broken invariant ([`LedgerError::Invariant`]): then the writer
//! stops taking batches ([`Ledger::writer_halted`] says why, `/readyz` reports it) and
//! every write fails fast with that error until an operator has looked and restarted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use super::load::load;
use super::{Clock, Ledger, LedgerConfig, ACCOUNT_CACHE_MAX, BATCH_REQUESTS_MAX, QUEUE_JOBS_MAX};
use crate::domain::{
    AccountId, AuditRef, Entry, EntryKind, Event, EventRecord, Op, Outcome, Posted, Recorded, Rejection, Request,
};
use crate::machine::{AccountState, Machine, TapRules};
use crate::money::Currency;
use crate::store::webhooks::OutboxRow;
use crate::store::{Backend, Db, Head, LeafRow};
use crate::LedgerError;

type Results = Vec<Result<Outcome, LedgerError>>;
type Reply = oneshot::Sender<Results>;

/// What the writer thread is given: requests from one caller and where to send their
/// results, or a chore.
pub(super) enum Job {
    Ops { ops: Vec<Op>, reply: Reply },
    Chore(Chore),
}

type ChoreFn = Box<dyn FnOnce(&mut Db) -> Result<(), LedgerError> + Send>;

/// Database work the writer runs on its own connection between two batches, in a
/// transaction of its own, for a caller that waits for it: a write that would otherwise
/// come from another connection. On SQLite such a write takes the database's one write
/// lock, and a writer that meets it held sleeps in SQLite's busy handler (1 ms, then 2, 5,
/// 10...): the checkpoint signer's row, once a second, put 10-60 ms stalls in the HTTP
/// benchmark's p99 at a quarter of its load.
pub(super) struct Chore {
    run: ChoreFn,
    reply: std::sync::mpsc::SyncSender<Result<(), LedgerError>>,
}

/// Why the writer stopped on a broken invariant (none while it runs), shared by the
/// writer thread and every handle.
#[derive(Clone, Default)]
pub(super) struct Halt(Arc<OnceLock<String>>);

impl Halt {
    /// The reason, once set; a lock-free read, since every write asks.
    fn reason(&self) -> Option<String> {
        self.0.get().cloned()
    }

    /// Sets the reason (the first one stays).
    fn set(&self, reason: String) {
        let _ = self.0.set(reason);
    }
}

/// A running writer thread: its queue, its handle and its counters.
pub(super) struct Started {
    pub jobs: Sender<Job>,
    pub handle: JoinHandle<()>,
    pub stats: Arc<WriterStats>,
}

/// Starts the writer thread on `db`.
pub(super) fn start(
    db: Db,
    url: &str,
    config: &LedgerConfig,
    halt: Halt,
    wal_log: Arc<AtomicU64>,
) -> Result<Started, LedgerError> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_JOBS_MAX);
    let wal = (db.backend() == Backend::Sqlite).then_some((wal_log, config.wal_checkpoint_bytes));
    let stats = Arc::new(WriterStats::default());
    let writer = Writer {
        stats: stats.clone(),
        db,
        url: url.to_owned(),
        clock: config.clock.clone(),
        audit_log: config.audit_log,
        rules: config.tap_rules,
        cache: HashMap::new(),
        cache_seq: None,
        holds: HashMap::new(),
        edge: HashMap::new(),
        halt,
        wal,
    };
    let handle = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| LedgerError::Unavailable(format!("cannot start the writer: {e}")))?;
    Ok(Started { jobs: tx, handle, stats })
}

impl Ledger {
    /// Why the writer stopped, when it met a broken invariant (a bug or tampering, not
    /// something a retry fixes): it takes no more batches and every write fails with
    /// [`LedgerError::Invariant`] until the process is restarted.
    pub fn writer_halted(&self) -> Option<String> {
        self.inner.halt.reason()
    }

    /// The error of a write the writer did not answer: its invariant, or it stopped.
    fn closed(&self) -> LedgerError {
        self.writer_halted().map_or(LedgerError::Stopped, LedgerError::Invariant)
    }

    fn enqueue(&self, ops: Vec<Op>) -> Result<oneshot::Receiver<Results>, LedgerError> {
        if let Some(reason) = self.writer_halted() {
            return Err(LedgerError::Invariant(reason));
        }
        let (reply, rx) = oneshot::channel();
        self.send_job(Job::Ops { ops, reply })?;
        Ok(rx)
    }

    fn send_job(&self, job: Job) -> Result<(), LedgerError> {
        let guard = self.inner.jobs.lock().map_err(|_| LedgerError::Stopped)?;
        let sender = guard.as_ref().ok_or(LedgerError::Stopped)?;
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(LedgerError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(self.closed()),
        }
    }

    /// Runs `run` on the writer's connection between two batches, in a transaction of its
    /// own (see [`Chore`]), and waits for it. `None` when the writer cannot take it (it
    /// stopped, it halted, or its queue is full): the caller then writes on a connection
    /// of its own, as it would without a writer.
    pub(super) fn on_writer(
        &self,
        run: impl FnOnce(&mut Db) -> Result<(), LedgerError> + Send + 'static,
    ) -> Option<Result<(), LedgerError>> {
        if self.writer_halted().is_some() {
            return None;
        }
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.send_job(Job::Chore(Chore { run: Box::new(run), reply })).ok()?;
        // No answer: the writer stopped before running it (a halt answers with nothing).
        rx.recv().ok()
    }

    /// Queues `ops` and waits for their results (blocking).
    pub(super) fn write_blocking(&self, ops: Vec<Op>) -> Result<Results, LedgerError> {
        let rx = self.enqueue(ops)?;
        rx.blocking_recv().map_err(|_| self.closed())
    }

    /// Queues `ops` and waits for their results.
    async fn write(&self, ops: Vec<Op>) -> Result<Results, LedgerError> {
        let rx = self.enqueue(ops)?;
        rx.await.map_err(|_| self.closed())
    }

    /// Writes one request and waits for its result (blocking; use [`Ledger::submit`] from
    /// async code).
    pub fn submit_blocking(&self, request: Request) -> Result<Posted, LedgerError> {
        posted(first(self.write_blocking(vec![Op::Entry(request)])?))
    }

    /// Writes one request and waits for its result.
    pub async fn submit(&self, request: Request) -> Result<Posted, LedgerError> {
        posted(first(self.write(vec![Op::Entry(request)]).await?))
    }

    /// Records one event in the audit log (and accepts its tap) and waits for the result.
    pub async fn record(&self, event: Event) -> Result<Recorded, LedgerError> {
        recorded(first(self.write(vec![Op::Event(event)]).await?))
    }

    /// [`Ledger::record`], blocking.
    pub fn record_blocking(&self, event: Event) -> Result<Recorded, LedgerError> {
        recorded(first(self.write_blocking(vec![Op::Event(event)])?))
    }

    /// Writes entries and events in order, in one transaction; each gets its own result and
    /// a rejected one does not stop the others.
    pub async fn submit_ops(&self, ops: Vec<Op>) -> Result<Results, LedgerError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        self.write(ops).await
    }

    /// Writes many requests in order (bulk import, settlement runs); each gets its own result,
    /// and a rejected one does not stop the others.
    pub fn submit_many_blocking(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Posted, LedgerError>>, LedgerError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let results = self.write_blocking(requests.into_iter().map(Op::Entry).collect())?;
        Ok(results.into_iter().map(posted).collect())
    }
}

fn first(mut results: Results) -> Result<Outcome, LedgerError> {
    results.pop().unwrap_or(Err(LedgerError::Invariant("the writer answered a request with nothing".into())))
}

fn posted(outcome: Result<Outcome, LedgerError>) -> Result<Posted, LedgerError> {
    match outcome? {
        Outcome::Posted(p) => Ok(p),
        Outcome::Recorded(_) => Err(LedgerError::Invariant("the writer answered an entry with an event".into())),
    }
}

fn recorded(outcome: Result<Outcome, LedgerError>) -> Result<Recorded, LedgerError> {
    match outcome? {
        Outcome::Recorded(r) => Ok(r),
        Outcome::Posted(_) => Err(LedgerError::Invariant("the writer answered an event with an entry".into())),
    }
}

/// Counters of the writer thread, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Database transactions (batches) committed or failed.
    pub batches: std::sync::atomic::AtomicU64,
    /// Requests applied (accepted or rejected).
    pub requests: std::sync::atomic::AtomicU64,
    /// Time spent inside batch transactions, µs.
    pub busy_us: std::sync::atomic::AtomicU64,
    /// Batches that failed as a whole (a database error or a broken invariant): nothing of
    /// them was written and every request in them was answered with the error.
    pub failed_batches: std::sync::atomic::AtomicU64,
    /// Taps refused as replays (a counter not above the card's last: a skimmed or cloned
    /// card, or a terminal sending a tap twice) in committed batches.
    pub card_replays: std::sync::atomic::AtomicU64,
    /// SQLite: WAL checkpoints the writer ran itself (past its bound).
    pub wal_checkpoints: std::sync::atomic::AtomicU64,
    /// SQLite: time the writer spent in its own WAL checkpoints, µs (no batch runs then).
    pub wal_checkpoint_us: std::sync::atomic::AtomicU64,
    /// SQLite: passes of the background thread that copies the WAL off the write path.
    pub wal_passes: std::sync::atomic::AtomicU64,
    /// Chores run between batches (the checkpoint signer's rows), failed or not.
    pub chores: std::sync::atomic::AtomicU64,
    /// When the batch (or chore) in progress began, µs on [`WriterStats::clock_us`]'s
    /// clock; 0 while the writer waits for work. A chore that waits for a lock holds up the
    /// batches queued behind it as a batch would, so `/readyz` counts it too.
    pub batch_started_us: std::sync::atomic::AtomicU64,
}

impl WriterStats {
    /// A monotonic clock in µs since the first call (never 0), for [`Self::batch_started_us`].
    pub fn clock_us() -> u64 {
        static BASE: OnceLock<std::time::Instant> = OnceLock::new();
        BASE.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64 + 1
    }

    /// How long the batch (or chore) in progress has taken so far; `None` while the writer
    /// is idle.
    pub fn batch_running_for(&self) -> Option<std::time::Duration> {
        let started = self.batch_started_us.load(Ordering::Relaxed);
        (started != 0).then(|| std::time::Duration::from_micros(Self::clock_us().saturating_sub(started)))
    }
}

/// The writer thread's state.
struct Writer {
    stats: Arc<WriterStats>,
    db: Db,
    /// Where `db` came from: a failed batch reconnects (see [`Writer::reconnect`]).
    url: String,
    clock: Clock,
    audit_log: bool,
    rules: TapRules,
    /// The Merkle tree's right edge (the perfect subtrees of the current size), valid with
    /// the account cache.
    edge: HashMap<merkle::NodeCoord, merkle::Hash>,
    /// Accounts and balances as of `cache_seq`; valid only while nobody else writes.
    cache: HashMap<AccountId, AccountState>,
    cache_seq: Option<i64>,
    /// Holds accounts by currency (system accounts never change).
    holds: HashMap<Currency, AccountId>,
    /// Set when a batch met a broken invariant: the writer stops.
    halt: Halt,
    /// SQLite: the log's size in the WAL as the background checkpoint last saw it, and the
    /// size above which the writer finishes the checkpoint.
    wal: Option<(Arc<AtomicU64>, u64)>,
}

/// What one batch made, taken from the state machine to be written.
struct Made {
    entries: Vec<Entry>,
    events: Vec<EventRecord>,
    receipts: HashMap<i64, AuditRef>,
    event_receipts: HashMap<i64, AuditRef>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let (mut count, mut jobs, mut chores) = (0, Vec::new(), Vec::new());
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Ops { ops, reply } => {
                        count += ops.len();
                        jobs.push((ops, reply));
                    }
                    Job::Chore(chore) => chores.push(chore),
                }
                if count < BATCH_REQUESTS_MAX {
                    next = rx.try_recv().ok();
                }
            }
            if !jobs.is_empty() {
                if let Err(reason) = self.process(jobs) {
                    self.stop(&reason, &rx);
                    return;
                }
            }
            for chore in chores {
                self.chore(chore);
            }
            self.bound_wal();
        }
    }

    /// Runs a chore in a transaction of its own and answers it; a failed one may have left
    /// the connection broken, as a failed batch may.
    fn chore(&mut self, chore: Chore) {
        self.stats.batch_started_us.store(WriterStats::clock_us(), Ordering::Relaxed);
        let result = self.db.transaction(chore.run);
        self.stats.batch_started_us.store(0, Ordering::Relaxed);
        if result.is_err() {
            self.cache.clear();
            self.cache_seq = None;
            self.reconnect();
        }
        self.stats.chores.fetch_add(1, Ordering::Relaxed);
        let _ = chore.reply.send(result);
    }

    /// SQLite: keeps the WAL bounded. The background thread copies the WAL into the
    /// database file off the write path, but under continuous load it chases a log that
    /// never stops growing: SQLite starts the WAL over only when a write begins with every
    /// frame already copied, and the writer always has written more meanwhile (the last
    /// `make bench` left a 600 MiB WAL). So once the log passes the bound, the writer
    /// copies the rest itself between two batches, when nothing else writes: usually only
    /// what was written since the thread's last pass. The next batch then starts the WAL
    /// over from its beginning.
    ///
    /// The log's size comes from the background thread's last pass (at most 100 ms old),
    /// not from the file's: the file keeps its size when the log in it starts over, and a
    /// writer reading the file checkpointed after every batch (1.3 ms each, 15 % of its
    /// time in the profile); cutting the file back at each restart instead
    /// (`journal_size_limit = 0`) put 24 ms stalls in the HTTP p99 even at a quarter load.
    fn bound_wal(&mut self) {
        let Some((log, bound)) = &self.wal else { return };
        if log.load(Ordering::Relaxed) <= *bound {
            return;
        }
        self.stats.wal_checkpoints.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        match self.db.wal_checkpoint(crate::store::WalCheckpoint::Restart) {
            Ok(bytes) => log.store(bytes, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; trying again after the next batch"),
        }
        self.stats.wal_checkpoint_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Stops the writer after a broken invariant (already in `halt`, so later writes fail
    /// fast with it): the jobs already queued are answered with it.
    fn stop(&self, reason: &str, rx: &Receiver<Job>) {
        while let Ok(job) = rx.try_recv() {
            // A chore's caller, answered with nothing, writes on its own connection.
            if let Job::Ops { ops, reply } = job {
                let _ = reply.send(vec![Err(LedgerError::Invariant(reason.to_owned())); ops.len()]);
            }
        }
    }
    /// Replaces the connection after a failed batch. It may be dead (the database was
    /// restarted) or unusable (diesel marks its transaction manager broken when a COMMIT or
    /// ROLLBACK fails, e.g. on a full disk), and would fail every later batch. When the
    /// database cannot be reached, the old one stays and the next failed batch tries again.
    fn reconnect(&mut self) {
        match Db::open(&self.url).and_then(|mut db| db.ready_writer().map(|()| db)) {
            Ok(db) => self.db = db,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reconnect to the database; trying again after the next failure")
            }
        }
    }

    /// Applies and answers one batch; `Err` with the reason when it met a broken invariant.
    fn process(&mut self, jobs: Vec<(Vec<Op>, Reply)>) -> Result<(), String> {
        let started = std::time::Instant::now();
        self.stats.batch_started_us.store(WriterStats::clock_us(), Ordering::Relaxed);
        let mut requests = Vec::with_capacity(jobs.iter().map(|j| j.0.len()).sum());
        let mut replies = Vec::with_capacity(jobs.len());
        for (ops, reply) in jobs {
            replies.push((reply, ops.len()));
            requests.extend(ops);
        }
        let mut halt = None;
        use std::sync::atomic::Ordering::Relaxed;
        let mut results = match self.apply(&requests) {
            Ok(results) => {
                let replays = results.iter().filter(|r| matches!(r, Err(Rejection::CardReplay))).count();
                self.stats.card_replays.fetch_add(replays as u64, Relaxed);
                results.into_iter().map(|r| r.map_err(LedgerError::Rejected)).collect::<Vec<_>>()
            }
            Err(LedgerError::Invariant(reason)) => {
                tracing::error!(
                    error = %reason,
                    requests = requests.len(),
                    "broken invariant in a ledger batch; nothing of it was written; the writer stops until an \
                     operator has looked"
                );
                // Before the answers go out: whoever gets one sees the writer stopped.
                self.halt.set(reason.clone());
                halt = Some(reason.clone());
                self.stats.failed_batches.fetch_add(1, Relaxed);
                vec![Err(LedgerError::Invariant(reason)); requests.len()]
            }
            Err(e) => {
                tracing::error!(error = %e, requests = requests.len(), "ledger batch failed; nothing of it was written");
                self.cache.clear();
                self.cache_seq = None;
                self.reconnect();
                self.stats.failed_batches.fetch_add(1, Relaxed);
                vec![Err(e); requests.len()]
            }
        };
        self.stats.batches.fetch_add(1, Relaxed);
        self.stats.requests.fetch_add(requests.len() as u64, Relaxed);
        self.stats.busy_us.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        self.stats.batch_started_us.store(0, Relaxed);
        // Hand each caller its slice of the results, in order.
        let mut rest = results.drain(..);
        for (reply, n) in replies {
            let mine: Vec<_> = rest.by_ref().take(n).collect();
            let _ = reply.send(mine);
        }
        halt.map_or(Ok(()), Err)
    }

    fn apply(&mut self, requests: &[Op]) -> Result<Vec<Result<Outcome, Rejection>>, LedgerError> {
        let now = (self.clock)();
        let (audit_log, rules) = (self.audit_log, self.rules);
        let Writer { db, cache, cache_seq, holds, edge, .. } = self;
        let (results, state, new_seq, made) = db.write_transaction(|db, head| {
            if *cache_seq != Some(head.last_seq) {
                // Another process wrote since our last batch: our balances may be stale.
                cache.clear();
                edge.clear();
            }
            let mut state = load(db, cache, holds, requests, now)?;
            let time_us = now.max(head.last_time_us);
            let mut machine = Machine::new(&mut state, head.last_seq + 1, time_us, rules);
            let results: Vec<_> = requests.iter().map(|r| machine.apply_op(r)).collect();
            let (new_seq, made) = write_batch(db, edge, head, time_us, audit_log, &mut machine)?;
            Ok((results, state, new_seq, made))
        })?;
        if cache.len() > ACCOUNT_CACHE_MAX {
            cache.clear();
        }
        cache.extend(state.accounts);
        *cache_seq = Some(new_seq);
        Ok(with_receipts(results, &made))
    }
}

/// Writes what the state machine made of a batch: leaves and nodes, entries, events, the
/// integrity rows, card counters and replays, and the new head. Returns the new last
/// sequence number and the receipts.
fn write_batch(
    db: &mut Db,
    edge: &mut HashMap<merkle::NodeCoord, merkle::Hash>,
    head: Head,
    time_us: i64,
    audit_log: bool,
    machine: &mut Machine<'_>,
) -> Result<(i64, Made), LedgerError> {
    let mut made = Made {
        entries: std::mem::take(&mut machine.written),
        events: std::mem::take(&mut machine.events),
        receipts: HashMap::new(),
        event_receipts: HashMap::new(),
    };
    // Replay events of a batch without other events were numbered from 0, the next
    // event id not being loaded: number them now (replays are rare).
    if made.events.first().is_some_and(|e| e.id < 1) {
        let next = db.last_event_id()? + 1;
        for (i, e) in made.events.iter_mut().enumerate() {
            e.id = next + i as i64;
        }
    }
    let order = std::mem::take(&mut machine.leaf_order);
    let new_seq = head.last_seq + made.entries.len() as i64;
    if !order.is_empty() {
        let mut tree_size = head.tree_size;
        if audit_log {
            tree_size = append_leaves(db, edge, head.tree_size, &order, &mut made.entries, &mut made.events)?;
            made.receipts = made.entries.iter().filter_map(|e| e.audit.map(|a| (e.seq, a))).collect();
            made.event_receipts = made.events.iter().filter_map(|e| e.audit.map(|a| (e.id, a))).collect();
        }
        db.insert_entries(&made.entries)?;
        db.insert_events(&made.events)?;
        db.insert_integrity(&machine.debt_rows, &machine.successor_rows, &machine.offline_rows)?;
        db.insert_transit(&machine.transit_rows, &machine.transit_entries)?;
        db.set_card_counters(&machine.counters, time_us)?;
        db.advance_head(head, Head { last_seq: new_seq, last_time_us: time_us, tree_size })?;
    }
    db.insert_card_replays(&machine.replays)?;
    // Webhooks, in the same transaction as what they tell of.
    db.insert_outbox(&outbox_rows(&made.entries, &machine.replays, time_us))?;
    Ok((new_seq, made))
}

/// What subscribers hear of in a batch: settlements paid, holds that expired (voided by
/// the expiry sweep), and taps refused as replays.
fn outbox_rows(entries: &[Entry], replays: &[crate::domain::CardReplay], time_us: i64) -> Vec<OutboxRow> {
    let when = |us: i64| {
        humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64))
            .to_string()
    };
    let money = |e: &Entry| serde_json::json!({"amount": e.currency.format_minor(e.amount_minor), "currency": e.currency.code()});
    let mut rows = Vec::new();
    for e in entries {
        let (kind, account, data) = match e.kind {
            EntryKind::Settlement => ("settlement.paid", e.account_id, serde_json::json!({"amount": money(e)})),
            EntryKind::Void if e.references.memo.as_deref() == Some("expired") => (
                "hold.expired",
                e.counterparty_id,
                serde_json::json!({"hold_seq": e.related_seq, "card_id": e.references.card_id, "amount": money(e)}),
            ),
            _ => continue,
        };
        let mut payload = data;
        payload["entry_seq"] = e.seq.into();
        payload["merchant_account_id"] = account.map(|a| a.0.to_string()).into();
        payload["time"] = when(e.time_us).into();
        rows.push(OutboxRow {
            kind,
            account_id: account.map(|a| a.0),
            entry_seq: Some(e.seq),
            payload: payload.to_string(),
            created_at_us: time_us,
        });
    }
    for r in replays {
        let payload = serde_json::json!({"card_id": r.card_id.to_string(), "counter": r.counter,
            "last_counter": r.last_counter, "source": r.source, "time": when(r.time_us)});
        rows.push(OutboxRow {
            kind: "card.replay_flagged",
            account_id: None,
            entry_seq: None,
            payload: payload.to_string(),
            created_at_us: time_us,
        });
    }
    rows
}

/// Receipts: every entry and event made by the batch (also in-batch replays) gets its leaf.
fn with_receipts(mut results: Vec<Result<Outcome, Rejection>>, made: &Made) -> Vec<Result<Outcome, Rejection>> {
    for outcome in results.iter_mut().flatten() {
        match outcome {
            Outcome::Posted(posted) => {
                if let Some(a) = made.receipts.get(&posted.entry.seq) {
                    posted.entry.audit = Some(*a);
                }
            }
            Outcome::Recorded(r) => {
                if let Some(a) = made.event_receipts.get(&r.event.id) {
                    r.event.audit = Some(*a);
                }
                for e in &mut r.entries {
                    e.audit = made.receipts.get(&e.seq).copied();
                }
            }
        }
    }
    results
}

/// Makes the leaves of `entries`, appends them to the Merkle tree and stores leaves and
/// nodes; sets each entry's [`AuditRef`]. Returns the new tree size.
fn append_leaves(
    db: &mut Db,
    edge: &mut HashMap<merkle::NodeCoord, merkle::Hash>,
    size: i64,
    order: &[bool],
    entries: &mut [Entry],
    events: &mut [EventRecord],
) -> Result<i64, LedgerError> {
    let mut rows = Vec::with_capacity(order.len());
    let mut hashes = Vec::with_capacity(order.len());
    let (mut entries, mut events) = (entries.iter_mut(), events.iter_mut());
    for (i, is_entry) in order.iter().enumerate() {
        let leaf_index = size + i as i64;
        let (leaf, kind, audit) = if *is_entry {
            let e = entries.next().ok_or_else(|| LedgerError::Invariant("leaf order: entry missing".into()))?;
            (crate::audit::entry_leaf(e), "entry".to_owned(), &mut e.audit)
        } else {
            let e = events.next().ok_or_else(|| LedgerError::Invariant("leaf order: event missing".into()))?;
            (crate::audit::event_leaf(e), e.kind.clone(), &mut e.audit)
        };
        let leaf_hash = merkle::leaf_hash(&leaf);
        *audit = Some(AuditRef { leaf_index, leaf_hash });
        hashes.push(leaf_hash);
        rows.push(LeafRow { leaf_index, kind, leaf, leaf_hash: leaf_hash.to_vec() });
    }
    let tree = super::proofs::tree_error;
    let needed = merkle::nodes_needed_for_append(size as u64, hashes.len() as u64).map_err(tree)?;
    let missing: Vec<_> = needed.iter().filter(|c| !edge.contains_key(c)).copied().collect();
    if !missing.is_empty() {
        edge.extend(db.nodes(&missing)?);
    }
    let nodes = merkle::append_batch_nodes(size as u64, &hashes, |c| edge.get(&c).copied()).map_err(tree)?;
    let new_size = size + hashes.len() as i64;
    // Keep only the new right edge.
    let mut next_edge = HashMap::new();
    for c in merkle::nodes_needed_for_root(new_size as u64) {
        if let Some(h) = nodes.iter().find(|n| n.coord == c).map(|n| n.hash).or_else(|| edge.get(&c).copied()) {
            next_edge.insert(c, h);
        }
    }
    *edge = next_edge;
    db.insert_leaves(&rows)?;
    db.insert_nodes(&nodes)?;
    Ok(new_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CheckpointRow;

    fn row(tree_size: i64) -> CheckpointRow {
        CheckpointRow { tree_size, root: vec![7; 32], time_us: 1, note: "a note".into() }
    }

    /// A chore runs on the writer's connection in a transaction of its own: a failed one
    /// writes nothing and leaves the writer taking batches; a stopped writer takes none,
    /// and the caller is told so (it then writes itself).
    #[test]
    fn chores_run_between_batches_in_their_own_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("chores.db").display());
        crate::migrate(&url).unwrap();
        let ledger = Ledger::open(&url, LedgerConfig::default()).unwrap();
        let failed = ledger.on_writer(|db| {
            db.insert_checkpoint(&row(1))?;
            Err(LedgerError::Unavailable("the chore fails after its write".into()))
        });
        assert!(matches!(failed, Some(Err(LedgerError::Unavailable(_)))), "{failed:?}");
        let stored = ledger.read(|db| db.latest_checkpoint()).unwrap();
        assert_eq!(stored, None, "a failed chore's write was kept");
        assert!(matches!(ledger.on_writer(|db| db.insert_checkpoint(&row(2))), Some(Ok(()))));
        let stored = ledger.read(|db| db.latest_checkpoint()).unwrap().map(|c| c.tree_size);
        assert_eq!(stored, Some(2));
        assert_eq!(ledger.writer_stats().chores.load(Ordering::Relaxed), 2);
        // The writer still writes after the failed chore.
        let event = Event {
            kind: "operator".into(),
            scope: None,
            card_id: None,
            card_read_counter: None,
            queue_key: None,
            idempotency_key: None,
            payload: "{}".into(),
            access: None,
            transit: None,
        };
        let recorded = ledger.record_blocking(event).unwrap();
        assert_eq!(recorded.event.audit.map(|a| a.leaf_index), Some(0));
        ledger.shutdown();
        assert!(ledger.on_writer(|_| Ok(())).is_none(), "a stopped writer took a chore");
    }
}
