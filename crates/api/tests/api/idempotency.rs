//! Idempotent retries on every write: the same key with the same body returns the first
//! result (same status, same body, same entry) and writes nothing; the same key with a
//! different body is 409 `idempotency_conflict` and writes nothing.

use serde_json::{json, Value};

use crate::support::{id, idr, Backend, Body, City, Server, TestResult};

struct Retry<'a> {
    s: &'a Server,
    auditor: &'a str,
}

impl Retry<'_> {
    fn mark(&self) -> Result<(i64, i64), String> {
        Ok((self.s.trial(self.auditor)?.0, self.s.tree_size()?))
    }

    /// Sends the request twice with one key: the second answer equals the first (but for
    /// `token`, shown once) and writes nothing. Returns the key and the first answer.
    fn twice(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
        ok: u16,
    ) -> Result<(String, Value), String> {
        let key = self.s.key();
        let send = || self.s.send(method, path, Some(token), Some(&key), body.map_or(Body::None, Body::Json));
        let first = send()?;
        let mut v1 = first.expect(ok).map_err(|e| format!("{method} {path}: {e}"))?.clone();
        let before = self.mark()?;
        let second = send()?;
        let mut v2 = second.expect(ok).map_err(|e| format!("{method} {path} retried: {e}"))?.clone();
        check_eq!(self.mark()?, before, "{method} {path}: a retry wrote something");
        if let Some(t) = v1.as_object_mut().and_then(|o| o.remove("token")) {
            check!(t.is_string(), "token");
            check!(v2.get("token").is_none(), "{method} {path}: a retry shows the token again: {v2}");
        }
        if let Some(o) = v2.as_object_mut() {
            o.remove("token");
        }
        check_eq!(v2, v1, "{method} {path}: the retry's answer differs");
        Ok((key, v1))
    }

    /// The same key with another request: 409, nothing written.
    fn conflict(&self, method: &str, path: &str, token: &str, key: &str, body: Option<&Value>) -> TestResult {
        let before = self.mark()?;
        let r = self.s.send(method, path, Some(token), Some(key), body.map_or(Body::None, Body::Json))?;
        r.problem(409, "idempotency_conflict").map_err(|e| format!("{method} {path} with a reused key: {e}"))?;
        check_eq!(self.mark()?, before, "{method} {path}: a conflict wrote something");
        Ok(())
    }
}

pub fn idempotent_retries(backend: Backend) -> TestResult {
    let c = City::new(backend, "200000.00")?;
    let s = &c.s;
    let t = Retry { s, auditor: &c.auditor };
    let payment = a_payment_is_charged_once(&c, &t)?;
    refunds_holds_captures_and_voids(&c, &t, &payment)?;
    topups_inquiries_and_access_checks(&c, &t)?;
    holders_and_cards(&c, &t)?;
    merchants_credentials_agents_and_adjustments(&c, &t)?;
    a_settlement_run_is_paid_once(&c, &t)
}

/// Payments: one charge, one entry, whatever the number of retries; keys are per
/// credential. Returns the payment.
fn a_payment_is_charged_once(c: &City, t: &Retry) -> Result<String, String> {
    let s = &c.s;
    let tap = s.tap(&c.card);
    let body = json!({"tap": tap, "amount": "12500.00", "reference": "INV-9"});
    let (key, p) = t.twice("POST", "/v1/payments", &c.pos_a, Some(&body), 201)?;
    check_eq!(p["balance"], idr("187500.00"));
    for _ in 0..3 {
        let r = s.post_k("/v1/payments", &c.pos_a, &key, &body)?;
        check_eq!(r.expect(201)?["entry_seq"], p["entry_seq"]);
    }
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "187500.00".to_owned(), "charged once");
    t.conflict(
        "POST",
        "/v1/payments",
        &c.pos_a,
        &key,
        Some(&json!({"tap": tap, "amount": "12500.01", "reference": "INV-9"})),
    )?;
    t.conflict(
        "POST",
        "/v1/payments",
        &c.pos_a,
        &key,
        Some(&json!({"tap": s.tap(&c.card), "amount": "12500.00", "reference": "INV-9"})),
    )?;
    // Keys are per credential: another terminal's same key is its own payment.
    let r = s.post_k("/v1/payments", &c.pos_b, &key, &json!({"tap": s.tap(&c.card), "amount": "100.00"}))?;
    check!(r.expect(201)?["entry_seq"] != p["entry_seq"], "another terminal's key is another payment");
    let payment = id(&p)?;
    Ok(payment)
}

