//! The ledger service: one writer thread that group-commits batches of requests, and a
//! small pool of read connections.
//!
//! Group commit, the way TigerBeetle batches: callers put requests on a bounded queue; the
//! writer takes everything waiting (up to [`BATCH_REQUESTS_MAX`]), applies the batch to the
//! state machine and writes it in ONE database transaction, then answers every caller.
//! While one batch commits, the next one gathers, so throughput grows with concurrency
//! instead of collapsing to one fsync per payment.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::domain::{
    Account, AccountId, AccountKind, AuditRef, CardReplay, Command, Entry, EntryKind, Event, EventRecord, NewAccount,
    Op, Outcome, Posted, Recorded, Request, WALLET_BALANCE_MAX_DEFAULT_MINOR,
};
use crate::machine::{AccountState, Machine, Needs, State, TapRules};
use crate::money::Currency;
use crate::store::{Backend, Db, Head};
use crate::LedgerError;

/// Most requests applied in one database transaction.
pub const BATCH_REQUESTS_MAX: usize = 8_192;
/// Most jobs waiting for the writer; beyond this, callers get [`LedgerError::Busy`] at once.
pub const QUEUE_JOBS_MAX: usize = 65_536;
/// How often SQLite's WAL is copied into the database file, off the write path.
pub const WAL_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
/// Most idle read connections kept open (more than the blocking pool usually needs at
/// once: a connection opened and dropped under load costs PostgreSQL a backend).
pub const READ_CONNECTIONS_MAX: usize = 64;
/// Most cached accounts in the writer before the cache is dropped and refilled.
pub const ACCOUNT_CACHE_MAX: usize = 4_000_000;
/// Most lines in one statement page and entries in one page.
pub const PAGE_MAX: i64 = 1_000;

/// Time source in microseconds since the Unix epoch. Tests use a settable clock.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
    })
}

/// Settings of a ledger.
#[derive(Clone)]
pub struct LedgerConfig {
    /// Maximum balance given to new card wallets.
    pub wallet_balance_max_minor: i64,
    /// Time source.
    pub clock: Clock,
    /// Write every entry as a leaf of the Merkle audit log. Always on in service; off only
    /// to measure what the log costs (`make bench`).
    pub audit_log: bool,
    /// Sign checkpoints of the audit log with this key (none: this process does not sign;
    /// another may).
    pub checkpoints: Option<CheckpointSettings>,
    /// How far a racing tap may fall below its card's last counter, and for how long.
    pub tap_rules: TapRules,
}

/// How this process signs checkpoints.
#[derive(Clone)]
pub struct CheckpointSettings {
    /// The Ed25519 signer (the key comes from the key file, never the database).
    pub signer: Arc<merkle::Signer>,
    /// The log's origin line, e.g. `makassar.example/kartu`.
    pub origin: String,
    /// How often to check for new leaves.
    pub interval: std::time::Duration,
    /// The file outside the database that keeps the last checkpoint signed (the data
    /// directory's [`crate::signer::TRUSTED_CHECKPOINT_FILE`]), written atomically after
    /// each signature and trusted on start. `None`: memory only (tests, benchmarks); on
    /// start the database's newest checkpoint is trusted then.
    pub trusted_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for CheckpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSettings")
            .field("origin", &self.origin)
            .field("interval", &self.interval)
            .field("trusted_file", &self.trusted_file)
            .finish()
    }
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig")
            .field("wallet_balance_max_minor", &self.wallet_balance_max_minor)
            .field("audit_log", &self.audit_log)
            .field("checkpoints", &self.checkpoints)
            .finish()
    }
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            wallet_balance_max_minor: WALLET_BALANCE_MAX_DEFAULT_MINOR,
            clock: system_clock(),
            audit_log: true,
            checkpoints: None,
            tap_rules: TapRules::default(),
        }
    }
}

type Reply = oneshot::Sender<Vec<Result<Outcome, LedgerError>>>;

struct Job {
    ops: Vec<Op>,
    reply: Reply,
}

