//! A read-only handle on a PostgreSQL streaming replica, for the reads that may lag a little
//! (auditors' pages, statements, the public totals) so that they never compete with the
//! till on the primary; and how far the replica's replay is behind.

use std::sync::{Arc, Mutex};

use diesel::sql_types::{BigInt, Double, Text};
use diesel::RunQueryDsl;

use super::writer::{Halt, WriterStats};
use super::{Inner, Ledger, LedgerConfig};
use crate::store::Db;
use crate::LedgerError;

/// How far a replica's replay is behind the primary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaLag {
    /// WAL bytes written on the primary and not yet replayed.
    pub bytes: i64,
    /// Seconds since the last transaction the replica replayed, while it is behind (0 when
    /// it has replayed everything).
    pub seconds: f64,
}

#[derive(diesel::QueryableByName)]
struct Lsn {
    #[diesel(sql_type = Text)]
    lsn: String,
}

#[derive(diesel::QueryableByName)]
struct Lag {
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = Double)]
    seconds: f64,
}

impl Ledger {
    /// Opens a ledger that only reads, at `url` (a replica): no writer, no background
    /// jobs; a write through it answers [`LedgerError::Stopped`]. The database must be
    /// migrated (a replica is, once the primary is).
    pub fn open_reader(url: &str, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let mut db = Db::open(url)?;
        if !db.is_migrated()? {
            return Err(LedgerError::Migration("the read database is not migrated".into()));
        }
        let backend = db.backend();
        Ok(Ledger {
            inner: Arc::new(Inner {
                jobs: Mutex::new(None),
                writer: Mutex::new(None),
                halt: Halt::default(),
                background: Mutex::new(Vec::new()),
                stats: Arc::new(WriterStats::default()),
                url: url.to_owned(),
                backend,
                reads: Mutex::new(vec![db]),
                config,
                signer: Mutex::new(Default::default()),
                signer_refused: std::sync::OnceLock::new(),
                wal_log: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            }),
        })
    }

    /// PostgreSQL: where the primary's WAL is now (`pg_current_wal_lsn`); `None` on SQLite.
    pub fn wal_position(&self) -> Result<Option<String>, LedgerError> {
        self.read(|db| match db {
            Db::Pg(c) => diesel::sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
                .get_result::<Lsn>(c)
                .map(|l| Some(l.lsn))
                .map_err(|e| LedgerError::Unavailable(format!("the WAL position: {e}"))),
            Db::Sqlite(_) => Ok(None),
        })
    }

    /// On a replica: how far its replay is behind the primary's position `primary_lsn`.
    pub fn replay_lag(&self, primary_lsn: &str) -> Result<ReplicaLag, LedgerError> {
        self.read(|db| match db {
            Db::Pg(c) => diesel::sql_query(
                "SELECT GREATEST(pg_wal_lsn_diff($1::pg_lsn, COALESCE(pg_last_wal_replay_lsn(), '0/0')), 0)::bigint \
                 AS bytes, CASE WHEN pg_wal_lsn_diff($1::pg_lsn, COALESCE(pg_last_wal_replay_lsn(), '0/0')) > 0 \
                 THEN COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) ELSE 0 END::float8 \
                 AS seconds",
            )
            .bind::<Text, _>(primary_lsn)
            .get_result::<Lag>(c)
            .map(|l| ReplicaLag { bytes: l.bytes, seconds: l.seconds })
            .map_err(|e| LedgerError::Unavailable(format!("the replica's lag: {e}"))),
            Db::Sqlite(_) => Err(LedgerError::Unavailable("a replica is a PostgreSQL standby".into())),
        })
    }
}
