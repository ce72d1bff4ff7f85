//! Custody (issue 13): what a card's key version, the files' modes and the log's leaves
//! defend against.

use std::collections::BTreeSet;

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};
use ledger::roles::{check_serving, grant_of, SERVE_GRANTS};
use serde_json::json;

use crate::support::{idr, tap_with, Backend, Body, City, Server, TestResult};

/// A card issued at key version 2 refuses a tap that verifies only with version 1 (a copy
/// made with keys the card no longer holds); a card still at version 1 pays with it.
pub fn card_key_versions(backend: Backend) -> TestResult {
    let v2 = "\n[cards.2]\nsdm_meta_read_key = \"00112233445566778899AABBCCDDEEFF\"\n\
        sdm_file_read_master_key = \"FFEEDDCCBBAA99887766554433221100\"\n";
    let server = Server::start_edited(backend, |c| c, |keys| format!("{keys}{v2}"))?;
    check_eq!(server.keys.newest().version(), 2);
    let c = City::on(server, "0.00")?;
    let s = &c.s;
    let v1 = s.keys.version(1).ok_or("version 1")?;
    let old_tap = |uid: &str, counter: u32| {
        tap_with(v1.sdm_meta_read_key(), v1.sdm_file_read_master_key(), b"KARTU-MKS", uid, counter)
    };
    // The City's card was issued without a version: the newest, 2.
    check_eq!(s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?.expect(200)?["key_version"], json!(2));
    s.post("/v1/topups", &c.teller, &json!({"card_id": c.card.id, "amount": "100.00"}))?.expect(201)?;
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": old_tap(&c.card.uid, 1), "amount": "1.00"}))?;
    r.problem(422, "tap_key_outdated")?;
    c.pay(&c.card, "1.00")?.expect(201)?;
    // A card personalised at version 1 is issued so and pays with a version-1 tap.
    let h = s.holder("Hana", "7371010101900041", &["resident"])?;
    let uid = "04C0FFEE000141";
    let r = s.post("/v1/cards", &s.operator, &json!({"uid": uid, "holder_id": h, "key_version": 1}))?;
    let card = r.expect(201)?.clone();
    check_eq!(card["key_version"], json!(1));
    let id = card["id"].as_str().ok_or("id")?;
    s.post("/v1/topups", &c.teller, &json!({"card_id": id, "amount": "10.00"}))?.expect(201)?;
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": old_tap(uid, 1), "amount": "1.00"}))?;
    check_eq!(r.expect(201)?["balance"], idr("9.00"));
    // A version the key file does not hold cannot be issued.
    let r = s.post("/v1/cards", &s.operator, &json!({"uid": "04C0FFEE000142", "holder_id": h, "key_version": 3}))?;
    r.problem(422, "invalid_field")?;
    Ok(())
}

