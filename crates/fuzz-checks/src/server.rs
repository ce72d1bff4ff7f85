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
use client::wire::{PaymentView, TopupView};
use client::Client;
use serde::de::DeserializeOwned;
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
    /// The API, without a token (`with_token` gives a role's).
    api: Client,
    tokens: HashMap<&'static str, String>,
    state: web::Data<AppState>,
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

/// A set-up write whose answer must be a success.
fn made<T: DeserializeOwned>(api: &Client, token: &str, path: &str, key: &str, body: &Value) -> Result<T, String> {
    api.with_token(token).post(path, key, body).map_err(|e| format!("setting up: {e}"))
}

fn id(v: &Value) -> Result<String, String> {
    v["id"].as_str().map(str::to_owned).ok_or_else(|| format!("no id in {v}"))
}

/// Serves a new installation with fixed card keys on a random port; its init and state.
fn serve(dir: &std::path::Path) -> Result<(Client, api::server::Initialised, web::Data<AppState>), String> {
    let init = api::server::init(dir, None, "KARTU-MKS").map_err(|e| e.to_string())?;
    // Fixed card keys, so that the seeds' taps are genuine.
    let keys = crate::fixed_key_file();
    std::fs::write(dir.join("keys.toml"), keys.server_part().to_toml().as_bytes()).map_err(|e| e.to_string())?;
    let loaded = api::server::load(dir, None).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let state = loaded.state.clone();
    api::server::serve_in_thread(state, listener, 1);
    let api = Client::new(&base, None, Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let started = Instant::now();
    while api.healthz().is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the server did not answer /healthz".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((api, init, loaded.state))
}

/// The small city the inputs are sent to, and the routes they aim at.
fn start() -> Result<Harness, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (api, init, state) = serve(dir.path())?;
    let op = init.operator_token.clone();
    let new = |path: &str, key: &str, body: Value| made::<Value>(&api, &op, path, key, &body);
    let merchant = new("/v1/merchants", "m", json!({"name": "Toko", "category": "grocery", "fee_rate": "0.007"}))?;
    let clinic = new(
        "/v1/service-points",
        "sp",
        json!({"name": "Klinik", "service": "clinic",
        "policy": {"categories": ["insured"], "timezone": "Asia/Makassar", "daily_quota": 100, "issues_queue_numbers": true}}),
    )?;
    let agent = new("/v1/agents", "a", json!({"name": "Agen"}))?;
    new(&format!("/v1/agents/{}/float", id(&agent)?), "f", json!({"amount": "10000000.00"}))?;
    let holder = new("/v1/holders", "h", json!({"name": "Ani", "nik": "7371010101900001", "categories": ["insured"]}))?;
    let card = new("/v1/cards", "c", json!({"uid": SEED_CARD_UID, "holder_id": id(&holder)?}))?;
    let credential = |key: &str, body: Value| -> Result<String, String> {
        let v = new("/v1/credentials", key, body)?;
        v["token"].as_str().map(str::to_owned).ok_or_else(|| format!("no token in {v}"))
    };
    let pos = credential("t1", json!({"role": "merchant_terminal", "name": "till", "merchant_id": id(&merchant)?}))?;
    let desk = credential("t2", json!({"role": "service_point", "name": "desk", "service_point_id": id(&clinic)?}))?;
    let teller = credential("t3", json!({"role": "top_up_agent", "name": "counter", "agent_id": id(&agent)?}))?;
    let kiosk = credential("t4", json!({"role": "kiosk", "name": "kiosk"}))?;
    let auditor = credential("t5", json!({"role": "auditor", "name": "auditor"}))?;
    let _: TopupView =
        made(&api, &teller, "/v1/topups", "top", &json!({"card_id": id(&card)?, "amount": "500000.00"}))?;
    let tap = |counter| json!({"tap": crate::fixed_tap(SEED_CARD_UID, counter), "amount": "10000.00"});
    let payment: PaymentView = made(&api, &pos, "/v1/payments", "p", &tap(1))?;
    let hold: PaymentView = made(&api, &pos, "/v1/holds", "hd", &tap(2))?;
    let adjustment =
        new("/v1/adjustments", "adj", json!({"account_id": card["account_id"], "amount": "1.00", "reason": "fuzz"}))?;
    let ids =
        Ids { card: id(&card)?, payment: payment.id, hold: hold.id, agent: id(&agent)?, adjustment: id(&adjustment)? };
    let tokens = HashMap::from([
        ("operator", op.clone()),
        ("merchant_terminal", pos),
        ("service_point", desk),
        ("top_up_agent", teller),
        ("kiosk", kiosk),
        ("auditor", auditor),
    ]);
    let targets = targets(&ids);
    Ok(Harness { api, tokens, state, next_key: AtomicU64::new(0), targets, card: ids.card, _dir: dir })
}

/// The objects the targets' paths name.
struct Ids {
    card: String,
    payment: String,
    hold: String,
    agent: String,
    adjustment: String,
}

/// Every write route, with the objects the harness made.
fn targets(ids: &Ids) -> Vec<RequestTarget> {
    let t = |path: String, role| RequestTarget { path, role };
    let Ids { card, payment, hold, agent, adjustment } = ids;
    vec![
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
        t(format!("/v1/agents/{agent}/float"), "operator"),
        t("/v1/credentials".into(), "operator"),
        t("/v1/adjustments".into(), "operator"),
        t(format!("/v1/adjustments/{adjustment}/approve"), "operator"),
        t("/v1/settlements".into(), "operator"),
        t("/v1/offline/journals".into(), "merchant_terminal"),
        t("/v1/payments".into(), "auditor"),
    ]
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
    let answer = h
        .api
        .with_token(token)
        .post_bytes(&target.path, &key, "application/json", body)
        .unwrap_or_else(|e| panic!("POST {}: {e}", target.path));
    let (status, content_type) = (answer.status, answer.content_type);
    // What the server said; a refusal must be a problem document (below).
    let json: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
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
    let trial = h.api.with_token(&h.tokens["auditor"]).trial_balance().unwrap_or_else(|e| panic!("trial balance: {e}"));
    assert!(trial.currencies.iter().all(|c| c.balanced), "unbalanced books: {trial:?}");
    let card: Value = h
        .api
        .with_token(&h.tokens["operator"])
        .get(&format!("/v1/cards/{}", h.card))
        .unwrap_or_else(|e| panic!("card: {e}"));
    let balance = card["balance"]["amount"].as_str().unwrap_or_else(|| panic!("no balance in {card}"));
    assert!(!balance.starts_with('-'), "the card's wallet is below zero: {card}");
}
