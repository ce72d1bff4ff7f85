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

/// The objects the endpoints act on, made before the table.
struct Fixtures {
    /// A holder with two cards of its own: `spare` and `blocked`.
    spare_holder: String,
    spare: TestCard,
    /// A card blocked for fraud: its taps are refusals.
    blocked: TestCard,
    /// A card issued at key version 1 (the key file's newest is 2), to rotate; and its
    /// first tap again (counter 1, used by a balance inquiry): a replay.
    rotating: TestCard,
    rotating_replay: Value,
    /// The main card's first tap again (counter 1): a replay.
    replay: Value,
    /// A payment of 5 000.00 to refund.
    payment: String,
    /// A hold of 3 000.00 to capture, and one of 2 000.00 to void.
    hold_capture: String,
    hold_void: String,
    /// An adjustment waiting for a second operator.
    adjustment: String,
    /// A kiosk credential to revoke.
    throwaway: String,
    /// A webhook subscription to revoke.
    webhook: String,
    /// Two float requests above the threshold: one to approve, one to reject.
    to_approve: String,
    to_reject: String,
    /// The token of a library gate's desk.
    desk: String,
    /// A POS that may work offline.
    till: Till,
    /// A one-record journal of the till whose record was edited after it was signed.
    forged: Value,
    /// A one-record journal of the till whose only record claims to be the second.
    late: Value,
    /// A transit operator's route (two stops) and fare table in force, a gate validator
    /// bound to its stop 0, and a terminal of the operator not yet bound.
    transit: Transit,
}

/// A POS that may work offline: its journal key, its token and its last sync.
struct Till {
    key: Vec<u8>,
    token: String,
    sync_id: u64,
    /// When its records were taken.
    taken_at: i64,
}

pub fn bad_input_writes_nothing(backend: Backend) -> TestResult {
    // Two key versions: a card issued at 1 can be rotated to 2.
    let server = Server::start_edited(backend, |c| c, |keys| format!("{keys}{}", crate::rotation::V2))?;
    let c = City::on(server, "100000.00")?;
    let s = &c.s;
    let f = the_objects_the_endpoints_act_on(&c)?;
    let endpoints = every_write_endpoint(&c, &f);
    every_write_endpoint_is_in_the_table(&endpoints)?;
    let mut cases = 0;
    for e in &endpoints {
        cases += bad_requests_write_nothing(&c, &f, e)?;
    }
    check!(cases > 400, "only {cases} bad requests were sent");
    check!(s.trial(&c.auditor)?.1, "balanced");
    Ok(())
}

/// Objects the endpoints act on: a spare holder with a spare and a blocked card, a used
/// tap of the main card, a payment, two holds, an adjustment, a kiosk credential, two
/// float requests, a library gate and an offline till.
fn the_objects_the_endpoints_act_on(c: &City) -> Result<Fixtures, String> {
    let s = &c.s;
    let op = s.operator.clone();
    let spare_holder = s.holder("Spare Holder", "7371030303030004", &["staff"])?;
    let spare = s.card(&spare_holder, 7)?;
    let blocked = s.card(&spare_holder, 8)?;
    s.post(&format!("/v1/cards/{}/block", blocked.id), &op, &json!({"reason": "fraud"}))?.expect(200)?;
    let (rotating, rotating_replay) = a_card_to_rotate(c, &spare_holder)?;
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
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["settlement.paid"]});
    let webhook = id(s.post("/v1/webhooks", &op, &hook)?.expect(201)?)?;
    // Two requests for a second operator: a float above the threshold, and another.
    let float_path = format!("/v1/agents/{}/float", c.agent);
    let to_approve = id(s.post(&float_path, &op, &idr("50000001.00"))?.expect(202)?)?;
    let to_reject = id(s.post(&float_path, &op, &idr("50000002.00"))?.expect(202)?)?;
    let sp =
        s.post("/v1/service-points", &op, &json!({"name": "Perpustakaan Kota", "service": "library", "policy": {}}))?;
    let sp = id(sp.expect(201)?)?;
    let desk = s.credential("service_point", "library gate", Some(("service_point_id", &sp)))?;
    let till = an_offline_till(c)?;
    let mut forged = journal(c, &till);
    forged["records"][0]["record"]["amount_minor"] = json!(99_999);
    let mut late = journal(c, &till);
    late["records"][0]["record"]["seq"] = json!(2);
    let transit = a_transit_line(c)?;
    Ok(Fixtures {
        transit,
        spare_holder,
        spare,
        blocked,
        rotating,
        rotating_replay,
        replay,
        payment,
        hold_capture,
        hold_void,
        adjustment,
        throwaway,
        webhook,
        to_approve,
        to_reject,
        desk,
        till,
        forged,
        late,
    })
}

/// A transit operator's line: its route, a gate validator's token, an unbound terminal,
/// and a ride of the city's card not tapped off.
struct Transit {
    merchant: String,
    route: String,
    gate: String,
    unbound: String,
    ride: i64,
}

