//! Storage: the only module that knows SQL. One connection type per backend behind the
//! [`Db`] enum; every query is written once with diesel's DSL and run on either backend
//! through the `on_db!` macro.

pub(crate) mod schema;

pub use events::EventFilter;

use std::collections::{HashMap, HashSet};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::domain::{
    Account, AccountId, AccountKind, AuditRef, Entry, EntryKind, IdempotencyKey, NewAccount, Posting, References,
};
use crate::machine::{AccountState, HoldState, PaymentState};
use crate::money::Currency;
use crate::LedgerError;
use schema::{accounts, audit_leaves, checkpoints, journal_entries, ledger_head, merkle_nodes, postings};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Merkle nodes below this level are not stored: they are folded from at most
/// 2^(level-1) leaf hashes when read, which saves a row per entry on the write path.
pub(crate) const NODE_LEVEL_STORED_MIN: u8 = 4;
/// Above this WAL size, the background checkpoint truncates the WAL.
pub(crate) const WAL_TRUNCATE_BYTES: u64 = 64 * 1024 * 1024;
/// How long a SQLite connection waits for a lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;
/// SQLite page cache per connection: the postings index is written in account order, so
/// a cache that holds the hot index pages avoids reading them back from the file.
const SQLITE_CACHE_KIB: u32 = 128 * 1024;

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

mod events;
mod integrity;
pub mod registry;
pub mod roles;

/// A database error, classified once, here: a full disk ([`LedgerError::Full`]) or any
/// other failure ([`LedgerError::Storage`]). Callers map the kind, never the text.
fn storage(e: impl std::fmt::Display) -> LedgerError {
    let text = e.to_string();
    if is_disk_full(&text) {
        LedgerError::Full(text)
    } else {
        LedgerError::Storage(text)
    }
}

/// SQLite says `database or disk is full` (SQLITE_FULL); PostgreSQL reports SQLSTATE
/// 53100 with `No space left on device` when it cannot extend or write a file (diesel keeps
/// the message, not the SQLSTATE, for these).
fn is_disk_full(text: &str) -> bool {
    text.contains("database or disk is full") || text.contains("No space left on device")
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
            Backend::Postgres => Ok(Db::Pg(PgConnection::establish(url).map_err(storage)?)),
        }
    }

    /// SQLite: stop this connection from checkpointing the WAL at commit (the ledger's
    /// maintenance thread does it instead, off the write path). No-op on PostgreSQL.
    pub fn disable_wal_autocheckpoint(&mut self) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(c) => c.batch_execute("PRAGMA wal_autocheckpoint = 0").map_err(storage),
            Db::Pg(_) => Ok(()),
        }
    }

    /// SQLite: copy committed WAL pages into the database file without blocking writers.
    /// Copies the WAL into the database file without waiting (PASSIVE). Under continuous
    /// load the WAL never gets a moment to restart and would grow without end, so above
    /// `WAL_TRUNCATE_BYTES` the checkpoint waits for readers and truncates it.
    pub fn wal_checkpoint(&mut self, wal_bytes: u64) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(c) if wal_bytes > WAL_TRUNCATE_BYTES => {
                c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)").map_err(storage)
            }
            Db::Sqlite(c) => c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)").map_err(storage),
            Db::Pg(_) => Ok(()),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Pg(_) => Backend::Postgres,
        }
    }

    /// Applies pending migrations; returns how many ran. On PostgreSQL, when some ran, the
    /// serving roles already set up are granted the new tables ([`roles::SERVE_GRANTS`]).
    /// A database with nothing pending is only read, so the serving role (which may create
    /// nothing) can call this too.
    pub fn migrate(&mut self) -> Result<usize, LedgerError> {
        if self.is_migrated()? {
            return Ok(0);
        }
        let ran = match self {
            Db::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
            Db::Pg(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()),
        };
        let ran = ran.map_err(|e| {
            let hint = if e.to_string().contains("permission denied") {
                " (migrations run as the tables' owner: `kartu migrate --database-url <owner URL>`)"
            } else {
                ""
            };
            LedgerError::Migration(format!("{e}{hint}"))
        })?;
        if let (Db::Pg(c), true) = (&mut *self, ran > 0) {
            roles::regrant_pg(c)?;
        }
        Ok(ran)
    }

    /// True when every embedded migration has been applied. On PostgreSQL this only reads
    /// (diesel's own check creates its bookkeeping table first, which a serving role may
    /// not).
    pub fn is_migrated(&mut self) -> Result<bool, LedgerError> {
        let pending = match self {
            Db::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
            Db::Pg(c) => return pg_is_migrated(c),
        };
        pending.map(|p| !p).map_err(|e| LedgerError::Migration(e.to_string()))
    }

    /// Runs `f` in a write transaction that holds the ledger head lock: SQLite's
    /// `BEGIN IMMEDIATE`, PostgreSQL's `SELECT … FOR UPDATE` on the head row. Every writer
    /// of every process takes this lock first, so batches are applied one at a time and
    /// each sees what the one before it committed. Any error rolls everything back.
    pub fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Db, Head) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.transaction(|db| {
            let head = db.locked_head()?;
            f(db, head)
        })
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

    fn locked_head(&mut self) -> Result<Head, LedgerError> {
        use ledger_head::dsl as h;
        let cols = (h::last_seq, h::last_time_us, h::tree_size);
        let row: (i64, i64, i64) = match self {
            Db::Sqlite(c) => h::ledger_head.find(1).select(cols).get_result(c),
            Db::Pg(c) => h::ledger_head.find(1).select(cols).for_update().get_result(c),
        }
        .map_err(storage)?;
        Ok(Head { last_seq: row.0, last_time_us: row.1, tree_size: row.2 })
    }

    /// Moves the head from `old` to `new`; exactly one row must change.
    pub fn advance_head(&mut self, old: Head, new: Head) -> Result<(), LedgerError> {
        use ledger_head::dsl as h;
        let changed =
            on_db!(self, |c| diesel::update(h::ledger_head.filter(h::id.eq(1).and(h::last_seq.eq(old.last_seq))))
                .set((
                    h::last_seq.eq(new.last_seq),
                    h::last_time_us.eq(new.last_time_us),
                    h::tree_size.eq(new.tree_size)
                ))
                .execute(c))
            .map_err(storage)?;
        if changed == 1 {
            Ok(())
        } else {
            Err(storage("ledger head moved under the write lock"))
        }
    }
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// Whether every embedded PostgreSQL migration is recorded as applied, by reading diesel's
/// bookkeeping table (absent: nothing applied).
fn pg_is_migrated(c: &mut PgConnection) -> Result<bool, LedgerError> {
    use diesel::migration::MigrationSource;
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let table: Exists = diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS exists")
        .get_result(c)
        .map_err(storage)?;
    if !table.exists {
        return Ok(false);
    }
    let applied: HashSet<String> = diesel::sql_query("SELECT version::text AS version FROM __diesel_schema_migrations")
        .load::<VersionRow>(c)
        .map_err(storage)?
        .into_iter()
        .map(|r| r.version)
        .collect();
    let embedded = MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS)
        .map_err(|e| LedgerError::Migration(e.to_string()))?;
    Ok(embedded.iter().all(|m| applied.contains(&m.name().version().to_string())))
}