/// `kartu init` writes the server's key file and the issuance key file apart: the server's
/// holds the SDM keys and the checkpoint key and no card key 0; the issuance file holds key
/// 0 and the same SDM keys and no checkpoint key; both are 0600. `load` (what `kartu serve`
/// runs) refuses a key file holding an app_master_key and names the fix.
pub fn key_split(backend: Backend) -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let db = crate::support::TestDb::fresh(backend)?;
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let init = api::server::init(data.path(), Some(&db.url), "KARTU-MKS").map_err(|e| e.to_string())?;
    let server_path = data.path().join(api::server::KEY_FILE);
    let issuance_path = data.path().join(api::server::ISSUANCE_KEY_FILE);
    check_eq!(
        init.issuance_key_file.canonicalize().map_err(|e| e.to_string())?,
        issuance_path.canonicalize().map_err(|e| e.to_string())?
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let (server_text, issuance_text) = (read(&server_path)?, read(&issuance_path)?);
    check!(!server_text.contains("app_master_key"), "the server's key file holds key 0:\n{server_text}");
    check!(server_text.contains("ed25519_pkcs8"), "the server's key file lacks the checkpoint key");
    check!(issuance_text.contains("app_master_key"), "the issuance key file lacks key 0");
    check!(!issuance_text.contains("ed25519_pkcs8"), "the issuance key file holds the checkpoint key");
    for p in [&server_path, &issuance_path] {
        let mode = std::fs::metadata(p).map_err(|e| e.to_string())?.permissions().mode() & 0o777;
        check_eq!(mode, 0o600);
    }
    let server_keys = card::keyfile::KeyFile::parse(&server_text).map_err(|e| e.to_string())?;
    let issuance_keys = card::keyfile::KeyFile::parse(&issuance_text).map_err(|e| e.to_string())?;
    check!(!server_keys.holds_app_master_keys() && issuance_keys.holds_app_master_keys(), "holds_app_master_keys");
    let (sv, iv) = (server_keys.newest(), issuance_keys.newest());
    check_eq!(sv.version(), iv.version());
    check!(
        sv.sdm_meta_read_key() == iv.sdm_meta_read_key()
            && sv.sdm_file_read_master_key() == iv.sdm_file_read_master_key(),
        "the two files disagree on the SDM keys"
    );
    // A tap made with the issuance file's keys verifies with the server's.
    let uid = card::CardUid::from_hex("04A1B2C3D4E5F6").map_err(|e| e.to_string())?;
    let tap =
        issuance_keys.make_tap(&uid, card::ReadCounter::new(7).ok_or("counter")?, [0; 5]).map_err(|e| e.to_string())?;
    let (message, version) = server_keys.verify_tap(&tap).map_err(|e| e.to_string())?;
    check!(message.mac_valid() && version == sv.version(), "the server's keys do not verify an issued card's tap");
    // The server starts with its own file, and refuses the issuance file's key 0.
    let loaded = api::server::load(data.path(), None).map_err(|e| e.to_string())?;
    loaded.state.ledger.shutdown();
    let key0 = issuance_text.lines().find(|l| l.starts_with("app_master_key")).ok_or("key 0 line")?;
    let version_line = format!("[cards.{}]", sv.version());
    std::fs::write(&server_path, server_text.replace(&version_line, &format!("{version_line}\n{key0}")))
        .map_err(|e| e.to_string())?;
    let refused = match api::server::load(data.path(), None) {
        Ok(l) => {
            l.state.ledger.shutdown();
            return Err("load accepted a key file holding app_master_key".into());
        }
        Err(e) => e.to_string(),
    };
    check!(
        refused.contains("app_master_key") && refused.contains("issuance key file") && !refused.contains(&key0[18..50]),
        "refusal: {refused}"
    );
    Ok(())
}

fn set(config: String, from: &str, to: &str) -> String {
    assert!(config.contains(from), "kartu.toml has no {from:?}: {config}");
    config.replace(from, to)
}

/// The token `exposure_limits` sets for `/metrics`.
const METRICS_TOKEN: &str = "m-0123456789abcdef";

/// Exposure: a per-credential rate limit (`429 rate_limited` with `Retry-After`), a token
/// on `/metrics`, and a client that never finishes its headers is cut off.
pub fn exposure_limits(backend: Backend) -> TestResult {
    let s = Server::start_with(backend, |c| {
        let c = set(c, "rate_limit_per_second = 100", "rate_limit_per_second = 5");
        let c = set(c, "rate_limit_burst = 200", "rate_limit_burst = 5");
        let c = set(c, "rate_limit_loopback = false", "rate_limit_loopback = true");
        let c = set(c, "request_timeout_ms = 5000", "request_timeout_ms = 500");
        let c = set(c, "body_timeout_ms = 10000", "body_timeout_ms = 500");
        set(
            c,
            "hold_sweep_interval_ms = 200\n",
            &format!("hold_sweep_interval_ms = 200\nmetrics_token = \"{METRICS_TOKEN}\"\n"),
        )
    })?;
    a_burst_is_rate_limited(&s)?;
    metrics_need_their_token(&s)?;
    stalled_clients_are_cut_off(&s)
}

/// A burst of 5, then 5 a second: the sixth request at once is refused, and says when to
/// come back; a second later requests pass again.
fn a_burst_is_rate_limited(s: &Server) -> TestResult {
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..8 {
        let r = s.get("/v1/cards/999999", &s.operator)?;
        if r.status == 429 {
            r.problem(429, "rate_limited")?;
            retry = r.retry_after.clone();
        }
        statuses.push(r.status);
    }
    check_eq!(statuses[..5].to_vec(), vec![404; 5]);
    check!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    check_eq!(retry.as_deref(), Some("1"));
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    check_eq!(s.get("/v1/cards/999999", &s.operator)?.status, 404);
    Ok(())
}

/// `/metrics` with its token only.
fn metrics_need_their_token(s: &Server) -> TestResult {
    s.send("GET", "/metrics", None, None, Body::None)?.problem(401, "unauthorized")?;
    s.send("GET", "/metrics", Some("kt_wrong"), None, Body::None)?.problem(401, "unauthorized")?;
    let m = s.send("GET", "/metrics", Some(METRICS_TOKEN), None, Body::None)?;
    check!(m.status == 200 && m.text.contains("kartu_"), "{} {}", m.status, m.text);
    Ok(())
}