/// A BRT operator with a two-stop route priced by distance (at most 30.00) approved by a
/// second operator, a gate validator at stop 0, a terminal of it not bound yet, and a
/// boarding of the city's card at the gate.
fn a_transit_line(c: &City) -> Result<Transit, String> {
    let s = &c.s;
    let (merchant, _) = s.merchant("Trans Kota", "transit", "0.02")?;
    let body = json!({"merchant_id": merchant, "name": "Koridor 1", "mode": "bus", "stops": ["Pasar", "Pantai"]});
    let route = id(s.post("/v1/transit/routes", &s.operator, &body)?.expect(201)?)?;
    let terminal = |name: &str| -> Result<(String, String), String> {
        let body = json!({"role": "merchant_terminal", "name": name, "merchant_id": merchant});
        let v = s.post("/v1/credentials", &s.operator, &body)?;
        let v = v.expect(201)?;
        Ok((id(v)?, v["token"].as_str().ok_or("token")?.to_owned()))
    };
    let (gate_id, gate) = terminal("gate Pasar")?;
    let (unbound, _) = terminal("bus 12")?;
    let bind = json!({"credential_id": gate_id, "route_id": route, "stop": 0});
    s.post("/v1/transit/validators", &s.operator, &bind)?.expect(201)?;
    let fare = json!({"kind": "distance", "base_minor": 2000, "per_stop_minor": 500, "max_minor": 3000,
        "time_limit_minutes": 90});
    let table = json!({"time_zone": "Asia/Jakarta", "table": {"routes": {route.clone(): fare},
        "transfer": null, "daily_cap_minor": null, "weekly_cap_minor": null, "concessions": {}}});
    let approval = id(s.post("/v1/transit/fares", &s.operator, &table)?.expect(202)?)?;
    s.post(&format!("/v1/approvals/{approval}/approve"), &c.operator2, &json!({}))?.expect(200)?;
    let boarded = s.post("/v1/transit/taps", &gate, &json!({"tap": s.tap(&c.card), "direction": "on"}))?;
    let ride = boarded.expect(201)?["event_id"].as_i64().ok_or("the boarding's event")?;
    Ok(Transit { merchant, route, gate, unbound, ride })
}

/// Transit routes, validators, fare tables and taps at a validator.
fn transit_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let (op, t) = (&c.s.operator, &f.transit);
    let table = |route: &str| {
        json!({"routes": {route: {"kind": "flat", "fare_minor": 4000}}, "transfer": null,
            "daily_cap_minor": null, "weekly_cap_minor": null, "concessions": {}})
    };
    vec![
        Endpoint {
            body: Some(Box::new(
                move || json!({"merchant_id": t.merchant, "name": "Koridor 2", "mode": "brt", "stops": ["A", "B", "C"]}),
            )),
            required: &["merchant_id", "name", "mode", "stops"],
            invalid: vec![
                (
                    "not a transit operator",
                    json!({"merchant_id": c.merchant_a, "name": "x", "mode": "bus", "stops": ["A", "B"]}),
                    422,
                    "invalid_field",
                ),
                (
                    "one stop",
                    json!({"merchant_id": t.merchant, "name": "x", "mode": "bus", "stops": ["A"]}),
                    422,
                    "invalid_field",
                ),
                (
                    "unknown mode",
                    json!({"merchant_id": t.merchant, "name": "x", "mode": "tram", "stops": ["A", "B"]}),
                    422,
                    "invalid_field",
                ),
            ],
            ..endpoint("POST", "/v1/transit/routes", op, 201)
        },
        Endpoint {
            body: Some(Box::new(move || json!({"credential_id": t.unbound, "route_id": t.route}))),
            required: &["credential_id", "route_id"],
            invalid: vec![
                (
                    "stop off the route",
                    json!({"credential_id": t.unbound, "route_id": t.route, "stop": 2}),
                    422,
                    "invalid_field",
                ),
                ("unknown credential", json!({"credential_id": "98765", "route_id": t.route}), 422, "invalid_field"),
                ("unknown route", json!({"credential_id": t.unbound, "route_id": "98765"}), 422, "invalid_field"),
            ],
            ..endpoint("POST", "/v1/transit/validators", op, 201)
        },
        Endpoint {
            body: Some(Box::new(move || json!({"time_zone": "Asia/Jakarta", "table": table(&t.route)}))),
            required: &["time_zone", "table"],
            invalid: vec![
                (
                    "unknown time zone",
                    json!({"time_zone": "Mars/Olympus", "table": table(&t.route)}),
                    422,
                    "invalid_field",
                ),
                ("unknown route", json!({"time_zone": "Asia/Jakarta", "table": table("98765")}), 422, "invalid_field"),
                ("not a table", json!({"time_zone": "Asia/Jakarta", "table": {"routes": 5}}), 422, "invalid_body"),
            ],
            ..endpoint("POST", "/v1/transit/fares", op, 202)
        },
        transit_tap_endpoint(c, t),
        ride_fix_endpoint(t),
    ]
}

/// The operator's gate sets where the fixture's ride (never tapped off) alighted.
fn ride_fix_endpoint<'a>(t: &'a Transit) -> Endpoint<'a> {
    Endpoint {
        unknown: Some("/v1/transit/rides/98765/tap-off".into()),
        body: Some(Box::new(|| json!({"stop": 1}))),
        required: &["stop"],
        invalid: vec![
            ("a stop off the route", json!({"stop": 2}), 422, "invalid_field"),
            ("not a number", json!({"stop": "Pantai"}), 422, "invalid_body"),
        ],
        ..endpoint("POST", format!("/v1/transit/rides/{}/tap-off", t.ride), &t.gate, 201)
    }
}

