//! Maker-checker per person (issue 12, finding 6): the review's chain is refused (a second
//! token minted by one operator approves nothing of theirs; a float above the threshold
//! waits for a second person; one operator cannot revoke the others), and a proper
//! two-person flow works. Every request and decision is an operator_action leaf.

use serde_json::{json, Value};

use crate::support::{id, idr, Backend, City, TestResult};

/// How many leaves of the audit log hold `needle` (an action name).
fn leaves_with(c: &City, needle: &str) -> Result<usize, String> {
    let leaves = c.s.leaves(&c.auditor)?;
    Ok(leaves.iter().filter(|l| l.2.windows(needle.len()).any(|w| w == needle.as_bytes())).count())
}

fn pending_ids(c: &City, token: &str) -> Result<Vec<String>, String> {
    let r = c.s.get("/v1/approvals?status=pending", token)?;
    let v = r.expect(200)?;
    let list = v["approvals"].as_array().ok_or("approvals")?;
    for a in list {
        check_eq!(a["status"], json!("pending"));
    }
    list.iter().map(id).collect()
}

/// What the review-chain scenario carries from one step to the next.
struct Chain {
    /// The first operator's token.
    a: String,
    /// The second operator's token.
    b: String,
    /// A third operator's (Citra's) token.
    c_tok: String,
    /// A's request to mint a second operator token for a puppet.
    mint: String,
    /// A's request to fund a float above the threshold.
    big_float: String,
    /// The journal's last entry before the float request.
    last: i64,
    /// A's requests to revoke B and C, in that order.
    revocations: Vec<String>,
    /// C's request to revoke A.
    revoke_a: String,
}

pub fn the_review_chain_is_refused(backend: Backend) -> TestResult {
    let c = City::new(backend, "10000.00")?;
    let s = &c.s;
    let a = s.operator.clone();
    let b = c.operator2.clone();
    let (requests_before, decisions_before) =
        (leaves_with(&c, "request_approval")?, leaves_with(&c, "approve_request")?);
    let mint = a_second_operator_token_is_only_a_request(&c, &a)?;
    let (last, big_float) = a_large_float_waits_for_a_second_person(&c, &a)?;
    let (c_tok, revocations, revoke_a) = one_operator_cannot_revoke_the_others(&c, &a, &b)?;
    let chain = Chain { a, b, c_tok, mint, big_float, last, revocations, revoke_a };
    let adj_a = the_puppet_and_its_maker_approve_nothing_of_each_other(&c, &chain)?;
    the_two_person_flow_posts_once(&c, &chain, &adj_a)?;
    rejections_and_revocations_take_effect(&c, &chain)?;
    approvals_are_listed_and_logged(&c, &chain, requests_before, decisions_before)
}

/// Operator A mints a second operator token: only a request, no credential, no token;
/// A cannot approve it, neither can an auditor or a terminal. Returns the request.
fn a_second_operator_token_is_only_a_request(c: &City, a: &str) -> Result<String, String> {
    let s = &c.s;
    s.post("/v1/credentials", a, &json!({"role": "operator", "name": "A again"}))?.problem(422, "invalid_field")?;
    let r = s.post("/v1/credentials", a, &json!({"role": "operator", "name": "A again", "person": "Puppet"}))?;
    let v = r.expect(202)?.clone();
    check_eq!(v["kind"], json!("create_operator_credential"));
    check_eq!(v["status"], json!("pending"));
    check_eq!(v["requested_person"], json!("first operator"));
    check!(!r.text.contains("kt_"), "a request carries no token: {}", r.text);
    let mint = id(&v)?;
    // A cannot approve it; neither can an auditor or a terminal.
    let r = s.post_empty(&format!("/v1/approvals/{mint}/approve"), a)?;
    r.problem(403, "second_operator_required")?;
    s.post_empty(&format!("/v1/approvals/{mint}/approve"), &c.auditor)?.problem(403, "forbidden")?;
    s.post_empty(&format!("/v1/approvals/{mint}/approve"), &c.pos_a)?.problem(403, "forbidden")?;
    check_eq!(pending_ids(c, a)?, vec![mint.clone()]);
    Ok(mint)
}