/// Headers never finished: the server answers 408 and closes, it does not wait forever. A
/// body that stops half-way: 408 request_timeout after body_timeout_ms, nothing written.
fn stalled_clients_are_cut_off(s: &Server) -> TestResult {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).map_err(|e| e.to_string())?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: kartu\r\n").map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let mut answer = String::new();
    let read = conn.read_to_string(&mut answer);
    check!(read.is_ok(), "the server kept the half-sent request open: {read:?}");
    check!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    check!(started.elapsed() < std::time::Duration::from_secs(3), "cut off after {:?}", started.elapsed());
    // A body that stops half-way: 408 request_timeout after body_timeout_ms, nothing written.
    let size = s.tree_size()?;
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let head = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: kartu\r\nAuthorization: Bearer {}\r\nIdempotency-Key: slow-1\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\": ",
        s.operator
    );
    conn.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let mut answer = vec![0_u8; 4096];
    let n = conn.read(&mut answer).map_err(|e| format!("no answer to a stalled body: {e}"))?;
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    check!(answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"), "{answer}");
    let waited = started.elapsed();
    check!(
        waited >= std::time::Duration::from_millis(400) && waited < std::time::Duration::from_secs(3),
        "answered after {waited:?}"
    );
    check_eq!(s.tree_size()?, size);
    Ok(())
}

/// A table's (or sequence's) name, as the catalogue queries select it.
#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Issue 13: the server runs as a database role that cannot edit the journal. Serving
/// works as that role (the harness serves every PostgreSQL trial so); every table of the
/// schema is classified in `ledger::roles::SERVE_GRANTS`; and as the role, disabling
/// triggers, TRUNCATE, DELETE, UPDATE of the journal, DROP and the like are refused as
/// privilege errors (SQLSTATE 42501), for every table. On SQLite there are no roles: the
/// same tables are classified, and whoever holds the file can drop a trigger and delete
/// checkpoints, which is why the signer keeps its last checkpoint outside the database.
pub fn serving_role_cannot_edit_the_journal(backend: Backend) -> TestResult {
    let c = City::new(backend, "100.00")?;
    let s = &c.s;
    // Serving as the role: a payment, a block and a revocation (the UPDATEs the role has),
    // and signed checkpoints covering them.
    check_eq!(c.pay(&c.card, "10.00")?.expect(201)?["balance"], idr("90.00"));
    let r = s.post(&format!("/v1/cards/{}/block", c.card.id), &s.operator, &json!({"reason": "lost"}))?;
    check_eq!(r.expect(200)?["status"], json!("blocked"));
    let (cred, _) = s.credential_with_id("kiosk", "kiosk 2")?;
    s.delete(&format!("/v1/credentials/{cred}"), &s.operator)?.expect(200)?;
    s.checkpoint_covering(s.tree_size()?)?;
    let serve_url = s.serve_url()?;
    let listed: BTreeSet<&str> = SERVE_GRANTS.iter().map(|g| g.table).collect();
    if backend == Backend::Sqlite {
        return on_sqlite_the_file_is_full_access(s, &serve_url, &listed);
    }

    let (role, owner_user) = the_role_may_serve_and_the_owner_may_not(s, &serve_url)?;
    let mut owner_db = diesel::PgConnection::establish(s.owner_url()).map_err(|e| e.to_string())?;
    let tables = every_table_is_classified(&mut owner_db, &listed)?;
    the_role_holds_its_grants_and_no_more(&mut owner_db, &role)?;
    let mut as_role = diesel::PgConnection::establish(&serve_url).map_err(|e| e.to_string())?;
    // The probe can tell: the owner may disable triggers, and the role may read.
    check!(refused(&mut owner_db, "ALTER TABLE journal_entries DISABLE TRIGGER ALL").is_err(), "the owner may");
    check!(refused(&mut as_role, "SELECT count(*) FROM journal_entries").is_err(), "the role may read");
    no_table_can_be_disabled_emptied_or_dropped(&mut owner_db, &mut as_role, &role, tables.len())?;
    the_journal_and_its_guards_cannot_be_edited(&mut as_role, &owner_user)?;
    // Where the role may UPDATE, the triggers it cannot disable still hold: a card counter
    // only moves forward.
    let e = as_role.batch_execute("UPDATE card_counters SET last_counter = 0").map(|_| ()).err();
    check!(e.as_ref().is_some_and(|e| e.to_string().contains("only moves forward")), "{e:?}");
    // The server still serves, and the blocked card stays blocked.
    c.pay(&c.card, "1.00")?.problem(422, "card_blocked")?;
    Ok(())
}