/// A tap at the gate validator: refusals of the card are the table's tap cases.
fn transit_tap_endpoint<'a>(c: &'a City, t: &'a Transit) -> Endpoint<'a> {
    Endpoint {
        body: Some(Box::new(move || json!({"tap": c.s.tap(&c.card), "direction": "on"}))),
        required: &["tap", "direction"],
        tap: Some(&c.card),
        invalid: vec![(
            "unknown direction",
            json!({"tap": c.s.tap(&c.card), "direction": "sideways"}),
            422,
            "invalid_field",
        )],
        ..endpoint("POST", "/v1/transit/taps", &t.gate, 201)
    }
}

/// A card issued at key version 1, its first tap used by a kiosk; and that tap again.
fn a_card_to_rotate(c: &City, holder: &str) -> Result<(TestCard, Value), String> {
    let s = &c.s;
    let uid = "04A1B2C3D4E517";
    let r = s.post("/v1/cards", &s.operator, &json!({"uid": uid, "holder_id": holder, "key_version": 1}))?;
    let v = r.expect(201)?;
    let card = TestCard {
        id: id(v)?,
        uid: uid.to_owned(),
        account_id: v["account_id"].as_str().ok_or("account_id")?.to_owned(),
        counter: std::sync::atomic::AtomicU32::new(0),
    };
    s.post("/v1/balance-inquiries", &c.kiosk, &json!({"tap": s.tap(&card)}))?.expect(200)?;
    Ok((card, s.tap_at(uid, 1)))
}

/// A tap of `card` made with key version 1's keys, at `counter`.
fn tap_v1(s: &Server, card: &TestCard, counter: u32) -> Value {
    let v1 = s.keys.version(1).expect("key version 1");
    tap_with(v1.sdm_meta_read_key(), v1.sdm_file_read_master_key(), b"KARTU-MKS", &card.uid, counter)
}

/// A POS that may work offline, with its limits, synced once.
fn an_offline_till(c: &City) -> Result<Till, String> {
    let s = &c.s;
    let key = offline::generate_key().map_err(|e| e.to_string())?;
    let till_pk = offline::JournalWriter::new(&key, None).map_err(|e| e.to_string())?.public_key_hex();
    let token = s
        .post(
            "/v1/credentials",
            &s.operator,
            &json!({"role": "merchant_terminal", "name": "offline till", "merchant_id": c.merchant_a,
                "public_key": till_pk, "offline_limits": {"per_tap_minor": 100000, "per_card_per_day_minor": 100000, "outstanding_minor": 100000}}),
        )?
        .expect(201)?["token"]
        .as_str()
        .ok_or("token")?
        .to_owned();
    let sync_id = s.get("/v1/offline/deny-list", &token)?.expect(200)?["sync_id"].as_u64().ok_or("sync_id")?;
    let taken_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_micros()
            as i64;
    Ok(Till { key, token, sync_id, taken_at })
}

/// A fresh one-record journal of the till: a genuine tap of the main card, paying 1.00.
fn journal(c: &City, till: &Till) -> Value {
    let mut w = offline::JournalWriter::new(&till.key, None).expect("writer");
    let tap = c.s.tap(&c.card);
    let r = w
        .append(offline::NewRecord {
            time_us: till.taken_at,
            kind: offline::RecordKind::Payment,
            uid: c.card.uid.clone(),
            picc_data: tap["picc_data"].as_str().unwrap_or_default().to_owned(),
            cmac: tap["cmac"].as_str().unwrap_or_default().to_owned(),
            amount_minor: 100,
            currency: "IDR".into(),
            reference: None,
            decision: None,
            sync_id: till.sync_id,
        })
        .expect("record");
    json!({"records": [r]})
}

/// A tap of the main card's UID made with another city's keys: it never verifies here.
fn foreign(c: &City, counter: u32) -> Value {
    let (meta, file) = (card::Key::from_bytes([0x11; 16]), card::Key::from_bytes([0x22; 16]));
    tap_with(&meta, &file, b"KARTU-MKS", &c.card.uid, counter)
}

/// An endpoint with no body, no id to get wrong and no invalid cases of its own.
fn endpoint<'a>(method: &'static str, path: impl Into<String>, token: &str, ok: u16) -> Endpoint<'a> {
    Endpoint {
        method,
        path: path.into(),
        unknown: None,
        token: token.to_owned(),
        body: None,
        required: &[],
        amount: None,
        tap: None,
        invalid: vec![],
        ok,
    }
}