/// The ledger head as read under the write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub last_seq: i64,
    pub last_time_us: i64,
    /// Leaves in the audit log.
    pub tree_size: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = accounts)]
struct AccountRow {
    id: i64,
    kind: String,
    currency: String,
    name: String,
    never_negative: bool,
    balance_max_minor: Option<i64>,
    created_at_us: i64,
}

impl AccountRow {
    fn into_account(self) -> Result<Account, LedgerError> {
        Ok(Account {
            id: AccountId(self.id),
            kind: AccountKind::parse(&self.kind).ok_or_else(|| corrupt("account kind", &self.kind))?,
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("currency", &self.currency))?,
            name: self.name,
            never_negative: self.never_negative,
            balance_max_minor: self.balance_max_minor,
            created_at_us: self.created_at_us,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = accounts)]
struct NewAccountRow<'a> {
    kind: &'a str,
    currency: &'a str,
    name: &'a str,
    never_negative: bool,
    balance_max_minor: Option<i64>,
    created_at_us: i64,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = journal_entries, treat_none_as_default_value = false)]
struct EntryRow {
    seq: i64,
    kind: String,
    time_us: i64,
    currency: String,
    amount_minor: i64,
    fee_minor: i64,
    account_id: Option<i64>,
    counterparty_id: Option<i64>,
    related_seq: Option<i64>,
    expires_at_us: Option<i64>,
    terminal_id: Option<String>,
    card_id: Option<i64>,
    card_read_counter: Option<i64>,
    merchant_reference: Option<String>,
    memo: Option<String>,
    idempotency_key: Option<String>,
    request_hash: Option<Vec<u8>>,
    leaf_index: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = postings, treat_none_as_default_value = false)]
struct PostingRow {
    entry_seq: i64,
    leg: i32,
    account_id: i64,
    amount_minor: i64,
    balance_after_minor: i64,
}

pub(super) fn corrupt(what: &str, value: &str) -> LedgerError {
    LedgerError::Invariant(format!("unexpected {what} {value:?} in the database"))
}

