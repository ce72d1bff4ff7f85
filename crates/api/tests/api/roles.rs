//! Every role's scope: a token never reads or writes outside it.

use serde_json::json;

use crate::support::{id, idr, Backend, Body, City, TestResult};

pub fn roles_and_scopes(backend: Backend) -> TestResult {
    let c = City::new(backend, "500000.00")?;
    let hold = a_merchant_sees_nothing_of_another(&c)?;
    an_auditor_reads_everything_and_writes_nothing(&c, &hold)?;
    each_role_is_refused_outside_its_scope(&c)?;
    bad_and_revoked_tokens_are_refused(&c)?;
    revoked_auditors_and_operators_stop_at_once(&c)?;
    credentials_are_scoped_and_public_reads_need_no_token(&c)
}

/// Merchant A's payment and hold are invisible to merchant B: 404, never 403, so B does
/// not even learn that they exist; A's own refund works. Returns A's hold.
fn a_merchant_sees_nothing_of_another(c: &City) -> Result<String, String> {
    let s = &c.s;
    let pay = c.pay(&c.card, "10000.00")?;
    let payment = id(pay.expect(201)?)?;
    let r = s.post("/v1/holds", &c.pos_a, &json!({"tap": s.tap(&c.card), "amount": "5000.00"}))?;
    let hold = id(r.expect(201)?)?;
    let (last, _) = s.trial(&c.auditor)?;
    s.post(&format!("/v1/payments/{payment}/refunds"), &c.pos_b, &json!({"amount": "1.00"}))?
        .problem(404, "not_found")?;
    s.post(&format!("/v1/holds/{hold}/capture"), &c.pos_b, &json!({"amount": "1.00"}))?.problem(404, "not_found")?;
    s.post_empty(&format!("/v1/holds/{hold}/void"), &c.pos_b)?.problem(404, "not_found")?;
    check_eq!(s.trial(&c.auditor)?.0, last, "nothing written by B");
    let r = s.get("/v1/payments", &c.pos_b)?;
    check_eq!(r.expect(200)?["payments"], json!([]), "B sees none of A's payments");
    let r = s.get("/v1/payments", &c.pos_a)?;
    let ids: Vec<String> = r.expect(200)?["payments"]
        .as_array()
        .ok_or("payments")?
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect();
    check_eq!(ids, vec![payment.clone()]);
    let r = s.get("/v1/merchant/statement", &c.pos_b)?;
    check_eq!(r.expect(200)?["lines"], json!([]));
    check_eq!(s.get("/v1/merchant/statement", &c.pos_a)?.expect(200)?["closing"], idr("9930.00"));
    // A's own refund works.
    s.post(&format!("/v1/payments/{payment}/refunds"), &c.pos_a, &json!({"amount": "1.00"}))?.expect(201)?;
    Ok(hold)
}

/// An auditor reads everything and writes nothing.
fn an_auditor_reads_everything_and_writes_nothing(c: &City, hold: &str) -> TestResult {
    let s = &c.s;
    let (last, _) = s.trial(&c.auditor)?;
    let tree = s.tree_size()?;
    let block = format!("/v1/cards/{}/block", c.card.id);
    let float = format!("/v1/agents/{}/float", c.agent);
    let writes: Vec<(&str, serde_json::Value)> = vec![
        ("/v1/holders", json!({"name": "X", "nik": "7371010101900009", "categories": []})),
        ("/v1/cards", json!({"uid": "04010203040506", "holder_id": c.holder})),
        (&block, json!({"reason": "fraud"})),
        ("/v1/merchants", json!({"name": "X", "category": "other", "fee_rate": "0"})),
        ("/v1/agents", json!({"name": "X"})),
        (&float, idr("1.00")),
        ("/v1/credentials", json!({"role": "auditor", "name": "me too"})),
        ("/v1/adjustments", json!({"account_id": c.card.account_id, "amount": "1.00", "reason": "x"})),
        ("/v1/payments", json!({"tap": s.tap(&c.card), "amount": "1.00"})),
        ("/v1/holds", json!({"tap": s.tap(&c.card), "amount": "1.00"})),
        ("/v1/topups", json!({"card_id": c.card.id, "amount": "1.00"})),
        ("/v1/balance-inquiries", json!({"tap": s.tap(&c.card)})),
        ("/v1/access-checks", json!({"tap": s.tap(&c.card)})),
    ];
    for (path, body) in &writes {
        let r = s.post(path, &c.auditor, body)?;
        r.problem(403, "forbidden").map_err(|e| format!("auditor POST {path}: {e}"))?;
    }
    let (unblock, void) = (format!("/v1/cards/{}/unblock", c.card.id), format!("/v1/holds/{hold}/void"));
    for path in ["/v1/settlements", unblock.as_str(), void.as_str()] {
        s.post_empty(path, &c.auditor)?.problem(403, "forbidden").map_err(|e| format!("auditor POST {path}: {e}"))?;
    }
    let r = s.send("DELETE", "/v1/credentials/1", Some(&c.auditor), Some("del-1"), Body::None)?;
    r.problem(403, "forbidden")?;
    check_eq!(s.trial(&c.auditor)?.0, last, "an auditor wrote an entry");
    check_eq!(s.tree_size()?, tree, "an auditor wrote a leaf");
    Ok(())
}

