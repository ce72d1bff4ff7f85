//! The request-body harness: the server `kartu serve` runs (`api::server::server`, every
//! middleware included) on a random port over a fresh SQLite ledger with a small city, to
//! which each input is POSTed as the body of one write route with that route's token.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::web;
use api::AppState;
use serde_json::{json, Value};

/// One write route the fuzzer aims at.
#[derive(Debug, Clone)]
pub struct RequestTarget {
    /// The path, with ids of objects the harness made.
    pub path: String,
    /// Whose token is sent.
    pub role: &'static str,
}

#[derive(Debug)]
struct Harness {
    base: String,
    tokens: HashMap<&'static str, String>,
    state: web::Data<AppState>,
    agent: ureq::Agent,
    next_key: AtomicU64,
    targets: Vec<RequestTarget>,
    card: String,
    _dir: tempfile::TempDir,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| match start() {
        Ok(h) => h,
        Err(e) => panic!("the request-body harness did not start: {e}"),
    })
}

/// The routes in the order the first input byte picks them.
pub fn request_targets() -> Vec<RequestTarget> {
    harness().targets.clone()
}

fn post(h: &Harness, token: &str, path: &str, key: &str, body: &[u8]) -> Result<(u16, String, Value), String> {
    let mut r = h
        .agent
        .post(&format!("{}{path}", h.base))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| format!("POST {path}: {e}"))?;
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = r.body_mut().read_to_string().map_err(|e| format!("POST {path}: reading: {e}"))?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok((status, content_type, json))
}

fn made(h: &Harness, token: &str, path: &str, key: &str, body: &Value) -> Result<Value, String> {
    let (status, _, v) = post(h, token, path, key, body.to_string().as_bytes())?;
    if (200..300).contains(&status) {
        Ok(v)
    } else {
        Err(format!("setting up, POST {path}: {status} {v}"))
    }
}

fn id(v: &Value) -> Result<String, String> {
    v["id"].as_str().map(str::to_owned).ok_or_else(|| format!("no id in {v}"))
}

fn start() -> Result<Harness, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let init = api::server::init(dir.path(), None, "KARTU-MKS").map_err(|e| e.to_string())?;
    // Fixed card keys, so that the seeds' taps are genuine.
    let keys = crate::fixed_key_file();
    std::fs::write(dir.path().join("keys.toml"), keys.server_part().to_toml().as_bytes()).map_err(|e| e.to_string())?;
    let loaded = api::server::load(dir.path(), None).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let state = loaded.state.clone();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        let served = system.block_on(async move {
            match api::server::server(state, listener, 1) {
                Ok(server) => server.await,
                Err(e) => Err(e),
            }
        });
        if let Err(e) = served {
            eprintln!("the fuzz harness's server stopped: {e}");
        }
    });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let started = Instant::now();
    while agent.get(&format!("{base}/healthz")).call().is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the server did not answer /healthz".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut h = Harness {
        base,
        tokens: HashMap::new(),
        state: loaded.state,
        agent,
        next_key: AtomicU64::new(0),
        targets: Vec::new(),
        card: String::new(),
        _dir: dir,
    };
    let op = init.operator_token.clone();
    let merchant =
        made(&h, &op, "/v1/merchants", "m", &json!({"name": "Toko", "category": "grocery", "fee_rate": "0.007"}))?;
    let clinic = made(
        &h,
        &op,
        "/v1/service-points",
        "sp",
        &json!({"name": "Klinik", "service": "clinic",
        "policy": {"categories": ["insured"], "timezone": "Asia/Makassar", "daily_quota": 100, "issues_queue_numbers": true}}),
    )?;
    let agent = made(&h, &op, "/v1/agents", "a", &json!({"name": "Agen"}))?;
    made(&h, &op, &format!("/v1/agents/{}/float", id(&agent)?), "f", &json!({"amount": "10000000.00"}))?;
    let holder = made(
        &h,
        &op,
        "/v1/holders",
        "h",
        &json!({"name": "Ani", "nik": "7371010101900001", "categories": ["insured"]}),
    )?;
    let card = made(&h, &op, "/v1/cards", "c", &json!({"uid": SEED_CARD_UID, "holder_id": id(&holder)?}))?;
    let credential = |key: &str, body: Value| -> Result<String, String> {
        let v = made(&h, &op, "/v1/credentials", key, &body)?;
        v["token"].as_str().map(str::to_owned).ok_or_else(|| format!("no token in {v}"))
    };
    let pos = credential("t1", json!({"role": "merchant_terminal", "name": "till", "merchant_id": id(&merchant)?}))?;
    let desk = credential("t2", json!({"role": "service_point", "name": "desk", "service_point_id": id(&clinic)?}))?;
    let teller = credential("t3", json!({"role": "top_up_agent", "name": "counter", "agent_id": id(&agent)?}))?;
    let kiosk = credential("t4", json!({"role": "kiosk", "name": "kiosk"}))?;
    let auditor = credential("t5", json!({"role": "auditor", "name": "auditor"}))?;
    made(&h, &teller, "/v1/topups", "top", &json!({"card_id": id(&card)?, "amount": "500000.00"}))?;
    let payment =
        made(&h, &pos, "/v1/payments", "p", &json!({"tap": crate::fixed_tap(SEED_CARD_UID, 1), "amount": "10000.00"}))?;
    let hold =
        made(&h, &pos, "/v1/holds", "hd", &json!({"tap": crate::fixed_tap(SEED_CARD_UID, 2), "amount": "5000.00"}))?;
    let adjustment = made(
        &h,
        &op,
        "/v1/adjustments",
        "adj",
        &json!({"account_id": card["account_id"], "amount": "1.00", "reason": "fuzz"}),
    )?;
    h.tokens = HashMap::from([
        ("operator", op),
        ("merchant_terminal", pos),
        ("service_point", desk),
        ("top_up_agent", teller),
        ("kiosk", kiosk),
        ("auditor", auditor),
    ]);
    let t = |path: String, role| RequestTarget { path, role };
    let (card, payment, hold) = (id(&card)?, id(&payment)?, id(&hold)?);
    h.targets = vec![
        t("/v1/payments".into(), "merchant_terminal"),
        t(format!("/v1/payments/{payment}/refunds"), "merchant_terminal"),
        t("/v1/holds".into(), "merchant_terminal"),
        t(format!("/v1/holds/{hold}/capture"), "merchant_terminal"),
        t(format!("/v1/holds/{hold}/void"), "merchant_terminal"),
        t("/v1/topups".into(), "top_up_agent"),
        t("/v1/balance-inquiries".into(), "kiosk"),
        t("/v1/access-checks".into(), "service_point"),
        t("/v1/holders".into(), "operator"),
        t("/v1/cards".into(), "operator"),
        t(format!("/v1/cards/{card}/block"), "operator"),
        t(format!("/v1/cards/{card}/replace"), "operator"),
        t("/v1/merchants".into(), "operator"),
        t("/v1/service-points".into(), "operator"),
        t("/v1/agents".into(), "operator"),
        t(format!("/v1/agents/{}/float", id(&agent)?), "operator"),
        t("/v1/credentials".into(), "operator"),
        t("/v1/adjustments".into(), "operator"),
        t(format!("/v1/adjustments/{}/approve", id(&adjustment)?), "operator"),
        t("/v1/settlements".into(), "operator"),
        t("/v1/offline/journals".into(), "merchant_terminal"),
        t("/v1/payments".into(), "auditor"),
    ];
    h.card = card;
    Ok(h)
}