/// Refunds; holds (the expiry is computed from the time of the request: a retry later
/// must still be the same hold), captures and voids.
fn refunds_holds_captures_and_voids(c: &City, t: &Retry, payment: &str) -> TestResult {
    let s = &c.s;
    let path = format!("/v1/payments/{payment}/refunds");
    let (key, _) = t.twice("POST", &path, &c.pos_a, Some(&json!({"amount": "500.00", "reason": "late"})), 201)?;
    t.conflict("POST", &path, &c.pos_a, &key, Some(&json!({"amount": "600.00", "reason": "late"})))?;

    // Holds (the expiry is computed from the time of the request: a retry later must still
    // be the same hold), captures and voids.
    let tap = s.tap(&c.card);
    let hold_body = json!({"tap": tap, "amount": "20000.00", "reference": "P-1", "expires_in_minutes": 60});
    let (key, h) = t.twice("POST", "/v1/holds", &c.pos_a, Some(&hold_body), 201)?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r = s.post_k("/v1/holds", &c.pos_a, &key, &hold_body)?;
    check_eq!(r.expect(201)?, &h);
    t.conflict(
        "POST",
        "/v1/holds",
        &c.pos_a,
        &key,
        Some(&json!({"tap": tap, "amount": "20000.00", "reference": "P-1", "expires_in_minutes": 61})),
    )?;
    let hold = id(&h)?;
    let (key, _) =
        t.twice("POST", &format!("/v1/holds/{hold}/capture"), &c.pos_a, Some(&json!({"amount": "15000.00"})), 201)?;
    t.conflict("POST", &format!("/v1/holds/{hold}/capture"), &c.pos_a, &key, Some(&json!({"amount": "14000.00"})))?;
    let h2 = id(s.post("/v1/holds", &c.pos_a, &json!({"tap": s.tap(&c.card), "amount": "1000.00"}))?.expect(201)?)?;
    let h3 = id(s.post("/v1/holds", &c.pos_a, &json!({"tap": s.tap(&c.card), "amount": "1000.00"}))?.expect(201)?)?;
    let (key, _) = t.twice("POST", &format!("/v1/holds/{h2}/void"), &c.pos_a, None, 201)?;
    t.conflict("POST", &format!("/v1/holds/{h3}/void"), &c.pos_a, &key, None)?;
    Ok(())
}

/// Top-ups by card id and by tap, kiosk inquiries, and access checks at a gate with
/// anti-passback.
fn topups_inquiries_and_access_checks(c: &City, t: &Retry) -> TestResult {
    let s = &c.s;
    let op = s.operator.clone();
    // Top-ups, by card id and by tap.
    let (key, _) =
        t.twice("POST", "/v1/topups", &c.teller, Some(&json!({"card_id": c.card.id, "amount": "1000.00"})), 201)?;
    t.conflict("POST", "/v1/topups", &c.teller, &key, Some(&json!({"card_id": c.card.id, "amount": "1000.01"})))?;
    let tap = s.tap(&c.card);
    let (key, _) = t.twice("POST", "/v1/topups", &c.teller, Some(&json!({"tap": tap, "amount": "10.00"})), 201)?;
    t.conflict("POST", "/v1/topups", &c.teller, &key, Some(&json!({"card_id": c.card.id, "amount": "10.00"})))?;

    // Kiosk.
    let tap = s.tap(&c.card);
    let (key, _) = t.twice("POST", "/v1/balance-inquiries", &c.kiosk, Some(&json!({"tap": tap})), 200)?;
    t.conflict("POST", "/v1/balance-inquiries", &c.kiosk, &key, Some(&json!({"tap": s.tap(&c.card)})))?;

    // Access checks at a gate with anti-passback: the retry gets the first decision (an
    // allow), not a fresh one (which would be passback).
    let policy = json!({"anti_passback_minutes": 30, "issues_queue_numbers": true});
    let (_, sp) = t.twice(
        "POST",
        "/v1/service-points",
        &op,
        Some(&json!({"name": "Gate", "service": "library", "policy": policy})),
        201,
    )?;
    let gate = s.credential("service_point", "gate 1", Some(("service_point_id", &id(&sp)?)))?;
    let tap = s.tap(&c.card);
    let (key, d) = t.twice("POST", "/v1/access-checks", &gate, Some(&json!({"tap": tap})), 200)?;
    check_eq!(d["decision"], json!("allow"));
    check_eq!(d["queue_number"], json!(1));
    t.conflict("POST", "/v1/access-checks", &gate, &key, Some(&json!({"tap": s.tap(&c.card)})))?;
    let r = s.post("/v1/access-checks", &gate, &json!({"tap": s.tap(&c.card)}))?;
    check_eq!(r.expect(200)?["reason"], json!("passback"), "a new check is a new decision");
    Ok(())
}

