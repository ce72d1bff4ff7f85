//! Test fixtures: a fresh database per test on each backend, a real server on a random
//! port (its own actix System on a thread), an HTTP client that keeps 4xx bodies, cards
//! that make genuine SUN taps with the installation's keys, and a small city.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use card::keyfile::KeyFile;
use card::{CardUid, Key, ReadCounter};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};
use serde_json::{json, Value};

pub type TestResult = Result<(), String>;

/// Which database a trial runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Fails the test with a message unless `cond`.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// Fails unless the two are equal.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr) => {
        match (&$a, &$b) {
            (a, b) => {
                if a != b {
                    return Err(format!("{}:{}: {} = {:?}, expected {:?}", file!(), line!(), stringify!($a), a, b));
                }
            }
        }
    };
    ($a:expr, $b:expr, $($fmt:tt)+) => {
        match (&$a, &$b) {
            (a, b) => {
                if a != b {
                    return Err(format!(
                        "{}:{}: {} = {:?}, expected {:?}: {}",
                        file!(), line!(), stringify!($a), a, b, format!($($fmt)+)
                    ));
                }
            }
        }
    };
}

pub fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

// ---- databases ----

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("KARTU_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// A database made for one test, dropped (PostgreSQL) or deleted (SQLite) at the end.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn fresh(backend: Backend) -> Result<TestDb, String> {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        Ok(match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(s)?;
                let url = format!("sqlite://{}", dir.path().join("kartu.db").display());
                TestDb { url, pg_name: None, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let name = format!("kartu_api_test_{}_{}", std::process::id(), n);
                let admin = postgres_admin_url();
                let mut c = PgConnection::establish(&admin)
                    .map_err(|e| format!("PostgreSQL at {admin} is required for the postgres tests: {e}"))?;
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).map_err(s)?;
                c.batch_execute(&format!("CREATE DATABASE {name}")).map_err(s)?;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin).to_owned();
                TestDb { url: format!("{base}/{name}"), pg_name: Some(name), _dir: None }
            }
        })
    }
}

impl TestDb {
    /// The serving role `init` creates for this database (roles are cluster-wide: one per
    /// test database, dropped with it).
    pub fn serve_role(&self) -> Option<String> {
        self.pg_name.as_ref().map(|n| format!("{n}_serve"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut c) = PgConnection::establish(&postgres_admin_url()) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {name}_serve"));
            }
        }
    }
}

// ---- HTTP ----

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub json: Value,
    /// The `Retry-After` header, when there is one.
    pub retry_after: Option<String>,
    /// Every header (names in lower case).
    pub headers: Vec<(String, String)>,
}

impl Resp {
    /// A header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The JSON body if the status is `status`, else an error showing the body.
    pub fn expect(&self, status: u16) -> Result<&Value, String> {
        if self.status != status {
            return Err(format!("expected HTTP {status}, got {}: {}", self.status, self.text));
        }
        Ok(&self.json)
    }

    /// Checks a problem+json error: status, stable code, media type, and the RFC 9457 members.
    pub fn problem(&self, status: u16, code: &str) -> TestResult {
        if self.status != status || self.json["code"] != code {
            return Err(format!("expected {status} {code}, got {}: {}", self.status, self.text));
        }
        check!(
            self.content_type.starts_with("application/problem+json"),
            "error content type {:?}, expected application/problem+json ({})",
            self.content_type,
            self.text
        );
        check_eq!(self.json["status"], json!(status));
        check_eq!(self.json["type"], json!(format!("urn:kartu:problem:{code}")));
        check!(self.json["title"].is_string() && self.json["detail"].is_string(), "title and detail: {}", self.text);
        Ok(())
    }
}

/// A request body: JSON, or raw bytes with a content type.
pub enum Body<'a> {
    None,
    Json(&'a Value),
    Raw(&'a [u8], &'a str),
}

/// A running server and everything a test needs to talk to it.
pub struct Server {
    pub base: String,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// The first operator's token (from `init`).
    pub operator: String,
    pub verifier_key: String,
    pub keys: KeyFile,
    agent: ureq::Agent,
    handle: Option<actix_web::dev::ServerHandle>,
    state: actix_web::web::Data<api::AppState>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    next_key: AtomicU64,
    _data: tempfile::TempDir,
    _db: TestDb,
}

