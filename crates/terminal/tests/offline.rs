//! The terminal against a real server (in-process actix on a random port, SQLite): online
//! payments; the server goes away and the POS takes payments offline within its limits;
//! the server comes back and the journal is posted exactly once, a shortfall goes to the
//! offline-risk account and puts the card on the deny list; a tampered journal is refused
//! with a clear error and the good records before the damage are kept. Over HTTPS (a CA
//! made in the test): the terminal pays with the CA trusted; with another CA, a plain-HTTP
//! URL or an unknown scheme it refuses with an error that says so and journals nothing.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use card::keyfile::KeyFile;
use card::{CardUid, ReadCounter};
use serde_json::{json, Value};
use terminal::{CardRead, Config, Mode, Terminal};

const UID: &str = "04A1B2C3D4E501";

struct Server {
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

fn start(data: &Path, listener: TcpListener) -> Server {
    let loaded = api::server::load(data, None).expect("load");
    let (tx, rx) = std::sync::mpsc::channel();
    let state = loaded.state.clone();
    let thread = std::thread::spawn(move || {
        let s2 = state.clone();
        actix_web::rt::System::new().block_on(async move {
            let server = api::server::server(s2, listener, 2).expect("server");
            tx.send(server.handle()).expect("handle");
            server.await.expect("serve");
        });
        state.ledger.shutdown();
    });
    Server { handle: rx.recv().expect("handle"), thread }
}

fn stop(s: Server) {
    actix_web::rt::System::new().block_on(s.handle.stop(true));
    s.thread.join().expect("server thread");
}

fn tap(keys: &KeyFile, counter: u32) -> CardRead {
    tap_of(keys, UID, counter)
}

fn tap_of(keys: &KeyFile, uid: &str, counter: u32) -> CardRead {
    let card = CardUid::from_hex(uid).expect("uid");
    let made = keys.make_tap(&card, ReadCounter::new(counter).expect("counter"), [0; 5]).expect("tap");
    CardRead {
        uid: uid.into(),
        picc_data: hex::encode_upper(made.picc_data()),
        cmac: hex::encode_upper(made.sdm_mac()),
    }
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn send(&self, method: &str, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {token}");
        let mut r = match body {
            Some(b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Idempotency-Key", &format!("k{}", rand_key()))
                .send_json(&b)
                .expect("post"),
            None if method == "GET" => self.agent.get(&url).header("Authorization", &auth).call().expect("get"),
            None => panic!("no body"),
        };
        (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
    }
    fn ok(&self, token: &str, path: &str, body: Value) -> Value {
        let (status, v) = self.send("POST", token, path, Some(body));
        assert!((200..300).contains(&status), "{path}: {status} {v}");
        v
    }
}

fn rand_key() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A fresh installation served on a random port: the first operator's token, the card keys
/// and a client.
struct Stage {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    op: String,
    keys: KeyFile,
    addr: std::net::SocketAddr,
    server: Server,
    http: Http,
}

impl Stage {
    fn new() -> Stage {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("city");
        let op = api::server::init(&data, None, "KARTU-MKS").expect("init").operator_token;
        let keys = KeyFile::parse(&std::fs::read_to_string(data.join("keys.toml")).expect("keys")).expect("key file");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = start(&data, listener);
        let http = Http {
            agent: ureq::Agent::config_builder().http_status_as_error(false).build().into(),
            base: format!("http://{addr}"),
        };
        Stage { dir, data, op, keys, addr, server, http }
    }
}

/// A terminal of the plain-HTTP tests, keeping its files in `data_dir`.
fn config(mode: Mode, addr: std::net::SocketAddr, data_dir: &Path, token: &str) -> Config {
    Config {
        mode,
        server: format!("http://{addr}"),
        token: token.to_owned(),
        data_dir: data_dir.to_owned(),
        currency: "IDR".into(),
        timeout: Duration::from_millis(500),
        ca_file: None,
        validator: terminal::ValidatorSettings::default(),
    }
}

/// What the POS tests start with: a merchant without fees, and Ani's card ([`UID`]) with
/// 50.00 topped up by an agent; returns the merchant, the card and the agent's token.
fn a_merchant_and_a_card_with_50(http: &Http, op: &str) -> (Value, Value, String) {
    let merchant = http.ok(op, "/v1/merchants", json!({"name": "Warung", "category": "grocery", "fee_rate": "0"}));
    let holder =
        http.ok(op, "/v1/holders", json!({"name": "Ani", "nik": "7371010101900001", "categories": ["resident"]}));
    let card = http.ok(op, "/v1/cards", json!({"uid": UID, "holder_id": holder["id"]}));
    let agent_token = an_agent_with_float(http, op);
    http.ok(&agent_token, "/v1/topups", json!({"card_id": card["id"], "amount": "50.00"}));
    (merchant, card, agent_token)
}

/// A top-up agent with 1,000.00 of float; its counter's token.
fn an_agent_with_float(http: &Http, op: &str) -> String {
    let agent = http.ok(op, "/v1/agents", json!({"name": "Agen"}));
    http.ok(op, &format!("/v1/agents/{}/float", agent["id"].as_str().expect("id")), json!({"amount": "1000.00"}));
    http.ok(op, "/v1/credentials", json!({"role": "top_up_agent", "name": "a", "agent_id": agent["id"]}))["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// The token of a new merchant terminal credential for the till whose journal key is
/// `public_key`, with these offline limits.
fn till_token(http: &Http, op: &str, name: &str, merchant: &Value, public_key: &str, limits: Value) -> String {
    http.ok(
        op,
        "/v1/credentials",
        json!({"role": "merchant_terminal", "name": name, "merchant_id": merchant["id"],
        "public_key": public_key, "offline_limits": limits}),
    )["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

fn auditor_token(http: &Http, op: &str) -> String {
    http.ok(op, "/v1/credentials", json!({"role": "auditor", "name": "aud"}))["token"].as_str().expect("t").to_owned()
}

/// How many entries of the journal are posted offline records.
fn offline_entries(http: &Http, auditor: &str) -> usize {
    let (_, entries) = http.send("GET", auditor, "/v1/audit/entries?limit=1000", None);
    entries["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["memo"].as_str().is_some_and(|m| m.starts_with("offline")))
        .count()
}

#[test]
fn offline_payments_are_posted_once_and_shortfalls_deny_the_card() {
    let Stage { dir, data, op, keys, addr, server, http } = Stage::new();
    let (merchant, card, agent_token) = a_merchant_and_a_card_with_50(&http, &op);
    let term_dir = dir.path().join("pos");
    let public_key =
        Terminal::open(config(Mode::Pos, addr, &term_dir, "kt_placeholder")).expect("terminal").public_key_hex();
    let limits = json!({"per_tap_minor": 5_000, "per_card_per_day_minor": 8_000, "outstanding_minor": 20_000});
    let pos_token = till_token(&http, &op, "till", &merchant, &public_key, limits);
    let mut pos = Terminal::open(config(Mode::Pos, addr, &term_dir, &pos_token)).expect("terminal");
    assert_eq!(pos.sync().expect("sync"), Some(0), "the limits and deny list are synced");

    // Online.
    let paid = pos.handle(&tap(&keys, 1), Some(1_000), Some("r1")).expect("online");
    assert!(paid.ok && paid.online, "{}", paid.line);
    assert_eq!(paid.detail.payment().map(|p| p.balance.amount.as_str()), Some("40.00"));
    // The line ends with the receipt's page on this server (what a POS prints as a QR code).
    let receipt = &paid.detail.payment().expect("payment").receipt;
    let link =
        format!("http://{addr}/receipts/{}?h={}", receipt.entry_seq, receipt.leaf_hash.as_deref().expect("leaf hash"));
    assert!(paid.line.ends_with(&format!(" — {link}")), "{}", paid.line);

    // The server goes away: offline within the limits.
    stop(server);
    offline_within_the_limits(&mut pos, &keys);
    // The journal survives a restart of the terminal.
    drop(pos);
    let mut pos = Terminal::open(config(Mode::Pos, addr, &term_dir, &pos_token)).expect("terminal again");
    assert_eq!(pos.pending(), 2);

    // The server is back (same port): the journal is posted once.
    let server = start(&data, TcpListener::bind(addr).expect("rebind"));
    let auditor = the_journal_is_posted_once_and_the_card_owes(&http, &op, &mut pos, &pos_token, &card);
    // Now the card is on the terminal's deny list: refused offline.
    stop(server);
    let e = pos.handle(&tap(&keys, 6), Some(100), None).expect("offline deny");
    assert!(!e.ok && e.line.contains("deny"), "{}", e.line);

    // A tampered journal: an edited amount in the second of two new records.
    let server = start(&data, TcpListener::bind(addr).expect("rebind"));
    let _ = pos.sync();
    let journal = std::fs::read_to_string(term_dir.join("journal.jsonl")).expect("journal");
    assert_eq!(journal.lines().count(), 2, "the refused taps were never journaled");

    // A second till goes offline for three taps of a topped-up card; its journal is then
    // damaged before upload.
    a_topup_repays_the_shortfall_and_lifts_the_deny(&http, &agent_token, &card, &pos_token, &auditor);
    let till2 = dir.path().join("till2");
    let (t2_token, lines) = a_second_till_offline_for_three_taps(&http, &op, &merchant, &keys, addr, &till2, server);
    let server = start(&data, TcpListener::bind(addr).expect("rebind"));
    a_damaged_journal_is_refused_and_the_honest_one_posted_once(&http, &t2_token, &lines, &journal, &auditor);
    stop(server);
    drop(dir);
}

/// With the server gone, a POS pays offline within its limits: two taps, then the card's
/// daily limit and the per-tap limit refuse.
fn offline_within_the_limits(pos: &mut Terminal, keys: &KeyFile) {
    let a = pos.handle(&tap(keys, 2), Some(3_000), Some("r2")).expect("offline 1");
    assert!(a.ok && !a.online, "{}", a.line);
    let b = pos.handle(&tap(keys, 3), Some(4_000), Some("r3")).expect("offline 2");
    assert!(b.ok && !b.online, "{}", b.line);
    let c = pos.handle(&tap(keys, 4), Some(2_000), None).expect("offline 3");
    assert!(!c.ok && c.line.contains("today"), "the card's daily offline limit (80.00): {}", c.line);
    let d = pos.handle(&tap(keys, 5), Some(6_000), None).expect("offline 4");
    assert!(!d.ok && d.line.contains("per tap"), "{}", d.line);
    assert_eq!(pos.pending(), 2);
}

/// The server back, the POS's sync posts its two offline records exactly once; the
/// shortfall empties the card and puts it on the deny list; the books balance. Returns an
/// auditor's token.
fn the_journal_is_posted_once_and_the_card_owes(
    http: &Http,
    op: &str,
    pos: &mut Terminal,
    pos_token: &str,
    card: &Value,
) -> String {
    assert_eq!(pos.sync().expect("sync"), Some(2));
    assert_eq!(pos.pending(), 0);
    assert_eq!(pos.sync().expect("sync again"), Some(0));
    let auditor = auditor_token(http, op);
    assert_eq!(offline_entries(http, &auditor), 2, "each offline record posted exactly once");
    // 40.00 held; 30.00 then 40.00 offline: the second has a 30.00 shortfall.
    let (_, card_now) = http.send("GET", op, &format!("/v1/cards/{}", card["id"].as_str().expect("id")), None);
    assert_eq!(card_now["balance"]["amount"], "0.00");
    let (_, deny) = http.send("GET", pos_token, "/v1/offline/deny-list", None);
    assert!(deny["uids"].as_array().expect("uids").iter().any(|u| u == UID), "the card owes: {deny}");
    let (_, tb) = http.send("GET", &auditor, "/v1/audit/trial-balance", None);
    assert_eq!(tb["currencies"][0]["balanced"], true);
    auditor
}

/// A top-up repays the shortfall first; then the card is off the deny list.
fn a_topup_repays_the_shortfall_and_lifts_the_deny(
    http: &Http,
    agent_token: &str,
    card: &Value,
    pos_token: &str,
    auditor: &str,
) {
    let topped = http.ok(agent_token, "/v1/topups", json!({"card_id": card["id"], "amount": "300.00"}));
    assert_eq!(
        (topped["repaid"]["amount"].as_str(), topped["balance"]["amount"].as_str()),
        (Some("30.00"), Some("270.00"))
    );
    let (_, deny) = http.send("GET", pos_token, "/v1/offline/deny-list", None);
    assert!(!deny["uids"].as_array().expect("uids").iter().any(|u| u == UID), "repaid: {deny}");
    let (_, tb) = http.send("GET", auditor, "/v1/audit/trial-balance", None);
    assert_eq!(tb["currencies"][0]["balanced"], true);
}

/// A second till (files in `till2`, server at `addr`) syncs, then the server stops and the
/// till takes three taps offline; returns its token and its journal's records.
fn a_second_till_offline_for_three_taps(
    http: &Http,
    op: &str,
    merchant: &Value,
    keys: &KeyFile,
    addr: std::net::SocketAddr,
    till2: &Path,
    server: Server,
) -> (String, Vec<Value>) {
    let pk2 = Terminal::open(config(Mode::Pos, addr, till2, "kt_placeholder")).expect("t2").public_key_hex();
    let limits2 = json!({"per_tap_minor": 5_000, "per_card_per_day_minor": 100_000, "outstanding_minor": 100_000});
    let t2_token = till_token(http, op, "till 2", merchant, &pk2, limits2);
    let mut t2 = Terminal::open(config(Mode::Pos, addr, till2, &t2_token)).expect("t2");
    t2.sync().expect("sync t2");
    stop(server);
    let mut t2 = Terminal::open(config(Mode::Pos, addr, till2, &t2_token)).expect("t2 again");
    for (i, counter) in [10u32, 11, 12].into_iter().enumerate() {
        let o = t2.handle(&tap(keys, counter), Some(1_000 + i as i64), None).expect("offline");
        assert!(o.ok && !o.online, "{}", o.line);
    }
    let lines: Vec<Value> = std::fs::read_to_string(till2.join("journal.jsonl"))
        .expect("journal")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    (t2_token, lines)
}

/// The second till's journal (`lines`) edited, cut, reordered or replaced by the first
/// till's (`journal`, signed by its key) is refused, keeping the good records before the
/// damage; the honest journal then posts the rest, none twice.
fn a_damaged_journal_is_refused_and_the_honest_one_posted_once(
    http: &Http,
    t2_token: &str,
    lines: &[Value],
    journal: &str,
    auditor: &str,
) {
    let upload =
        |records: Vec<Value>| http.send("POST", t2_token, "/v1/offline/journals", Some(json!({"records": records})));
    // Record 2's amount edited: refused at 2, record 1 kept.
    let mut edited = lines.to_vec();
    edited[1]["record"]["amount_minor"] = json!(999_999);
    let (status, problem) = upload(edited);
    assert_eq!((status, problem["code"].as_str()), (422, Some("offline_bad_signature")), "{problem}");
    let (_, head) = http.send("GET", t2_token, "/v1/offline/head", None);
    assert_eq!(head["seq"], 1, "the good record before the damage is kept");
    // Record 2 removed: a gap at 3.
    let (status, problem) = upload(vec![lines[0].clone(), lines[2].clone()]);
    assert_eq!((status, problem["code"].as_str()), (422, Some("offline_gap")), "{problem}");
    // Reordered: 3 before 2.
    let (status, problem) = upload(vec![lines[2].clone(), lines[1].clone()]);
    assert_eq!((status, problem["code"].as_str()), (422, Some("offline_gap")), "{problem}");
    // Signed by another terminal's key: the first till's journal under the second's token.
    let other: Vec<Value> = journal.lines().map(|l| serde_json::from_str(l).expect("record")).collect();
    let (status, problem) = upload(vec![other[1].clone()]);
    assert_eq!((status, problem["code"].as_str()), (422, Some("offline_bad_signature")), "{problem}");
    // The honest journal: 2 and 3 are posted, 1 is not posted twice.
    let (status, done) = upload(lines.to_vec());
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(offline_entries(http, auditor), 5, "2 from the first till, 3 from the second, none twice");
}

/// A clinic gate offline: it decides by the policy and entitled list it last synced (the
/// insured holder in, once a day; the student not entitled; a blocked card refused), then
/// uploads its decisions, which the server logs as the gate's.
#[test]
fn a_gate_decides_offline_by_its_synced_policy_and_uploads_its_decisions() {
    let Stage { dir, data, op, keys, addr, server, http } = Stage::new();
    let clinic = a_clinic_and_its_cards(&http, &op);
    let (insured, _, blocked) = CLINIC_CARDS;
    let gate_dir = dir.path().join("gate");
    let public_key =
        Terminal::open(config(Mode::Gate, addr, &gate_dir, "kt_placeholder")).expect("terminal").public_key_hex();
    let token = http.ok(
        &op,
        "/v1/credentials",
        json!({"role": "service_point", "name": "gate", "service_point_id": clinic["id"],
            "public_key": public_key}),
    )["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut gate = Terminal::open(config(Mode::Gate, addr, &gate_dir, &token)).expect("gate");
    assert_eq!(gate.sync().expect("sync"), Some(0));
    let (_, synced) = http.send("GET", &token, "/v1/offline/deny-list", None);
    assert_eq!(synced["access"]["entitled"], json!([insured]), "only the insured active card: {synced}");
    assert_eq!(synced["uids"], json!([blocked]));

    stop(server);
    // The gate restarts offline: what it synced is on its disk.
    drop(gate);
    let mut gate = Terminal::open(config(Mode::Gate, addr, &gate_dir, &token)).expect("gate again");
    the_gate_decides_offline(&mut gate, &keys);

    let listener = TcpListener::bind(addr).expect("rebind");
    let server = start(&data, listener);
    assert_eq!(gate.sync().expect("upload"), Some(4));
    let auditor = auditor_token(&http, &op);
    let (status, log) = http.send("GET", &auditor, "/v1/audit/access-log?limit=100", None);
    assert_eq!(status, 200, "{log}");
    let decisions: Vec<&str> =
        log["decisions"].as_array().expect("access log").iter().filter_map(|d| d["decision"].as_str()).collect();
    let allowed = decisions.iter().filter(|d| **d == "allow").count();
    assert_eq!((decisions.len(), allowed), (4, 1), "the gate's four offline decisions, one allow: {log}");
    stop(server);
}

/// The clinic gate test's cards: (insured, student, blocked).
const CLINIC_CARDS: (&str, &str, &str) = ("04A1B2C3D4E501", "04A1B2C3D4E502", "04A1B2C3D4E503");

/// A clinic for the insured, once a day, and [`CLINIC_CARDS`]: an insured holder's card, a
/// student's, and another insured holder's card blocked as lost. Returns the clinic.
fn a_clinic_and_its_cards(http: &Http, op: &str) -> Value {
    let clinic = http.ok(
        op,
        "/v1/service-points",
        json!({"name": "Puskesmas", "service": "clinic",
            "policy": {"categories": ["insured"], "timezone": "Asia/Makassar", "daily_quota": 1}}),
    );
    let (insured, student, blocked) = CLINIC_CARDS;
    for (i, (uid, category)) in [(insured, "insured"), (student, "student"), (blocked, "insured")].iter().enumerate() {
        let holder = http.ok(
            op,
            "/v1/holders",
            json!({"name": format!("h{i}"), "nik": format!("737101010190000{i}"), "categories": [category]}),
        );
        let card = http.ok(op, "/v1/cards", json!({"uid": uid, "holder_id": holder["id"]}));
        if *uid == blocked {
            let path = format!("/v1/cards/{}/block", card["id"].as_str().expect("id"));
            http.ok(op, &path, json!({"reason": "lost"}));
        }
    }
    clinic
}

/// Offline, the gate lets the insured holder in once, then refuses her (the quota), the
/// student (not entitled) and the blocked card; it keeps all four decisions.
fn the_gate_decides_offline(gate: &mut Terminal, keys: &KeyFile) {
    let (insured, student, blocked) = CLINIC_CARDS;
    let first = gate.handle(&tap_of(keys, insured, 1), None, None).expect("insured");
    assert!(first.ok && !first.online, "{}", first.line);
    let again = gate.handle(&tap_of(keys, insured, 2), None, None).expect("insured again");
    assert!(!again.ok && again.line.contains("quota_reached"), "{}", again.line);
    let s = gate.handle(&tap_of(keys, student, 1), None, None).expect("student");
    assert!(!s.ok && s.line.contains("not_entitled"), "{}", s.line);
    let b = gate.handle(&tap_of(keys, blocked, 1), None, None).expect("blocked");
    assert!(!b.ok && b.line.contains("card_blocked"), "{}", b.line);
    assert_eq!(gate.pending(), 4);
}

/// A CA made in the test, and a server certificate it signs for `localhost`/127.0.0.1.
fn test_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("CA").pem();
    (pem, rcgen::Issuer::new(params, key))
}

/// Issue 13: a terminal pointed at an `https://` server never takes a connection it cannot
/// trust for "offline". With the CA that signed the server's certificate it pays online;
/// with another CA, the system's roots only, or `http://` at the TLS port, the tap is refused
/// with an error naming the cause and the offline journal stays empty; an unknown scheme
/// is refused when the terminal opens. When the server is really gone (connection
/// refused), the HTTPS terminal still pays offline within its limits.
#[test]
fn a_terminal_over_https_trusts_its_ca_and_never_takes_a_tls_error_for_offline() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("city");
    let op = api::server::init(&data, None, "KARTU-MKS").expect("init").operator_token;
    let keys = KeyFile::parse(&std::fs::read_to_string(data.join("keys.toml")).expect("keys")).expect("key file");
    let (ca_file, other_ca_file) = serve_https_with_a_test_ca(dir.path(), &data);

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = start(&data, listener);
    let base = format!("https://localhost:{}", addr.port());
    let http = Http { agent: client::transport::agent(Some(&ca_file), None).expect("agent"), base: base.clone() };
    let (merchant, card, _) = a_merchant_and_a_card_with_50(&http, &op);
    let public_key = Terminal::open(https_config(dir.path(), "pos", &base, "kt_placeholder", None))
        .expect("terminal")
        .public_key_hex();
    let limits = json!({"per_tap_minor": 5_000, "per_card_per_day_minor": 8_000, "outstanding_minor": 20_000});
    let pos_token = till_token(&http, &op, "till", &merchant, &public_key, limits);

    // The right CA: online.
    let mut pos = Terminal::open(https_config(dir.path(), "pos", &base, &pos_token, Some(&ca_file))).expect("terminal");
    assert_eq!(pos.sync().expect("sync over HTTPS"), Some(0));
    let paid = pos.handle(&tap(&keys, 1), Some(1_000), Some("r1")).expect("online");
    assert!(paid.ok && paid.online, "{}", paid.line);
    assert_eq!(paid.detail.payment().map(|p| p.balance.amount.as_str()), Some("40.00"));

    // Wrong trust, or the wrong protocol: refused, said so, nothing journaled.
    let plain_url = format!("http://127.0.0.1:{}", addr.port());
    wrong_trust_or_protocol_is_refused_not_taken_offline(
        dir.path(),
        &keys,
        &pos_token,
        &base,
        &plain_url,
        &ca_file,
        &other_ca_file,
    );
    // A URL the terminal cannot use is refused when it opens.
    for url in ["ftp://localhost:1", "localhost:8443", "https://"] {
        let e = Terminal::open(https_config(dir.path(), "bad-url", url, &pos_token, None)).expect_err(url).to_string();
        assert!(e.contains("the server URL"), "{url}: {e}");
    }
    // The card was charged once: the refused taps never reached the ledger.
    let (_, card_now) = http.send("GET", &op, &format!("/v1/cards/{}", card["id"].as_str().expect("id")), None);
    assert_eq!(card_now["balance"]["amount"], "40.00");

    // The server is really gone (connection refused): offline within the limits.
    stop(server);
    let offline = pos.handle(&tap(&keys, 10), Some(2_000), Some("r10")).expect("offline");
    assert!(offline.ok && !offline.online, "{}", offline.line);
    assert_eq!(pos.pending(), 1);
}

/// A server certificate for `localhost`/127.0.0.1 signed by a CA made here, in the data
/// directory and named relative to it in kartu.toml; returns the files of that CA and of
/// another one that signed nothing.
fn serve_https_with_a_test_ca(dir: &Path, data: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (ca_pem, ca) = test_ca("Kartu terminal test CA");
    let (other_ca_pem, _) = test_ca("Somebody else's CA");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server_cert = params.signed_by(&server_key, &ca).expect("cert");
    // In the data directory, named relative to it in kartu.toml.
    std::fs::write(data.join("server.crt"), server_cert.pem()).expect("cert");
    std::fs::write(data.join("server.key"), server_key.serialize_pem()).expect("key");
    std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config_path = data.join("kartu.toml");
    let config = std::fs::read_to_string(&config_path).expect("config");
    std::fs::write(&config_path, format!("tls_cert = \"server.crt\"\ntls_key = \"server.key\"\n{config}"))
        .expect("config");
    let (ca_file, other_ca_file) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
    std::fs::write(&ca_file, &ca_pem).expect("ca");
    std::fs::write(&other_ca_file, &other_ca_pem).expect("other ca");
    (ca_file, other_ca_file)
}

/// A POS of the HTTPS test, named `name` (its files in `dir/name`), trusting `ca` or, with
/// none, the system's roots.
fn https_config(dir: &Path, name: &str, server: &str, token: &str, ca: Option<&Path>) -> Config {
    Config {
        mode: Mode::Pos,
        server: server.to_owned(),
        token: token.to_owned(),
        data_dir: dir.join(name),
        currency: "IDR".into(),
        timeout: Duration::from_millis(2_000),
        ca_file: ca.map(Path::to_owned),
        validator: terminal::ValidatorSettings::default(),
    }
}

/// Wrong trust, or the wrong protocol: refused, said so, nothing journaled. Each is a
/// terminal of its own (its own journal), with the limits synced so that it could approve
/// offline if it took the error for an outage: the server's HTTPS URL with another CA, or
/// with the system's roots only, and its plain-HTTP URL.
fn wrong_trust_or_protocol_is_refused_not_taken_offline(
    dir: &Path,
    keys: &KeyFile,
    pos_token: &str,
    base: &str,
    plain_url: &str,
    ca_file: &Path,
    other_ca_file: &Path,
) {
    let cases: [(&str, &str, Option<&Path>, &[&str]); 3] = [
        ("other-ca", base, Some(other_ca_file), &["certificate", "UnknownIssuer", "--ca-file"]),
        ("webpki-roots", base, None, &["certificate", "UnknownIssuer"]),
        ("plain-http", plain_url, Some(ca_file), &["HTTPS"]),
    ];
    for (counter, (name, url, ca, says)) in (2..).zip(cases) {
        let term_dir = dir.join(name);
        std::fs::create_dir_all(&term_dir).expect("dir");
        // A cached sync (as if it had synced before): offline limits it could use.
        std::fs::copy(dir.join("pos").join("deny-list.json"), term_dir.join("deny-list.json")).expect("copy");
        std::fs::copy(dir.join("pos").join("terminal.key"), term_dir.join("terminal.key")).expect("copy");
        let mut t = Terminal::open(https_config(dir, name, url, pos_token, ca)).expect("terminal");
        let refused = t.handle(&tap(keys, counter), Some(1_000), Some("x")).expect_err("refused, not offline");
        let message = refused.to_string();
        assert!(matches!(refused, terminal::TerminalError::Connection(_)), "{name}: {message}");
        assert!(message.contains("not taken offline"), "{name}: {message}");
        for word in says {
            assert!(message.contains(word), "{name}: {word:?} not in {message}");
        }
        assert_eq!(t.pending(), 0, "{name}: an offline record was made");
        let journal = std::fs::read_to_string(term_dir.join("journal.jsonl")).unwrap_or_default();
        assert!(journal.is_empty(), "{name}: the journal holds {journal}");
        assert!(matches!(t.sync(), Err(terminal::TerminalError::Connection(_))), "{name}: sync is an error too");
    }
}

// ---------------------------------------------------------------------------------------
// Transit validators.

/// The validator test's cards: Ani (resident) and Budi (student, half fare).
const RIDERS: (&str, &str) = ("04A1B2C3D4E511", "04A1B2C3D4E512");

/// A transit operator (no fee) with a flat-fare bus line (Rp 35,00, six stops) and a ferry
/// priced by stops (Rp 20,00 + Rp 5,00 a stop, at most Rp 60,00, four docks), the fare table
/// of docs/TRANSIT.md asked for by `op` and approved by a second operator, and the riders'
/// cards with Rp 200,00 and Rp 100,00. Returns the operator and the two routes' ids.
fn a_bus_and_a_ferry(http: &Http, op: &str, data: &Path) -> (Value, String, String) {
    let operator =
        http.ok(op, "/v1/merchants", json!({"name": "Trans Mamminasata", "category": "transit", "fee_rate": "0"}));
    let route = |name: &str, mode: &str, stops: usize| -> String {
        let stops: Vec<String> = (0..stops).map(|i| format!("{name} {i}")).collect();
        let body = json!({"merchant_id": operator["id"], "name": name, "mode": mode, "stops": stops});
        http.ok(op, "/v1/transit/routes", body)["id"].as_str().expect("route id").to_owned()
    };
    let (bus, ferry) = (route("Koridor 1", "bus", 6), route("Kapal Pulau", "ferry", 4));
    let table = json!({"time_zone": "Asia/Makassar", "table": {
        "routes": {&bus: {"kind": "flat", "fare_minor": 3500},
                   &ferry: {"kind": "distance", "base_minor": 2000, "per_stop_minor": 500, "max_minor": 6000, "time_limit_minutes": 90}},
        "transfer": {"window_minutes": 60, "integrated_fare_minor": 5000},
        "daily_cap_minor": 10000, "weekly_cap_minor": 40000, "concessions": {"student": 50}}});
    let asked = http.ok(op, "/v1/transit/fares", table);
    let (_, approver) = api::server::add_operator(data, None, "Approver").expect("a second operator");
    http.ok(&approver, &format!("/v1/approvals/{}/approve", asked["id"].as_str().expect("id")), json!({}));
    let agent_token = an_agent_with_float(http, op);
    for (i, (uid, category, amount)) in
        [(RIDERS.0, "resident", "200.00"), (RIDERS.1, "student", "100.00")].iter().enumerate()
    {
        let holder = http.ok(
            op,
            "/v1/holders",
            json!({"name": format!("r{i}"), "nik": format!("737101010190001{i}"), "categories": [category]}),
        );
        let card = http.ok(op, "/v1/cards", json!({"uid": uid, "holder_id": holder["id"]}));
        http.ok(&agent_token, "/v1/topups", json!({"card_id": card["id"], "amount": amount}));
    }
    (operator, bus, ferry)
}

/// A validator's credential bound to `route` (a gate's `stop`, or none on a vehicle), with
/// its journal key and offline limits when given; its token.
fn a_validator(
    http: &Http,
    op: &str,
    operator: &Value,
    route: &str,
    stop: Option<i64>,
    key: Option<(&str, Value)>,
) -> String {
    let mut body = json!({"role": "merchant_terminal", "name": "validator", "merchant_id": operator["id"]});
    if let Some((public_key, limits)) = key {
        body["public_key"] = json!(public_key);
        body["offline_limits"] = limits;
    }
    let v = http.ok(op, "/v1/credentials", body);
    http.ok(op, "/v1/transit/validators", json!({"credential_id": v["id"], "route_id": route, "stop": stop}));
    v["token"].as_str().expect("token").to_owned()
}

/// A validator terminal: `direction` and, on a vehicle, `stop`.
fn validator_config(
    server: &str,
    dir: &Path,
    token: &str,
    direction: terminal::Direction,
    stop: Option<i64>,
) -> Config {
    let mut c = config(Mode::Validator, "127.0.0.1:9".parse().expect("addr"), dir, token);
    c.server = server.to_owned();
    c.validator = terminal::ValidatorSettings { direction, stop };
    c
}

fn balance_of(http: &Http, op: &str, uid: &str) -> String {
    let (_, cards) = http.send("GET", op, "/v1/cards?limit=100", None);
    let card = cards["cards"].as_array().expect("cards").iter().find(|c| c["uid"] == json!(uid)).cloned();
    let id = card.expect("the card")["id"].as_str().expect("card id").to_owned();
    let (_, card) = http.send("GET", op, &format!("/v1/cards/{id}"), None);
    card["balance"]["amount"].as_str().expect("balance").to_owned()
}

/// A bus validator out of coverage prices boardings itself with the synced fare tables
/// (the flat fare; a student's half fare; a second boarding within the window as a
/// transfer), refuses one beyond its per-card daily limit, and journals the rest. Meanwhile
/// the rider takes the ferry through online gates, which, not knowing the bus ride, charge
/// the full distance fare. Back in coverage the bus uploads: the server puts the bus ride
/// first and refunds the ferry down to the transfer, so each card ends as an always-online
/// system would have put it, and what the bus showed offline is what the server charged.
/// A validator in `auto` on the ferry taps a card on, then off.
#[test]
fn a_validator_prices_rides_offline_and_its_late_upload_reprices_the_journey() {
    let Stage { dir, data, op, keys, addr, server, http } = Stage::new();
    let (operator, bus, ferry) = a_bus_and_a_ferry(&http, &op, &data);
    let (ani, budi) = RIDERS;
    let live = format!("http://{addr}");
    // Nothing listens on port 9 of this machine (discard): connection refused, offline.
    let dead = "http://127.0.0.1:9".to_owned();
    let bus_dir = dir.path().join("bus");
    let key = Terminal::open(validator_config(&live, &bus_dir, "kt_placeholder", terminal::Direction::On, Some(1)))
        .expect("bus")
        .public_key_hex();
    let limits = json!({"per_tap_minor": 6000, "per_card_per_day_minor": 4000, "outstanding_minor": 100000});
    let bus_token = a_validator(&http, &op, &operator, &bus, None, Some((&key, limits)));
    let mut on_bus =
        Terminal::open(validator_config(&live, &bus_dir, &bus_token, terminal::Direction::On, Some(1))).expect("bus");
    assert_eq!(on_bus.sync().expect("sync"), Some(0));
    assert_eq!(on_bus.journeys().stops(), 6, "the route's stops are synced");
    drop(on_bus);

    // Out of coverage (restarted: what it synced is on its disk).
    let mut on_bus =
        Terminal::open(validator_config(&dead, &bus_dir, &bus_token, terminal::Direction::On, Some(1))).expect("bus");
    let a = on_bus.handle(&tap_of(&keys, ani, 1), None, None).expect("Ani boards");
    assert!(a.ok && !a.online && a.line.contains("35.00") && a.line.contains("(flat fare)"), "{}", a.line);
    let record = a.detail.record().expect("journaled").record.clone();
    assert_eq!((record.amount_minor, record.decision.as_deref()), (3500, Some("on:1")));
    let b = on_bus.handle(&tap_of(&keys, budi, 1), None, None).expect("Budi boards");
    assert!(b.ok && b.line.contains("17.50") && b.line.contains("student 50 %"), "{}", b.line);
    // Within the window a boarding is a transfer (15.00 more), beyond Ani's 40.00 a day here.
    on_bus.set_stop(4);
    let over = on_bus.handle(&tap_of(&keys, ani, 2), None, None).expect("Ani again");
    assert!(!over.ok && over.line.contains("offline limit for today"), "{}", over.line);
    assert_eq!(on_bus.pending(), 2, "the refused boarding is not journaled");

    // Ani takes the ferry through online gates: they hold the maximum, then charge 30.00.
    let gate = |name: &str, stop: i64, direction| {
        let token = a_validator(&http, &op, &operator, &ferry, Some(stop), None);
        let mut t =
            Terminal::open(validator_config(&live, &dir.path().join(name), &token, direction, None)).expect("gate");
        assert_eq!(t.sync().expect("gate sync"), Some(0));
        t
    };
    let mut ferry_in = gate("ferry-in", 0, terminal::Direction::On);
    let mut ferry_out = gate("ferry-out", 2, terminal::Direction::Off);
    let on = ferry_in.handle(&tap_of(&keys, ani, 3), None, None).expect("ferry in");
    assert!(on.ok && on.online && on.line.contains("hold 60.00"), "{}", on.line);
    let off = ferry_out.handle(&tap_of(&keys, ani, 4), None, None).expect("ferry out");
    assert!(
        off.ok && off.line.contains("capture 30.00 (2 stops)") && off.line.contains("balance 170.00"),
        "{}",
        off.line
    );

    // Back in coverage: the bus uploads; the ferry becomes a transfer (refund 15.00).
    let mut on_bus =
        Terminal::open(validator_config(&live, &bus_dir, &bus_token, terminal::Direction::On, Some(4))).expect("bus");
    assert_eq!(on_bus.sync().expect("upload"), Some(2));
    assert_eq!(balance_of(&http, &op, ani), "150.00", "35.00 + 15.00, as if always online");
    assert_eq!(balance_of(&http, &op, budi), "82.50");
    // Online again: the journey reached its integrated fare, so this boarding is free.
    let again = on_bus.handle(&tap_of(&keys, ani, 5), None, None).expect("Ani, online");
    assert!(again.ok && again.online && again.line.contains("balance 150.00"), "{}", again.line);

    a_validator_in_auto_taps_on_then_off(&http, &op, &operator, &ferry, &keys, &live, dir.path());
    stop(server);
}

/// One validator on the ferry in `auto`: Budi taps on at dock 1, then off at dock 3 (two
/// stops, a student's fare within his journey).
fn a_validator_in_auto_taps_on_then_off(
    http: &Http,
    op: &str,
    operator: &Value,
    ferry: &str,
    keys: &KeyFile,
    live: &str,
    dir: &Path,
) {
    let deck_token = a_validator(http, op, operator, ferry, None, None);
    let config = validator_config(live, &dir.join("deck"), &deck_token, terminal::Direction::Auto, Some(1));
    let mut deck = Terminal::open(config).expect("deck");
    assert_eq!(deck.sync().expect("deck sync"), Some(0));
    let on = deck.handle(&tap_of(keys, RIDERS.1, 2), None, None).expect("deck on");
    assert_eq!(on.detail.ride().map(|r| r.direction.as_str()), Some("on"), "{}", on.line);
    deck.set_stop(3);
    let off = deck.handle(&tap_of(keys, RIDERS.1, 3), None, None).expect("deck off");
    assert_eq!(off.detail.ride().map(|r| r.direction.as_str()), Some("off"), "{}", off.line);
    assert!(off.line.contains("2 stops"), "{}", off.line);
}
