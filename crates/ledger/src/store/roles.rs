//! Database roles on PostgreSQL (docs/OPERATIONS.md, "Database roles"). The database owner
//! migrates; `kartu serve` connects as a serving role that owns nothing and may do exactly
//! what [`SERVE_GRANTS`] says, table by table, so it cannot disable the journal's triggers,
//! truncate, delete or rewrite it. Every table of the schema must be classified there:
//! granting refuses a table the list does not know (a migration that added one), and a
//! listed table that is missing.
//!
//! SQLite has no roles: whoever can write the file can write anything. There the defence is
//! outside the database (the signer's checkpoint file, and auditors running `audit watch`).

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};

use super::{storage, Db};
use crate::LedgerError;

/// What a table holds, which decides what the serving role may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Evidence: appended, never changed. SELECT and INSERT (triggers reject UPDATE, DELETE
    /// and TRUNCATE as well, and the serving role cannot disable them: it owns nothing).
    Journal,
    /// Registry rows created through the API and never changed: SELECT and INSERT.
    Registry,
    /// Rows the design moves forward in place: SELECT, INSERT where rows are created by the
    /// server, and UPDATE of the listed columns only.
    Moving,
    /// The migrations' bookkeeping: SELECT (to see that the database is migrated).
    Meta,
    /// Written and read by no code any more: nothing.
    Unused,
}

/// What the serving role may do with one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableGrant {
    /// The table.
    pub table: &'static str,
    /// What it holds.
    pub kind: TableKind,
    /// SELECT (whole table).
    pub select: bool,
    /// INSERT (whole table); its id sequence, if any, gets USAGE.
    pub insert: bool,
    /// UPDATE of these columns only (never the whole table).
    pub update: &'static [&'static str],
    /// Why, in a few words.
    pub why: &'static str,
}

const fn journal(table: &'static str, why: &'static str) -> TableGrant {
    TableGrant { table, kind: TableKind::Journal, select: true, insert: true, update: &[], why }
}

const fn registry(table: &'static str, why: &'static str) -> TableGrant {
    TableGrant { table, kind: TableKind::Registry, select: true, insert: true, update: &[], why }
}

const fn moving(table: &'static str, insert: bool, update: &'static [&'static str], why: &'static str) -> TableGrant {
    TableGrant { table, kind: TableKind::Moving, select: true, insert, update, why }
}

/// Every table of the schema and what `kartu serve` may do with it. DELETE, TRUNCATE,
/// REFERENCES, TRIGGER and table-wide UPDATE are granted on none. Worked out from every
/// statement in `store/*.rs`: the UPDATEs are `advance_head`, the card counter upsert,
/// `advance_offline_head`, `set_card_status`, `raise_card_key_version`,
/// `revoke_credential`, `adjustment_posted` and `adjustment_rejected`, `decide_approval`,
/// `set_approval_result`, and the webhook deliveries' and subscriptions' moves
/// (`store/webhooks.rs`); nothing deletes.
pub const SERVE_GRANTS: &[TableGrant] = &[
    journal("accounts", "accounts are created, never changed"),
    journal("journal_entries", "the journal"),
    journal("postings", "the journal's legs"),
    journal("audit_leaves", "the audit log's leaves"),
    journal("merkle_nodes", "the audit log's stored tree nodes"),
    journal("checkpoints", "signed checkpoints"),
    journal("audit_events", "operator actions, refusals, access decisions"),
    journal("card_replays", "refused replays"),
    journal("offline_records", "what became of each uploaded offline record"),
    journal("offline_syncs", "what a terminal received before going offline"),
    journal("offline_payments", "offline payments posted"),
    journal("wallet_debts", "offline debts and their repayments"),
    journal("wallet_successors", "a replaced card's wallet and its successor"),
    registry("holders", "card holders"),
    registry("merchants", "merchants"),
    registry("service_points", "service points"),
    registry("agents", "top-up agents"),
    moving("ledger_head", false, &["last_seq", "last_time_us", "tree_size"], "the one head row, moved by every batch"),
    moving(
        "card_counters",
        true,
        &["last_counter", "time_us"],
        "each card's last read counter (a trigger: forward only)",
    ),
    moving("offline_heads", true, &["last_hash", "last_seq", "updated_at_us"], "each terminal's upload head"),
    moving(
        "cards",
        true,
        &["block_reason", "key_version", "replaced_by", "status", "status_event_id", "updated_at_us"],
        "a card's status (block, unblock, replace) and key version (rotation, upwards only)",
    ),
    moving("credentials", true, &["revoked_at_us", "revoked_event_id"], "revocation"),
    moving("adjustments", true, &["approved_by", "entry_seq", "status"], "pending, then posted or rejected"),
    moving(
        "approvals",
        true,
        &["decided_at_us", "decided_by", "decided_event_id", "decided_person", "result", "status"],
        "pending, then decided, then its result",
    ),
    journal("transit_taps", "every tap at a transit validator, as the writer priced it"),
    journal("transit_entries", "which ride each transit entry belongs to"),
    journal("fare_tables", "the city's fare tables, each in force from its start"),
    registry("transit_routes", "transit operators' routes and their stops"),
    registry("transit_validators", "the route or stop a validator's credential is bound to"),
    journal("webhook_outbox", "what the writer decided that subscribers hear of, in the entry's transaction"),
    journal("webhook_attempts", "every webhook delivery attempt"),
    moving("webhook_subscriptions", true, &["revoked_at_us"], "webhook subscriptions, then revoked"),
    moving(
        "webhook_deliveries",
        true,
        &["attempts", "done_at_us", "lease_until_us", "next_attempt_us", "state"],
        "each delivery: tried, leased, delivered or given up",
    ),
    TableGrant {
        table: "__diesel_schema_migrations",
        kind: TableKind::Meta,
        select: true,
        insert: false,
        update: &[],
        why: "which migrations ran",
    },
    TableGrant {
        table: "card_debts",
        kind: TableKind::Unused,
        select: false,
        insert: false,
        update: &[],
        why: "superseded by wallet_debts (migration 000006)",
    },
];

/// The grant of `table`, if the list classifies it.
pub fn grant_of(table: &str) -> Option<&'static TableGrant> {
    SERVE_GRANTS.iter().find(|g| g.table == table)
}