/// The table, in the order the endpoints are tried (their invalid cases' taps are made
/// in this order too).
fn every_write_endpoint<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    [
        holder_endpoints(c),
        card_endpoints(c, f),
        merchant_endpoints(c),
        service_point_endpoints(c),
        agent_and_credential_endpoints(c, f),
        webhook_endpoints(c, f),
        adjustment_approval_and_settlement_endpoints(c, f),
        payment_endpoints(c, f),
        hold_endpoints(c, f),
        topup_and_inquiry_endpoints(c, f),
        offline_and_access_endpoints(c, f),
        // Last: its tap is made when it is sent, above every tap made for the table.
        transit_endpoints(c, f),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Holders: a NIK of 16 digits, a name, known categories; a NIK registered once.
fn holder_endpoints(c: &City) -> Vec<Endpoint<'_>> {
    vec![Endpoint {
        body: Some(Box::new(|| json!({"name": "Valid Holder", "nik": "7371040404040005", "categories": ["resident"]}))),
        required: &["name", "nik", "categories"],
        invalid: vec![
            ("short NIK", json!({"name": "A", "nik": "123", "categories": []}), 422, "invalid_field"),
            (
                "NIK with letters",
                json!({"name": "A", "nik": "73710404040400AB", "categories": []}),
                422,
                "invalid_field",
            ),
            ("empty name", json!({"name": "  ", "nik": "7371040404040006", "categories": []}), 422, "invalid_field"),
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
        ..endpoint("POST", "/v1/holders", &c.s.operator, 201)
    }]
}

/// Cards: issued with a well-formed, free UID to a known holder; blocked for a known
/// reason; unblocked; replaced by a well-formed, free UID.
fn card_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let op = &c.s.operator;
    let spare_holder = &f.spare_holder;
    vec![
        Endpoint {
            body: Some(Box::new(move || json!({"uid": "04A1B2C3D4E5F6", "holder_id": spare_holder}))),
            required: &["uid", "holder_id"],
            invalid: vec![
                ("short UID", json!({"uid": "04A1B2", "holder_id": spare_holder}), 422, "invalid_field"),
                ("UID not hex", json!({"uid": "04A1B2C3D4E5GG", "holder_id": spare_holder}), 422, "invalid_field"),
                ("unknown holder", json!({"uid": "04A1B2C3D4E5F6", "holder_id": "98765"}), 422, "holder_unknown"),
                ("holder id not a number", json!({"uid": "04A1B2C3D4E5F6", "holder_id": "x"}), 422, "holder_unknown"),
                ("UID taken", json!({"uid": c.card.uid, "holder_id": spare_holder}), 409, "card_exists"),
            ],
            ..endpoint("POST", "/v1/cards", op, 201)
        },
        Endpoint {
            unknown: Some("/v1/cards/98765/block".into()),
            body: Some(Box::new(|| json!({"reason": "damaged"}))),
            required: &["reason"],
            invalid: vec![("unknown reason", json!({"reason": "bored"}), 422, "invalid_field")],
            ..endpoint("POST", format!("/v1/cards/{}/block", f.spare.id), op, 200)
        },
        Endpoint {
            unknown: Some("/v1/cards/98765/unblock".into()),
            ..endpoint("POST", format!("/v1/cards/{}/unblock", f.spare.id), op, 200)
        },
        Endpoint {
            unknown: Some("/v1/cards/98765/replace".into()),
            body: Some(Box::new(|| json!({"new_uid": "04A1B2C3D4E5F7"}))),
            required: &["new_uid"],
            invalid: vec![
                ("bad UID", json!({"new_uid": "not a uid"}), 422, "invalid_field"),
                ("UID taken", json!({"new_uid": c.card.uid}), 409, "card_exists"),
            ],
            ..endpoint("POST", format!("/v1/cards/{}/replace", f.spare.id), op, 201)
        },
        key_version_endpoint(c, f),
    ]
}

/// A card's key version: raised to a version of the key file, shown a fresh tap of that
/// card at exactly that version.
fn key_version_endpoint<'a>(c: &'a City, f: &'a Fixtures) -> Endpoint<'a> {
    let (s, card) = (&c.s, &f.rotating);
    let fresh = move || s.tap(card);
    let bad_mac = json!({"picc_data": fresh()["picc_data"], "cmac": "00112233445566FF"});
    Endpoint {
        unknown: Some("/v1/cards/98765/key-version".into()),
        body: Some(Box::new(move || json!({"key_version": 2, "tap": fresh()}))),
        required: &["key_version", "tap"],
        invalid: vec![
            ("version 0", json!({"key_version": 0, "tap": fresh()}), 422, "invalid_field"),
            ("a version the key file lacks", json!({"key_version": 3, "tap": fresh()}), 422, "invalid_field"),
            ("version above 255", json!({"key_version": 256, "tap": fresh()}), 422, "invalid_body"),
            (
                "the card's own version",
                json!({"key_version": 1, "tap": tap_v1(s, card, 500)}),
                409,
                "key_version_not_newer",
            ),
            (
                "a tap at the old version",
                json!({"key_version": 2, "tap": tap_v1(s, card, 501)}),
                422,
                "tap_version_mismatch",
            ),
            ("another card's tap", json!({"key_version": 2, "tap": s.tap(&c.card)}), 422, "tap_card_mismatch"),
            ("bad MAC", json!({"key_version": 2, "tap": bad_mac}), 422, "tap_mac_invalid"),
            ("foreign card", json!({"key_version": 2, "tap": foreign(c, 91)}), 422, "tap_mac_invalid"),
            ("replayed tap", json!({"key_version": 2, "tap": f.rotating_replay.clone()}), 409, "card_replay"),
        ],
        ..endpoint("POST", format!("/v1/cards/{}/key-version", card.id), &s.operator, 200)
    }
}

/// Merchants: a known category and a fee rate between 0 and 1, to six places at most.
fn merchant_endpoints(c: &City) -> Vec<Endpoint<'_>> {
    vec![Endpoint {
        body: Some(Box::new(|| json!({"name": "Warung Coto", "category": "restaurant", "fee_rate": "0.005"}))),
        required: &["name", "category", "fee_rate"],
        invalid: vec![
            ("unknown category", json!({"name": "X", "category": "casino", "fee_rate": "0.01"}), 422, "invalid_field"),
            ("fee rate above 1", json!({"name": "X", "category": "other", "fee_rate": "1.5"}), 422, "invalid_field"),
            ("negative fee rate", json!({"name": "X", "category": "other", "fee_rate": "-0.01"}), 422, "invalid_field"),
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
        ..endpoint("POST", "/v1/merchants", &c.s.operator, 201)
    }]
}

