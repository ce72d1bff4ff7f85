//! Issue 13: `kartu audit verify` checks the registry. After a city day that uses every
//! kind of registry write — cards issued, blocked, unblocked and replaced; a service point
//! with a policy; a terminal with a key and offline limits; a credential revoked; an
//! operator made by approval and later revoked by approval; an adjustment approved by a
//! second person and one rejected; a float above the threshold approved — verify passes on
//! the database. Then a database owner tampers behind the API, one tamper at a time: each
//! is reported with exactly its table, row and field (nothing else), no secret is printed,
//! and once it is undone verify passes again.

use ledger::verify::{verify, VerifyError, VerifyOptions};
use serde_json::{json, Value};

use crate::support::{id, Backend, City, Server, TestResult};

/// A finding as the test compares it: (table, row, field), with its text.
type Finding = ((String, i64, String), String);

/// `audit verify` on the server's database: Ok((registry rows, operator actions)) when
/// everything holds, Err(findings) when only the registry differs.
fn verify_db(s: &Server) -> Result<Result<(usize, usize), Vec<Finding>>, String> {
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
    let got: Vec<(String, i64, String)> = findings.iter().map(|f| f.0.clone()).collect();
    let want: Vec<(String, i64, String)> =
        expected.iter().map(|(t, r, f)| ((*t).to_owned(), *r, (*f).to_owned())).collect();
    let text = findings.iter().map(|f| f.1.clone()).collect::<Vec<_>>().join("\n");
    check_eq!(got, want, "{what}: {text}");
    for ((table, row, _), line) in &findings {
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
fn tamper(s: &Server, what: &str, sql: &str, undo: &str, expected: &[(&str, i64, &str)]) -> Result<String, String> {
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
    an_honest_registry_verifies(&c)?;
    let mut texts = Vec::new();
    texts.push(an_inserted_operator_credential_is_found(s)?);
    fee_policy_and_status_tampers_are_found(s, &day, &mut texts)?;
    token_amount_and_event_tampers_are_found(s, &day, &mut texts)?;
    a_revival_and_a_turned_decision_are_found(s, &day, &mut texts)?;
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
    let tables =
        ["holders", "cards", "merchants", "service_points", "agents", "credentials", "adjustments", "approvals"];
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