/// What setting up a serving role did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleReport {
    /// The role.
    pub role: String,
    /// Created now (else it existed).
    pub created: bool,
    /// Its password was set from the file given.
    pub password_set: bool,
    /// It may log in.
    pub can_login: bool,
    /// What was granted and revoked, one line each.
    pub lines: Vec<String>,
}

impl std::fmt::Display for RoleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.created {
            "created (LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION)"
        } else if self.can_login {
            "exists"
        } else {
            "exists, NOLOGIN (serve as a login role that is a member of it)"
        };
        write!(f, "serving role {:?}: {how}", self.role)?;
        if self.password_set {
            write!(f, "; password set")?;
        }
        for l in &self.lines {
            write!(f, "\n  {l}")?;
        }
        Ok(())
    }
}

/// Whether a database user may serve: what it owns and may do beyond [`SERVE_GRANTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCheck {
    /// The connected user.
    pub user: String,
    /// The tables (and sequences) it owns, or whose owner it is a member of.
    pub owned: Vec<String>,
    /// Everything wrong, one sentence each (empty: it may serve).
    pub problems: Vec<String>,
}

impl ServingCheck {
    /// True when the user may serve.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Why `kartu serve` refuses, and the fix.
    pub fn refusal(&self) -> String {
        format!(
            "the database user {:?} must not serve: {}. A server that owns the journal can disable its triggers, \
             truncate it and rewrite it. Serve as the role that `kartu migrate --database-url <owner URL> \
             --serve-role NAME` creates and grants (its URL in kartu.toml's database_url, or --database-url), or, \
             for a laptop demo only, pass --allow-owner (allow_owner = true in kartu.toml)",
            self.user,
            self.problems.join("; ")
        )
    }
}

// ---- SQL ----

#[derive(QueryableByName)]
struct OneText {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(QueryableByName)]
struct MaybeText {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

#[derive(QueryableByName)]
struct RoleRow {
    #[diesel(sql_type = Bool)]
    rolsuper: bool,
    #[diesel(sql_type = Bool)]
    rolbypassrls: bool,
    #[diesel(sql_type = Bool)]
    rolcreaterole: bool,
    #[diesel(sql_type = Bool)]
    rolcanlogin: bool,
    #[diesel(sql_type = Bool)]
    owner_member: bool,
}

#[derive(QueryableByName)]
struct RelRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    owner_table: Option<String>,
}

#[derive(QueryableByName)]
struct PrivRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    sel: bool,
    #[diesel(sql_type = Bool)]
    ins: bool,
    #[diesel(sql_type = Bool)]
    upd: bool,
    #[diesel(sql_type = Bool)]
    del: bool,
    #[diesel(sql_type = Bool)]
    trunc: bool,
    #[diesel(sql_type = Bool)]
    refs: bool,
    #[diesel(sql_type = Bool)]
    trig: bool,
    #[diesel(sql_type = Bool)]
    owns: bool,
    #[diesel(sql_type = Text)]
    update_columns: String,
}

#[derive(QueryableByName)]
struct SeqPrivRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    usage: bool,
    #[diesel(sql_type = Bool)]
    sel: bool,
    #[diesel(sql_type = Bool)]
    upd: bool,
    #[diesel(sql_type = Bool)]
    owns: bool,
    #[diesel(sql_type = Nullable<Text>)]
    owner_table: Option<String>,
}

