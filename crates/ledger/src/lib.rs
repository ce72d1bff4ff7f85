//! Kartu's ledger: where the city's public money lives.
//!
//! - [`money`]: currencies and amounts (integer minor units, parsed at the boundary);
//! - [`domain`]: accounts, journal entries, postings, requests and rejection codes;
//! - `machine`: the rules, a pure state machine applied to a batch of requests;
//! - `store`: the only module that knows SQL (SQLite and PostgreSQL through diesel);
//! - [`roles`]: what `kartu serve`'s database role may do on PostgreSQL, table by table;
//! - [`audit`]: the canonical leaf bytes of the Merkle audit log (docs/AUDIT.md);
//! - [`replay`]: the books replayed from the leaves, the rule both verifiers check
//!   ([`audit::Replayer`]);
//! - [`verify`]: the auditor's check of a whole database (with `verify_registry`, the
//!   registry recomputed from its operator-action leaves);
//! - [`Ledger`]: the group-committing writer, the reads, proofs and signed checkpoints;
//! - [`signer`]: what the checkpoint signer trusts, and why it may refuse to sign.

pub mod audit;
pub mod domain;
pub mod export;
pub mod keys;
mod ledger;
mod machine;
pub mod replay;
/// Currencies, amounts and fee rates: the domain layer's (`domain::money`).
pub use ::domain::money;
pub mod signer;
mod store;
pub mod verify;
mod verify_registry;

pub use self::domain::{Statement, StatementLine, TrialBalanceLine};
pub use ledger::{migrate, system_clock, Clock, Ledger, LedgerConfig};
pub use ledger::{
    wal_checkpoint_wait, ReplicaLag, RotationDone, WriterStats, BATCH_REQUESTS_MAX, PAGE_MAX, QUEUE_JOBS_MAX,
    WAL_CHECKPOINT_BYTES, WAL_CHECKPOINT_HURRY, WAL_CHECKPOINT_INTERVAL,
};
pub use machine::TapRules;
pub use signer::CheckpointSettings;
pub use store::registry;
pub use store::roles;
pub use store::transit;
pub use store::webhooks;
pub use store::{pg_connect_url, Backend, CheckpointRow, EventFilter, LeafRow, WAL_SIZE_LIMIT_BYTES};

/// Errors of the ledger as a service: a rejection of the request, or trouble underneath.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The request was refused; nothing was written.
    #[error("rejected: {0}")]
    Rejected(#[from] domain::Rejection),
    /// The database URL is not one we can use.
    #[error("bad database URL: {0}")]
    BadUrl(String),
    /// Migrations failed or are pending.
    #[error("migration: {0}")]
    Migration(String),
    /// Database roles: the serving role could not be set up or checked.
    #[error("database roles: {0}")]
    Roles(String),
    /// The database cannot be reached or failed (connection refused or lost, a timeout, a
    /// crash of the server); nothing of the batch the request was in was written. Retrying
    /// (with the same idempotency key) is safe.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database's disk is full (SQLite `SQLITE_FULL`, PostgreSQL out of space); nothing
    /// of the batch was written. Retry once space is freed.
    #[error("storage full: {0}")]
    Full(String),
    /// A concurrent writer got there first (a unique key taken by a racing request, a
    /// serialization failure); nothing was written. A retry with the same idempotency key
    /// finds what the winner wrote.
    #[error("storage conflict: {0}")]
    Conflict(String),
    /// A broken invariant: the database holds what the code never writes, or the code
    /// contradicts itself. A bug or tampering, not something a retry fixes: met by the
    /// writer, it stops taking batches ([`Ledger::writer_halted`]).
    #[error("broken invariant: {0}")]
    Invariant(String),
    /// A proof or read asked for something outside the log.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// The writer's queue is full; try again shortly.
    #[error("the ledger is busy; retry")]
    Busy,
    /// The ledger's writer has stopped (it was shut down).
    #[error("the ledger is shutting down or has stopped")]
    Stopped,
}