/// A handle on the ledger; cheap to clone, shared by every request handler.
#[derive(Clone, Debug)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    stats: Arc<WriterStats>,
    jobs: Mutex<Option<Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Background threads (checkpoint signer, SQLite WAL checkpoints); dropping a
    /// sender stops its thread.
    background: Mutex<Vec<(Sender<()>, JoinHandle<()>)>>,
    url: String,
    backend: Backend,
    reads: Mutex<Vec<Db>>,
    config: LedgerConfig,
    /// What the checkpoint signer trusts, and whether it refuses.
    signer: Mutex<crate::signer::SignerState>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("backend", &self.backend).finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn stop(&self) {
        let threads = self.background.lock().map(|mut b| std::mem::take(&mut *b)).unwrap_or_default();
        for (stop, handle) in threads {
            drop(stop);
            // A background thread holds a strong handle while its task runs, so the last
            // handle may be dropped there: that thread ends by itself (it cannot join itself).
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        // Closing the queue lets the writer finish what is queued, then exit.
        drop(self.jobs.lock().map(|mut j| j.take()));
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }
}

/// Applies pending migrations to the database at `url`; returns how many ran.
pub fn migrate(url: &str) -> Result<usize, LedgerError> {
    Db::open(url)?.migrate()
}

impl Ledger {
    /// Opens the ledger at `url` (`sqlite://path` or `postgres://…`). The database must be
    /// migrated ([`migrate`]).
    pub fn open(url: &str, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let mut db = Db::open(url)?;
        if !db.is_migrated()? {
            return Err(LedgerError::Migration("the database is not migrated: run `kartu migrate`".into()));
        }
        db.disable_wal_autocheckpoint()?;
        let backend = db.backend();
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_JOBS_MAX);
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
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LedgerError::Storage(format!("cannot start the writer: {e}")))?;
        let ledger = Ledger {
            inner: Arc::new(Inner {
                jobs: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                background: Mutex::new(Vec::new()),
                stats,
                url: url.to_owned(),
                backend,
                reads: Mutex::new(Vec::new()),
                config,
                signer: Mutex::new(Default::default()),
            }),
        };
        if let Some(settings) = ledger.inner.config.checkpoints.clone() {
            let interval = settings.interval;
            ledger.every(interval, "ledger-checkpointer", move |ledger| {
                // A refusal is logged once, when it happens; then the signer only waits.
                if ledger.checkpoint_refusal().is_some() {
                    return;
                }
                if let Err(e) = ledger.checkpoint_now() {
                    tracing::warn!(error = %e, "checkpoint failed; trying again");
                }
            })?;
        }
        if backend == Backend::Sqlite {
            let mut wal = Db::open(url)?;
            let wal_path = format!("{}-wal", url.trim_start_matches("sqlite://"));
            ledger.every(WAL_CHECKPOINT_INTERVAL, "ledger-wal", move |_| {
                let size = std::fs::metadata(&wal_path).map_or(0, |m| m.len());
                if let Err(e) = wal.wal_checkpoint(size) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; trying again");
                }
            })?;
        }
        Ok(ledger)
    }

    /// Runs `task` every `interval` on a thread of its own until the ledger stops. The
    /// thread holds a weak reference, so dropping the last handle still stops everything.
    fn every(
        &self,
        interval: std::time::Duration,
        name: &str,
        mut task: impl FnMut(&Ledger) + Send + 'static,
    ) -> Result<(), LedgerError> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let weak = Arc::downgrade(&self.inner);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                    let Some(inner) = weak.upgrade() else { break };
                    task(&Ledger { inner });
                }
            })
            .map_err(|e| LedgerError::Storage(format!("cannot start {name}: {e}")))?;
        if let Ok(mut b) = self.inner.background.lock() {
            b.push((stop_tx, handle));
        }
        Ok(())
    }

    /// The writer's counters.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Which database this ledger runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The configuration.
    pub fn config(&self) -> &LedgerConfig {
        &self.inner.config
    }

    /// Finishes the queued requests and stops the writer; later writes get
    /// [`LedgerError::Unavailable`].
    pub fn shutdown(&self) {
        self.inner.stop();
    }

    fn enqueue(&self, ops: Vec<Op>) -> Result<oneshot::Receiver<Vec<Result<Outcome, LedgerError>>>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let guard = self.inner.jobs.lock().map_err(|_| LedgerError::Unavailable)?;
        let sender = guard.as_ref().ok_or(LedgerError::Unavailable)?;
        match sender.try_send(Job { ops, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(LedgerError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(LedgerError::Unavailable),
        }
    }

    /// Writes one request and waits for its result (blocking; use [`Ledger::submit`] from
    /// async code).
    pub fn submit_blocking(&self, request: Request) -> Result<Posted, LedgerError> {
        let rx = self.enqueue(vec![Op::Entry(request)])?;
        posted(first(rx.blocking_recv().map_err(|_| LedgerError::Unavailable)?))
    }

    /// Writes one request and waits for its result.
    pub async fn submit(&self, request: Request) -> Result<Posted, LedgerError> {
        let rx = self.enqueue(vec![Op::Entry(request)])?;
        posted(first(rx.await.map_err(|_| LedgerError::Unavailable)?))
    }

    /// Records one event in the audit log (and accepts its tap) and waits for the result.
    pub async fn record(&self, event: Event) -> Result<Recorded, LedgerError> {
        let rx = self.enqueue(vec![Op::Event(event)])?;
        recorded(first(rx.await.map_err(|_| LedgerError::Unavailable)?))
    }

    /// [`Ledger::record`], blocking.
    pub fn record_blocking(&self, event: Event) -> Result<Recorded, LedgerError> {
        let rx = self.enqueue(vec![Op::Event(event)])?;
        recorded(first(rx.blocking_recv().map_err(|_| LedgerError::Unavailable)?))
    }

    /// Writes entries and events in order, in one transaction; each gets its own result and
    /// a rejected one does not stop the others.
    pub async fn submit_ops(&self, ops: Vec<Op>) -> Result<Vec<Result<Outcome, LedgerError>>, LedgerError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let rx = self.enqueue(ops)?;
        rx.await.map_err(|_| LedgerError::Unavailable)
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
        let rx = self.enqueue(requests.into_iter().map(Op::Entry).collect())?;
        let results = rx.blocking_recv().map_err(|_| LedgerError::Unavailable)?;
        Ok(results.into_iter().map(posted).collect())
    }

    /// Creates an account. Card wallets get the configured maximum balance unless one is given.
    pub fn create_account(&self, new: NewAccount) -> Result<Account, LedgerError> {
        let new = self.account_defaults(new)?;
        let now = (self.inner.config.clock)();
        self.read(|db| db.create_account(&new, now))
    }

    /// Creates many accounts in one transaction: all or none (bulk card issuance).
    pub fn create_accounts(&self, new: Vec<NewAccount>) -> Result<Vec<Account>, LedgerError> {
        let new = new.into_iter().map(|n| self.account_defaults(n)).collect::<Result<Vec<_>, _>>()?;
        let now = (self.inner.config.clock)();
        self.read(|db| db.create_accounts(&new, now))
    }

    fn account_defaults(&self, mut new: NewAccount) -> Result<NewAccount, LedgerError> {
        if new.kind.is_system() {
            return Err(LedgerError::Rejected(crate::domain::Rejection::InvalidKind));
        }
        if new.kind == AccountKind::CardWallet && new.balance_max_minor.is_none() {
            new.balance_max_minor = Some(self.inner.config.wallet_balance_max_minor);
        }
        Ok(new)
    }

    /// The system account of `kind` (city bank, fee revenue, suspense, holds, offline risk)
    /// in `currency`, created on first use.
    pub fn system_account(&self, kind: AccountKind, currency: Currency) -> Result<Account, LedgerError> {
        if !kind.is_system() {
            return Err(LedgerError::Rejected(crate::domain::Rejection::InvalidKind));
        }
        let now = (self.inner.config.clock)();
        self.read(|db| db.system_account(kind, currency, now))
    }

    /// Runs `f` on a pooled connection.
    fn read<T>(&self, f: impl FnOnce(&mut Db) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        let pooled = self.inner.reads.lock().map_err(|_| LedgerError::Unavailable)?.pop();
        let mut db = match pooled {
            Some(db) => db,
            None => Db::open(&self.inner.url)?,
        };
        let result = f(&mut db);
        // A connection that failed may be broken: only healthy ones go back.
        if result.is_ok() {
            if let Ok(mut pool) = self.inner.reads.lock() {
                if pool.len() < READ_CONNECTIONS_MAX {
                    pool.push(db);
                }
            }
        }
        result
    }

    /// An account, if it exists.
    pub fn account(&self, id: AccountId) -> Result<Option<Account>, LedgerError> {
        self.read(|db| Ok(db.accounts(&[id])?.pop()))
    }

    /// The balance now (as of the last committed entry).
    pub fn balance(&self, id: AccountId) -> Result<i64, LedgerError> {
        self.read(|db| Ok(db.balances(&[id])?.get(&id).copied().unwrap_or(0)))
    }

    /// The balance as it was at `time_us` (after every entry recorded at or before it).
    pub fn balance_at(&self, id: AccountId, time_us: i64) -> Result<i64, LedgerError> {
        self.read(|db| db.balance_at(id, time_us))
    }

    /// Postings of an account recorded in `[from_us, to_us)`, with the balances before and
    /// after the period. Pages of at most `limit` (≤ [`PAGE_MAX`]) lines, continuing after
    /// `after_seq`.
    pub fn statement(
        &self,
        id: AccountId,
        from_us: i64,
        to_us: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<Statement, LedgerError> {
        let limit = limit.clamp(1, PAGE_MAX);
        self.read(|db| {
            let opening_minor = db.balance_at(id, from_us.saturating_sub(1))?;
            let closing_minor = db.balance_at(id, to_us.saturating_sub(1))?;
            let lines = db.statement_lines(id, from_us, to_us, after_seq, limit)?;
            Ok(Statement { account_id: id, from_us, to_us, opening_minor, closing_minor, lines })
        })
    }

    /// Entries that post to an account, oldest first after `after_seq`, or newest first
    /// before `after_seq` (0: from the newest).
    pub fn account_entries(
        &self,
        id: AccountId,
        after_seq: i64,
        limit: i64,
        newest_first: bool,
    ) -> Result<Vec<Entry>, LedgerError> {
        self.read(|db| db.account_entries(id, after_seq, limit.clamp(1, PAGE_MAX), newest_first))
    }

    /// The last entry recorded at or before `time_us` (0 when none).
    pub fn seq_at(&self, time_us: i64) -> Result<i64, LedgerError> {
        self.read(|db| db.seq_at(time_us))
    }

    /// Per currency: the sum of every account's balance (zero when the books balance), and
    /// the totals of all debits and credits ever posted.
    pub fn trial_balance(&self) -> Result<Vec<TrialBalanceLine>, LedgerError> {
        self.read(|db| db.trial_balance())
    }

    /// One entry with its postings.
    pub fn entry(&self, seq: i64) -> Result<Option<Entry>, LedgerError> {
        self.read(|db| Ok(db.entries_by_seq(&[seq])?.pop()))
    }

    /// Entries from `from_seq` on, at most `limit` (≤ [`PAGE_MAX`]).
    pub fn entries(&self, from_seq: i64, limit: i64) -> Result<Vec<Entry>, LedgerError> {
        self.read(|db| db.entries_from(from_seq, limit.clamp(1, PAGE_MAX)))
    }

    /// The number of entries written (= the last sequence number).
    pub fn last_seq(&self) -> Result<i64, LedgerError> {
        self.read(|db| db.last_seq())
    }

    /// The entry written with this idempotency key, if any.
    pub fn entry_by_key(&self, key: &str) -> Result<Option<Entry>, LedgerError> {
        self.read(|db| Ok(db.entries_by_key(&[key])?.pop()))
    }

    /// Leaves in the audit log (committed).
    pub fn tree_size(&self) -> Result<i64, LedgerError> {
        self.read(|db| db.tree_size())
    }

    /// Leaves from `from` on, at most `limit` (≤ [`PAGE_MAX`]).
    pub fn leaves(&self, from: i64, limit: i64) -> Result<Vec<crate::store::LeafRow>, LedgerError> {
        self.read(|db| db.leaves(from.max(0), limit.clamp(1, PAGE_MAX)))
    }

    fn check_size(db: &mut Db, size: i64) -> Result<(), LedgerError> {
        let current = db.tree_size()?;
        if size < 0 || size > current {
            return Err(LedgerError::OutOfRange(format!("tree size {size} is not in 0..={current}")));
        }
        Ok(())
    }

    /// The Merkle root of the first `size` leaves.
    pub fn root(&self, size: i64) -> Result<merkle::Hash, LedgerError> {
        self.read(|db| {
            Self::check_size(db, size)?;
            let nodes = db.nodes(&merkle::nodes_needed_for_root(size as u64))?;
            merkle::root(size as u64, |c| nodes.get(&c).copied()).map_err(tree_error)
        })
    }

    /// RFC 9162 inclusion proof of leaf `leaf_index` in the tree of `tree_size` leaves.
    pub fn inclusion_proof(&self, leaf_index: i64, tree_size: i64) -> Result<Vec<merkle::Hash>, LedgerError> {
        self.read(|db| {
            Self::check_size(db, tree_size)?;
            if leaf_index < 0 || leaf_index >= tree_size {
                return Err(LedgerError::OutOfRange(format!("leaf {leaf_index} is not in a tree of {tree_size}")));
            }
            let (i, n) = (leaf_index as u64, tree_size as u64);
            let nodes = db.nodes(&merkle::nodes_needed_for_inclusion(i, n).map_err(tree_error)?)?;
            merkle::inclusion_proof(i, n, |c| nodes.get(&c).copied()).map_err(tree_error)
        })
    }

    /// RFC 9162 consistency proof between the trees of `first` and `second` leaves.
    pub fn consistency_proof(&self, first: i64, second: i64) -> Result<Vec<merkle::Hash>, LedgerError> {
        self.read(|db| {
            Self::check_size(db, second)?;
            if first < 0 || first > second {
                return Err(LedgerError::OutOfRange(format!("first {first} must be in 0..={second}")));
            }
            let (m, n) = (first as u64, second as u64);
            let nodes = db.nodes(&merkle::nodes_needed_for_consistency(m, n).map_err(tree_error)?)?;
            merkle::consistency_proof(m, n, |c| nodes.get(&c).copied()).map_err(tree_error)
        })
    }

    /// The newest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<crate::store::CheckpointRow>, LedgerError> {
        self.read(|db| db.latest_checkpoint())
    }

    /// Signs and stores a checkpoint of the current tree if it grew since the last one.
    /// Returns the new checkpoint, or `None` when there was nothing new (or no signer).
    ///
    /// It signs only a tree that extends the last checkpoint it signed (see
    /// [`crate::signer`]): otherwise it refuses from then on, logs an error once, and
    /// [`Ledger::checkpoint_refusal`] says why; this returns an error while it refuses.
    pub fn checkpoint_now(&self) -> Result<Option<crate::store::CheckpointRow>, LedgerError> {
        let Some(settings) = self.inner.config.checkpoints.clone() else { return Ok(None) };
        let now_us = (self.inner.config.clock)();
        let mut state = self.inner.signer.lock().map_err(|_| LedgerError::Unavailable)?;
        if let Some(reason) = &state.refused {
            return Err(LedgerError::Storage(format!("the checkpoint signer refuses: {reason}")));
        }
        match self.read(|db| crate::signer::step(db, &settings, &mut state, now_us))? {
            crate::signer::Step::Signed(row) => Ok(Some(row)),
            crate::signer::Step::Nothing => Ok(None),
            crate::signer::Step::Refuse(reason) => {
                tracing::error!(
                    reason = %reason,
                    "the audit log does not extend the last signed checkpoint: signing nothing until an operator \
                     has looked"
                );
                state.refused = Some(reason.clone());
                Err(LedgerError::Storage(format!("the checkpoint signer refuses: {reason}")))
            }
        }
    }

    /// Why the checkpoint signer refuses to sign (the log does not extend the last
    /// checkpoint it signed), if it does.
    pub fn checkpoint_refusal(&self) -> Option<String> {
        self.inner.signer.lock().ok().and_then(|s| s.refused.clone())
    }

    /// Runs `f` on the registry (holders, cards, merchants, credentials...), each statement
    /// on its own (reads; single-row writes).
    pub fn registry<T>(
        &self,
        f: impl FnOnce(&mut crate::registry::Registry<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.read(|db| f(&mut crate::registry::Registry(db)))
    }

    /// Runs `f` on the registry in one write transaction: all of it or nothing.
    pub fn registry_transaction<T>(
        &self,
        f: impl FnOnce(&mut crate::registry::Registry<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.read(|db| db.transaction(|db| f(&mut crate::registry::Registry(db))))
    }

    /// The current time of the ledger's clock, µs.
    pub fn now_us(&self) -> i64 {
        (self.inner.config.clock)()
    }

    /// The event written with this idempotency key, if any.
    pub fn event_by_key(&self, key: &str) -> Result<Option<EventRecord>, LedgerError> {
        self.read(|db| Ok(db.events_by_key(&[key])?.pop()))
    }

    /// The last read counter accepted for a card, if it was ever tapped.
    pub fn card_last_counter(&self, card_id: i64) -> Result<Option<i64>, LedgerError> {
        self.read(|db| db.card_last_counter(card_id))
    }

    /// What a card wallet owes after offline shortfalls (0: nothing).
    pub fn wallet_debt(&self, wallet: AccountId) -> Result<i64, LedgerError> {
        self.read(|db| db.wallet_debt(wallet))
    }

    /// The wallet that took over a replaced card's wallet, if any.
    pub fn wallet_successor(&self, wallet: AccountId) -> Result<Option<AccountId>, LedgerError> {
        self.read(|db| db.successor(wallet))
    }

    /// A card's last read counter as of `time_us` (entries and events recorded by then).
    pub fn card_counter_at(&self, card_id: i64, time_us: i64) -> Result<Option<i64>, LedgerError> {
        self.read(|db| db.card_counter_at(card_id, time_us))
    }

    /// Taps of a card refused as replays (suspected clones), oldest first.
    pub fn card_replays(&self, card_id: i64, limit: i64) -> Result<Vec<CardReplay>, LedgerError> {
        self.read(|db| db.card_replays(card_id, limit.clamp(1, PAGE_MAX)))
    }

    /// Events with an id above `after_id` that match `filter`, oldest first.
    pub fn events(
        &self,
        filter: &crate::store::EventFilter,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, LedgerError> {
        self.read(|db| db.events(filter, after_id, limit.clamp(1, PAGE_MAX)))
    }

    /// Voids every open hold that expired at or before now; returns the voids written.
    pub fn expire_holds(&self) -> Result<Vec<Posted>, LedgerError> {
        let now = (self.inner.config.clock)();
        let expired = self.read(|db| db.expired_open_holds(now, PAGE_MAX))?;
        let requests = expired
            .into_iter()
            .map(|hold_seq| {
                Request::new(Command::Void { hold_seq })
                    .with_references(crate::domain::References { memo: Some("expired".into()), ..Default::default() })
            })
            .collect();
        // A hold captured or voided meanwhile is refused as closed: that is fine.
        Ok(self.submit_many_blocking(requests)?.into_iter().filter_map(Result::ok).collect())
    }
}

fn tree_error(e: merkle::TreeError) -> LedgerError {
    LedgerError::Storage(format!("audit log: {e}"))
}

fn first(mut results: Vec<Result<Outcome, LedgerError>>) -> Result<Outcome, LedgerError> {
    results.pop().unwrap_or(Err(LedgerError::Unavailable))
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
    /// When.
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

/// Counters of the writer thread, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Database transactions (batches) committed or failed.
    pub batches: std::sync::atomic::AtomicU64,
    /// Requests applied (accepted or rejected).
    pub requests: std::sync::atomic::AtomicU64,
    /// Time spent inside batch transactions, µs.
    pub busy_us: std::sync::atomic::AtomicU64,
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
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut count = first.ops.len();
            let mut jobs = vec![first];
            while count < BATCH_REQUESTS_MAX {
                match rx.try_recv() {
                    Ok(job) => {
                        count += job.ops.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.process(jobs);
        }
    }

    /// Replaces the connection after a failed batch. It may be dead (the database was
    /// restarted) or unusable (diesel marks its transaction manager broken when a COMMIT or
    /// ROLLBACK fails, e.g. on a full disk), and would fail every later batch. When the
    /// database cannot be reached, the old one stays and the next failed batch tries again.
    fn reconnect(&mut self) {
        match Db::open(&self.url).and_then(|mut db| db.disable_wal_autocheckpoint().map(|()| db)) {
            Ok(db) => self.db = db,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reconnect to the database; trying again after the next failure")
            }
        }
    }

    fn process(&mut self, jobs: Vec<Job>) {
        let started = std::time::Instant::now();
        let mut requests = Vec::with_capacity(jobs.iter().map(|j| j.ops.len()).sum());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.reply, job.ops.len()));
            requests.extend(job.ops);
        }
        let mut results = match self.apply(&requests) {
            Ok(results) => results.into_iter().map(|r| r.map_err(LedgerError::Rejected)).collect::<Vec<_>>(),
            Err(e) => {
                tracing::error!(error = %e, requests = requests.len(), "ledger batch failed; nothing of it was written");
                self.cache.clear();
                self.cache_seq = None;
                self.reconnect();
                vec![Err(e); requests.len()]
            }
        };
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.batches.fetch_add(1, Relaxed);
        self.stats.requests.fetch_add(requests.len() as u64, Relaxed);
        self.stats.busy_us.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        // Hand each caller its slice of the results, in order.
        let mut rest = results.drain(..);
        for (reply, n) in replies {
            let mine: Vec<_> = rest.by_ref().take(n).collect();
            let _ = reply.send(mine);
        }
    }

    fn apply(&mut self, requests: &[Op]) -> Result<Vec<Result<Outcome, crate::domain::Rejection>>, LedgerError> {
        let now = (self.clock)();
        let audit_log = self.audit_log;
        let rules = self.rules;
        let Writer { db, cache, cache_seq, holds, edge, .. } = self;
        let (mut results, state, new_seq, receipts, event_receipts) = db.write_transaction(|db, head| {
            if *cache_seq != Some(head.last_seq) {
                // Another process wrote since our last batch: our balances may be stale.
                cache.clear();
                edge.clear();
            }
            let mut state = load(db, cache, holds, requests, now)?;
            let time_us = now.max(head.last_time_us);
            let mut machine = Machine::new(&mut state, head.last_seq + 1, time_us, rules);
            let results: Vec<_> = requests.iter().map(|r| machine.apply_op(r)).collect();
            let mut written = std::mem::take(&mut machine.written);
            let mut events = std::mem::take(&mut machine.events);
            // Replay events of a batch without other events were numbered from 0, the next
            // event id not being loaded: number them now (replays are rare).
            if events.first().is_some_and(|e| e.id < 1) {
                let next = db.last_event_id()? + 1;
                for (i, e) in events.iter_mut().enumerate() {
                    e.id = next + i as i64;
                }
            }
            let order = std::mem::take(&mut machine.leaf_order);
            let replays = std::mem::take(&mut machine.replays);
            let counters = std::mem::take(&mut machine.counters);
            let debt_rows = std::mem::take(&mut machine.debt_rows);
            let successor_rows = std::mem::take(&mut machine.successor_rows);
            let offline_rows = std::mem::take(&mut machine.offline_rows);
            let new_seq = head.last_seq + written.len() as i64;
            let mut tree_size = head.tree_size;
            let mut receipts = HashMap::new();
            let mut event_receipts = HashMap::new();
            if !order.is_empty() {
                if audit_log {
                    tree_size = append_leaves(db, edge, head.tree_size, &order, &mut written, &mut events)?;
                    receipts = written.iter().filter_map(|e| e.audit.map(|a| (e.seq, a))).collect();
                    event_receipts = events.iter().filter_map(|e| e.audit.map(|a| (e.id, a))).collect();
                }
                db.insert_entries(&written)?;
                db.insert_events(&events)?;
                db.insert_integrity(&debt_rows, &successor_rows, &offline_rows)?;
                db.set_card_counters(&counters, time_us)?;
                db.advance_head(head, Head { last_seq: new_seq, last_time_us: time_us, tree_size })?;
            }
            db.insert_card_replays(&replays)?;
            Ok((results, state, new_seq, receipts, event_receipts))
        })?;
        if cache.len() > ACCOUNT_CACHE_MAX {
            cache.clear();
        }
        cache.extend(state.accounts);
        *cache_seq = Some(new_seq);
        // Receipts: every entry made by this batch (also in-batch replays) gets its leaf.
        for outcome in results.iter_mut().flatten() {
            match outcome {
                Outcome::Posted(posted) => {
                    if let Some(a) = receipts.get(&posted.entry.seq) {
                        posted.entry.audit = Some(*a);
                    }
                }
                Outcome::Recorded(r) => {
                    if let Some(a) = event_receipts.get(&r.event.id) {
                        r.event.audit = Some(*a);
                    }
                }
            }
        }
        Ok(results)
    }
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
        rows.push(crate::store::LeafRow { leaf_index, kind, leaf, leaf_hash: leaf_hash.to_vec() });
    }
    let tree = |e: merkle::TreeError| LedgerError::Storage(format!("audit log: {e}"));
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

