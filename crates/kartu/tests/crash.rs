//! Crash, restart and two-process tests under HTTP load (issue 7): real `kartu serve`
//! processes, many clients paying with valid card taps (the `kartu-bench` load generator's
//! virtual cards), and in the middle of it:
//!
//! - `kill -9` of the server, then a restart on the same port (SQLite and PostgreSQL);
//! - an immediate stop and restart of PostgreSQL itself (a throwaway cluster of the test's
//!   own, never the shared one);
//! - two `kartu serve` processes on one PostgreSQL database, one of them killed and restarted;
//! - a full disk under SQLite, and under PostgreSQL with the tables in a tablespace there (a
//!   small tmpfs in a private mount namespace; needs root).
//!
//! Clients retry every request that met a connection error, a timeout or a 5xx with the
//! same Idempotency-Key and body until it gets an answer, so every payment ends acknowledged
//! (201 with `entry_seq`) or refused. After each scenario: every acknowledged payment is in
//! the ledger exactly once under the sequence number the client was given, no payment is in
//! the ledger that no client saw acknowledged, the entries are exactly the set-up plus the
//! acknowledged payments, no card wallet was ever negative and each ends at its top-up minus
//! its payments, no card read counter was used twice, the trial balance is zero, and
//! `kartu audit verify` passes through the API and on the database.
//!
//! Short versions run by default (a few seconds of load each). `KARTU_SOAK_SECONDS=N`
//! (`make soak`) runs N seconds of load per scenario, with a crash every few seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kartu_bench::client::{self, Conn};
use kartu_bench::loadgen::{CardKeys, VirtualCard};
use serde_json::{json, Value};

/// Virtual cards, each topped up with `TOPUP`, and concurrent clients (each taps its own cards).
const CARDS: usize = 48;
const CLIENTS: usize = 12;
const TOPUP: &str = "1000000.00";
const TOPUP_MINOR: i64 = 100_000_000;
const AMOUNT: &str = "10.00";
const AMOUNT_MINOR: i64 = 1_000;
/// A client gives up on a payment (and the test fails) when it has no answer after this.
const GIVE_UP: Duration = Duration::from_secs(60);
/// One attempt's limit before the connection is dropped and the request sent again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The disk-full test's filesystem (a tmpfs: memory only as it fills), MiB, and per second
/// of a soak; "full" is a remount to the size it holds, "space freed" a remount to this
/// size again.
const TMPFS_MIB: f64 = 1024.0;
const TMPFS_MIB_PER_SOAK_SECOND: f64 = 4.0;
/// Set in the re-executed test process inside the private mount namespace.
const IN_NAMESPACE: &str = "KARTU_CRASH_IN_NAMESPACE";

/// One scenario at a time: they measure the server under load, and the machine is small.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds of load: `KARTU_SOAK_SECONDS` (make soak) or the short default.
fn load_seconds(short: f64) -> (f64, bool) {
    match std::env::var("KARTU_SOAK_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()) {
        Some(s) if s > 0.0 => (s, true),
        _ => (short, false),
    }
}

/// A small xorshift, seeded from the clock (printed, so a failure can be told apart).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Rng(t.as_nanos() as u64 | 1)
    }
    fn between(&mut self, lo: f64, hi: f64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_secs_f64(lo + (hi - lo) * (self.0 % 10_000) as f64 / 10_000.0)
    }
}

fn kartu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kartu"))
}

fn run_kartu(args: &[&str]) -> (bool, String, String) {
    let out = kartu().args(args).output().expect("run kartu");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

// ---------------------------------------------------------------------------------------
// Processes: kartu serve, a throwaway PostgreSQL cluster, a fresh database.

/// A `kartu serve` on a fixed port that can be killed and started again.
struct Server {
    child: Option<Child>,
    data: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn new(data: &Path, log: PathBuf) -> Server {
        Server { child: None, data: data.to_owned(), port: free_port(), log }
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Starts the server and waits until `/readyz` answers 200.
    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("server log");
        let child = kartu()
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--listen")
            .arg(self.addr().to_string())
            .env("KARTU_CHECKPOINT_INTERVAL_MS", "200")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kartu serve");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("kartu serve exited ({status}); its log:\n{}", self.log_tail());
            }
            if http_get(self.addr(), "/readyz").is_some_and(|s| s == 200) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "not ready in 60 s:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `kill -9`.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("wait");
        }
    }

    /// Still running (not crashed)?
    fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The tails of these servers' logs, for a failure message.
