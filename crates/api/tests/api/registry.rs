//! Issue 13: `kartu audit verify` checks the registry. After a city day that uses every
//! kind of registry write — cards issued, blocked, unblocked and replaced; a service point
//! with a policy; a terminal with a key and offline limits; a credential revoked; an
//! operator made by approval and later revoked by approval; an adjustment approved by a
//! second person and one rejected; a float above the threshold approved — verify passes on
//! the database. Then a database owner tampers behind the API, one tamper at a time: each
//! is reported with exactly its table, row and field (nothing else), no secret is printed,
//! and once it is undone verify passes again.
//!
//! Public transport's tables too (issue 18): a bus and a ferry, a fare table a second
//! operator approved, a rider's bus ride and ferry ride; then a route given to another
//! operator, a route deleted, a validator moved to another route, a fare table's body and start changed, a
//! fare table forged under another approval's decision, a tap moved to another stop or
//! deleted, a ride's entry given to another ride or unlinked — each is found.

use ledger::verify::{verify, VerifyError, VerifyOptions};
use serde_json::{json, Value};

use crate::support::{id, Backend, City, Server, TestResult};

/// A finding as the test compares it: (table, row, field), with its text.
type Finding = ((String, Option<i64>, String), String);

/// `audit verify` on the server's database: Ok((registry rows, operator actions)) when
/// everything holds, Err(findings) when only the registry differs.
pub fn verify_db(s: &Server) -> Result<Result<(usize, usize), Vec<Finding>>, String> {
    let verifier = merkle::Verifier::parse(&s.verifier_key).map_err(|e| e.to_string())?;
    let options = VerifyOptions { allow_unsigned_tail: true, ..Default::default() };
    match verify(s.database_url(), &verifier, &options, |_, _| {}) {
        Ok(r) => Ok(Ok((r.registry_rows, r.operator_actions))),
        Err(VerifyError::Registry(findings)) => {
            Ok(Err(findings.iter().map(|f| ((f.table.to_owned(), f.row, f.field.to_owned()), f.to_string())).collect()))
        }
        Err(e) => Err(format!("verify failed outside the registry: {e}")),
    }
}

/// Applies `sql`, then expects verify to report exactly `expected` (table, row, field),
/// each finding starting with its table and row. Returns the findings' text.
fn tampered(s: &Server, what: &str, sql: &str, expected: &[(&str, i64, &str)]) -> Result<String, String> {
    s.owner_sql(sql)?;
    let findings = match verify_db(s)? {
        Ok(report) => return Err(format!("{what}: verify passed ({report:?})")),
        Err(f) => f,
    };
    let got: Vec<(String, Option<i64>, String)> = findings.iter().map(|f| f.0.clone()).collect();
    let want: Vec<(String, Option<i64>, String)> =
        expected.iter().map(|(t, r, f)| ((*t).to_owned(), Some(*r), (*f).to_owned())).collect();
    let text = findings.iter().map(|f| f.1.clone()).collect::<Vec<_>>().join("\n");
    check_eq!(got, want, "{what}: {text}");
    for ((table, row, _), line) in &findings {
        let row = row.ok_or("a row")?;
        check!(line.starts_with(&format!("{table} row {row} ")), "{what}: the finding names its row: {line}");
    }
    Ok(text)
}

/// Undoes a tamper: verify passes again.
fn undone(s: &Server, what: &str, undo: &str) -> TestResult {
    s.owner_sql(undo)?;
    let again = verify_db(s)?;
    check!(again.is_ok(), "{what}: undone, and verify still fails: {again:?}");
    Ok(())
}

/// [`tampered`], then [`undone`].
pub fn tamper(s: &Server, what: &str, sql: &str, undo: &str, expected: &[(&str, i64, &str)]) -> Result<String, String> {
    let text = tampered(s, what, sql, expected)?;
    undone(s, what, undo)?;
    Ok(text)
}

fn num(v: &Value, field: &str) -> Result<i64, String> {
    v[field].as_str().and_then(|t| t.parse().ok()).ok_or_else(|| format!("no {field} in {v}"))
}

