//! Bad input to every write endpoint, table-driven: each case breaks one thing in an
//! otherwise valid request and expects a problem+json error with a stable code, and no
//! change to the journal (last entry) nor to the audit log (tree size). After its bad
//! cases each endpoint gets its valid request, which must succeed: so every refusal above
//! was caused by the one thing that was broken.

use serde_json::{json, Value};

use crate::support::{id, idr, tap_with, Backend, Body, City, Server, TestCard, TestResult};

/// A write endpoint and how to make a valid request to it.
struct Endpoint<'a> {
    method: &'static str,
    path: String,
    /// A path with an unknown id (for endpoints with an id).
    unknown: Option<String>,
    token: String,
    /// A fresh valid body (fresh taps); `None` for endpoints without a body.
    body: Option<Box<dyn Fn() -> Value + 'a>>,
    /// Fields that must be present.
    required: &'static [&'static str],
    /// The field holding an amount, and whether it may be negative.
    amount: Option<(&'static str, bool)>,
    /// The body carries a tap whose card problems are refusals (not access decisions).
    tap: Option<&'a TestCard>,
    /// Endpoint-specific invalid fields: (what, body, status, code).
    invalid: Vec<(&'static str, Value, u16, &'static str)>,
    /// The status of the valid request.
    ok: u16,
}