/// Operator writes: holders, cards, blocks, unblocks and replacements.
fn holders_and_cards(c: &City, t: &Retry) -> TestResult {
    let s = &c.s;
    let op = s.operator.clone();
    let holder = json!({"name": "Retry Holder", "nik": "7371050505050007", "categories": ["student"]});
    let (key, hv) = t.twice("POST", "/v1/holders", &op, Some(&holder), 201)?;
    t.conflict(
        "POST",
        "/v1/holders",
        &op,
        &key,
        Some(&json!({"name": "Another Name", "nik": "7371050505050007", "categories": ["student"]})),
    )?;
    t.conflict(
        "POST",
        "/v1/holders",
        &op,
        &key,
        Some(&json!({"name": "Retry Holder", "nik": "7371050505050008", "categories": ["student"]})),
    )?;
    let holder_id = id(&hv)?;
    let (key, card) =
        t.twice("POST", "/v1/cards", &op, Some(&json!({"uid": "04C0FFEE000001", "holder_id": holder_id})), 201)?;
    t.conflict("POST", "/v1/cards", &op, &key, Some(&json!({"uid": "04C0FFEE000002", "holder_id": holder_id})))?;
    let card_id = id(&card)?;
    let (key, _) =
        t.twice("POST", &format!("/v1/cards/{card_id}/block"), &op, Some(&json!({"reason": "lost"})), 200)?;
    t.conflict("POST", &format!("/v1/cards/{card_id}/block"), &op, &key, Some(&json!({"reason": "stolen"})))?;
    let (key, _) = t.twice("POST", &format!("/v1/cards/{card_id}/unblock"), &op, None, 200)?;
    t.conflict("POST", &format!("/v1/cards/{}/unblock", c.card.id), &op, &key, None)?;
    s.post("/v1/topups", &c.teller, &json!({"card_id": card_id, "amount": "777.00"}))?.expect(201)?;
    let (key, rep) = t.twice(
        "POST",
        &format!("/v1/cards/{card_id}/replace"),
        &op,
        Some(&json!({"new_uid": "04C0FFEE000003"})),
        201,
    )?;
    check_eq!(rep["moved"], idr("777.00"));
    t.conflict(
        "POST",
        &format!("/v1/cards/{card_id}/replace"),
        &op,
        &key,
        Some(&json!({"new_uid": "04C0FFEE000004"})),
    )?;
    Ok(())
}

/// Operator writes: merchants, credentials and their revocation, agents and their float,
/// adjustments and their approval.
fn merchants_credentials_agents_and_adjustments(c: &City, t: &Retry) -> TestResult {
    let s = &c.s;
    let op = s.operator.clone();
    let (key, m) = t.twice(
        "POST",
        "/v1/merchants",
        &op,
        Some(&json!({"name": "Retry Mart", "category": "grocery", "fee_rate": "0.01"})),
        201,
    )?;
    t.conflict(
        "POST",
        "/v1/merchants",
        &op,
        &key,
        Some(&json!({"name": "Retry Mart", "category": "grocery", "fee_rate": "0.02"})),
    )?;
    let (key, _) = t.twice(
        "POST",
        "/v1/credentials",
        &op,
        Some(&json!({"role": "merchant_terminal", "name": "till", "merchant_id": id(&m)?})),
        201,
    )?;
    t.conflict("POST", "/v1/credentials", &op, &key, Some(&json!({"role": "kiosk", "name": "till"})))?;
    let (k1, _) = s.credential_with_id("kiosk", "k1")?;
    let (k2, _) = s.credential_with_id("kiosk", "k2")?;
    let (key, _) = t.twice("DELETE", &format!("/v1/credentials/{k1}"), &op, None, 200)?;
    t.conflict("DELETE", &format!("/v1/credentials/{k2}"), &op, &key, None)?;
    let (key, a) = t.twice("POST", "/v1/agents", &op, Some(&json!({"name": "Retry Agent"})), 201)?;
    t.conflict("POST", "/v1/agents", &op, &key, Some(&json!({"name": "Other Agent"})))?;
    let float = format!("/v1/agents/{}/float", id(&a)?);
    let (key, _) = t.twice("POST", &float, &op, Some(&idr("5000.00")), 201)?;
    t.conflict("POST", &float, &op, &key, Some(&idr("5001.00")))?;
    let adj_body = json!({"account_id": c.card.account_id, "amount": "5.00", "reason": "retry"});
    let (key, adj) = t.twice("POST", "/v1/adjustments", &op, Some(&adj_body), 201)?;
    t.conflict(
        "POST",
        "/v1/adjustments",
        &op,
        &key,
        Some(&json!({"account_id": c.card.account_id, "amount": "6.00", "reason": "retry"})),
    )?;
    let adj2 = id(s.post("/v1/adjustments", &op, &adj_body)?.expect(201)?)?;
    let (key, _) = t.twice("POST", &format!("/v1/adjustments/{}/approve", id(&adj)?), &c.operator2, None, 200)?;
    t.conflict("POST", &format!("/v1/adjustments/{adj2}/approve"), &c.operator2, &key, None)?;
    Ok(())
}

/// A settlement run retried reports the same lines and pays nothing twice.
fn a_settlement_run_is_paid_once(c: &City, t: &Retry) -> TestResult {
    let s = &c.s;
    let op = s.operator.clone();
    let (key, st) = t.twice("POST", "/v1/settlements", &op, None, 201)?;
    check_eq!(st["lines"].as_array().map(Vec::len), Some(2), "{st}");
    c.pay(&c.card, "100.00")?.expect(201)?;
    let r = s.send("POST", "/v1/settlements", Some(&op), Some(&key), Body::None)?;
    check_eq!(r.expect(201)?, &st, "a retried run is the same run");
    let r = s.post_empty("/v1/settlements", &op)?;
    check_eq!(r.expect(201)?["lines"][0]["gross"], idr("100.00"), "the next run settles what came after");
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}
