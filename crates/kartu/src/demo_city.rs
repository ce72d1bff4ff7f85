//! The small demo city `make run` serves: a grocery, a parking operator, a clinic, a top-up
//! agent and three card holders with cards and money, created through the API itself on
//! the first run (idempotent keys, so a second run finds them). The credentials' tokens are
//! kept in DATA/demo-city.json (0600) because a token is shown only once.

use std::path::Path;

use anyhow::{Context, Result};
use card::keyfile::KeyFile;
use card::{CardUid, ReadCounter};
use client::wire::{NewTopup, Tap};
use client::Client;
use serde_json::{json, Value};

/// The three demo cards' UIDs.
pub const CARDS: [(&str, &str, &str, &[&str]); 3] = [
    ("Ani Wijaya", "7371010101900001", "04A1B2C3D4E501", &["resident", "insured"]),
    ("Budi Santoso", "7371010101900002", "04A1B2C3D4E502", &["resident", "student"]),
    ("Citra Dewi", "7371010101900003", "04A1B2C3D4E503", &["senior"]),
];

/// The `id` of an object the operator API returned.
pub(crate) fn id(v: &Value) -> Result<String> {
    v["id"].as_str().map(str::to_owned).context("no id in the answer")
}

/// A tap of a demo card with `counter`, as the card would mirror it.
pub fn tap(keys: &KeyFile, uid: &str, counter: u32) -> Result<Tap> {
    let uid = CardUid::from_hex(uid).map_err(|e| anyhow::anyhow!("{e}"))?;
    let counter = ReadCounter::new(counter).context("counter")?;
    let tap = keys.make_tap(&uid, counter, [0; 5]).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Tap { picc_data: hex::encode_upper(tap.picc_data()), cmac: hex::encode_upper(tap.sdm_mac()) })
}

/// The demo city's places, as the API returned them.
pub(crate) struct Places {
    pub(crate) grocery: Value,
    pub(crate) parking: Value,
    pub(crate) clinic: Value,
    pub(crate) agent: Value,
}

/// Registers the grocery (fee 0.7 %), the parking operator (0.5 %), the clinic (insured and
/// senior holders, queue numbers) and the top-up agent with Rp 10,000,000 of float, as the
/// operator `op`.
pub(crate) fn create_places(op: &Client) -> Result<Places> {
    let grocery = op.post(
        "/v1/merchants",
        "demo-grocery",
        &json!({"name": "Toko Sembako Losari", "category": "grocery", "fee_rate": "0.007"}),
    )?;
    let parking = op.post(
        "/v1/merchants",
        "demo-parking",
        &json!({"name": "Parkir Pantai Losari", "category": "parking", "fee_rate": "0.005"}),
    )?;
    let clinic = op.post("/v1/service-points", "demo-clinic", &json!({"name": "Puskesmas Kassi-Kassi", "service": "clinic",
        "policy": {"categories": ["insured", "senior"], "timezone": "Asia/Makassar", "daily_quota": 2, "issues_queue_numbers": true}}))?;
    let agent = op.post("/v1/agents", "demo-agent", &json!({"name": "Agen BRILink Panakkukang"}))?;
    let _: Value =
        op.post(&format!("/v1/agents/{}/float", id(&agent)?), "demo-float", &json!({"amount": AGENT_FLOAT}))?;
    Ok(Places { grocery, parking, clinic, agent })
}

/// The agent's float.
pub(crate) const AGENT_FLOAT: &str = "10000000.00";