impl EntryRow {
    fn of(e: &Entry) -> EntryRow {
        let r = &e.references;
        EntryRow {
            seq: e.seq,
            kind: e.kind.as_str().to_owned(),
            time_us: e.time_us,
            currency: e.currency.code().to_owned(),
            amount_minor: e.amount_minor,
            fee_minor: e.fee_minor,
            account_id: e.account_id.map(|a| a.0),
            counterparty_id: e.counterparty_id.map(|a| a.0),
            related_seq: e.related_seq,
            expires_at_us: e.expires_at_us,
            terminal_id: r.terminal_id.clone(),
            card_id: r.card_id,
            card_read_counter: r.card_read_counter,
            merchant_reference: r.merchant_reference.clone(),
            memo: r.memo.clone(),
            idempotency_key: e.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            request_hash: e.request_hash.map(|h| h.to_vec()),
            leaf_index: e.audit.map(|a| a.leaf_index),
        }
    }

    fn into_entry(self, postings: Vec<Posting>, leaf_hash: Option<[u8; 32]>) -> Result<Entry, LedgerError> {
        let request_hash = match self.request_hash {
            Some(h) => Some(<[u8; 32]>::try_from(h.as_slice()).map_err(|_| corrupt("request hash", "?"))?),
            None => None,
        };
        let idempotency_key = match self.idempotency_key {
            Some(k) => Some(IdempotencyKey::parse(&k).map_err(|_| corrupt("idempotency key", &k))?),
            None => None,
        };
        Ok(Entry {
            seq: self.seq,
            kind: EntryKind::parse(&self.kind).ok_or_else(|| corrupt("entry kind", &self.kind))?,
            time_us: self.time_us,
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("currency", &self.currency))?,
            amount_minor: self.amount_minor,
            fee_minor: self.fee_minor,
            account_id: self.account_id.map(AccountId),
            counterparty_id: self.counterparty_id.map(AccountId),
            related_seq: self.related_seq,
            expires_at_us: self.expires_at_us,
            references: References {
                terminal_id: self.terminal_id,
                card_id: self.card_id,
                card_read_counter: self.card_read_counter,
                merchant_reference: self.merchant_reference,
                memo: self.memo,
            },
            idempotency_key,
            request_hash,
            postings,
            audit: self.leaf_index.zip(leaf_hash).map(|(leaf_index, leaf_hash)| AuditRef { leaf_index, leaf_hash }),
        })
    }
}

#[derive(QueryableByName)]
struct BalanceRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    account_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    balance_after_minor: i64,
}

/// Reads and writes. Each takes the connection it runs on.
impl Db {
    /// Creates accounts in one transaction (all or none).
    pub fn create_accounts(&mut self, new: &[NewAccount], now_us: i64) -> Result<Vec<Account>, LedgerError> {
        self.transaction(|db| new.iter().map(|n| db.create_account(n, now_us)).collect())
    }

    pub fn create_account(&mut self, new: &NewAccount, now_us: i64) -> Result<Account, LedgerError> {
        let row = NewAccountRow {
            kind: new.kind.as_str(),
            currency: new.currency.code(),
            name: &new.name,
            never_negative: new.kind.never_negative(),
            balance_max_minor: new.balance_max_minor,
            created_at_us: now_us,
        };
        let created: AccountRow = on_db!(self, |c| diesel::insert_into(accounts::table)
            .values(&row)
            .returning(AccountRow::as_returning())
            .get_result(c))
        .map_err(storage)?;
        created.into_account()
    }

    /// The system account of `kind` in `currency`, created if it does not exist yet (safe
    /// when several processes race: the unique index decides, everyone reads the winner).
    pub fn system_account(
        &mut self,
        kind: AccountKind,
        currency: Currency,
        now_us: i64,
    ) -> Result<Account, LedgerError> {
        let row = NewAccountRow {
            kind: kind.as_str(),
            currency: currency.code(),
            name: &format!("{} {}", kind.as_str(), currency),
            never_negative: kind.never_negative(),
            balance_max_minor: None,
            created_at_us: now_us,
        };
        on_db!(self, |c| diesel::insert_into(accounts::table).values(&row).on_conflict_do_nothing().execute(c))
            .map_err(storage)?;
        let found: AccountRow = on_db!(self, |c| accounts::table
            .filter(accounts::kind.eq(kind.as_str()).and(accounts::currency.eq(currency.code())))
            .select(AccountRow::as_select())
            .get_result(c))
        .map_err(storage)?;
        found.into_account()
    }