/// A funds a float above the threshold alone: a request, nothing posted. Returns the
/// journal's last entry and the request.
fn a_large_float_waits_for_a_second_person(c: &City, a: &str) -> Result<(i64, String), String> {
    let s = &c.s;
    let (last, _) = s.trial(&c.auditor)?;
    let float = format!("/v1/agents/{}/float", c.agent);
    let r = s.post(&float, a, &idr("50000000.01"))?;
    let v = r.expect(202)?.clone();
    check_eq!(v["kind"], json!("fund_agent"));
    check_eq!(v["request"]["amount_minor"], json!(5_000_000_001i64));
    let big_float = id(&v)?;
    s.post_empty(&format!("/v1/approvals/{big_float}/approve"), a)?.problem(403, "second_operator_required")?;
    check_eq!(s.trial(&c.auditor)?.0, last, "nothing posted before approval");
    // (The city's float, less the card's top-up of 10,000.00.)
    check_eq!(s.balance(&c.auditor, &c.agent_account)?, "49990000.00".to_owned());
    Ok((last, big_float))
}

/// A revokes every other operator: requests only; they keep working. Returns C's token,
/// A's revocation requests (of B, of C) and C's request to revoke A.
fn one_operator_cannot_revoke_the_others(c: &City, a: &str, b: &str) -> Result<(String, Vec<String>, String), String> {
    let s = &c.s;
    let (c_id, c_tok) = s.add_operator("Citra")?;
    let mut revocations = Vec::new();
    for victim in [c.operator2_id.as_str(), c_id.as_str()] {
        let r = s.delete(&format!("/v1/credentials/{victim}"), a)?;
        let v = r.expect(202)?;
        check_eq!(v["kind"], json!("revoke_operator_credential"));
        revocations.push(id(v)?);
    }
    let r = s.delete("/v1/credentials/1", &c_tok)?;
    let revoke_a = id(r.expect(202)?)?;
    for r in &revocations {
        s.post_empty(&format!("/v1/approvals/{r}/approve"), a)?.problem(403, "second_operator_required")?;
    }
    s.post("/v1/agents", b, &json!({"name": "B still works"}))?.expect(201)?;
    s.post("/v1/agents", &c_tok, &json!({"name": "C still works"}))?.expect(201)?;
    check_eq!(pending_ids(c, &c.auditor)?.len(), 5, "mint, float, three revocations");
    Ok((c_tok, revocations, revoke_a))
}

/// A careless second person approves the mint: the token comes once, in that answer.
/// The puppet works, but approves nothing of A's, and A nothing of the puppet's. Returns
/// A's pending adjustment.
fn the_puppet_and_its_maker_approve_nothing_of_each_other(c: &City, chain: &Chain) -> Result<String, String> {
    let s = &c.s;
    let Chain { a, b, c_tok, mint, big_float, last, revocations, .. } = chain;
    let key = s.key();
    let r = s.post_k(&format!("/v1/approvals/{mint}/approve"), b, &key, &json!({}))?;
    let v = r.expect(200)?.clone();
    check_eq!(v["status"], json!("approved"));
    check_eq!(v["decided_person"], json!("second operator"));
    let puppet = v["credential"]["token"].as_str().ok_or("token once")?.to_owned();
    let puppet_id = v["credential"]["id"].as_str().ok_or("credential id")?.to_owned();
    check_eq!(v["credential"]["person"], json!("Puppet"));
    check_eq!(v["credential"]["created_by"], json!("1"));
    check_eq!(v["result"]["credential_id"], json!(puppet_id));
    // A retry finds the same credential and shows no token; another decision is refused.
    let retry = s.post_k(&format!("/v1/approvals/{mint}/approve"), b, &key, &json!({}))?;
    check_eq!(retry.expect(200)?["credential"]["id"], json!(puppet_id));
    check!(!retry.text.contains(&puppet), "a retry shows the token");
    s.post_empty(&format!("/v1/approvals/{mint}/approve"), c_tok)?.problem(409, "approval_closed")?;
    s.post_empty(&format!("/v1/approvals/{mint}/reject"), c_tok)?.problem(409, "approval_closed")?;
    // The puppet works, but approves nothing of A's, and A nothing of the puppet's.
    s.post("/v1/agents", &puppet, &json!({"name": "puppet works"}))?.expect(201)?;
    s.post_empty(&format!("/v1/approvals/{big_float}/approve"), &puppet)?.problem(403, "second_operator_required")?;
    s.post_empty(&format!("/v1/approvals/{}/approve", revocations[0]), &puppet)?
        .problem(403, "second_operator_required")?;
    let body = json!({"account_id": c.card.account_id, "amount": "100.00", "reason": "puppet's"});
    let adj = id(s.post("/v1/adjustments", &puppet, &body)?.expect(201)?)?;
    s.post_empty(&format!("/v1/adjustments/{adj}/approve"), a)?.problem(403, "second_operator_required")?;
    let body = json!({"account_id": c.card.account_id, "amount": "100.00", "reason": "A's"});
    let adj_a = id(s.post("/v1/adjustments", a, &body)?.expect(201)?)?;
    s.post_empty(&format!("/v1/adjustments/{adj_a}/approve"), &puppet)?.problem(403, "second_operator_required")?;
    check_eq!(s.trial(&c.auditor)?.0, *last, "nothing posted by the chain");
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "10000.00".to_owned());
    Ok(adj_a)
}

