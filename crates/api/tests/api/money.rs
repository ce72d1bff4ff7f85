//! Money moved through the API: payments with fees, refunds, holds, top-ups, limits, the
//! card's life (block, unblock, replace), settlements and adjustments. Expected values are
//! computed by hand, not read back from the server.

use serde_json::{json, Value};

use crate::support::{id, idr, Backend, City, Resp, TestResult};

/// The postings of an entry as (account_id, amount) pairs.
fn postings(entry: &Value) -> Vec<(String, String)> {
    entry["postings"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["account_id"].as_str().unwrap_or("?").to_owned(),
                        p["amount"]["amount"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entry(entries: &[Value], seq: i64) -> Result<&Value, String> {
    entries.iter().find(|e| e["entry_seq"] == json!(seq)).ok_or_else(|| format!("no entry {seq}"))
}

fn seq(v: &Value) -> Result<i64, String> {
    v["entry_seq"].as_i64().ok_or_else(|| format!("no entry_seq in {v}"))
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

pub fn payments_fees_and_refunds(backend: Backend) -> TestResult {
    let c = City::new(backend, "1000000.00")?;
    // 0.7 % of 12 500.00 is 87.50 exactly.
    let r = c.pay(&c.card, "12500.00")?;
    let p = r.expect(201)?.clone();
    check_eq!(p["status"], json!("approved"));
    check_eq!(p["amount"], idr("12500.00"));
    check_eq!(p["fee"], idr("87.50"));
    check_eq!(p["balance"], idr("987500.00"));
    check_eq!(p["card_id"], json!(c.card.id));
    let payment = id(&p)?;
    check_eq!(payment, seq(&p)?.to_string());
    let expected_balance = fees_round_half_even(&c)?;
    let fee_account = a_payment_posts_wallet_merchant_and_fee_legs(&c, &p)?;
    refunds_return_the_fee_in_proportion(&c, &p, expected_balance, &fee_account)?;
    the_merchant_lists_its_payments(&c)
}

/// Half-even rounding to the minor unit, at 0.5 %: 1.00 → 0.5 minor → 0; 3.00 → 1.5 →
/// 2; 5.00 → 2.5 → 2 (half-up would give 1, 2, 3). Returns the card's balance in minor
/// units after these payments.
fn fees_round_half_even(c: &City) -> Result<i64, String> {
    let s = &c.s;
    let (m, m_account) = s.merchant("Parkir Pantai", "parking", "0.005")?;
    let pos = s.credential("merchant_terminal", "parking gate", Some(("merchant_id", &m)))?;
    let mut expected_balance: i64 = 98_750_000;
    for (amount, fee, net) in [("1.00", "0.00", "1.00"), ("3.00", "0.02", "2.98"), ("5.00", "0.02", "4.98")] {
        let r = s.post("/v1/payments", &pos, &json!({"tap": s.tap(&c.card), "amount": amount}))?;
        let v = r.expect(201)?;
        check_eq!(v["fee"], idr(fee), "fee on {amount}");
        expected_balance -= (amount.parse::<f64>().map_err(|e| e.to_string())? * 100.0).round() as i64;
        check_eq!(v["balance"], idr(&format!("{}.{:02}", expected_balance / 100, expected_balance % 100)));
        let entries = s.entries(&c.auditor)?;
        let e = entry(&entries, seq(v)?)?;
        check_eq!(e["kind"], json!("payment"));
        let legs = postings(e);
        check!(legs.contains(&(c.card.account_id.clone(), format!("-{amount}"))), "wallet leg: {legs:?}");
        check!(legs.contains(&(m_account.clone(), net.to_owned())), "merchant leg {net}: {legs:?}");
        check_eq!(legs.len(), if fee == "0.00" { 2 } else { 3 }, "fee leg only when there is a fee");
    }
    check_eq!(s.balance(&c.auditor, &m_account)?, "8.96".to_owned());
    Ok(expected_balance)
}

/// The 12 500.00 payment's postings: wallet -12500.00, merchant +12412.50, fees +87.50.
/// Returns the fee account.
fn a_payment_posts_wallet_merchant_and_fee_legs(c: &City, p: &Value) -> Result<String, String> {
    let s = &c.s;
    let entries = s.entries(&c.auditor)?;
    let e = entry(&entries, seq(p)?)?;
    let legs = sorted(postings(e));
    let fee_account = legs
        .iter()
        .find(|(a, _)| *a != c.card.account_id && *a != c.merchant_a_account)
        .map(|(a, _)| a.clone())
        .ok_or("no fee leg")?;
    check_eq!(
        legs,
        sorted(vec![
            (c.card.account_id.clone(), "-12500.00".into()),
            (c.merchant_a_account.clone(), "12412.50".into()),
            (fee_account.clone(), "87.50".into()),
        ])
    );
    Ok(fee_account)
}

/// Partial refunds up to the payment; the fee comes back in proportion: 40 % of 87.50
/// is 35.00, the remaining 60 % is 52.50. A refund beyond the payment writes nothing.
fn refunds_return_the_fee_in_proportion(c: &City, p: &Value, expected_balance: i64, fee_account: &str) -> TestResult {
    let s = &c.s;
    let payment = id(p)?;
    let refund = |amount: &str| {
        s.post(&format!("/v1/payments/{payment}/refunds"), &c.pos_a, &json!({"amount": amount, "reason": "returned"}))
    };
    let r = refund("5000.00")?;
    let v = r.expect(201)?;
    check_eq!(v["status"], json!("refunded"));
    check_eq!(v["amount"], idr("5000.00"));
    check_eq!(v["fee"], idr("35.00"));
    let card_after = expected_balance + 500_000;
    check_eq!(v["balance"], idr(&format!("{}.{:02}", card_after / 100, card_after % 100)));
    let entries = s.entries(&c.auditor)?;
    let e = entry(&entries, seq(v)?)?;
    check_eq!(e["kind"], json!("refund"));
    check_eq!(e["related_seq"], json!(seq(p)?));
    check_eq!(
        sorted(postings(e)),
        sorted(vec![
            (c.card.account_id.clone(), "5000.00".into()),
            (c.merchant_a_account.clone(), "-4965.00".into()),
            (fee_account.to_owned(), "-35.00".into()),
        ])
    );
    let r = refund("7500.00")?;
    check_eq!(r.expect(201)?["fee"], idr("52.50"));
    let (last, _) = s.trial(&c.auditor)?;
    let r = refund("0.01")?;
    r.problem(422, "refund_exceeds_payment")?;
    check_eq!(s.trial(&c.auditor)?.0, last, "a refused refund writes nothing");
    // The whole payment came back: merchant A and the fee account are back to zero.
    check_eq!(s.balance(&c.auditor, &c.merchant_a_account)?, "0.00".to_owned());
    check_eq!(s.balance(&c.auditor, fee_account)?, "0.04".to_owned());
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "999991.00".to_owned());
    Ok(())
}

/// The merchant's own list (newest first, paged with a cursor) and statement.
fn the_merchant_lists_its_payments(c: &City) -> TestResult {
    let s = &c.s;
    let r = s.get("/v1/payments?limit=10", &c.pos_a)?;
    let list = r.expect(200)?["payments"].as_array().ok_or("payments")?.clone();
    let statuses: Vec<&str> = list.iter().filter_map(|p| p["status"].as_str()).collect();
    check_eq!(statuses, vec!["refunded", "refunded", "approved"], "newest first");
    // Paging: one at a time, newest first, with the cursor.
    let r = s.get("/v1/payments?limit=1", &c.pos_a)?;
    let first = r.expect(200)?.clone();
    check_eq!(first["payments"][0]["id"], list[0]["id"]);
    let cursor = first["next_cursor"].as_str().ok_or("next_cursor")?;
    let r = s.get(&format!("/v1/payments?limit=1&cursor={cursor}"), &c.pos_a)?;
    check_eq!(r.expect(200)?["payments"][0]["id"], list[1]["id"]);
    let r = s.get("/v1/merchant/statement", &c.pos_a)?;
    let st = r.expect(200)?;
    check_eq!(st["opening"], idr("0.00"));
    check_eq!(st["closing"], idr("0.00"));
    let amounts: Vec<&str> =
        st["lines"].as_array().ok_or("lines")?.iter().filter_map(|l| l["amount"]["amount"].as_str()).collect();
    check_eq!(amounts, vec!["12412.50", "-4965.00", "-7447.50"]);
    check!(s.trial(&c.auditor)?.1, "trial balance balanced");
    Ok(())
}

pub fn topups_and_limits(backend: Backend) -> TestResult {
    let c = City::new(backend, "0.00")?;
    let s = &c.s;
    // By tap at the counter, then by card id.
    let r =
        s.post("/v1/topups", &c.teller, &json!({"tap": s.tap(&c.card), "amount": "1500000.00", "currency": "IDR"}))?;
    let v = r.expect(201)?;
    check_eq!(v["balance"], idr("1500000.00"));
    check_eq!(v["float"], idr("48500000.00"));
    check_eq!(v["card_id"], json!(c.card.id));
    check!(v["entry_seq"].is_i64() && v["leaf_index"].is_i64() && v["leaf_hash"].is_string(), "receipt: {v}");
    let r = s.post("/v1/topups", &c.teller, &json!({"card_id": c.card.id, "amount": "500000.00"}))?;
    check_eq!(r.expect(201)?["balance"], idr("2000000.00"));
    check_eq!(s.balance(&c.auditor, &c.agent_account)?, "48000000.00".to_owned());
    // The wallet's maximum balance is Rp 2,000,000.00.
    let (last, _) = s.trial(&c.auditor)?;
    let r = s.post("/v1/topups", &c.teller, &json!({"card_id": c.card.id, "amount": "0.01"}))?;
    r.problem(422, "exceeds_max_balance")?;
    let r = s.post("/v1/topups", &c.teller, &json!({"tap": s.tap(&c.card), "amount": "0.01"}))?;
    r.problem(422, "exceeds_max_balance")?;
    check_eq!(s.trial(&c.auditor)?.0, last);
    let r = s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?;
    let v = r.expect(200)?;
    check_eq!(v["balance"], idr("2000000.00"));
    check_eq!(v["status"], json!("active"));
    check_eq!(v["last_counter"], json!(1), "a refused tap does not move the counter");

    // An agent's float never goes below zero.
    let r = s.post("/v1/agents", &s.operator, &json!({"name": "Indomaret Panakkukang"}))?;
    let small = id(r.expect(201)?)?;
    s.post(&format!("/v1/agents/{small}/float"), &s.operator, &idr("100000.00"))?.expect(201)?;
    let till = s.credential("top_up_agent", "minimarket till", Some(("agent_id", &small)))?;
    let other = s.holder("Siti Rahma", "7371015505850002", &["resident", "student"])?;
    let card2 = s.card(&other, 2)?;
    let r = s.post("/v1/topups", &till, &json!({"card_id": card2.id, "amount": "60000.00"}))?;
    check_eq!(r.expect(201)?["float"], idr("40000.00"));
    let r = s.post("/v1/topups", &till, &json!({"card_id": card2.id, "amount": "40000.01"}))?;
    r.problem(422, "insufficient_funds")?;
    let r = s.post("/v1/topups", &till, &json!({"card_id": card2.id, "amount": "40000.00"}))?;
    let v = r.expect(201)?;
    check_eq!(v["float"], idr("0.00"));
    check_eq!(v["balance"], idr("100000.00"));
    let r = s.post("/v1/topups", &till, &json!({"card_id": card2.id, "amount": "0.01"}))?;
    r.problem(422, "insufficient_funds")?;

    // A payment larger than the balance is refused, nothing is written.
    let (last, _) = s.trial(&c.auditor)?;
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": s.tap(&card2), "amount": "100000.01"}))?;
    r.problem(422, "insufficient_funds")?;
    check_eq!(s.trial(&c.auditor)?.0, last);
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": s.tap(&card2), "amount": "100000.00"}))?;
    check_eq!(r.expect(201)?["balance"], idr("0.00"));
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}

/// A hold at merchant `pos` of `amount` on the City's card, for room 204, for two hours.
fn hold(c: &City, amount: &str, pos: &str) -> Result<Resp, String> {
    c.s.post(
        "/v1/holds",
        pos,
        &json!({"tap": c.s.tap(&c.card), "amount": amount, "reference": "room 204", "expires_in_minutes": 120}),
    )
}

pub fn holds_capture_void(backend: Backend) -> TestResult {
    let c = City::new(backend, "1000000.00")?;
    a_hold_is_captured_in_part(&c)?;
    a_hold_is_voided_in_full(&c)
}

/// Hotel B (1.5 %) holds 400 000.00 at check-in and captures 350 000.00; no other merchant
/// touches the hold, nothing beyond the card or the hold is taken, the capture is the
/// merchant's payment, and a captured hold is closed.
fn a_hold_is_captured_in_part(c: &City) -> TestResult {
    let s = &c.s;
    // Hotel B (1.5 %) holds 400 000.00 at check-in.
    let r = hold(c, "400000.00", &c.pos_b)?;
    let h = r.expect(201)?.clone();
    check_eq!(h["status"], json!("held"));
    check_eq!(h["balance"], idr("600000.00"));
    check_eq!(h["reference"], json!("room 204"));
    check!(h["expires_at"].is_string(), "expires_at: {h}");
    let hold_id = id(&h)?;
    // Not more than the card has.
    let r = hold(c, "600000.01", &c.pos_b)?;
    r.problem(422, "insufficient_funds")?;
    // Another merchant cannot touch it; more than held is refused.
    let r = s.post(&format!("/v1/holds/{hold_id}/capture"), &c.pos_a, &json!({"amount": "1.00"}))?;
    r.problem(404, "not_found")?;
    let r = s.post_empty(&format!("/v1/holds/{hold_id}/void"), &c.pos_a)?;
    r.problem(404, "not_found")?;
    let r = s.post(&format!("/v1/holds/{hold_id}/capture"), &c.pos_b, &json!({"amount": "400000.01"}))?;
    r.problem(422, "capture_exceeds_hold")?;
    // Capture 350 000.00: fee 1.5 % = 5 250.00; 50 000.00 returns to the card.
    let r = s.post(&format!("/v1/holds/{hold_id}/capture"), &c.pos_b, &json!({"amount": "350000.00"}))?;
    let v = r.expect(201)?;
    check_eq!(v["status"], json!("captured"));
    check_eq!(v["amount"], idr("350000.00"));
    check_eq!(v["fee"], idr("5250.00"));
    check_eq!(v["balance"], idr("650000.00"));
    let entries = s.entries(&c.auditor)?;
    let e = entry(&entries, seq(v)?)?;
    check_eq!(e["kind"], json!("capture"));
    check_eq!(e["related_seq"], json!(seq(&h)?));
    let legs = postings(e);
    check!(legs.contains(&(c.merchant_b_account.clone(), "344750.00".into())), "merchant leg: {legs:?}");
    check!(legs.contains(&(c.card.account_id.clone(), "50000.00".into())), "the rest returns: {legs:?}");
    check_eq!(s.balance(&c.auditor, &c.merchant_b_account)?, "344750.00".to_owned());
    // A capture is the merchant's payment of the hold: refundable by that merchant only,
    // never above what was captured (the full refund trials are in integrity.rs).
    let r = s.post(&format!("/v1/payments/{}/refunds", id(v)?), &c.pos_a, &json!({"amount": "1.00"}))?;
    r.problem(404, "not_found")?;
    let r = s.post(&format!("/v1/payments/{}/refunds", id(v)?), &c.pos_b, &json!({"amount": "350000.01"}))?;
    r.problem(422, "refund_exceeds_payment")?;
    // A captured hold is closed.
    let r = s.post(&format!("/v1/holds/{hold_id}/capture"), &c.pos_b, &json!({"amount": "1.00"}))?;
    r.problem(409, "hold_closed")?;
    let r = s.post_empty(&format!("/v1/holds/{hold_id}/void"), &c.pos_b)?;
    r.problem(409, "hold_closed")?;
    Ok(())
}

/// Parking (merchant A) holds 20 000.00 and voids it: all of it returns. A payment id is
/// not a hold, a hold is not a payment; a hold of nothing or for no time is refused.
fn a_hold_is_voided_in_full(c: &City) -> TestResult {
    let s = &c.s;
    let r = hold(c, "20000.00", &c.pos_a)?;
    let h2 = id(r.expect(201)?)?;
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "630000.00".to_owned());
    let r = s.post_empty(&format!("/v1/holds/{h2}/void"), &c.pos_a)?;
    let v = r.expect(201)?;
    check_eq!(v["status"], json!("voided"));
    check_eq!(v["balance"], idr("650000.00"));
    let r = s.post_empty(&format!("/v1/holds/{h2}/void"), &c.pos_a)?;
    r.problem(409, "hold_closed")?;
    // A payment id is not a hold, a hold is not a payment.
    let r = s.post(&format!("/v1/payments/{h2}/refunds"), &c.pos_a, &json!({"amount": "1.00"}))?;
    r.problem(404, "not_found")?;
    let r = hold(c, "0.00", &c.pos_a)?;
    r.problem(422, "invalid_amount")?;
    let r =
        s.post("/v1/holds", &c.pos_a, &json!({"tap": s.tap(&c.card), "amount": "1.00", "expires_in_minutes": 0}))?;
    r.problem(422, "invalid_field")?;
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}

/// A hold nobody captures gives its money back on its own: the server voids it once it has
/// expired (every 200 ms in the tests' configuration), with the memo `expired`, and it can
/// no longer be captured. Holds last at least a minute, so this waits for one.
pub fn holds_expire_on_their_own(backend: Backend) -> TestResult {
    let c = City::new(backend, "100000.00")?;
    let s = &c.s;
    let (hooks, secret) = crate::webhooks::subscribe_to_expiries(&c)?;
    let body = json!({"tap": s.tap(&c.card), "amount": "30000.00", "expires_in_minutes": 1});
    let h = s.post("/v1/holds", &c.pos_b, &body)?.expect(201)?.clone();
    check_eq!(h["balance"], idr("70000.00"));
    let started = std::time::Instant::now();
    loop {
        let balance = s.balance(&c.auditor, &c.card.account_id)?;
        if balance == "100000.00" {
            break;
        }
        check_eq!(balance, "70000.00".to_owned(), "the hold's money is held until it expires");
        check!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "the hold was not voided 90 s after it was made"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    check!(
        started.elapsed() >= std::time::Duration::from_secs(55),
        "voided before it expired: {:?}",
        started.elapsed()
    );
    let entries = s.entries(&c.auditor)?;
    let voids: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["kind"] == json!("void") && e["related_seq"] == json!(seq(&h).unwrap_or(-1)))
        .collect();
    check_eq!(voids.len(), 1, "one void of the hold: {entries:?}");
    check_eq!(voids[0]["memo"], json!("expired"));
    // Subscribers hear of it: one signed `hold.expired` naming the hold and the merchant.
    let got = hooks.wait_for(1, std::time::Duration::from_secs(10))?;
    let event = got.values().next().ok_or("the expiry event")?;
    check_eq!(event["type"], json!("hold.expired"));
    check_eq!(event["data"]["hold_seq"], json!(seq(&h).unwrap_or(-1)));
    check_eq!(event["data"]["entry_seq"], voids[0]["entry_seq"]);
    check_eq!(event["data"]["merchant_account_id"], json!(c.merchant_b_account));
    check_eq!(event["data"]["amount"]["amount"], json!("30000.00"));
    check!(hooks.requests().iter().all(|r| crate::webhooks::signed_by(r, &secret)), "unsigned");
    check_eq!(hooks.requests().len(), 1);
    let hold_id = id(&h)?;
    let r = s.post(&format!("/v1/holds/{hold_id}/capture"), &c.pos_b, &json!({"amount": "1.00"}))?;
    check!(r.status == 409, "capturing an expired, voided hold: {} {}", r.status, r.text);
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}

pub fn card_lifecycle(backend: Backend) -> TestResult {
    let c = City::new(backend, "250000.00")?;
    let s = &c.s;
    let op = &s.operator;
    let path = format!("/v1/cards/{}", c.card.id);
    check_eq!(s.get(&path, op)?.expect(200)?["balance"], idr("250000.00"));
    check_eq!(s.get("/v1/cards/999999", op)?.status, 404);
    check_eq!(s.get("/v1/cards/abc", op)?.status, 404);
    // The same UID cannot be issued twice; an unknown holder is refused.
    let r = s.post("/v1/cards", op, &json!({"uid": c.card.uid, "holder_id": c.holder}))?;
    r.problem(409, "card_exists")?;
    let r = s.post("/v1/cards", op, &json!({"uid": "04AABBCCDDEEFF", "holder_id": "424242"}))?;
    r.problem(422, "holder_unknown")?;
    blocked_cards_are_refused_until_unblocked(&c, &path)?;
    let new_uid = "04112233445566";
    let (new_id, new_account) = a_replacement_moves_the_whole_balance(&c, &path, new_uid)?;
    the_replaced_card_is_closed_and_the_new_one_pays(&c, &path, new_uid, &new_id, new_account)?;
    lost_and_empty_cards_are_replaced(&c)
}

/// Block: taps refused at once, with the reason kept. Unblock: it pays again.
fn blocked_cards_are_refused_until_unblocked(c: &City, path: &str) -> TestResult {
    let s = &c.s;
    let op = &s.operator;
    let r = s.post(&format!("{path}/block"), op, &json!({"reason": "lost"}))?;
    let v = r.expect(200)?;
    check_eq!(v["status"], json!("blocked"));
    check_eq!(v["block_reason"], json!("lost"));
    c.pay(&c.card, "1000.00")?.problem(422, "card_blocked")?;
    let r = s.post("/v1/topups", &c.teller, &json!({"card_id": c.card.id, "amount": "1.00"}))?;
    r.problem(422, "card_blocked")?;
    // Unblock: it pays again.
    let r = s.post_empty(&format!("{path}/unblock"), op)?;
    check_eq!(r.expect(200)?["status"], json!("active"));
    let r = c.pay(&c.card, "1000.00")?;
    check_eq!(r.expect(201)?["balance"], idr("249000.00"));
    Ok(())
}

/// Replace (damaged card): one card_replacement entry moves the whole balance. Returns
/// the new card's id and account.
fn a_replacement_moves_the_whole_balance(c: &City, path: &str, new_uid: &str) -> Result<(String, String), String> {
    let s = &c.s;
    let op = &s.operator;
    let (last, _) = s.trial(&c.auditor)?;
    let r = s.post(&format!("{path}/replace"), op, &json!({"new_uid": new_uid}))?;
    let v = r.expect(201)?.clone();
    check_eq!(v["moved"], idr("249000.00"));
    check_eq!(v["old_card"]["status"], json!("replaced"));
    check_eq!(v["old_card"]["balance"], idr("0.00"));
    check_eq!(v["new_card"]["uid"], json!(new_uid));
    check_eq!(v["new_card"]["holder_id"], json!(c.holder));
    check_eq!(v["new_card"]["balance"], idr("249000.00"));
    let new_id = id(&v["new_card"])?;
    check_eq!(v["old_card"]["replaced_by"], json!(new_id));
    let new_account = v["new_card"]["account_id"].as_str().ok_or("account_id")?.to_owned();
    let entries = s.entries(&c.auditor)?;
    let written: Vec<&Value> = entries.iter().filter(|e| e["entry_seq"].as_i64() > Some(last)).collect();
    check_eq!(written.len(), 1, "exactly one entry for the replacement: {written:?}");
    check_eq!(written[0]["kind"], json!("card_replacement"));
    check_eq!(written[0]["entry_seq"], v["receipt"]["entry_seq"]);
    check_eq!(
        sorted(postings(written[0])),
        sorted(vec![(c.card.account_id.clone(), "-249000.00".into()), (new_account.clone(), "249000.00".into())])
    );
    Ok((new_id, new_account))
}

/// The old card's taps are refused as blocked, and it can be neither blocked, unblocked
/// nor replaced again; the new card's UID is taken; the new card pays.
fn the_replaced_card_is_closed_and_the_new_one_pays(
    c: &City,
    path: &str,
    new_uid: &str,
    new_id: &str,
    new_account: String,
) -> TestResult {
    let s = &c.s;
    let op = &s.operator;
    c.pay(&c.card, "1.00")?.problem(422, "card_blocked")?;
    let r = s.post("/v1/balance-inquiries", &c.kiosk, &json!({"tap": s.tap(&c.card)}))?;
    r.problem(422, "card_blocked")?;
    let r = s.post(&format!("{path}/block"), op, &json!({"reason": "stolen"}))?;
    r.problem(409, "card_replaced")?;
    let r = s.post_empty(&format!("{path}/unblock"), op)?;
    r.problem(409, "card_replaced")?;
    let r = s.post(&format!("{path}/replace"), op, &json!({"new_uid": "04998877665544"}))?;
    r.problem(409, "card_replaced")?;
    let r = s.post(&format!("/v1/cards/{new_id}/replace"), op, &json!({"new_uid": new_uid}))?;
    r.problem(409, "card_exists")?;
    let new_card = crate::support::TestCard {
        id: new_id.to_owned(),
        uid: new_uid.into(),
        account_id: new_account,
        counter: std::sync::atomic::AtomicU32::new(0),
    };
    let r = c.pay(&new_card, "9000.00")?;
    check_eq!(r.expect(201)?["balance"], idr("240000.00"));
    check_eq!(s.get(&format!("/v1/cards/{new_id}"), op)?.expect(200)?["balance"], idr("240000.00"));
    Ok(())
}

/// A lost card: blocked first, then replaced; its balance follows the holder. An empty
/// card is replaced by an entry that moves nothing: it records, in the log, that the old
/// card's later credits go to the new one.
fn lost_and_empty_cards_are_replaced(c: &City) -> TestResult {
    let s = &c.s;
    let op = &s.operator;
    let h2 = s.holder("Lost Card Holder", "7371121212120012", &["resident"])?;
    let lost = s.card(&h2, 4)?;
    s.post("/v1/topups", &c.teller, &json!({"card_id": lost.id, "amount": "1234.56"}))?.expect(201)?;
    s.post(&format!("/v1/cards/{}/block", lost.id), op, &json!({"reason": "lost"}))?.expect(200)?;
    let r = s.post(&format!("/v1/cards/{}/replace", lost.id), op, &json!({"new_uid": "04777777777777"}))?;
    let v = r.expect(201)?;
    check_eq!(v["moved"], idr("1234.56"));
    check_eq!(v["old_card"]["status"], json!("replaced"));
    check_eq!(v["new_card"]["status"], json!("active"));
    check_eq!(v["new_card"]["balance"], idr("1234.56"));
    c.pay(&lost, "1.00")?.problem(422, "card_blocked")?;
    // An empty card is replaced by an entry that moves nothing: it records, in the log,
    // that the old card's later credits go to the new one.
    let h = s.holder("Budi Santoso", "7371020202020003", &["senior"])?;
    let empty = s.card(&h, 3)?;
    let (last, _) = s.trial(&c.auditor)?;
    let r = s.post(&format!("/v1/cards/{}/replace", empty.id), op, &json!({"new_uid": "04ABCDEF012345"}))?;
    let v = r.expect(201)?;
    check_eq!(v["moved"], idr("0.00"));
    check_eq!(v["receipt"]["entry_seq"], json!(last + 1));
    let entries = s.entries(&c.auditor)?;
    let e = entry(&entries, last + 1)?;
    check_eq!((e["kind"].clone(), postings(e).len()), (json!("card_replacement"), 0));
    check_eq!(s.trial(&c.auditor)?.0, last + 1);
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}

pub fn settlement_lines(backend: Backend) -> TestResult {
    let c = City::new(backend, "2000000.00")?;
    let s = &c.s;
    // A (0.7 %): 12 500.00 (fee 87.50) and 3 333.33 (fee 23.33331 → 23.33), refund
    // 1 000.00 of the first (fee back 87.50 × 1000/12500 = 7.00).
    let p1 = id(c.pay(&c.card, "12500.00")?.expect(201)?)?;
    c.pay(&c.card, "3333.33")?.expect(201)?;
    s.post(&format!("/v1/payments/{p1}/refunds"), &c.pos_a, &json!({"amount": "1000.00"}))?.expect(201)?;
    // B (1.5 %): 100 000.00 (fee 1 500.00) and a capture of 20 000.00 (fee 300.00).
    s.post("/v1/payments", &c.pos_b, &json!({"tap": s.tap(&c.card), "amount": "100000.00"}))?.expect(201)?;
    let h = id(s.post("/v1/holds", &c.pos_b, &json!({"tap": s.tap(&c.card), "amount": "30000.00"}))?.expect(201)?)?;
    s.post(&format!("/v1/holds/{h}/capture"), &c.pos_b, &json!({"amount": "20000.00"}))?.expect(201)?;

    let r = s.post_empty("/v1/settlements", &s.operator)?;
    let v = r.expect(201)?.clone();
    let lines = v["lines"].as_array().ok_or("lines")?;
    check_eq!(lines.len(), 2, "{v}");
    let line = |m: &str| lines.iter().find(|l| l["merchant_id"] == json!(m)).ok_or(format!("no line for {m}: {v}"));
    let a = line(&c.merchant_a)?;
    // gross 12500.00 + 3333.33 - 1000.00; fee 87.50 + 23.33 - 7.00; net = gross - fee.
    check_eq!(a["gross"], idr("14833.33"));
    check_eq!(a["fee"], idr("103.83"));
    check_eq!(a["net"], idr("14729.50"));
    let b = line(&c.merchant_b)?;
    check_eq!(b["gross"], idr("120000.00"));
    check_eq!(b["fee"], idr("1800.00"));
    check_eq!(b["net"], idr("118200.00"));
    // The settlement entries pay the merchants' balances out; they are at zero now.
    let entries = s.entries(&c.auditor)?;
    for (l, account, net) in [(a, &c.merchant_a_account, "14729.50"), (b, &c.merchant_b_account, "118200.00")] {
        let e = entry(&entries, seq(l)?)?;
        check_eq!(e["kind"], json!("settlement"));
        check!(postings(e).contains(&(account.clone(), format!("-{net}"))), "settlement leg: {e}");
        check_eq!(s.balance(&c.auditor, account)?, "0.00".to_owned());
    }
    // Nothing left to settle.
    let r = s.post_empty("/v1/settlements", &s.operator)?;
    check_eq!(r.expect(201)?["lines"], json!([]));
    // The next period starts after the settlement.
    c.pay(&c.card, "1000.00")?.expect(201)?;
    let r = s.post_empty("/v1/settlements", &s.operator)?;
    let v = r.expect(201)?;
    check_eq!(v["lines"].as_array().map(Vec::len), Some(1));
    check_eq!(v["lines"][0]["gross"], idr("1000.00"));
    check_eq!(v["lines"][0]["fee"], idr("7.00"));
    check_eq!(v["lines"][0]["net"], idr("993.00"));
    // Only operators settle.
    s.post_empty("/v1/settlements", &c.auditor)?.problem(403, "forbidden")?;
    s.post_empty("/v1/settlements", &c.pos_a)?.problem(403, "forbidden")?;
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}

pub fn adjustments_two_operators(backend: Backend) -> TestResult {
    let c = City::new(backend, "10000.00")?;
    let s = &c.s;
    let (last, _) = s.trial(&c.auditor)?;
    let body = json!({"account_id": c.card.account_id, "amount": "2500.50", "reason": "terminal fault, ticket 77"});
    let r = s.post("/v1/adjustments", &s.operator, &body)?;
    let v = r.expect(201)?.clone();
    check_eq!(v["status"], json!("pending"));
    check_eq!(v["amount"], idr("2500.50"));
    check!(v["entry_seq"].is_null(), "pending: no entry yet");
    let adj = id(&v)?;
    check_eq!(s.trial(&c.auditor)?.0, last, "nothing is posted before approval");
    // The operator who asked cannot approve.
    let r = s.post_empty(&format!("/v1/adjustments/{adj}/approve"), &s.operator)?;
    r.problem(403, "second_operator_required")?;
    // Neither can an auditor or a merchant.
    s.post_empty(&format!("/v1/adjustments/{adj}/approve"), &c.auditor)?.problem(403, "forbidden")?;
    s.post_empty(&format!("/v1/adjustments/{adj}/approve"), &c.pos_a)?.problem(403, "forbidden")?;
    check_eq!(s.trial(&c.auditor)?.0, last);
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "10000.00".to_owned());
    // Another operator approves: posted against suspense.
    let r = s.post_empty(&format!("/v1/adjustments/{adj}/approve"), &c.operator2)?;
    let v = r.expect(200)?;
    check_eq!(v["status"], json!("posted"));
    check_eq!(v["entry_seq"], json!(last + 1));
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "12500.50".to_owned());
    let entries = s.entries(&c.auditor)?;
    let e = entry(&entries, last + 1)?;
    check_eq!(e["kind"], json!("adjustment"));
    let legs = postings(e);
    check!(legs.contains(&(c.card.account_id.clone(), "2500.50".into())), "{legs:?}");
    check!(legs.iter().any(|(_, a)| a == "-2500.50"), "suspense leg: {legs:?}");
    // Approving again posts nothing more.
    let r = s.post_empty(&format!("/v1/adjustments/{adj}/approve"), &c.operator2)?;
    check_eq!(r.expect(200)?["entry_seq"], json!(last + 1));
    check_eq!(s.trial(&c.auditor)?.0, last + 1);
    // A negative adjustment.
    let r = s.post(
        "/v1/adjustments",
        &c.operator2,
        &json!({"account_id": c.card.account_id, "amount": "-500.50", "currency": "IDR", "reason": "duplicate"}),
    )?;
    let adj2 = id(r.expect(201)?)?;
    s.post_empty(&format!("/v1/adjustments/{adj2}/approve"), &c.operator2)?.problem(403, "second_operator_required")?;
    s.post_empty(&format!("/v1/adjustments/{adj2}/approve"), &s.operator)?.expect(200)?;
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "12000.00".to_owned());
    // Unknown adjustment; system accounts cannot be adjusted.
    s.post_empty("/v1/adjustments/99999/approve", &c.operator2)?.problem(404, "not_found")?;
    let fee_or_suspense = legs.iter().find(|(a, _)| *a != c.card.account_id).map(|(a, _)| a.clone()).ok_or("leg")?;
    let r = s.post(
        "/v1/adjustments",
        &s.operator,
        &json!({"account_id": fee_or_suspense, "amount": "1.00", "reason": "x"}),
    )?;
    r.problem(422, "invalid_field")?;
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}