/// The token of the operator credential the tampering owner inserts.
const MALLORY: &str = "kt_mallory-knows-this-token";

/// The rows of the day's registry writes that the tampers aim at.
struct Day {
    /// The card blocked for "lost".
    blocked: i64,
    /// The library's service point.
    library: i64,
    /// The offline till's credential and its token.
    till_id: i64,
    till_token: String,
    /// The kiosk credential revoked.
    gone: i64,
    /// The adjustment a second person approved.
    adjustment_id: i64,
    /// The approval Dewi rejected.
    rejected: i64,
    /// Merchant A ("Toko Sinar").
    merchant_a: i64,
}

pub fn verify_checks_the_registry(backend: Backend) -> TestResult {
    let c = City::new(backend, "100000.00")?;
    let s = &c.s;
    let (blocked, library, till_id, till_token, gone) = cards_points_and_terminals(&c)?;
    let (adjustment_id, rejected) = two_persons_decide(&c)?;
    let merchant_a: i64 = c.merchant_a.parse().map_err(|_| "merchant id")?;
    let day = Day { blocked, library, till_id, till_token, gone, adjustment_id, rejected, merchant_a };
    let network = a_transit_day(&c)?;
    an_honest_registry_verifies(&c)?;
    let mut texts = Vec::new();
    texts.push(an_inserted_operator_credential_is_found(s)?);
    fee_policy_and_status_tampers_are_found(s, &day, &mut texts)?;
    token_amount_and_event_tampers_are_found(s, &day, &mut texts)?;
    a_revival_and_a_turned_decision_are_found(s, &day, &mut texts)?;
    without_append_only_triggers(s)?;
    route_and_validator_tampers_are_found(s, &network, merchant_a, &mut texts)?;
    fare_table_tampers_are_found(s, &network, &mut texts)?;
    tap_and_ride_entry_tampers_are_found(s, &network, &mut texts)?;
    no_finding_shows_a_secret(&texts, &day)
}

/// The day's registry writes: cards issued, blocked, unblocked and replaced; a service
/// point with a policy; a terminal with a key and offline limits; a credential revoked.
/// Returns the blocked card, the library, the till's id and token, and the revoked kiosk.
fn cards_points_and_terminals(c: &City) -> Result<(i64, i64, i64, String, i64), String> {
    let s = &c.s;
    let op = s.operator.clone();
    let siti = s.holder("Siti Aminah", "7371020202900002", &["student", "resident"])?;
    let blocked = s.card(&siti, 2)?;
    s.post(&format!("/v1/cards/{}/block", blocked.id), &op, &json!({"reason": "lost"}))?.expect(200)?;
    let unblocked = s.card(&siti, 3)?;
    s.post(&format!("/v1/cards/{}/block", unblocked.id), &op, &json!({"reason": "stolen"}))?.expect(200)?;
    check_eq!(s.post_empty(&format!("/v1/cards/{}/unblock", unblocked.id), &op)?.expect(200)?["status"], "active");
    let r = s.post(&format!("/v1/cards/{}/replace", c.card.id), &op, &json!({"new_uid": "04AABBCCDDEE80"}))?;
    check_eq!(r.expect(201)?["old_card"]["status"], "replaced");
    let policy = json!({"categories": ["student"], "daily_quota": 2, "anti_passback_minutes": 5});
    let r =
        s.post("/v1/service-points", &op, &json!({"name": "Perpustakaan", "service": "library", "policy": policy}))?;
    let library = id(r.expect(201)?)?;
    s.credential("service_point", "library gate", Some(("service_point_id", &library)))?;
    let till_body = json!({"role": "merchant_terminal", "name": "till", "merchant_id": c.merchant_b,
        "public_key": "ab".repeat(32),
        "offline_limits": {"per_tap_minor": 100000, "per_card_per_day_minor": 200000, "outstanding_minor": 300000}});
    let r = s.post("/v1/credentials", &op, &till_body)?;
    let till = r.expect(201)?.clone();
    let (till_id, till_token) = (num(&till, "id")?, till["token"].as_str().ok_or("till token")?.to_owned());
    let (gone, _) = s.credential_with_id("kiosk", "old kiosk")?;
    s.delete(&format!("/v1/credentials/{gone}"), &op)?.expect(200)?;
    let gone: i64 = gone.parse().map_err(|_| "kiosk id")?;
    let blocked: i64 = blocked.id.parse().map_err(|_| "card id")?;
    let library: i64 = library.parse().map_err(|_| "library id")?;
    Ok((blocked, library, till_id, till_token, gone))
}