#[derive(QueryableByName)]
struct UserRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    rolsuper: bool,
    #[diesel(sql_type = Bool)]
    rolbypassrls: bool,
    #[diesel(sql_type = Bool)]
    rolcreaterole: bool,
    #[diesel(sql_type = Bool)]
    schema_create: bool,
}

/// The schema Kartu's tables live in (where `journal_entries` resolves), as a SQL
/// expression for its OID.
const SCHEMA_OID: &str = "(SELECT relnamespace FROM pg_class WHERE oid = to_regclass('journal_entries'))";

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A role name Kartu creates or grants to: lower-case letters, digits and `_`, not
/// starting with a digit, at most 63 bytes (so it needs no quoting in a URL either).
pub fn valid_role_name(name: &str) -> Result<(), LedgerError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(LedgerError::Roles(format!(
            "{name:?} is not a serving role name: use lower-case letters, digits and _ (not starting with a digit \
             or pg_), at most 63"
        )))
    }
}

fn schema_name(c: &mut PgConnection) -> Result<String, LedgerError> {
    let row: MaybeText =
        diesel::sql_query(format!("SELECT (SELECT nspname::text FROM pg_namespace WHERE oid = {SCHEMA_OID}) AS v"))
            .get_result(c)
            .map_err(storage)?;
    row.v.ok_or_else(|| {
        LedgerError::Roles("the database is not migrated (no journal_entries table): run `kartu migrate`".into())
    })
}

fn current_user(c: &mut PgConnection) -> Result<String, LedgerError> {
    let row: OneText = diesel::sql_query("SELECT current_user::text AS v").get_result(c).map_err(storage)?;
    Ok(row.v)
}

/// The tables and sequences of the schema, each sequence with the table that owns it.
fn relations(c: &mut PgConnection) -> Result<Vec<RelRow>, LedgerError> {
    diesel::sql_query(format!(
        "SELECT c.relname::text AS name, c.relkind::text AS kind, t.relname::text AS owner_table
         FROM pg_class c
         LEFT JOIN pg_depend d ON c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
         LEFT JOIN pg_class t ON t.oid = d.refobjid
         WHERE c.relnamespace = {SCHEMA_OID} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
         ORDER BY c.relkind, c.relname"
    ))
    .load(c)
    .map_err(storage)
}

/// The statements that give `role` exactly what [`SERVE_GRANTS`] says, and their report
/// lines. Refuses a table or sequence the list does not classify, and a listed table that
/// does not exist.
fn grant_statements(c: &mut PgConnection, role: &str) -> Result<(Vec<String>, Vec<String>), LedgerError> {
    let schema = schema_name(c)?;
    let rels = relations(c)?;
    let q = |name: &str| format!("{}.{}", quote_ident(&schema), quote_ident(name));
    let r = quote_ident(role);
    let mut unclassified = Vec::new();
    let mut sql = Vec::new();
    for rel in rels.iter().filter(|r| r.kind != "S") {
        match grant_of(&rel.name) {
            None => unclassified.push(format!("table {}", rel.name)),
            Some(g) => {
                sql.push(format!("REVOKE ALL ON TABLE {} FROM {r}", q(g.table)));
                let table_wide: Vec<&str> = [(g.select, "SELECT"), (g.insert, "INSERT")]
                    .into_iter()
                    .filter_map(|(on, p)| on.then_some(p))
                    .collect();
                if !table_wide.is_empty() {
                    sql.push(format!("GRANT {} ON TABLE {} TO {r}", table_wide.join(", "), q(g.table)));
                }
                if !g.update.is_empty() {
                    let cols: Vec<String> = g.update.iter().map(|c| quote_ident(c)).collect();
                    sql.push(format!("GRANT UPDATE ({}) ON TABLE {} TO {r}", cols.join(", "), q(g.table)));
                }
            }
        }
    }
    let mut sequences = Vec::new();
    for seq in rels.iter().filter(|r| r.kind == "S") {
        match seq.owner_table.as_deref().and_then(grant_of) {
            None => unclassified.push(format!("sequence {} (owned by no classified table)", seq.name)),
            Some(g) => {
                sql.push(format!("REVOKE ALL ON SEQUENCE {} FROM {r}", q(&seq.name)));
                if g.insert {
                    sql.push(format!("GRANT USAGE ON SEQUENCE {} TO {r}", q(&seq.name)));
                    sequences.push(seq.name.clone());
                }
            }
        }
    }
    let missing: Vec<&str> = SERVE_GRANTS
        .iter()
        .filter(|g| !rels.iter().any(|r| r.kind != "S" && r.name == g.table))
        .map(|g| g.table)
        .collect();
    if !unclassified.is_empty() || !missing.is_empty() {
        let mut why = Vec::new();
        if !unclassified.is_empty() {
            why.push(format!("not classified: {}", unclassified.join(", ")));
        }
        if !missing.is_empty() {
            why.push(format!("listed but absent: {}", missing.join(", ")));
        }
        return Err(LedgerError::Roles(format!(
            "the serving role's grant list (ledger::roles::SERVE_GRANTS) does not match the schema {schema:?}: {}; \
             a migration changed the tables, so say in the list what `kartu serve` may do with each",
            why.join("; ")
        )));
    }
    Ok((sql, grant_report(sequences.len())))
}