/// The state of the journal and the audit log.
fn mark(s: &Server, auditor: &str) -> Result<(i64, i64), String> {
    Ok((s.trial(auditor)?.0, s.tree_size()?))
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn without(mut body: Value, field: &str) -> Value {
    if let Some(o) = body.as_object_mut() {
        o.remove(field);
    }
    body
}

pub fn bad_input_writes_nothing(backend: Backend) -> TestResult {
    let c = City::new(backend, "100000.00")?;
    let s = &c.s;
    let op = s.operator.clone();
    // Objects the endpoints act on.
    let spare_holder = s.holder("Spare Holder", "7371030303030004", &["staff"])?;
    let spare = s.card(&spare_holder, 7)?;
    let blocked = s.card(&spare_holder, 8)?;
    s.post(&format!("/v1/cards/{}/block", blocked.id), &op, &json!({"reason": "fraud"}))?.expect(200)?;
    // Tap the main card once (counter 1): its replay is a refusal below.
    s.post("/v1/topups", &c.teller, &json!({"tap": s.tap(&c.card), "amount": "1.00"}))?.expect(201)?;
    let replay = s.tap_at(&c.card.uid, 1);
    let payment = id(c.pay(&c.card, "5000.00")?.expect(201)?)?;
    let hold_capture =
        id(s.post("/v1/holds", &c.pos_a, &json!({"tap": s.tap(&c.card), "amount": "3000.00"}))?.expect(201)?)?;
    let hold_void =
        id(s.post("/v1/holds", &c.pos_a, &json!({"tap": s.tap(&c.card), "amount": "2000.00"}))?.expect(201)?)?;
    let adjustment = id(s
        .post("/v1/adjustments", &op, &json!({"account_id": c.card.account_id, "amount": "10.00", "reason": "fix"}))?
        .expect(201)?)?;
    let (throwaway, _) = s.credential_with_id("kiosk", "old kiosk")?;
    // Two requests for a second operator: a float above the threshold, and another.
    let float_path = format!("/v1/agents/{}/float", c.agent);
    let to_approve = id(s.post(&float_path, &op, &idr("50000001.00"))?.expect(202)?)?;
    let to_reject = id(s.post(&float_path, &op, &idr("50000002.00"))?.expect(202)?)?;
    let sp =
        s.post("/v1/service-points", &op, &json!({"name": "Perpustakaan Kota", "service": "library", "policy": {}}))?;
    let sp = id(sp.expect(201)?)?;
    let desk = s.credential("service_point", "library gate", Some(("service_point_id", &sp)))?;
    // A card of another city (other keys): its taps never verify here.
    let foreign = |counter| {
        let (meta, file) = (card::Key::from_bytes([0x11; 16]), card::Key::from_bytes([0x22; 16]));
        tap_with(&meta, &file, b"KARTU-MKS", &c.card.uid, counter)
    };
    let unknown_card = || s.tap_at("04FEEDFACE0001", 5);
    // A POS that may work offline, and a fresh one-record journal of a genuine tap.
    let till_key = offline::generate_key().map_err(|e| e.to_string())?;
    let till_pk = offline::JournalWriter::new(&till_key, None).map_err(|e| e.to_string())?.public_key_hex();
    let till = s
        .post(
            "/v1/credentials",
            &op,
            &json!({"role": "merchant_terminal", "name": "offline till", "merchant_id": c.merchant_a,
                "public_key": till_pk, "offline_limits": {"per_tap_minor": 100000, "per_card_per_day_minor": 100000, "outstanding_minor": 100000}}),
        )?
        .expect(201)?["token"]
        .as_str()
        .ok_or("token")?
        .to_owned();
    let sync_id = s.get("/v1/offline/deny-list", &till)?.expect(200)?["sync_id"].as_u64().ok_or("sync_id")?;
    let taken_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_micros()
            as i64;
    let journal = || -> Value {
        let mut w = offline::JournalWriter::new(&till_key, None).expect("writer");
        let tap = s.tap(&c.card);
        let r = w
            .append(offline::NewRecord {
                time_us: taken_at,
                kind: offline::RecordKind::Payment,
                uid: c.card.uid.clone(),
                picc_data: tap["picc_data"].as_str().unwrap_or_default().to_owned(),
                cmac: tap["cmac"].as_str().unwrap_or_default().to_owned(),
                amount_minor: 100,
                currency: "IDR".into(),
                reference: None,
                decision: None,
                sync_id,
            })
            .expect("record");
        json!({"records": [r]})
    };
    let mut forged = journal();
    forged["records"][0]["record"]["amount_minor"] = json!(99_999);
    let mut late = journal();
    late["records"][0]["record"]["seq"] = json!(2);

    let card_tap = || s.tap(&c.card);
    let policy = json!({"categories": ["resident"], "opens": "07:00", "closes": "16:00", "timezone": "Asia/Makassar",
        "daily_quota": 2, "anti_passback_minutes": 10, "issues_queue_numbers": true});
    let endpoints: Vec<Endpoint> = vec![
        Endpoint {
            method: "POST",
            path: "/v1/holders".into(),
            unknown: None,
            token: op.clone(),
            body: Some(Box::new(
                || json!({"name": "Valid Holder", "nik": "7371040404040005", "categories": ["resident"]}),
            )),
            required: &["name", "nik", "categories"],
            amount: None,
            tap: None,
            invalid: vec![
                ("short NIK", json!({"name": "A", "nik": "123", "categories": []}), 422, "invalid_field"),
                (
                    "NIK with letters",
                    json!({"name": "A", "nik": "73710404040400AB", "categories": []}),
                    422,
                    "invalid_field",
                ),
                (
                    "empty name",
                    json!({"name": "  ", "nik": "7371040404040006", "categories": []}),
                    422,
                    "invalid_field",
                ),
                (
                    "control characters",
                    json!({"name": "A\u{7}", "nik": "7371040404040006", "categories": []}),
                    422,
                    "invalid_field",
                ),
                (
                    "unknown category",
                    json!({"name": "A", "nik": "7371040404040006", "categories": ["wizard"]}),
                    422,
                    "invalid_field",
                ),
                (
                    "NIK already registered",
                    json!({"name": "Twin", "nik": "7371010101900001", "categories": []}),
                    409,
                    "holder_exists",
                ),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/cards".into(),
            unknown: None,
            token: op.clone(),
            body: Some(Box::new(|| json!({"uid": "04A1B2C3D4E5F6", "holder_id": spare_holder}))),
            required: &["uid", "holder_id"],
            amount: None,
            tap: None,
            invalid: vec![
                ("short UID", json!({"uid": "04A1B2", "holder_id": spare_holder}), 422, "invalid_field"),
                ("UID not hex", json!({"uid": "04A1B2C3D4E5GG", "holder_id": spare_holder}), 422, "invalid_field"),
                ("unknown holder", json!({"uid": "04A1B2C3D4E5F6", "holder_id": "98765"}), 422, "holder_unknown"),
                ("holder id not a number", json!({"uid": "04A1B2C3D4E5F6", "holder_id": "x"}), 422, "holder_unknown"),
                ("UID taken", json!({"uid": c.card.uid, "holder_id": spare_holder}), 409, "card_exists"),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/cards/{}/block", spare.id),
            unknown: Some("/v1/cards/98765/block".into()),
            token: op.clone(),
            body: Some(Box::new(|| json!({"reason": "damaged"}))),
            required: &["reason"],
            amount: None,
            tap: None,
            invalid: vec![("unknown reason", json!({"reason": "bored"}), 422, "invalid_field")],
            ok: 200,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/cards/{}/unblock", spare.id),
            unknown: Some("/v1/cards/98765/unblock".into()),
            token: op.clone(),
            body: None,
            required: &[],
            amount: None,
            tap: None,
            invalid: vec![],
            ok: 200,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/cards/{}/replace", spare.id),
            unknown: Some("/v1/cards/98765/replace".into()),
            token: op.clone(),
            body: Some(Box::new(|| json!({"new_uid": "04A1B2C3D4E5F7"}))),
            required: &["new_uid"],
            amount: None,
            tap: None,
            invalid: vec![
                ("bad UID", json!({"new_uid": "not a uid"}), 422, "invalid_field"),
                ("UID taken", json!({"new_uid": c.card.uid}), 409, "card_exists"),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/merchants".into(),
            unknown: None,
            token: op.clone(),
            body: Some(Box::new(|| json!({"name": "Warung Coto", "category": "restaurant", "fee_rate": "0.005"}))),
            required: &["name", "category", "fee_rate"],
            amount: None,
            tap: None,
            invalid: vec![
                (
                    "unknown category",
                    json!({"name": "X", "category": "casino", "fee_rate": "0.01"}),
                    422,
                    "invalid_field",
                ),
                (
                    "fee rate above 1",
                    json!({"name": "X", "category": "other", "fee_rate": "1.5"}),
                    422,
                    "invalid_field",
                ),
                (
                    "negative fee rate",
                    json!({"name": "X", "category": "other", "fee_rate": "-0.01"}),
                    422,
                    "invalid_field",
                ),
                (
                    "fee rate not a number",
                    json!({"name": "X", "category": "other", "fee_rate": "1%"}),
                    422,
                    "invalid_field",
                ),
                (
                    "fee rate too precise",
                    json!({"name": "X", "category": "other", "fee_rate": "0.0000001"}),
                    422,
                    "invalid_field",
                ),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/service-points".into(),
            unknown: None,
            token: op.clone(),
            body: Some(Box::new(|| json!({"name": "Puskesmas Mamajang", "service": "clinic", "policy": policy}))),
            required: &["name", "service", "policy"],
            amount: None,
            tap: None,
            invalid: vec![
                ("unknown service", json!({"name": "X", "service": "spa", "policy": {}}), 422, "invalid_field"),
                (
                    "bad opening time",
                    json!({"name": "X", "service": "clinic", "policy": {"opens": "25:00", "closes": "26:00"}}),
                    422,
                    "invalid_field",
                ),
                (
                    "opens without closes",
                    json!({"name": "X", "service": "clinic", "policy": {"opens": "08:00"}}),
                    422,
                    "invalid_field",
                ),
                (
                    "unknown time zone",
                    json!({"name": "X", "service": "clinic", "policy": {"timezone": "Mars/Olympus"}}),
                    422,
                    "invalid_field",
                ),
                (
                    "zero quota",
                    json!({"name": "X", "service": "clinic", "policy": {"daily_quota": 0}}),
                    422,
                    "invalid_field",
                ),
                (
                    "negative quota",
                    json!({"name": "X", "service": "clinic", "policy": {"daily_quota": -1}}),
                    422,
                    "invalid_body",
                ),
                (
                    "unknown category",
                    json!({"name": "X", "service": "clinic", "policy": {"categories": ["vip"]}}),
                    422,
                    "invalid_field",
                ),
                (
                    "unknown policy field",
                    json!({"name": "X", "service": "clinic", "policy": {"vip": true}}),
                    422,
                    "invalid_body",
                ),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/agents".into(),
            unknown: None,
            token: op.clone(),
            body: Some(Box::new(|| json!({"name": "Alfamart Pettarani"}))),
            required: &["name"],
            amount: None,
            tap: None,
            invalid: vec![("long name", json!({"name": "x".repeat(201)}), 422, "invalid_field")],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/agents/{}/float", c.agent),
            unknown: Some("/v1/agents/98765/float".into()),
            token: op.clone(),
            body: Some(Box::new(|| idr("1000.00"))),
            required: &["amount"],
            amount: Some(("amount", false)),
            tap: None,
            invalid: vec![
                ("another currency", json!({"amount": "1000", "currency": "JPY"}), 422, "currency_mismatch"),
                ("unknown currency", json!({"amount": "1000.00", "currency": "XYZ"}), 422, "invalid_amount"),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/credentials".into(),
            unknown: None,
            token: op.clone(),
            body: Some(Box::new(|| json!({"role": "kiosk", "name": "kiosk 2"}))),
            required: &["role", "name"],
            amount: None,
            tap: None,
            invalid: vec![
                ("terminal without merchant", json!({"role": "merchant_terminal", "name": "x"}), 422, "invalid_field"),
                (
                    "unknown merchant",
                    json!({"role": "merchant_terminal", "name": "x", "merchant_id": "98765"}),
                    422,
                    "invalid_field",
                ),
                ("bad public key", json!({"role": "kiosk", "name": "x", "public_key": "abc"}), 422, "invalid_field"),
                (
                    "offline limits not an object",
                    json!({"role": "kiosk", "name": "x", "offline_limits": 5}),
                    422,
                    "invalid_field",
                ),
            ],
            ok: 201,
        },
        Endpoint {
            method: "DELETE",
            path: format!("/v1/credentials/{throwaway}"),
            unknown: Some("/v1/credentials/98765".into()),
            token: op.clone(),
            body: None,
            required: &[],
            amount: None,
            tap: None,
            invalid: vec![],
            ok: 200,
        },
        Endpoint {
            method: "POST",
            path: "/v1/adjustments".into(),
            unknown: None,
            token: op.clone(),
            body: Some(Box::new(|| json!({"account_id": c.card.account_id, "amount": "-1.00", "reason": "fix"}))),
            required: &["account_id", "amount", "reason"],
            amount: Some(("amount", true)),
            tap: None,
            invalid: vec![
                (
                    "unknown account",
                    json!({"account_id": "98765", "amount": "1.00", "reason": "x"}),
                    422,
                    "account_unknown",
                ),
                (
                    "empty reason",
                    json!({"account_id": c.card.account_id, "amount": "1.00", "reason": ""}),
                    422,
                    "invalid_field",
                ),
                (
                    "another currency",
                    json!({"account_id": c.card.account_id, "amount": "1.00", "currency": "USD", "reason": "x"}),
                    422,
                    "currency_mismatch",
                ),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/adjustments/{adjustment}/approve"),
            unknown: Some("/v1/adjustments/98765/approve".into()),
            token: c.operator2.clone(),
            body: None,
            required: &[],
            amount: None,
            tap: None,
            invalid: vec![],
            ok: 200,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/approvals/{to_approve}/approve"),
            unknown: Some("/v1/approvals/98765/approve".into()),
            token: c.operator2.clone(),
            body: None,
            required: &[],
            amount: None,
            tap: None,
            invalid: vec![],
            ok: 200,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/approvals/{to_reject}/reject"),
            unknown: Some("/v1/approvals/98765/reject".into()),
            token: c.operator2.clone(),
            body: None,
            required: &[],
            amount: None,
            tap: None,
            invalid: vec![],
            ok: 200,
        },
        Endpoint {
            method: "POST",
            path: "/v1/settlements".into(),
            unknown: None,
            token: op.clone(),
            body: None,
            required: &[],
            amount: None,
            tap: None,
            invalid: vec![],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/payments".into(),
            unknown: None,
            token: c.pos_a.clone(),
            body: Some(Box::new(
                move || json!({"tap": card_tap(), "amount": "10.00", "currency": "IDR", "reference": "order 1"}),
            )),
            required: &["tap", "amount"],
            amount: Some(("amount", false)),
            tap: Some(&c.card),
            invalid: vec![
                (
                    "another currency",
                    json!({"tap": card_tap(), "amount": "10.00", "currency": "USD"}),
                    422,
                    "currency_mismatch",
                ),
                (
                    "unknown currency",
                    json!({"tap": card_tap(), "amount": "10.00", "currency": "idr"}),
                    422,
                    "invalid_amount",
                ),
                (
                    "reference with control characters",
                    json!({"tap": card_tap(), "amount": "10.00", "reference": "a\nb"}),
                    422,
                    "invalid_field",
                ),
                (
                    "more than the balance",
                    json!({"tap": card_tap(), "amount": "1000000.00"}),
                    422,
                    "insufficient_funds",
                ),
                ("tap field missing", json!({"tap": {"picc_data": "00"}, "amount": "10.00"}), 422, "invalid_body"),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/payments/{payment}/refunds"),
            unknown: Some("/v1/payments/98765/refunds".into()),
            token: c.pos_a.clone(),
            body: Some(Box::new(|| json!({"amount": "1.00", "reason": "broken"}))),
            required: &["amount"],
            amount: Some(("amount", false)),
            tap: None,
            invalid: vec![
                ("more than the payment", json!({"amount": "5000.01"}), 422, "refund_exceeds_payment"),
                ("empty reason", json!({"amount": "1.00", "reason": ""}), 422, "invalid_field"),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/holds".into(),
            unknown: None,
            token: c.pos_a.clone(),
            body: Some(Box::new(move || json!({"tap": card_tap(), "amount": "10.00", "expires_in_minutes": 30}))),
            required: &["tap", "amount"],
            amount: Some(("amount", false)),
            tap: Some(&c.card),
            invalid: vec![
                (
                    "zero minutes",
                    json!({"tap": card_tap(), "amount": "10.00", "expires_in_minutes": 0}),
                    422,
                    "invalid_field",
                ),
                (
                    "more than a week",
                    json!({"tap": card_tap(), "amount": "10.00", "expires_in_minutes": 10081}),
                    422,
                    "invalid_field",
                ),
                (
                    "minutes not a number",
                    json!({"tap": card_tap(), "amount": "10.00", "expires_in_minutes": "30"}),
                    422,
                    "invalid_body",
                ),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/holds/{hold_capture}/capture"),
            unknown: Some("/v1/holds/98765/capture".into()),
            token: c.pos_a.clone(),
            body: Some(Box::new(|| json!({"amount": "2500.00"}))),
            required: &["amount"],
            amount: Some(("amount", false)),
            tap: None,
            invalid: vec![("more than held", json!({"amount": "3000.01"}), 422, "capture_exceeds_hold")],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: format!("/v1/holds/{hold_void}/void"),
            unknown: Some(format!("/v1/holds/{payment}/void")),
            token: c.pos_a.clone(),
            body: None,
            required: &[],
            amount: None,
            tap: None,
            invalid: vec![],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/topups".into(),
            unknown: None,
            token: c.teller.clone(),
            body: Some(Box::new(move || json!({"tap": card_tap(), "amount": "10.00"}))),
            required: &["amount"],
            amount: Some(("amount", false)),
            tap: Some(&c.card),
            invalid: vec![
                ("neither tap nor card", json!({"amount": "10.00"}), 422, "invalid_body"),
                (
                    "both tap and card",
                    json!({"tap": card_tap(), "card_id": c.card.id, "amount": "10.00"}),
                    422,
                    "invalid_body",
                ),
                ("unknown card id", json!({"card_id": "98765", "amount": "10.00"}), 422, "card_unknown"),
                ("blocked card id", json!({"card_id": blocked.id, "amount": "10.00"}), 422, "card_blocked"),
                (
                    "another currency",
                    json!({"card_id": c.card.id, "amount": "1000", "currency": "JPY"}),
                    422,
                    "currency_mismatch",
                ),
                (
                    "above the wallet maximum",
                    json!({"card_id": c.card.id, "amount": "1950000.00"}),
                    422,
                    "exceeds_max_balance",
                ),
            ],
            ok: 201,
        },
        Endpoint {
            method: "POST",
            path: "/v1/balance-inquiries".into(),
            unknown: None,
            token: c.kiosk.clone(),
            body: Some(Box::new(move || json!({"tap": card_tap()}))),
            required: &["tap"],
            amount: None,
            tap: Some(&c.card),
            invalid: vec![],
            ok: 200,
        },
        Endpoint {
            method: "POST",
            path: "/v1/offline/journals".into(),
            unknown: None,
            token: till.clone(),
            body: Some(Box::new(journal)),
            required: &["records"],
            amount: None,
            tap: None,
            invalid: vec![
                ("edited record", forged, 422, "offline_bad_signature"),
                ("record 2 first", late, 422, "offline_bad_signature"),
                ("not a record", json!({"records": [{"record": {}, "signature": ""}]}), 422, "invalid_body"),
            ],
            ok: 200,
        },
        Endpoint {
            method: "POST",
            path: "/v1/access-checks".into(),
            unknown: None,
            token: desk.clone(),
            body: Some(Box::new(move || json!({"tap": card_tap()}))),
            required: &["tap"],
            amount: None,
            tap: None,
            invalid: vec![
                (
                    "bad MAC",
                    json!({"tap": {"picc_data": card_tap()["picc_data"], "cmac": "0000000000000000"}}),
                    422,
                    "tap_mac_invalid",
                ),
                ("foreign card", json!({"tap": foreign(50)}), 422, "tap_mac_invalid"),
                (
                    "tap not hex",
                    json!({"tap": {"picc_data": "zz".repeat(16), "cmac": "00".repeat(8)}}),
                    422,
                    "invalid_tap",
                ),
            ],
            ok: 200,
        },
    ];

    // Every write endpoint is in the table.
    let templated = |p: &str| {
        p.split('/')
            .map(|seg| if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) { "{id}" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut tested: Vec<(String, String)> =
        endpoints.iter().map(|e| (e.method.to_lowercase(), templated(&e.path))).collect();
    tested.sort();
    let mut writes: Vec<(String, String)> =
        api::openapi::ROUTES.iter().filter(|(m, _)| *m != "get").map(|(m, p)| (m.to_string(), p.to_string())).collect();
    writes.sort();
    check_eq!(tested, writes);

    let mut cases = 0;
    for e in &endpoints {
        // (last entry, tree size): a refusal writes nothing, except that a replayed tap is
        // one leaf (the suspected clone, for auditors), and no entry.
        let before = std::cell::Cell::new(mark(s, &c.auditor)?);
        let mut run = |what: &str, token: Option<&str>, key: Option<&str>, body: Body<'_>, status: u16, code: &str| {
            let r = s.send(e.method, &e.path, token, key, body)?;
            r.problem(status, code).map_err(|err| format!("{} {} — {what}: {err}", e.method, e.path))?;
            let after = mark(s, &c.auditor)?;
            let (entries, leaves) = before.get();
            let expected = if code == "card_replay" { (entries, leaves + 1) } else { (entries, leaves) };
            check_eq!(after, expected, "{} {} — {what}: (last entry, tree size) changed", e.method, e.path);
            before.set(after);
            cases += 1;
            Ok::<(), String>(())
        };
        let valid = e.body.as_ref().map(|b| b());
        let valid_bytes = valid.as_ref().map(|v| v.to_string()).unwrap_or_default();
        let body = || match &valid {
            Some(v) => Body::Json(v),
            None => Body::None,
        };
        let tok = Some(e.token.as_str());
        // Credentials and keys.
        run("no token", None, Some(&s.key()), body(), 401, "unauthorized")?;
        run(
            "wrong token",
            Some("kt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            Some(&s.key()),
            body(),
            401,
            "unauthorized",
        )?;
        run("not a bearer token", Some("Basic dXNlcjpwYXNz"), Some(&s.key()), body(), 401, "unauthorized")?;
        run("no Idempotency-Key", tok, None, body(), 400, "idempotency_key_required")?;
        run("Idempotency-Key with a space", tok, Some("a b"), body(), 400, "idempotency_key_invalid")?;
        run("Idempotency-Key too long", tok, Some(&"k".repeat(101)), body(), 400, "idempotency_key_invalid")?;
        // Size: 17 KiB, valid JSON.
        // The offline journal upload has its own, larger limit.
        let limit =
            if e.path == "/v1/offline/journals" { api::offline::UPLOAD_BYTES_MAX } else { api::BODY_LIMIT_BYTES };
        let big = json!({"name": "x".repeat(limit + 1024)}).to_string();
        run(
            "oversize body",
            tok,
            Some(&s.key()),
            Body::Raw(big.as_bytes(), "application/json"),
            413,
            "body_too_large",
        )?;
        if let Some(unknown) = &e.unknown {
            let r = s.send(e.method, unknown, tok, Some(&s.key()), body())?;
            r.problem(404, "not_found").map_err(|err| format!("{} {unknown}: {err}", e.method))?;
            check_eq!(mark(s, &c.auditor)?, before.get(), "{} {unknown}", e.method);
        }
        if let Some(valid) = &valid {
            let key = || Some(s.key());
            run(
                "malformed JSON",
                tok,
                key().as_deref(),
                Body::Raw(&valid_bytes.as_bytes()[..valid_bytes.len() - 1], "application/json"),
                400,
                "malformed_json",
            )?;
            run("empty body", tok, key().as_deref(), Body::Raw(b"", "application/json"), 400, "malformed_json")?;
            run(
                "not JSON",
                tok,
                key().as_deref(),
                Body::Raw(b"amount=1.00", "application/json"),
                400,
                "malformed_json",
            )?;
            run("not an object", tok, key().as_deref(), Body::Json(&json!([valid])), 422, "invalid_body")?;
            run(
                "text/plain",
                tok,
                key().as_deref(),
                Body::Raw(valid_bytes.as_bytes(), "text/plain"),
                415,
                "unsupported_media_type",
            )?;
            run(
                "unknown field",
                tok,
                key().as_deref(),
                Body::Json(&with(valid.clone(), "surprise", json!(1))),
                422,
                "invalid_body",
            )?;
            for field in e.required {
                let b = without(valid.clone(), field);
                run(&format!("missing {field}"), tok, key().as_deref(), Body::Json(&b), 422, "invalid_body")?;
            }
            for (field, value) in valid.as_object().ok_or("object")? {
                let wrong = if value.is_string() { json!(12) } else { json!("twelve") };
                let b = with(valid.clone(), field, wrong);
                run(&format!("wrong type of {field}"), tok, key().as_deref(), Body::Json(&b), 422, "invalid_body")?;
                let b = with(valid.clone(), field, Value::Null);
                let optional = !e.required.contains(&field.as_str());
                if !optional {
                    run(&format!("null {field}"), tok, key().as_deref(), Body::Json(&b), 422, "invalid_body")?;
                }
            }
            if let Some((field, signed)) = e.amount {
                let mut bad = vec![
                    ("too many decimals", json!("12.345")),
                    ("zero", json!("0.00")),
                    ("zero without decimals", json!("0")),
                    ("not a number", json!("abc")),
                    ("exponent", json!("1e3")),
                    ("leading space", json!(" 1.00")),
                    ("comma", json!("1,00")),
                    ("plus sign", json!("+1.00")),
                    ("above the maximum", json!("1000000000000.01")),
                    ("far above the maximum", json!("99999999999999999999999999999999.99")),
                    ("empty", json!("")),
                ];
                if !signed {
                    bad.push(("negative", json!("-5.00")));
                    bad.push(("negative zero", json!("-0.00")));
                }
                for (what, amount) in bad {
                    let b = with(valid.clone(), field, amount);
                    run(&format!("amount {what}"), tok, key().as_deref(), Body::Json(&b), 422, "invalid_amount")?;
                }
                let b = with(valid.clone(), field, json!(12.5));
                run("amount as a JSON number", tok, key().as_deref(), Body::Json(&b), 422, "invalid_body")?;
            }
            if let Some(card) = e.tap {
                let tapped = |tap: Value| with(valid.clone(), "tap", tap);
                let fresh = s.tap(card);
                let bad_mac = json!({"picc_data": fresh["picc_data"], "cmac": "00112233445566FF"});
                run("bad MAC", tok, key().as_deref(), Body::Json(&tapped(bad_mac)), 422, "tap_mac_invalid")?;
                run("foreign card", tok, key().as_deref(), Body::Json(&tapped(foreign(90))), 422, "tap_mac_invalid")?;
                let short = json!({"picc_data": "0011", "cmac": fresh["cmac"]});
                run("short PICCData", tok, key().as_deref(), Body::Json(&tapped(short)), 422, "invalid_tap")?;
                run("unknown card", tok, key().as_deref(), Body::Json(&tapped(unknown_card())), 422, "card_unknown")?;
                let blocked_tap = s.tap(&blocked);
                run("blocked card", tok, key().as_deref(), Body::Json(&tapped(blocked_tap)), 422, "card_blocked")?;
                run("replayed tap", tok, key().as_deref(), Body::Json(&tapped(replay.clone())), 409, "card_replay")?;
                let extra = json!({"picc_data": fresh["picc_data"], "cmac": fresh["cmac"], "enc": "00"});
                run(
                    "tap with an unknown field",
                    tok,
                    key().as_deref(),
                    Body::Json(&tapped(extra)),
                    422,
                    "invalid_body",
                )?;
            }
        }
        for (what, body, status, code) in &e.invalid {
            run(what, tok, Some(&s.key()), Body::Json(body), *status, code)?;
        }
        // The valid request goes through: each refusal above was for its one fault.
        let body = e.body.as_ref().map(|b| b());
        let r = s.send(e.method, &e.path, tok, Some(&s.key()), body.as_ref().map_or(Body::None, Body::Json))?;
        r.expect(e.ok).map_err(|err| format!("{} {} with a valid request: {err}", e.method, e.path))?;
    }
    check!(cases > 400, "only {cases} bad requests were sent");
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}