/// Service points: a known service and a policy of known fields, hours and time zone.
fn service_point_endpoints(c: &City) -> Vec<Endpoint<'_>> {
    let policy = json!({"categories": ["resident"], "opens": "07:00", "closes": "16:00", "timezone": "Asia/Makassar",
        "daily_quota": 2, "anti_passback_minutes": 10, "issues_queue_numbers": true});
    let clinic = |policy: Value| json!({"name": "X", "service": "clinic", "policy": policy});
    vec![Endpoint {
        body: Some(Box::new(move || json!({"name": "Puskesmas Mamajang", "service": "clinic", "policy": policy}))),
        required: &["name", "service", "policy"],
        invalid: vec![
            ("unknown service", json!({"name": "X", "service": "spa", "policy": {}}), 422, "invalid_field"),
            ("bad opening time", clinic(json!({"opens": "25:00", "closes": "26:00"})), 422, "invalid_field"),
            ("opens without closes", clinic(json!({"opens": "08:00"})), 422, "invalid_field"),
            ("unknown time zone", clinic(json!({"timezone": "Mars/Olympus"})), 422, "invalid_field"),
            ("zero quota", clinic(json!({"daily_quota": 0})), 422, "invalid_field"),
            ("negative quota", clinic(json!({"daily_quota": -1})), 422, "invalid_body"),
            ("unknown category", clinic(json!({"categories": ["vip"]})), 422, "invalid_field"),
            ("unknown policy field", clinic(json!({"vip": true})), 422, "invalid_body"),
        ],
        ..endpoint("POST", "/v1/service-points", &c.s.operator, 201)
    }]
}

/// Agents and their float (in IDR); credentials scoped to a known merchant, with a
/// well-formed key and limits; a credential's revocation.
fn agent_and_credential_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let op = &c.s.operator;
    vec![
        Endpoint {
            body: Some(Box::new(|| json!({"name": "Alfamart Pettarani"}))),
            required: &["name"],
            invalid: vec![("long name", json!({"name": "x".repeat(201)}), 422, "invalid_field")],
            ..endpoint("POST", "/v1/agents", op, 201)
        },
        Endpoint {
            unknown: Some("/v1/agents/98765/float".into()),
            body: Some(Box::new(|| idr("1000.00"))),
            required: &["amount"],
            amount: Some(("amount", false)),
            invalid: vec![
                ("another currency", json!({"amount": "1000", "currency": "JPY"}), 422, "currency_mismatch"),
                ("unknown currency", json!({"amount": "1000.00", "currency": "XYZ"}), 422, "invalid_amount"),
            ],
            ..endpoint("POST", format!("/v1/agents/{}/float", c.agent), op, 201)
        },
        Endpoint {
            body: Some(Box::new(|| json!({"role": "kiosk", "name": "kiosk 2"}))),
            required: &["role", "name"],
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
            ..endpoint("POST", "/v1/credentials", op, 201)
        },
        Endpoint {
            unknown: Some("/v1/credentials/98765".into()),
            ..endpoint("DELETE", format!("/v1/credentials/{}", f.throwaway), op, 200)
        },
    ]
}

/// Webhook subscriptions: an http(s) URL and known event kinds; revoking one.
fn webhook_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let op = &c.s.operator;
    vec![
        Endpoint {
            body: Some(Box::new(|| json!({"url": "https://shop.example/hooks", "events": ["settlement.paid"]}))),
            required: &["url", "events"],
            invalid: vec![
                (
                    "not http",
                    json!({"url": "ftp://shop.example/x", "events": ["settlement.paid"]}),
                    422,
                    "invalid_field",
                ),
                (
                    "unknown event",
                    json!({"url": "https://shop.example/x", "events": ["payment.made"]}),
                    422,
                    "invalid_field",
                ),
                ("no event", json!({"url": "https://shop.example/x", "events": []}), 422, "invalid_field"),
                (
                    "unknown merchant",
                    json!({"url": "https://shop.example/x", "events": ["hold.expired"], "merchant_id": "98765"}),
                    404,
                    "not_found",
                ),
            ],
            ..endpoint("POST", "/v1/webhooks", op, 201)
        },
        Endpoint {
            unknown: Some("/v1/webhooks/98765".into()),
            ..endpoint("DELETE", format!("/v1/webhooks/{}", f.webhook), op, 200)
        },
    ]
}

/// Adjustments (signed amounts, a known account, a reason) and their approval by a second
/// operator; approving and rejecting requests; a settlement run.
fn adjustment_approval_and_settlement_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let (op, op2) = (&c.s.operator, &c.operator2);
    let account = &c.card.account_id;
    vec![
        Endpoint {
            body: Some(Box::new(move || json!({"account_id": account, "amount": "-1.00", "reason": "fix"}))),
            required: &["account_id", "amount", "reason"],
            amount: Some(("amount", true)),
            invalid: vec![
                (
                    "unknown account",
                    json!({"account_id": "98765", "amount": "1.00", "reason": "x"}),
                    422,
                    "account_unknown",
                ),
                ("empty reason", json!({"account_id": account, "amount": "1.00", "reason": ""}), 422, "invalid_field"),
                (
                    "another currency",
                    json!({"account_id": account, "amount": "1.00", "currency": "USD", "reason": "x"}),
                    422,
                    "currency_mismatch",
                ),
            ],
            ..endpoint("POST", "/v1/adjustments", op, 201)
        },
        Endpoint {
            unknown: Some("/v1/adjustments/98765/approve".into()),
            ..endpoint("POST", format!("/v1/adjustments/{}/approve", f.adjustment), op2, 200)
        },
        Endpoint {
            unknown: Some("/v1/approvals/98765/approve".into()),
            ..endpoint("POST", format!("/v1/approvals/{}/approve", f.to_approve), op2, 200)
        },
        Endpoint {
            unknown: Some("/v1/approvals/98765/reject".into()),
            ..endpoint("POST", format!("/v1/approvals/{}/reject", f.to_reject), op2, 200)
        },
        endpoint("POST", "/v1/settlements", op, 201),
    ]
}

