//! The `kartu` binary, run as a user would: migrate, read, and `audit verify` that passes on
//! an honest log and fails, naming the entry, on a tampered one.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ledger::domain::{AccountKind, Command as LedgerCommand, EntryKind, Leg, NewAccount, Request};
use ledger::money::{Amount, Currency, AMOUNT_MAX_MINOR};
use ledger::{CheckpointSettings, Ledger, LedgerConfig};

fn kartu(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kartu")).args(args).output().expect("run kartu");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A migrated SQLite ledger with a few entries and a signed checkpoint; returns the URL and
/// the path of the public key file.
fn signed_ledger(dir: &Path) -> (String, String) {
    let url = format!("sqlite://{}", dir.join("k.db").display());
    let (ok, out, err) = kartu(&["migrate", "--database-url", &url]);
    let migrations =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/sqlite")).expect("migrations").count();
    assert!(ok && out.contains(&format!("{migrations} migration(s) applied")), "{out} {err}");
    let pkcs8 = merkle::Signer::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key");
    let signer = Arc::new(merkle::Signer::from_pkcs8("cli.kartu.example", &pkcs8).expect("signer"));
    let key_file = dir.join("checkpoint.pub");
    std::fs::write(&key_file, format!("{}\n", signer.verifier_key())).expect("write key");
    let config = LedgerConfig {
        checkpoints: Some(CheckpointSettings {
            signer,
            origin: "cli.kartu.example/log".into(),
            interval: std::time::Duration::from_secs(60),
            trusted_file: None,
            first_key: None,
        }),
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(&url, config).expect("open");
    let bank = ledger.system_account(AccountKind::CityBank, Currency::IDR).expect("bank").id;
    let fees = ledger.system_account(AccountKind::FeeRevenue, Currency::IDR).expect("fees").id;
    let new = |kind| NewAccount { kind, currency: Currency::IDR, name: "x".into(), balance_max_minor: None };
    let wallet = ledger.create_account(new(AccountKind::CardWallet)).expect("wallet").id;
    let merchant = ledger.create_account(new(AccountKind::Merchant)).expect("merchant").id;
    let topup = LedgerCommand::Transfer {
        kind: EntryKind::Topup,
        legs: vec![Leg { account: wallet, amount_minor: 100_000 }, Leg { account: bank, amount_minor: -100_000 }],
    };
    ledger.submit_blocking(Request::new(topup)).expect("topup");
    for minor in [1_000, 2_000, 3_000] {
        let amount = Amount::from_minor(minor, Currency::IDR, AMOUNT_MAX_MINOR).expect("amount");
        let pay = LedgerCommand::Payment { wallet, merchant, fee_account: fees, amount, fee_minor: 7 };
        ledger.submit_blocking(Request::new(pay)).expect("pay");
    }
    ledger.checkpoint_now().expect("checkpoint").expect("new checkpoint");
    ledger.shutdown();
    (url, key_file.display().to_string())
}

#[test]
fn audit_verify_passes_then_names_the_tampered_entry() {
    let dir = tempfile::tempdir().expect("dir");
    let (url, key) = signed_ledger(dir.path());
    let (ok, out, err) =
        kartu(&["audit", "verify", "--database-url", &url, "--public-key", &key, "--origin", "cli.kartu.example/log"]);
    assert!(ok, "{out} {err}");
    assert!(out.starts_with("OK: 4 entries, 4 leaves, 1 signed checkpoints"), "{out}");

    let (ok, out, _) = kartu(&["ledger", "trial-balance", "--database-url", &url]);
    assert!(ok && out.contains("IDR  balances sum 0.00") && out.contains("balanced"), "{out}");
    let (ok, out, _) = kartu(&["ledger", "entries", "--database-url", &url, "--from", "3", "--limit", "1"]);
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("json line");
    assert!(ok && line["seq"] == 3 && line["kind"] == "payment" && line["amount"] == "20.00", "{out}");

    // An attacker with the database rewrites a balance after.
    let path = url.trim_start_matches("sqlite://");
    let sql = "DROP TRIGGER postings_no_update; UPDATE postings SET balance_after_minor = 999999 WHERE entry_seq = 3 AND leg = 0;";
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut c = diesel::sqlite::SqliteConnection::establish(path).expect("open");
        c.batch_execute(sql).expect("tamper");
    }
    let (ok, out, err) = kartu(&["audit", "verify", "--database-url", &url, "--public-key", &key]);
    assert!(!ok, "tampered log passed: {out}");
    assert!(err.contains("FAILED: entry 3 (leaf 2)") && err.contains("balance after"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let (ok, _, err) = kartu(&["migrate", "--database-url", "mysql://x"]);
    assert!(!ok && err.contains("must start with sqlite:// or postgres://"), "{err}");
    let dir = tempfile::tempdir().expect("dir");
    let (url, _) = signed_ledger(dir.path());
    let bad_key = dir.path().join("bad.pub");
    std::fs::write(&bad_key, "not a key").expect("write");
    let (ok, _, err) =
        kartu(&["audit", "verify", "--database-url", &url, "--public-key", &bad_key.display().to_string()]);
    assert!(!ok && err.contains("does not hold a verifier key"), "{err}");
    let (ok, _, err) = kartu(&["ledger", "balance", "424242", "--database-url", &url]);
    assert!(!ok && err.contains("account 424242 does not exist"), "{err}");
    // A validator's direction is on, off or auto; checked before any reader or server.
    let data = dir.path().join("validator").display().to_string();
    let terminal = ["terminal", "--server", "http://127.0.0.1:9", "--data-dir", &data, "--print-public-key"];
    let (ok, _, err) = kartu(&[&terminal[..], &["--mode", "validator", "--direction", "sideways"]].concat());
    assert!(!ok && err.contains("--direction must be on, off or auto"), "{err}");
    let (ok, _, err) = kartu(&[&terminal[..], &["--mode", "tram"]].concat());
    assert!(!ok && err.contains("--mode must be pos, gate, kiosk, agent or validator"), "{err}");
    let (ok, out, err) = kartu(&[&terminal[..], &["--mode", "validator", "--direction", "auto"]].concat());
    assert!(ok && out.trim().len() == 64, "a validator's journal key: {out} {err}");
}

/// AN12196's SUN example (../shared/VECTORS.md): zero keys, UID 04DE5F1EACC040, counter 61.
#[test]
fn inspect_tap_reads_the_published_sun_vector() {
    let zero = "00000000000000000000000000000000";
    let args = |cmac: &'static str| {
        vec![
            "card",
            "inspect-tap",
            "--meta-key",
            zero,
            "--file-key",
            zero,
            "--picc-data",
            "EF963FF7828658A599F3041510671E88",
            "--cmac",
            cmac,
        ]
    };
    let (ok, out, err) = kartu(&args("94EED9EE65337086"));
    assert!(ok, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        (v["uid"].as_str(), v["counter"].as_u64(), v["mac_valid"].as_bool()),
        (Some("04DE5F1EACC040"), Some(61), Some(true))
    );
    let (ok, out, err) = kartu(&args("94EED9EE65337087"));
    assert!(!ok && out.contains("\"mac_valid\":false") && err.contains("MAC is not valid"), "{out} {err}");
    let (ok, _, err) =
        kartu(&["card", "inspect-tap", "--meta-key", zero, "--file-key", zero, "--picc-data", "XYZ", "--cmac", "00"]);
    assert!(!ok && err.contains("reading the tap"), "{err}");
}

/// With a key file, the per-card key is diversified (AN10922, M = UID || 2 || system id) and
/// every key version is tried, newest first.
#[test]
fn inspect_tap_with_a_key_file_finds_the_key_version() {
    use card::sun::{encrypt_picc_data, sdm_mac};
    let dir = tempfile::tempdir().expect("dir");
    let meta = card::Key::from_hex("11111111111111111111111111111111").expect("key");
    let master_v1 = card::Key::from_hex("22222222222222222222222222222222").expect("key");
    let uid = card::CardUid::from_hex("04A1B2C3D4E5F6").expect("uid");
    let counter = card::ReadCounter::new(7).expect("counter");
    let card_key = card::diversify_card_key(&master_v1, &uid, 2, b"KARTU-MKS").expect("diversify");
    let picc = hex::encode_upper(encrypt_picc_data(&meta, &uid, counter, [0; 5]));
    let mac = hex::encode_upper(sdm_mac(&card_key, &uid, counter, &[]));
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "system_identifier = \"KARTU-MKS\"\n\
         [cards.1]\nsdm_meta_read_key = \"11111111111111111111111111111111\"\nsdm_file_read_master_key = \"22222222222222222222222222222222\"\napp_master_key = \"33333333333333333333333333333333\"\n\
         [cards.2]\nsdm_meta_read_key = \"11111111111111111111111111111111\"\nsdm_file_read_master_key = \"44444444444444444444444444444444\"\napp_master_key = \"55555555555555555555555555555555\"\n",
    )
    .expect("write keys");
    let keys = keys.display().to_string();
    let (ok, out, err) = kartu(&["card", "inspect-tap", "--keys", &keys, "--picc-data", &picc, "--cmac", &mac]);
    assert!(ok, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        (v["uid"].as_str(), v["counter"].as_u64(), v["key_version"].as_u64()),
        (Some("04A1B2C3D4E5F6"), Some(7), Some(1))
    );
    let (ok, _, err) = kartu(&["card", "inspect-tap", "--picc-data", &picc, "--cmac", &mac]);
    assert!(!ok && err.contains("--keys"), "{err}");
}

/// A key file with a bad key: the error names the file and the field, never the value.
#[test]
fn inspect_tap_with_a_bad_key_file_names_the_field() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "system_identifier = \"KARTU-MKS\"\n[cards.1]\nsdm_meta_read_key = \"11111111111111111111111111111111\"\n\
         sdm_file_read_master_key = \"2222222222222222222222222222222\"\napp_master_key = \"33333333333333333333333333333333\"\n",
    )
    .expect("write keys");
    let keys = keys.display().to_string();
    let (ok, out, err) = kartu(&[
        "card",
        "inspect-tap",
        "--keys",
        &keys,
        "--picc-data",
        "EF963FF7828658A599F3041510671E88",
        "--cmac",
        "94EED9EE65337086",
    ]);
    assert!(!ok && out.is_empty(), "{out} {err}");
    assert!(err.contains("is not a valid Kartu key file") && err.contains("cards.1.sdm_file_read_master_key"), "{err}");
    assert!(!err.contains("2222222222") && !err.contains("1111111111"), "{err}");
}

/// `card personalize` checks its key file, key version and host before it looks for a
/// reader; `card sim` checks the UID before it starts. (With a card: `card_e2e.rs`.)
#[test]
fn personalize_and_sim_refuse_bad_arguments_before_touching_a_card() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "system_identifier = \"KARTU-MKS\"\n[cards.1]\nsdm_meta_read_key = \"11111111111111111111111111111111\"\n\
         sdm_file_read_master_key = \"22222222222222222222222222222222\"\napp_master_key = \"33333333333333333333333333333333\"\n",
    )
    .expect("write keys");
    let keys = keys.display().to_string();
    let personalize = |extra: &[&str]| {
        let mut args = vec!["card", "personalize", "--keys", &keys, "--timeout-secs", "1"];
        args.extend_from_slice(extra);
        kartu(&args)
    };
    let (ok, out, err) = personalize(&["--host", "kartu.example", "--key-version", "2"]);
    assert!(!ok && out.is_empty() && err.contains("has no key version 2 ([cards.2])"), "{out} {err}");
    let (ok, _, err) = personalize(&["--host", "kartu.example", "--key-version", "0"]);
    assert!(!ok && err.contains("--key-version"), "{err}");
    let (ok, _, err) = personalize(&["--host", "kartu example/x"]);
    assert!(!ok && err.contains("cannot be the tap URL's host"), "{err}");
    let (ok, _, err) = kartu(&["card", "personalize", "--keys", "/nonexistent/keys.toml", "--host", "kartu.example"]);
    assert!(!ok && err.contains("reading /nonexistent/keys.toml"), "{err}");
    // The server's key file has no card key 0: personalising with it is refused at once.
    let server_keys = dir.path().join("server-keys.toml");
    std::fs::write(
        &server_keys,
        "system_identifier = \"KARTU-MKS\"\n[cards.1]\nsdm_meta_read_key = \"11111111111111111111111111111111\"\n\
         sdm_file_read_master_key = \"22222222222222222222222222222222\"\n",
    )
    .expect("write keys");
    let server_keys = server_keys.display().to_string();
    let (ok, out, err) = kartu(&["card", "personalize", "--keys", &server_keys, "--host", "kartu.example"]);
    assert!(!ok && out.is_empty() && err.contains("server's key file") && err.contains("issuance"), "{out} {err}");

    let state = dir.path().join("card.json").display().to_string();
    let (ok, out, err) = kartu(&["card", "sim", "--state", &state, "--vpcd", "127.0.0.1:1", "--uid", "04XYZ"]);
    assert!(!ok && out.is_empty() && err.contains("--uid"), "{out} {err}");
    let (ok, _, err) = kartu(&["card", "sim", "--state", &state, "--vpcd", "no port here"]);
    assert!(!ok && err.contains("vpcd address"), "{err}");
    assert!(!std::path::Path::new(&state).exists(), "a refused sim created its state file");
}