/// The proper two-person flow: B approves the float; it posts once. C approves A's
/// adjustment through the approvals list; it posts once.
fn the_two_person_flow_posts_once(c: &City, chain: &Chain, adj_a: &str) -> TestResult {
    let s = &c.s;
    let Chain { b, c_tok, big_float, last, .. } = chain;
    let last = *last;
    let r = s.post_empty(&format!("/v1/approvals/{big_float}/approve"), b)?;
    let v = r.expect(200)?.clone();
    check_eq!(v["status"], json!("approved"));
    check_eq!(v["result"]["entry_seq"], json!(last + 1));
    check_eq!(s.balance(&c.auditor, &c.agent_account)?, "99990000.01".to_owned());
    s.post_empty(&format!("/v1/approvals/{big_float}/approve"), c_tok)?.problem(409, "approval_closed")?;
    s.post_empty(&format!("/v1/approvals/{big_float}/approve"), b)?.problem(409, "approval_closed")?;
    check_eq!(s.trial(&c.auditor)?.0, last + 1, "one entry");
    // C approves A's adjustment through the approvals list, too.
    let adj_approval = s.get("/v1/approvals?status=pending", c_tok)?.expect(200)?["approvals"]
        .as_array()
        .ok_or("approvals")?
        .iter()
        .find(|x| x["kind"] == json!("adjustment") && x["requested_by"] == json!("1"))
        .map(id)
        .ok_or("A's adjustment is listed")??;
    let v = s.post_empty(&format!("/v1/approvals/{adj_approval}/approve"), c_tok)?.expect(200)?.clone();
    check_eq!(v["result"]["entry_seq"], json!(last + 2));
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "10100.00".to_owned());
    let r = s.post_empty(&format!("/v1/adjustments/{adj_a}/approve"), b)?;
    check_eq!(r.expect(200)?["status"], json!("posted"));
    check_eq!(s.trial(&c.auditor)?.0, last + 2, "the adjustment posted once");
    Ok(())
}

/// B rejects A's request to revoke B; A's request to revoke C, approved by B, stops C;
/// C's request to revoke A is not carried out once C is revoked.
fn rejections_and_revocations_take_effect(c: &City, chain: &Chain) -> TestResult {
    let s = &c.s;
    let Chain { a, b, c_tok, revocations, revoke_a, .. } = chain;
    // B rejects A's request to revoke B.
    let r = s.post_empty(&format!("/v1/approvals/{}/reject", revocations[0]), b)?;
    check_eq!(r.expect(200)?["status"], json!("rejected"));
    s.post_empty(&format!("/v1/approvals/{}/approve", revocations[0]), c_tok)?.problem(409, "approval_closed")?;
    s.post("/v1/agents", b, &json!({"name": "B kept"}))?.expect(201)?;
    // C's request to revoke A: C may not approve it.
    s.post_empty(&format!("/v1/approvals/{revoke_a}/approve"), c_tok)?.problem(403, "second_operator_required")?;
    // A's request to revoke C, approved by B: C stops working.
    let r = s.post_empty(&format!("/v1/approvals/{}/approve", revocations[1]), b)?;
    check_eq!(r.expect(200)?["result"]["revoked"], json!(true));
    s.post("/v1/agents", c_tok, &json!({"name": "C gone"}))?.problem(401, "unauthorized")?;
    // C's own request to revoke A is not carried out now that C is revoked.
    let r = s.post_empty(&format!("/v1/approvals/{revoke_a}/approve"), b)?;
    r.problem(403, "second_operator_required")?;
    check!(r.json["detail"].as_str().is_some_and(|d| d.contains("revoked since")), "{}", r.text);
    s.post("/v1/agents", a, &json!({"name": "A kept"}))?.expect(201)?;
    // Left pending: C's request to revoke A, the puppet's adjustment.
    let left = pending_ids(c, &c.auditor)?;
    check_eq!(left.len(), 2, "pending: {left:?}");
    check!(left.contains(revoke_a), "pending: {left:?}");
    Ok(())
}