/// Payments (a genuine tap, an amount in IDR, a plain reference, within the balance) and
/// refunds (within the payment, with a reason).
fn payment_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let card_tap = move || c.s.tap(&c.card);
    vec![
        Endpoint {
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
            ..endpoint("POST", "/v1/payments", &c.pos_a, 201)
        },
        Endpoint {
            unknown: Some("/v1/payments/98765/refunds".into()),
            body: Some(Box::new(|| json!({"amount": "1.00", "reason": "broken"}))),
            required: &["amount"],
            amount: Some(("amount", false)),
            invalid: vec![
                ("more than the payment", json!({"amount": "5000.01"}), 422, "refund_exceeds_payment"),
                ("empty reason", json!({"amount": "1.00", "reason": ""}), 422, "invalid_field"),
            ],
            ..endpoint("POST", format!("/v1/payments/{}/refunds", f.payment), &c.pos_a, 201)
        },
    ]
}

/// Holds (for a week at most), their capture (within the hold) and their void (a payment
/// is no hold).
fn hold_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let card_tap = move || c.s.tap(&c.card);
    let minutes = |m: Value| json!({"tap": card_tap(), "amount": "10.00", "expires_in_minutes": m});
    vec![
        Endpoint {
            body: Some(Box::new(move || json!({"tap": card_tap(), "amount": "10.00", "expires_in_minutes": 30}))),
            required: &["tap", "amount"],
            amount: Some(("amount", false)),
            tap: Some(&c.card),
            invalid: vec![
                ("zero minutes", minutes(json!(0)), 422, "invalid_field"),
                ("more than a week", minutes(json!(10081)), 422, "invalid_field"),
                ("minutes not a number", minutes(json!("30")), 422, "invalid_body"),
            ],
            ..endpoint("POST", "/v1/holds", &c.pos_a, 201)
        },
        Endpoint {
            unknown: Some("/v1/holds/98765/capture".into()),
            body: Some(Box::new(|| json!({"amount": "2500.00"}))),
            required: &["amount"],
            amount: Some(("amount", false)),
            invalid: vec![("more than held", json!({"amount": "3000.01"}), 422, "capture_exceeds_hold")],
            ..endpoint("POST", format!("/v1/holds/{}/capture", f.hold_capture), &c.pos_a, 201)
        },
        Endpoint {
            unknown: Some(format!("/v1/holds/{}/void", f.payment)),
            ..endpoint("POST", format!("/v1/holds/{}/void", f.hold_void), &c.pos_a, 201)
        },
    ]
}

/// Top-ups (by tap or by a known, unblocked card, in IDR, within the wallet's maximum)
/// and kiosk balance inquiries.
fn topup_and_inquiry_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let card_tap = move || c.s.tap(&c.card);
    let card_id = &c.card.id;
    vec![
        Endpoint {
            body: Some(Box::new(move || json!({"tap": card_tap(), "amount": "10.00"}))),
            required: &["amount"],
            amount: Some(("amount", false)),
            tap: Some(&c.card),
            invalid: vec![
                ("neither tap nor card", json!({"amount": "10.00"}), 422, "invalid_body"),
                (
                    "both tap and card",
                    json!({"tap": card_tap(), "card_id": card_id, "amount": "10.00"}),
                    422,
                    "invalid_body",
                ),
                ("unknown card id", json!({"card_id": "98765", "amount": "10.00"}), 422, "card_unknown"),
                ("blocked card id", json!({"card_id": f.blocked.id, "amount": "10.00"}), 422, "card_blocked"),
                (
                    "another currency",
                    json!({"card_id": card_id, "amount": "1000", "currency": "JPY"}),
                    422,
                    "currency_mismatch",
                ),
                (
                    "above the wallet maximum",
                    json!({"card_id": card_id, "amount": "1950000.00"}),
                    422,
                    "exceeds_max_balance",
                ),
            ],
            ..endpoint("POST", "/v1/topups", &c.teller, 201)
        },
        Endpoint {
            body: Some(Box::new(move || json!({"tap": card_tap()}))),
            required: &["tap"],
            tap: Some(&c.card),
            ..endpoint("POST", "/v1/balance-inquiries", &c.kiosk, 200)
        },
    ]
}

