//! The ledger service: one writer thread that group-commits batches of requests, and a
//! small pool of read connections.
//!
//! Group commit, the way TigerBeetle batches: callers put requests on a bounded queue; the
//! writer takes everything waiting (up to [`BATCH_REQUESTS_MAX`]), applies the batch to the
//! state machine and writes it in ONE database transaction, then answers every caller.
//! While one batch commits, the next one gathers, so throughput grows with concurrency
//! instead of collapsing to one fsync per payment.
//!
//! - `writer`: the queue, the writer thread and its batch transaction (`load` gathers what a
//!   batch touches);
//! - `reads`: the pool of read connections and every read;
//! - `proofs`: the audit log's roots, proofs and signed checkpoints;
//! - `background`: the checkpoint signer, SQLite's WAL checkpoints, hold expiry.

mod background;
mod load;
mod proofs;
mod reads;
mod replica;
mod writer;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::domain::WALLET_BALANCE_MAX_DEFAULT_MINOR;
use crate::machine::TapRules;
use crate::signer::CheckpointSettings;
use crate::store::{Backend, Db};
use crate::LedgerError;
pub use proofs::RotationDone;
pub use replica::ReplicaLag;
pub use writer::WriterStats;
use writer::{Halt, Job};

/// Most requests applied in one database transaction.
pub const BATCH_REQUESTS_MAX: usize = 8_192;
/// Most jobs waiting for the writer; beyond this, callers get [`LedgerError::Busy`] at once.
pub const QUEUE_JOBS_MAX: usize = 65_536;
/// How often SQLite's WAL is copied into the database file, off the write path, while the
/// log in it holds less than half the writer's bound ([`WAL_CHECKPOINT_BYTES`]).
pub const WAL_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// How often it is copied once the log holds half the bound or more: the copy then keeps
/// close behind the writer, so when the writer finishes it (past the bound) only the last
/// few milliseconds of writes are left to copy. At 100 ms that was up to a tenth of a
/// second of writes, and each of the writer's copies stopped it for 3-15 ms (p50 7 ms),
/// which made the HTTP benchmark's p99 on SQLite: 17 ms against 10-13 ms without them. A
/// copy every 1 ms, the other way, cost the writer throughput in fsyncs.
pub const WAL_CHECKPOINT_HURRY: std::time::Duration = std::time::Duration::from_millis(10);
/// Above this SQLite WAL size the writer finishes the checkpoint between two batches, so
/// the log starts over: about once per 32 MiB written (a quarter of a second of full
/// load), when the background thread has copied all but the last batches. The WAL file
/// stays within the bound plus what is written while the writer learns of it (one
/// background pass) and what a long read holds back: 35-41 MiB on the HTTP benchmark.
pub const WAL_CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

/// How long the WAL's background copy waits before its next pass, after a pass that left
/// `log_bytes` of log in the WAL, for a writer that finishes the copy above `bound`.
pub fn wal_checkpoint_wait(log_bytes: u64, bound: u64) -> std::time::Duration {
    if log_bytes >= bound / 2 {
        WAL_CHECKPOINT_HURRY
    } else {
        WAL_CHECKPOINT_INTERVAL
    }
}

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
    /// SQLite: above this WAL size the writer finishes the WAL's checkpoint itself between
    /// two batches, so that the WAL starts over (see `Writer::bound_wal`).
    pub wal_checkpoint_bytes: u64,
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
            wal_checkpoint_bytes: WAL_CHECKPOINT_BYTES,
        }
    }
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
    /// Set when the writer met a broken invariant and stopped: why.
    halt: Halt,
    /// Background threads (checkpoint signer, SQLite WAL checkpoints); dropping a
    /// sender stops its thread.
    background: Mutex<Vec<(Sender<()>, JoinHandle<()>)>>,
    url: String,
    backend: Backend,
    reads: Mutex<Vec<Db>>,
    config: LedgerConfig,
    /// What the checkpoint signer trusts.
    signer: Mutex<crate::signer::SignerState>,
    /// Why the signer refuses, once it does (sticky until a restart). Read without the
    /// lock above, which the signer holds for a whole step: a step waits for the writer to
    /// store its row, and `/readyz` must answer meanwhile, e.g. that the writer is stuck.
    signer_refused: std::sync::OnceLock<String>,
    /// SQLite: the bytes of the log in the WAL as the last checkpoint saw it (written by
    /// the background checkpoint and the writer, read by the writer's bound).
    wal_log: Arc<std::sync::atomic::AtomicU64>,
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
        db.ready_writer()?;
        let backend = db.backend();
        let halt = Halt::default();
        let wal_log = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = writer::start(db, url, &config, halt.clone(), wal_log.clone())?;
        let ledger = Ledger {
            inner: Arc::new(Inner {
                jobs: Mutex::new(Some(writer.jobs)),
                writer: Mutex::new(Some(writer.handle)),
                halt,
                background: Mutex::new(Vec::new()),
                stats: writer.stats,
                url: url.to_owned(),
                backend,
                reads: Mutex::new(Vec::new()),
                config,
                signer: Mutex::new(Default::default()),
                signer_refused: std::sync::OnceLock::new(),
                wal_log,
            }),
        };
        ledger.start_background()?;
        Ok(ledger)
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
    /// [`LedgerError::Stopped`]. A ledger that signs checkpoints then signs a last one, so
    /// a clean stop leaves no leaf outside a signed checkpoint (a leaf written just before
    /// the stop would otherwise wait for the next start to be signed, and `kartu audit
    /// verify` of the stopped database would report it uncovered).
    pub fn shutdown(&self) {
        self.inner.stop();
        // `checkpoint_now` signs nothing without a signer; a refusing signer was logged once.
        if self.checkpoint_refusal().is_none() {
            if let Err(e) = self.checkpoint_now() {
                tracing::warn!(error = %e, "the last checkpoint at shutdown failed");
            }
        }
    }

    /// The current time of the ledger's clock, µs.
    pub fn now_us(&self) -> i64 {
        (self.inner.config.clock)()
    }
}