/// Loads what a batch touches: holds, payments, accounts (from the cache when valid),
/// idempotency keys and card counters already used.
fn load(
    db: &mut Db,
    cache: &mut HashMap<AccountId, AccountState>,
    holds_accounts: &mut HashMap<Currency, AccountId>,
    requests: &[Op],
    now_us: i64,
) -> Result<State, LedgerError> {
    let needs = Needs::of(requests);
    let mut state = State::default();
    let hold_seqs: Vec<i64> = needs.holds.iter().copied().collect();
    state.holds = db.holds(&hold_seqs)?;
    let payment_seqs: Vec<i64> = needs.payments.iter().copied().collect();
    state.payments = db.payments(&payment_seqs)?;

    let mut ids = needs.accounts.clone();
    ids.extend(state.holds.values().flat_map(|h| [h.wallet, h.merchant, h.holds_account]));
    ids.extend(state.payments.values().flat_map(|p| [p.wallet, p.merchant, p.fee_account]));
    // Replaced wallets pass credits to their successors, which must be loaded too, with
    // what every wallet of the batch owes.
    let mut wallets = needs.wallets.clone();
    wallets.extend(state.holds.values().map(|h| h.wallet));
    wallets.extend(state.payments.values().map(|p| p.wallet));
    state.successors = db.successors(&wallets)?;
    // A wallet that already took over from a card cannot take over from another: the
    // writer must see, for each wallet a replacement names, whether it is a successor.
    let new_wallets: HashSet<AccountId> = requests
        .iter()
        .filter_map(|op| match op {
            Op::Entry(Request { command: Command::ReplaceCard { new_wallet, .. }, .. }) => Some(*new_wallet),
            _ => None,
        })
        .collect();
    state.successors.extend(db.predecessors(&new_wallets)?);
    wallets.extend(state.successors.values().copied());
    ids.extend(wallets.iter().copied());
    // Debts only where a command reads them, through any replacements: the usual payment
    // batch costs no debt lookup.
    let mut debtors: Vec<AccountId> = Vec::new();
    for w in needs.debtors.iter().chain(state.payments.values().map(|p| &p.wallet)) {
        let mut w = *w;
        debtors.push(w);
        while let Some(next) = state.successors.get(&w) {
            w = *next;
            debtors.push(w);
        }
    }
    state.debts = db.debts(&debtors)?;
    for currency in &needs.risk_currencies {
        let id = db.system_account(AccountKind::OfflineRisk, *currency, now_us)?.id;
        state.risk_accounts.insert(*currency, id);
        ids.insert(id);
    }
    for (terms, card) in &needs.offline {
        let day = (terms.credential_id, *card, crate::machine::utc_day(terms.record_time_us));
        if let std::collections::hash_map::Entry::Vacant(v) = state.offline_card_day.entry(day) {
            v.insert(db.offline_card_day(terms.credential_id, *card, terms.record_time_us)?);
        }
        let sync = (terms.credential_id, terms.sync_id);
        if let std::collections::hash_map::Entry::Vacant(v) = state.offline_sync_total.entry(sync) {
            v.insert(db.offline_sync_total(terms.credential_id, terms.sync_id)?);
        }
    }
    for merchant in &needs.offline_merchants {
        let since = now_us - crate::domain::OFFLINE_RISK_WINDOW_US - 60_000_000;
        state.merchant_shortfalls.insert(*merchant, db.merchant_shortfalls(*merchant, since)?);
    }
    for (key, since) in &needs.access {
        state.access_times.insert(key.clone(), db.access_times(key, *since)?);
    }
    for r in requests {
        if let Op::Entry(Request { command: Command::Hold { amount, .. }, .. }) = r {
            let currency = amount.currency();
            let id = match holds_accounts.get(&currency) {
                Some(id) => *id,
                None => {
                    let id = db.system_account(AccountKind::Holds, currency, now_us)?.id;
                    holds_accounts.insert(currency, id);
                    id
                }
            };
            ids.insert(id);
        }
    }
    state.holds_accounts = holds_accounts.clone();

    let mut missing = Vec::new();
    for id in ids {
        match cache.remove(&id) {
            Some(a) => {
                state.accounts.insert(id, a);
            }
            None => missing.push(id),
        }
    }
    for a in db.account_states(&missing)? {
        state.accounts.insert(a.account.id, a);
    }

    if !needs.keys.is_empty() {
        let keys: Vec<&str> = needs.keys.iter().map(|k| k.as_str()).collect();
        for e in db.entries_by_key(&keys)? {
            if let Some(k) = e.idempotency_key.clone() {
                state.keyed.insert(k, e);
            }
        }
    }
    if !needs.keys.is_empty() {
        let keys: Vec<&str> = needs.keys.iter().map(|k| k.as_str()).collect();
        for e in db.events_by_key(&keys)? {
            if let Some(k) = e.idempotency_key.clone() {
                state.keyed_events.insert(k, e);
            }
        }
    }
    state.last_counters = db.card_counters(&needs.cards)?;
    // Only taps that are not above their card's last counter can have been used; the
    // usual tap, above it, costs no lookup.
    let mut maybe_used = needs.offline_taps.clone();
    maybe_used.extend(
        needs.taps.iter().filter(|(card, ctr)| state.last_counters.get(card).is_some_and(|last| *ctr <= last.0)),
    );
    state.used_taps = db.used_counters(&maybe_used)?;
    // A batch of entries only learns the next event id if it refuses a tap (see `apply`):
    // the usual payment batch costs no lookup.
    if needs.events {
        state.next_event_id = db.last_event_id()? + 1;
        state.queue_max = db.queue_max(&needs.queues)?;
    }
    Ok(state)
}
