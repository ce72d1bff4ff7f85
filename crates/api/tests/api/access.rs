//! Access to public services (policies and reason codes, clinic queue numbers, the access
//! log) and kiosk balance inquiries.

use chrono::{Duration, Timelike};
use serde_json::{json, Value};

use crate::rfc9162;
use crate::support::{id, idr, Backend, City, Server, TestCard, TestResult};

fn service_point(s: &Server, name: &str, service: &str, policy: Value) -> Result<(String, String), String> {
    let r = s.post("/v1/service-points", &s.operator, &json!({"name": name, "service": service, "policy": policy}))?;
    let v = r.expect(201)?;
    let sp = id(v)?;
    let token = s.credential("service_point", &format!("{name} desk"), Some(("service_point_id", &sp)))?;
    Ok((sp, token))
}

/// (decision, reason, queue_number) of a check.
fn check(s: &Server, token: &str, tap: Value) -> Result<(String, String, Value, Value), String> {
    let r = s.post("/v1/access-checks", token, &json!({"tap": tap}))?;
    let v = r.expect(200)?;
    check!(v["leaf_index"].is_i64() && v["leaf_hash"].is_string(), "every decision is a leaf: {v}");
    Ok((
        v["decision"].as_str().unwrap_or("").to_owned(),
        v["reason"].as_str().unwrap_or("").to_owned(),
        v["queue_number"].clone(),
        v.clone(),
    ))
}

fn hhmm(t: chrono::DateTime<chrono_tz::Tz>) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// (decision, reason) of the checks made at a service point, in order.
type Decisions = Vec<(&'static str, &'static str)>;

/// The cards the access scenario taps: a student's, a senior's, a blocked one.
struct Cards {
    student: TestCard,
    senior: TestCard,
    blocked: TestCard,
}

pub fn access_policies(backend: Backend) -> TestResult {
    let c = City::new(backend, "0.00")?;
    let s = &c.s;
    let student = s.holder("Nurul Student", "7371070707070008", &["student"])?;
    let senior = s.holder("Pak Senior", "7371080808080009", &["senior", "resident"])?;
    let student_card = s.card(&student, 10)?;
    let senior_card = s.card(&senior, 11)?;
    let blocked_card = s.card(&senior, 12)?;
    s.post(&format!("/v1/cards/{}/block", blocked_card.id), &s.operator, &json!({"reason": "stolen"}))?.expect(200)?;
    let cards = Cards { student: student_card, senior: senior_card, blocked: blocked_card };

    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Makassar);
    let (clinic, expected) = the_clinic_queues_the_entitled(&c, &cards, now)?;
    closed_hours_quota_and_passback_deny(s, &cards, now)?;
    the_access_log_records_every_decision(&c, &clinic, &expected)
}

