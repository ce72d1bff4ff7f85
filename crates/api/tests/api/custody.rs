//! Custody (issue 13): what a card's key version, the files' modes and the log's leaves
//! defend against.

use serde_json::json;

use crate::support::{idr, tap_with, Backend, Body, City, Server, TestResult};

/// A card issued at key version 2 refuses a tap that verifies only with version 1 (a copy
/// made with keys the card no longer holds); a card still at version 1 pays with it.
pub fn card_key_versions(backend: Backend) -> TestResult {
    let v2 = "\n[cards.2]\nsdm_meta_read_key = \"00112233445566778899AABBCCDDEEFF\"\n\
        sdm_file_read_master_key = \"FFEEDDCCBBAA99887766554433221100\"\n";
    let server = Server::start_edited(backend, |c| c, |keys| format!("{keys}{v2}"))?;
    check_eq!(server.keys.newest().version(), 2);
    let c = City::on(server, "0.00")?;
    let s = &c.s;
    let v1 = s.keys.version(1).ok_or("version 1")?;
    let old_tap = |uid: &str, counter: u32| {
        tap_with(v1.sdm_meta_read_key(), v1.sdm_file_read_master_key(), b"KARTU-MKS", uid, counter)
    };
    // The City's card was issued without a version: the newest, 2.
    check_eq!(s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?.expect(200)?["key_version"], json!(2));
    s.post("/v1/topups", &c.teller, &json!({"card_id": c.card.id, "amount": "100.00"}))?.expect(201)?;
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": old_tap(&c.card.uid, 1), "amount": "1.00"}))?;
    r.problem(422, "tap_key_outdated")?;
    c.pay(&c.card, "1.00")?.expect(201)?;
    // A card personalised at version 1 is issued so and pays with a version-1 tap.
    let h = s.holder("Hana", "7371010101900041", &["resident"])?;
    let uid = "04C0FFEE000141";
    let r = s.post("/v1/cards", &s.operator, &json!({"uid": uid, "holder_id": h, "key_version": 1}))?;
    let card = r.expect(201)?.clone();
    check_eq!(card["key_version"], json!(1));
    let id = card["id"].as_str().ok_or("id")?;
    s.post("/v1/topups", &c.teller, &json!({"card_id": id, "amount": "10.00"}))?.expect(201)?;
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": old_tap(uid, 1), "amount": "1.00"}))?;
    check_eq!(r.expect(201)?["balance"], idr("9.00"));
    // A version the key file does not hold cannot be issued.
    let r = s.post("/v1/cards", &s.operator, &json!({"uid": "04C0FFEE000142", "holder_id": h, "key_version": 3}))?;
    r.problem(422, "invalid_field")?;
    Ok(())
}