fn logs_of(servers: &[Server]) -> impl Fn() -> String {
    let paths: Vec<PathBuf> = servers.iter().map(|s| s.log.clone()).collect();
    move || {
        paths
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!("== {} ==\n{}", p.display(), lines[lines.len().saturating_sub(30)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A one-off GET (Connection: close); the status, or none when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: kartu\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// A fresh database on the PostgreSQL of `make test` (`KARTU_TEST_POSTGRES_URL`), dropped
/// at the end.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn create(admin: &str, tag: &str) -> PgDb {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let name = format!("kartu_crash_{tag}_{}", std::process::id());
        let mut c = diesel::PgConnection::establish(admin).unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).expect("drop database");
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        PgDb { admin: admin.to_owned(), url: format!("{base}/{name}"), name }
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

fn test_postgres() -> String {
    std::env::var("KARTU_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A PostgreSQL cluster of the test's own (initdb with trust auth in a temporary folder, on
/// a free port), so that it can be stopped with `-m immediate` under load. As root, initdb
/// and postgres run as the `postgres` user.
struct Cluster {
    _dir: tempfile::TempDir,
    bindir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Cluster {
    fn as_owner(program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn new() -> Cluster {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("/usr/lib/postgresql (scripts/setup.sh installs postgresql)")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max_by_key(|b| {
                b.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
            })
            .expect("no PostgreSQL initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("dir");
        if is_root() {
            assert!(Command::new("chown").arg("postgres").arg(dir.path()).status().expect("chown").success());
        }
        let data = dir.path().join("data");
        let out = Cluster::as_owner(&bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let cluster = Cluster {
            bindir,
            socket_dir: dir.path().to_owned(),
            log: dir.path().join("log"),
            data,
            port: free_port(),
            _dir: dir,
        };
        cluster.start();
        cluster
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = Cluster::as_owner(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-o")
            .arg(format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.socket_dir.display()))
            .arg("-l")
            .arg(&self.log)
            .args(args)
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {} {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn start(&self) {
        self.pg_ctl(&["-w", "start"]);
    }

    /// Stops the cluster as a crash would: no shutdown checkpoint, connections cut.
    fn stop_immediate(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Cluster::as_owner(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

// ---------------------------------------------------------------------------------------
// The installation and its clients.

/// An initialised data directory, its servers and what the set-up made.
struct City {
    database_url: String,
    auditor: String,
    verifier: PathBuf,
    keys: CardKeys,
    merchant_token: String,
    cards: Vec<VirtualCard>,
    /// Entries the set-up wrote (the agent's float and one top-up per card).
    setup_entries: usize,
    servers: Vec<Server>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl City {
    /// `kartu init` in `dir/city` (on `database_url`, or SQLite in the data directory),
    /// `servers` servers on that data directory, then a merchant, an agent, an auditor and
    /// `CARDS` topped-up cards through the API.
    fn new(dir: &Path, database_url: Option<&str>, servers: usize) -> City {
        City::new_on(dir, dir, database_url, servers)
    }

    /// As [`City::new`], with the data directory in `fs` (the logs stay in `dir`).
    fn new_on(dir: &Path, fs: &Path, database_url: Option<&str>, servers: usize) -> City {
        let data = fs.join("city");
        let data_s = data.display().to_string();
        let mut args = vec!["init", "--data-dir", &data_s];
        if let Some(url) = database_url {
            args.extend(["--database-url", url]);
        }
        let (ok, out, err) = run_kartu(&args);
        assert!(ok, "kartu init: {err}");
        let operator = out.trim().to_owned();
        let verifier_line =
            err.lines().find_map(|l| l.split("verifier key: ").nth(1)).expect("verifier key line").to_owned();
        let verifier = dir.join("log.pub");
        std::fs::write(&verifier, format!("{verifier_line}\n")).expect("verifier file");
        let database_url =
            database_url.map_or_else(|| format!("sqlite://{}", data.join("kartu.db").display()), str::to_owned);
        let mut list: Vec<Server> =
            (0..servers).map(|i| Server::new(&data, dir.join(format!("serve-{i}.log")))).collect();
        for s in &mut list {
            s.start();
        }
        let base = list[0].base();
        let (status, auditor) = post(
            &base,
            &operator,
            "/v1/credentials",
            "crash-auditor",
            json!({"role": "auditor", "name": "crash auditor"}),
        );
        assert_eq!(status, 201, "{auditor}");
        let auditor = auditor["token"].as_str().expect("auditor token").to_owned();
        let keys = CardKeys::load(&data.join("keys.toml")).expect("keys");
        let addr = list[0].addr();
        let fleet = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(kartu_bench::setup::setup(addr, &operator, &keys, CARDS, TOPUP, 4))
            .expect("set-up through the API");
        City {
            database_url,
            auditor,
            verifier,
            keys,
            merchant_token: fleet.merchant_token,
            cards: fleet.cards,
            setup_entries: 1 + CARDS,
            servers: list,
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(Server::addr).collect()
    }

    /// Starts `CLIENTS` clients against the servers (client i starts on server i mod n and
    /// moves to the next server when its server cannot be reached).
    fn start_load(&mut self, tag: &str) -> Load {
        let cards = std::mem::take(&mut self.cards);
        Load::start(self.addrs(), self.merchant_token.clone(), self.keys.meta_read_key().clone(), cards, tag)
    }
}

fn post(base: &str, token: &str, path: &str, key: &str, body: Value) -> (u16, Value) {
    match agent()
        .post(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Idempotency-Key", key)
        .send_json(&body)
    {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_json().unwrap_or_default()),
        Err(e) => (0, json!({"error": e.to_string()})),
    }
}

fn get_json(base: &str, token: &str, path: &str) -> Value {
    let mut r = agent()
        .get(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    r.body_mut().read_json().expect("json")
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientLog {
    /// (idempotency key = merchant reference, entry_seq) of every acknowledged payment.
    acked: Vec<(String, i64)>,
    /// Acknowledged after more than one attempt.
    acked_after_retry: u64,
    /// (key, status, code) of payments refused with a 4xx.
    refused: Vec<(String, u16, String)>,
    /// Keys given up on (no answer within `GIVE_UP`).
    gave_up: Vec<String>,
    /// Attempts sent again.
    retries: u64,
    /// What made them retry: `connect`, `io`, `timeout`, `500 internal`, `503 busy`...
    errors: BTreeMap<String, u64>,
}

/// Live counters, for the scenario to watch while the clients run.
#[derive(Debug, Default)]
struct Live {
    acked: AtomicU64,
    server_errors: AtomicU64,
}

/// The clients, running on a thread of their own.
struct Load {
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
    thread: std::thread::JoinHandle<Vec<ClientLog>>,
    started: Instant,
}

/// Everything the clients saw.
#[derive(Debug, Default)]
struct LoadResult {
    acked: Vec<(String, i64)>,
    acked_after_retry: u64,
    refused: Vec<(String, u16, String)>,
    gave_up: Vec<String>,
    retries: u64,
    errors: BTreeMap<String, u64>,
    seconds: f64,
}

impl Load {
    fn start(addrs: Vec<SocketAddr>, token: String, meta: card::Key, cards: Vec<VirtualCard>, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Live::default());
        let (stop2, live2, tag) = (stop.clone(), live.clone(), tag.to_owned());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let addrs: Arc<[SocketAddr]> = addrs.into();
                let token: Arc<str> = token.into();
                let meta = Arc::new(meta);
                let mut dealt: Vec<Vec<VirtualCard>> = (0..CLIENTS).map(|_| Vec::new()).collect();
                for (i, c) in cards.into_iter().enumerate() {
                    dealt[i % CLIENTS].push(c);
                }
                let mut tasks = tokio::task::JoinSet::new();
                for (index, mine) in dealt.into_iter().enumerate() {
                    let job = ClientJob {
                        index,
                        addrs: addrs.clone(),
                        token: token.clone(),
                        meta: meta.clone(),
                        stop: stop2.clone(),
                        live: live2.clone(),
                        tag: tag.clone(),
                    };
                    tasks.spawn(job.run(mine));
                }
                let mut logs = Vec::new();
                while let Some(r) = tasks.join_next().await {
                    logs.push(r.expect("client task"));
                }
                logs
            })
        });
        Load { stop, live, thread, started: Instant::now() }
    }

    fn acked(&self) -> u64 {
        self.live.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` more payments were acknowledged (the load is flowing), at most 60 s;
    /// panics with `logs()` (the servers' logs) when they were not.
    fn wait_for_progress(&self, n: u64, logs: &dyn Fn() -> String) {
        let target = self.acked() + n;
        let started = Instant::now();
        while self.acked() < target {
            if started.elapsed() > Duration::from_secs(60) {
                panic!("no progress in 60 s: {} payments acknowledged; server logs:\n{}", self.acked(), logs());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients; each finishes (retries until answered) the payment it is on.
    fn finish(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        let logs = self.thread.join().expect("load thread");
        let mut r = LoadResult { seconds: self.started.elapsed().as_secs_f64(), ..LoadResult::default() };
        for log in logs {
            r.acked.extend(log.acked);
            r.acked_after_retry += log.acked_after_retry;
            r.refused.extend(log.refused);
            r.gave_up.extend(log.gave_up);
            r.retries += log.retries;
            for (k, v) in log.errors {
                *r.errors.entry(k).or_insert(0) += v;
            }
        }
        r
    }
}

struct ClientJob {
    index: usize,
    addrs: Arc<[SocketAddr]>,
    token: Arc<str>,
    meta: Arc<card::Key>,
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
    tag: String,
}

/// A client's way to the servers: the one it talks to (an index into its addresses) and its
/// open connection, if any.
struct Link {
    server: usize,
    conn: Option<Conn>,
}

impl ClientJob {
    async fn run(self, mut cards: Vec<VirtualCard>) -> ClientLog {
        let mut log = ClientLog::default();
        let mut link = Link { server: self.index % self.addrs.len(), conn: None };
        let mut body = Vec::with_capacity(256);
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) && !cards.is_empty() {
            let count = cards.len();
            let card = &mut cards[(n as usize) % count];
            let key = format!("{}-{}-{n}", self.tag, self.index);
            n += 1;
            body.clear();
            body.extend_from_slice(br#"{"tap":"#);
            card.tap(&self.meta, &mut body).expect("tap");
            body.extend_from_slice(
                format!(r#","amount":"{AMOUNT}","currency":"IDR","reference":"{key}"}}"#).as_bytes(),
            );
            let request = client::request("POST", "/v1/payments", Some(&*self.token), Some(&key), Some(&body));
            self.pay_until_answered(&request, key, &mut link, &mut log).await;
        }
        log
    }

    /// Sends one payment (`request`, under Idempotency-Key `key`) until it is answered:
    /// again after a connection error, a timeout or a 5xx (on the next server when the
    /// link's cannot be reached), and given up after `GIVE_UP`. The answer goes into `log`.
    async fn pay_until_answered(&self, request: &[u8], key: String, link: &mut Link, log: &mut ClientLog) {
        let deadline = Instant::now() + GIVE_UP;
        let mut attempt = 0u32;
        loop {
            if attempt > 0 {
                log.retries += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 25)).await;
            }
            attempt += 1;
            if Instant::now() > deadline {
                log.gave_up.push(key);
                break;
            }
            if link.conn.as_ref().is_none_or(|c| c.closed) {
                match Conn::connect(self.addrs[link.server]).await {
                    Ok(c) => link.conn = Some(c),
                    Err(_) => {
                        *log.errors.entry("connect".into()).or_insert(0) += 1;
                        link.server = (link.server + 1) % self.addrs.len();
                        continue;
                    }
                }
            }
            let Some(c) = link.conn.as_mut() else { continue };
            match tokio::time::timeout(ATTEMPT_TIMEOUT, c.send(request)).await {
                Ok(Ok(r)) if r.status >= 500 => {
                    let what = format!("{} {}", r.status, client::problem_code(r.body));
                    *log.errors.entry(what).or_insert(0) += 1;
                    self.live.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(r)) if r.status == 201 || r.status == 200 => {
                    let v: Value = serde_json::from_slice(r.body).unwrap_or_default();
                    let seq = v["entry_seq"].as_i64().unwrap_or_else(|| panic!("no entry_seq in {v}"));
                    log.acked.push((key, seq));
                    if attempt > 1 {
                        log.acked_after_retry += 1;
                    }
                    self.live.acked.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Ok(r)) => {
                    log.refused.push((key, r.status, client::problem_code(r.body).to_owned()));
                    break;
                }
                Ok(Err(_)) => {
                    link.conn = None;
                    *log.errors.entry("io".into()).or_insert(0) += 1;
                    link.server = (link.server + 1) % self.addrs.len();
                }
                Err(_) => {
                    link.conn = None;
                    *log.errors.entry("timeout".into()).or_insert(0) += 1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Minor units of an IDR decimal string ("-12.50" → -1250).
fn minor(text: &str) -> i64 {
    let (neg, digits) = text.strip_prefix('-').map_or((false, text), |d| (true, d));
    let (units, cents) = digits.split_once('.').unwrap_or((digits, "00"));
    let v = units.parse::<i64>().expect("units") * 100 + format!("{cents:0<2}")[..2].parse::<i64>().expect("cents");
    if neg {
        -v
    } else {
        v
    }
}

/// Every check of the issue; panics naming the first that fails. Returns a summary line.
fn check(city: &City, base: &str, load: &LoadResult) -> String {
    let started = Instant::now();
    let acked = acknowledged(load);
    let ledger = read_the_ledger(city, base);
    each_acknowledged_payment_once(city, &acked, &ledger);
    let entries = ledger.entries;
    // Wallets: never negative, and each ends at its top-up minus its payments.
    for (wallet, payments) in &ledger.per_wallet {
        let (lowest, last) = ledger.balances[wallet];
        assert!(lowest >= 0, "wallet {wallet} went down to {lowest}");
        assert_eq!(last, TOPUP_MINOR - payments * AMOUNT_MINOR, "wallet {wallet}: {payments} payments");
    }
    // Trial balance.
    let tb = get_json(base, &city.auditor, "/v1/audit/trial-balance");
    for line in tb["currencies"].as_array().expect("currencies") {
        assert!(line["balanced"] == true && minor(line["balances_sum"].as_str().expect("sum")) == 0, "{tb}");
    }
    assert_eq!(tb["last_entry_seq"].as_i64(), Some(entries as i64), "{tb}");
    // The audit log, through the API, once a checkpoint covers everything.
    std::thread::sleep(Duration::from_millis(600));
    let key = city.verifier.display().to_string();
    let (ok, out, err) = run_kartu(&["audit", "verify", "--url", base, "--token", &city.auditor, "--public-key", &key]);
    assert!(ok, "kartu audit verify --url: {out} {err}");
    format!(
        "{} payments acknowledged ({} after a retry), {} retries ({}), {} entries; checks passed in {:.1} s",
        acked.len(),
        load.acked_after_retry,
        load.retries,
        load.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "),
        entries,
        started.elapsed().as_secs_f64()
    )
}

/// What the clients saw: none gave up, none was refused, every 5xx was clear; returns the
/// acknowledged payments (idempotency key to entry sequence), each acknowledged once.
fn acknowledged(load: &LoadResult) -> HashMap<&str, i64> {
    assert!(load.gave_up.is_empty(), "payments never answered: {:?}", load.gave_up);
    assert!(load.refused.is_empty(), "payments refused: {:?}", &load.refused[..load.refused.len().min(20)]);
    // Clear errors: every 5xx is problem+json with a code a client can act on.
    let unclear: Vec<_> = load.errors.keys().filter(|k| k.starts_with("500") || k.ends_with("no_code")).collect();
    assert!(unclear.is_empty(), "unclear server errors: {unclear:?}");
    let mut acked: HashMap<&str, i64> = HashMap::new();
    for (key, seq) in &load.acked {
        assert!(acked.insert(key, *seq).is_none(), "{key} acknowledged twice by the clients' count");
    }
    assert!(!acked.is_empty(), "no payment was acknowledged");
    acked
}

/// The ledger as the auditor reads it, summed up for the checks.
struct LedgerScan {
    /// How many entries there are (their sequence numbers run 1..=entries without a gap).
    entries: usize,
    /// The payment entries under each merchant reference (the client's idempotency key).
    by_ref: HashMap<String, Vec<i64>>,
    /// How many payments each card wallet made.
    per_wallet: HashMap<String, i64>,
    /// Per account: (lowest balance after, last balance after).
    balances: HashMap<String, (i64, i64)>,
}

/// Every entry, in sequence order, a page at a time (a soak's ledger is large): no gap in
/// the sequence, no card read counter used twice, every payment of `AMOUNT`.
fn read_the_ledger(city: &City, base: &str) -> LedgerScan {
    let mut scan =
        LedgerScan { entries: 0, by_ref: HashMap::new(), per_wallet: HashMap::new(), balances: HashMap::new() };
    let mut counters = HashSet::new();
    let mut cursor = String::new();
    loop {
        let page = get_json(base, &city.auditor, &format!("/v1/audit/entries?limit=1000{cursor}"));
        for e in page["entries"].as_array().expect("entries") {
            scan.entries += 1;
            let seq = e["entry_seq"].as_i64().expect("seq");
            assert_eq!(seq, scan.entries as i64, "the sequence has a gap before {seq}");
            for p in e["postings"].as_array().expect("postings") {
                let account = p["account_id"].as_str().expect("account").to_owned();
                let after = minor(p["balance_after"]["amount"].as_str().expect("balance"));
                let b = scan.balances.entry(account).or_insert((after, after));
                *b = (b.0.min(after), after);
            }
            if e["kind"] != "payment" {
                continue;
            }
            let reference = e["merchant_reference"].as_str().unwrap_or_default().to_owned();
            scan.by_ref.entry(reference).or_default().push(seq);
            let counter = (e["card_id"].to_string(), e["card_read_counter"].as_i64());
            assert!(counters.insert(counter.clone()), "card read counter {counter:?} used twice (entry {seq})");
            assert_eq!(minor(e["amount"]["amount"].as_str().expect("amount")), AMOUNT_MINOR, "entry {seq}");
            *scan.per_wallet.entry(e["account_id"].as_str().expect("wallet").to_owned()).or_insert(0) += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    scan
}

/// Payments: each acknowledged one exactly once, under the seq its client was given; none
/// that no client saw acknowledged; the entries are the set-up's and the payments.
fn each_acknowledged_payment_once(city: &City, acked: &HashMap<&str, i64>, ledger: &LedgerScan) {
    for (key, seq) in acked {
        match ledger.by_ref.get(*key) {
            Some(seqs) if seqs == &vec![*seq] => {}
            Some(seqs) => panic!("acknowledged payment {key} (entry {seq}) is in the ledger as entries {seqs:?}"),
            None => panic!("acknowledged payment {key} (entry {seq}) is not in the ledger"),
        }
    }
    let unacked: Vec<_> = ledger.by_ref.keys().filter(|k| !acked.contains_key(k.as_str())).collect();
    assert!(unacked.is_empty(), "payments in the ledger that no client saw acknowledged: {unacked:?}");
    assert_eq!(
        ledger.entries,
        city.setup_entries + acked.len(),
        "entries = set-up ({}) + acknowledged payments ({})",
        city.setup_entries,
        acked.len()
    );
}

/// `kartu audit verify` on the database itself, with every server stopped.
fn verify_database(city: &City) {
    let key = city.verifier.display().to_string();
    let (ok, out, err) = run_kartu(&[
        "audit",
        "verify",
        "--database-url",
        &city.database_url,
        "--public-key",
        &key,
        "--allow-unsigned-tail",
    ]);
    assert!(ok, "kartu audit verify --database-url: {out} {err}");
}

fn report(scenario: &str, started: Instant, line: &str) {
    eprintln!("crash: {scenario}: {line}; scenario took {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------
// Scenarios.

/// Load for `seconds`; every few seconds (after the load has made progress) `crash` and then
/// `recover`. Returns the number of crashes.
fn crash_loop(
    load: &Load,
    seconds: f64,
    soak: bool,
    logs: &dyn Fn() -> String,
    mut crash: impl FnMut(),
    mut recover: impl FnMut(),
) -> u32 {
    let mut rng = Rng::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut crashes = 0;
    loop {
        let wait = if soak { rng.between(2.0, 6.0) } else { rng.between(0.8, 1.6) };
        if Instant::now() + wait >= end {
            break;
        }
        std::thread::sleep(wait);
        load.wait_for_progress(20, logs);
        crash();
        crashes += 1;
        recover();
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    crashes
}

fn kill9_scenario(name: &str, database_url: Option<&str>) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let mut city = City::new(dir.path(), database_url, 1);
    let setup = started.elapsed();
    let load = city.start_load(name);
    let (seconds, soak) = load_seconds(5.0);
    let logs = logs_of(&city.servers);
    let server = std::cell::RefCell::new(std::mem::take(&mut city.servers));
    let mut down = Duration::ZERO;
    let crashes = crash_loop(
        &load,
        seconds,
        soak,
        &logs,
        || server.borrow_mut()[0].kill9(),
        || {
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            server.borrow_mut()[0].start();
            down += t.elapsed();
        },
    );
    let result = load.finish();
    city.servers = server.into_inner();
    let base = city.servers[0].base();
    let line = check(&city, &base, &result);
    city.servers[0].kill9();
    verify_database(&city);
    assert!(crashes >= 2 || soak, "only {crashes} kill -9");
    report(
        name,
        started,
        &format!(
            "set-up {:.1} s, {:.1} s of load, {crashes} × kill -9 (down {:.1} s in all); {line}; database verifies",
            setup.as_secs_f64(),
            result.seconds,
            down.as_secs_f64()
        ),
    );
}

#[test]
fn kill9_under_load_sqlite() {
    let _g = serial();
    kill9_scenario("kill9_sqlite", None);
}

#[test]
fn kill9_under_load_postgres() {
    let _g = serial();
    let db = PgDb::create(&test_postgres(), "kill9");
    kill9_scenario("kill9_postgres", Some(&db.url));
}

/// PostgreSQL stopped with `-m immediate` (a crash) and started again, several times, under
/// load; the server keeps running and recovers by itself.
#[test]
fn postgres_restart_under_load() {
    let _g = serial();
    let started = Instant::now();
    let cluster = Cluster::new();
    let db = PgDb::create(&cluster.url("postgres"), "pgrestart");
    let dir = tempfile::tempdir().expect("dir");
    let mut city = City::new(dir.path(), Some(&db.url), 1);
    let setup = started.elapsed();
    let load = city.start_load("pgrestart");
    let (seconds, soak) = load_seconds(9.0);
    let mut down = Duration::ZERO;
    let t = std::cell::Cell::new(Instant::now());
    let logs = logs_of(&city.servers);
    let crashes = crash_loop(
        &load,
        seconds,
        soak,
        &logs,
        || {
            t.set(Instant::now());
            cluster.stop_immediate();
        },
        || {
            std::thread::sleep(Duration::from_millis(500));
            cluster.start();
            down += t.get().elapsed();
        },
    );
    // The server must be answering payments again without a restart.
    load.wait_for_progress(20, &logs);
    let result = load.finish();
    assert!(city.servers[0].alive(), "the server died with the database:\n{}", city.servers[0].log_tail());
    assert!(crashes >= 2 || soak, "only {crashes} restarts of PostgreSQL");
    assert!(
        result.errors.contains_key("503 storage_unavailable"),
        "payments while PostgreSQL was down must say so: {:?}",
        result.errors
    );
    let base = city.servers[0].base();
    let line = check(&city, &base, &result);
    city.servers[0].kill9();
    verify_database(&city);
    drop(db);
    report(
        "postgres_restart",
        started,
        &format!(
            "set-up {:.1} s, {:.1} s of load, {crashes} × PostgreSQL stop -m immediate + start (down {:.1} s in all); {line}; database verifies",
            setup.as_secs_f64(),
            result.seconds,
            down.as_secs_f64()
        ),
    );
}

/// Two `kartu serve` processes on one PostgreSQL database, clients on both; one of them is
/// killed with `kill -9` and restarted every few seconds (its clients move to the other).
#[test]
fn two_servers_on_one_postgres() {
    let _g = serial();
    let started = Instant::now();
    let db = PgDb::create(&test_postgres(), "two");
    let dir = tempfile::tempdir().expect("dir");
    let mut city = City::new(dir.path(), Some(&db.url), 2);
    let setup = started.elapsed();
    let load = city.start_load("two");
    let (seconds, soak) = load_seconds(6.0);
    let logs = logs_of(&city.servers);
    let servers = std::cell::RefCell::new(std::mem::take(&mut city.servers));
    let victim = std::cell::Cell::new(0);
    let crashes = crash_loop(
        &load,
        seconds,
        soak,
        &logs,
        || {
            victim.set(1 - victim.get());
            servers.borrow_mut()[victim.get()].kill9();
        },
        || {
            std::thread::sleep(Duration::from_millis(300));
            servers.borrow_mut()[victim.get()].start();
        },
    );
    let result = load.finish();
    city.servers = servers.into_inner();
    // Checked through each server: both see the same ledger.
    let line = check(&city, &city.servers[1].base(), &result);
    let line0 = check(&city, &city.servers[0].base(), &result);
    assert!(!line0.is_empty());
    for s in &mut city.servers {
        s.kill9();
    }
    verify_database(&city);
    report(
        "two_servers_postgres",
        started,
        &format!(
            "set-up {:.1} s, {:.1} s of load on 2 servers, {crashes} × kill -9 of one of them; {line}; database verifies",
            setup.as_secs_f64(),
            result.seconds
        ),
    );
}

/// SQLite on a small filesystem that fills up under load: payments get a clear 5xx
/// problem (and are retried), the server keeps running, nothing is corrupted, and once
/// space is freed everything acknowledged is there once. Runs in a private mount namespace
/// (`unshare`, root) with a tmpfs of its own.
#[test]
fn disk_full_sqlite() {
    if !in_private_mount_namespace("disk_full_sqlite") {
        return;
    }
    let started = Instant::now();
    let (seconds, soak) = load_seconds(4.0);
    let dir = tempfile::tempdir().expect("dir");
    let tmpfs = Tmpfs::mount(&dir.path().join("small"), seconds);
    // The data directory on the small filesystem, the logs outside it.
    let mut city = City::new_on(dir.path(), &tmpfs.path, None, 1);
    let setup = started.elapsed();
    let summary = fill_under_load(&mut city, &tmpfs, "diskfull", (seconds, soak));
    // And it serves again after the crash, on the same (once full) filesystem.
    city.servers[0].start();
    assert_eq!(http_get(city.servers[0].addr(), "/readyz"), Some(200));
    report("disk_full_sqlite", started, &format!("set-up {:.1} s, {summary}", setup.as_secs_f64()));
}

/// PostgreSQL with the ledger's tables in a tablespace on a small filesystem that fills up
/// under load: PostgreSQL refuses to extend a table file (SQLSTATE 53100), payments get
/// `507 storage_full` (and are retried), the server and PostgreSQL keep running, and once
/// space is freed everything acknowledged is there once. A PostgreSQL cluster of the
/// test's own (as `postgres`) in a private mount namespace (`unshare`, root) with a tmpfs
/// of its own, so nothing outlives the test: the tablespace and the database are dropped
/// and the tmpfs unmounted on the way out, even when it fails.
#[test]
fn disk_full_postgres() {
    if !in_private_mount_namespace("disk_full_postgres") {
        return;
    }
    let started = Instant::now();
    let (seconds, soak) = load_seconds(4.0);
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().expect("dir");
    // PostgreSQL (the `postgres` user) must reach the mount point inside the folder.
    assert!(Command::new("chown").arg("postgres").arg(dir.path()).status().expect("chown").success());
    let tmpfs = Tmpfs::mount(&dir.path().join("small"), seconds);
    assert!(Command::new("chown").arg("postgres:").arg(&tmpfs.path).status().expect("chown").success());
    let tablespace = Tablespace::create(&cluster.url("postgres"), "kartu_small", &tmpfs.path);
    let db = PgDb::create(&cluster.url("postgres"), "diskfull");
    // The migrations (`kartu init`, as the owner) create every table and index there.
    tablespace.default_for(&db.name);
    let mut city = City::new(dir.path(), Some(&db.url), 1);
    assert!(used_kib(&tmpfs.path) > 64, "the ledger's tables are not on the small filesystem");
    let setup = started.elapsed();
    let summary = fill_under_load(&mut city, &tmpfs, "pgdiskfull", (seconds, soak));
    city.servers[0].start();
    assert_eq!(http_get(city.servers[0].addr(), "/readyz"), Some(200));
    city.servers[0].kill9();
    drop(db);
    drop(tablespace);
    report("disk_full_postgres", started, &format!("set-up {:.1} s, {summary}", setup.as_secs_f64()));
}

/// Runs this test again in a private mount namespace (`unshare`, root) and asserts it
/// passed there: true in the namespace (go on), false outside (done).
fn in_private_mount_namespace(test: &str) -> bool {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return true;
    }
    let _g = serial();
    assert!(is_root(), "the disk-full tests need root (unshare and mount); make test runs as root");
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(IN_NAMESPACE, "1")
        .status()
        .expect("unshare (util-linux)");
    assert!(status.success(), "{test} failed inside its namespace: {status}");
    false
}

/// Load on the city while its disk fills up, once or (soak) several times: payments fail
/// with a 5xx and are retried, the server keeps running and answering, and after space is
/// freed payments go through again without a restart. Then the books are checked and the
/// server killed. A full disk must have been answered `507 storage_full`. Returns the
/// report's line.
fn fill_under_load(city: &mut City, tmpfs: &Tmpfs, tag: &str, (seconds, soak): (f64, bool)) -> String {
    let load = city.start_load(tag);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let rounds = if soak { (seconds / 8.0).max(1.0) as u32 } else { 1 };
    let mut full_for = Duration::ZERO;
    let mut errors_while_full = 0;
    let logs = logs_of(&city.servers);
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_secs_f64((seconds / f64::from(rounds) / 2.0).max(1.0)));
        load.wait_for_progress(20, &logs);
        // The disk is full.
        let errors_before = load.live.server_errors.load(Ordering::Relaxed);
        let t = Instant::now();
        fill(&tmpfs.path);
        // Payments now fail with a 5xx (the clients retry); wait until some did.
        while load.live.server_errors.load(Ordering::Relaxed) < errors_before + 20 {
            assert!(t.elapsed() < Duration::from_secs(30), "no payment failed in 30 s of a full disk:\n{}", logs());
            assert!(city.servers[0].alive(), "the server died of a full disk:\n{}", city.servers[0].log_tail());
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_secs(1));
        assert!(city.servers[0].alive(), "the server died of a full disk:\n{}", city.servers[0].log_tail());
        assert_eq!(http_get(city.servers[0].addr(), "/healthz"), Some(200), "the server stopped answering");
        errors_while_full += load.live.server_errors.load(Ordering::Relaxed) - errors_before;
        assert!(remount(&tmpfs.path, &tmpfs.size), "could not grow the tmpfs again");
        full_for += t.elapsed();
        // Payments go through again, without a restart.
        load.wait_for_progress(50, &logs);
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let result = load.finish();
    let full_codes: Vec<_> = result.errors.keys().filter(|k| k.starts_with('5')).cloned().collect();
    assert!(full_codes.contains(&"507 storage_full".to_owned()), "a full disk must say so: {full_codes:?}");
    let base = city.servers[0].base();
    let line = check(city, &base, &result);
    city.servers[0].kill9();
    verify_database(city);
    format!(
        "{:.1} s of load, disk full {rounds} time(s) for {:.1} s in all ({errors_while_full} failed attempts while \
         full: {full_codes:?}); {line}; database verifies",
        result.seconds,
        full_for.as_secs_f64()
    )
}

/// A tmpfs mounted for a test (memory only as it fills), unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    /// Its size when not full (`mount -o size=`).
    size: String,
}

impl Tmpfs {
    /// Mounts a tmpfs at `path` (created), sized for `seconds` of load.
    fn mount(path: &Path, seconds: f64) -> Tmpfs {
        let size = format!("{:.0}m", TMPFS_MIB.max(seconds * TMPFS_MIB_PER_SOAK_SECOND));
        std::fs::create_dir(path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "kartu-disk-full"])
            .arg(path)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { path: path.to_owned(), size }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process that still has a file open there (a PostgreSQL not yet
        // stopped) keeps it until it lets go.
        let _ = Command::new("umount").arg("--lazy").arg(&self.path).status();
    }
}

/// A PostgreSQL tablespace, dropped when dropped (after the databases in it).
struct Tablespace {
    admin: String,
    name: String,
}

impl Tablespace {
    fn create(admin: &str, name: &str, location: &Path) -> Tablespace {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut c = diesel::PgConnection::establish(admin).unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
        c.batch_execute(&format!("CREATE TABLESPACE {name} LOCATION '{}'", location.display()))
            .expect("create tablespace");
        Tablespace { admin: admin.to_owned(), name: name.to_owned() }
    }

    /// Makes this the tablespace where `database`'s new tables and indexes go.
    fn default_for(&self, database: &str) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut c = diesel::PgConnection::establish(&self.admin).expect("PostgreSQL");
        c.batch_execute(&format!("ALTER DATABASE {database} SET default_tablespace = {}", self.name))
            .expect("default tablespace");
    }
}

impl Drop for Tablespace {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        if let Ok(mut c) = diesel::PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&format!("DROP TABLESPACE IF EXISTS {}", self.name));
        }
    }
}

/// KiB used on the filesystem at `fs`.
fn used_kib(fs: &Path) -> u64 {
    let out = Command::new("df").args(["-k", "--output=used"]).arg(fs).output().expect("df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

fn remount(fs: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(fs)
        .output()
        .expect("mount")
        .status
        .success()
}

/// Shrinks the tmpfs to what it holds (plus a few pages, gone in a moment): the disk is
/// full. (A tmpfs refuses a size below its use; the use grows under load: try again.)
fn fill(fs: &Path) {
    for _ in 0..100 {
        if remount(fs, &format!("{}k", used_kib(fs) + 64)) {
            return;
        }
    }
    panic!("could not shrink the tmpfs to its use");
}