    pub fn accounts(&mut self, ids: &[AccountId]) -> Result<Vec<Account>, LedgerError> {
        // The writer calls this every batch; with a warm cache there is nothing to load.
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|a| a.0).collect();
        let rows: Vec<AccountRow> =
            on_db!(self, |c| accounts::table.filter(accounts::id.eq_any(&ids)).select(AccountRow::as_select()).load(c))
                .map_err(storage)?;
        rows.into_iter().map(AccountRow::into_account).collect()
    }

    /// The balance after the latest posting of each account (accounts without postings are
    /// left out: their balance is zero).
    pub fn balances(&mut self, ids: &[AccountId]) -> Result<HashMap<AccountId, i64>, LedgerError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        // Integers only, so formatting them into the statement is safe.
        let list = ids.iter().map(|a| a.0.to_string()).collect::<Vec<_>>().join(",");
        let sql = format!(
            "SELECT p.account_id, p.balance_after_minor FROM postings p
             WHERE p.account_id IN ({list})
               AND p.entry_seq = (SELECT max(q.entry_seq) FROM postings q WHERE q.account_id = p.account_id)"
        );
        let rows: Vec<BalanceRow> = on_db!(self, |c| diesel::sql_query(&sql).load(c)).map_err(storage)?;
        Ok(rows.into_iter().map(|r| (AccountId(r.account_id), r.balance_after_minor)).collect())
    }

    /// Accounts with their current balances.
    pub fn account_states(&mut self, ids: &[AccountId]) -> Result<Vec<AccountState>, LedgerError> {
        let accounts = self.accounts(ids)?;
        let balances = self.balances(ids)?;
        Ok(accounts
            .into_iter()
            .map(|account| {
                let balance_minor = balances.get(&account.id).copied().unwrap_or(0);
                AccountState { account, balance_minor }
            })
            .collect())
    }

    /// Entries with their postings, in sequence order.
    pub fn entries_by_seq(&mut self, seqs: &[i64]) -> Result<Vec<Entry>, LedgerError> {
        let rows: Vec<EntryRow> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::seq.eq_any(seqs))
            .order(journal_entries::seq)
            .select(EntryRow::as_select())
            .load(c))
        .map_err(storage)?;
        self.with_postings(rows)
    }

    /// Entries written with these idempotency keys.
    pub fn entries_by_key(&mut self, keys: &[&str]) -> Result<Vec<Entry>, LedgerError> {
        let rows: Vec<EntryRow> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::idempotency_key.eq_any(keys))
            .select(EntryRow::as_select())
            .load(c))
        .map_err(storage)?;
        self.with_postings(rows)
    }

    /// Entries with `from <= seq`, at most `limit`, in sequence order.
    pub fn entries_from(&mut self, from_seq: i64, limit: i64) -> Result<Vec<Entry>, LedgerError> {
        let rows: Vec<EntryRow> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::seq.ge(from_seq))
            .order(journal_entries::seq)
            .limit(limit)
            .select(EntryRow::as_select())
            .load(c))
        .map_err(storage)?;
        self.with_postings(rows)
    }

    fn with_postings(&mut self, rows: Vec<EntryRow>) -> Result<Vec<Entry>, LedgerError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let posting_rows: Vec<(PostingRow, String)> = on_db!(self, |c| postings::table
            .inner_join(accounts::table)
            .filter(postings::entry_seq.eq_any(&seqs))
            .order((postings::entry_seq, postings::leg))
            .select((PostingRow::as_select(), accounts::currency))
            .load(c))
        .map_err(storage)?;
        let mut by_seq: HashMap<i64, Vec<Posting>> = HashMap::new();
        for (p, currency) in posting_rows {
            by_seq.entry(p.entry_seq).or_default().push(Posting {
                account_id: AccountId(p.account_id),
                currency: Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?,
                amount_minor: p.amount_minor,
                balance_after_minor: p.balance_after_minor,
            });
        }
        let leaf_indexes: Vec<i64> = rows.iter().filter_map(|r| r.leaf_index).collect();
        let hashes = self.leaf_hashes(&leaf_indexes)?;
        rows.into_iter()
            .map(|r| {
                let postings = by_seq.remove(&r.seq).unwrap_or_default();
                let hash = r.leaf_index.and_then(|i| hashes.get(&i).copied());
                r.into_entry(postings, hash)
            })
            .collect()
    }

    pub(super) fn leaf_hashes(&mut self, indexes: &[i64]) -> Result<HashMap<i64, [u8; 32]>, LedgerError> {
        if indexes.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(i64, Vec<u8>)> = on_db!(self, |c| audit_leaves::table
            .filter(audit_leaves::leaf_index.eq_any(indexes))
            .select((audit_leaves::leaf_index, audit_leaves::leaf_hash))
            .load(c))
        .map_err(storage)?;
        rows.into_iter().map(|(i, h)| Ok((i, hash32(&h)?))).collect()
    }

    /// Entries of `kinds` that refer to one of `seqs`: `(related_seq, amount_minor)`.
    fn related(&mut self, seqs: &[i64], kinds: &[&str]) -> Result<Vec<(i64, i64)>, LedgerError> {
        let rows: Vec<(Option<i64>, i64)> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::related_seq.eq_any(seqs))
            .filter(journal_entries::kind.eq_any(kinds))
            .select((journal_entries::related_seq, journal_entries::amount_minor))
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().filter_map(|(s, a)| s.map(|s| (s, a))).collect())
    }

    /// The holds among `seqs`, and whether each was captured or voided since.
    pub fn holds(&mut self, seqs: &[i64]) -> Result<HashMap<i64, HoldState>, LedgerError> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let closed: HashSet<i64> = self.related(seqs, &["capture", "void"])?.into_iter().map(|(s, _)| s).collect();
        let mut out = HashMap::new();
        for e in self.entries_by_seq(seqs)?.into_iter().filter(|e| e.kind == EntryKind::Hold) {
            let (Some(wallet), Some(merchant), Some(expires_at_us), Some(holds)) =
                (e.account_id, e.counterparty_id, e.expires_at_us, e.postings.get(1))
            else {
                return Err(corrupt("hold entry", &e.seq.to_string()));
            };
            out.insert(
                e.seq,
                HoldState {
                    wallet,
                    merchant,
                    holds_account: holds.account_id,
                    currency: e.currency,
                    amount_minor: e.amount_minor,
                    expires_at_us,
                    closed: closed.contains(&e.seq),
                },
            );
        }
        Ok(out)
    }

    /// The payments among `seqs`, with how much of each was refunded.
    pub fn payments(&mut self, seqs: &[i64]) -> Result<HashMap<i64, PaymentState>, LedgerError> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let mut refunded: HashMap<i64, i64> = HashMap::new();
        for (seq, amount) in self.related(seqs, &["refund"])? {
            *refunded.entry(seq).or_default() += amount;
        }
        let shortfalls = self.payment_shortfalls(seqs)?;
        let mut out = HashMap::new();
        // A capture is the merchant's payment of a hold, refunded like a payment.
        for e in
            self.entries_by_seq(seqs)?.into_iter().filter(|e| matches!(e.kind, EntryKind::Payment | EntryKind::Capture))
        {
            let (Some(wallet), Some(merchant)) = (e.account_id, e.counterparty_id) else {
                return Err(corrupt("payment entry", &e.seq.to_string()));
            };
            // The fee leg, when there is one: the credit of the fee to an account that is
            // neither the wallet nor the merchant (zero legs are not posted, and an offline
            // payment has a shortfall leg, so it is found by role, not by position).
            let fee_account = e
                .postings
                .iter()
                .find(|p| {
                    p.amount_minor > 0
                        && p.amount_minor == e.fee_minor
                        && p.account_id != merchant
                        && p.account_id != wallet
                })
                .map(|p| p.account_id);
            out.insert(
                e.seq,
                PaymentState {
                    wallet,
                    merchant,
                    fee_account: fee_account.unwrap_or(merchant),
                    currency: e.currency,
                    amount_minor: e.amount_minor,
                    fee_minor: e.fee_minor,
                    refunded_minor: refunded.get(&e.seq).copied().unwrap_or(0),
                    shortfall_outstanding: shortfalls.get(&e.seq).copied().unwrap_or(0).max(0),
                },
            );
        }
        Ok(out)
    }

    /// Writes entries and their postings.
    pub fn insert_entries(&mut self, entries: &[Entry]) -> Result<(), LedgerError> {
        let entry_rows: Vec<EntryRow> = entries.iter().map(EntryRow::of).collect();
        let posting_rows: Vec<PostingRow> = entries
            .iter()
            .flat_map(|e| {
                e.postings.iter().enumerate().map(|(leg, p)| PostingRow {
                    entry_seq: e.seq,
                    leg: leg as i32,
                    account_id: p.account_id.0,
                    amount_minor: p.amount_minor,
                    balance_after_minor: p.balance_after_minor,
                })
            })
            .collect();
        match self {
            // SQLite runs in-process: one cached prepared statement per table, run per row,
            // is cheaper than preparing a new multi-row statement every batch.
            Db::Sqlite(c) => {
                for row in &entry_rows {
                    diesel::insert_into(journal_entries::table).values(row).execute(c).map_err(storage)?;
                }
                for row in &posting_rows {
                    diesel::insert_into(postings::table).values(row).execute(c).map_err(storage)?;
                }
            }
            // PostgreSQL is a round trip away: binary COPY, one per table and batch.
            Db::Pg(c) => {
                diesel::copy_from(journal_entries::table).from_insertable(&entry_rows).execute(c).map_err(storage)?;
                diesel::copy_from(postings::table).from_insertable(&posting_rows).execute(c).map_err(storage)?;
            }
        }
        Ok(())
    }
}