/// `kartu init`, `kartu serve` and `kartu audit verify --url`, as an operator and an auditor
/// run them: the token is printed once, secrets are private files, a live server's log
/// verifies through the API, a wrong key fails it, and SIGTERM stops the server cleanly.
#[test]
fn init_serve_and_verify_a_live_server() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("city");
    let data_s = data.display().to_string();
    let (token, verifier) = init_prints_the_token_once_and_keeps_the_secrets_private(&data);

    let (mut server, base, lines) = spawn_serve(&data_s, "127.0.0.1:0", Some("200"));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let auditor = post_ok(
        &agent,
        &base,
        &token,
        "/v1/credentials",
        "c1",
        serde_json::json!({"role": "auditor", "name": "auditor"}),
    );
    let auditor = auditor["token"].as_str().expect("token once").to_owned();
    let a = post_ok(&agent, &base, &token, "/v1/agents", "a1", serde_json::json!({"name": "agent"}));
    let float_path = format!("/v1/agents/{}/float", a["id"].as_str().expect("id"));
    let float = post_ok(&agent, &base, &token, &float_path, "f1", serde_json::json!({"amount": "5000.00"}));
    assert_eq!(float["balance"]["amount"], "5000.00");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let key_file = dir.path().join("log.pub");
    std::fs::write(&key_file, format!("{verifier}\n")).expect("key");
    verify_url_takes_the_token_from_a_private_file(dir.path(), &base, &auditor, &key_file);
    audit_receipt_checks_one_receipt(&base, &float, &key_file);
    verify_url_fails_with_another_key_or_a_token_that_may_not_read(&base, &auditor, &key_file);
    let pid = server.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = server.wait().expect("wait");
    assert!(status.success(), "serve must exit cleanly on SIGTERM: {status}");
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(log.iter().any(|l| l.contains("stopped")), "the server says it stopped");
    // One line per request, with its id and credential; never a token.
    let requests: Vec<&String> = log.iter().filter(|l| l.contains("request_id=")).collect();
    assert!(requests.iter().any(|l| l.contains("route=/v1/credentials") && l.contains("credential_id=1")), "{log:?}");
    for secret in [&token, &auditor] {
        assert!(!log.iter().any(|l| l.contains(secret.as_str())), "a token in the log");
    }
}

/// `kartu audit receipt`: the float funding's receipt verifies under the city's key (and,
/// without one, under the server's); a wrong leaf hash, another entry's number or another
/// key fail with the check that failed, non-zero.
fn audit_receipt_checks_one_receipt(base: &str, posted: &serde_json::Value, key_file: &Path) {
    let seq = posted["entry_seq"].as_i64().expect("entry_seq").to_string();
    let hash = posted["leaf_hash"].as_str().expect("leaf_hash").to_owned();
    assert_eq!(posted["receipt_url"], format!("/receipts/{seq}?h={hash}"));
    let key_s = key_file.display().to_string();
    let receipt = |seq: &str, hash: &str, key: Option<&str>| {
        let mut args = vec!["audit", "receipt", "--url", base, "--seq", seq, "--leaf-hash", hash];
        if let Some(k) = key {
            args.extend(["--public-key", k]);
        }
        kartu(&args)
    };
    let (ok, out, err) = receipt(&seq, &hash, Some(&key_s));
    assert!(ok, "{out}{err}");
    assert!(out.starts_with(&format!("Verified: entry {seq} (transfer of 5000.00 IDR")), "{out}");
    let (ok, out, err) = receipt(&seq, &hash, None);
    assert!(ok && out.starts_with("Verified") && err.contains("the server's own key"), "{out}{err}");
    let mut wrong = hash.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let (ok, _, err) = receipt(&seq, std::str::from_utf8(&wrong).expect("hex"), Some(&key_s));
    assert!(!ok && err.contains("audit receipt FAILED") && err.contains("not_found"), "{err}");
    let next = (posted["entry_seq"].as_i64().expect("seq") + 1).to_string();
    let (ok, _, err) = receipt(&next, &hash, Some(&key_s));
    assert!(!ok && err.contains("not_found"), "another entry's number: {err}");
    let other = key_file.with_extension("other");
    let signer = merkle::Signer::from_pkcs8(
        "kartu.example/log",
        &merkle::Signer::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key"),
    )
    .expect("signer");
    std::fs::write(&other, signer.verifier_key()).expect("key");
    let (ok, _, err) = receipt(&seq, &hash, Some(&other.display().to_string()));
    assert!(!ok && err.contains("signature check failed"), "another key: {err}");
    let (ok, _, err) = receipt(&seq, "xyz", Some(&key_s));
    assert!(!ok && err.contains("--leaf-hash is not 64 hex digits"), "{err}");
}