/// The report of what the serving role may do, one line per kind of grant.
fn grant_report(sequences: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let group = |kinds: &[TableKind]| -> Vec<&str> {
        SERVE_GRANTS.iter().filter(|g| kinds.contains(&g.kind)).map(|g| g.table).collect()
    };
    lines.push(format!(
        "SELECT, INSERT (append only) on {}",
        group(&[TableKind::Journal, TableKind::Registry]).join(", ")
    ));
    for g in SERVE_GRANTS.iter().filter(|g| g.kind == TableKind::Moving) {
        let mut privs = vec!["SELECT"];
        if g.insert {
            privs.push("INSERT");
        }
        lines.push(format!("{}, UPDATE ({}) on {}", privs.join(", "), g.update.join(", "), g.table));
    }
    lines.push(format!("SELECT on {}", group(&[TableKind::Meta]).join(", ")));
    lines.push(format!("nothing on {}", group(&[TableKind::Unused]).join(", ")));
    lines.push(format!("USAGE on {} id sequences; DELETE, TRUNCATE, TRIGGER, REFERENCES on no table", sequences));
    lines
}

/// Runs `statements` in one transaction.
fn run_all(c: &mut PgConnection, statements: &[String]) -> Result<(), LedgerError> {
    c.transaction::<_, diesel::result::Error, _>(|c| {
        for s in statements {
            diesel::sql_query(s.as_str()).execute(c)?;
        }
        Ok(())
    })
    .map_err(|e| LedgerError::Roles(format!("granting: {e}")))
}

/// As the tables' owner: creates the serving role `role` if it does not exist (LOGIN,
/// NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION), sets its password when
/// one is given, and grants it exactly [`SERVE_GRANTS`] (revoking anything else it held on
/// the tables). Idempotent. Refuses a role that is a superuser, may bypass row security or
/// create roles, or is (a member of) the tables' owner.
fn setup_pg(c: &mut PgConnection, role: &str, password: Option<&str>) -> Result<RoleReport, LedgerError> {
    valid_role_name(role)?;
    let schema = schema_name(c)?;
    let me = current_user(c)?;
    if me == role {
        return Err(LedgerError::Roles(format!(
            "the serving role must not be the owner {me:?} this connection migrates as: name another role"
        )));
    }
    check_owner(c, &me)?;
    let (created, can_login) = ensure_role(c, role)?;
    let password_set = match password {
        Some(pw) => {
            set_password(c, role, pw)?;
            true
        }
        None => false,
    };
    let mut lines = connect_and_usage(c, role, &schema)?;
    let (sql, grant_lines) = grant_statements(c, role)?;
    run_all(c, &sql)?;
    lines.extend(grant_lines);
    if let Some(line) = revoke_schema_create(c, role, &schema)? {
        lines.push(line);
    }
    Ok(RoleReport { role: role.to_owned(), created, password_set, can_login, lines })
}

/// Refuses unless the connected user `me` is (a member of) the tables' owner.
fn check_owner(c: &mut PgConnection, me: &str) -> Result<(), LedgerError> {
    let owner_of_journal: OneText = diesel::sql_query(
        "SELECT pg_get_userbyid(relowner)::text AS v FROM pg_class WHERE oid = to_regclass('journal_entries')",
    )
    .get_result(c)
    .map_err(storage)?;
    if !diesel::sql_query("SELECT pg_has_role(current_user, $1::name, 'MEMBER') AS v")
        .bind::<Text, _>(&owner_of_journal.v)
        .get_result::<BoolRow>(c)
        .map_err(storage)?
        .v
    {
        return Err(LedgerError::Roles(format!(
            "{me:?} does not own the tables (their owner is {:?}): connect as the owner to grant",
            owner_of_journal.v
        )));
    }
    Ok(())
}

