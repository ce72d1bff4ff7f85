//! `store/schema.rs` (what diesel's queries are typed with) against the tables the
//! migrations make, on each backend: every table and column, its type and whether it may
//! be NULL. A migration that adds a column the schema forgets, or a schema edit no
//! migration makes, fails here instead of at the first query that meets it.

use std::collections::BTreeMap;

use diesel::connection::SimpleConnection as _;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};
use ledger::Backend;

use crate::support::TestDb;

type TestResult = Result<(), String>;

/// A column as declared or as found: its SQL type family and whether it may be NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    family: &'static str,
    nullable: bool,
}

type Tables = BTreeMap<String, BTreeMap<String, Column>>;

/// The diesel type of `schema.rs` as a family both backends' types map to.
fn diesel_family(ty: &str) -> Result<(&'static str, bool), String> {
    let (inner, nullable) = match ty.strip_prefix("Nullable<").and_then(|t| t.strip_suffix('>')) {
        Some(inner) => (inner, true),
        None => (ty, false),
    };
    let family = match inner {
        "BigInt" => "int64",
        "Integer" => "int32",
        "Text" => "text",
        "Bool" => "bool",
        "Binary" => "bytes",
        other => return Err(format!("schema.rs uses {other}, which this test does not map yet")),
    };
    Ok((family, nullable))
}

/// The tables of `schema.rs`, read from its `diesel::table!` blocks.
fn declared() -> Result<Tables, String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/schema.rs"))
        .map_err(|e| format!("reading schema.rs: {e}"))?;
    let mut tables = Tables::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_suffix('{').and_then(|h| h.split_once(" (")).map(|(n, _)| n.trim()) {
            if line.starts_with("    ") && !line.starts_with("        ") {
                current = Some(name.to_owned());
                tables.entry(name.to_owned()).or_default();
                continue;
            }
        }
        if let (Some(table), Some((col, ty))) = (&current, t.strip_suffix(',').and_then(|c| c.split_once(" -> "))) {
            let (family, nullable) = diesel_family(ty.trim())?;
            tables.entry(table.clone()).or_default().insert(col.trim().to_owned(), Column { family, nullable });
        } else if t == "}" && line.starts_with("    }") {
            current = None;
        }
    }
    Ok(tables)
}

#[derive(QueryableByName)]
struct PgColumn {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    data_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    is_nullable: String,
}

#[derive(QueryableByName)]
struct SqliteColumn {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    type_name: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    notnull: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pk: i32,
}

fn sql_family(backend: Backend, ty: &str) -> Result<&'static str, String> {
    Ok(match (backend, ty.to_ascii_lowercase().as_str()) {
        (_, "bigint") | (Backend::Sqlite, "integer") => "int64",
        (Backend::Postgres, "integer") => "int32",
        (_, "text") => "text",
        (_, "boolean") => "bool",
        (Backend::Sqlite, "blob") | (Backend::Postgres, "bytea") => "bytes",
        (_, other) => return Err(format!("{backend:?} column type {other} is not mapped")),
    })
}

/// The tables the migrations made, as the database describes them.
fn migrated(db: &TestDb) -> Result<Tables, String> {
    let mut tables = Tables::new();
    let s = |e: diesel::result::Error| e.to_string();
    match db.backend {
        Backend::Postgres => {
            let mut c = PgConnection::establish(&db.url).map_err(|e| e.to_string())?;
            let rows: Vec<PgColumn> = diesel::sql_query(
                "SELECT table_name::text AS table_name, column_name::text AS column_name, \
                 data_type::text AS data_type, is_nullable::text AS is_nullable \
                 FROM information_schema.columns WHERE table_schema = 'public' \
                 AND table_name <> '__diesel_schema_migrations'",
            )
            .load(&mut c)
            .map_err(s)?;
            for r in rows {
                let column = Column { family: sql_family(db.backend, &r.data_type)?, nullable: r.is_nullable == "YES" };
                tables.entry(r.table_name).or_default().insert(r.column_name, column);
            }
        }
        Backend::Sqlite => {
            let mut c =
                SqliteConnection::establish(db.url.trim_start_matches("sqlite://")).map_err(|e| e.to_string())?;
            c.batch_execute("SELECT 1").map_err(s)?;
            let rows: Vec<SqliteColumn> = diesel::sql_query(
                "SELECT m.name AS table_name, p.name AS name, p.type AS type_name, p.\"notnull\" AS \"notnull\", p.pk AS pk \
                 FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '__diesel_schema_migrations'",
            )
            .load(&mut c)
            .map_err(s)?;
            for r in rows {
                // An INTEGER PRIMARY KEY is the rowid: never NULL, whatever the pragma says.
                let nullable = r.notnull == 0 && r.pk == 0;
                let column = Column { family: sql_family(db.backend, &r.type_name)?, nullable };
                tables.entry(r.table_name).or_default().insert(r.name, column);
            }
        }
    }
    Ok(tables)
}

/// Lists every difference, table by table and column by column.
fn differences(declared: &Tables, migrated: &Tables) -> Vec<String> {
    let mut out = Vec::new();
    for (table, columns) in declared {
        let Some(found) = migrated.get(table) else {
            out.push(format!("table {table} is in schema.rs but no migration makes it"));
            continue;
        };
        for (name, column) in columns {
            match found.get(name) {
                None => out.push(format!("{table}.{name} is in schema.rs but not in the database")),
                Some(f) if f != column => {
                    out.push(format!("{table}.{name}: schema.rs says {column:?}, the database {f:?}"))
                }
                Some(_) => {}
            }
        }
        for name in found.keys().filter(|n| !columns.contains_key(*n)) {
            out.push(format!("{table}.{name} is in the database but not in schema.rs"));
        }
    }
    for table in migrated.keys().filter(|t| !declared.contains_key(*t)) {
        out.push(format!("table {table} is in the database but not in schema.rs"));
    }
    out
}

/// schema.rs equals what the migrations make.
pub fn schema_equals_migrations(backend: Backend) -> TestResult {
    let mut declared = declared()?;
    if backend == Backend::Sqlite {
        // SQLite has one INTEGER type, 64 bits wide: diesel's Integer and BigInt both read it.
        for c in declared.values_mut().flat_map(|t| t.values_mut()).filter(|c| c.family == "int32") {
            c.family = "int64";
        }
    }
    if declared.len() < 10 {
        return Err(format!("read only {} tables from schema.rs: the reader is broken", declared.len()));
    }
    let db = TestDb::fresh(backend)?;
    let found = migrated(&db)?;
    let diff = differences(&declared, &found);
    if !diff.is_empty() {
        return Err(format!("schema.rs and the migrations disagree on {backend:?}:\n{}", diff.join("\n")));
    }
    // The comparison can fail: one changed column is one difference.
    let mut changed = declared.clone();
    if let Some(c) = changed.get_mut("cards").and_then(|t| t.get_mut("status")) {
        c.nullable = !c.nullable;
    }
    if differences(&changed, &found).len() != 1 {
        return Err("a changed column was not reported".into());
    }
    Ok(())
}