/// How often the test server signs checkpoints (the default is 1 s).
pub const CHECKPOINT_INTERVAL_MS: u64 = 100;

impl Server {
    /// `init` + `load` + `server` on a random port, 2 workers, on its own thread and System.
    /// On PostgreSQL `init` migrates as the owner (the admin URL's user) and sets up the
    /// serving role `<database>_serve`; the server connects as that role, so every trial
    /// runs with exactly the privileges `kartu serve` has in a city.
    pub fn start(backend: Backend) -> Result<Server, String> {
        Server::start_with(backend, |config| config)
    }

    /// [`Server::start`] with the installation's `kartu.toml` edited first (limits).
    pub fn start_with(backend: Backend, edit: impl FnOnce(String) -> String) -> Result<Server, String> {
        Server::start_edited(backend, edit, |keys| keys)
    }

    /// [`Server::start`] with `kartu.toml` and `keys.toml` edited first.
    pub fn start_edited(
        backend: Backend,
        edit: impl FnOnce(String) -> String,
        edit_keys: impl FnOnce(String) -> String,
    ) -> Result<Server, String> {
        let db = TestDb::fresh(backend)?;
        let data = tempfile::tempdir().map_err(s)?;
        let init = api::server::init(data.path(), Some(&db.url), "KARTU-MKS").map_err(s)?;
        check!(init.operator_token.starts_with("kt_"), "operator token {:?}", init.operator_token);
        // Sign checkpoints more often than the default so that proofs come quickly; the
        // configuration file is the installation's, edited as an operator would.
        let config_path = data.path().join(api::server::CONFIG_FILE);
        let config = std::fs::read_to_string(&config_path).map_err(s)?;
        check!(config.contains("checkpoint_interval_ms = 1000"), "config has the default interval: {config}");
        check!(config.contains("hold_sweep_interval_ms = 30000"), "config has the default hold sweep: {config}");
        let config = config
            .replace("checkpoint_interval_ms = 1000", &format!("checkpoint_interval_ms = {CHECKPOINT_INTERVAL_MS}"))
            .replace("hold_sweep_interval_ms = 30000", "hold_sweep_interval_ms = 200");
        std::fs::write(&config_path, edit(config)).map_err(s)?;
        let keys_path = data.path().join(api::server::KEY_FILE);
        let keys = std::fs::read_to_string(&keys_path).map_err(s)?;
        std::fs::write(&keys_path, edit_keys(keys)).map_err(s)?;
        let loaded = api::server::load(data.path(), None).map_err(s)?;
        let keys =
            KeyFile::parse(&std::fs::read_to_string(data.path().join(api::server::KEY_FILE)).map_err(s)?).map_err(s)?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(s)?;
        let addr = listener.local_addr().map_err(s)?;
        let state = loaded.state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = api::server::server(state, listener, 2)?;
                let _ = tx.send(server.handle());
                server.await
            })
        });
        let handle = rx.recv_timeout(Duration::from_secs(20)).map_err(|e| format!("server did not start: {e}"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(80)
            .build()
            .into();
        Ok(Server {
            base: format!("http://{addr}"),
            addr,
            operator: init.operator_token,
            verifier_key: init.verifier_key,
            keys,
            agent,
            handle: Some(handle),
            state: loaded.state,
            thread: Some(thread),
            next_key: AtomicU64::new(1),
            _data: data,
            _db: db,
        })
    }

    /// The database URL as the tables' owner (PostgreSQL) or the file (SQLite).
    pub fn owner_url(&self) -> &str {
        &self._db.url
    }

    /// The URL the server connects with (`database_url` in `kartu.toml`).
    pub fn serve_url(&self) -> Result<String, String> {
        Ok(api::server::Config::load(self._data.path()).map_err(s)?.database_url)
    }

    /// The test database (its serving role).
    pub fn db(&self) -> &TestDb {
        &self._db
    }

    /// The server's database.
    pub fn database_url(&self) -> &str {
        &self._db.url
    }

    /// Runs SQL on the server's database as its owner would: behind the API.
    pub fn owner_sql(&self, sql: &str) -> TestResult {
        let url = self.database_url();
        match url.strip_prefix("sqlite://") {
            Some(path) => {
                let mut c = diesel::sqlite::SqliteConnection::establish(path).map_err(s)?;
                // The running server signs checkpoints meanwhile: wait for its lock.
                c.batch_execute(&format!("PRAGMA busy_timeout = 10000; {sql}"))
            }
            None => PgConnection::establish(url).map_err(s)?.batch_execute(sql),
        }
        .map_err(|e| format!("{sql}: {e}"))
    }

    /// The text a query selects as `v`, read as the database's owner.
    pub fn owner_query(&self, sql: &str) -> Result<String, String> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        let url = self.database_url();
        let row: Row = match url.strip_prefix("sqlite://") {
            Some(path) => {
                diesel::sql_query(sql).get_result(&mut diesel::sqlite::SqliteConnection::establish(path).map_err(s)?)
            }
            None => diesel::sql_query(sql).get_result(&mut PgConnection::establish(url).map_err(s)?),
        }
        .map_err(|e| format!("{sql}: {e}"))?;
        Ok(row.v)
    }

    /// A blob literal in the server's database's SQL.
    pub fn blob(&self, bytes: &[u8]) -> String {
        if self.database_url().starts_with("sqlite://") {
            format!("X'{}'", hex::encode(bytes))
        } else {
            format!("'\\x{}'::bytea", hex::encode(bytes))
        }
    }

    /// The same server spoken to at `base` through `agent` (HTTPS with a test CA).
    pub fn over(mut self, base: String, agent: ureq::Agent) -> Server {
        self.use_client(base, agent);
        self
    }

    /// From now on, speaks to the server at `base` through `agent`.
    pub fn use_client(&mut self, base: String, agent: ureq::Agent) {
        self.base = base;
        self.agent = agent;
    }

    /// A fresh Idempotency-Key.
    pub fn key(&self) -> String {
        format!("k-{}", self.next_key.fetch_add(1, Ordering::Relaxed))
    }

    /// Any request; its response is checked against the server's `/openapi.json`
    /// (`conformance`: an undocumented response fails the run at its end).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Body<'_>,
    ) -> Result<Resp, String> {
        let r = self.send_unchecked(method, path, token, key, body)?;
        let contract = crate::conformance::contract(|| {
            let doc = self.send_unchecked("GET", "/openapi.json", None, None, Body::None)?;
            check!(doc.status == 200, "/openapi.json: {} {}", doc.status, doc.text);
            Ok(doc.json)
        })?;
        let allow = r.headers.iter().find(|(n, _)| n == "allow").map(|(_, v)| v.as_str());
        let seen = crate::conformance::Seen {
            method,
            path,
            status: r.status,
            content_type: &r.content_type,
            allow,
            text: &r.text,
        };
        // Recorded, not returned: the run fails at its end, listing every such response.
        let _ = crate::conformance::observe(contract, &seen);
        Ok(r)
    }

    /// A GET asking for CSV (`Accept: text/csv`); checked against the document like [`Self::send`].
    pub fn get_csv(&self, path: &str, token: &str) -> Result<Resp, String> {
        let r = self.send_accepting("GET", path, Some(token), None, Some("text/csv"), Body::None)?;
        let contract = crate::conformance::contract(|| {
            let doc = self.send_unchecked("GET", "/openapi.json", None, None, Body::None)?;
            Ok(doc.json)
        })?;
        let seen = crate::conformance::Seen {
            method: "GET",
            path,
            status: r.status,
            content_type: &r.content_type,
            allow: None,
            text: &r.text,
        };
        let _ = crate::conformance::observe(contract, &seen);
        Ok(r)
    }

    /// Any request, its response not checked against the document.
    pub fn send_unchecked(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Body<'_>,
    ) -> Result<Resp, String> {
        self.send_accepting(method, path, token, key, None, body)
    }

    /// [`Self::send_unchecked`] with an `Accept` header.
    pub fn send_accepting(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        accept: Option<&str>,
        body: Body<'_>,
    ) -> Result<Resp, String> {
        let mut b = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if let Some(k) = key {
            b = b.header("idempotency-key", k);
        }
        let bytes: Vec<u8> = match body {
            Body::None => Vec::new(),
            Body::Json(v) => {
                b = b.header("content-type", "application/json");
                serde_json::to_vec(v).map_err(s)?
            }
            Body::Raw(bytes, content_type) => {
                b = b.header("content-type", content_type);
                bytes.to_vec()
            }
        };
        let request = b.body(bytes).map_err(s)?;
        let mut response = self.agent.run(request).map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let text = response.body_mut().read_to_string().map_err(|e| format!("{method} {path}: body: {e}"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp { status, content_type, text, json, retry_after, headers })
    }

    pub fn get(&self, path: &str, token: &str) -> Result<Resp, String> {
        self.send("GET", path, Some(token), None, Body::None)
    }

    pub fn get_public(&self, path: &str) -> Result<Resp, String> {
        self.send("GET", path, None, None, Body::None)
    }

    /// A write with a fresh Idempotency-Key.
    pub fn post(&self, path: &str, token: &str, body: &Value) -> Result<Resp, String> {
        let key = self.key();
        self.send("POST", path, Some(token), Some(&key), Body::Json(body))
    }

    /// A write with the given key.
    pub fn post_k(&self, path: &str, token: &str, key: &str, body: &Value) -> Result<Resp, String> {
        self.send("POST", path, Some(token), Some(key), Body::Json(body))
    }

    /// A write without a body.
    pub fn post_empty(&self, path: &str, token: &str) -> Result<Resp, String> {
        let key = self.key();
        self.send("POST", path, Some(token), Some(&key), Body::None)
    }

    // ---- registry ----

    pub fn holder(&self, name: &str, nik: &str, categories: &[&str]) -> Result<String, String> {
        let r =
            self.post("/v1/holders", &self.operator, &json!({"name": name, "nik": nik, "categories": categories}))?;
        id(r.expect(201)?)
    }

    /// Issues a card with a new random-looking UID derived from `n`.
    pub fn card(&self, holder_id: &str, n: u32) -> Result<TestCard, String> {
        let uid = format!("04{:08X}C080", n.wrapping_mul(2_654_435_761));
        let r = self.post("/v1/cards", &self.operator, &json!({"uid": uid, "holder_id": holder_id}))?;
        let v = r.expect(201)?;
        check_eq!(v["uid"], json!(uid));
        check_eq!(v["status"], json!("active"));
        check_eq!(v["balance"], json!({"amount": "0.00", "currency": "IDR"}));
        Ok(TestCard {
            id: id(v)?,
            uid,
            account_id: v["account_id"].as_str().ok_or("account_id")?.to_owned(),
            counter: AtomicU32::new(0),
        })
    }

    pub fn merchant(&self, name: &str, category: &str, fee_rate: &str) -> Result<(String, String), String> {
        let r = self.post(
            "/v1/merchants",
            &self.operator,
            &json!({"name": name, "category": category, "fee_rate": fee_rate}),
        )?;
        let v = r.expect(201)?;
        Ok((id(v)?, v["account_id"].as_str().ok_or("account_id")?.to_owned()))
    }

    /// A credential's token.
    pub fn credential(&self, role: &str, name: &str, scope: Option<(&str, &str)>) -> Result<String, String> {
        let mut body = json!({"role": role, "name": name});
        if let Some((field, value)) = scope {
            body[field] = json!(value);
        }
        let r = self.post("/v1/credentials", &self.operator, &body)?;
        let v = r.expect(201)?;
        let token = v["token"].as_str().ok_or_else(|| format!("no token: {v}"))?;
        check!(token.starts_with("kt_"), "token {token:?}");
        Ok(token.to_owned())
    }

    /// A credential's id and token.
    pub fn credential_with_id(&self, role: &str, name: &str) -> Result<(String, String), String> {
        let r = self.post("/v1/credentials", &self.operator, &json!({"role": role, "name": name}))?;
        let v = r.expect(201)?;
        Ok((id(v)?, v["token"].as_str().ok_or("token")?.to_owned()))
    }

    /// An operator credential for another person, made on the host as `kartu operator add`
    /// makes it (over the API it needs a second person's approval): (id, token).
    pub fn add_operator(&self, person: &str) -> Result<(String, String), String> {
        let (id, token) = api::server::add_operator(self._data.path(), None, person).map_err(s)?;
        check!(token.starts_with("kt_"), "token {token:?}");
        Ok((id.to_string(), token))
    }

    /// A DELETE with a fresh Idempotency-Key.
    pub fn delete(&self, path: &str, token: &str) -> Result<Resp, String> {
        let key = self.key();
        self.send("DELETE", path, Some(token), Some(&key), Body::None)
    }

    /// A genuine tap of `card` with its next read counter.
    pub fn tap(&self, card: &TestCard) -> Value {
        let counter = card.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.tap_at(&card.uid, counter)
    }

    /// A genuine tap of the card `uid` with the given read counter (SPEC §6): PICCData
    /// encrypted with the meta-read key, MAC with the AN10922-diversified file-read key.
    pub fn tap_at(&self, uid: &str, counter: u32) -> Value {
        let set = self.keys.newest();
        tap_with(set.sdm_meta_read_key(), set.sdm_file_read_master_key(), b"KARTU-MKS", uid, counter)
    }

    // ---- reads an auditor makes ----

    /// (last_entry_seq, every currency balanced).
    pub fn trial(&self, auditor: &str) -> Result<(i64, bool), String> {
        let r = self.get("/v1/audit/trial-balance", auditor)?;
        let v = r.expect(200)?;
        let balanced = v["currencies"].as_array().ok_or("currencies")?.iter().all(|c| c["balanced"] == json!(true));
        Ok((v["last_entry_seq"].as_i64().ok_or("last_entry_seq")?, balanced))
    }

    /// Leaves in the audit log.
    pub fn tree_size(&self) -> Result<i64, String> {
        let r = self.get_public("/readyz")?;
        r.expect(200)?["tree_size"].as_i64().ok_or_else(|| "tree_size".into())
    }

    /// An account's balance, read by an auditor, in the wire form.
    pub fn balance(&self, auditor: &str, account_id: &str) -> Result<String, String> {
        let r = self.get(&format!("/v1/audit/accounts/{account_id}/balance"), auditor)?;
        let v = r.expect(200)?;
        check_eq!(v["balance"]["currency"], json!("IDR"));
        Ok(v["balance"]["amount"].as_str().ok_or("amount")?.to_owned())
    }

    /// Every journal entry.
    pub fn entries(&self, auditor: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut path = "/v1/audit/entries?limit=1000".to_owned();
        loop {
            let r = self.get(&path, auditor)?;
            let v = r.expect(200)?;
            out.extend(v["entries"].as_array().ok_or("entries")?.iter().cloned());
            match v["next_cursor"].as_str() {
                Some(c) => path = format!("/v1/audit/entries?limit=1000&cursor={c}"),
                None => return Ok(out),
            }
        }
    }

    /// Every leaf of the audit log: (leaf_index, kind, leaf bytes, leaf_hash).
    pub fn leaves(&self, auditor: &str) -> Result<Vec<Leaf>, String> {
        let mut out = Vec::new();
        loop {
            let r = self.get(&format!("/v1/audit/leaves?from={}&limit=1000", out.len()), auditor)?;
            let v = r.expect(200)?;
            let page = v["leaves"].as_array().ok_or("leaves")?;
            for l in page {
                out.push((
                    l["leaf_index"].as_i64().ok_or("leaf_index")?,
                    l["kind"].as_str().ok_or("kind")?.to_owned(),
                    hex::decode(l["leaf"].as_str().ok_or("leaf")?).map_err(s)?,
                    l["leaf_hash"].as_str().ok_or("leaf_hash")?.to_owned(),
                ));
            }
            if v["next_cursor"].is_null() {
                return Ok(out);
            }
        }
    }

    /// Waits until a signed checkpoint covers at least `size` leaves; returns its note.
    pub fn checkpoint_covering(&self, size: i64) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.get_public("/v1/audit/checkpoints/latest")?;
            if r.status == 200 {
                let tree_size: i64 =
                    r.text.lines().nth(1).and_then(|l| l.parse().ok()).ok_or_else(|| format!("note: {}", r.text))?;
                if tree_size >= size {
                    return Ok(r.text);
                }
            }
            check!(Instant::now() < deadline, "no checkpoint covers {size} leaves after 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            actix_web::rt::System::new().block_on(handle.stop(true));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // As `kartu serve` does: write what is queued, then stop the ledger's threads.
        self.state.ledger.shutdown();
    }
}