/// POST as `token` to a live server, asserting a 2xx; the JSON answer.
fn post_ok(
    agent: &ureq::Agent,
    base: &str,
    token: &str,
    path: &str,
    key: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut r = agent
        .post(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Idempotency-Key", key)
        .send_json(&body)
        .expect("post");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.body_mut().read_json().expect("json")
}

/// `kartu init` in `data`: only the operator's token on stdout, the key files, config and
/// database private, a second init refused, and `kartu serve` refusing key files others may
/// read. Returns the token and the checkpoint verifier key.
fn init_prints_the_token_once_and_keeps_the_secrets_private(data: &Path) -> (String, String) {
    use std::os::unix::fs::PermissionsExt;
    let data_s = data.display().to_string();
    let (ok, out, err) = kartu(&["init", "--data-dir", &data_s]);
    assert!(ok, "{err}");
    let token = out.trim().to_owned();
    assert!(
        token.starts_with("kt_") && token.len() > 40 && out.lines().count() == 1,
        "only the token on stdout: {out}"
    );
    let verifier = err.lines().find_map(|l| l.split("verifier key: ").nth(1)).expect("verifier key line").to_owned();
    for secret in ["keys.toml", "issuance-keys.toml", "nik.key", "kartu.toml", "kartu.db"] {
        let mode = std::fs::metadata(data.join(secret)).expect("secret file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{secret} must be private");
    }
    let mode = std::fs::metadata(data).expect("data dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data directory must be its owner's only");
    assert!(!std::fs::read_to_string(data.join("kartu.toml")).expect("config").contains("kt_"));
    let (again, _, err2) = kartu(&["init", "--data-dir", &data_s]);
    assert!(!again && err2.contains("already"), "a second init must refuse: {err2}");
    // A key file others may read: `kartu serve` refuses to start and says how to fix it.
    for secret in ["keys.toml", "nik.key"] {
        let path = data.join(secret);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let (ok, _, err) = kartu(&["serve", "--data-dir", &data_s, "--listen", "127.0.0.1:0"]);
        assert!(!ok && err.contains("readable by group or others") && err.contains("chmod 600"), "{secret}: {err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // init said where each key file belongs; the server's holds no card key 0.
    assert!(err.contains("issuance-keys.toml") && err.contains("personalisation workstation"), "{err}");
    assert!(!std::fs::read_to_string(data.join("keys.toml")).expect("keys").contains("app_master_key"));
    (token, verifier)
}

/// `kartu audit verify --url` with the auditor's token from a file (not on the command
/// line, where `ps` shows it): refused while others may read the file, then the live
/// server's log verifies.
fn verify_url_takes_the_token_from_a_private_file(dir: &Path, base: &str, auditor: &str, key_file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let key_s = key_file.display().to_string();
    // The token from a private file (not on the command line, where `ps` shows it).
    let token_file = dir.join("auditor.token");
    std::fs::write(&token_file, format!("{auditor}\n")).expect("token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let token_s = token_file.display().to_string();
    let (ok, _, err) = kartu(&["audit", "verify", "--url", base, "--token-file", &token_s, "--public-key", &key_s]);
    assert!(!ok && err.contains("readable by group or others") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (ok, out, err) = kartu(&["audit", "verify", "--url", base, "--token-file", &token_s, "--public-key", &key_s]);
    assert!(ok, "verify --url --token-file: {out} {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["entries"], 1);
    assert!(report["leaves"].as_u64().expect("leaves") >= 4, "{report}");
}

/// With another key in `key_file` the checkpoint's signature does not verify; a token that
/// is not an auditor's or operator's cannot read the leaves.
fn verify_url_fails_with_another_key_or_a_token_that_may_not_read(base: &str, auditor: &str, key_file: &Path) {
    let key_s = key_file.display().to_string();
    // Another key: the checkpoint's signature does not verify.
    let other = merkle::Signer::from_pkcs8(
        "kartu.example/log",
        &merkle::Signer::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key"),
    )
    .expect("signer");
    std::fs::write(key_file, format!("{}\n", other.verifier_key())).expect("key");
    let (ok, _, err) = kartu(&["audit", "verify", "--url", base, "--token", auditor, "--public-key", &key_s]);
    assert!(!ok && err.contains("does not verify"), "{err}");
    // A token that is not an auditor's or operator's cannot read the leaves.
    let (ok, _, err) = kartu(&["audit", "verify", "--url", base, "--token", "kt_nope", "--public-key", &key_s]);
    assert!(!ok, "{err}");
}

/// A server process that dies with the test, even when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kill -9` of the server in the middle of an offline upload, then a restart and the same
/// upload again: every offline record is posted exactly once, nothing is lost, the books
/// balance and the audit log verifies.
#[test]
fn offline_upload_survives_kill_9() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("city");
    let data_s = data.display().to_string();
    let (ok, out, err) = kartu(&["init", "--data-dir", &data_s]);
    assert!(ok, "{err}");
    let op = out.trim().to_owned();
    let verifier = err.lines().find_map(|l| l.split("verifier key: ").nth(1)).expect("verifier").to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let (mut server, base) = serve_on_port(&data_s, port);
    let api = Api { agent: ureq::Agent::config_builder().http_status_as_error(false).build().into(), base };
    let key = offline::generate_key().expect("key");
    let mut writer = offline::JournalWriter::new(&key, None).expect("writer");
    let city = a_card_a_till_and_an_auditor(&api, &op, &writer.public_key_hex());
    let records = an_offline_journal(&api, &city.till, &data, &mut writer);
    let body = serde_json::json!({"records": records});
    kill_9_in_the_middle_of_the_upload(&api, &city.till, &body, &mut server);
    // Restart; the terminal sends the whole journal again.
    let (server, base2) = serve_on_port(&data_s, port);
    assert_eq!(base2, api.base);
    the_whole_journal_again_posts_the_rest_once(&api, &city.till, body);
    every_offline_record_is_an_entry_once(&api, &city.auditor);
    the_card_owes_the_shortfall(&api, &op, &city.card);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let key_file = dir.path().join("log.pub");
    std::fs::write(&key_file, format!("{verifier}\n")).expect("key");
    the_log_verifies_through_the_api_then_on_the_database(&api, &city.auditor, &key_file, &data, server);
}

/// How many records the kill -9 test's terminal journals offline, and its card.
const OFFLINE_RECORDS: u32 = 300;
const OFFLINE_UID: &str = "04A1B2C3D4E5A1";

/// `kartu serve` on `port` (checkpoints every 100 ms), its stderr read and dropped; the
/// process and its base URL.
/// Starts `kartu serve` on `listen` (checkpoints every `checkpoint_ms` when given); the process,
/// the address it says it serves on, and the rest of its stderr.
fn spawn_serve(
    data_s: &str,
    listen: &str,
    checkpoint_ms: Option<&str>,
) -> (std::process::Child, String, std::io::Lines<std::io::BufReader<std::process::ChildStderr>>) {
    spawn_serve_with(data_s, listen, checkpoint_ms, &[])
}

/// [`spawn_serve`] with more arguments to `kartu serve`.
fn spawn_serve_with(
    data_s: &str,
    listen: &str,
    checkpoint_ms: Option<&str>,
    more: &[&str],
) -> (std::process::Child, String, std::io::Lines<std::io::BufReader<std::process::ChildStderr>>) {
    use std::io::BufRead;
    let mut command = Command::new(env!("CARGO_BIN_EXE_kartu"));
    command.args(["serve", "--data-dir", data_s, "--listen", listen]).args(more).env("KARTU_LOG", "info");
    if let Some(ms) = checkpoint_ms {
        command.env("KARTU_CHECKPOINT_INTERVAL_MS", ms);
    }
    let mut child =
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("serving on ").nth(1).map(str::to_owned))
        .expect("the server says where it serves");
    (child, base, lines)
}

fn serve_on_port(data_s: &str, port: u16) -> (KillOnDrop, String) {
    let (child, base, lines) = spawn_serve(data_s, &format!("127.0.0.1:{port}"), Some("100"));
    std::thread::spawn(move || lines.for_each(drop));
    (KillOnDrop(child), base)
}

/// A live server's API for the kill -9 test: a request the server did not answer is
/// status 0.
struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    fn post(&self, token: &str, path: &str, key: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        match self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Idempotency-Key", key)
            .send_json(&body)
        {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_json().unwrap_or_default()),
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    /// As [`Api::post`], asserting a 2xx; the answer's body.
    fn ok(&self, token: &str, path: &str, key: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self.post(token, path, key, body);
        assert!((200..300).contains(&r.0), "{r:?}");
        r.1
    }

    /// The sequence number of the terminal's last posted offline record; -1 when the server
    /// does not answer.
    fn offline_head(&self, terminal: &str) -> i64 {
        self.agent
            .get(&format!("{}/v1/offline/head", self.base))
            .header("Authorization", &format!("Bearer {terminal}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
            .and_then(|v| v["seq"].as_i64())
            .unwrap_or(-1)
    }
}

/// The kill -9 test's registry: a card with 2,000.00, the merchant's till (with the
/// journal key `public_key` and offline limits it will not reach) and an auditor.
struct OfflineCity {
    card: String,
    till: String,
    auditor: String,
}

fn a_card_a_till_and_an_auditor(api: &Api, op: &str, public_key: &str) -> OfflineCity {
    let m = api.ok(
        op,
        "/v1/merchants",
        "m",
        serde_json::json!({"name": "Toko", "category": "grocery", "fee_rate": "0.007"}),
    );
    let h =
        api.ok(op, "/v1/holders", "h", serde_json::json!({"name": "A", "nik": "7371010101900009", "categories": []}));
    let c = api.ok(op, "/v1/cards", "c", serde_json::json!({"uid": OFFLINE_UID, "holder_id": h["id"]}));
    let a = api.ok(op, "/v1/agents", "a", serde_json::json!({"name": "Agen"}));
    let float = format!("/v1/agents/{}/float", a["id"].as_str().expect("id"));
    api.ok(op, &float, "f", serde_json::json!({"amount": "1000000.00"}));
    let at = api.ok(
        op,
        "/v1/credentials",
        "ca",
        serde_json::json!({"role": "top_up_agent", "name": "a", "agent_id": a["id"]}),
    );
    let topup = serde_json::json!({"card_id": c["id"], "amount": "2000.00"});
    api.ok(at["token"].as_str().expect("t"), "/v1/topups", "t1", topup);
    let term = api.ok(
        op,
        "/v1/credentials",
        "ct",
        serde_json::json!({"role": "merchant_terminal", "name": "till",
        "merchant_id": m["id"], "public_key": public_key,
        "offline_limits": {"per_tap_minor": 100000, "per_card_per_day_minor": 100000000, "outstanding_minor": 100000000}}),
    );
    let auditor = api.ok(op, "/v1/credentials", "cu", serde_json::json!({"role": "auditor", "name": "u"}));
    OfflineCity {
        card: c["id"].as_str().expect("id").to_owned(),
        till: term["token"].as_str().expect("token").to_owned(),
        auditor: auditor["token"].as_str().expect("token").to_owned(),
    }
}

/// The till syncs before it goes offline (its records name that sync), then journals
/// `OFFLINE_RECORDS` payments of 10.00 + i by genuine taps of the card.
fn an_offline_journal(
    api: &Api,
    till: &str,
    data: &Path,
    writer: &mut offline::JournalWriter,
) -> Vec<offline::SignedRecord> {
    use card::keyfile::KeyFile;
    use card::sun::{encrypt_picc_data, sdm_mac};
    use card::{diversify_card_key, CardUid, ReadCounter};
    // The terminal syncs before it goes offline; its records name that sync.
    let sync: serde_json::Value = api
        .agent
        .get(&format!("{}/v1/offline/deny-list", api.base))
        .header("Authorization", &format!("Bearer {till}"))
        .call()
        .expect("sync")
        .body_mut()
        .read_json()
        .expect("sync json");
    let sync_id = sync["sync_id"].as_u64().expect("sync_id");
    let taken_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as i64;
    // The terminal's offline journal: OFFLINE_RECORDS payments of 10.00 + i.
    let keys = KeyFile::parse(&std::fs::read_to_string(data.join("keys.toml")).expect("keys")).expect("key file");
    let set = keys.newest();
    let uid = CardUid::from_hex(OFFLINE_UID).expect("uid");
    let card_key =
        diversify_card_key(set.sdm_file_read_master_key(), &uid, 2, keys.system_identifier().as_bytes()).expect("div");
    (1..=OFFLINE_RECORDS)
        .map(|i| {
            let ctr = ReadCounter::new(i).expect("ctr");
            writer
                .append(offline::NewRecord {
                    time_us: taken_at + i64::from(i),
                    kind: offline::RecordKind::Payment,
                    uid: OFFLINE_UID.into(),
                    picc_data: hex::encode_upper(encrypt_picc_data(set.sdm_meta_read_key(), &uid, ctr, [0; 5])),
                    cmac: hex::encode_upper(sdm_mac(&card_key, &uid, ctr, &[])),
                    amount_minor: 1_000 + i64::from(i),
                    currency: "IDR".into(),
                    reference: Some(format!("r{i}")),
                    decision: None,
                    sync_id,
                })
                .expect("append")
        })
        .collect()
}

/// Uploads the journal (`body`) in one thread and `kill -9`s the server once 20 records
/// are posted: the upload is cut short.
fn kill_9_in_the_middle_of_the_upload(api: &Api, till: &str, body: &serde_json::Value, server: &mut KillOnDrop) {
    // Upload in one thread; kill -9 the server in the middle.
    let uploader = {
        let (body, base, token) = (body.clone(), api.base.clone(), till.to_owned());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            agent
                .post(&format!("{base}/v1/offline/journals"))
                .header("Authorization", &format!("Bearer {token}"))
                .header("Idempotency-Key", "up-1")
                .send_json(&body)
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    let started = std::time::Instant::now();
    while api.offline_head(till) < 20 && started.elapsed() < std::time::Duration::from_secs(20) {
        assert!(!uploader.is_finished(), "the upload ended before 20 records were posted");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    server.0.kill().expect("kill -9");
    server.0.wait().expect("wait");
    let status = uploader.join().expect("uploader");
    assert_ne!(status, 200, "the upload must have been cut short (it finished before the kill)");
}

/// After the restart the whole journal again posts the records after the cut, and once
/// more posts nothing.
fn the_whole_journal_again_posts_the_rest_once(api: &Api, till: &str, body: serde_json::Value) {
    let cut_at = api.offline_head(till);
    assert!(cut_at >= 20 && cut_at < i64::from(OFFLINE_RECORDS), "cut at {cut_at}");
    let (status, done) = api.post(till, "/v1/offline/journals", "up-2", body.clone());
    assert_eq!(status, 200, "{done}");
    assert_eq!(api.offline_head(till), i64::from(OFFLINE_RECORDS));
    // Again: nothing more.
    let (status, again) = api.post(till, "/v1/offline/journals", "up-3", body);
    assert_eq!((status, again["records"].as_array().map(Vec::len)), (200, Some(0)));
}

/// Exactly once each, read from the auditor's entries.
fn every_offline_record_is_an_entry_once(api: &Api, auditor: &str) {
    let mut seen = std::collections::BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let mut r = api
            .agent
            .get(&format!("{}/v1/audit/entries?limit=1000{cursor}", api.base))
            .header("Authorization", &format!("Bearer {auditor}"))
            .call()
            .expect("entries");
        let page: serde_json::Value = r.body_mut().read_json().expect("json");
        for e in page["entries"].as_array().expect("entries") {
            if let Some(memo) = e["memo"].as_str().and_then(|m| m.strip_prefix("offline record ")) {
                *seen.entry(memo.parse::<u32>().expect("seq")).or_insert(0) += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), OFFLINE_RECORDS as usize, "every record posted");
    assert!(seen.values().all(|n| *n == 1), "none twice: {seen:?}");
}

/// The card held 2,000.00 and the records come to 300 x 10.00 + (1 + ... + 300) x 0.01 =
/// 3,451.50: the card owes the 1,451.50 shortfall, written by the writer with each entry,
/// so the crash left debt and ledger agreeing (the database verification after this
/// recomputes every debt from the entries).
fn the_card_owes_the_shortfall(api: &Api, op: &str, card: &str) {
    let card: serde_json::Value = api
        .agent
        .get(&format!("{}/v1/cards/{card}", api.base))
        .header("Authorization", &format!("Bearer {op}"))
        .call()
        .expect("card")
        .body_mut()
        .read_json()
        .expect("json");
    assert_eq!((card["balance"]["amount"].as_str(), card["owed"]["amount"].as_str()), (Some("0.00"), Some("1451.50")));
}

/// `kartu audit verify` through the API; then, the server killed, on the database itself.
fn the_log_verifies_through_the_api_then_on_the_database(
    api: &Api,
    auditor: &str,
    key_file: &Path,
    data: &Path,
    mut server: KillOnDrop,
) {
    let (ok, out, err) = kartu(&[
        "audit",
        "verify",
        "--url",
        &api.base,
        "--token",
        auditor,
        "--public-key",
        &key_file.display().to_string(),
    ]);
    assert!(ok, "{out} {err}");
    server.0.kill().expect("kill");
    server.0.wait().expect("wait");
    // And the database itself verifies after the crash.
    let (ok, out, err) = kartu(&[
        "audit",
        "verify",
        "--database-url",
        &format!("sqlite://{}", data.join("kartu.db").display()),
        "--public-key",
        &key_file.display().to_string(),
        "--allow-unsigned-tail",
    ]);
    assert!(ok, "{out} {err}");
}

/// `kartu init --operator-name` and `kartu operator add`: with one person nobody can approve
/// a second operator, so the host adds one; its token is printed once, and over the API the
/// two persons approve each other's requests, never their own.
#[test]
fn operator_add_makes_a_second_person() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("city");
    let data_s = data.display().to_string();
    let (ok, out, err) = kartu(&["init", "--data-dir", &data_s, "--operator-name", "Ani"]);
    assert!(ok, "{err}");
    let ani = out.trim().to_owned();
    let (ok, out, err) = kartu(&["operator", "add", "--data-dir", &data_s, "--person", "Budi"]);
    assert!(ok, "{err}");
    let budi = out.trim().to_owned();
    assert!(budi.starts_with("kt_") && out.lines().count() == 1 && budi != ani, "only the token on stdout: {out}");
    assert!(err.contains("\"Budi\""), "{err}");
    let (bad, _, err) = kartu(&["operator", "add", "--data-dir", &data_s, "--person", "  "]);
    assert!(!bad && err.contains("person"), "an empty person is refused: {err}");

    let (mut server, base, _lines) = spawn_serve(&data_s, "127.0.0.1:0", None);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let post = |token: &str, path: &str, key: &str, body: serde_json::Value| -> (u16, serde_json::Value) {
        let mut r = agent
            .post(&format!("{base}{path}"))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Idempotency-Key", key)
            .send_json(&body)
            .expect("post");
        (r.status().as_u16(), r.body_mut().read_json().unwrap_or_default())
    };
    let (status, request) =
        post(&ani, "/v1/credentials", "o1", serde_json::json!({"role": "operator", "name": "c", "person": "Citra"}));
    assert_eq!(status, 202, "{request}");
    assert_eq!(request["requested_person"], "Ani");
    let approve = format!("/v1/approvals/{}/approve", request["id"].as_str().expect("id"));
    let (status, refused) = post(&ani, &approve, "a1", serde_json::json!({}));
    assert_eq!((status, refused["code"].as_str()), (403, Some("second_operator_required")), "{refused}");
    let (status, approved) = post(&budi, &approve, "a2", serde_json::json!({}));
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["decided_person"], "Budi");
    assert!(approved["credential"]["token"].as_str().is_some_and(|t| t.starts_with("kt_")), "{approved}");
    server.kill().expect("stop the server");
    let _ = server.wait();
}

/// A throwaway PostgreSQL database (`KARTU_TEST_POSTGRES_URL`), dropped at the end.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn create(tag: &str) -> PgDb {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let admin = std::env::var("KARTU_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("kartu_cli_{tag}_{}", std::process::id());
        let mut c = diesel::PgConnection::establish(&admin).unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).expect("drop database");
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
        PgDb { url: format!("{base}/{name}"), admin, name }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        if let Ok(mut c) = diesel::PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
            // The serving role `kartu init` makes by default (roles are cluster-wide).
            let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {}_serve", self.name));
        }
    }
}

/// Runs SQL as the database owner.
fn owner_sql(url: &str, sql: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let mut c = diesel::sqlite::SqliteConnection::establish(path).expect("open sqlite");
        c.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    } else {
        let mut c = diesel::PgConnection::establish(url).expect("open postgres");
        c.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A blob literal for either backend.
fn blob(url: &str, bytes: &[u8]) -> String {
    if url.starts_with("sqlite://") {
        format!("X'{}'", hex::encode(bytes))
    } else {
        format!("'\\x{}'::bytea", hex::encode(bytes))
    }
}

/// A `kartu serve` whose stderr lines are collected.
struct Served {
    child: KillOnDrop,
    base: String,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

fn serve_collecting(data: &str, port: u16) -> Served {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kartu"))
        .args(["serve", "--data-dir", data, "--listen", &format!("127.0.0.1:{port}")])
        .env("KARTU_CHECKPOINT_INTERVAL_MS", "100")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut base = None;
    for line in lines.by_ref().map_while(Result::ok) {
        log.lock().expect("log").push(line.clone());
        if let Some(b) = line.split("serving on ").nth(1) {
            base = Some(b.to_owned());
            break;
        }
    }
    let sink = log.clone();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| sink.lock().expect("log").push(l)));
    let base = base.unwrap_or_else(|| panic!("the server did not start: {:?}", log.lock().expect("log")));
    Served { child: KillOnDrop(child), base, log }
}

impl Served {
    fn stop(mut self) {
        let pid = self.child.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let status = self.child.0.wait().expect("wait");
        assert!(status.success(), "serve must stop cleanly: {status}");
    }
}

fn http(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().expect("get");
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
}

/// Waits until the newest checkpoint covers the whole log; returns its note.
fn signed_to_the_end(agent: &ureq::Agent, base: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, ready) = http(agent, &format!("{base}/readyz"), None);
        let size = serde_json::from_str::<serde_json::Value>(&ready).ok().and_then(|v| v["tree_size"].as_u64());
        let (status, note) = http(agent, &format!("{base}/v1/audit/checkpoints/latest"), None);
        if status == 200 && size.is_some_and(|s| note.lines().nth(1) == Some(&s.to_string())) {
            return note;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint covers the log: {ready} {note}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Issue 13: after a day, a database owner deletes the last checkpoints, rewrites a
/// posting and its leaf consistently (journal, leaf, leaf hash, Merkle nodes) and inserts
/// an operator credential straight into the table. The restarted server signs nothing and
/// is not ready, naming the two log tampers; `audit verify` reports the credential with its
/// row (alone: the consistent rewrite passes as "not yet signed"), and with
/// `--trusted-checkpoint` fails naming where the log first differs and reports the
/// credential too; `audit watch` exits non-zero (a rollback). With the data directory's
/// checkpoint file gone too, the server signs the rewritten log, and the watcher calls it a
/// fork.
fn rewritten_history_is_refused(pg: Option<&PgDb>) {
    // The day: floats to an agent, signed in two parts.
    let (h, server) = History::start(pg);
    let day = h.a_day_signed_in_two_parts();
    h.the_signer_keeps_its_last_note_privately(&day.note);
    h.the_auditor_keeps_the_note_and_watches(&day);
    server.stop();

    // The tamper, as the database owner: delete the checkpoints after the early one, and
    // make the last float bigger, in the tables, its leaf, its hash and the tree.
    let mut sql = rewrite_the_last_float(&h.url, pg.is_some(), day.early_size);
    // And an operator credential for someone the API never made, with a token they know.
    let mallory = api::auth::token_hash("kt_mallory-knows-this-token");
    sql.push_str(&format!(
        "INSERT INTO credentials (id, role, name, token_hash, created_at_us, event_id, person) \
         VALUES (9001, 'operator', 'mallory', {}, 0, 900000001, 'mallory');",
        blob(&h.url, &mallory)
    ));
    owner_sql(&h.url, &sql);
    h.verify_reports_the_inserted_credential_alone(&mallory);

    // The restarted server refuses: nothing signed, not ready, the reason named, once.
    let server = serve_collecting(&h.data_s, h.port);
    h.the_restarted_server_signs_nothing(&server, &day);
    h.the_trusted_checkpoint_names_the_first_difference(&day);
    server.stop();

    // An owner of the data directory too deletes the signer's file: the server then
    // trusts the database's newest checkpoint and signs the rewritten log. The watcher,
    // which kept the old one, calls it a fork.
    std::fs::remove_file(h.data.join("checkpoint.latest")).expect("rm");
    let server = serve_collecting(&h.data_s, h.port);
    let resigned = signed_to_the_end(&h.agent, &h.base);
    assert_ne!(resigned, day.early);
    let (ok, out, err) = h.watch();
    assert!(!ok && err.contains("FORK"), "{out} {err}");
    let (ok, _, err) = h.verify_db(&["--trusted-checkpoint", &h.trusted_s]);
    assert!(!ok && err.contains("does not extend the trusted checkpoint") && err.contains(INSERTED), "{err}");
    server.stop();
}

/// What `audit verify` says of the credential inserted by hand.
const INSERTED: &str = r#"credentials row 9001 (role operator, name "mallory") has no create_credential"#;

/// The installation of `rewritten_history_is_refused`, its auditor's files and a client.
struct History {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    data_s: String,
    /// The database URL (as its owner).
    url: String,
    op: String,
    auditor: String,
    key_s: String,
    /// Where the auditor keeps the checkpoint it trusts, and the state of `audit watch`.
    trusted_s: String,
    state: String,
    port: u16,
    agent: ureq::Agent,
    base: String,
    /// The path that puts float on the agent.
    float: String,
}

/// The day's two signed checkpoints (notes) and their tree sizes.
struct Day {
    early: String,
    early_size: i64,
    note: String,
    size: i64,
}

impl History {
    /// `kartu init` (on `pg`, or SQLite), `kartu serve` on a fixed port, an auditor and an
    /// agent.
    fn start(pg: Option<&PgDb>) -> (History, Served) {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("city");
        let data_s = data.display().to_string();
        let mut init = vec!["init", "--data-dir", &data_s];
        if let Some(db) = pg {
            init.extend(["--database-url", &db.url]);
        }
        let (ok, out, err) = kartu(&init);
        assert!(ok, "{err}");
        let op = out.trim().to_owned();
        let url = pg.map_or_else(|| format!("sqlite://{}", data.join("kartu.db").display()), |db| db.url.clone());
        let verifier = err.lines().find_map(|l| l.split("verifier key: ").nth(1)).expect("verifier").to_owned();
        let key_file = dir.path().join("log.pub");
        std::fs::write(&key_file, format!("{verifier}\n")).expect("key");
        let key_s = key_file.display().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let server = serve_collecting(&data_s, port);
        let base = server.base.clone();
        let post = |path: &str, key: &str, body| post_ok(&agent, &base, &op, path, key, body);
        let auditor = post("/v1/credentials", "c1", serde_json::json!({"role": "auditor", "name": "auditor"}));
        let auditor = auditor["token"].as_str().expect("token").to_owned();
        let a = post("/v1/agents", "a1", serde_json::json!({"name": "agent"}));
        let float = format!("/v1/agents/{}/float", a["id"].as_str().expect("id"));
        let trusted_s = dir.path().join("trusted.note").display().to_string();
        let state = dir.path().join("watch.json").display().to_string();
        let h = History { dir, data, data_s, url, op, auditor, key_s, trusted_s, state, port, agent, base, float };
        (h, server)
    }

    fn post(&self, path: &str, key: &str, body: serde_json::Value) -> serde_json::Value {
        post_ok(&self.agent, &self.base, &self.op, path, key, body)
    }

    fn watch(&self) -> (bool, String, String) {
        kartu(&["audit", "watch", "--url", &self.base, "--state", &self.state, "--token", &self.auditor, "--once"])
    }

    /// `kartu audit verify` on the database, with `extra` arguments.
    fn verify_db(&self, extra: &[&str]) -> (bool, String, String) {
        let mut args = vec!["audit", "verify", "--database-url", &self.url, "--public-key", &self.key_s];
        args.extend_from_slice(extra);
        kartu(&args)
    }

    /// Eight floats, four before the early checkpoint and four before the last.
    fn a_day_signed_in_two_parts(&self) -> Day {
        for i in 0..4 {
            self.post(&self.float, &format!("f{i}"), serde_json::json!({"amount": format!("{}.00", 100 + i)}));
        }
        let early = signed_to_the_end(&self.agent, &self.base);
        let early_size: i64 = early.lines().nth(1).and_then(|l| l.parse().ok()).expect("size");
        for i in 4..8 {
            self.post(&self.float, &format!("f{i}"), serde_json::json!({"amount": format!("{}.00", 100 + i)}));
        }
        let note = signed_to_the_end(&self.agent, &self.base);
        let size: i64 = note.lines().nth(1).and_then(|l| l.parse().ok()).expect("size");
        assert!(size > early_size + 3, "{early_size} {size}");
        Day { early, early_size, note, size }
    }

    /// The signer keeps its last note outside the database, privately.
    fn the_signer_keeps_its_last_note_privately(&self, note: &str) {
        use std::os::unix::fs::PermissionsExt;
        let file = self.data.join("checkpoint.latest");
        // The signer stores the checkpoint, then writes the file: it may lag the API by
        // the time an fsync takes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(&file).ok().as_deref() != Some(note) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_to_string(&file).expect("checkpoint.latest"), note);
        assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);
    }

    /// The auditor keeps the note and starts watching; a watcher holding another key sees a
    /// bad signature and saves nothing; the database verifies against the kept note.
    fn the_auditor_keeps_the_note_and_watches(&self, day: &Day) {
        std::fs::write(&self.trusted_s, &day.note).expect("trusted");
        let (ok, out, err) = self.watch();
        assert!(ok && out.contains(&format!("verified: {} leaves", day.size)), "{out} {err}");
        let (ok, out, err) = self.watch();
        assert!(ok && out.contains("unchanged"), "{out} {err}");
        // A watcher holding another key: the server's checkpoint has a bad signature for it.
        let other = merkle::Signer::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key");
        let other = merkle::Signer::from_pkcs8("other.example", &other).expect("signer");
        let other_key = self.dir.path().join("other.pub");
        std::fs::write(&other_key, format!("{}\n", other.verifier_key())).expect("key");
        let other_state = self.dir.path().join("other.json").display().to_string();
        let (ok, out, err) = kartu(&[
            "audit",
            "watch",
            "--url",
            &self.base,
            "--state",
            &other_state,
            "--token",
            &self.auditor,
            "--public-key",
            &other_key.display().to_string(),
            "--once",
        ]);
        assert!(!ok && err.contains("BAD SIGNATURE"), "{out} {err}");
        assert!(!std::path::Path::new(&other_state).exists(), "a failed watch saved a state");
        let (ok, out, err) = self.verify_db(&["--trusted-checkpoint", &self.trusted_s, "--allow-unsigned-tail"]);
        assert!(ok, "{out} {err}");
    }

    /// Without a trusted checkpoint, the rewritten log verifies as "not yet signed"; the
    /// registry check reports the inserted credential with its row, and nothing else.
    fn verify_reports_the_inserted_credential_alone(&self, mallory: &[u8; 32]) {
        let (ok, out, err) = self.verify_db(&["--allow-unsigned-tail"]);
        assert!(!ok, "an inserted credential passed: {out}");
        assert!(
            err.contains("FAILED: 1 registry row(s) differ from their operator-action leaves")
                && err.contains(INSERTED),
            "{err}"
        );
        let findings: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
        assert_eq!(findings.len(), 1, "one finding: {err}");
        assert!(!err.to_lowercase().contains(&hex::encode(mallory)), "the token hash is not printed: {err}");
    }

    /// Not ready, naming both tampers; the refusal counted and logged once; a new entry
    /// gets no checkpoint.
    fn the_restarted_server_signs_nothing(&self, server: &Served, day: &Day) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (status, body) = loop {
            let (status, body) = http(&self.agent, &format!("{}/readyz", self.base), None);
            if status != 200 || std::time::Instant::now() > deadline {
                break (status, body);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let size = day.size;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("checkpoint_refused"), "{body}");
        assert!(body.contains("rewritten") && body.contains(&format!("first {size} leaves")), "{body}");
        assert!(body.contains("deleted") && body.contains(&format!("size {size}")), "{body}");
        let (_, metrics) = http(&self.agent, &format!("{}/metrics", self.base), None);
        assert!(metrics.lines().any(|l| l == "kartu_checkpoint_refused 1"), "{metrics}");
        self.post(&self.float, "f-after", serde_json::json!({"amount": "1.00"}));
        std::thread::sleep(std::time::Duration::from_millis(600));
        let (_, latest) = http(&self.agent, &format!("{}/v1/audit/checkpoints/latest", self.base), None);
        assert_eq!(latest, day.early, "the refusing signer signed something");
        let errors: Vec<String> =
            server.log.lock().expect("log").iter().filter(|l| l.contains("ERROR")).cloned().collect();
        assert_eq!(errors.len(), 1, "one error, once: {errors:?}");
        assert!(errors[0].contains("does not extend the last signed checkpoint"), "{errors:?}");
    }

    /// The auditor's kept checkpoint names where the log first differs, on the database
    /// and through the API; the watcher sees a rollback.
    fn the_trusted_checkpoint_names_the_first_difference(&self, day: &Day) {
        let (early_size, size) = (day.early_size, day.size);
        let (ok, out, err) = self.verify_db(&["--trusted-checkpoint", &self.trusted_s, "--allow-unsigned-tail"]);
        assert!(!ok, "{out}");
        assert!(
            err.contains(&format!("does not extend the trusted checkpoint of size {size}"))
                && err.contains(&format!("first difference is a leaf in {early_size}..={}", size - 1)),
            "{err}"
        );
        assert!(err.contains("and 1 registry row(s) differ") && err.contains(INSERTED), "{err}");
        let (ok, out, err) = kartu(&[
            "audit",
            "verify",
            "--url",
            &self.base,
            "--token",
            &self.auditor,
            "--public-key",
            &self.key_s,
            "--allow-unsigned-tail",
            "--trusted-checkpoint",
            &self.trusted_s,
        ]);
        assert!(!ok && err.contains(&format!("does not extend the trusted checkpoint of size {size}")), "{out} {err}");
        let (ok, out, err) = self.watch();
        assert!(!ok && err.contains("ROLLBACK") && err.contains(&format!("fewer than the {size}")), "{out} {err}");
    }
}

/// The SQL (to run as the owner) that deletes the checkpoints after the early one and makes
/// the last entry (a float) bigger, consistently: in the journal and postings, its leaf, its
/// leaf hash and every Merkle node.
fn rewrite_the_last_float(url: &str, postgres: bool, early_size: i64) -> String {
    let ledger = Ledger::open(url, LedgerConfig::default()).expect("open");
    let last_seq = ledger.last_seq().expect("seq");
    let mut entry = ledger.entry(last_seq).expect("entry").expect("exists");
    let leaf_index = entry.audit.expect("leaf").leaf_index;
    assert!(leaf_index >= early_size, "the rewritten leaf is after the early checkpoint");
    let mut hashes: Vec<merkle::Hash> = Vec::new();
    for page in 0.. {
        let rows = ledger.leaves(page * 1000, 1000).expect("leaves");
        if rows.is_empty() {
            break;
        }
        hashes.extend(rows.iter().map(|r| merkle::leaf_hash(&r.leaf)));
    }
    ledger.shutdown();
    const DELTA: i64 = 100_000_000;
    entry.amount_minor += DELTA;
    for p in &mut entry.postings {
        let d = if p.amount_minor > 0 { DELTA } else { -DELTA };
        p.amount_minor += d;
        p.balance_after_minor += d;
    }
    let leaf = ledger::audit::entry_leaf(&entry);
    hashes[leaf_index as usize] = merkle::leaf_hash(&leaf);
    let tables = ["journal_entries", "postings", "audit_leaves", "merkle_nodes", "checkpoints"];
    let mut sql = String::new();
    for t in tables {
        if postgres {
            sql.push_str(&format!("ALTER TABLE {t} DISABLE TRIGGER USER;"));
        } else {
            sql.push_str(&format!("DROP TRIGGER {t}_no_update; DROP TRIGGER {t}_no_delete;"));
        }
    }
    sql.push_str(&format!("DELETE FROM checkpoints WHERE tree_size > {early_size};"));
    sql.push_str(&format!("UPDATE journal_entries SET amount_minor = {} WHERE seq = {last_seq};", entry.amount_minor));
    for (leg, p) in entry.postings.iter().enumerate() {
        sql.push_str(&format!(
            "UPDATE postings SET amount_minor = {}, balance_after_minor = {} WHERE entry_seq = {last_seq} AND leg = {leg};",
            p.amount_minor, p.balance_after_minor
        ));
    }
    sql.push_str(&format!(
        "UPDATE audit_leaves SET leaf = {}, leaf_hash = {} WHERE leaf_index = {leaf_index};",
        blob(url, &leaf),
        blob(url, &hashes[leaf_index as usize])
    ));
    sql.push_str(&merkle_nodes_sql(url, &hashes));
    sql
}

/// SQL that replaces every stored Merkle node by those of the tree over `hashes`.
fn merkle_nodes_sql(url: &str, hashes: &[merkle::Hash]) -> String {
    let tree = merkle::MemoryTree::from_leaf_hashes(hashes).expect("tree");
    let mut sql = String::from("DELETE FROM merkle_nodes;");
    for level in 4..64u8 {
        for index in 0.. {
            match tree.node(merkle::NodeCoord::new(level, index)) {
                Some(h) => sql.push_str(&format!(
                    "INSERT INTO merkle_nodes (level, idx, hash) VALUES ({level}, {index}, {});",
                    blob(url, &h)
                )),
                None => break,
            }
        }
    }
    sql
}

#[test]
fn rewritten_history_is_refused_on_sqlite() {
    rewritten_history_is_refused(None);
}

#[test]
fn rewritten_history_is_refused_on_postgres() {
    let db = PgDb::create("history");
    rewritten_history_is_refused(Some(&db));
}

/// Issue 13, database roles: `kartu migrate --serve-role` creates the serving role and
/// grants it only what serving needs (and is idempotent); `kartu init --serve-role` writes
/// its URL, with the password, into kartu.toml; `kartu serve` as the tables' owner refuses
/// to start, naming a table and the fix, and starts with --allow-owner; a role granted too
/// much is refused until `kartu migrate` grants it exactly the list again. SQLite has no
/// roles, and says so.
#[test]
fn serving_role_on_postgres() {
    let db = PgDb::create("roles");
    let role = format!("{}_serve", db.name);
    let dir = tempfile::tempdir().expect("dir");
    let password_file = dir.path().join("serve.password");
    std::fs::write(&password_file, "s3cret/p@ss\n").expect("password");
    migrate_makes_the_serving_role_from_a_private_password_file(&db, &role, &password_file);
    the_role_may_only_log_in(&db, &role);
    // Again: nothing to migrate, the role exists, the same grants.
    let (ok, out, err) = kartu(&["migrate", "--database-url", &db.url, "--serve-role", &role]);
    assert!(
        ok && out.contains("0 migration(s) applied") && out.contains(&format!("serving role {role:?}: exists")),
        "{out} {err}"
    );

    let data = dir.path().join("city");
    let token = init_serves_as_the_role(&db, &role, &password_file, &data);
    let server = RoleServer { data_s: data.display().to_string(), token, writes: std::cell::Cell::new(0) };
    the_owner_serves_only_when_allowed(&db, &server);
    grants_changed_by_hand_are_refused_until_migrate(&db, &role, &server);
    // A role that could edit the journal is not made a serving role.
    owner_sql(&db.url, &format!("CREATE ROLE {role}_x LOGIN SUPERUSER"));
    let (ok, _, err) = kartu(&["migrate", "--database-url", &db.url, "--serve-role", &format!("{role}_x")]);
    owner_sql(&db.url, &format!("DROP ROLE {role}_x"));
    assert!(!ok && err.contains("is a superuser"), "{err}");
    // SQLite has no roles.
    let sqlite = format!("sqlite://{}", dir.path().join("k.db").display());
    let (ok, _, err) = kartu(&["migrate", "--database-url", &sqlite, "--serve-role", "kartu_serve"]);
    assert!(!ok && err.contains("SQLite has no database roles"), "{err}");
}

/// `kartu migrate --serve-role` refuses a password file others may read; with a private
/// one it creates the role and says what it may do, never printing the password.
fn migrate_makes_the_serving_role_from_a_private_password_file(db: &PgDb, role: &str, password_file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let pw = password_file.display().to_string();
    // Readable by others: refused.
    std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (ok, _, err) =
        kartu(&["migrate", "--database-url", &db.url, "--serve-role", role, "--serve-password-file", &pw]);
    assert!(!ok && err.contains("readable by group or others"), "{err}");
    std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (ok, out, err) =
        kartu(&["migrate", "--database-url", &db.url, "--serve-role", role, "--serve-password-file", &pw]);
    assert!(ok, "{out} {err}");
    for said in [
        format!("serving role {role:?}: created (LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"),
        "password set".into(),
        "SELECT, INSERT (append only) on accounts, journal_entries, postings, audit_leaves, merkle_nodes, checkpoints"
            .into(),
        "SELECT, UPDATE (last_seq, last_time_us, tree_size) on ledger_head".into(),
        "SELECT, INSERT, UPDATE (last_counter, time_us) on card_counters".into(),
        "SELECT, INSERT, UPDATE (revoked_at_us, revoked_event_id) on credentials".into(),
        "nothing on card_debts".into(),
        "DELETE, TRUNCATE, TRIGGER, REFERENCES on no table".into(),
        format!("serve with: kartu serve --database-url postgres://{role}@"),
    ] {
        assert!(out.contains(&said), "{said:?} in {out}");
    }
    assert!(!out.contains("s3cret"), "the password is not printed: {out}");
}

/// The role, as PostgreSQL has it: it logs in with a password, and is no superuser, makes
/// no roles and bypasses no row security.
fn the_role_may_only_log_in(db: &PgDb, role: &str) {
    #[derive(diesel::QueryableByName)]
    struct Role {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        rolsuper: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        rolcreaterole: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        rolbypassrls: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        rolcanlogin: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        has_password: bool,
    }
    let role_row = || -> Role {
        use diesel::{Connection, RunQueryDsl};
        let mut c = diesel::PgConnection::establish(&db.url).expect("owner");
        diesel::sql_query(
            "SELECT rolsuper, rolcreaterole, rolbypassrls, rolcanlogin, rolpassword IS NOT NULL AS has_password
             FROM pg_authid WHERE rolname = $1::name",
        )
        .bind::<diesel::sql_types::Text, _>(role)
        .get_result(&mut c)
        .expect("the role exists")
    };
    let r = role_row();
    assert!(!r.rolsuper && !r.rolcreaterole && !r.rolbypassrls && r.rolcanlogin && r.has_password);
}

/// `kartu init` on the migrated database, serving as the role, its password in the URL:
/// kartu.toml holds it (escaped), init prints it nowhere. Returns the operator's token.
fn init_serves_as_the_role(db: &PgDb, role: &str, password_file: &Path, data: &Path) -> String {
    let data_s = data.display().to_string();
    let pw = password_file.display().to_string();
    let (ok, out, err) = kartu(&[
        "init",
        "--data-dir",
        &data_s,
        "--database-url",
        &db.url,
        "--serve-role",
        role,
        "--serve-password-file",
        &pw,
    ]);
    assert!(ok, "{err}");
    let token = out.trim().to_owned();
    assert!(!err.contains("s3cret"), "init prints no password: {err}");
    let config = std::fs::read_to_string(data.join("kartu.toml")).expect("config");
    assert!(config.contains(&format!("postgres://{role}:s3cret%2Fp%40ss@")), "{config}");
    assert!(!config.contains("allow_owner"), "{config}");
    let serve_url = api::server::Config::load(data).expect("config").database_url;
    let check = ledger::roles::check_serving(&serve_url).expect("check").expect("postgres");
    assert!(check.is_ok() && check.user == role, "{check:?}");
    token
}

/// The data directory of `serving_role_on_postgres`, served as its operator.
struct RoleServer {
    data_s: String,
    token: String,
    /// How many agents were made so far (each write needs a new idempotency key).
    writes: std::cell::Cell<u32>,
}

impl RoleServer {
    /// Starts `kartu serve` with `extra` arguments, makes an agent through it (a write),
    /// stops it: (created, its log and answer).
    fn started(&self, extra: &[&str]) -> (bool, String) {
        use std::io::BufRead;
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_kartu"))
                .args(["serve", "--data-dir", &self.data_s, "--listen", "127.0.0.1:0"])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("serve"),
        );
        let mut log = String::new();
        for line in std::io::BufReader::new(child.0.stderr.take().expect("stderr")).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
            if let Some(base) = line.split("serving on ").nth(1) {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut r = agent
                    .post(&format!("{base}/v1/agents"))
                    .header("Authorization", &format!("Bearer {}", self.token))
                    .header("Idempotency-Key", &format!("a-{}", self.writes.replace(self.writes.get() + 1)))
                    .send_json(serde_json::json!({"name": "agent"}))
                    .expect("post");
                let body = r.body_mut().read_to_string().unwrap_or_default();
                return (r.status().as_u16() == 201, format!("{log}{body}"));
            }
        }
        (false, log)
    }
}