/// Two persons: an operator made by approval, later revoked by approval; an adjustment
/// another person approves; one Dewi rejects; a big float. Returns the approved
/// adjustment and the rejected approval.
fn two_persons_decide(c: &City) -> Result<(i64, i64), String> {
    let s = &c.s;
    let (op, b) = (s.operator.clone(), c.operator2.clone());
    let r = s.post("/v1/credentials", &op, &json!({"role": "operator", "name": "dewi", "person": "Dewi"}))?;
    let request = id(r.expect(202)?)?;
    let r = s.post_empty(&format!("/v1/approvals/{request}/approve"), &b)?;
    let dewi = r.expect(200)?["credential"].clone();
    let dewi_token = dewi["token"].as_str().ok_or("dewi's token")?.to_owned();
    // An adjustment another person approves; one Dewi rejects; a big float.
    let body = json!({"account_id": c.merchant_a_account, "amount": "5.00", "reason": "fee refund"});
    let adjustment = s.post("/v1/adjustments", &op, &body)?.expect(201)?.clone();
    let adjustment_id = num(&adjustment, "id")?;
    let r = s.post_empty(&format!("/v1/adjustments/{adjustment_id}/approve"), &b)?;
    check_eq!(r.expect(200)?["status"], "posted");
    let body = json!({"account_id": c.merchant_a_account, "amount": "-7.00", "reason": "duplicate"});
    let rejected_adjustment = num(s.post("/v1/adjustments", &op, &body)?.expect(201)?, "id")?;
    let pending = s.get("/v1/approvals?status=pending", &op)?;
    let rejected = pending.expect(200)?["approvals"][0].clone();
    check_eq!(rejected["request"]["adjustment_id"], json!(rejected_adjustment));
    let rejected = num(&rejected, "id")?;
    s.post_empty(&format!("/v1/approvals/{rejected}/reject"), &dewi_token)?.expect(200)?;
    let r = s.post(&format!("/v1/agents/{}/float", c.agent), &op, &json!({"amount": "50000000.01"}))?;
    let float = id(r.expect(202)?)?;
    check!(
        s.post_empty(&format!("/v1/approvals/{float}/approve"), &b)?.expect(200)?["result"]["entry_seq"].is_i64(),
        "posted"
    );
    let r = s.delete(&format!("/v1/credentials/{}", dewi["id"].as_str().ok_or("dewi's id")?), &op)?;
    let revoke = id(r.expect(202)?)?;
    check_eq!(s.post_empty(&format!("/v1/approvals/{revoke}/approve"), &b)?.expect(200)?["result"]["revoked"], true);
    Ok((adjustment_id, rejected))
}

/// Verify passes, having compared every row and read every operator action (counted here
/// from the tables and from the log the auditor reads).
fn an_honest_registry_verifies(c: &City) -> TestResult {
    let s = &c.s;
    let tables = [
        "holders",
        "cards",
        "merchants",
        "service_points",
        "agents",
        "credentials",
        "adjustments",
        "approvals",
        "transit_routes",
        "transit_validators",
        "fare_tables",
        "transit_taps",
        "transit_entries",
    ];
    let mut rows = 0;
    for t in tables {
        rows += s
            .owner_query(&format!("SELECT CAST(COUNT(*) AS TEXT) AS v FROM {t}"))?
            .parse::<usize>()
            .map_err(|e| e.to_string())?;
    }
    let actions = s.leaves(&c.auditor)?.iter().filter(|l| l.1 == "operator_action").count();
    check_eq!(verify_db(s)?, Ok((rows, actions)), "an honest registry verifies");
    Ok(())
}