/// A kiosk cannot pay; nor can an agent or a service point; a merchant cannot top up,
/// check access, answer a kiosk, or read another role's data. The operator reads the
/// audit data too; the auditor does not issue cards.
fn each_role_is_refused_outside_its_scope(c: &City) -> TestResult {
    let s = &c.s;
    let op = s.operator.clone();
    let sp = s.post(
        "/v1/service-points",
        &op,
        &json!({"name": "Puskesmas", "service": "clinic", "policy": {"categories": []}}),
    )?;
    let sp = id(sp.expect(201)?)?;
    let desk = s.credential("service_point", "desk", Some(("service_point_id", &sp)))?;
    for token in [&c.kiosk, &c.teller, &desk, &c.auditor] {
        let r = s.post("/v1/payments", token, &json!({"tap": s.tap(&c.card), "amount": "1.00"}))?;
        r.problem(403, "forbidden")?;
        s.get("/v1/payments", token)?.problem(403, "forbidden")?;
        s.get("/v1/merchant/statement", token)?.problem(403, "forbidden")?;
    }
    for token in [&c.pos_a, &c.kiosk, &desk, &c.auditor] {
        let r = s.post("/v1/topups", token, &json!({"card_id": c.card.id, "amount": "1.00"}))?;
        r.problem(403, "forbidden")?;
    }
    for token in [&c.pos_a, &c.teller, &desk, &c.auditor] {
        s.post("/v1/balance-inquiries", token, &json!({"tap": s.tap(&c.card)}))?.problem(403, "forbidden")?;
    }
    for token in [&c.pos_a, &c.teller, &c.kiosk, &c.auditor] {
        s.post("/v1/access-checks", token, &json!({"tap": s.tap(&c.card)}))?.problem(403, "forbidden")?;
    }
    for token in [&c.pos_a, &c.teller, &c.kiosk, &desk] {
        for path in [
            "/v1/audit/entries".to_owned(),
            "/v1/audit/leaves".to_owned(),
            "/v1/audit/trial-balance".to_owned(),
            "/v1/audit/access-log".to_owned(),
            format!("/v1/audit/accounts/{}/balance", c.card.account_id),
            format!("/v1/audit/accounts/{}/statement", c.merchant_b_account),
        ] {
            s.get(&path, token)?.problem(403, "forbidden").map_err(|e| format!("GET {path}: {e}"))?;
        }
        s.get(&format!("/v1/cards/{}", c.card.id), token)?.problem(403, "forbidden")?;
        let r = s.post("/v1/holders", token, &json!({"name": "X", "nik": "7371010101900009", "categories": []}))?;
        r.problem(403, "forbidden")?;
    }
    // The operator reads the audit data too; the auditor does not issue cards.
    s.get("/v1/audit/trial-balance", &op)?.expect(200)?;
    s.get(&format!("/v1/cards/{}", c.card.id), &c.auditor)?.problem(403, "forbidden")?;
    Ok(())
}