/// A SUN tap built from keys, UID and counter, as a card mirrors it.
pub fn tap_with(meta: &Key, file_master: &Key, system_identifier: &[u8], uid: &str, counter: u32) -> Value {
    let uid = CardUid::from_hex(uid).expect("test UID");
    let counter = ReadCounter::new(counter).expect("test counter");
    let card_key = card::diversify_card_key(file_master, &uid, 2, system_identifier).expect("diversify");
    let picc = card::sun::encrypt_picc_data(meta, &uid, counter, [0x5A; 5]);
    let mac = card::sun::sdm_mac(&card_key, &uid, counter, &[]);
    let (picc, mac) = (hex::encode_upper(picc), hex::encode_upper(mac));
    assert_eq!((picc.len(), mac.len()), (32, 16));
    json!({"picc_data": picc, "cmac": mac})
}

/// A leaf of the audit log: (leaf_index, kind, leaf bytes, leaf_hash in hex).
pub type Leaf = (i64, String, Vec<u8>, String);

/// A card issued by the test.
#[derive(Debug)]
pub struct TestCard {
    pub id: String,
    pub uid: String,
    pub account_id: String,
    /// The last read counter used.
    pub counter: AtomicU32,
}

/// The `id` of a created object.
pub fn id(v: &Value) -> Result<String, String> {
    v["id"].as_str().map(str::to_owned).ok_or_else(|| format!("no string id in {v}"))
}

