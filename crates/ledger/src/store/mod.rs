//! Storage: the only module that knows SQL. One connection type per backend behind the
//! [`Db`] enum; every query is written once with diesel's DSL and run on either backend
//! through the `on_db!` macro.

pub(crate) mod schema;

pub(crate) use audit_log::hash32;
pub use audit_log::LeafRow;
pub use checkpoints::CheckpointRow;
pub(crate) use error::{corrupt, storage};
pub use events::EventFilter;
pub(crate) use head::Head;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use crate::LedgerError;

/// SQLite's WAL file is cut back to this size when the log starts over (a burst that grew
/// it does not keep it large).
pub const WAL_SIZE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// How long a SQLite connection waits for a lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;
/// How long the writer's checkpoint ([`WalCheckpoint::Restart`]) waits for the readers still
/// in the log to leave it: a hot-path read takes microseconds, and a long one (an export, a
/// verify) must not stall the writer; it then copies what it can and tries again later.
const WAL_RESTART_WAIT_MS: u32 = 5;

/// SQLite page cache per connection: the postings index is written in account order, so
/// a cache that holds the hot index pages avoids reading them back from the file.
const SQLITE_CACHE_KIB: u32 = 128 * 1024;

/// How [`Db::wal_checkpoint`] copies the WAL into the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalCheckpoint {
    /// Waits for nobody: stops at the oldest snapshot a reader still reads (the
    /// background thread, beside the writer).
    Passive,
    /// The writer, between two batches: copies everything and waits (at most
    /// [`WAL_RESTART_WAIT_MS`]) for the readers still in the log to leave it, so that the
    /// next write starts the log over from its beginning. A PASSIVE copy there did not
    /// start it over while the read pool kept reading (a hot-path read is nearly always in
    /// progress at 13k payments/s): the log stayed past its bound and the writer copied
    /// again ~17 times a second, each time syncing the database file.
    Restart,
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path` (or `sqlite::memory:` is refused: the ledger must persist).
    Sqlite,
    /// `postgres://` or `postgresql://`.
    Postgres,
}

impl Backend {
    /// Chooses the backend by the URL's scheme.
    pub fn of_url(url: &str) -> Result<Backend, LedgerError> {
        if url.starts_with("sqlite://") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(LedgerError::BadUrl("the database URL must start with sqlite:// or postgres://".into()))
        }
    }
}

/// A connection to either backend.
pub(crate) enum Db {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Db::Sqlite(_) => "Db::Sqlite",
            Db::Pg(_) => "Db::Pg",
        })
    }
}

/// Runs the same diesel expression on whichever connection `$db` holds.
macro_rules! on_db {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            Db::Sqlite($c) => $body,
            Db::Pg($c) => $body,
        }
    };
}

/// SQLite: rows per multi-row INSERT, then [`SQLITE_CHUNK_SMALL`] for what is left, then
/// single rows. Each size is one statement diesel prepares once and caches (a statement
/// over a slice of any length would be prepared anew every batch); the raw-insert
/// baseline of `make bench` wrote the same rows 10-45 % faster this way than row by row.
/// 128 rows of the widest table (journal_entries, 18 columns) bind 2,304 values, far
/// below SQLite's limit of 32,766.
pub(crate) const SQLITE_CHUNK_BIG: usize = 128;
/// See [`SQLITE_CHUNK_BIG`].
pub(crate) const SQLITE_CHUNK_SMALL: usize = 16;

/// SQLite: inserts `$rows` (a slice) into `$table` in statements of [`SQLITE_CHUNK_BIG`]
/// rows, then [`SQLITE_CHUNK_SMALL`], then one (three cached statements per table).
macro_rules! sqlite_insert_chunked {
    ($c:expr, $table:expr, $rows:expr) => {{
        let mut rest = &$rows[..];
        while let Some((chunk, tail)) = rest.split_first_chunk::<{ $crate::store::SQLITE_CHUNK_BIG }>() {
            diesel::insert_into($table).values(chunk).execute($c).map_err(storage)?;
            rest = tail;
        }
        while let Some((chunk, tail)) = rest.split_first_chunk::<{ $crate::store::SQLITE_CHUNK_SMALL }>() {
            diesel::insert_into($table).values(chunk).execute($c).map_err(storage)?;
            rest = tail;
        }
        for row in rest {
            diesel::insert_into($table).values(row).execute($c).map_err(storage)?;
        }
    }};
}

// After `on_db!` and `sqlite_insert_chunked!`: the modules use them.
mod accounts;
mod audit_log;
mod cached;
mod checkpoints;
mod entries;
mod error;
mod events;
mod head;
mod in_list;
mod integrity;
mod migrations;
mod reads;
pub mod registry;
pub mod roles;
pub mod transit;
pub mod webhooks;

