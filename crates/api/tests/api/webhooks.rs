//! Issue 17: webhooks. A receiver written here (a plain TCP server speaking just enough
//! HTTP/1.1) fails the first attempts of every event; each event must still arrive exactly
//! once with a 2xx, by its id, signed with the subscription's secret (checked here with
//! ring's HMAC, not the server's code), and every attempt must be in the delivery log.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{id, Backend, City, Server, TestResult};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `Kartu-Event-Id`.
    pub event_id: String,
    /// `Kartu-Signature`.
    pub signature: String,
    /// The body.
    pub body: String,
    /// What the receiver answered.
    pub answered: u16,
}

/// A webhook receiver on a random port that answers 500 to the first `fail_first`
/// attempts of each event id, then 200.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    /// Every request, in order.
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts it.
    pub fn start(fail_first: usize) -> Result<Receiver, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let url = format!("http://{}/hook", listener.local_addr().map_err(|e| e.to_string())?);
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_one(stream, fail_first, &log);
            }
        });
        Ok(Receiver { url, got })
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Waits until `n` events were answered 200; the bodies of those, by event id.
    pub fn wait_for(&self, n: usize, within: Duration) -> Result<HashMap<String, Value>, String> {
        let started = Instant::now();
        loop {
            let ok: HashMap<String, Value> = self
                .requests()
                .into_iter()
                .filter(|r| r.answered == 200)
                .map(|r| (r.event_id.clone(), serde_json::from_str(&r.body).unwrap_or(Value::Null)))
                .collect();
            if ok.len() >= n {
                return Ok(ok);
            }
            check!(started.elapsed() < within, "{} of {n} events delivered: {:?}", ok.len(), self.requests());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve_one(stream: std::net::TcpStream, fail_first: usize, log: &Mutex<Vec<Received>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut headers = HashMap::new();
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let event_id = headers.get("kartu-event-id").cloned().unwrap_or_default();
    let mut log = log.lock().map_err(|_| std::io::Error::other("poisoned"))?;
    let tries = log.iter().filter(|r| r.event_id == event_id).count();
    let answered = if tries < fail_first { 500 } else { 200 };
    log.push(Received {
        event_id,
        signature: headers.get("kartu-signature").cloned().unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered,
    });
    drop(log);
    let mut stream = stream;
    write!(stream, "HTTP/1.1 {answered} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
    stream.flush()
}

/// Checks `Kartu-Signature: t=…,v1=…` over `body` with `secret`, independently.
pub fn signed_by(r: &Received, secret: &str) -> bool {
    let Some((t, v1)) = r.signature.split_once(",v1=") else { return false };
    let Some(t) = t.strip_prefix("t=") else { return false };
    let Ok(tag) = hex_decode(v1) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, format!("{t}.{}", r.body).as_bytes(), &tag).is_ok()
}

fn hex_decode(text: &str) -> Result<Vec<u8>, ()> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2).ok_or(())?, 16).map_err(|_| ())).collect()
}

/// A server whose webhook retries come fast (50 ms, doubled each time).
pub fn fast_retries(backend: Backend) -> Result<Server, String> {
    Server::start_with(backend, |c| {
        assert!(c.contains("webhook_retry_base_ms = 1000"), "kartu.toml: {c}");
        c.replace("webhook_retry_base_ms = 1000", "webhook_retry_base_ms = 50")
    })
}