/// Creates the serving role, or checks that the existing one may serve: (created, may log in).
fn ensure_role(c: &mut PgConnection, role: &str) -> Result<(bool, bool), LedgerError> {
    let existing: Option<RoleRow> = diesel::sql_query(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin,
                pg_has_role(oid, (SELECT relowner FROM pg_class WHERE oid = to_regclass('journal_entries')), 'MEMBER')
                    AS owner_member
         FROM pg_roles WHERE rolname = $1::name",
    )
    .bind::<Text, _>(role)
    .get_result(c)
    .optional()
    .map_err(storage)?;
    Ok(match existing {
        Some(r) => {
            let mut bad = Vec::new();
            if r.rolsuper {
                bad.push("a superuser");
            }
            if r.rolbypassrls {
                bad.push("BYPASSRLS");
            }
            if r.rolcreaterole {
                bad.push("CREATEROLE (it could make itself a member of the owner)");
            }
            if r.owner_member && !r.rolsuper {
                bad.push("a member of the tables' owner");
            }
            if !bad.is_empty() {
                return Err(LedgerError::Roles(format!(
                    "the role {role:?} exists and is {}: a serving role must not be; name another role",
                    bad.join(", ")
                )));
            }
            (false, r.rolcanlogin)
        }
        None => {
            let sql = format!(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION",
                quote_ident(role)
            );
            diesel::sql_query(sql).execute(c).map_err(|e| {
                LedgerError::Roles(format!(
                    "creating the role {role:?}: {e} (creating a role needs CREATEROLE: have an administrator run \
                     `CREATE ROLE {role} LOGIN`, then run this again)"
                ))
            })?;
            (true, true)
        }
    })
}

/// Sets the serving role's password (quoted by the server, whatever it holds).
fn set_password(c: &mut PgConnection, role: &str, pw: &str) -> Result<(), LedgerError> {
    if pw.is_empty() || pw.contains('\0') {
        return Err(LedgerError::Roles("the serving role's password is empty or holds a NUL byte".into()));
    }
    // The server quotes the literal itself (format %L), whatever the password holds.
    let sql: OneText = diesel::sql_query("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text) AS v")
        .bind::<Text, _>(role)
        .bind::<Text, _>(pw)
        .get_result(c)
        .map_err(storage)?;
    diesel::sql_query(sql.v)
        .execute(c)
        .map_err(|e| LedgerError::Roles(format!("setting the password of {role:?}: {e}")))?;
    Ok(())
}

/// CONNECT on the database and USAGE on the schema, or why they could not be granted.
fn connect_and_usage(c: &mut PgConnection, role: &str, schema: &str) -> Result<Vec<String>, LedgerError> {
    let mut lines = Vec::new();
    let db: OneText = diesel::sql_query("SELECT current_database()::text AS v").get_result(c).map_err(storage)?;
    // PUBLIC usually has both already; an owner of the tables that does not own the
    // database or schema may be unable to grant them, which is then said, not fatal.
    for (what, sql) in [
        (
            format!("CONNECT on database {}", db.v),
            format!("GRANT CONNECT ON DATABASE {} TO {}", quote_ident(&db.v), quote_ident(role)),
        ),
        (
            format!("USAGE on schema {schema}"),
            format!("GRANT USAGE ON SCHEMA {} TO {}", quote_ident(schema), quote_ident(role)),
        ),
    ] {
        match diesel::sql_query(sql).execute(c) {
            Ok(_) => lines.push(what),
            Err(e) => lines.push(format!("could not grant {what} ({e}): PUBLIC may hold it")),
        }
    }
    Ok(lines)
}

/// Revokes CREATE on the schema where the serving role could still create objects; the
/// report line when it did.
fn revoke_schema_create(c: &mut PgConnection, role: &str, schema: &str) -> Result<Option<String>, LedgerError> {
    // A role that may create objects in the schema could plant functions that the owner's
    // own statements would call (CVE-2018-1058): PostgreSQL 15 revokes CREATE on public
    // from PUBLIC by default; older databases keep it.
    if schema_create(c, role, schema)? {
        let s = quote_ident(schema);
        run_all(
            c,
            &[
                format!("REVOKE CREATE ON SCHEMA {s} FROM PUBLIC"),
                format!("REVOKE CREATE ON SCHEMA {s} FROM {}", quote_ident(role)),
            ],
        )?;
        if schema_create(c, role, schema)? {
            return Err(LedgerError::Roles(format!(
                "{role:?} may still create objects in schema {schema:?} (through another role?): revoke it, as \
                 the schema's owner: REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC"
            )));
        }
        return Ok(Some(format!(
            "revoked CREATE on schema {schema} from PUBLIC (only the owner creates objects there)"
        )));
    }
    Ok(None)
}

#[derive(QueryableByName)]
struct BoolRow {
    #[diesel(sql_type = Bool)]
    v: bool,
}