/// Operators and auditors read approvals by status, others are refused; every request
/// and every decision is a leaf of the audit log.
fn approvals_are_listed_and_logged(
    c: &City,
    chain: &Chain,
    requests_before: usize,
    decisions_before: usize,
) -> TestResult {
    let s = &c.s;
    let Chain { a, big_float, .. } = chain;
    // Reads: operators and auditors, by status; others are refused.
    let r = s.get(&format!("/v1/approvals/{big_float}"), &c.auditor)?;
    check_eq!(r.expect(200)?["status"], json!("approved"));
    s.get("/v1/approvals/98765", a)?.problem(404, "not_found")?;
    s.get("/v1/approvals?status=pending", &c.pos_a)?.problem(403, "forbidden")?;
    s.get("/v1/approvals?status=maybe", a)?.problem(422, "invalid_field")?;
    let approved = s.get("/v1/approvals?status=approved", &c.auditor)?;
    let approved: Vec<Value> = approved.expect(200)?["approvals"].as_array().ok_or("approvals")?.clone();
    check_eq!(approved.len(), 4, "mint, float, adjustment, revocation of C");
    let rejected = s.get("/v1/approvals?status=rejected", &c.auditor)?;
    check_eq!(rejected.expect(200)?["approvals"].as_array().map(Vec::len), Some(1));

    // Every request and every decision is a leaf of the audit log.
    check_eq!(leaves_with(c, "request_approval")? - requests_before, 5, "mint, float, three revocations");
    check_eq!(leaves_with(c, "approve_request")? - decisions_before, 4, "mint (once), float, adjustment, revoke C");
    check_eq!(leaves_with(c, "reject_request")?, 1);
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}

/// The float threshold: at it, posted at once (201); above it, a request (202) that the
/// requester cannot approve; a second person approves it and it posts once.
pub fn float_threshold(backend: Backend) -> TestResult {
    let c = City::new(backend, "0.00")?;
    let s = &c.s;
    let float = format!("/v1/agents/{}/float", c.agent);
    let (last, _) = s.trial(&c.auditor)?;
    let r = s.post(&float, &s.operator, &idr("50000000.00"))?;
    check_eq!(r.expect(201)?["balance"], idr("100000000.00"), "at the threshold: posted at once");
    let key = s.key();
    let r = s.post_k(&float, &s.operator, &key, &idr("60000000.00"))?;
    let pending = id(r.expect(202)?)?;
    // A retried request is the same request.
    let again = s.post_k(&float, &s.operator, &key, &idr("60000000.00"))?;
    check_eq!(id(again.expect(202)?)?, pending);
    check_eq!(s.trial(&c.auditor)?.0, last + 1);
    let r = s.post_empty(&format!("/v1/approvals/{pending}/approve"), &c.operator2)?;
    check_eq!(r.expect(200)?["result"]["entry_seq"], json!(last + 2));
    check_eq!(s.balance(&c.auditor, &c.agent_account)?, "160000000.00".to_owned());
    // The second person's own large float: the first operator approves it.
    let r = s.post(&float, &c.operator2, &idr("70000000.00"))?;
    let other = id(r.expect(202)?)?;
    s.post_empty(&format!("/v1/approvals/{other}/approve"), &c.operator2)?.problem(403, "second_operator_required")?;
    let r = s.post_empty(&format!("/v1/approvals/{other}/reject"), &s.operator)?;
    check_eq!(r.expect(200)?["status"], json!("rejected"));
    s.post_empty(&format!("/v1/approvals/{other}/approve"), &s.operator)?.problem(409, "approval_closed")?;
    check_eq!(s.balance(&c.auditor, &c.agent_account)?, "160000000.00".to_owned());
    check_eq!(s.trial(&c.auditor)?.0, last + 2);
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}