/// Tamper 1: an operator credential inserted straight into the table. Its token works,
/// until the row is removed again. Returns the finding's text.
fn an_inserted_operator_credential_is_found(s: &Server) -> Result<String, String> {
    let mallory = MALLORY;
    let mallory_hash = api::auth::token_hash(mallory);
    let insert = format!(
        "INSERT INTO credentials (id, role, name, token_hash, created_at_us, event_id, person) \
         VALUES (9001, 'operator', 'mallory', {}, 0, 900000001, 'mallory')",
        s.blob(&mallory_hash)
    );
    let what = "an inserted operator credential";
    let text = tampered(s, what, &insert, &[("credentials", 9001, "event_id")])?;
    check!(
        text.contains(r#"credentials row 9001 (role operator, name "mallory") has no create_credential"#)
            && text.contains("event_id 900000001 names no operator action"),
        "{text}"
    );
    check_eq!(s.get("/v1/approvals", mallory)?.status, 200, "the inserted credential works as an operator's");
    undone(s, what, "DELETE FROM credentials WHERE id = 9001")?;
    check_eq!(s.get("/v1/approvals", mallory)?.status, 401, "removed again");
    Ok(text)
}

/// Tampers 2 to 4: a merchant's fee rate changed behind the API, a service point's policy
/// opened to everyone, a blocked card unblocked by UPDATE.
fn fee_policy_and_status_tampers_are_found(s: &Server, day: &Day, texts: &mut Vec<String>) -> TestResult {
    let Day { merchant_a, library, blocked: card, .. } = *day;
    let text = tamper(
        s,
        "a fee rate",
        &format!("UPDATE merchants SET fee_rate = '0.03' WHERE id = {merchant_a}"),
        &format!("UPDATE merchants SET fee_rate = '0.007' WHERE id = {merchant_a}"),
        &[("merchants", merchant_a, "fee_rate")],
    )?;
    check!(
        text.contains(&format!(
            "merchants row {merchant_a} (name \"Toko Sinar\") fee_rate 0.03 but its leaf says 0.007"
        )),
        "{text}"
    );
    texts.push(text);

    // 3. A service point's policy opened to everyone.
    let original = s.owner_query(&format!("SELECT policy AS v FROM service_points WHERE id = {library}"))?;
    let opened = original.replace(r#"["student"]"#, "[]");
    check!(opened != original && !original.contains('\''), "{original}");
    let text = tamper(
        s,
        "a policy",
        &format!("UPDATE service_points SET policy = '{opened}' WHERE id = {library}"),
        &format!("UPDATE service_points SET policy = '{original}' WHERE id = {library}"),
        &[("service_points", library, "policy")],
    )?;
    texts.push(text);

    // 4. A blocked card unblocked by UPDATE.
    let text = tamper(
        s,
        "an unblock",
        &format!("UPDATE cards SET status = 'active', block_reason = NULL WHERE id = {card}"),
        &format!("UPDATE cards SET status = 'blocked', block_reason = 'lost' WHERE id = {card}"),
        &[("cards", card, "status")],
    )?;
    check!(text.contains("status active") && text.contains("its leaves say blocked, reason lost"), "{text}");
    texts.push(text);
    Ok(())
}

/// Tampers 5 to 7: a terminal's token hash swapped for one the attacker knows, an
/// adjustment's amount changed after it was approved, a credential pointed at a leaf of
/// another action.
fn token_amount_and_event_tampers_are_found(s: &Server, day: &Day, texts: &mut Vec<String>) -> TestResult {
    let Day { till_id, ref till_token, adjustment_id, merchant_a, .. } = *day;
    let mallory_hash = api::auth::token_hash(MALLORY);
    let text = tamper(
        s,
        "a swapped token hash",
        &format!("UPDATE credentials SET token_hash = {} WHERE id = {till_id}", s.blob(&mallory_hash)),
        &format!(
            "UPDATE credentials SET token_hash = {} WHERE id = {till_id}",
            s.blob(&api::auth::token_hash(till_token))
        ),
        &[("credentials", till_id, "token_hash")],
    )?;
    check!(text.contains("token_hash differs from its leaf"), "{text}");
    texts.push(text);

    // 6. An adjustment's amount changed after it was approved.
    let text = tamper(
        s,
        "an adjustment amount",
        &format!("UPDATE adjustments SET amount_minor = 500000 WHERE id = {adjustment_id}"),
        &format!("UPDATE adjustments SET amount_minor = 500 WHERE id = {adjustment_id}"),
        &[("adjustments", adjustment_id, "amount_minor")],
    )?;
    check!(text.contains("amount_minor 500000 but its leaf says 500"), "{text}");
    texts.push(text);

    // 7. A credential pointed at a leaf of another action.
    let event = s.owner_query(&format!("SELECT CAST(event_id AS TEXT) AS v FROM credentials WHERE id = {till_id}"))?;
    let merchant_event =
        s.owner_query(&format!("SELECT CAST(event_id AS TEXT) AS v FROM merchants WHERE id = {merchant_a}"))?;
    let text = tamper(
        s,
        "an event_id of another action",
        &format!("UPDATE credentials SET event_id = {merchant_event} WHERE id = {till_id}"),
        &format!("UPDATE credentials SET event_id = {event} WHERE id = {till_id}"),
        &[("credentials", till_id, "event_id")],
    )?;
    check!(text.contains(&format!("event_id {merchant_event} names a create_merchant leaf")), "{text}");
    texts.push(text);
    Ok(())
}

/// Tampers 8 and 9: a revoked credential revived, a rejected request marked approved.
fn a_revival_and_a_turned_decision_are_found(s: &Server, day: &Day, texts: &mut Vec<String>) -> TestResult {
    let Day { gone, rejected, .. } = *day;
    let revoked = s.owner_query(&format!(
        "SELECT CAST(revoked_at_us AS TEXT) || ' ' || CAST(revoked_event_id AS TEXT) AS v FROM credentials WHERE id = {gone}"
    ))?;
    let (at, by) = revoked.split_once(' ').ok_or("revoked")?;
    let text = tamper(
        s,
        "a revival",
        &format!("UPDATE credentials SET revoked_at_us = NULL, revoked_event_id = NULL WHERE id = {gone}"),
        &format!("UPDATE credentials SET revoked_at_us = {at}, revoked_event_id = {by} WHERE id = {gone}"),
        &[("credentials", gone, "revoked")],
    )?;
    check!(
        text.contains(&format!("is not revoked but its leaves revoke it (event {by}, revoke_credential)")),
        "{text}"
    );
    texts.push(text);

    // 9. A rejected request marked approved.
    let text = tamper(
        s,
        "a rejection turned approval",
        &format!("UPDATE approvals SET status = 'approved' WHERE id = {rejected}"),
        &format!("UPDATE approvals SET status = 'rejected' WHERE id = {rejected}"),
        &[("approvals", rejected, "status")],
    )?;
    check!(text.contains("status approved but its deciding leaf") && text.contains("is a reject_request"), "{text}");
    texts.push(text);
    Ok(())
}

/// No secret in any finding: no token, no token hash, no NIK.
fn no_finding_shows_a_secret(texts: &[String], day: &Day) -> TestResult {
    let (mallory, till_token) = (MALLORY, &day.till_token);
    let mallory_hash = api::auth::token_hash(mallory);
    let all = texts.join("\n");
    for secret in [
        mallory.to_owned(),
        hex::encode(mallory_hash),
        till_token.clone(),
        hex::encode(api::auth::token_hash(till_token)),
        "7371020202900002".into(),
    ] {
        check!(!all.to_lowercase().contains(&secret.to_lowercase()), "a secret in the findings: {all}");
    }
    check!(!all.contains("kt_"), "{all}");
    Ok(())
}

/// The rows of the transit day that the tampers aim at.
struct Network {
    /// The transit operator (a merchant).
    operator: i64,
    /// The bus line and the ferry.
    bus: i64,
    ferry: i64,
    /// A route with no validator yet.
    spare: i64,
    /// The bus's validator credential.
    bus_validator: i64,
    /// The fare table in force.
    fare_table: i64,
    /// The rider's bus boarding and ferry boarding (their tap events).
    bus_ride: i64,
    ferry_ride: i64,
    /// The ferry ride's hold (an entry of the ledger).
    hold: i64,
}

/// A transit operator's bus and ferry with their validators, a fare table one operator
/// asks for and a second one approves, and a rider who takes the bus, then the ferry
/// (held at the entry gate, captured at the exit gate).
fn a_transit_day(c: &City) -> Result<Network, String> {
    let s = &c.s;
    let (on_bus, ferry_in, ferry_out, bus, ferry) = crate::transit::a_bus_and_a_ferry(c)?;
    let table = json!({"time_zone": "Asia/Makassar", "table": {
        "routes": {bus.clone(): {"kind": "flat", "fare_minor": 3500},
                   ferry.clone(): {"kind": "distance", "base_minor": 2000, "per_stop_minor": 500, "max_minor": 6000, "time_limit_minutes": 90}},
        "transfer": {"window_minutes": 60, "integrated_fare_minor": 5000},
        "daily_cap_minor": 10000, "weekly_cap_minor": 40000, "concessions": {"student": 50}}});
    let approval = id(s.post("/v1/transit/fares", &s.operator, &table)?.expect(202)?)?;
    let done = s.post(&format!("/v1/approvals/{approval}/approve"), &c.operator2, &json!({}))?;
    let fare_table = num(&done.expect(200)?["result"], "fare_table_id")?;
    let rider = s.holder("Andi Penumpang", "7371020202030003", &[])?;
    let card = s.card(&rider, 41)?;
    s.post("/v1/topups", &c.teller, &json!({"card_id": card.id, "amount": "100.00"}))?.expect(201)?;
    let tap = |token: &str, direction: &str, stop: Option<i64>| -> Result<Value, String> {
        let body = json!({"tap": s.tap(&card), "direction": direction, "stop": stop});
        Ok(s.post("/v1/transit/taps", token, &body)?.expect(201)?.clone())
    };
    let bus_ride = tap(&on_bus, "on", Some(3))?["event_id"].as_i64().ok_or("the bus tap's event")?;
    let ferry_on = tap(&ferry_in, "on", None)?;
    check_eq!(ferry_on["entries"][0]["kind"], "hold");
    let hold = num(&ferry_on["entries"][0], "entry_seq")?;
    let ferry_ride = ferry_on["event_id"].as_i64().ok_or("the ferry tap's event")?;
    check_eq!(tap(&ferry_out, "off", None)?["entries"][0]["kind"], "capture");
    let (bus, ferry): (i64, i64) = (bus.parse().map_err(|_| "bus")?, ferry.parse().map_err(|_| "ferry")?);
    let number = |sql: String| -> Result<i64, String> { s.owner_query(&sql)?.parse().map_err(|_| sql) };
    let operator = number(format!("SELECT CAST(merchant_id AS TEXT) AS v FROM transit_routes WHERE id = {bus}"))?;
    let spare = json!({"merchant_id": operator.to_string(), "name": "Koridor 9", "mode": "bus", "stops": ["a", "b"]});
    let spare = num(s.post("/v1/transit/routes", &s.operator, &spare)?.expect(201)?, "id")?;
    Ok(Network {
        operator,
        bus,
        ferry,
        spare,
        bus_validator: number(format!(
            "SELECT CAST(credential_id AS TEXT) AS v FROM transit_validators WHERE route_id = {bus}"
        ))?,
        fare_table,
        bus_ride,
        ferry_ride,
        hold,
    })
}

/// What an owner does before changing public transport's append-only tables.
pub fn without_append_only_triggers(s: &Server) -> TestResult {
    let tables = ["transit_routes", "transit_validators", "fare_tables", "transit_taps", "transit_entries"];
    let sqlite = s.database_url().starts_with("sqlite://");
    let sql: String = tables
        .iter()
        .map(|t| {
            if sqlite {
                format!("DROP TRIGGER {t}_no_update; DROP TRIGGER {t}_no_delete;")
            } else {
                format!("ALTER TABLE {t} DISABLE TRIGGER USER;")
            }
        })
        .collect();
    s.owner_sql(&sql)
}

/// Tampers 10 and 11: the bus line given to another operator (the rides' fares would go to
/// it), the bus's validator moved to the ferry.
fn route_and_validator_tampers_are_found(
    s: &Server,
    n: &Network,
    merchant_a: i64,
    texts: &mut Vec<String>,
) -> TestResult {
    let Network { operator, bus, ferry, bus_validator, .. } = *n;
    let text = tamper(
        s,
        "a route's operator",
        &format!("UPDATE transit_routes SET merchant_id = {merchant_a} WHERE id = {bus}"),
        &format!("UPDATE transit_routes SET merchant_id = {operator} WHERE id = {bus}"),
        &[("transit_routes", bus, "merchant_id")],
    )?;
    check!(
        text.contains(&format!(
            "transit_routes row {bus} (name \"Koridor 1\") merchant_id {merchant_a} but its leaf says {operator}"
        )),
        "{text}"
    );
    texts.push(text);
    let text = tamper(
        s,
        "a validator's route",
        &format!("UPDATE transit_validators SET route_id = {ferry} WHERE credential_id = {bus_validator}"),
        &format!("UPDATE transit_validators SET route_id = {bus} WHERE credential_id = {bus_validator}"),
        &[("transit_validators", bus_validator, "route_id")],
    )?;
    check!(text.contains(&format!("route_id {ferry} but its leaf says {bus}")), "{text}");
    texts.push(text);
    a_deleted_route_is_found(s, n, texts)
}

/// Tamper 10b: a route deleted. Its id was the table's to give, so the finding names it by
/// its leaf, with no row.
fn a_deleted_route_is_found(s: &Server, n: &Network, texts: &mut Vec<String>) -> TestResult {
    let spare = n.spare;
    s.owner_sql(&format!(
        "CREATE TABLE kept AS SELECT * FROM transit_routes WHERE id = {spare}; \
         DELETE FROM transit_routes WHERE id = {spare}"
    ))?;
    let findings = verify_db(s)?.err().ok_or("a deleted route: verify passed")?;
    let got: Vec<_> = findings.iter().map(|f| f.0.clone()).collect();
    check_eq!(got, vec![("transit_routes".to_owned(), None, "event_id".to_owned())]);
    let text = &findings[0].1;
    check!(
        text.starts_with("transit_routes (name \"Koridor 9\") has no row, but its create_route leaf (event "),
        "{text}"
    );
    texts.push(text.clone());
    undone(s, "a deleted route", "INSERT INTO transit_routes SELECT * FROM kept; DROP TABLE kept")
}

/// Tampers 12 to 14: the fare table's bus fare cut, its start moved a day back (rides
/// already taken would be priced again), and a fare table inserted under the decision of
/// another approval (the float's).
fn fare_table_tampers_are_found(s: &Server, n: &Network, texts: &mut Vec<String>) -> TestResult {
    let id = n.fare_table;
    let body = s.owner_query(&format!("SELECT body AS v FROM fare_tables WHERE id = {id}"))?;
    check!(body.contains("3500") && !body.contains('\''), "{body}");
    let text = tamper(
        s,
        "a fare table's body",
        &format!("UPDATE fare_tables SET body = '{}' WHERE id = {id}", body.replace("3500", "350")),
        &format!("UPDATE fare_tables SET body = '{body}' WHERE id = {id}"),
        &[("fare_tables", id, "body")],
    )?;
    check!(text.contains(&format!("fare_tables row {id} (from ")) && text.contains("body "), "{text}");
    texts.push(text);
    let text = tamper(
        s,
        "a fare table's start",
        &format!("UPDATE fare_tables SET effective_from_us = effective_from_us - 86400000000 WHERE id = {id}"),
        &format!("UPDATE fare_tables SET effective_from_us = effective_from_us + 86400000000 WHERE id = {id}"),
        &[("fare_tables", id, "effective_from_us")],
    )?;
    check!(text.contains("the later of the requested start and the approval"), "{text}");
    texts.push(text);
    let float_decision =
        s.owner_query("SELECT CAST(decided_event_id AS TEXT) AS v FROM approvals WHERE kind = 'fund_agent'")?;
    let text = tamper(
        s,
        "a forged fare table",
        &format!(
            "INSERT INTO fare_tables (id, effective_from_us, time_zone, body, created_at_us, event_id) \
             VALUES (9001, 0, 'Asia/Makassar', '{}', 0, {float_decision})",
            body.replace("3500", "1")
        ),
        "DELETE FROM fare_tables WHERE id = 9001",
        &[("fare_tables", 9001, "event_id")],
    )?;
    check!(
        text.contains(&format!(
            "has no approved fare_table request: its event_id {float_decision} approves a fund_agent request"
        )),
        "{text}"
    );
    texts.push(text);
    Ok(())
}

/// Tampers 15 to 18: the bus boarding moved to another stop, its tap deleted, the ferry's
/// hold linked to the bus ride instead (the ferry ride would be held again), and unlinked.
fn tap_and_ride_entry_tampers_are_found(s: &Server, n: &Network, texts: &mut Vec<String>) -> TestResult {
    let Network { bus_ride, ferry_ride, hold, .. } = *n;
    let text = tamper(
        s,
        "a tap's stop",
        &format!("UPDATE transit_taps SET stop = 5 WHERE event_id = {bus_ride}"),
        &format!("UPDATE transit_taps SET stop = 3 WHERE event_id = {bus_ride}"),
        &[("transit_taps", bus_ride, "stop")],
    )?;
    check!(
        text.contains(&format!("transit_taps row {bus_ride} (card ")) && text.contains("stop 5 but its leaf says 3"),
        "{text}"
    );
    texts.push(text);
    let text = tamper(
        s,
        "a deleted tap",
        &format!(
            "CREATE TABLE kept AS SELECT * FROM transit_taps WHERE event_id = {bus_ride}; \
             DELETE FROM transit_taps WHERE event_id = {bus_ride}"
        ),
        "INSERT INTO transit_taps SELECT * FROM kept; DROP TABLE kept",
        &[("transit_taps", bus_ride, "event_id")],
    )?;
    check!(text.contains(&format!("transit_tap event {bus_ride} has no row")), "{text}");
    texts.push(text);
    let text = tamper(
        s,
        "a ride entry's ride",
        &format!("UPDATE transit_entries SET ride_event_id = {bus_ride} WHERE entry_seq = {hold}"),
        &format!("UPDATE transit_entries SET ride_event_id = {ferry_ride} WHERE entry_seq = {hold}"),
        &[("transit_entries", hold, "ride_event_id")],
    )?;
    check!(text.contains(&format!("ride_event_id {bus_ride} but its entry's leaf says ride:{ferry_ride}")), "{text}");
    texts.push(text);
    let text = tamper(
        s,
        "an unlinked ride entry",
        &format!(
            "CREATE TABLE kept AS SELECT * FROM transit_entries WHERE entry_seq = {hold}; \
             DELETE FROM transit_entries WHERE entry_seq = {hold}"
        ),
        "INSERT INTO transit_entries SELECT * FROM kept; DROP TABLE kept",
        &[("transit_entries", hold, "entry_seq")],
    )?;
    check!(text.contains(&format!("entry {hold} is ride {ferry_ride}'s")), "{text}");
    texts.push(text);
    Ok(())
}