/// Offline journal uploads (signed records, in order) and access checks (genuine taps).
fn offline_and_access_endpoints<'a>(c: &'a City, f: &'a Fixtures) -> Vec<Endpoint<'a>> {
    let card_tap = move || c.s.tap(&c.card);
    vec![
        Endpoint {
            body: Some(Box::new(move || journal(c, &f.till))),
            required: &["records"],
            invalid: vec![
                ("edited record", f.forged.clone(), 422, "offline_bad_signature"),
                ("record 2 first", f.late.clone(), 422, "offline_bad_signature"),
                ("not a record", json!({"records": [{"record": {}, "signature": ""}]}), 422, "invalid_body"),
            ],
            ..endpoint("POST", "/v1/offline/journals", &f.till.token, 200)
        },
        Endpoint {
            body: Some(Box::new(move || json!({"tap": card_tap()}))),
            required: &["tap"],
            invalid: vec![
                (
                    "bad MAC",
                    json!({"tap": {"picc_data": card_tap()["picc_data"], "cmac": "0000000000000000"}}),
                    422,
                    "tap_mac_invalid",
                ),
                ("foreign card", json!({"tap": foreign(c, 50)}), 422, "tap_mac_invalid"),
                (
                    "tap not hex",
                    json!({"tap": {"picc_data": "zz".repeat(16), "cmac": "00".repeat(8)}}),
                    422,
                    "invalid_tap",
                ),
            ],
            ..endpoint("POST", "/v1/access-checks", &f.desk, 200)
        },
    ]
}

/// Every write endpoint of `api::openapi::ROUTES` is in the table.
fn every_write_endpoint_is_in_the_table(endpoints: &[Endpoint<'_>]) -> TestResult {
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
    Ok(())
}

/// Bad requests to one endpoint, each checked to write nothing.
struct Probe<'a> {
    s: &'a Server,
    auditor: &'a str,
    e: &'a Endpoint<'a>,
    /// (last entry, tree size) after the last request.
    before: std::cell::Cell<(i64, i64)>,
    /// Bad requests sent.
    cases: std::cell::Cell<usize>,
}

impl Probe<'_> {
    /// Sends a bad request and expects its problem; a refusal writes nothing, except that
    /// a replayed tap is one leaf (the suspected clone, for auditors), and no entry.
    fn run(
        &self,
        what: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Body<'_>,
        status: u16,
        code: &str,
    ) -> TestResult {
        let (s, e) = (self.s, self.e);
        let r = s.send(e.method, &e.path, token, key, body)?;
        r.problem(status, code).map_err(|err| format!("{} {} — {what}: {err}", e.method, e.path))?;
        let after = mark(s, self.auditor)?;
        let (entries, leaves) = self.before.get();
        let expected = if code == "card_replay" { (entries, leaves + 1) } else { (entries, leaves) };
        check_eq!(after, expected, "{} {} — {what}: (last entry, tree size) changed", e.method, e.path);
        self.before.set(after);
        self.cases.set(self.cases.get() + 1);
        Ok(())
    }

    /// The endpoint's token.
    fn tok(&self) -> Option<&str> {
        Some(self.e.token.as_str())
    }

    /// A fresh Idempotency-Key.
    fn key(&self) -> Option<String> {
        Some(self.s.key())
    }
}

/// Every bad request to `e` is refused with its code and writes nothing; then its valid
/// request goes through: each refusal was for its one fault. Returns the bad requests sent.
fn bad_requests_write_nothing(c: &City, f: &Fixtures, e: &Endpoint<'_>) -> Result<usize, String> {
    let s = &c.s;
    let p = Probe {
        s,
        auditor: &c.auditor,
        e,
        before: std::cell::Cell::new(mark(s, &c.auditor)?),
        cases: std::cell::Cell::new(0),
    };
    let valid = e.body.as_ref().map(|b| b());
    credentials_keys_size_and_ids_are_checked(&p, &valid)?;
    if let Some(valid) = &valid {
        malformed_bodies_are_refused(&p, valid)?;
        missing_wrong_and_null_fields_are_refused(&p, valid)?;
        if let Some((field, signed)) = e.amount {
            bad_amounts_are_refused(&p, valid, field, signed)?;
        }
        if let Some(card) = e.tap {
            bad_taps_are_refused(&p, valid, card, c, f)?;
        }
    }
    for (what, body, status, code) in &e.invalid {
        p.run(what, p.tok(), Some(&s.key()), Body::Json(body), *status, code)?;
    }
    // The valid request goes through: each refusal above was for its one fault.
    let body = e.body.as_ref().map(|b| b());
    let r = s.send(e.method, &e.path, p.tok(), Some(&s.key()), body.as_ref().map_or(Body::None, Body::Json))?;
    r.expect(e.ok).map_err(|err| format!("{} {} with a valid request: {err}", e.method, e.path))?;
    Ok(p.cases.get())
}