/// As the owner: refused, naming a table and the fix; with --allow-owner it serves, warned.
/// As the role (kartu.toml): serves, and writes.
fn the_owner_serves_only_when_allowed(db: &PgDb, server: &RoleServer) {
    let data_s = server.data_s.as_str();
    let (ok, _, err) = kartu(&["serve", "--data-dir", data_s, "--listen", "127.0.0.1:0", "--database-url", &db.url]);
    assert!(!ok, "the owner served");
    for said in ["must not serve", "owns the journal table \"accounts\"", "--serve-role", "--allow-owner"] {
        assert!(err.contains(said), "{said:?} in {err}");
    }
    let (ok, log) = server.started(&["--database-url", &db.url, "--allow-owner"]);
    assert!(ok && log.contains("allow_owner"), "the owner serves with --allow-owner, warned: {log}");
    // As the role (kartu.toml): serves, and writes.
    let (ok, log) = server.started(&[]);
    assert!(ok, "{log}");
}

/// The owner grants the role more (TRUNCATE on checkpoints) and takes some away (INSERT
/// on audit_leaves): the server refuses to start, naming both, until `kartu migrate` grants
/// the list again; a table no grant list names stops both.
fn grants_changed_by_hand_are_refused_until_migrate(db: &PgDb, role: &str, server: &RoleServer) {
    let data_s = server.data_s.as_str();
    owner_sql(&db.url, &format!("GRANT TRUNCATE ON checkpoints TO {role}; REVOKE INSERT ON audit_leaves FROM {role};"));
    let (ok, _, err) = kartu(&["serve", "--data-dir", data_s, "--listen", "127.0.0.1:0"]);
    assert!(!ok && err.contains("TRUNCATE on checkpoints") && err.contains("INSERT on audit_leaves"), "{err}");
    // `kartu migrate` as the owner grants every serving role exactly the list again.
    let (ok, out, err) = kartu(&["migrate", "--database-url", &db.url]);
    assert!(ok && out.contains(&format!("serving role {role:?}: exists")), "{out} {err}");
    let (ok, log) = server.started(&[]);
    assert!(ok, "{log}");
    // A table a migration added without saying what the server may do with it: granting
    // refuses, and so does the server.
    owner_sql(&db.url, "CREATE TABLE kartu_unlisted (id BIGSERIAL PRIMARY KEY)");
    let (ok, out, err) = kartu(&["migrate", "--database-url", &db.url]);
    assert!(!ok && err.contains("not classified: table kartu_unlisted, sequence kartu_unlisted_id_seq"), "{out} {err}");
    let (ok, _, err) = kartu(&["serve", "--data-dir", data_s, "--listen", "127.0.0.1:0"]);
    assert!(!ok && err.contains("\"kartu_unlisted\" is not in the serving role's grant list"), "{err}");
    owner_sql(&db.url, "DROP TABLE kartu_unlisted");
}