/// A clinic for residents and seniors, open now, with queue numbers: the entitled take
/// numbers 1, 2, 3; a student, an unknown card, a blocked card and a replayed tap are
/// denied and take none; the next genuine tap takes 4. Returns the clinic and the
/// (decision, reason) of every check made there, in order.
fn the_clinic_queues_the_entitled(
    c: &City,
    cards: &Cards,
    now: chrono::DateTime<chrono_tz::Tz>,
) -> Result<(String, Decisions), String> {
    let s = &c.s;
    let open = json!({"categories": ["resident", "senior"], "opens": hhmm(now - Duration::hours(1)),
        "closes": hhmm(now + Duration::hours(1)), "timezone": "Asia/Makassar", "issues_queue_numbers": true});
    let (clinic, desk) = service_point(s, "Puskesmas Kassi-Kassi", "clinic", open)?;
    let mut expected: Vec<(&str, &str)> = Vec::new();
    let mut numbers = Vec::new();
    let another_resident = s.holder("Ibu Resident", "7371090909090010", &["resident"])?;
    let resident_card = s.card(&another_resident, 13)?;
    for card in [&c.card, &cards.senior, &resident_card] {
        let (d, reason, q, v) = check(s, &desk, s.tap(card))?;
        check_eq!((d.as_str(), reason.as_str()), ("allow", "entitled"));
        check_eq!(v["card_id"], json!(card.id));
        numbers.push(q);
        expected.push(("allow", "entitled"));
    }
    check_eq!(numbers, vec![json!(1), json!(2), json!(3)], "the day's queue numbers");
    // A student is not entitled here: denied, no number.
    let (d, reason, q, _) = check(s, &desk, s.tap(&cards.student))?;
    check_eq!((d.as_str(), reason.as_str(), q), ("deny", "not_entitled", Value::Null));
    expected.push(("deny", "not_entitled"));
    // Unknown card, blocked card, replayed tap.
    let (d, reason, _, v) = check(s, &desk, s.tap_at("04DEADBEEF0001", 3))?;
    check_eq!((d.as_str(), reason.as_str()), ("deny", "card_unknown"));
    check!(v["card_id"].is_null(), "an unknown card has no id: {v}");
    expected.push(("deny", "card_unknown"));
    let (d, reason, _, _) = check(s, &desk, s.tap(&cards.blocked))?;
    check_eq!((d.as_str(), reason.as_str()), ("deny", "card_blocked"));
    expected.push(("deny", "card_blocked"));
    let replayed = s.tap_at(&c.card.uid, c.card.counter.load(std::sync::atomic::Ordering::SeqCst));
    let (d, reason, q, _) = check(s, &desk, replayed)?;
    check_eq!((d.as_str(), reason.as_str(), q), ("deny", "replay", Value::Null));
    expected.push(("deny", "replay"));
    // The next genuine tap is allowed and takes number 4 (denials take none).
    let (d, _, q, _) = check(s, &desk, s.tap(&c.card))?;
    check_eq!((d.as_str(), q), ("allow", json!(4)));
    expected.push(("allow", "entitled"));
    Ok((clinic, expected))
}

/// A library closed at this hour, a city office with a daily quota, a gate with
/// anti-passback.
fn closed_hours_quota_and_passback_deny(s: &Server, cards: &Cards, now: chrono::DateTime<chrono_tz::Tz>) -> TestResult {
    // A library whose hours exclude now: closed.
    let closed = json!({"opens": hhmm(now + Duration::hours(2)), "closes": hhmm(now + Duration::hours(3)),
        "timezone": "Asia/Makassar"});
    let (_, library) = service_point(s, "Perpustakaan", "library", closed)?;
    let (d, reason, _, _) = check(s, &library, s.tap(&cards.student))?;
    check_eq!((d.as_str(), reason.as_str()), ("deny", "closed"));
    // A city office: one entry per holder per day, across the holder's cards.
    let (_, office) = service_point(s, "Kantor Camat", "city_office", json!({"daily_quota": 1}))?;
    check_eq!(check(s, &office, s.tap(&cards.senior))?.1, "entitled".to_owned());
    let (d, reason, _, _) = check(s, &office, s.tap(&cards.senior))?;
    check_eq!((d.as_str(), reason.as_str()), ("deny", "quota_reached"));
    // A gate with anti-passback.
    let (_, gate) = service_point(s, "Stadium gate", "other", json!({"anti_passback_minutes": 15}))?;
    check_eq!(check(s, &gate, s.tap(&cards.student))?.0, "allow".to_owned());
    let (d, reason, _, _) = check(s, &gate, s.tap(&cards.student))?;
    check_eq!((d.as_str(), reason.as_str()), ("deny", "passback"));
    check_eq!(check(s, &gate, s.tap(&cards.senior))?.0, "allow".to_owned(), "another holder passes");
    Ok(())
}