/// Credentials and keys; a body over the size limit; an unknown id (404, nothing written).
fn credentials_keys_size_and_ids_are_checked(p: &Probe<'_>, valid: &Option<Value>) -> TestResult {
    let (s, e, tok) = (p.s, p.e, p.tok());
    let body = || match valid {
        Some(v) => Body::Json(v),
        None => Body::None,
    };
    // Credentials and keys.
    p.run("no token", None, Some(&s.key()), body(), 401, "unauthorized")?;
    p.run(
        "wrong token",
        Some("kt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some(&s.key()),
        body(),
        401,
        "unauthorized",
    )?;
    p.run("not a bearer token", Some("Basic dXNlcjpwYXNz"), Some(&s.key()), body(), 401, "unauthorized")?;
    p.run("no Idempotency-Key", tok, None, body(), 400, "idempotency_key_required")?;
    p.run("Idempotency-Key with a space", tok, Some("a b"), body(), 400, "idempotency_key_invalid")?;
    p.run("Idempotency-Key too long", tok, Some(&"k".repeat(101)), body(), 400, "idempotency_key_invalid")?;
    // Size: 17 KiB, valid JSON.
    // The offline journal upload has its own, larger limit.
    let limit = if e.path == "/v1/offline/journals" { api::offline::UPLOAD_BYTES_MAX } else { api::BODY_LIMIT_BYTES };
    let big = json!({"name": "x".repeat(limit + 1024)}).to_string();
    p.run("oversize body", tok, Some(&s.key()), Body::Raw(big.as_bytes(), "application/json"), 413, "body_too_large")?;
    if let Some(unknown) = &e.unknown {
        let r = s.send(e.method, unknown, tok, Some(&s.key()), body())?;
        r.problem(404, "not_found").map_err(|err| format!("{} {unknown}: {err}", e.method))?;
        check_eq!(mark(s, p.auditor)?, p.before.get(), "{} {unknown}", e.method);
    }
    Ok(())
}

/// Malformed, empty and non-JSON bodies, an array, the wrong media type, an unknown field.
fn malformed_bodies_are_refused(p: &Probe<'_>, valid: &Value) -> TestResult {
    let tok = p.tok();
    let valid_bytes = valid.to_string();
    p.run(
        "malformed JSON",
        tok,
        p.key().as_deref(),
        Body::Raw(&valid_bytes.as_bytes()[..valid_bytes.len() - 1], "application/json"),
        400,
        "malformed_json",
    )?;
    p.run("empty body", tok, p.key().as_deref(), Body::Raw(b"", "application/json"), 400, "malformed_json")?;
    p.run("not JSON", tok, p.key().as_deref(), Body::Raw(b"amount=1.00", "application/json"), 400, "malformed_json")?;
    p.run("not an object", tok, p.key().as_deref(), Body::Json(&json!([valid])), 422, "invalid_body")?;
    p.run(
        "text/plain",
        tok,
        p.key().as_deref(),
        Body::Raw(valid_bytes.as_bytes(), "text/plain"),
        415,
        "unsupported_media_type",
    )?;
    p.run(
        "unknown field",
        tok,
        p.key().as_deref(),
        Body::Json(&with(valid.clone(), "surprise", json!(1))),
        422,
        "invalid_body",
    )?;
    Ok(())
}

/// Each required field missing; each field of the wrong type; each required field null.
fn missing_wrong_and_null_fields_are_refused(p: &Probe<'_>, valid: &Value) -> TestResult {
    let (e, tok) = (p.e, p.tok());
    for field in e.required {
        let b = without(valid.clone(), field);
        p.run(&format!("missing {field}"), tok, p.key().as_deref(), Body::Json(&b), 422, "invalid_body")?;
    }
    for (field, value) in valid.as_object().ok_or("object")? {
        let wrong = if value.is_string() { json!(12) } else { json!("twelve") };
        let b = with(valid.clone(), field, wrong);
        p.run(&format!("wrong type of {field}"), tok, p.key().as_deref(), Body::Json(&b), 422, "invalid_body")?;
        let b = with(valid.clone(), field, Value::Null);
        let optional = !e.required.contains(&field.as_str());
        if !optional {
            p.run(&format!("null {field}"), tok, p.key().as_deref(), Body::Json(&b), 422, "invalid_body")?;
        }
    }
    Ok(())
}

/// Amounts that are not a positive (or, where `signed`, non-zero) decimal string with two
/// places within the maximum.
fn bad_amounts_are_refused(p: &Probe<'_>, valid: &Value, field: &str, signed: bool) -> TestResult {
    let tok = p.tok();
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
        p.run(&format!("amount {what}"), tok, p.key().as_deref(), Body::Json(&b), 422, "invalid_amount")?;
    }
    let b = with(valid.clone(), field, json!(12.5));
    p.run("amount as a JSON number", tok, p.key().as_deref(), Body::Json(&b), 422, "invalid_body")?;
    Ok(())
}

/// Taps that are refusals: a bad MAC, a foreign card, a short PICCData, an unknown card, a
/// blocked card, a replay, an unknown field.
fn bad_taps_are_refused(p: &Probe<'_>, valid: &Value, card: &TestCard, c: &City, f: &Fixtures) -> TestResult {
    let (s, tok) = (p.s, p.tok());
    let key = || p.key();
    let tapped = |tap: Value| with(valid.clone(), "tap", tap);
    let fresh = s.tap(card);
    let bad_mac = json!({"picc_data": fresh["picc_data"], "cmac": "00112233445566FF"});
    p.run("bad MAC", tok, key().as_deref(), Body::Json(&tapped(bad_mac)), 422, "tap_mac_invalid")?;
    p.run("foreign card", tok, key().as_deref(), Body::Json(&tapped(foreign(c, 90))), 422, "tap_mac_invalid")?;
    let short = json!({"picc_data": "0011", "cmac": fresh["cmac"]});
    p.run("short PICCData", tok, key().as_deref(), Body::Json(&tapped(short)), 422, "invalid_tap")?;
    let unknown_card = s.tap_at("04FEEDFACE0001", 5);
    p.run("unknown card", tok, key().as_deref(), Body::Json(&tapped(unknown_card)), 422, "card_unknown")?;
    let blocked_tap = s.tap(&f.blocked);
    p.run("blocked card", tok, key().as_deref(), Body::Json(&tapped(blocked_tap)), 422, "card_blocked")?;
    p.run("replayed tap", tok, key().as_deref(), Body::Json(&tapped(f.replay.clone())), 409, "card_replay")?;
    let extra = json!({"picc_data": fresh["picc_data"], "cmac": fresh["cmac"], "enc": "00"});
    p.run("tap with an unknown field", tok, key().as_deref(), Body::Json(&tapped(extra)), 422, "invalid_body")?;
    Ok(())
}