fn schema_create(c: &mut PgConnection, role: &str, schema: &str) -> Result<bool, LedgerError> {
    let row: BoolRow = diesel::sql_query("SELECT has_schema_privilege($1::name, $2::text, 'CREATE') AS v")
        .bind::<Text, _>(role)
        .bind::<Text, _>(schema)
        .get_result(c)
        .map_err(storage)?;
    Ok(row.v)
}

/// The serving roles already granted on this database: the roles that may move the
/// ledger head (a grant only [`SERVE_GRANTS`] gives), other than the owner.
fn serve_roles_pg(c: &mut PgConnection) -> Result<Vec<String>, LedgerError> {
    let rows: Vec<OneText> = diesel::sql_query(
        "SELECT DISTINCT g.rolname::text AS v
         FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) x JOIN pg_roles g ON g.oid = x.grantee
         JOIN pg_class t ON t.oid = a.attrelid
         WHERE a.attrelid = to_regclass('ledger_head') AND a.attname = 'last_seq' AND x.privilege_type = 'UPDATE'
           AND g.oid <> t.relowner
         ORDER BY 1",
    )
    .load(c)
    .map_err(storage)?;
    Ok(rows.into_iter().map(|r| r.v).collect())
}

/// Whether the connected user owns the tables (or is a member of their owner).
fn owns_tables(c: &mut PgConnection) -> Result<bool, LedgerError> {
    let row: BoolRow = diesel::sql_query(
        "SELECT COALESCE((SELECT pg_has_role(current_user, relowner, 'MEMBER') FROM pg_class
                          WHERE oid = to_regclass('journal_entries')), false) AS v",
    )
    .get_result(c)
    .map_err(storage)?;
    Ok(row.v)
}

/// After migrations, as the owner: grants every serving role already set up exactly
/// [`SERVE_GRANTS`] again, so tables a migration added are covered. Nothing when the
/// connection does not own the tables.
pub(crate) fn regrant_pg(c: &mut PgConnection) -> Result<Vec<RoleReport>, LedgerError> {
    if !owns_tables(c)? {
        return Ok(Vec::new());
    }
    let mut reports = Vec::new();
    for role in serve_roles_pg(c)? {
        let (sql, lines) = grant_statements(c, &role)?;
        run_all(c, &sql)?;
        reports.push(RoleReport { role, created: false, password_set: false, can_login: true, lines });
    }
    Ok(reports)
}

fn check_pg(c: &mut PgConnection) -> Result<ServingCheck, LedgerError> {
    let u: UserRow = diesel::sql_query(format!(
        "SELECT current_user::text AS name, rolsuper, rolbypassrls, rolcreaterole,
                COALESCE(has_schema_privilege({SCHEMA_OID}, 'CREATE'), false) AS schema_create
         FROM pg_roles WHERE rolname = current_user"
    ))
    .get_result(c)
    .map_err(storage)?;
    let tables = table_privileges(c)?;
    let sequences = sequence_privileges(c)?;
    let mut problems = Vec::new();
    if tables.is_empty() {
        problems
            .push("the database is not migrated (no journal_entries table): run `kartu migrate` as the owner".into());
    }
    let owned: Vec<String> = tables
        .iter()
        .filter(|t| t.owns)
        .map(|t| t.name.clone())
        .chain(sequences.iter().filter(|s| s.owns).map(|s| s.name.clone()))
        .collect();
    if let Some(first) =
        owned.iter().find(|t| grant_of(t).is_some_and(|g| g.kind == TableKind::Journal)).or(owned.first())
    {
        let more =
            if owned.len() > 1 { format!(" and {} more tables and sequences", owned.len() - 1) } else { String::new() };
        problems.push(format!("it owns the journal table {first:?}{more} (or is a member of the owner)"));
    }
    problems.extend(role_problems(&u));
    let (extra, lacking) = grant_differences(&tables, &sequences, &mut problems);
    if !extra.is_empty() {
        problems.push(format!("it may do more than serving needs: {}", extra.join(", ")));
    }
    if !lacking.is_empty() {
        problems.push(format!(
            "it lacks what serving needs: {} (run `kartu migrate --database-url <owner URL> --serve-role {}`)",
            lacking.join(", "),
            u.name
        ));
    }
    Ok(ServingCheck { user: u.name, owned, problems })
}

