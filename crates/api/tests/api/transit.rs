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
    let op = &s.operator;
    let (on_bus, ferry_in, ferry_out, bus, ferry) = a_bus_and_a_ferry(&c)?;
    // No fare table yet: the gate stays shut and nothing is written.
    let r = s.post("/v1/transit/taps", &on_bus, &json!({"tap": s.tap(&c.card), "direction": "on", "stop": 0}))?;
    check_eq!((r.status, r.json["code"].clone()), (422, json!("fare_unavailable")));
    // A fare table: asked by one operator, refused to the same one, approved by another.
    let table = json!({"time_zone": "Asia/Makassar", "table": {
        "routes": {bus.clone(): {"kind": "flat", "fare_minor": 3500},
                   ferry.clone(): {"kind": "distance", "base_minor": 2000, "per_stop_minor": 500, "max_minor": 6000, "time_limit_minutes": 90}},
        "transfer": {"window_minutes": 60, "integrated_fare_minor": 5000},
        "daily_cap_minor": 10000, "weekly_cap_minor": 40000, "concessions": {"student": 50}}});
    let approval = id(s.post("/v1/transit/fares", op, &table)?.expect(202)?)?;
    let own = s.post(&format!("/v1/approvals/{approval}/approve"), op, &json!({}))?;
    check_eq!((own.status, own.json["code"].clone()), (403, json!("second_operator_required")));
    let done = s.post(&format!("/v1/approvals/{approval}/approve"), &c.operator2, &json!({}))?;
    check!(done.expect(200)?["result"]["fare_table_id"].is_string(), "{}", done.text);
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
    let s = &c.s;
    let op = &s.operator;
    let (operator, _) = s.merchant("Trans Mamminasata", "transit", "0.02")?;
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