/// `kartu init` writes the server's key file and the issuance key file apart: the server's
/// holds the SDM keys and the checkpoint key and no card key 0; the issuance file holds key
/// 0 and the same SDM keys and no checkpoint key; both are 0600. `load` (what `kartu serve`
/// runs) refuses a key file holding an app_master_key and names the fix.
pub fn key_split(backend: Backend) -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let db = crate::support::TestDb::fresh(backend)?;
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let init = api::server::init(data.path(), Some(&db.url), "KARTU-MKS").map_err(|e| e.to_string())?;
    let server_path = data.path().join(api::server::KEY_FILE);
    let issuance_path = data.path().join(api::server::ISSUANCE_KEY_FILE);
    check_eq!(
        init.issuance_key_file.canonicalize().map_err(|e| e.to_string())?,
        issuance_path.canonicalize().map_err(|e| e.to_string())?
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let (server_text, issuance_text) = (read(&server_path)?, read(&issuance_path)?);
    check!(!server_text.contains("app_master_key"), "the server's key file holds key 0:\n{server_text}");
    check!(server_text.contains("ed25519_pkcs8"), "the server's key file lacks the checkpoint key");
    check!(issuance_text.contains("app_master_key"), "the issuance key file lacks key 0");
    check!(!issuance_text.contains("ed25519_pkcs8"), "the issuance key file holds the checkpoint key");
    for p in [&server_path, &issuance_path] {
        let mode = std::fs::metadata(p).map_err(|e| e.to_string())?.permissions().mode() & 0o777;
        check_eq!(mode, 0o600);
    }
    let server_keys = card::keyfile::KeyFile::parse(&server_text).map_err(|e| e.to_string())?;
    let issuance_keys = card::keyfile::KeyFile::parse(&issuance_text).map_err(|e| e.to_string())?;
    check!(!server_keys.holds_app_master_keys() && issuance_keys.holds_app_master_keys(), "holds_app_master_keys");
    let (sv, iv) = (server_keys.newest(), issuance_keys.newest());
    check_eq!(sv.version(), iv.version());
    check!(
        sv.sdm_meta_read_key() == iv.sdm_meta_read_key()
            && sv.sdm_file_read_master_key() == iv.sdm_file_read_master_key(),
        "the two files disagree on the SDM keys"
    );
    // A tap made with the issuance file's keys verifies with the server's.
    let uid = card::CardUid::from_hex("04A1B2C3D4E5F6").map_err(|e| e.to_string())?;
    let tap =
        issuance_keys.make_tap(&uid, card::ReadCounter::new(7).ok_or("counter")?, [0; 5]).map_err(|e| e.to_string())?;
    let (message, version) = server_keys.verify_tap(&tap).map_err(|e| e.to_string())?;
    check!(message.mac_valid() && version == sv.version(), "the server's keys do not verify an issued card's tap");
    // The server starts with its own file, and refuses the issuance file's key 0.
    let loaded = api::server::load(data.path(), None).map_err(|e| e.to_string())?;
    loaded.state.ledger.shutdown();
    let key0 = issuance_text.lines().find(|l| l.starts_with("app_master_key")).ok_or("key 0 line")?;
    let version_line = format!("[cards.{}]", sv.version());
    std::fs::write(&server_path, server_text.replace(&version_line, &format!("{version_line}\n{key0}")))
        .map_err(|e| e.to_string())?;
    let refused = match api::server::load(data.path(), None) {
        Ok(l) => {
            l.state.ledger.shutdown();
            return Err("load accepted a key file holding app_master_key".into());
        }
        Err(e) => e.to_string(),
    };
    check!(
        refused.contains("app_master_key") && refused.contains("issuance key file") && !refused.contains(&key0[18..50]),
        "refusal: {refused}"
    );
    Ok(())
}

fn set(config: String, from: &str, to: &str) -> String {
    assert!(config.contains(from), "kartu.toml has no {from:?}: {config}");
    config.replace(from, to)
}

/// Exposure: a per-credential rate limit (`429 rate_limited` with `Retry-After`), a token
/// on `/metrics`, and a client that never finishes its headers is cut off.
pub fn exposure_limits(backend: Backend) -> TestResult {
    const METRICS_TOKEN: &str = "m-0123456789abcdef";
    let s = Server::start_with(backend, |c| {
        let c = set(c, "rate_limit_per_second = 100", "rate_limit_per_second = 5");
        let c = set(c, "rate_limit_burst = 200", "rate_limit_burst = 5");
        let c = set(c, "rate_limit_loopback = false", "rate_limit_loopback = true");
        let c = set(c, "request_timeout_ms = 5000", "request_timeout_ms = 500");
        set(
            c,
            "hold_sweep_interval_ms = 200\n",
            &format!("hold_sweep_interval_ms = 200\nmetrics_token = \"{METRICS_TOKEN}\"\n"),
        )
    })?;
    // A burst of 5, then 5 a second: the sixth request at once is refused, and says when
    // to come back.
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..8 {
        let r = s.get("/v1/cards/999999", &s.operator)?;
        if r.status == 429 {
            r.problem(429, "rate_limited")?;
            retry = r.retry_after.clone();
        }
        statuses.push(r.status);
    }
    check_eq!(statuses[..5].to_vec(), vec![404; 5]);
    check!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    check_eq!(retry.as_deref(), Some("1"));
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    check_eq!(s.get("/v1/cards/999999", &s.operator)?.status, 404);
    // /metrics with its token only.
    s.send("GET", "/metrics", None, None, Body::None)?.problem(401, "unauthorized")?;
    s.send("GET", "/metrics", Some("kt_wrong"), None, Body::None)?.problem(401, "unauthorized")?;
    let m = s.send("GET", "/metrics", Some(METRICS_TOKEN), None, Body::None)?;
    check!(m.status == 200 && m.text.contains("kartu_"), "{} {}", m.status, m.text);
    // Headers never finished: the server answers 408 and closes, it does not wait forever.
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).map_err(|e| e.to_string())?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: kartu\r\n").map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let mut answer = String::new();
    let read = conn.read_to_string(&mut answer);
    check!(read.is_ok(), "the server kept the half-sent request open: {read:?}");
    check!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    check!(started.elapsed() < std::time::Duration::from_secs(3), "cut off after {:?}", started.elapsed());
    Ok(())
}