/// What the connected user may do on each table of the schema.
fn table_privileges(c: &mut PgConnection) -> Result<Vec<PrivRow>, LedgerError> {
    diesel::sql_query(format!(
        "SELECT c.relname::text AS name,
                has_table_privilege(c.oid, 'SELECT') AS sel, has_table_privilege(c.oid, 'INSERT') AS ins,
                has_table_privilege(c.oid, 'UPDATE') AS upd, has_table_privilege(c.oid, 'DELETE') AS del,
                has_table_privilege(c.oid, 'TRUNCATE') AS trunc, has_table_privilege(c.oid, 'REFERENCES') AS refs,
                has_table_privilege(c.oid, 'TRIGGER') AS trig, pg_has_role(c.relowner, 'MEMBER') AS owns,
                COALESCE((SELECT string_agg(a.attname::text, ',' ORDER BY a.attname::text) FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            AND has_column_privilege(c.oid, a.attnum, 'UPDATE')), '') AS update_columns
         FROM pg_class c WHERE c.relnamespace = {SCHEMA_OID} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         ORDER BY c.relname"
    ))
    .load(c)
    .map_err(storage)
}

/// What the connected user may do with each sequence, and the table that owns it.
fn sequence_privileges(c: &mut PgConnection) -> Result<Vec<SeqPrivRow>, LedgerError> {
    diesel::sql_query(format!(
        "SELECT c.relname::text AS name, has_sequence_privilege(c.oid, 'USAGE') AS usage,
                has_sequence_privilege(c.oid, 'SELECT') AS sel, has_sequence_privilege(c.oid, 'UPDATE') AS upd,
                pg_has_role(c.relowner, 'MEMBER') AS owns, t.relname::text AS owner_table
         FROM pg_class c
         LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
         LEFT JOIN pg_class t ON t.oid = d.refobjid
         WHERE c.relnamespace = {SCHEMA_OID} AND c.relkind = 'S' ORDER BY c.relname"
    ))
    .load(c)
    .map_err(storage)
}

/// What a serving role must not be: a superuser, able to bypass row security, to create
/// roles, or to create objects in the tables' schema.
fn role_problems(u: &UserRow) -> Vec<String> {
    let mut problems = Vec::new();
    if u.rolsuper {
        problems.push("it is a superuser".into());
    }
    if u.rolbypassrls {
        problems.push("it has BYPASSRLS".into());
    }
    if u.rolcreaterole {
        problems.push("it has CREATEROLE (it could make itself a member of the owner)".into());
    }
    if u.schema_create && !u.rolsuper {
        problems.push(
            "it may create objects in the tables' schema (REVOKE CREATE ON SCHEMA public FROM PUBLIC, as its owner)"
                .into(),
        );
    }
    problems
}

/// The privileges beyond [`SERVE_GRANTS`] and those missing from it, table by table and
/// sequence by sequence (skipping what the user owns: an owner may do everything, which
/// is said already). A table the list does not know is a problem of its own.
fn grant_differences(
    tables: &[PrivRow],
    sequences: &[SeqPrivRow],
    problems: &mut Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let mut extra = Vec::new();
    let mut lacking = Vec::new();
    for t in tables.iter().filter(|t| !t.owns) {
        let Some(g) = grant_of(&t.name) else {
            problems.push(format!("the table {:?} is not in the serving role's grant list (a newer schema?)", t.name));
            continue;
        };
        let granted_update: Vec<&str> = t.update_columns.split(',').filter(|s| !s.is_empty()).collect();
        for (has, want, p) in [
            (t.sel, g.select, "SELECT"),
            (t.ins, g.insert, "INSERT"),
            (t.upd, false, "UPDATE (all columns)"),
            (t.del, false, "DELETE"),
            (t.trunc, false, "TRUNCATE"),
            (t.refs, false, "REFERENCES"),
            (t.trig, false, "TRIGGER"),
        ] {
            if has && !want {
                extra.push(format!("{p} on {}", t.name));
            } else if want && !has {
                lacking.push(format!("{p} on {}", t.name));
            }
        }
        if !t.upd {
            for col in &granted_update {
                if !g.update.contains(col) {
                    extra.push(format!("UPDATE ({col}) on {}", t.name));
                }
            }
        }
        for col in g.update {
            if !granted_update.contains(col) {
                lacking.push(format!("UPDATE ({col}) on {}", t.name));
            }
        }
    }
    for s in sequences.iter().filter(|s| !s.owns) {
        let needed = s.owner_table.as_deref().and_then(grant_of).is_some_and(|g| g.insert);
        if s.sel || s.upd || (s.usage && !needed) {
            extra.push(format!("more than USAGE on the sequence {}", s.name));
        } else if needed && !s.usage {
            lacking.push(format!("USAGE on the sequence {}", s.name));
        }
    }
    (extra, lacking)
}

// ---- the public face (ledger::roles) ----

fn pg(url: &str) -> Result<PgConnection, LedgerError> {
    match Db::open(url)? {
        Db::Pg(c) => Ok(c),
        Db::Sqlite(_) => Err(LedgerError::Roles(
            "SQLite has no database roles: whoever can write the file can write anything (docs/OPERATIONS.md)".into(),
        )),
    }
}