/// Seeds the city (first run) and prints how to try it. Over HTTPS, the CA file in
/// `KARTU_CA_FILE` is trusted.
pub fn seed_and_print(base: &str, data_dir: &Path, operator_token: &str) -> Result<()> {
    let keys_text = std::fs::read_to_string(data_dir.join("keys.toml")).context("reading keys.toml")?;
    let keys = KeyFile::parse(&keys_text).map_err(|e| anyhow::anyhow!("keys.toml: {e}"))?;
    let ca_file = std::env::var_os(client::CA_FILE_ENV).map(std::path::PathBuf::from);
    let op = Client::new(base, ca_file.as_deref(), None)?.with_token(operator_token);
    let saved = data_dir.join("demo-city.json");
    let city: Value = if saved.exists() {
        serde_json::from_str(&std::fs::read_to_string(&saved)?)?
    } else {
        let mut city = seed(&op, operator_token)?;
        // A fare table needs a second operator's approval: a second person, made on the
        // host as `kartu operator add` makes one.
        let (_, approver) = api::server::add_operator(data_dir, None, "Demo Approver")
            .map_err(|e| anyhow::anyhow!("adding the demo's second operator: {e}"))?;
        let transit = transit(&op, &op.with_token(&approver))?;
        city["transit"] = transit;
        files::create_private(&saved, serde_json::to_string_pretty(&city)?.as_bytes())?;
        city
    };
    let card = &city["cards"][0];
    let card_id = card["card_id"].as_str().unwrap_or("1");
    let uid = card["uid"].as_str().unwrap_or(CARDS[0].2);
    let now: Value = op.get(&format!("/v1/cards/{card_id}"))?;
    let next = now["last_counter"].as_u64().unwrap_or(0) as u32 + 1;
    let tap = tap(&keys, uid, next)?;
    let t = |k: &str| city[k].as_str().unwrap_or_default().to_owned();
    println!();
    println!("Kartu demo city at {base} (tokens also in {}):", saved.display());
    for k in ["operator", "grocery_pos", "parking_gate", "clinic_desk", "agent", "kiosk", "auditor"] {
        println!("  {k:<13} {}", t(k));
    }
    println!("  cards: {}", city["cards"]);
    println!();
    println!(
        "Pay Rp 12.500 at the grocery with {}'s card (a fresh tap, counter {next}):",
        card["holder"].as_str().unwrap_or("")
    );
    println!(
        "  curl -s -X POST {base}/v1/payments -H 'Authorization: Bearer {}' -H 'Idempotency-Key: try-{next}' \\\n       -H 'Content-Type: application/json' -d '{}'",
        t("grocery_pos"),
        json!({"tap": tap, "amount": "12500.00", "reference": "receipt-1"})
    );
    println!("Send it twice with a new Idempotency-Key: the same tap is refused (card_replay).");
    println!("Open the answer's receipt_url in a browser: {base}/receipts/… verifies the receipt there.");
    let page = self::tap(&keys, uid, next + 1)?;
    println!(
        "After the payment, the card's own page as a phone opens it (the tap after, counter {}):\n  {base}/t?picc_data={}&cmac={}",
        next + 1,
        page.picc_data,
        page.cmac
    );
    let bus_tap = self::tap(&keys, uid, next + 2)?;
    println!(
        "Then ride the bus (stop 2; counter {}): Rp 35,00, and the ferry within the hour costs at most Rp 15,00 more:\n  curl -s -X POST {base}/v1/transit/taps -H 'Authorization: Bearer {}' -H 'Idempotency-Key: ride-{}' \\\n       -H 'Content-Type: application/json' -d '{}'",
        next + 2,
        city["transit"]["bus_validator"].as_str().unwrap_or_default(),
        next + 2,
        json!({"tap": bus_tap, "direction": "on", "stop": 2})
    );
    println!("The network and its fares: {base}/v1/transit/routes   {base}/v1/transit/fares");
    println!("The city's books: {base}/transparency   for auditors: {base}/audit");
    println!("API docs: {base}/docs   OpenAPI: {base}/openapi.json   metrics: {base}/metrics");
    Ok(())
}

/// Creates the city through the API as the operator `op` (whose token is `operator_token`):
/// the places, the holders and their cards, the credentials, the top-ups. What
/// DATA/demo-city.json keeps.
fn seed(op: &Client, operator_token: &str) -> Result<Value> {
    let Places { grocery, parking, clinic, agent } = create_places(op)?;
    let mut cards = Vec::new();
    for (i, (name, nik, uid, categories)) in CARDS.iter().enumerate() {
        let body = json!({"name": name, "nik": nik, "categories": categories});
        let h: Value = op.post("/v1/holders", &format!("demo-holder-{i}"), &body)?;
        let card: Value =
            op.post("/v1/cards", &format!("demo-card-{i}"), &json!({"uid": uid, "holder_id": id(&h)?}))?;
        cards.push(json!({"card_id": id(&card)?, "uid": uid, "holder": name}));
    }
    let token = |key: &str, body: Value| -> Result<String> {
        let v: Value = op.post("/v1/credentials", key, &body)?;
        v["token"]
            .as_str()
            .map(str::to_owned)
            .context("a credential without its token: delete DATA/demo-city.json and the data directory to start over")
    };
    let pos = token(
        "demo-cred-pos",
        json!({"role": "merchant_terminal", "name": "grocery till 1", "merchant_id": id(&grocery)?}),
    )?;
    let gate = token(
        "demo-cred-gate",
        json!({"role": "merchant_terminal", "name": "parking gate", "merchant_id": id(&parking)?}),
    )?;
    let desk = token(
        "demo-cred-desk",
        json!({"role": "service_point", "name": "clinic desk", "service_point_id": id(&clinic)?}),
    )?;
    let agent_token =
        token("demo-cred-agent", json!({"role": "top_up_agent", "name": "agent counter", "agent_id": id(&agent)?}))?;
    let kiosk = token("demo-cred-kiosk", json!({"role": "kiosk", "name": "city hall kiosk"}))?;
    let auditor = token("demo-cred-auditor", json!({"role": "auditor", "name": "city auditor"}))?;
    let teller = op.with_token(&agent_token);
    for (i, card) in cards.iter().enumerate() {
        let topup = NewTopup {
            tap: None,
            card_id: card["card_id"].as_str().map(str::to_owned),
            amount: "250000.00".into(),
            currency: None,
        };
        teller.topup(&format!("demo-topup-{i}"), &topup)?;
    }
    Ok(json!({"operator": operator_token, "grocery_pos": pos, "parking_gate": gate, "clinic_desk": desk,
        "agent": agent_token, "kiosk": kiosk, "auditor": auditor, "cards": cards}))
}

