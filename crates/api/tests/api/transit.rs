//! Transit through the API (issue 18): a bus line and a ferry with gates, a fare table put
//! in force by two operators, and riders tapping online. The amounts are worked out here
//! from docs/TRANSIT.md's rules (bus 35.00; ferry 20.00 + 5.00 a stop, at most 60.00; a
//! journey at most 50.00 within 60 minutes; students half).

use serde_json::{json, Value};

use crate::support::{id, Backend, City, TestResult};

fn amount(v: &Value) -> String {
    v["amount"].as_str().unwrap_or_default().to_owned()
}

/// Each entry of a tap's answer as (kind, amount, rules).
fn entries(v: &Value) -> Vec<(String, String, String)> {
    v["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let kind = e["kind"].as_str().unwrap_or_default().to_owned();
                    (kind, amount(&e["amount"]), e["rules"].as_str().unwrap_or_default().to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn e(kind: &str, amount: &str, rules: &str) -> (String, String, String) {
    (kind.into(), amount.into(), rules.into())
}

/// Routes, validators, a fare table approved by a second operator, and taps: a bus ride,
/// a transfer to the ferry (held, then captured at the exit gate), a student's half fare;
/// refusals write nothing, a retry returns the first answer.
pub fn online_fares(backend: Backend) -> TestResult {
    let c = City::new(backend, "200.00")?;
    let s = &c.s;
    let (on_bus, ferry_in, ferry_out, bus, ferry) = a_bus_and_a_ferry(&c)?;
    // No fare table yet: the gate stays shut and nothing is written.
    let r = s.post("/v1/transit/taps", &on_bus, &json!({"tap": s.tap(&c.card), "direction": "on", "stop": 0}))?;
    check_eq!((r.status, r.json["code"].clone()), (422, json!("fare_unavailable")));
    // A fare table: asked by one operator, refused to the same one, approved by another.
    put_fares_in_force(&c, &bus, &ferry)?;
    let fares = s.get_public("/v1/transit/fares")?;
    check_eq!(fares.expect(200)?["fare_tables"][0]["table"]["transfer"]["integrated_fare_minor"], json!(5000));
    check_eq!(s.get_public("/v1/transit/routes")?.expect(200)?["routes"].as_array().map(Vec::len), Some(2));
    // A bus ride: 35.00.
    let r = s.post("/v1/transit/taps", &on_bus, &json!({"tap": s.tap(&c.card), "direction": "on", "stop": 3}))?;
    let v = r.expect(201)?;
    check_eq!(entries(v), vec![e("payment", "35.00", "flat fare")]);
    check_eq!(amount(&v["balance"]), "165.00");
    // The ferry within the hour: the journey may cost 50.00, so 15.00 is held, and 15.00
    // is what the ride from dermaga 2 to 7 (45.00) costs.
    let v = s.post("/v1/transit/taps", &ferry_in, &json!({"tap": s.tap(&c.card), "direction": "on"}))?;
    let v = v.expect(201)?;
    check_eq!(entries(v), vec![e("hold", "15.00", "no tap-off: maximum fare; transfer within 60 min")]);
    check_eq!(amount(&v["balance"]), "150.00");
    let out = json!({"tap": s.tap(&c.card), "direction": "off"});
    let key = "ferry-out-1";
    let first =
        s.send("POST", "/v1/transit/taps", Some(ferry_out.as_str()), Some(key), crate::support::Body::Json(&out))?;
    let v = first.expect(201)?;
    check_eq!(entries(v), vec![e("capture", "15.00", "5 stops; transfer within 60 min")]);
    check_eq!(amount(&v["balance"]), "150.00");
    the_card_page_says_why(&c, v)?;
    // The retry answers the same and charges nothing more.
    let again =
        s.send("POST", "/v1/transit/taps", Some(ferry_out.as_str()), Some(key), crate::support::Body::Json(&out))?;
    check_eq!(again.expect(201)?["entries"], v["entries"]);
    check_eq!(again.json["event_id"], v["event_id"]);
    // A stop a vehicle does not have, a gate told another stop: refused, nothing written.
    let r = s.post("/v1/transit/taps", &on_bus, &json!({"tap": s.tap(&c.card), "direction": "on", "stop": 10}))?;
    check_eq!((r.status, r.json["code"].clone()), (422, json!("invalid_field")));
    let r = s.post("/v1/transit/taps", &ferry_in, &json!({"tap": s.tap(&c.card), "direction": "on", "stop": 3}))?;
    check_eq!((r.status, r.json["code"].clone()), (422, json!("invalid_field")));
    // A shop's terminal is no validator.
    let r = s.post("/v1/transit/taps", &c.pos_a, &json!({"tap": s.tap(&c.card), "direction": "on", "stop": 0}))?;
    check_eq!(r.status, 403);
    // A student pays half; a card that cannot pay is refused at the gate.
    let student = s.holder("Nur Siswa", "7371020202020002", &["student"])?;
    let card = s.card(&student, 31)?;
    let r = s.post("/v1/transit/taps", &on_bus, &json!({"tap": s.tap(&card), "direction": "on", "stop": 1}))?;
    check_eq!((r.status, r.json["code"].clone()), (422, json!("insufficient_funds")));
    s.post("/v1/topups", &c.teller, &json!({"card_id": card.id, "amount": "50.00"}))?.expect(201)?;
    let v = s.post("/v1/transit/taps", &on_bus, &json!({"tap": s.tap(&card), "direction": "on", "stop": 1}))?;
    check_eq!(entries(v.expect(201)?), vec![e("payment", "17.50", "flat fare; student 50 %")]);
    check_eq!(amount(&v.json["balance"]), "32.50");
    Ok(())
}

/// A transit operator with a bus line (a validator on the bus) and a ferry with an entry
/// gate at dermaga 2 and an exit gate at dermaga 7: the three validators' tokens and the
/// two routes.
pub fn a_bus_and_a_ferry(c: &City) -> Result<(String, String, String, String, String), String> {
    let (operator, _) = c.s.merchant("Trans Mamminasata", "transit", "0.02")?;
    a_bus_and_a_ferry_of(c, &operator)
}

/// [`a_bus_and_a_ferry`] of an operator already registered.
fn a_bus_and_a_ferry_of(c: &City, operator: &str) -> Result<(String, String, String, String, String), String> {
    let s = &c.s;
    let op = &s.operator;
    let route = |name: &str, mode: &str, stops: Vec<String>| -> Result<String, String> {
        id(s.post(
            "/v1/transit/routes",
            op,
            &json!({"merchant_id": operator, "name": name, "mode": mode, "stops": stops}),
        )?
        .expect(201)?)
    };
    let bus = route("Koridor 1", "bus", (0..10).map(|i| format!("halte {i}")).collect())?;
    let ferry = route("Kapal Lae-Lae", "ferry", (0..10).map(|i| format!("dermaga {i}")).collect())?;
    let validator = |name: &str, route: &str, stop: Option<i64>| -> Result<String, String> {
        let body = json!({"role": "merchant_terminal", "name": name, "merchant_id": operator});
        let v = s.post("/v1/credentials", op, &body)?;
        let v = v.expect(201)?;
        let bind = json!({"credential_id": id(v)?, "route_id": route, "stop": stop});
        s.post("/v1/transit/validators", op, &bind)?.expect(201)?;
        Ok(v["token"].as_str().ok_or("token")?.to_owned())
    };
    let on_bus = validator("bus 7", &bus, None)?;
    let ferry_in = validator("gate dermaga 2", &ferry, Some(2))?;
    let ferry_out = validator("gate dermaga 7", &ferry, Some(7))?;
    Ok((on_bus, ferry_in, ferry_out, bus, ferry))
}

/// The fare table of docs/TRANSIT.md for the bus and the ferry, asked for by one operator
/// (who may not approve it), approved by another.
fn put_fares_in_force(c: &City, bus: &str, ferry: &str) -> TestResult {
    let s = &c.s;
    let op = &s.operator;
    let table = json!({"time_zone": "Asia/Makassar", "table": {
        "routes": {bus: {"kind": "flat", "fare_minor": 3500},
                   ferry: {"kind": "distance", "base_minor": 2000, "per_stop_minor": 500, "max_minor": 6000, "time_limit_minutes": 90}},
        "transfer": {"window_minutes": 60, "integrated_fare_minor": 5000},
        "daily_cap_minor": 10000, "weekly_cap_minor": 40000, "concessions": {"student": 50}}});
    let approval = id(s.post("/v1/transit/fares", op, &table)?.expect(202)?)?;
    let own = s.post(&format!("/v1/approvals/{approval}/approve"), op, &json!({}))?;
    check_eq!((own.status, own.json["code"].clone()), (403, json!("second_operator_required")));
    let done = s.post(&format!("/v1/approvals/{approval}/approve"), &c.operator2, &json!({}))?;
    check!(done.expect(200)?["result"]["fare_table_id"].is_string(), "{}", done.text);
    Ok(())
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// A bus validator that works offline: its key, token, and the sync it took.
struct OfflineBus {
    key: Vec<u8>,
    token: String,
    sync_id: u64,
    sync: Value,
}

fn an_offline_bus(c: &City, bus: &str, operator: &str) -> Result<OfflineBus, String> {
    let limits = json!({"per_tap_minor": 6000, "per_card_per_day_minor": 20000, "outstanding_minor": 1000000});
    an_offline_bus_with(c, bus, operator, limits)
}

/// [`an_offline_bus`] with these `offline_limits`.
fn an_offline_bus_with(c: &City, bus: &str, operator: &str, limits: Value) -> Result<OfflineBus, String> {
    let s = &c.s;
    let key = offline::generate_key().map_err(|e| e.to_string())?;
    let pk = offline::JournalWriter::new(&key, None).map_err(|e| e.to_string())?.public_key_hex();
    let body = json!({"role": "merchant_terminal", "name": "bus 12", "merchant_id": operator, "public_key": pk,
        "offline_limits": limits});
    let v = s.post("/v1/credentials", &s.operator, &body)?;
    let v = v.expect(201)?;
    let token = v["token"].as_str().ok_or("token")?.to_owned();
    s.post("/v1/transit/validators", &s.operator, &json!({"credential_id": id(v)?, "route_id": bus}))?.expect(201)?;
    let sync_id = s.get("/v1/offline/deny-list", &token)?.expect(200)?["sync_id"].as_u64().ok_or("sync_id")?;
    let sync = s.get("/v1/transit/sync", &token)?.expect(200)?.clone();
    Ok(OfflineBus { key, token, sync_id, sync })
}

/// What the bus charges offline for a boarding of `uid`: `domain::fares` over the card's
/// synced taps and this one, with the synced fare tables (as the server would).
fn offline_fare(sync: &Value, uid: &str, tap: domain::fares::Tap) -> Result<i64, String> {
    let tables: Vec<(i64, domain::fares::FareTable)> = sync["fare_tables"]
        .as_array()
        .ok_or("fare_tables")?
        .iter()
        .map(|t| {
            let from = chrono::DateTime::parse_from_rfc3339(t["effective_from"].as_str().unwrap_or_default())
                .map_or(0, |d| d.timestamp_micros());
            Ok((from, serde_json::from_value(t["table"].clone()).map_err(|e| e.to_string())?))
        })
        .collect::<Result<_, String>>()?;
    let mut taps: Vec<domain::fares::Tap> = Vec::new();
    for j in sync["journeys"].as_array().into_iter().flatten().filter(|j| j["uid"] == json!(uid)) {
        for t in j["taps"].as_array().into_iter().flatten() {
            let kind = if t["direction"] == "on" { domain::fares::TapKind::On } else { domain::fares::TapKind::Off };
            let route = t["route_id"].as_str().and_then(|r| r.parse().ok()).ok_or("route_id")?;
            taps.push(domain::fares::Tap {
                time_us: t["time_us"].as_i64().ok_or("time")?,
                route,
                stop: t["stop"].as_i64().ok_or("stop")?,
                kind,
            });
        }
    }
    taps.push(tap);
    let rides = domain::fares::Schedule::new(tables)
        .price(&[], &taps, &chrono_tz::Asia::Makassar)
        .map_err(|e| e.to_string())?;
    Ok(rides.last().map_or(0, |r| r.charge_minor))
}

/// A bus offline all morning: it prices a boarding itself (35.00) and journals it; the
/// rider then takes the ferry online, which — not knowing the bus ride — holds 60.00 and
/// charges 45.00. When the bus uploads, the writer puts the bus ride first: the ferry
/// becomes a transfer and is refunded down to 15.00; the card paid 50.00, as an always-online
/// system would have charged. The same upload again changes nothing.
pub fn offline_bus_uploads_late(backend: Backend) -> TestResult {
    let c = City::new(backend, "200.00")?;
    let s = &c.s;
    let (operator, _) = s.merchant("Trans Mamminasata", "transit", "0.02")?;
    let (_, ferry_in, ferry_out, bus, ferry) = a_bus_and_a_ferry_of(&c, &operator)?;
    put_fares_in_force(&c, &bus, &ferry)?;
    let offline_bus = an_offline_bus(&c, &bus, &operator)?;
    let route: i64 = bus.parse().map_err(|_| "route id")?;
    let boarded = now_us();
    let tap = domain::fares::Tap { time_us: boarded, route, stop: 3, kind: domain::fares::TapKind::On };
    let fare = offline_fare(&offline_bus.sync, &c.card.uid, tap)?;
    check_eq!(fare, 3500);
    let mut writer = offline::JournalWriter::new(&offline_bus.key, None).map_err(|e| e.to_string())?;
    let record = a_boarding(&c, &offline_bus, &mut writer, boarded, fare)?;
    // The ferry, online: no transfer known, so the maximum is held and 45.00 charged.
    let v = s.post("/v1/transit/taps", &ferry_in, &json!({"tap": s.tap(&c.card), "direction": "on"}))?;
    check_eq!(entries(v.expect(201)?), vec![e("hold", "60.00", "no tap-off: maximum fare")]);
    let v = s.post("/v1/transit/taps", &ferry_out, &json!({"tap": s.tap(&c.card), "direction": "off"}))?;
    check_eq!(entries(v.expect(201)?), vec![e("capture", "45.00", "5 stops")]);
    check_eq!(amount(&v.json["balance"]), "155.00");
    // A record changed after it was signed is refused whole.
    let mut forged = record.clone();
    forged.record.amount_minor = 0;
    let r = s.post("/v1/offline/journals", &offline_bus.token, &json!({"records": [forged]}))?;
    check_eq!((r.status, r.json["code"].clone()), (422, json!("offline_bad_signature")));
    let balance = || -> Result<Value, String> {
        Ok(s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?.expect(200)?["balance"].clone())
    };
    check_eq!(amount(&balance()?), "155.00");
    // The upload: the bus ride is charged, the ferry refunded down to the transfer.
    let up = s.post("/v1/offline/journals", &offline_bus.token, &json!({"records": [record.clone()]}))?;
    let results = up.expect(200)?["records"].clone();
    check!(results[0]["result"].as_str().is_some_and(|r| r.starts_with("priced:event:")), "{results}");
    check_eq!(amount(&balance()?), "150.00");
    let again = s.post("/v1/offline/journals", &offline_bus.token, &json!({"records": [record]}))?;
    again.expect(200)?;
    check_eq!(amount(&balance()?), "150.00");
    the_offline_tap_is_audited(s, results[0]["event_id"].as_i64().ok_or("event_id")?)
}

/// A bus boarding at `time_us` journaled offline by `bus` (its `writer`), for `fare`.
fn a_boarding(
    c: &City,
    bus: &OfflineBus,
    writer: &mut offline::JournalWriter,
    time_us: i64,
    fare: i64,
) -> Result<offline::SignedRecord, String> {
    let read = c.s.tap(&c.card);
    writer
        .append(offline::NewRecord {
            time_us,
            kind: offline::RecordKind::Transit,
            uid: c.card.uid.clone(),
            picc_data: read["picc_data"].as_str().unwrap_or_default().to_owned(),
            cmac: read["cmac"].as_str().unwrap_or_default().to_owned(),
            amount_minor: fare,
            currency: "IDR".into(),
            reference: None,
            decision: Some("on:3".into()),
            sync_id: bus.sync_id,
        })
        .map_err(|e| e.to_string())
}

/// An offline bus may take 40.00 a day from a card: a ride (35.00) and a second boarding
/// right after are uploaded together. The second is a transfer (15.00, the journey's 50.00
/// less 35.00), which this validator journals as 5.00: it counts what the server charges,
/// 15.00, and 50.00 is over the limit, so it is refused with `offline_limit_card_day` in
/// its result and nothing is charged for it. Uploaded again, the journal is known (nothing
/// more to post, nothing more charged); `kartu audit verify` passes.
pub fn offline_bus_over_its_limits(backend: Backend) -> TestResult {
    let c = City::new(backend, "200.00")?;
    let s = &c.s;
    let (operator, _) = s.merchant("Trans Mamminasata", "transit", "0.02")?;
    let (_, _, _, bus, ferry) = a_bus_and_a_ferry_of(&c, &operator)?;
    put_fares_in_force(&c, &bus, &ferry)?;
    let limits = json!({"per_tap_minor": 6000, "per_card_per_day_minor": 4000, "outstanding_minor": 1000000});
    let offline_bus = an_offline_bus_with(&c, &bus, &operator, limits)?;
    let mut writer = offline::JournalWriter::new(&offline_bus.key, None).map_err(|e| e.to_string())?;
    let first = a_boarding(&c, &offline_bus, &mut writer, now_us(), 3500)?;
    let second = a_boarding(&c, &offline_bus, &mut writer, now_us(), 500)?;
    let records = json!({"records": [first, second]});
    let up = s.post("/v1/offline/journals", &offline_bus.token, &records)?;
    let results = up.expect(200)?["records"].clone();
    check!(results[0]["result"].as_str().is_some_and(|r| r.starts_with("priced:event:")), "{results}");
    check_eq!(results[1]["result"], json!("refused:offline_limit_card_day"));
    let balance = || -> Result<String, String> {
        Ok(amount(&s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?.expect(200)?["balance"]))
    };
    check_eq!(balance()?, "165.00");
    let again = s.post("/v1/offline/journals", &offline_bus.token, &records)?;
    check_eq!((again.expect(200)?["records"].clone(), again.json["head"]["seq"].clone()), (json!([]), json!(2)));
    check_eq!(balance()?, "165.00");
    check!(crate::registry::verify_db(s)?.is_ok(), "verify after the upload: {:?}", crate::registry::verify_db(s)?);
    Ok(())
}

/// `kartu audit verify` holds the offline tap's row to its leaf: the record's own time, the
/// offline flag, the sync and what the tap counted against the validator's limits; a row
/// moved in time, passed off as online, counted below its fare or moved to another sync is
/// reported.
fn the_offline_tap_is_audited(s: &crate::support::Server, event: i64) -> TestResult {
    use crate::registry::{tamper, verify_db, without_append_only_triggers};
    check!(verify_db(s)?.is_ok(), "verify after the upload: {:?}", verify_db(s)?);
    without_append_only_triggers(s)?;
    let at = format!("WHERE event_id = {event}");
    let moved = format!("UPDATE transit_taps SET tap_time_us = tap_time_us - 60000000 {at}");
    let back = format!("UPDATE transit_taps SET tap_time_us = tap_time_us + 60000000 {at}");
    tamper(s, "an offline tap moved a minute back", &moved, &back, &[("transit_taps", event, "tap_time_us")])?;
    let online = format!("UPDATE transit_taps SET offline = false {at}");
    let offline = format!("UPDATE transit_taps SET offline = true {at}");
    tamper(s, "an offline tap passed off as online", &online, &offline, &[("transit_taps", event, "offline")])?;
    // What it counts against the bus's limits: not below the fare its record charged, under
    // the sync its record names.
    let lowered = format!("UPDATE transit_taps SET offline_minor = 0 {at}");
    let counted = format!("UPDATE transit_taps SET offline_minor = 3500 {at}");
    let fields = [("transit_taps", event, "offline_minor")];
    tamper(s, "an offline tap's count lowered below its fare", &lowered, &counted, &fields)?;
    let moved = format!("UPDATE transit_taps SET sync_id = sync_id + 1 {at}");
    let back = format!("UPDATE transit_taps SET sync_id = sync_id - 1 {at}");
    tamper(s, "an offline tap moved to another sync", &moved, &back, &[("transit_taps", event, "sync_id")])?;
    Ok(())
}

/// The rider's card page (a phone at the card, in Bahasa Indonesia) names the rules of each
/// ride, and the ride's receipt does too (in English), in a real browser.
fn the_card_page_says_why(c: &City, capture: &Value) -> TestResult {
    let s = &c.s;
    let b = crate::browser::Browser::new()?;
    let dom = b.dom(&crate::pages::tap_url(s, &c.card), "id-ID,id;q=0.9")?;
    let rules: Vec<String> = crate::browser::tags_with(&dom, "data-rules")
        .iter()
        .filter_map(|t| crate::browser::attr_in(t, "data-rules"))
        .collect();
    check!(rules.contains(&"5 stops; transfer within 60 min".to_owned()), "{rules:?}");
    check!(dom.contains("5 halte; transfer dalam 60 menit") && dom.contains("tarif tetap"), "{dom}");
    let receipt = capture["entries"][0]["receipt"]["receipt_url"].as_str().ok_or("receipt url")?;
    let dom = b.dom(&format!("{}{receipt}", s.base), "en")?;
    check_eq!(crate::browser::text(&dom, "r-rules"), Some("5 stops; transfer within 60 min".into()));
    Ok(())
}

/// A ride nobody tapped off, fixed by its operator. The ferry's boarding holds its maximum;
/// the rider's next boarding (a bus) closes it at the maximum (60.00, and the bus is free:
/// the journey's first ride alone was more than the integrated fare). The operator's exit
/// gate then says the rider left at dock 7 (five stops, 45.00): the writer refunds 15.00 on
/// the ferry and, the journey now being 45.00, charges the bus 5.00 (the integrated 50.00).
/// Nobody else may fix it, nor fix it twice; `kartu audit verify` holds the fix's tap row to
/// its leaf.
pub fn ride_fixed_by_its_operator(backend: Backend) -> TestResult {
    let c = City::new(backend, "200.00")?;
    let s = &c.s;
    let (operator, _) = s.merchant("Trans Mamminasata", "transit", "0.02")?;
    let (on_bus, ferry_in, ferry_out, bus, ferry) = a_bus_and_a_ferry_of(&c, &operator)?;
    put_fares_in_force(&c, &bus, &ferry)?;
    let v = s.post("/v1/transit/taps", &ferry_in, &json!({"tap": s.tap(&c.card), "direction": "on"}))?;
    let ride = v.expect(201)?["event_id"].as_i64().ok_or("event_id")?;
    let v = s.post("/v1/transit/taps", &on_bus, &json!({"tap": s.tap(&c.card), "direction": "on", "stop": 1}))?;
    check_eq!(entries(v.expect(201)?), vec![e("capture", "60.00", "no tap-off: maximum fare")]);
    let bus_ride = v.json["event_id"].as_i64().ok_or("event_id")?;
    let fix = |token: &str, ride: i64, stop: i64| {
        s.post(&format!("/v1/transit/rides/{ride}/tap-off"), token, &json!({"stop": stop}))
    };
    let (other, _) = s.merchant("Kapal Lain", "transit", "0.02")?;
    let stranger = s.post(
        "/v1/credentials",
        &s.operator,
        &json!({"role": "merchant_terminal", "name": "x", "merchant_id": other}),
    )?;
    let stranger = stranger.expect(201)?["token"].as_str().ok_or("token")?.to_owned();
    for (who, token, ride, stop, status, code) in [
        ("another operator's terminal", stranger.as_str(), ride, 7, 403, "forbidden"),
        ("the city's operator", s.operator.as_str(), ride, 7, 403, "forbidden"),
        ("a stop off the route", ferry_out.as_str(), ride, 99, 422, "invalid_field"),
        ("no ride", ferry_out.as_str(), ride + 100_000, 7, 404, "not_found"),
    ] {
        let r = fix(token, ride, stop)?;
        check_eq!((who, r.status, r.json["code"].clone()), (who, status, json!(code)));
    }
    check_eq!(amount(&s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?.expect(200)?["balance"]), "140.00");
    let fixed = fix(&ferry_out, ride, 7)?;
    let fixed = fixed.expect(201)?;
    check_eq!(fixed["decision"], json!("fixed"));
    check_eq!(
        entries(fixed),
        vec![e("refund", "15.00", "5 stops"), e("payment", "5.00", "flat fare; transfer within 60 min")]
    );
    check_eq!(amount(&fixed["balance"]), "150.00");
    check_eq!(fixed["entries"][1]["ride_id"], json!(bus_ride.to_string()));
    let again = fix(&ferry_out, ride, 5)?;
    check_eq!((again.status, again.json["code"].clone()), (422, json!("ride_tapped_off")));
    let fixed_event = fixed["event_id"].as_i64().ok_or("event_id")?;
    check!(crate::registry::verify_db(s)?.is_ok(), "verify after the fix: {:?}", crate::registry::verify_db(s)?);
    crate::registry::without_append_only_triggers(s)?;
    let at = format!("WHERE event_id = {fixed_event}");
    let moved = format!("UPDATE transit_taps SET tap_time_us = tap_time_us + 60000000 {at}");
    let back = format!("UPDATE transit_taps SET tap_time_us = tap_time_us - 60000000 {at}");
    crate::registry::tamper(s, "a fix moved later", &moved, &back, &[("transit_taps", fixed_event, "tap_time_us")])?;
    Ok(())
}