/// SQLite: the file is the database, there are no roles; its tables are those of the
/// grant list. File access is full access: whoever can write the file drops the trigger
/// and deletes checkpoints. The defence is outside the database.
fn on_sqlite_the_file_is_full_access(s: &Server, serve_url: &str, listed: &BTreeSet<&str>) -> TestResult {
    check_eq!(serve_url.to_owned(), s.owner_url().to_owned(), "SQLite: the file is the database");
    check!(check_serving(serve_url).map_err(|e| e.to_string())?.is_none(), "SQLite has no roles to check");
    let path = serve_url.trim_start_matches("sqlite://");
    let mut db = diesel::SqliteConnection::establish(path).map_err(|e| e.to_string())?;
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .load(&mut db)
    .map_err(|e| e.to_string())?;
    let tables: BTreeSet<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    check_eq!(tables, *listed, "the SQLite schema and the grant list name the same tables");
    // File access is full access: whoever can write the file drops the trigger and
    // deletes checkpoints. The defence is outside the database.
    db.batch_execute("DROP TRIGGER checkpoints_no_delete; DELETE FROM checkpoints;").map_err(|e| e.to_string())?;
    Ok(())
}

/// PostgreSQL: the server's URL names the role made for this database, which may serve;
/// the owner may not, and is told to use `--serve-role`. Returns the role and the owner.
fn the_role_may_serve_and_the_owner_may_not(s: &Server, serve_url: &str) -> Result<(String, String), String> {
    let role = s.db().serve_role().ok_or("a serving role")?;
    check!(serve_url.contains(&format!("://{role}@")), "kartu.toml serves as {role}: {serve_url}");
    let served = check_serving(serve_url).map_err(|e| e.to_string())?.ok_or("a PostgreSQL check")?;
    check!(served.is_ok() && served.owned.is_empty(), "the role may serve: {served:?}");
    check_eq!(served.user, role);
    let owner = check_serving(s.owner_url()).map_err(|e| e.to_string())?.ok_or("a PostgreSQL check")?;
    check!(!owner.is_ok(), "the owner may not serve");
    let refusal = owner.refusal();
    check!(refusal.contains("owns the journal table \"accounts\"") && refusal.contains("--serve-role"), "{refusal}");
    Ok((role, owner.user))
}

/// Every table and sequence of the schema is classified (a migration that adds one
/// without saying what the server may do with it fails here, and in `kartu migrate`).
/// Returns the tables.
fn every_table_is_classified(
    owner_db: &mut diesel::PgConnection,
    listed: &BTreeSet<&str>,
) -> Result<Vec<String>, String> {
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT relname::text AS name FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
    )
    .load(owner_db)
    .map_err(|e| e.to_string())?;
    let tables: Vec<String> = tables.into_iter().map(|t| t.name).collect();
    check_eq!(tables.iter().map(String::as_str).collect::<BTreeSet<_>>(), *listed);
    Ok(tables)
}