#[derive(QueryableByName)]
struct TrialRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    currency: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    total: i64,
}

/// Reads for statements, audits and maintenance.
impl Db {
    pub fn last_seq(&mut self) -> Result<i64, LedgerError> {
        on_db!(self, |c| ledger_head::table.find(1).select(ledger_head::last_seq).get_result(c)).map_err(storage)
    }

    /// The last entry recorded at or before `time_us`, or 0.
    pub fn seq_at(&mut self, time_us: i64) -> Result<i64, LedgerError> {
        let max: Option<i64> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::time_us.le(time_us))
            .select(diesel::dsl::max(journal_entries::seq))
            .get_result(c))
        .map_err(storage)?;
        Ok(max.unwrap_or(0))
    }

    pub fn balance_at(&mut self, id: AccountId, time_us: i64) -> Result<i64, LedgerError> {
        let seq = self.seq_at(time_us)?;
        let balance: Option<i64> = on_db!(self, |c| postings::table
            .filter(postings::account_id.eq(id.0).and(postings::entry_seq.le(seq)))
            .order(postings::entry_seq.desc())
            .select(postings::balance_after_minor)
            .first(c)
            .optional())
        .map_err(storage)?;
        Ok(balance.unwrap_or(0))
    }

    /// The entries posting to an account: after `after_seq` ascending, or (when
    /// `newest_first`) before `after_seq` descending (0 = from the newest).
    pub fn account_entries(
        &mut self,
        id: AccountId,
        after_seq: i64,
        limit: i64,
        newest_first: bool,
    ) -> Result<Vec<Entry>, LedgerError> {
        let seqs: Vec<i64> = if newest_first {
            let before = if after_seq <= 0 { i64::MAX } else { after_seq };
            on_db!(self, |c| postings::table
                .filter(postings::account_id.eq(id.0).and(postings::entry_seq.lt(before)))
                .order(postings::entry_seq.desc())
                .limit(limit)
                .select(postings::entry_seq)
                .load(c))
        } else {
            on_db!(self, |c| postings::table
                .filter(postings::account_id.eq(id.0).and(postings::entry_seq.gt(after_seq)))
                .order(postings::entry_seq)
                .limit(limit)
                .select(postings::entry_seq)
                .load(c))
        }
        .map_err(storage)?;
        let mut seqs = seqs;
        seqs.dedup();
        let mut entries = self.entries_by_seq(&seqs)?;
        if newest_first {
            entries.reverse();
        }
        Ok(entries)
    }

    pub fn statement_lines(
        &mut self,
        id: AccountId,
        from_us: i64,
        to_us: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<crate::ledger::StatementLine>, LedgerError> {
        let rows: Vec<(i64, i64, String, i64, i64)> = on_db!(self, |c| postings::table
            .inner_join(journal_entries::table)
            .filter(postings::account_id.eq(id.0))
            .filter(journal_entries::time_us.ge(from_us).and(journal_entries::time_us.lt(to_us)))
            .filter(postings::entry_seq.gt(after_seq))
            .order((postings::entry_seq, postings::leg))
            .limit(limit)
            .select((
                postings::entry_seq,
                journal_entries::time_us,
                journal_entries::kind,
                postings::amount_minor,
                postings::balance_after_minor,
            ))
            .load(c))
        .map_err(storage)?;
        rows.into_iter()
            .map(|(entry_seq, time_us, kind, amount_minor, balance_after_minor)| {
                Ok(crate::ledger::StatementLine {
                    entry_seq,
                    time_us,
                    kind: EntryKind::parse(&kind).ok_or_else(|| corrupt("entry kind", &kind))?,
                    amount_minor,
                    balance_after_minor,
                })
            })
            .collect()
    }

    pub fn trial_balance(&mut self) -> Result<Vec<crate::ledger::TrialBalanceLine>, LedgerError> {
        let balances = "SELECT a.currency AS currency, CAST(COALESCE(SUM(p.balance_after_minor), 0) AS BIGINT) AS total
             FROM accounts a JOIN postings p ON p.account_id = a.id
             WHERE p.entry_seq = (SELECT max(q.entry_seq) FROM postings q WHERE q.account_id = a.id)
             GROUP BY a.currency";
        let debits = "SELECT a.currency AS currency, CAST(COALESCE(SUM(-p.amount_minor), 0) AS BIGINT) AS total
             FROM accounts a JOIN postings p ON p.account_id = a.id WHERE p.amount_minor < 0 GROUP BY a.currency";
        let credits = "SELECT a.currency AS currency, CAST(COALESCE(SUM(p.amount_minor), 0) AS BIGINT) AS total
             FROM accounts a JOIN postings p ON p.account_id = a.id WHERE p.amount_minor > 0 GROUP BY a.currency";
        let mut lines: std::collections::BTreeMap<String, [i64; 3]> = Default::default();
        for (i, sql) in [balances, debits, credits].into_iter().enumerate() {
            let rows: Vec<TrialRow> = on_db!(self, |c| diesel::sql_query(sql).load(c)).map_err(storage)?;
            for r in rows {
                lines.entry(r.currency).or_default()[i] = r.total;
            }
        }
        lines
            .into_iter()
            .map(|(code, [balances_sum_minor, debits_minor, credits_minor])| {
                Ok(crate::ledger::TrialBalanceLine {
                    currency: Currency::parse(&code).map_err(|_| corrupt("currency", &code))?,
                    balances_sum_minor,
                    debits_minor,
                    credits_minor,
                })
            })
            .collect()
    }

    /// Holds that expired at or before `now_us` and are neither captured nor voided.
    pub fn expired_open_holds(&mut self, now_us: i64, limit: i64) -> Result<Vec<i64>, LedgerError> {
        let candidates: Vec<i64> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::kind.eq("hold"))
            .filter(journal_entries::expires_at_us.le(now_us))
            .order(journal_entries::seq)
            .select(journal_entries::seq)
            .load(c))
        .map_err(storage)?;
        let closed: HashSet<i64> =
            self.related(&candidates, &["capture", "void"])?.into_iter().map(|(s, _)| s).collect();
        Ok(candidates.into_iter().filter(|s| !closed.contains(s)).take(limit as usize).collect())
    }
}