/// Settlements and replayed taps reach an operators' and a merchant's subscription, each
/// event once with a 2xx after two failures, signed; the delivery log has every attempt;
/// a revoked subscription gets nothing more.
pub fn webhooks_delivered_once(backend: Backend) -> TestResult {
    let c = City::on(fast_retries(backend)?, "100.00")?;
    let s = &c.s;
    let (ops, shop) = (Receiver::start(2)?, Receiver::start(2)?);
    let all = json!({"url": ops.url, "events": ["settlement.paid", "card.replay_flagged", "hold.expired"]});
    let made = s.post("/v1/webhooks", &s.operator, &all)?.expect(201)?.clone();
    let ops_secret = made["secret"].as_str().ok_or("secret once")?.to_owned();
    check!(ops_secret.starts_with("whsec_") && ops_secret.len() > 40, "{made}");
    let body = json!({"url": shop.url, "events": ["settlement.paid"], "merchant_id": c.merchant_a});
    let made = s.post("/v1/webhooks", &s.operator, &body)?.expect(201)?.clone();
    let (shop_id, shop_secret) = (id(&made)?, made["secret"].as_str().ok_or("secret")?.to_owned());
    let listed = s.get("/v1/webhooks", &s.operator)?.expect(200)?.clone();
    check!(!listed.to_string().contains(&ops_secret) && !listed.to_string().contains("secret"), "{listed}");
    s.post("/v1/webhooks", &s.operator, &json!({"url": "ftp://x", "events": ["settlement.paid"]}))?
        .problem(422, "invalid_field")?;
    s.post("/v1/webhooks", &s.operator, &json!({"url": ops.url, "events": ["nope"]}))?.problem(422, "invalid_field")?;
    s.post("/v1/webhooks", &c.pos_a, &all)?.problem(403, "forbidden")?;
    // A replayed tap, a payment at A, and a settlement (A only: B has nothing to settle).
    let tap = s.tap(&c.card);
    s.post("/v1/payments", &c.pos_a, &json!({"tap": tap, "amount": "20.00"}))?.expect(201)?;
    s.post("/v1/payments", &c.pos_a, &json!({"tap": tap, "amount": "20.00"}))?.problem(409, "card_replay")?;
    let settled = s.post("/v1/settlements", &s.operator, &json!({}))?.expect(201)?.clone();
    let got = ops.wait_for(2, Duration::from_secs(30))?;
    let shop_got = shop.wait_for(1, Duration::from_secs(30))?;
    // Five polls later, nothing delivered was sent again.
    std::thread::sleep(Duration::from_millis(1000));
    each_once_after_two_failures(&ops, &ops_secret)?;
    each_once_after_two_failures(&shop, &shop_secret)?;
    let kinds: Vec<&str> = got.values().filter_map(|v| v["type"].as_str()).collect();
    check!(kinds.contains(&"settlement.paid") && kinds.contains(&"card.replay_flagged"), "{got:?}");
    let settlement = shop_got.values().next().ok_or("the shop's event")?;
    check_eq!(settlement["type"], json!("settlement.paid"));
    check_eq!(settlement["data"]["amount"]["amount"], settled["lines"][0]["net"]["amount"]);
    check_eq!(settlement["data"]["entry_seq"], settled["lines"][0]["entry_seq"]);
    let replay = got.values().find(|v| v["type"] == json!("card.replay_flagged")).ok_or("replay")?;
    check_eq!(replay["data"]["card_id"], json!(c.card.id));
    the_delivery_log_has_every_attempt(s, &shop_id)?;
    // Revoked: the next settlement is not sent to it.
    s.delete(&format!("/v1/webhooks/{shop_id}"), &s.operator)?.expect(200)?;
    c.pay(&c.card, "5.00")?.expect(201)?;
    s.post("/v1/settlements", &s.operator, &json!({}))?.expect(201)?;
    ops.wait_for(3, Duration::from_secs(30))?;
    check_eq!(shop.requests().len(), 3, "a revoked subscription got more");
    Ok(())
}

/// Every event id: two 500s, then exactly one 200, each request signed with `secret`.
fn each_once_after_two_failures(r: &Receiver, secret: &str) -> TestResult {
    let got = r.requests();
    let mut by_id: HashMap<&str, Vec<u16>> = HashMap::new();
    for x in &got {
        check!(signed_by(x, secret), "a request not signed with the secret: {x:?}");
        by_id.entry(x.event_id.as_str()).or_default().push(x.answered);
    }
    for (event, answers) in by_id {
        check_eq!((event, answers), (event, vec![500, 500, 200]));
    }
    Ok(())
}

/// `GET /v1/webhooks/{id}/attempts`: 500, 500, 200 for the one event.
fn the_delivery_log_has_every_attempt(s: &Server, webhook: &str) -> TestResult {
    let log = s.get(&format!("/v1/webhooks/{webhook}/attempts"), &s.operator)?.expect(200)?.clone();
    let statuses: Vec<i64> =
        log["attempts"].as_array().ok_or("attempts")?.iter().filter_map(|a| a["status"].as_i64()).collect();
    check_eq!(statuses, vec![500, 500, 200]);
    let attempts: Vec<i64> =
        log["attempts"].as_array().ok_or("attempts")?.iter().filter_map(|a| a["attempt"].as_i64()).collect();
    check_eq!(attempts, vec![1, 2, 3]);
    s.get("/v1/webhooks/999999/attempts", &s.operator)?.problem(404, "not_found")?;
    Ok(())
}

/// For the expiry test: an operators' subscription to `hold.expired` on `c`'s server.
pub fn subscribe_to_expiries(c: &City) -> Result<(Receiver, String), String> {
    let r = Receiver::start(0)?;
    let body = json!({"url": r.url, "events": ["hold.expired"]});
    let made = c.s.post("/v1/webhooks", &c.s.operator, &body)?.expect(201)?.clone();
    let secret = made["secret"].as_str().ok_or("secret")?.to_owned();
    Ok((r, secret))
}