/// `{"amount": "...", "currency": "IDR"}`.
pub fn idr(amount: &str) -> Value {
    json!({"amount": amount, "currency": "IDR"})
}

/// A small city: two merchants with terminals, an agent with float, a kiosk, an auditor, a
/// second operator, and one holder with a funded card.
pub struct City {
    pub s: Server,
    pub merchant_a: String,
    pub merchant_a_account: String,
    pub pos_a: String,
    pub merchant_b: String,
    pub merchant_b_account: String,
    pub pos_b: String,
    pub agent: String,
    pub agent_account: String,
    pub teller: String,
    pub kiosk: String,
    pub auditor: String,
    pub operator2: String,
    pub operator2_id: String,
    pub holder: String,
    pub card: TestCard,
}

/// The agent's opening float.
pub const AGENT_FLOAT: &str = "50000000.00";

impl City {
    /// A server and a city; the card is topped up with `card_balance` (none for "0.00").
    pub fn new(backend: Backend, card_balance: &str) -> Result<City, String> {
        City::on(Server::start(backend)?, card_balance)
    }

    /// A city on a server already started.
    pub fn on(s: Server, card_balance: &str) -> Result<City, String> {
        let op = s.operator.clone();
        let (merchant_a, merchant_a_account) = s.merchant("Toko Sinar", "grocery", "0.007")?;
        let (merchant_b, merchant_b_account) = s.merchant("Hotel Losari", "hotel", "0.015")?;
        let pos_a = s.credential("merchant_terminal", "pos A1", Some(("merchant_id", &merchant_a)))?;
        let pos_b = s.credential("merchant_terminal", "pos B1", Some(("merchant_id", &merchant_b)))?;
        let r = s.post("/v1/agents", &op, &json!({"name": "Bank Sulsel teller"}))?;
        let v = r.expect(201)?;
        let agent = id(v)?;
        let agent_account = v["account_id"].as_str().ok_or("account_id")?.to_owned();
        check_eq!(v["float"], idr("0.00"));
        let r = s.post(&format!("/v1/agents/{agent}/float"), &op, &idr(AGENT_FLOAT))?;
        check_eq!(r.expect(201)?["balance"], idr(AGENT_FLOAT));
        let teller = s.credential("top_up_agent", "teller 1", Some(("agent_id", &agent)))?;
        let kiosk = s.credential("kiosk", "kiosk 1", None)?;
        let auditor = s.credential("auditor", "BPK auditor", None)?;
        let (operator2_id, operator2) = s.add_operator("second operator")?;
        let holder = s.holder("Andi Wijaya", "7371010101900001", &["resident"])?;
        let card = s.card(&holder, 1)?;
        if card_balance != "0.00" {
            let r = s.post("/v1/topups", &teller, &json!({"card_id": card.id, "amount": card_balance}))?;
            check_eq!(r.expect(201)?["balance"], idr(card_balance));
        }
        Ok(City {
            s,
            merchant_a,
            merchant_a_account,
            pos_a,
            merchant_b,
            merchant_b_account,
            pos_b,
            agent,
            agent_account,
            teller,
            kiosk,
            auditor,
            operator2,
            operator2_id,
            holder,
            card,
        })
    }

    /// A payment at merchant A's terminal.
    pub fn pay(&self, card: &TestCard, amount: &str) -> Result<Resp, String> {
        self.s.post("/v1/payments", &self.pos_a, &json!({"tap": self.s.tap(card), "amount": amount, "currency": "IDR"}))
    }
}
