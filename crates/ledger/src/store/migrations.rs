//! Migrations: the embedded diesel migrations of both backends, applying them, and the
//! read-only check that a database is migrated (the serving role may create nothing).

use std::collections::HashSet;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{roles, storage, Db};
use crate::LedgerError;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

impl Db {
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