/// Tokens: missing, malformed, unknown → 401; a terminal's revoked token → 401 at once,
/// and the revocation shows no token.
fn bad_and_revoked_tokens_are_refused(c: &City) -> TestResult {
    let s = &c.s;
    let op = s.operator.clone();
    let pay_body = json!({"tap": s.tap(&c.card), "amount": "1.00"});
    let r = s.send("POST", "/v1/payments", None, Some("k-none"), Body::Json(&pay_body))?;
    r.problem(401, "unauthorized")?;
    let r = s.send("POST", "/v1/payments", Some("kt_not-a-real-token"), Some("k-bad"), Body::Json(&pay_body))?;
    r.problem(401, "unauthorized")?;
    let r = s.send("POST", "/v1/payments", Some(&c.pos_a[3..]), Some("k-bad2"), Body::Json(&pay_body))?;
    r.problem(401, "unauthorized")?;
    s.send("GET", "/v1/audit/entries", None, None, Body::None)?.problem(401, "unauthorized")?;

    let r = s.post(
        "/v1/credentials",
        &op,
        &json!({"role": "merchant_terminal", "name": "pos A2", "merchant_id": c.merchant_a}),
    )?;
    let v = r.expect(201)?.clone();
    let (cred, token) = (id(&v)?, v["token"].as_str().ok_or("token")?.to_owned());
    check_eq!(v["revoked"], json!(false));
    check_eq!(v["merchant_id"], json!(c.merchant_a));
    c.s.post("/v1/payments", &token, &json!({"tap": s.tap(&c.card), "amount": "2.00"}))?.expect(201)?;
    s.get("/v1/payments", &token)?.expect(200)?;
    let r = s.send("DELETE", &format!("/v1/credentials/{cred}"), Some(&op), Some(&s.key()), Body::None)?;
    let v = r.expect(200)?;
    check_eq!(v["revoked"], json!(true));
    check!(v.get("token").is_none(), "no token after creation: {v}");
    let (last, _) = s.trial(&c.auditor)?;
    s.post("/v1/payments", &token, &json!({"tap": s.tap(&c.card), "amount": "2.00"}))?.problem(401, "unauthorized")?;
    s.get("/v1/payments", &token)?.problem(401, "unauthorized")?;
    check_eq!(s.trial(&c.auditor)?.0, last);
    Ok(())
}

/// A revoked auditor and a revoked operator too; revoking an operator is a request that
/// takes effect when another person approves.
fn revoked_auditors_and_operators_stop_at_once(c: &City) -> TestResult {
    let s = &c.s;
    let op = s.operator.clone();
    let (aud_id, aud) = s.credential_with_id("auditor", "temporary auditor")?;
    s.get("/v1/audit/trial-balance", &aud)?.expect(200)?;
    s.send("DELETE", &format!("/v1/credentials/{aud_id}"), Some(&c.operator2), Some("rev-aud"), Body::None)?
        .expect(200)?;
    s.get("/v1/audit/trial-balance", &aud)?.problem(401, "unauthorized")?;
    let (op3_id, op3) = s.add_operator("leaving operator")?;
    s.post("/v1/agents", &op3, &json!({"name": "ok"}))?.expect(201)?;
    // Revoking an operator is a request; it takes effect when another person approves.
    let r = s.send("DELETE", &format!("/v1/credentials/{op3_id}"), Some(&op), Some("rev-op3"), Body::None)?;
    let approval = id(r.expect(202)?)?;
    s.post("/v1/agents", &op3, &json!({"name": "still ok"}))?.expect(201)?;
    s.post_empty(&format!("/v1/approvals/{approval}/approve"), &c.operator2)?.expect(200)?;
    s.post("/v1/agents", &op3, &json!({"name": "not ok"}))?.problem(401, "unauthorized")?;
    s.send("DELETE", "/v1/credentials/99999", Some(&op), Some("rev-x"), Body::None)?.problem(404, "not_found")?;
    Ok(())
}

/// Credentials are scoped: a terminal needs its merchant, other roles take none. Public
/// reads need no token.
fn credentials_are_scoped_and_public_reads_need_no_token(c: &City) -> TestResult {
    let s = &c.s;
    let op = s.operator.clone();
    let bad = [
        json!({"role": "merchant_terminal", "name": "x"}),
        json!({"role": "merchant_terminal", "name": "x", "merchant_id": "99999"}),
        json!({"role": "service_point", "name": "x", "merchant_id": c.merchant_a}),
        json!({"role": "top_up_agent", "name": "x"}),
        json!({"role": "kiosk", "name": "x", "agent_id": c.agent}),
        json!({"role": "auditor", "name": "x", "merchant_id": c.merchant_a}),
    ];
    for body in bad {
        s.post("/v1/credentials", &op, &body)?.problem(422, "invalid_field").map_err(|e| format!("{body}: {e}"))?;
    }
    s.post("/v1/credentials", &op, &json!({"role": "superuser", "name": "x"}))?.problem(422, "invalid_body")?;

    // Public reads need no token.
    for path in ["/v1/transparency", "/v1/audit/public-key", "/healthz", "/readyz", "/metrics", "/openapi.json"] {
        check_eq!(s.get_public(path)?.status, 200, "GET {path}");
    }
    s.checkpoint_covering(1)?;
    s.get_public("/v1/audit/proofs/inclusion?leaf_index=0&tree_size=1")?.expect(200)?;
    s.get_public("/v1/audit/proofs/consistency?first=1&second=1")?.expect(200)?;
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}