/// No decision moved money; the clinic's access log lists its decisions in order, each
/// one an event leaf of the audit log; the log pages.
fn the_access_log_records_every_decision(c: &City, clinic: &str, expected: &[(&str, &str)]) -> TestResult {
    let s = &c.s;
    // No decision moved money.
    check_eq!(s.trial(&c.auditor)?.0, 1, "only the agent's float was ever posted");
    // The access log, for the clinic, in order, every decision a leaf of the log.
    let r = s.get(&format!("/v1/audit/access-log?service_point_id={clinic}"), &c.auditor)?;
    let log = r.expect(200)?["decisions"].as_array().ok_or("decisions")?.clone();
    let got: Vec<(&str, &str)> =
        log.iter().map(|d| (d["decision"].as_str().unwrap_or(""), d["reason"].as_str().unwrap_or(""))).collect();
    check_eq!(got, expected);
    let leaves = s.leaves(&c.auditor)?;
    for d in &log {
        let i = d["leaf_index"].as_i64().ok_or("leaf_index")? as usize;
        let (_, kind, leaf, _) = &leaves[i];
        check_eq!(kind.as_str(), "access_decision");
        check_eq!(leaf[..2], [1u8, 2u8], "an event leaf");
        let text = String::from_utf8_lossy(leaf);
        check!(text.contains(d["reason"].as_str().unwrap_or("?")), "the leaf records the reason");
    }
    let r = s.get("/v1/audit/access-log?limit=2", &c.auditor)?;
    let page = r.expect(200)?;
    check_eq!(page["decisions"].as_array().map(Vec::len), Some(2));
    let r =
        s.get(&format!("/v1/audit/access-log?cursor={}", page["next_cursor"].as_str().ok_or("cursor")?), &c.auditor)?;
    check_eq!(r.expect(200)?["decisions"][0]["id"], log[2]["id"]);
    Ok(())
}

pub fn kiosk_balance_inquiry(backend: Backend) -> TestResult {
    let c = City::new(backend, "75000.00")?;
    let s = &c.s;
    c.pay(&c.card, "12500.00")?.expect(201)?;
    s.post("/v1/payments", &c.pos_b, &json!({"tap": s.tap(&c.card), "amount": "2500.50"}))?.expect(201)?;
    let (last, _) = s.trial(&c.auditor)?;
    let tree = s.tree_size()?;
    let tap = s.tap(&c.card);
    let r = s.post("/v1/balance-inquiries", &c.kiosk, &json!({"tap": tap}))?;
    let v = r.expect(200)?.clone();
    check_eq!(v["balance"], json!("59999.50"));
    check_eq!(v["currency"], json!("IDR"));
    let recent: Vec<(&str, &str)> = v["recent"]
        .as_array()
        .ok_or("recent")?
        .iter()
        .map(|l| (l["kind"].as_str().unwrap_or(""), l["amount"]["amount"].as_str().unwrap_or("")))
        .collect();
    check_eq!(recent, vec![("payment", "-2500.50"), ("payment", "-12500.00"), ("topup", "75000.00")]);
    // The inquiry writes no entry, but the tap is logged (a leaf) and used up.
    check_eq!(s.trial(&c.auditor)?.0, last);
    check_eq!(s.tree_size()?, tree + 1);
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": tap, "amount": "1000.00"}))?;
    r.problem(409, "card_replay")?;
    let r = s.post("/v1/topups", &c.teller, &json!({"tap": tap, "amount": "1000.00"}))?;
    r.problem(409, "card_replay")?;
    check_eq!(s.trial(&c.auditor)?.0, last, "a replayed tap moves no money");
    let r = s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?;
    let card = r.expect(200)?;
    check_eq!(card["replays"], json!(2));
    check_eq!(card["suspected_clone"], json!(true));
    check_eq!(card["balance"], idr("59999.50"));
    // A fresh tap pays.
    check_eq!(c.pay(&c.card, "999.50")?.expect(201)?["balance"], idr("59000.00"));
    // An inquiry's leaf hash is recomputable: the kiosk's tap is an event leaf.
    let leaves = s.leaves(&c.auditor)?;
    let (_, kind, leaf, hash) = &leaves[tree as usize];
    check_eq!(kind.as_str(), "balance_inquiry");
    check_eq!(hex::encode(rfc9162::leaf_hash(leaf)), *hash);
    // A card that was never issued, and an empty card.
    s.post("/v1/balance-inquiries", &c.kiosk, &json!({"tap": s.tap_at("04000000000001", 1)}))?
        .problem(422, "card_unknown")?;
    let h = s.holder("New Holder", "7371111111110011", &[])?;
    let empty: TestCard = s.card(&h, 21)?;
    let r = s.post("/v1/balance-inquiries", &c.kiosk, &json!({"tap": s.tap(&empty)}))?;
    let v = r.expect(200)?;
    check_eq!((v["balance"].clone(), v["recent"].clone()), (json!("0.00"), json!([])));
    Ok(())
}