/// As the owner at `owner_url` (PostgreSQL; the database migrated): creates the serving
/// role if missing, sets its password when given, and grants it exactly [`SERVE_GRANTS`].
pub fn setup_serve_role(owner_url: &str, role: &str, password: Option<&str>) -> Result<RoleReport, LedgerError> {
    setup_pg(&mut pg(owner_url)?, role, password)
}

/// As the owner at `owner_url`: grants every serving role already set up on the database
/// exactly [`SERVE_GRANTS`] again (after a migration added tables). Nothing on SQLite, or
/// when the URL's user does not own the tables.
pub fn regrant_serve_roles(owner_url: &str) -> Result<Vec<RoleReport>, LedgerError> {
    match Db::open(owner_url)? {
        Db::Pg(mut c) => regrant_pg(&mut c),
        Db::Sqlite(_) => Ok(Vec::new()),
    }
}

/// Whether the user of `url` may serve (PostgreSQL): it owns nothing, is no superuser, has
/// neither BYPASSRLS nor CREATEROLE nor CREATE on the schema, and holds exactly
/// [`SERVE_GRANTS`]. `None` on SQLite, which has no roles.
pub fn check_serving(url: &str) -> Result<Option<ServingCheck>, LedgerError> {
    match Db::open(url)? {
        Db::Pg(mut c) => check_pg(&mut c).map(Some),
        Db::Sqlite(_) => Ok(None),
    }
}

/// `owner_url` with its user (and password) replaced by `role` (and `password`,
/// percent-encoded): the URL `kartu serve` connects with.
pub fn serve_url(owner_url: &str, role: &str, password: Option<&str>) -> Result<String, LedgerError> {
    valid_role_name(role)?;
    let (scheme, rest) = split_scheme(owner_url)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let query = tail.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|kv| kv.starts_with("user=") || kv.starts_with("password=")) {
        return Err(LedgerError::BadUrl(
            "give the user and password in the URL's authority (postgres://user:password@host/db), not as \
             parameters"
                .into(),
        ));
    }
    let userinfo = match password {
        Some(p) => format!("{role}:{}", percent_encode(p)),
        None => role.to_owned(),
    };
    Ok(format!("{scheme}{userinfo}@{host}{tail}"))
}

/// The serving role's default name: the database's name and `_serve`.
pub fn default_serve_role(owner_url: &str) -> Result<String, LedgerError> {
    let (_, rest) = split_scheme(owner_url)?;
    let db = rest.split_once('/').map(|(_, p)| p.split('?').next().unwrap_or("")).unwrap_or("");
    let name = format!("{db}_serve");
    if db.is_empty() || valid_role_name(&name).is_err() {
        return Err(LedgerError::Roles(format!(
            "cannot name the serving role after the database {db:?}: give one (--serve-role NAME)"
        )));
    }
    Ok(name)
}

fn split_scheme(url: &str) -> Result<(&str, &str), LedgerError> {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            return Ok((scheme, rest));
        }
    }
    Err(LedgerError::BadUrl("a serving role needs a postgres:// URL".into()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_urls() {
        let u = serve_url(
            "postgres://owner:secret@db.example:5432/kartu?sslmode=require",
            "kartu_serve",
            Some("p@ss w/rd"),
        )
        .expect("url");
        assert_eq!(u, "postgres://kartu_serve:p%40ss%20w%2Frd@db.example:5432/kartu?sslmode=require");
        assert_eq!(
            serve_url("postgresql:///kartu?host=/run/postgresql", "k", None).expect("url"),
            "postgresql://k@/kartu?host=/run/postgresql"
        );
        assert!(serve_url("postgres://h/kartu?user=x", "k", None).is_err());
        assert!(serve_url("sqlite://x", "k", None).is_err());
        assert!(serve_url("postgres://h/kartu", "Bad-Name", None).is_err());
        assert_eq!(default_serve_role("postgres://o@h/kartu_prod?sslmode=disable").expect("name"), "kartu_prod_serve");
        assert!(default_serve_role("postgres://o@h/").is_err());
        assert!(default_serve_role("postgres://o@h/kartu-prod").is_err());
    }

    #[test]
    fn the_grant_list_never_deletes_and_names_each_table_once() {
        for (i, g) in SERVE_GRANTS.iter().enumerate() {
            assert!(SERVE_GRANTS[i + 1..].iter().all(|o| o.table != g.table), "{} twice", g.table);
            match g.kind {
                TableKind::Journal | TableKind::Registry => assert!(g.select && g.insert && g.update.is_empty()),
                TableKind::Moving => assert!(g.select && !g.update.is_empty()),
                TableKind::Meta => assert!(g.select && !g.insert && g.update.is_empty()),
                TableKind::Unused => assert!(!g.select && !g.insert && g.update.is_empty()),
            }
        }
    }
}