/// The URL libpq is given: `url` itself, except that a connection to this machine (a
/// loopback address, `localhost` or a Unix socket) that does not choose an `sslmode` gets
/// `sslmode=disable`. libpq's default (`prefer`) takes TLS whenever the server offers it
/// (Debian's does), which costs every round trip encryption that protects nothing on a
/// loopback link. A remote server keeps libpq's default, and any `sslmode` given is kept.
pub fn pg_connect_url(url: &str) -> std::borrow::Cow<'_, str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => hostport.split(':').next().unwrap_or(""),
    };
    let params: Vec<(&str, &str)> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let host = param("host").unwrap_or(host);
    // A Unix socket's directory may be written percent-encoded in the authority.
    let socket = host.starts_with('/') || host.to_ascii_lowercase().starts_with("%2f");
    let local = matches!(host, "" | "localhost" | "::1") || host.starts_with("127.") || socket;
    if !local || param("sslmode").is_some() {
        return std::borrow::Cow::Borrowed(url);
    }
    let joiner = if url.contains('?') { "&" } else { "?" };
    std::borrow::Cow::Owned(format!("{url}{joiner}sslmode=disable"))
}

impl Db {
    /// Opens a connection; SQLite in WAL mode with a busy timeout and full durability.
    pub fn open(url: &str) -> Result<Db, LedgerError> {
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                let path = url.trim_start_matches("sqlite://");
                if path.is_empty() || path.starts_with(':') {
                    return Err(LedgerError::BadUrl("sqlite:// needs a file path".into()));
                }
                let mut c = SqliteConnection::establish(path).map_err(storage)?;
                c.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = FULL;
                     PRAGMA cache_size = -{SQLITE_CACHE_KIB};
                     PRAGMA temp_store = MEMORY;
                     PRAGMA foreign_keys = ON;"
                ))
                .map_err(storage)?;
                Ok(Db::Sqlite(c))
            }
            Backend::Postgres => Ok(Db::Pg(PgConnection::establish(&pg_connect_url(url)).map_err(storage)?)),
        }
    }

    /// Readies the writer's connection.
    /// - SQLite: no checkpoint of the WAL at commit (a background thread does it, off the
    ///   write path; the writer finishes it when the WAL grows past its bound, see
    ///   `Writer::bound_wal`), and a WAL file that starts over is cut back to
    ///   [`WAL_SIZE_LIMIT_BYTES`].
    /// - PostgreSQL: a fresh plan for every statement. PostgreSQL switches a prepared
    ///   statement to a generic plan after five executions when that plan looks no dearer,
    ///   and keeps it until the table's statistics change. A ledger starts empty, so the
    ///   writer's lookups (the batch's idempotency keys above all) were planned as scans of
    ///   a table of a few rows and went on scanning it as it grew: on the HTTP benchmark the
    ///   writer's backend spent 80 % of a core in `idempotency_key = ANY($1)` and the server
    ///   answered 1.6k payments/s; the same server restarted on the grown table, 8.3k/s. The
    ///   writer runs a few statements per batch, so planning each costs little.
    pub fn ready_writer(&mut self) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(c) => c
                .batch_execute(&format!(
                    "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES};"
                ))
                .map_err(storage),
            Db::Pg(c) => c.batch_execute("SET plan_cache_mode = force_custom_plan").map_err(storage),
        }
    }

    /// SQLite: copies the WAL's committed pages into the database file (see
    /// [`WalCheckpoint`]). Returns the bytes of the log in the WAL (its frames since it
    /// last started over, copied or not; the file itself may be larger), 0 after a
    /// RESTART that made the next write start it over. Always 0 on PostgreSQL.
    pub fn wal_checkpoint(&mut self, mode: WalCheckpoint) -> Result<u64, LedgerError> {
        #[derive(QueryableByName)]
        struct Checkpoint {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            busy: i32,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            log: i32,
        }
        #[derive(QueryableByName)]
        struct PageSize {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            page_size: i64,
        }
        match self {
            Db::Sqlite(c) => {
                let restart = mode == WalCheckpoint::Restart;
                if restart {
                    c.batch_execute(&format!("PRAGMA busy_timeout = {WAL_RESTART_WAIT_MS}")).map_err(storage)?;
                }
                let sql = if restart { "PRAGMA wal_checkpoint(RESTART)" } else { "PRAGMA wal_checkpoint(PASSIVE)" };
                let r: QueryResult<Checkpoint> = diesel::sql_query(sql).get_result(c);
                if restart {
                    c.batch_execute(&format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")).map_err(storage)?;
                }
                let r = r.map_err(storage)?;
                if restart && r.busy == 0 {
                    return Ok(0);
                }
                let p: PageSize = diesel::sql_query("PRAGMA page_size").get_result(c).map_err(storage)?;
                // A frame is a 24-byte header and a page.
                Ok(u64::try_from(r.log).unwrap_or(0) * (u64::try_from(p.page_size).unwrap_or(0) + 24))
            }
            Db::Pg(_) => Ok(0),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Pg(_) => Backend::Postgres,
        }
    }

    /// Runs `f` in a transaction (SQLite: `BEGIN IMMEDIATE`, so the write lock is taken at
    /// the start and a busy database waits instead of failing at commit).
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        use diesel::connection::{AnsiTransactionManager, TransactionManager};
        match self {
            Db::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
            Db::Pg(c) => AnsiTransactionManager::begin_transaction(c),
        }
        .map_err(storage)?;
        let result = f(self);
        let finished = match (&result, &mut *self) {
            (Ok(_), Db::Sqlite(c)) => AnsiTransactionManager::commit_transaction(c),
            (Ok(_), Db::Pg(c)) => AnsiTransactionManager::commit_transaction(c),
            (Err(_), Db::Sqlite(c)) => AnsiTransactionManager::rollback_transaction(c),
            (Err(_), Db::Pg(c)) => AnsiTransactionManager::rollback_transaction(c),
        };
        match (result, finished) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(storage(e)),
            (Err(e), _) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pg_connect_url, Db, WalCheckpoint};
    use diesel::connection::SimpleConnection;
    use diesel::sqlite::SqliteConnection;
    use diesel::Connection;

    /// The writer's RESTART copies the whole log and makes the next write start it over
    /// (the log then holds that write alone), but waits only a few milliseconds for a
    /// reader still in the log: it copies what it can and says how large the log is.
    #[test]
    fn the_writers_checkpoint_restarts_the_log_and_waits_little_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db").display().to_string();
        let mut db = Db::open(&format!("sqlite://{path}")).unwrap();
        let Db::Sqlite(c) = &mut db else { panic!("not SQLite") };
        c.batch_execute("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x BLOB);").unwrap();
        let write = |c: &mut SqliteConnection| {
            c.batch_execute("INSERT INTO t VALUES (randomblob(3000)), (randomblob(3000));").unwrap()
        };
        for _ in 0..50 {
            write(c);
        }
        let before = db.wal_checkpoint(WalCheckpoint::Passive).unwrap();
        assert!(before > 50 * 4096, "{before} bytes of log after 50 writes");
        // A reader in the log: the restart gives up after a few milliseconds.
        let mut reader = SqliteConnection::establish(&path).unwrap();
        reader.batch_execute("BEGIN; SELECT count(*) FROM t;").unwrap();
        let Db::Sqlite(c) = &mut db else { panic!("not SQLite") };
        write(c);
        let started = std::time::Instant::now();
        let busy = db.wal_checkpoint(WalCheckpoint::Restart).unwrap();
        let waited = started.elapsed();
        // The reader's snapshot is older than the write, so the write stays in the log.
        assert!(busy > 0, "a restart under a reader said the log starts over");
        assert!(waited < std::time::Duration::from_millis(500), "the restart waited {waited:?} for the reader");
        reader.batch_execute("COMMIT;").unwrap();
        // No reader: the log starts over at the next write.
        assert_eq!(db.wal_checkpoint(WalCheckpoint::Restart).unwrap(), 0);
        let Db::Sqlite(c) = &mut db else { panic!("not SQLite") };
        write(c);
        let after = db.wal_checkpoint(WalCheckpoint::Passive).unwrap();
        assert!(after < 8 * 4096, "{after} bytes of log after one write past a restart");
    }

    #[test]
    fn local_connections_skip_tls_unless_asked() {
        let check = |url: &str, expect: &str| assert_eq!(pg_connect_url(url), expect, "{url}");
        check("postgres://postgres@127.0.0.1:5432/db", "postgres://postgres@127.0.0.1:5432/db?sslmode=disable");
        check(
            "postgres://u:p@localhost/db?application_name=k",
            "postgres://u:p@localhost/db?application_name=k&sslmode=disable",
        );
        check("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db?sslmode=disable");
        check("postgres:///db", "postgres:///db?sslmode=disable");
        check("postgres://%2Fvar%2Frun%2Fpostgresql/db", "postgres://%2Fvar%2Frun%2Fpostgresql/db?sslmode=disable");
        check("postgres://u@/db?host=/var/run/postgresql", "postgres://u@/db?host=/var/run/postgresql&sslmode=disable");
        // Asked for, or remote: untouched.
        check("postgres://u@127.0.0.1/db?sslmode=require", "postgres://u@127.0.0.1/db?sslmode=require");
        check("postgres://u@db.example:5432/db", "postgres://u@db.example:5432/db");
        check("postgres://u@10.0.0.7/db", "postgres://u@10.0.0.7/db");
        check("postgres://u@127.0.0.1/db?host=db.example", "postgres://u@127.0.0.1/db?host=db.example");
        check("postgres://u@1270.0.0.1/db", "postgres://u@1270.0.0.1/db");
    }
}