/// A CA made in the test (rcgen): its PEM, and an issuer for server certificates.
fn test_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("CA").pem();
    (pem, rcgen::Issuer::new(params, key))
}

/// Writes a server certificate for `localhost`/127.0.0.1 signed by `ca`, and its key (0600).
fn install_server_cert(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, cert: &Path, key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
    let key_pair = rcgen::KeyPair::generate().expect("key");
    std::fs::write(cert, params.signed_by(&key_pair, ca).expect("cert").pem()).expect("write cert");
    std::fs::write(key, key_pair.serialize_pem()).expect("write key");
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// GET `url` on a new connection trusting only `ca_file`: the status, or the error.
fn probe(ca_file: &Path, url: &str) -> Result<u16, String> {
    let agent = client::transport::agent(Some(ca_file), Some(std::time::Duration::from_secs(5)))?;
    agent.get(url).call().map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

/// Issue 13, wires nobody can read: `kartu serve` with `tls_cert`/`tls_key` in kartu.toml
/// serves HTTPS; `kartu audit verify --url` and `kartu audit watch --url` trust the CA of
/// `--ca-file` (or KARTU_CA_FILE) and fail with a certificate error naming the way out
/// with another CA or none; SIGHUP after the files are replaced by a certificate of another
/// CA makes new connections see it, and a broken file on SIGHUP is logged and changes
/// nothing.
#[test]
fn serve_over_https_with_sighup_reload_and_ca_file_clients() {
    let dir = tempfile::tempdir().expect("dir");
    let tls = TlsCity::init(dir.path());
    let server = serve_collecting(&tls.data_s, 0);
    let base = server.base.clone();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let agent = client::transport::agent(Some(&tls.ca1_file), None).expect("agent");
    let post = |path: &str, key: &str, body: serde_json::Value| -> serde_json::Value {
        let mut r = agent
            .post(&format!("{base}{path}"))
            .header("Authorization", &format!("Bearer {}", tls.op))
            .header("Idempotency-Key", key)
            .send_json(&body)
            .expect("post over HTTPS");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.body_mut().read_json().expect("json")
    };
    let auditor = post("/v1/credentials", "c1", serde_json::json!({"role": "auditor", "name": "auditor"}));
    let auditor = auditor["token"].as_str().expect("token").to_owned();
    let a = post("/v1/agents", "a1", serde_json::json!({"name": "agent"}));
    let float = format!("/v1/agents/{}/float", a["id"].as_str().expect("id"));
    post(&float, "f1", serde_json::json!({"amount": "50.00"}));
    let note = signed_to_the_end(&agent, &base);
    let size: u64 = note.lines().nth(1).and_then(|l| l.parse().ok()).expect("size");
    assert!(
        server.log.lock().expect("log").iter().any(|l| l.contains("TLS certificate sha256")),
        "the server names its certificate: {:?}",
        server.log.lock().expect("log")
    );

    let clients =
        TlsClients { base: base.clone(), auditor, key_s: tls.key_s.clone(), state: dir.path().join("watch.json") };
    clients.trust_the_ca_file_or_kartu_ca_file(&tls, size);
    clients.refuse_another_ca_or_none_with_a_certificate_error(&tls);
    sighup_serves_the_certificate_of_another_ca(&server, &tls, &clients);
    // A broken file on SIGHUP: logged, and the certificate in use stays.
    std::fs::write(&tls.cert, "not a certificate\n").expect("break");
    let pid = server.child.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.log.lock().expect("log").iter().any(|l| l.contains("the old one stays")) {
        assert!(std::time::Instant::now() < deadline, "no error logged: {:?}", server.log.lock().expect("log"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(probe(&tls.ca2_file, &format!("{base}/healthz")), Ok(200));
    server.stop();
}

/// An installation serving HTTPS with a certificate of a first test CA; a second CA signs
/// the certificate it is given later.
struct TlsCity {
    data_s: String,
    op: String,
    /// The checkpoint verifier key's file.
    key_s: String,
    ca1_file: std::path::PathBuf,
    ca2_file: std::path::PathBuf,
    ca2: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The certificate and key files kartu.toml names.
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl TlsCity {
    /// `kartu init` in `dir/city`, two CAs' files in `dir`, and the operator's set-up: a
    /// certificate in the data directory, named in kartu.toml.
    fn init(dir: &Path) -> TlsCity {
        let data = dir.join("city");
        let data_s = data.display().to_string();
        let (ok, out, err) = kartu(&["init", "--data-dir", &data_s]);
        assert!(ok, "{err}");
        let op = out.trim().to_owned();
        let verifier = err.lines().find_map(|l| l.split("verifier key: ").nth(1)).expect("verifier").to_owned();
        let key_file = dir.join("log.pub");
        std::fs::write(&key_file, format!("{verifier}\n")).expect("key");
        let key_s = key_file.display().to_string();
        let (ca1_pem, ca1) = test_ca("Kartu CLI test CA one");
        let (ca2_pem, ca2) = test_ca("Kartu CLI test CA two");
        let (ca1_file, ca2_file) = (dir.join("ca1.pem"), dir.join("ca2.pem"));
        std::fs::write(&ca1_file, ca1_pem).expect("ca1");
        std::fs::write(&ca2_file, ca2_pem).expect("ca2");
        // The operator's set-up: a certificate in the data directory, named in kartu.toml.
        let (cert, key) = (data.join("tls.crt"), data.join("tls.key"));
        install_server_cert(&ca1, &cert, &key);
        let config = std::fs::read_to_string(data.join("kartu.toml")).expect("config");
        std::fs::write(data.join("kartu.toml"), format!("tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n{config}"))
            .expect("config");
        TlsCity { data_s, op, key_s, ca1_file, ca2_file, ca2, cert, key }
    }

    fn ca1_s(&self) -> String {
        self.ca1_file.display().to_string()
    }

    fn ca2_s(&self) -> String {
        self.ca2_file.display().to_string()
    }
}

/// The auditor's `kartu audit verify --url` and `kartu audit watch --url` against the HTTPS
/// server.
struct TlsClients {
    base: String,
    auditor: String,
    key_s: String,
    /// The watcher's state file.
    state: std::path::PathBuf,
}

impl TlsClients {
    fn verify(&self, extra: &[&str]) -> (bool, String, String) {
        let mut args =
            vec!["audit", "verify", "--url", &self.base, "--token", &self.auditor, "--public-key", &self.key_s];
        args.extend(extra);
        kartu(&args)
    }

    fn watch(&self, ca: Option<&str>) -> (bool, String, String) {
        let state_s = self.state.display().to_string();
        let mut args =
            vec!["audit", "watch", "--once", "--url", &self.base, "--state", &state_s, "--token", &self.auditor];
        if let Some(ca) = ca {
            args.extend(["--ca-file", ca]);
        }
        kartu(&args)
    }

    /// The CA that signed the certificate: both clients work, with --ca-file or with
    /// KARTU_CA_FILE. The log has `size` leaves.
    fn trust_the_ca_file_or_kartu_ca_file(&self, tls: &TlsCity, size: u64) {
        let (ok, out, err) = self.verify(&["--ca-file", &tls.ca1_s()]);
        assert!(ok, "verify over HTTPS: {out} {err}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("report");
        assert_eq!(report["entries"], 1);
        let (ok, out, err) = self.watch(Some(&tls.ca1_s()));
        assert!(ok && out.contains(&format!("verified: {size} leaves")), "watch over HTTPS: {out} {err}");
        // KARTU_CA_FILE does what --ca-file does.
        let state_s = self.state.display().to_string();
        let with_env = Command::new(env!("CARGO_BIN_EXE_kartu"))
            .args(["audit", "watch", "--once", "--url", &self.base, "--state", &state_s, "--token", &self.auditor])
            .env("KARTU_CA_FILE", &tls.ca1_file)
            .output()
            .expect("run kartu");
        let (out, err) = (String::from_utf8_lossy(&with_env.stdout), String::from_utf8_lossy(&with_env.stderr));
        assert!(with_env.status.success() && out.contains("unchanged"), "KARTU_CA_FILE: {out} {err}");
    }

    /// Another CA, or none (the system's roots): a certificate error that says what to do,
    /// and the watcher's state unchanged. A URL that is no URL is said to be one.
    fn refuse_another_ca_or_none_with_a_certificate_error(&self, tls: &TlsCity) {
        let watched = std::fs::read_to_string(&self.state).expect("state");
        for (what, (ok, out, err)) in [
            ("verify, other CA", self.verify(&["--ca-file", &tls.ca2_s()])),
            ("verify, system roots", self.verify(&[])),
            ("watch, other CA", self.watch(Some(&tls.ca2_s()))),
            ("watch, system roots", self.watch(None)),
        ] {
            assert!(!ok, "{what}: {out}");
            assert!(
                err.contains("FAILED")
                    && err.contains("certificate")
                    && err.contains("UnknownIssuer")
                    && err.contains("--ca-file"),
                "{what}: {err}"
            );
        }
        assert_eq!(std::fs::read_to_string(&self.state).expect("state"), watched, "a failed watch changes nothing");
        // A URL that is no URL is said to be one.
        let state_s = self.state.display().to_string();
        let (ok, _, err) =
            kartu(&["audit", "watch", "--once", "--url", "ftp://127.0.0.1:1", "--state", &state_s, "--token", "t"]);
        assert!(!ok && err.contains("unknown scheme"), "{err}");
    }
}

/// SIGHUP with a certificate of the second CA in the files: new connections see it, the
/// old CA no longer verifies it, and `audit verify` works with the new CA.
fn sighup_serves_the_certificate_of_another_ca(server: &Served, tls: &TlsCity, clients: &TlsClients) {
    let base = &server.base;
    install_server_cert(&tls.ca2, &tls.cert, &tls.key);
    let pid = server.child.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while probe(&tls.ca2_file, &format!("{base}/healthz")) != Ok(200) {
        assert!(std::time::Instant::now() < deadline, "the new certificate is not served after SIGHUP");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let old = probe(&tls.ca1_file, &format!("{base}/healthz"));
    assert!(old.as_ref().is_err_and(|e| e.contains("UnknownIssuer")), "the old certificate is still served: {old:?}");
    let (ok, out, err) = clients.verify(&["--ca-file", &tls.ca2_s()]);
    assert!(ok, "verify after the reload: {out} {err}");
}

/// Issue 13: the PostgreSQL URL reaches libpq whole, so `sslmode` and `sslrootcert` in it
/// are honoured: with `sslmode=disable` the migration runs; with `sslmode=verify-full` and
/// a root certificate that did not sign the server's (or a server without TLS), the
/// connection is refused and the error says why.
#[test]
fn postgres_sslmode_in_the_database_url_is_honoured() {
    let db = PgDb::create("sslmode");
    let (ok, out, err) = kartu(&["migrate", "--database-url", &format!("{}?sslmode=disable", db.url)]);
    assert!(ok && out.contains("migration(s) applied"), "{out} {err}");
    let dir = tempfile::tempdir().expect("dir");
    let (ca_pem, _) = test_ca("Not the database's CA");
    let ca = dir.path().join("not-the-db-ca.pem");
    std::fs::write(&ca, ca_pem).expect("ca");
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url, ca.display());
    let (ok, out, err) = kartu(&["migrate", "--database-url", &url]);
    assert!(!ok, "verify-full with a CA that did not sign the server's certificate connected: {out}");
    assert!(err.contains("certificate verify failed") || err.contains("does not support SSL"), "{err}");
}

/// `kartu backup` while float fundings flow, `kartu restore` into a new folder: the archive
/// opens with the `age` tool itself; the restored ledger verifies, holds a gapless prefix of
/// the acknowledged entries and nothing else, its newest checkpoint is the backup's, and
/// `kartu serve` starts on it (the copied `checkpoint.latest` is in the copied database).
#[test]
fn backup_under_load_restores_and_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("city");
    let data_s = data.display().to_string();
    let (token, verifier) = init_prints_the_token_once_and_keeps_the_secrets_private(&data);
    let (server, base) = serve_on_port(&data_s, 0);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let a = post_ok(&agent, &base, &token, "/v1/agents", "a1", serde_json::json!({"name": "agent"}));
    let float_path = format!("/v1/agents/{}/float", a["id"].as_str().expect("id"));
    let key = dir.path().join("backup.key");
    let out =
        Command::new("age-keygen").arg("-o").arg(&key).output().expect("age-keygen (scripts/setup.sh installs age)");
    let recipient =
        String::from_utf8_lossy(&out.stderr).split("Public key: ").nth(1).expect("recipient").trim().to_owned();
    let archive = dir.path().join("city.backup.age");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked: Vec<i64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (agent, base, token, path, stop) = (&agent, &base, &token, &float_path, &stop);
                scope.spawn(move || {
                    let mut seqs = Vec::new();
                    for i in 0.. {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let v = post_ok(
                            agent,
                            base,
                            token,
                            path,
                            &format!("w{w}-{i}"),
                            serde_json::json!({"amount": "10.00"}),
                        );
                        seqs.push(v["entry_seq"].as_i64().expect("entry_seq"));
                    }
                    seqs
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(700));
        let (ok, stdout, err) = kartu(&[
            "backup",
            "--data-dir",
            &data_s,
            "--out",
            &archive.display().to_string(),
            "--recipient",
            &recipient,
        ]);
        assert!(ok && stdout.contains("entries: ") && err.contains("backup written"), "{stdout}{err}");
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    drop(server);
    restored_backup_is_a_prefix_of_the_acknowledged(dir.path(), &archive, &key, &verifier, &acked);
}

fn restored_backup_is_a_prefix_of_the_acknowledged(
    dir: &Path,
    archive: &Path,
    key: &Path,
    verifier: &str,
    acked: &[i64],
) {
    let archive_s = archive.display().to_string();
    let key_s = key.display().to_string();
    // The archive opens with age itself: a city's IT need not trust kartu to read it.
    let listing =
        Command::new("sh").arg("-c").arg(format!("age -d -i '{key_s}' '{archive_s}' | tar -t")).output().expect("age");
    let names = String::from_utf8_lossy(&listing.stdout).to_string();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["MANIFEST.json", "kartu.db", "kartu.toml", "keys.toml", "nik.key", "checkpoint.latest"],
        "{names}"
    );
    let restored = dir.join("restored");
    let restored_s = restored.display().to_string();
    let (ok, stdout, err) = kartu(&["restore", "--in", &archive_s, "--data-dir", &restored_s, "--identity", &key_s]);
    assert!(ok, "{stdout}{err}");
    let entries: i64 =
        stdout.lines().find_map(|l| l.strip_prefix("entries: ")).and_then(|n| n.parse().ok()).expect("entries");
    assert!(
        entries > 0 && (entries as usize) < acked.len(),
        "the backup was taken mid-load: {entries} of {}",
        acked.len()
    );
    let mut sorted = acked.to_vec();
    sorted.sort_unstable();
    assert_eq!(
        &sorted[..entries as usize],
        (1..=entries).collect::<Vec<_>>().as_slice(),
        "a gapless prefix, all acknowledged"
    );
    let pub_file = dir.join("log.pub");
    std::fs::write(&pub_file, format!("{verifier}\n")).expect("key");
    let url = format!("sqlite://{}", restored.join("kartu.db").display());
    let pub_s = pub_file.display().to_string();
    let trusted = restored.join("checkpoint.latest").display().to_string();
    // A copy taken mid-load ends with leaves no checkpoint signed yet; it extends the
    // signer's last checkpoint, which the backup carries.
    let verify = ["audit", "verify", "--database-url", &url, "--public-key", &pub_s, "--trusted-checkpoint", &trusted];
    let (ok, out, err) = kartu(&[&verify[..], &["--allow-unsigned-tail"]].concat());
    assert!(ok, "the restored ledger verifies: {out}{err}");
    let checkpoint = stdout.lines().find_map(|l| l.strip_prefix("latest checkpoint: ")).expect("checkpoint").to_owned();
    let file = std::fs::read_to_string(&trusted).expect("checkpoint.latest");
    assert!(
        file.lines().nth(1).and_then(|s| s.parse::<i64>().ok()) <= checkpoint.parse().ok(),
        "{file} vs {checkpoint}"
    );
    // It serves, and its signer signs the tail with the city's key.
    let (server, base) = serve_on_port(&restored_s, 0);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let ready = agent.get(&format!("{base}/readyz")).call().expect("readyz");
    assert_eq!(ready.status(), 200, "the restored installation serves");
    std::thread::sleep(std::time::Duration::from_millis(600));
    drop(server);
    let (ok, out, err) = kartu(&verify);
    assert!(ok, "every leaf of the restored ledger is signed now: {out}{err}");
    restore_refuses_bad_input(dir, archive, key, &restored_s);
}

/// Bad input: the wrong identity, a folder that is not empty, a recipient that is not one.
fn restore_refuses_bad_input(dir: &Path, archive: &Path, key: &Path, restored_s: &str) {
    let (archive_s, key_s) = (archive.display().to_string(), key.display().to_string());
    let other = dir.join("other.key");
    assert!(Command::new("age-keygen").arg("-o").arg(&other).output().expect("age-keygen").status.success());
    let fresh = dir.join("fresh").display().to_string();
    let (ok, _, err) =
        kartu(&["restore", "--in", &archive_s, "--data-dir", &fresh, "--identity", &other.display().to_string()]);
    assert!(!ok && err.contains("none of these identities"), "{err}");
    let (ok, _, err) = kartu(&["restore", "--in", &archive_s, "--data-dir", restored_s, "--identity", &key_s]);
    assert!(!ok && err.contains("is not empty"), "{err}");
    let (ok, _, err) = kartu(&["backup", "--data-dir", restored_s, "--out", &archive_s, "--recipient", "age1x"]);
    assert!(!ok && err.contains("recipient"), "{err}");
}

/// PostgreSQL's procedure (docs/OPERATIONS.md, "Back up and restore"): a day's database
/// dumped with `pg_dump` while `kartu serve` writes, restored with `pg_restore` into a new
/// database, verifies with the city's key and holds only acknowledged entries, gapless;
/// `kartu backup` refuses a PostgreSQL installation and names the procedure.
#[test]
fn postgres_dump_restores_and_verifies() {
    let (src, dst) = (PgDb::create("dump"), PgDb::create("restored"));
    let dir = tempfile::tempdir().expect("dir");
    let data_s = dir.path().join("city").display().to_string();
    let (ok, token, err) = kartu(&["init", "--data-dir", &data_s, "--database-url", &src.url]);
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    let verifier = err.lines().find_map(|l| l.split("verifier key: ").nth(1)).expect("verifier key line").to_owned();
    let (server, base) = serve_on_port(&data_s, 0);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let a = post_ok(&agent, &base, &token, "/v1/agents", "a1", serde_json::json!({"name": "agent"}));
    let path = format!("/v1/agents/{}/float", a["id"].as_str().expect("id"));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked: Vec<i64> = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut seqs = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || seqs.len() < 20 {
                let key = format!("f{}", seqs.len());
                let v = post_ok(&agent, &base, &token, &path, &key, serde_json::json!({"amount": "10.00"}));
                seqs.push(v["entry_seq"].as_i64().expect("entry_seq"));
            }
            seqs
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        // pg_dump's snapshot is one transaction: what it holds is consistent.
        let dump = dir.path().join("city.dump");
        let out = Command::new("pg_dump").args(["-Fc", "-f"]).arg(&dump).arg(&src.url).output().expect("pg_dump");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let out = Command::new("pg_restore")
            .args(["--no-owner", "--no-privileges", "-d", &dst.url])
            .arg(&dump)
            .output()
            .expect("pg_restore");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        writer.join().expect("writer")
    });
    drop(server);
    let pub_file = dir.path().join("log.pub");
    std::fs::write(&pub_file, format!("{verifier}\n")).expect("key");
    let pub_s = pub_file.display().to_string();
    let (ok, out, err) =
        kartu(&["audit", "verify", "--database-url", &dst.url, "--public-key", &pub_s, "--allow-unsigned-tail"]);
    assert!(ok, "the restored database verifies: {out}{err}");
    let entries: i64 = out
        .strip_prefix("OK: ")
        .and_then(|r| r.split(" entries").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the report: {out}"));
    assert!(entries > 0 && (entries as usize) < acked.len(), "a copy taken mid-load: {entries} of {}", acked.len());
    assert_eq!(&acked[..entries as usize], (1..=entries).collect::<Vec<_>>().as_slice(), "only acknowledged entries");
    let (ok, _, err) = kartu(&["backup", "--data-dir", &data_s, "--out", "/tmp/x.age", "--recipient", "age1x"]);
    assert!(!ok && err.contains("PostgreSQL") && err.contains("pg_dump"), "{err}");
}

/// Issue 17: `kartu audit rotate-key`. A city day signed by the first key; the servers
/// stopped; the rotation (and, after a crash between recording it and writing the key
/// file, the same rotation finished by a second run); the day goes on under the new key.
/// The public key history, `audit watch` (one state across the rotation), `audit verify`
/// through the API and on the database all follow the rotation from the first key; a
/// server still holding the old key signs nothing past the rotation.
#[test]
fn checkpoint_key_rotation_is_followed() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("city");
    let data_s = data.display().to_string();
    let (token, first_key) = init_prints_the_token_once_and_keeps_the_secrets_private(&data);
    let key_file = dir.path().join("first.pub");
    std::fs::write(&key_file, format!("{first_key}\n")).expect("key");
    let key_s = key_file.display().to_string();
    let state_s = dir.path().join("watch.json").display().to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();

    let (server, base) = serve_on_port(&data_s, 0);
    let auditor =
        post_ok(&agent, &base, &token, "/v1/credentials", "c1", serde_json::json!({"role": "auditor", "name": "a"}));
    let auditor = auditor["token"].as_str().expect("token").to_owned();
    let a = post_ok(&agent, &base, &token, "/v1/agents", "a1", serde_json::json!({"name": "agent"}));
    let float_path = format!("/v1/agents/{}/float", a["id"].as_str().expect("id"));
    post_ok(&agent, &base, &token, &float_path, "f1", serde_json::json!({"amount": "100.00"}));
    let before = signed_to_the_end(&agent, &base);
    let watch = || kartu(&["audit", "watch", "--url", &base, "--state", &state_s, "--token", &auditor, "--once"]);
    let (ok, out, err) = watch();
    assert!(ok && out.contains("verified"), "{out}{err}");
    stop(server);

    let (rotated, old_keys) = rotate_then_finish_after_a_crash(&data, &first_key);
    let (new_key, leaf) = (rotated["new_key"].as_str().expect("new key").to_owned(), rotated["rotation_leaf"].clone());
    let size_before: i64 = before.lines().nth(1).expect("size").parse().expect("size");
    assert_eq!(leaf, size_before, "the rotation leaf follows the last checkpoint of the old key");

    // The same port, so that the watcher's URL still serves.
    let port = base.rsplit(':').next().expect("port").parse().expect("port");
    let (server, base) = serve_on_port(&data_s, port);
    post_ok(&agent, &base, &token, &float_path, "f2", serde_json::json!({"amount": "50.00"}));
    let after = signed_to_the_end(&agent, &base);
    the_key_history_is_served(&agent, &base, (&first_key, &new_key), size_before, (&before, &after));

    let (ok, out, err) = watch();
    assert!(
        ok && out.contains(&format!("key rotation at leaf {leaf}: {new_key}")) && out.contains("verified"),
        "{out}{err}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_s).expect("state")).expect("json");
    assert_eq!(state["verifier_key"], new_key.as_str());
    let (ok, out, err) = kartu(&["audit", "verify", "--url", &base, "--token", &auditor, "--public-key", &key_s]);
    assert!(ok, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["keys"][1]["key"], new_key.as_str(), "{report}");
    stop(server);
    let db = format!("sqlite://{}", data.join("kartu.db").display());
    let (ok, out, err) = kartu(&["audit", "verify", "--database-url", &db, "--public-key", &key_s]);
    assert!(ok && out.contains(&format!("key rotation at leaf {leaf}: {new_key} signs from tree size")), "{out}{err}");
    // Starting from the new key, the old checkpoints do not verify: the chain starts at the first.
    let new_file = dir.path().join("new.pub");
    std::fs::write(&new_file, format!("{new_key}\n")).expect("key");
    let (ok, _, err) =
        kartu(&["audit", "verify", "--database-url", &db, "--public-key", &new_file.display().to_string()]);
    assert!(!ok && err.contains("does not verify with the key in force"), "{err}");
    a_server_with_the_old_key_signs_nothing(&data, &old_keys, &agent, &token, &float_path);
}

/// `/v1/audit/public-key` serves the new key, `/v1/audit/public-keys` the history; the
/// checkpoint before the rotation verifies with the first key only, the one after with the
/// new key only.
fn the_key_history_is_served(
    agent: &ureq::Agent,
    base: &str,
    (first_key, new_key): (&str, &str),
    size_before: i64,
    (before, after): (&str, &str),
) {
    let (_, served) = http(agent, &format!("{base}/v1/audit/public-key"), None);
    assert_eq!(served.trim(), new_key);
    let (status, history) = http(agent, &format!("{base}/v1/audit/public-keys"), None);
    let history: serde_json::Value = serde_json::from_str(&history).expect("json");
    assert_eq!(status, 200);
    assert_eq!(history["current"], new_key);
    assert_eq!(history["keys"][0]["key"], first_key);
    assert_eq!(history["keys"][0]["from_tree_size"], 1);
    assert_eq!(history["keys"][1]["key"], new_key);
    assert_eq!(history["keys"][1]["rotation_leaf"], size_before);
    assert_eq!(history["keys"][1]["from_tree_size"], size_before + 1);
    let new_v = merkle::Verifier::parse(new_key).expect("new");
    let first_v = merkle::Verifier::parse(first_key).expect("first");
    assert!(new_v.open(after).is_ok() && first_v.open(after).is_err());
    assert!(first_v.open(before).is_ok() && new_v.open(before).is_err());
}

/// `kartu audit rotate-key`, then the state a crash after the rotation leaf leaves (the old
/// key file, no history, the new key pending) and a second run: it finishes the same
/// rotation without recording another. Returns the first run's report and the key file
/// from before.
fn rotate_then_finish_after_a_crash(data: &Path, first_key: &str) -> (serde_json::Value, String) {
    let data_s = data.display().to_string();
    let old_keys = std::fs::read_to_string(data.join("keys.toml")).expect("keys");
    let (ok, out, err) = kartu(&["audit", "rotate-key", "--data-dir", &data_s]);
    assert!(ok, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["previous_key"], first_key);
    assert_eq!(report["recorded_now"], true);
    let new_key = report["new_key"].as_str().expect("new key").to_owned();
    let history = std::fs::read_to_string(data.join("checkpoint.keys")).expect("history");
    assert_eq!(history, format!("{first_key}\n{new_key}\n"));
    assert!(!data.join("checkpoint.pending.key").exists());
    let new_keys = std::fs::read_to_string(data.join("keys.toml")).expect("keys");
    assert_ne!(new_keys, old_keys);
    // The crash: back to the old key file, the new secret only in the pending file.
    let pkcs8 = new_keys.split("ed25519_pkcs8 = \"").nth(1).and_then(|s| s.split('"').next()).expect("new secret");
    std::fs::write(data.join("checkpoint.pending.key"), format!("{pkcs8}\n")).expect("pending");
    std::fs::write(data.join("keys.toml"), &old_keys).expect("old keys");
    std::fs::remove_file(data.join("checkpoint.keys")).expect("history");
    let (ok, out, err) = kartu(&["audit", "rotate-key", "--data-dir", &data_s]);
    assert!(ok, "{out}{err}");
    let again: serde_json::Value = serde_json::from_str(&out).expect("report");
    assert_eq!(
        (again["recorded_now"].clone(), again["new_key"].clone()),
        (serde_json::json!(false), report["new_key"].clone())
    );
    assert_eq!(again["rotation_leaf"], report["rotation_leaf"]);
    assert_eq!(std::fs::read_to_string(data.join("keys.toml")).expect("keys"), new_keys);
    assert_eq!(std::fs::read_to_string(data.join("checkpoint.keys")).expect("history"), history);
    (report, old_keys)
}

/// A server started with the key file from before the rotation (a process not restarted,
/// or a stolen old key): it signs nothing past the rotation and is not ready, naming the
/// key the log put in force.
fn a_server_with_the_old_key_signs_nothing(
    data: &Path,
    old_keys: &str,
    agent: &ureq::Agent,
    token: &str,
    float_path: &str,
) {
    let data_s = data.display().to_string();
    let new_keys = std::fs::read_to_string(data.join("keys.toml")).expect("keys");
    let history = std::fs::read_to_string(data.join("checkpoint.keys")).expect("history");
    let new_v = merkle::Verifier::parse(history.lines().nth(1).expect("new")).expect("key");
    std::fs::write(data.join("keys.toml"), old_keys).expect("keys");
    let (server, base) = serve_on_port(&data_s, 0);
    post_ok(agent, &base, token, float_path, "f3", serde_json::json!({"amount": "1.00"}));
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (status, body) = http(agent, &format!("{base}/readyz"), None);
    assert!(
        status == 503 && body.contains("checkpoint_refused") && body.contains("this signer holds"),
        "{status} {body}"
    );
    let (_, note) = http(agent, &format!("{base}/v1/audit/checkpoints/latest"), None);
    assert!(new_v.open(&note).is_ok(), "the newest checkpoint is still the new key's: {note}");
    stop(server);
    std::fs::write(data.join("keys.toml"), new_keys).expect("keys");
}

/// SIGTERM, and the server exits cleanly.
fn stop(server: KillOnDrop) {
    let mut server = server;
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    assert!(server.0.wait().expect("wait").success());
}

/// `kartu ledger export --format csv`: the header, then one row per posting of every entry
/// in sequence order, the amounts as the ledger holds them (a top-up and three payments
/// with a fee: 2 + 3 × 3 rows), each row as wide as the header.
#[test]
fn ledger_export_writes_the_journal_as_csv() {
    let dir = tempfile::tempdir().expect("dir");
    let (url, _) = signed_ledger(dir.path());
    let (ok, out, err) = kartu(&["ledger", "export", "--format", "csv", "--database-url", &url]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], ledger::export::JOURNAL_HEADER.trim_end());
    assert_eq!(lines.len(), 1 + 2 + 3 * 3, "{out}");
    let width = lines[0].split(',').count();
    assert!(lines.iter().all(|l| l.split(',').count() == width), "{out}");
    let seqs: Vec<&str> = lines[1..].iter().map(|l| l.split(',').next().unwrap_or("")).collect();
    assert_eq!(seqs, ["1", "1", "2", "2", "2", "3", "3", "3", "4", "4", "4"]);
    // The top-up: 1000.00 into the wallet, out of the city bank.
    let amounts: Vec<&str> = lines[1..3].iter().map(|l| l.split(',').nth(4).unwrap_or("")).collect();
    assert!(amounts.contains(&"1000.00") && amounts.contains(&"-1000.00"), "{amounts:?}");
    let (ok, _, err) = kartu(&["ledger", "export", "--format", "xlsx", "--database-url", &url]);
    assert!(!ok && err.contains("xlsx"), "{err}");
    let (ok, out, _) = kartu(&["ledger", "export", "--from-seq", "4", "--database-url", &url]);
    assert!(ok && out.split("\r\n").filter(|l| !l.is_empty()).count() == 1 + 3, "{out}");
}

/// A throwaway primary (initdb, trust) and a streaming replica of it made with
/// `pg_basebackup -R`, each on a free port, as the postgres user; both stopped on drop.
struct Replicated {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    primary: u16,
    replica: u16,
}

impl Replicated {
    fn start() -> Replicated {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries (scripts/setup.sh)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("pg_basebackup").exists())
            .max()
            .expect("pg_basebackup");
        let dir = tempfile::tempdir().expect("dir");
        assert!(Command::new("chown")
            .args(["postgres", &dir.path().display().to_string()])
            .status()
            .expect("chown")
            .success());
        let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let (primary, replica) = (free(), free());
        let r = Replicated { dir, bin, primary, replica };
        let (p, d) = (r.path("primary"), r.dir.path().display().to_string());
        r.run("initdb", &["-D", &p, "-A", "trust", "-U", "postgres"]);
        r.start_cluster(&p, primary);
        let port = primary.to_string();
        let rd = r.path("replica");
        r.run("pg_basebackup", &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D", &rd, "-R", "-X", "stream"]);
        r.start_cluster(&rd, replica);
        let _ = d;
        r
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .expect(tool);
        assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn start_cluster(&self, data: &str, port: u16) {
        let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", self.dir.path().display());
        let log = format!("{data}.log");
        self.run("pg_ctl", &["-D", data, "-o", &opts, "-l", &log, "-w", "start"]);
    }

    fn sql(&self, port: u16, db: &str, sql: &str) -> String {
        let url = format!("postgres://postgres@127.0.0.1:{port}/{db}");
        let out = Command::new("psql").args([&url, "-Atc", sql]).output().expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        for name in ["replica", "primary"] {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &self.path(name), "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Issue 17: `kartu serve --read-database-url` on a real streaming replica. With the
/// replica's replay paused, a new entry is on the primary (its receipt is served) but not in
/// the auditor's journal (served by the replica), `/metrics` shows the lag, and the
/// replica has the server's connections; resumed, the journal catches up and the lag is 0.
/// `kartu audit verify --url` passes.
#[test]
fn reports_are_read_from_a_streaming_replica() {
    let pg = Replicated::start();
    pg.sql(pg.primary, "postgres", "CREATE DATABASE city");
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("city");
    let data_s = data.display().to_string();
    let owner = format!("postgres://postgres@127.0.0.1:{}/city", pg.primary);
    let (ok, out, err) = kartu(&["init", "--data-dir", &data_s, "--database-url", &owner]);
    assert!(ok, "{err}");
    let (token, verifier) =
        (out.trim().to_owned(), err.lines().find_map(|l| l.split("verifier key: ").nth(1)).expect("key").to_owned());
    let serve_url = api::server::Config::load(&data).expect("config").database_url;
    let read_url = serve_url.replace(&format!(":{}/", pg.primary), &format!(":{}/", pg.replica));
    assert_ne!(read_url, serve_url);
    let (server, base, lines) =
        spawn_serve_with(&data_s, "127.0.0.1:0", Some("100"), &["--read-database-url", &read_url]);
    std::thread::spawn(move || lines.for_each(drop));
    let server = KillOnDrop(server);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let auditor =
        post_ok(&agent, &base, &token, "/v1/credentials", "c1", serde_json::json!({"role": "auditor", "name": "a"}));
    let auditor = auditor["token"].as_str().expect("token").to_owned();
    let a = post_ok(&agent, &base, &token, "/v1/agents", "a1", serde_json::json!({"name": "agent"}));
    let float_path = format!("/v1/agents/{}/float", a["id"].as_str().expect("id"));
    let first = post_ok(&agent, &base, &token, &float_path, "f1", serde_json::json!({"amount": "100.00"}));
    let journal = |seq: i64| {
        let (_, body) = http(&agent, &format!("{base}/v1/audit/entries?limit=1000"), Some(&auditor));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["entries"].as_array().is_some_and(|e| e.iter().any(|x| x["entry_seq"] == seq))
    };
    let wait_for = |what: &dyn Fn() -> bool, why: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !what() {
            assert!(std::time::Instant::now() < deadline, "{why}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_for(&|| journal(first["entry_seq"].as_i64().expect("seq")), "the replica never showed the first float");
    the_replica_serves_the_reports(&pg, &agent, &base, (&token, &auditor), &float_path, &journal);
    let key_file = dir.path().join("city.pub");
    std::fs::write(&key_file, format!("{verifier}\n")).expect("key");
    signed_to_the_end(&agent, &base);
    let key_s = key_file.display().to_string();
    let (ok, out, err) = kartu(&[
        "audit",
        "verify",
        "--url",
        &base,
        "--token",
        &auditor,
        "--public-key",
        &key_s,
        "--allow-unsigned-tail",
    ]);
    assert!(ok, "{out}{err}");
    stop(server);
}

/// Replay paused: the new entry's receipt comes from the primary, the journal (replica)
/// lacks it, the lag shows; resumed: the journal has it and the lag is 0.
fn the_replica_serves_the_reports(
    pg: &Replicated,
    agent: &ureq::Agent,
    base: &str,
    (token, auditor): (&str, &str),
    float_path: &str,
    journal: &dyn Fn(i64) -> bool,
) {
    let backends = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'city' AND backend_type = 'client backend'";
    assert_ne!(pg.sql(pg.replica, "postgres", backends), "0", "the server has no connection to the replica");
    assert_ne!(pg.sql(pg.primary, "postgres", backends), "0", "the server has no connection to the primary");
    pg.sql(pg.replica, "postgres", "SELECT pg_wal_replay_pause()");
    let second = post_ok(agent, base, token, float_path, "f2", serde_json::json!({"amount": "50.00"}));
    let seq = second["entry_seq"].as_i64().expect("seq");
    let receipt = format!("{base}/v1/receipts/{seq}?h={}", second["leaf_hash"].as_str().expect("hash"));
    assert_eq!(http(agent, &receipt, None).0, 200, "the receipt comes from the primary");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!journal(seq), "the journal came from the primary while the replica was paused");
    let metric = |name: &str| {
        let (_, m) = http(agent, &format!("{base}/metrics"), None);
        m.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap_or(-1.0)
    };
    assert!(metric("kartu_replica_lag_bytes") > 0.0, "no lag in /metrics while paused");
    pg.sql(pg.replica, "postgres", "SELECT pg_wal_replay_resume()");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !journal(seq) || metric("kartu_replica_lag_bytes") != 0.0 {
        assert!(std::time::Instant::now() < deadline, "the replica did not catch up");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(metric("kartu_replica_lag_seconds"), 0.0);
    let _ = auditor;
}