/// The demo's public transport: Trans Mamminasata (fee 2 %) with a bus line (flat Rp 35,00,
/// a validator on the bus), a ferry to the islands priced by stops (a gate at each end) and
/// the long ferry to Selayar (flat Rp 150,00, a gate at the harbour), and the fare table of
/// docs/TRANSIT.md asked for by `op` and approved by `approver`. The validators' tokens
/// and the routes' ids.
pub(crate) fn transit(op: &Client, approver: &Client) -> Result<Value> {
    let operator: Value = op.post(
        "/v1/merchants",
        "demo-transit",
        &json!({"name": "Trans Mamminasata", "category": "transit", "fee_rate": "0.02"}),
    )?;
    let stops = ["Pantai Losari", "Karebosi", "Balai Kota", "Pasar Sentral", "Panakkukang", "Universitas Hasanuddin"];
    let bus: Value = op.post(
        "/v1/transit/routes",
        "demo-route-bus",
        &json!({"merchant_id": id(&operator)?,
        "name": "Koridor 1", "mode": "bus", "stops": stops}),
    )?;
    let docks = ["Dermaga Kayu Bangkoa", "Pulau Lae-Lae", "Pulau Samalona", "Pulau Barrang Lompo"];
    let ferry: Value = op.post(
        "/v1/transit/routes",
        "demo-route-ferry",
        &json!({"merchant_id": id(&operator)?,
        "name": "Kapal Pulau", "mode": "ferry", "stops": docks}),
    )?;
    let harbours = ["Pelabuhan Soekarno-Hatta", "Pelabuhan Benteng Selayar"];
    let selayar: Value = op.post(
        "/v1/transit/routes",
        "demo-route-selayar",
        &json!({"merchant_id": id(&operator)?, "name": "Kapal Selayar", "mode": "ferry", "stops": harbours}),
    )?;
    let validator = |key: &str, name: &str, route: &Value, stop: Option<i64>| -> Result<String> {
        let v: Value = op.post(
            "/v1/credentials",
            &format!("{key}-cred"),
            &json!({"role": "merchant_terminal", "name": name, "merchant_id": id(&operator)?}),
        )?;
        let bind = json!({"credential_id": id(&v)?, "route_id": id(route)?, "stop": stop});
        let _: Value = op.post("/v1/transit/validators", &format!("{key}-bind"), &bind)?;
        v["token"].as_str().map(str::to_owned).context("a validator without its token")
    };
    let bus_validator = validator("demo-bus-1", "bus 1", &bus, None)?;
    let ferry_in = validator("demo-ferry-in", "gate Kayu Bangkoa", &ferry, Some(0))?;
    let ferry_out = validator("demo-ferry-out", "gate Samalona", &ferry, Some(2))?;
    let selayar_gate = validator("demo-selayar", "gate Soekarno-Hatta", &selayar, Some(0))?;
    let table = json!({"time_zone": "Asia/Makassar", "table": {
        "routes": {id(&bus)?: {"kind": "flat", "fare_minor": 3500},
                   id(&ferry)?: {"kind": "distance", "base_minor": 2000, "per_stop_minor": 500, "max_minor": 6000, "time_limit_minutes": 90},
                   id(&selayar)?: {"kind": "flat", "fare_minor": 15000}},
        "transfer": {"window_minutes": 60, "integrated_fare_minor": 5000},
        "daily_cap_minor": 10000, "weekly_cap_minor": 40000,
        "concessions": {"student": 50, "senior": 100}}});
    let asked: Value = op.post("/v1/transit/fares", "demo-fares", &table)?;
    let _: Value =
        approver.post(&format!("/v1/approvals/{}/approve", id(&asked)?), "demo-fares-approve", &json!({}))?;
    Ok(json!({"operator_id": id(&operator)?, "bus_route": id(&bus)?, "ferry_route": id(&ferry)?,
        "selayar_route": id(&selayar)?, "bus_validator": bus_validator, "ferry_in": ferry_in, "ferry_out": ferry_out,
        "selayar_gate": selayar_gate}))
}