pub(super) fn hash32(bytes: &[u8]) -> Result<[u8; 32], LedgerError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| corrupt("hash", &hex::encode(bytes)))
}

/// A leaf of the audit log as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_leaves, treat_none_as_default_value = false)]
pub struct LeafRow {
    /// 0-based position in the log.
    pub leaf_index: i64,
    /// What the leaf records (`entry`, later `access`, `operator`).
    pub kind: String,
    /// The canonical bytes.
    pub leaf: Vec<u8>,
    /// SHA-256(0x00 || leaf).
    pub leaf_hash: Vec<u8>,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = checkpoints)]
pub struct CheckpointRow {
    /// The tree size it commits to.
    pub tree_size: i64,
    /// The root hash at that size.
    pub root: Vec<u8>,
    /// When it was made, µs.
    pub time_us: i64,
    /// The whole signed note.
    pub note: String,
}

#[derive(Insertable)]
#[diesel(table_name = merkle_nodes, treat_none_as_default_value = false)]
struct NodeRow {
    level: i32,
    idx: i64,
    hash: Vec<u8>,
}

#[derive(QueryableByName)]
struct NodeHashRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    level: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    idx: i64,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    hash: Vec<u8>,
}

/// The audit log's storage.
impl Db {
    pub fn insert_leaves(&mut self, leaves: &[LeafRow]) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(c) => {
                for row in leaves {
                    diesel::insert_into(audit_leaves::table).values(row).execute(c).map_err(storage)?;
                }
            }
            Db::Pg(c) => {
                diesel::copy_from(audit_leaves::table).from_insertable(leaves).execute(c).map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Stores the perfect-subtree hashes of level [`NODE_LEVEL_STORED_MIN`] and up; lower
    /// levels are folded from the leaf hashes in `audit_leaves` when read.
    pub fn insert_nodes(&mut self, nodes: &[merkle::Node]) -> Result<(), LedgerError> {
        let rows: Vec<NodeRow> = nodes
            .iter()
            .filter(|n| n.coord.level >= NODE_LEVEL_STORED_MIN)
            .map(|n| NodeRow { level: i32::from(n.coord.level), idx: n.coord.index as i64, hash: n.hash.to_vec() })
            .collect();
        match self {
            Db::Sqlite(c) => {
                for row in &rows {
                    diesel::insert_into(merkle_nodes::table).values(row).execute(c).map_err(storage)?;
                }
            }
            Db::Pg(c) => {
                diesel::copy_from(merkle_nodes::table).from_insertable(&rows).execute(c).map_err(storage)?;
            }
        }
        Ok(())
    }

    /// The hashes of these perfect subtrees: one query for the leaf hashes (levels below
    /// [`NODE_LEVEL_STORED_MIN`] are folded from them) and one for the stored nodes.
    pub fn nodes(&mut self, coords: &[merkle::NodeCoord]) -> Result<HashMap<merkle::NodeCoord, [u8; 32]>, LedgerError> {
        let mut out = HashMap::with_capacity(coords.len());
        let low: Vec<merkle::NodeCoord> = coords.iter().filter(|c| c.level < NODE_LEVEL_STORED_MIN).copied().collect();
        let leaves: Vec<i64> = low
            .iter()
            .flat_map(|c| {
                let width = 1u64 << c.level;
                (c.index * width..(c.index + 1) * width).map(|i| i as i64)
            })
            .collect();
        let hashes = self.leaf_hashes(&leaves)?;
        for c in low {
            let width = 1u64 << c.level;
            let mut level: Vec<[u8; 32]> = (c.index * width..(c.index + 1) * width)
                .map(|i| hashes.get(&(i as i64)).copied().ok_or_else(|| corrupt("missing leaf", &i.to_string())))
                .collect::<Result<_, _>>()?;
            while level.len() > 1 {
                level = level.chunks(2).map(|p| merkle::node_hash(&p[0], &p[1])).collect();
            }
            out.insert(c, level[0]);
        }
        let upper: Vec<String> = coords
            .iter()
            .filter(|c| c.level >= NODE_LEVEL_STORED_MIN)
            .map(|c| format!("(level = {} AND idx = {})", c.level, c.index))
            .collect();
        if !upper.is_empty() {
            // Integers only, so formatting them into the statement is safe.
            let sql = format!("SELECT level, idx, hash FROM merkle_nodes WHERE {}", upper.join(" OR "));
            let rows: Vec<NodeHashRow> = on_db!(self, |c| diesel::sql_query(&sql).load(c)).map_err(storage)?;
            for r in rows {
                let level = u8::try_from(r.level).map_err(|_| corrupt("node level", &r.level.to_string()))?;
                out.insert(merkle::NodeCoord::new(level, r.idx as u64), hash32(&r.hash)?);
            }
        }
        Ok(out)
    }

    pub fn tree_size(&mut self) -> Result<i64, LedgerError> {
        on_db!(self, |c| ledger_head::table.find(1).select(ledger_head::tree_size).get_result(c)).map_err(storage)
    }

    pub fn leaves(&mut self, from: i64, limit: i64) -> Result<Vec<LeafRow>, LedgerError> {
        on_db!(self, |c| audit_leaves::table
            .filter(audit_leaves::leaf_index.ge(from))
            .order(audit_leaves::leaf_index)
            .limit(limit)
            .select(LeafRow::as_select())
            .load(c))
        .map_err(storage)
    }

    pub fn latest_checkpoint(&mut self) -> Result<Option<CheckpointRow>, LedgerError> {
        on_db!(self, |c| checkpoints::table
            .order(checkpoints::tree_size.desc())
            .select(CheckpointRow::as_select())
            .first(c)
            .optional())
        .map_err(storage)
    }

    /// Checkpoints with `tree_size > after`, in size order, at most `limit`.
    pub fn checkpoints(&mut self, after: i64, limit: i64) -> Result<Vec<CheckpointRow>, LedgerError> {
        on_db!(self, |c| checkpoints::table
            .filter(checkpoints::tree_size.gt(after))
            .order(checkpoints::tree_size)
            .limit(limit)
            .select(CheckpointRow::as_select())
            .load(c))
        .map_err(storage)
    }

    /// Stores a checkpoint unless one of that size exists (several processes may race).
    pub fn insert_checkpoint(&mut self, row: &CheckpointRow) -> Result<(), LedgerError> {
        on_db!(self, |c| diesel::insert_into(checkpoints::table).values(row).on_conflict_do_nothing().execute(c))
            .map_err(storage)?;
        Ok(())
    }

    /// Every account (for the auditor: kinds and currencies).
    pub fn all_accounts(&mut self) -> Result<Vec<Account>, LedgerError> {
        let rows: Vec<AccountRow> =
            on_db!(self, |c| accounts::table.order(accounts::id).select(AccountRow::as_select()).load(c))
                .map_err(storage)?;
        rows.into_iter().map(AccountRow::into_account).collect()
    }
}

#[cfg(test)]
mod classification_tests {
    use super::storage;
    use crate::LedgerError;

    fn check(message: &str, full: bool) {
        let e = storage(message);
        assert_eq!(matches!(e, LedgerError::Full(_)), full, "{message} → {e:?}");
        assert!(matches!(e, LedgerError::Full(_) | LedgerError::Storage(_)), "{e:?}");
    }

    /// The messages each backend gives for a full disk (SQLite's SQLITE_FULL text; the
    /// PostgreSQL server's for SQLSTATE 53100), and failures that are not a full disk.
    #[test]
    fn a_full_disk_is_classified_once() {
        check("database or disk is full", true);
        check(r#"could not extend file "base/16384/16385": No space left on device"#, true);
        check(r#"could not write to file "pg_wal/xlogtemp.123": No space left on device"#, true);
        check("database is locked", false);
        check("server closed the connection unexpectedly", false);
        check("duplicate key value violates unique constraint \"entries_pkey\"", false);
    }
}
