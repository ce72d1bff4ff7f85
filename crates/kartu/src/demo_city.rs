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
        let city = seed(&op, operator_token)?;
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