/// The UID of the harness's card, whose taps (under [`crate::fixed_key_file`]) the seeds carry.
pub const SEED_CARD_UID: &str = "04A1B2C3D4E501";

/// One request: the first byte picks the route (and its token), the rest is the body.
/// Whatever the body, the server answers below 500; a refusal is problem+json with a
/// stable `code` and writes no entry. Returns the status (0 for an empty input).
pub fn request_body(data: &[u8]) -> u16 {
    let Some((&pick, body)) = data.split_first() else { return 0 };
    let h = harness();
    let target = &h.targets[usize::from(pick) % h.targets.len()];
    let token = &h.tokens[target.role];
    let before = h.state.ledger.last_seq().unwrap_or_else(|e| panic!("last_seq: {e}"));
    let key = format!("fuzz-{}", h.next_key.fetch_add(1, Ordering::Relaxed));
    let (status, content_type, json) = post(h, token, &target.path, &key, body).unwrap_or_else(|e| panic!("{e}"));
    assert!(status < 500, "POST {} answered {status}: {json}", target.path);
    if status >= 400 {
        assert_eq!(content_type, "application/problem+json", "POST {}: {status} {json}", target.path);
        let code = json["code"].as_str().unwrap_or_default();
        assert!(
            !code.is_empty() && json["type"] == json!(format!("urn:kartu:problem:{code}")),
            "POST {}: a problem without a stable code: {json}",
            target.path
        );
        let after = h.state.ledger.last_seq().unwrap_or_else(|e| panic!("last_seq: {e}"));
        assert_eq!(after, before, "POST {} refused with {status} {code} but wrote an entry", target.path);
    }
    status
}

/// After any inputs: the trial balance is zero in every currency (the auditor's view) and
/// the card's wallet is not below zero.
pub fn request_body_books_balance() {
    let h = harness();
    let mut r = h
        .agent
        .get(&format!("{}/v1/audit/trial-balance", h.base))
        .header("Authorization", &format!("Bearer {}", h.tokens["auditor"]))
        .call()
        .unwrap_or_else(|e| panic!("trial balance: {e}"));
    let v: Value = r.body_mut().read_json().unwrap_or_else(|e| panic!("trial balance: {e}"));
    let currencies = v["currencies"].as_array().unwrap_or_else(|| panic!("no currencies in {v}"));
    assert!(currencies.iter().all(|c| c["balanced"] == json!(true)), "unbalanced books: {v}");
    let mut r = h
        .agent
        .get(&format!("{}/v1/cards/{}", h.base, h.card))
        .header("Authorization", &format!("Bearer {}", h.tokens["operator"]))
        .call()
        .unwrap_or_else(|e| panic!("card: {e}"));
    let card: Value = r.body_mut().read_json().unwrap_or_else(|e| panic!("card: {e}"));
    let balance = card["balance"]["amount"].as_str().unwrap_or_else(|| panic!("no balance in {card}"));
    assert!(!balance.starts_with('-'), "the card's wallet is below zero: {card}");
}