/// What the role holds, read from the catalogue, table by table: never DELETE, TRUNCATE,
/// TRIGGER, REFERENCES or a table-wide UPDATE; UPDATE only of the listed columns; every
/// sequence USAGE at most.
fn the_role_holds_its_grants_and_no_more(owner_db: &mut diesel::PgConnection, role: &str) -> TestResult {
    #[derive(diesel::QueryableByName)]
    struct Held {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        sel: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ins: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        forbidden: bool,
        #[diesel(sql_type = diesel::sql_types::Text)]
        update_columns: String,
    }
    let held: Vec<Held> = diesel::sql_query(
        "SELECT c.relname::text AS name, has_table_privilege($1::name, c.oid, 'SELECT') AS sel,
                has_table_privilege($1::name, c.oid, 'INSERT') AS ins,
                has_table_privilege($1::name, c.oid, 'UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS forbidden,
                COALESCE((SELECT string_agg(a.attname::text, ',' ORDER BY a.attname::text) FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            AND has_column_privilege($1::name, c.oid, a.attnum, 'UPDATE')), '') AS update_columns
         FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1",
    )
    .bind::<diesel::sql_types::Text, _>(role)
    .load(owner_db)
    .map_err(|e| e.to_string())?;
    for h in &held {
        let g = grant_of(&h.name).ok_or_else(|| format!("{} unclassified", h.name))?;
        check!(!h.forbidden, "{role} may UPDATE (all), DELETE, TRUNCATE, REFERENCES or TRIGGER on {}", h.name);
        check_eq!((h.sel, h.ins), (g.select, g.insert), "SELECT, INSERT on {}", h.name);
        let mut want: Vec<&str> = g.update.to_vec();
        want.sort_unstable();
        check_eq!(h.update_columns, want.join(","), "UPDATE columns on {}", h.name);
    }
    let setval: Vec<Name> = diesel::sql_query(
        "SELECT relname::text AS name FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'S'
           AND CASE WHEN relkind = 'S' THEN has_sequence_privilege($1::name, oid, 'SELECT, UPDATE') END",
    )
    .bind::<diesel::sql_types::Text, _>(role)
    .load(owner_db)
    .map_err(|e| e.to_string())?;
    check!(setval.is_empty(), "{role} may setval: {:?}", setval.iter().map(|n| &n.name).collect::<Vec<_>>());
    Ok(())
}

/// Runs `sql` and rolls it back: Ok when PostgreSQL refuses it as a privilege error
/// (SQLSTATE 42501: "permission denied", "must be owner"), an error naming what happened
/// otherwise (it ran, or failed for another reason such as a trigger).
fn refused(db: &mut diesel::PgConnection, sql: &str) -> TestResult {
    let block = format!(
        "DO $kartu_test$ BEGIN EXECUTE '{}'; RAISE EXCEPTION 'it ran'; \
         EXCEPTION WHEN insufficient_privilege THEN NULL; END $kartu_test$",
        sql.replace('\'', "''")
    );
    db.batch_execute(&block).map_err(|e| format!("`{sql}` is not refused as a privilege error: {e}"))
}

/// As the role, on every table: disabling its triggers, emptying, deleting, updating its
/// first column (an id or key, in no table's UPDATE list), dropping, taking ownership and
/// adding a trigger are refused as privilege errors.
fn no_table_can_be_disabled_emptied_or_dropped(
    owner_db: &mut diesel::PgConnection,
    as_role: &mut diesel::PgConnection,
    role: &str,
    tables: usize,
) -> TestResult {
    #[derive(diesel::QueryableByName)]
    struct FirstColumn {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        first: String,
    }
    let firsts: Vec<FirstColumn> = diesel::sql_query(
        "SELECT c.relname::text AS name, a.attname::text AS first FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = 1
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1",
    )
    .load(owner_db)
    .map_err(|e| e.to_string())?;
    check_eq!(firsts.len(), tables);
    for FirstColumn { name: t, first } in &firsts {
        for sql in [
            format!("ALTER TABLE {t} DISABLE TRIGGER ALL"),
            format!("ALTER TABLE {t} DISABLE TRIGGER USER"),
            format!("TRUNCATE {t} CASCADE"),
            format!("DELETE FROM {t}"),
            // The first column (an id or key) is in no table's UPDATE list.
            format!("UPDATE {t} SET {first} = {first}"),
            format!("DROP TABLE {t} CASCADE"),
            format!("ALTER TABLE {t} OWNER TO {role}"),
            format!(
                "CREATE TRIGGER kartu_probe BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION kartu_append_only()"
            ),
        ] {
            refused(as_role, &sql)?;
        }
    }
    Ok(())
}

/// As the role: updating the journal, postings, leaves, a card's account, a credential's
/// role or token, a merchant's fee or the ledger head, setval, creating objects, dropping
/// the append-only trigger or function, and becoming the owner are refused.
fn the_journal_and_its_guards_cannot_be_edited(as_role: &mut diesel::PgConnection, owner_user: &str) -> TestResult {
    for sql in [
        "UPDATE journal_entries SET amount_minor = amount_minor + 100",
        "UPDATE postings SET balance_after_minor = 0",
        "UPDATE audit_leaves SET leaf_hash = leaf_hash",
        "UPDATE cards SET account_id = account_id",
        "UPDATE credentials SET role = 'operator'",
        "UPDATE credentials SET token_hash = token_hash",
        "UPDATE merchants SET fee_rate = '0'",
        "UPDATE ledger_head SET id = 1",
        "INSERT INTO ledger_head (id, last_seq, last_time_us) VALUES (2, 0, 0)",
        "SELECT setval('accounts_id_seq', 1)",
        "CREATE TABLE kartu_probe (id int)",
        "CREATE FUNCTION kartu_probe() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DROP TRIGGER journal_entries_append_only ON journal_entries",
        "DROP FUNCTION kartu_append_only() CASCADE",
        &format!("SET ROLE {owner_user}"),
    ] {
        refused(as_role, sql)?;
    }
    Ok(())
}
