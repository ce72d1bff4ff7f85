//! `kartu init` and `kartu serve`: the data directory, the configuration (a TOML file,
//! overridden by `KARTU_*` variables), and the HTTP server with graceful shutdown.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use card::keyfile::{CheckpointSecret, KeyFile};
use ledger::domain::Event;
use ledger::money::Currency;
use ledger::{CheckpointSettings, Ledger, LedgerConfig};
use serde::{Deserialize, Serialize};

use crate::auth::{new_token, token_hash, Role};
use crate::taps::TapKeys;
use crate::{AppState, Settings};

/// The configuration file name in the data directory.
pub const CONFIG_FILE: &str = "kartu.toml";
/// The server's key file name in the data directory: the SDM keys that verify taps and
/// the checkpoint key; never a card's key 0 ([`load`] refuses an `app_master_key`).
pub const KEY_FILE: &str = "keys.toml";
/// The issuance key file `kartu init` writes beside it: every card key including key 0
/// (`app_master_key`), for `kartu card personalize` on the personalisation workstation.
/// `kartu serve` never reads it; it belongs off the server.
pub const ISSUANCE_KEY_FILE: &str = "issuance-keys.toml";
/// The NIK hashing key file name.
pub const NIK_KEY_FILE: &str = "nik.key";

/// `DATA/kartu.toml`; every field can be overridden by `KARTU_<FIELD>` (upper case).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://path` or `postgres://...`.
    pub database_url: String,
    /// Address to listen on.
    pub listen: String,
    /// The installation's currency.
    pub currency: String,
    /// The audit log's origin line (e.g. `makassar.example/kartu`).
    pub origin: String,
    /// Checkpoint signing interval.
    pub checkpoint_interval_ms: u64,
    /// `/readyz` answers 503 `checkpoint_behind` when the oldest leaf no signed checkpoint
    /// covers is older than this, ms.
    #[serde(default = "default_checkpoint_lag_max_ms")]
    pub checkpoint_lag_max_ms: u64,
    /// `/readyz` answers 503 `writer_stuck` when one writer batch has run longer than
    /// this, ms (a database that does not answer, a lock held elsewhere).
    #[serde(default = "default_checkpoint_lag_max_ms")]
    pub writer_stall_max_ms: u64,
    /// Maximum balance of a new card wallet, decimal.
    pub wallet_balance_max: String,
    /// HTTP worker threads (0: one per core).
    #[serde(default)]
    pub workers: usize,
    /// How often expired holds are voided (their money goes back to the card).
    #[serde(default = "default_hold_sweep_interval_ms")]
    pub hold_sweep_interval_ms: u64,
    /// A PostgreSQL streaming replica that audit, statement, transparency and report reads
    /// go to (`--read-database-url`, `KARTU_READ_DATABASE_URL`); absent: the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_database_url: Option<String>,
    /// Webhooks: the first retry's wait, ms; each next one waits twice as long (at most an
    /// hour), and a delivery is given up after 12 attempts.
    #[serde(default = "default_webhook_retry_base_ms")]
    pub webhook_retry_base_ms: u64,
    /// The bearer token `/metrics` requires; open when absent (`KARTU_METRICS_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    /// An agent float funding above this, in minor units, waits for a second operator's
    /// approval (at or below it is posted at once).
    #[serde(default = "default_float_approval_threshold_minor")]
    pub float_approval_threshold_minor: i64,
    /// How long `/v1/transparency` answers today's totals from its cache, ms (closed days
    /// are computed once).
    #[serde(default = "default_transparency_cache_ms")]
    pub transparency_cache_ms: u64,
    /// Serve even when the database user owns the journal tables, is a superuser or may do
    /// more than serving needs (PostgreSQL; `KARTU_ALLOW_OWNER`, `kartu serve
    /// --allow-owner`): for a laptop demo only. See docs/OPERATIONS.md, "Database roles".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_owner: bool,
    /// The PEM certificate chain to serve HTTPS with (with `tls_key`); relative to the data
    /// directory (`KARTU_TLS_CERT`). Without it `kartu serve` speaks plain HTTP: for loopback
    /// or behind a proxy that terminates TLS. Reloaded on SIGHUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (PKCS#8, PKCS#1 or SEC1), readable by its owner only;
    /// relative to the data directory (`KARTU_TLS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// A second address serving `/metrics` only, plain HTTP (`KARTU_METRICS_LISTEN`); the
    /// main listener then answers 404 for `/metrics`. `metrics_token` still applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// The city's time zone (IANA name, `KARTU_TIMEZONE`): the days of the books on
    /// `/transparency` and the times the citizens' pages show.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Money and tap limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

fn default_checkpoint_lag_max_ms() -> u64 {
    10_000
}

fn default_timezone() -> String {
    "Asia/Jakarta".into()
}

fn default_transparency_cache_ms() -> u64 {
    5_000
}

fn default_hold_sweep_interval_ms() -> u64 {
    30_000
}

fn default_webhook_retry_base_ms() -> u64 {
    1_000
}

/// The default float approval threshold: Rp 50,000,000.00.
pub const DEFAULT_FLOAT_APPROVAL_THRESHOLD_MINOR: i64 = 5_000_000_000;

fn default_float_approval_threshold_minor() -> i64 {
    DEFAULT_FLOAT_APPROVAL_THRESHOLD_MINOR
}

/// The person of the first operator when `kartu init` is given none.
pub const FIRST_OPERATOR: &str = "first operator";
/// `[limits]` in `kartu.toml`: decimal amounts in the installation's currency.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest card payment, hold or offline payment.
    pub payment_max: String,
    /// Largest top-up.
    pub topup_max: String,
    /// Largest funding of an agent's float.
    pub float_funding_max: String,
    /// Most the city covers in shortfalls of one merchant's offline payments in 24 hours.
    pub offline_risk_per_merchant: String,
    /// Oldest offline record accepted, hours (a terminal's own `max_offline_hours` wins).
    pub offline_max_age_hours: u32,
    /// How far below a card's last read counter an unused tap racing to the server is
    /// still accepted.
    pub tap_race_counters: i64,
    /// For how long after the tap that raised the last counter, ms.
    pub tap_race_window_ms: i64,
    /// Requests a second each credential may make (0: no limit).
    pub rate_limit_per_second: u32,
    /// How many at once before the limit applies.
    pub rate_limit_burst: u32,
    /// Whether requests from this machine (loopback) are limited too.
    pub rate_limit_loopback: bool,
    /// How long a client may take to send a request's headers, ms (then 408).
    pub request_timeout_ms: u64,
    /// How long a client may take to send a request's body once its headers are in, ms
    /// (then `408 request_timeout`).
    pub body_timeout_ms: u64,
    /// Most open connections per worker.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            payment_max: "10000000.00".into(),
            topup_max: "2000000.00".into(),
            float_funding_max: "1000000000.00".into(),
            offline_risk_per_merchant: "5000000.00".into(),
            offline_max_age_hours: 72,
            tap_race_counters: ledger::domain::TAP_RACE_COUNTERS_DEFAULT,
            tap_race_window_ms: ledger::domain::TAP_RACE_WINDOW_US_DEFAULT / 1000,
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            rate_limit_loopback: false,
            request_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            max_connections: 25_000,
        }
    }
}

impl LimitsConfig {
    fn money(&self, currency: Currency) -> Result<crate::MoneyLimits, SetupError> {
        let amount = |field: &str, text: &str| {
            ledger::money::Amount::parse(text, currency, ledger::money::AMOUNT_MAX_MINOR)
                .map(|a| a.minor())
                .map_err(|e| err(&format!("limits.{field}"), e))
        };
        if self.tap_race_counters < 0 || self.tap_race_window_ms < 0 {
            return Err(SetupError("limits.tap_race_counters and tap_race_window_ms must be 0 or more".into()));
        }
        Ok(crate::MoneyLimits {
            payment_max_minor: amount("payment_max", &self.payment_max)?,
            topup_max_minor: amount("topup_max", &self.topup_max)?,
            float_funding_max_minor: amount("float_funding_max", &self.float_funding_max)?,
            offline_risk_per_merchant_minor: amount("offline_risk_per_merchant", &self.offline_risk_per_merchant)?,
            offline_max_age_us: i64::from(self.offline_max_age_hours) * 3_600_000_000,
        })
    }
}

/// Errors of set-up, with a message for the operator.
pub use crate::error::SetupError;

pub(crate) fn err(context: &str, e: impl std::fmt::Display) -> SetupError {
    SetupError(format!("{context}: {e}"))
}

impl Config {
    /// Defaults for a data directory.
    pub fn defaults(data_dir: &Path) -> Config {
        Config {
            database_url: format!("sqlite://{}", data_dir.join("kartu.db").display()),
            listen: "127.0.0.1:8080".into(),
            currency: "IDR".into(),
            origin: "kartu.example/log".into(),
            checkpoint_interval_ms: 1000,
            checkpoint_lag_max_ms: default_checkpoint_lag_max_ms(),
            writer_stall_max_ms: default_checkpoint_lag_max_ms(),
            wallet_balance_max: "2000000.00".into(),
            workers: 0,
            hold_sweep_interval_ms: default_hold_sweep_interval_ms(),
            webhook_retry_base_ms: default_webhook_retry_base_ms(),
            read_database_url: None,
            metrics_token: None,
            float_approval_threshold_minor: DEFAULT_FLOAT_APPROVAL_THRESHOLD_MINOR,
            transparency_cache_ms: default_transparency_cache_ms(),
            allow_owner: false,
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            timezone: default_timezone(),
            limits: LimitsConfig::default(),
        }
    }

    /// Reads `DATA/kartu.toml`, then applies `KARTU_*` overrides.
    pub fn load(data_dir: &Path) -> Result<Config, SetupError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| err(&format!("reading {} (run `kartu init` first)", path.display()), e))?;
        let mut c: Config = toml::from_str(&text).map_err(|e| err(&format!("{} is not valid", path.display()), e))?;
        let var = |n: &str| std::env::var(format!("KARTU_{n}")).ok();
        if let Some(v) = var("DATABASE_URL") {
            c.database_url = v;
        }
        if let Some(v) = var("LISTEN") {
            c.listen = v;
        }
        if let Some(v) = var("READ_DATABASE_URL") {
            c.read_database_url = Some(v);
        }
        if let Some(v) = var("ORIGIN") {
            c.origin = v;
        }
        if let Some(v) = var("TIMEZONE") {
            c.timezone = v;
        }
        if let Some(v) = var("CHECKPOINT_INTERVAL_MS") {
            c.checkpoint_interval_ms = v.parse().map_err(|e| err("KARTU_CHECKPOINT_INTERVAL_MS", e))?;
        }
        if let Some(v) = var("HOLD_SWEEP_INTERVAL_MS") {
            c.hold_sweep_interval_ms = v.parse().map_err(|e| err("KARTU_HOLD_SWEEP_INTERVAL_MS", e))?;
        }
        if let Some(v) = var("FLOAT_APPROVAL_THRESHOLD_MINOR") {
            c.float_approval_threshold_minor = v.parse().map_err(|e| err("KARTU_FLOAT_APPROVAL_THRESHOLD_MINOR", e))?;
        }
        if c.float_approval_threshold_minor < 0 {
            return Err(SetupError("float_approval_threshold_minor must be 0 or more".into()));
        }
        if let Some(v) = var("METRICS_TOKEN") {
            c.metrics_token = Some(v);
        }
        if let Some(v) = var("ALLOW_OWNER") {
            c.allow_owner = match v.as_str() {
                "1" | "true" => true,
                "0" | "false" | "" => false,
                _ => return Err(SetupError(format!("KARTU_ALLOW_OWNER must be true or false, not {v:?}"))),
            };
        }
        if let Some(v) = var("WORKERS") {
            c.workers = v.parse().map_err(|e| err("KARTU_WORKERS", e))?;
        }
        if let Some(v) = var("TLS_CERT") {
            c.tls_cert = Some(v.into());
        }
        if let Some(v) = var("TLS_KEY") {
            c.tls_key = Some(v.into());
        }
        if let Some(v) = var("METRICS_LISTEN") {
            c.metrics_listen = Some(v);
        }
        Ok(c)
    }

    /// The certificate and key files, made absolute against the data directory; `None`
    /// without TLS. One without the other is an error.
    pub fn tls_files(&self, data_dir: &Path) -> Result<Option<(PathBuf, PathBuf)>, SetupError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((data_dir.join(cert), data_dir.join(key)))),
            (None, None) => Ok(None),
            _ => Err(SetupError("tls_cert and tls_key go together: give both (HTTPS) or neither (plain HTTP)".into())),
        }
    }
}

pub(crate) fn write_secret(path: &Path, contents: &str) -> Result<(), SetupError> {
    files::create_private(path, contents.as_bytes()).map_err(|e| SetupError(e.to_string()))
}

fn random<const N: usize>() -> Result<[u8; N], SetupError> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| SetupError("no randomness".into()))?;
    Ok(b)
}

/// What `kartu init` made.
#[derive(Debug)]
pub struct Initialised {
    /// The configuration written.
    pub config: Config,
    /// The first operator's token: shown once.
    pub operator_token: String,
    /// The checkpoint verifier key line.
    pub verifier_key: String,
    /// The issuance key file (card key 0 of every card), to be moved off the server.
    pub issuance_key_file: PathBuf,
    /// On PostgreSQL: the serving role set up, whose URL `kartu.toml` serves with.
    pub serve_role: Option<ledger::roles::RoleReport>,
}

/// The serving role `kartu init` sets up on PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct ServeRole {
    /// Its name; the database's name and `_serve` when none.
    pub name: Option<String>,
    /// Its password (from a file), written into `kartu.toml`'s URL; none: it logs in as
    /// `pg_hba.conf` allows (peer, certificate, trust) or with `PGPASSWORD`/`~/.pgpass`.
    pub password: Option<String>,
}

/// Creates the data directory, its configuration, the key file (new random card master
/// keys and checkpoint key), the NIK key, the database, and the first operator credential
/// (its person [`FIRST_OPERATOR`]). Refuses a directory that already has a configuration.
pub fn init(data_dir: &Path, database_url: Option<&str>, system_identifier: &str) -> Result<Initialised, SetupError> {
    init_with(data_dir, database_url, system_identifier, FIRST_OPERATOR)
}

/// [`init`], the first operator credential belonging to `operator_name`.
pub fn init_with(
    data_dir: &Path,
    database_url: Option<&str>,
    system_identifier: &str,
    operator_name: &str,
) -> Result<Initialised, SetupError> {
    init_full(data_dir, database_url, system_identifier, operator_name, &ServeRole::default())
}

/// [`init_with`]; on PostgreSQL (`database_url` is then the tables' owner's) the serving
/// role `serve_role` is created if missing and granted, and `kartu.toml` serves as it.
pub fn init_full(
    data_dir: &Path,
    database_url: Option<&str>,
    system_identifier: &str,
    operator_name: &str,
    serve_role: &ServeRole,
) -> Result<Initialised, SetupError> {
    let person = crate::operator::approvals::person_name(operator_name).map_err(|e| err("operator name", e.detail))?;
    std::fs::create_dir_all(data_dir).map_err(|e| err(&format!("creating {}", data_dir.display()), e))?;
    let data_dir = data_dir.canonicalize().map_err(|e| err("data directory", e))?;
    if data_dir.join(CONFIG_FILE).exists() {
        return Err(SetupError(format!("{} already holds a Kartu installation", data_dir.display())));
    }
    // The data directory holds the keys and (on SQLite) the money: its owner only.
    set_mode(&data_dir, 0o700)?;
    let mut config = Config::defaults(&data_dir);
    if let Some(url) = database_url {
        config.database_url = url.to_owned();
    }
    let sysid = card::SystemIdentifier::parse(system_identifier).map_err(|e| err("system identifier", e))?;
    let pkcs8 =
        merkle::Signer::generate_pkcs8(&ring::rand::SystemRandom::new()).map_err(|e| err("checkpoint key", e))?;
    let keys = KeyFile::generate(sysid, &random::<{ card::keyfile::GENERATE_RANDOM_LEN }>()?)
        .with_checkpoint(CheckpointSecret::from_bytes(pkcs8.clone()));
    let owner_url = config.database_url.clone();
    ledger::migrate(&owner_url).map_err(|e| err("migrating the database", e))?;
    let serve_role =
        if ledger::Backend::of_url(&owner_url).map_err(|e| err("database URL", e))? == ledger::Backend::Postgres {
            let name = match &serve_role.name {
                Some(n) => n.clone(),
                None => ledger::roles::default_serve_role(&owner_url).map_err(|e| err("the serving role", e))?,
            };
            let password = serve_role.password.as_deref();
            let report = ledger::roles::setup_serve_role(&owner_url, &name, password)
                .map_err(|e| err("setting up the serving role", e))?;
            config.database_url =
                ledger::roles::serve_url(&owner_url, &name, password).map_err(|e| err("the serving role's URL", e))?;
            Some(report)
        } else {
            None
        };
    // Apart: the server verifies taps and signs; only issuance rewrites cards.
    write_secret(&data_dir.join(KEY_FILE), &keys.server_part().to_toml())?;
    let issuance_key_file = data_dir.join(ISSUANCE_KEY_FILE);
    write_secret(&issuance_key_file, &keys.issuance_part().to_toml())?;
    write_secret(&data_dir.join(NIK_KEY_FILE), &format!("{}\n", hex::encode(random::<32>()?)))?;
    let text = toml::to_string(&config).map_err(|e| err("configuration", e))?;
    write_secret(&data_dir.join(CONFIG_FILE), &text)?;
    if let Some(path) = config.database_url.strip_prefix("sqlite://") {
        set_mode(Path::new(path), 0o600)?;
    }
    let signer = merkle::Signer::from_pkcs8(&config.origin, &pkcs8).map_err(|e| err("checkpoint key", e))?;
    let ledger = Ledger::open(&owner_url, LedgerConfig::default()).map_err(|e| err("opening the ledger", e))?;
    let made = create_operator(&ledger, &person, "kartu init", "system:init");
    ledger.shutdown();
    let (_, token) = made?;
    Ok(Initialised {
        config,
        operator_token: token,
        verifier_key: signer.verifier_key(),
        issuance_key_file,
        serve_role,
    })
}

/// Creates an operator credential for `person` directly, without a second operator's
/// approval: what whoever holds the data directory (and so the database) may do. Logs an
/// `operator_action` event first (scope `scope`, by `by`); returns (credential id, token).
pub fn create_operator(ledger: &Ledger, person: &str, by: &str, scope: &str) -> Result<(i64, String), SetupError> {
    let person = crate::operator::approvals::person_name(person).map_err(|e| err("operator name", e.detail))?;
    let token = new_token().map_err(|e| SetupError(e.detail))?;
    // The leaf records the token's hash (safe to publish: the token is 256 random bits), so
    // `kartu audit verify` can tell a credential row whose hash was swapped.
    let hash = token_hash(&token);
    let event = ledger
        .record_blocking(Event {
            kind: "operator_action".into(),
            scope: Some(scope.into()),
            card_id: None,
            card_read_counter: None,
            queue_key: None,
            idempotency_key: None,
            payload: serde_json::json!({"action": "create_credential", "by": by,
                "details": {"role": "operator", "name": person, "person": person, "token_hash": hex::encode(hash)}})
            .to_string(),
            access: None,
            transit: None,
        })
        .map_err(|e| err("logging the operator credential", e))?;
    let now = ledger.now_us();
    let row = ledger::registry::NewCredentialRow {
        role: Role::Operator,
        name: &person,
        token_hash: &hash,
        scope: (None, None, None),
        public_key: None,
        offline_limits: None,
        person: Some(&person),
        created_by: None,
    };
    let c = ledger
        .registry(|r| r.insert_credential(row, now, event.event.id))
        .map_err(|e| err("creating the operator credential", e))?;
    Ok((c.id, token))
}

/// `kartu operator add`: an operator credential for `person` in the installation of
/// `data_dir` (its database, or `database_url`), made on the host. This is how a second
/// person becomes an operator when only one exists: nobody could approve the request.
/// Returns (credential id, token).
pub fn add_operator(data_dir: &Path, database_url: Option<&str>, person: &str) -> Result<(i64, String), SetupError> {
    let mut config = Config::load(data_dir)?;
    if let Some(url) = database_url {
        config.database_url = url.to_owned();
    }
    ledger::migrate(&config.database_url).map_err(|e| err("migrating the database", e))?;
    let ledger =
        Ledger::open(&config.database_url, LedgerConfig::default()).map_err(|e| err("opening the ledger", e))?;
    let made = create_operator(&ledger, person, "kartu operator add", "system:operator-add");
    ledger.shutdown();
    made
}

/// Everything `serve` needs, loaded from the data directory.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration read from kartu.toml.
    pub config: Config,
    /// The shared state.
    pub state: web::Data<AppState>,
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SetupError> {
    files::set_mode(path, mode).map_err(|e| SetupError(e.to_string()))
}

/// Refuses a secret file that anyone but its owner may read: a key lifted by another local
/// user is lifted for good.
pub fn check_private(path: &Path) -> Result<(), SetupError> {
    files::check_private(path).map_err(|e| SetupError(e.to_string()))
}

/// Loads the configuration and keys and opens the ledger (which signs checkpoints).
/// Refuses key files that group or others may read, and on PostgreSQL a database user that
/// could edit the journal (see [`load_with`]).
pub fn load(data_dir: &Path, database_url: Option<&str>) -> Result<Loaded, SetupError> {
    load_with(data_dir, database_url, None, false)
}

/// [`load`]; `allow_owner` (or `allow_owner = true` in `kartu.toml`) lets a PostgreSQL user
/// that owns the journal tables, is a superuser or may do more than [`ledger::roles::SERVE_GRANTS`]
/// serve (a laptop demo), with a warning. Without it such a user is refused, naming what it
/// could do and the fix. SQLite has no roles and is not checked.
///
/// `read_database_url` (or `read_database_url` in `kartu.toml`) names a PostgreSQL
/// streaming replica: audit, statement, transparency and report reads go there, through a
/// handle that cannot write ([`Ledger::open_reader`]); everything else stays on the primary.
pub fn load_with(
    data_dir: &Path,
    database_url: Option<&str>,
    read_database_url: Option<&str>,
    allow_owner: bool,
) -> Result<Loaded, SetupError> {
    let mut config = Config::load(data_dir)?;
    if let Some(url) = database_url {
        config.database_url = url.to_owned();
    }
    if let Some(url) = read_database_url {
        config.read_database_url = Some(url.to_owned());
    }
    config.allow_owner |= allow_owner;
    let (keys, nik_key) = load_keys(data_dir)?;
    let currency = Currency::parse(&config.currency).map_err(|e| err("currency", e))?;
    let timezone = domain::access::timezone(&config.timezone).map_err(|e| err("timezone", e))?;
    let wallet_max =
        ledger::money::Amount::parse(&config.wallet_balance_max, currency, ledger::money::AMOUNT_MAX_MINOR)
            .map_err(|e| err("wallet_balance_max", e))?;
    let checkpoints = checkpoint_settings(&config, data_dir, &keys)?;
    let verifier_key = checkpoints.as_ref().map(|c| c.signer.verifier_key());
    let first_checkpoint_key = checkpoints.as_ref().map(CheckpointSettings::first_key_line);
    let ledger_config = LedgerConfig {
        wallet_balance_max_minor: wallet_max.minor(),
        checkpoints,
        tap_rules: ledger::TapRules {
            race_counters: config.limits.tap_race_counters,
            race_window_us: config.limits.tap_race_window_ms.saturating_mul(1000),
        },
        ..LedgerConfig::default()
    };
    let limits = config.limits.money(currency)?;
    let tls = match config.tls_files(data_dir)? {
        Some((cert, key)) => Some(crate::tls::ReloadingCert::load(&cert, &key)?),
        None => None,
    };
    ledger::migrate(&config.database_url).map_err(|e| err("migrating the database", e))?;
    check_serving_user(&config)?;
    let ledger = Ledger::open(&config.database_url, ledger_config).map_err(|e| err("opening the ledger", e))?;
    let settings = Settings {
        currency,
        verifier_key,
        first_checkpoint_key,
        hold_sweep_interval: Some(Duration::from_millis(config.hold_sweep_interval_ms.max(10))),
        webhook_retry_base: Duration::from_millis(config.webhook_retry_base_ms.max(1)),
        webhook_poll: Some(Duration::from_millis(200)),
        float_approval_threshold_minor: config.float_approval_threshold_minor,
        limits,
        rate_limit: (config.limits.rate_limit_per_second, config.limits.rate_limit_burst),
        rate_limit_loopback: config.limits.rate_limit_loopback,
        metrics_token: config.metrics_token.clone(),
        request_timeout: Duration::from_millis(config.limits.request_timeout_ms.max(1)),
        body_timeout: Duration::from_millis(config.limits.body_timeout_ms.max(1)),
        max_connections: config.limits.max_connections.max(1),
        transparency_cache: Duration::from_millis(config.transparency_cache_ms),
        tls,
        metrics_listen: config.metrics_listen.clone(),
        timezone,
        checkpoint_lag_max: Duration::from_millis(config.checkpoint_lag_max_ms.max(1)),
        writer_stall_max: Duration::from_millis(config.writer_stall_max_ms.max(1)),
        ..Settings::default()
    };
    let reports = open_replica(&config)?;
    let state = web::Data::new(AppState::new(ledger, settings, TapKeys(keys), &nik_key).with_replica(reports));
    Ok(Loaded { config, state })
}

/// How this server signs checkpoints: the key file's checkpoint key (none: it signs
/// nothing), and the log's first key from the data directory's key history.
pub(crate) fn checkpoint_settings(
    config: &Config,
    data_dir: &Path,
    keys: &KeyFile,
) -> Result<Option<CheckpointSettings>, SetupError> {
    let Some(secret) = keys.checkpoint() else { return Ok(None) };
    let signer =
        merkle::Signer::from_pkcs8(&config.origin, secret.expose_secret()).map_err(|e| err("checkpoint key", e))?;
    let first_key = ledger::keys::first_key(data_dir)
        .map_err(|e| err(&format!("reading {}", ledger::keys::KEY_HISTORY_FILE), e))?;
    Ok(Some(CheckpointSettings {
        signer: Arc::new(signer),
        origin: config.origin.clone(),
        interval: Duration::from_millis(config.checkpoint_interval_ms.max(10)),
        trusted_file: Some(data_dir.join(ledger::signer::TRUSTED_CHECKPOINT_FILE)),
        first_key,
    }))
}

/// The read-only handle on the configured replica, if any (PostgreSQL only).
fn open_replica(config: &Config) -> Result<Option<Ledger>, SetupError> {
    let Some(url) = config.read_database_url.as_deref() else { return Ok(None) };
    if ledger::Backend::of_url(url).map_err(|e| err("read_database_url", e))? != ledger::Backend::Postgres {
        return Err(SetupError("read_database_url must be a PostgreSQL streaming replica (postgres://…)".into()));
    }
    Ledger::open_reader(url, LedgerConfig::default()).map(Some).map_err(|e| err("opening the read replica", e))
}

/// The card key file and the NIK key of a data directory, both checked private; refuses a
/// key file that holds card key 0 (the issuance keys stay on the personalisation
/// workstation).
pub(crate) fn load_keys(data_dir: &Path) -> Result<(KeyFile, Vec<u8>), SetupError> {
    check_private(&data_dir.join(KEY_FILE))?;
    check_private(&data_dir.join(NIK_KEY_FILE))?;
    let key_path = data_dir.join(KEY_FILE);
    let key_text =
        std::fs::read_to_string(&key_path).map_err(|e| err(&format!("reading {}", key_path.display()), e))?;
    let keys = KeyFile::parse(&key_text).map_err(|e| err(&format!("{}", key_path.display()), e))?;
    if keys.holds_app_master_keys() {
        return Err(SetupError(format!(
            "{} holds app_master_key (card key 0, which rewrites cards): the server must not hold it. \
             Keep the full file as the issuance key file on the personalisation workstation and \
             delete every app_master_key line from the server's copy",
            key_path.display()
        )));
    }
    if data_dir.join(ISSUANCE_KEY_FILE).exists() {
        tracing::warn!(
            file = %data_dir.join(ISSUANCE_KEY_FILE).display(),
            "the issuance key file (card key 0 of every card) is in the server's data directory: \
             move it to the personalisation workstation"
        );
    }
    let nik_path = data_dir.join(NIK_KEY_FILE);
    let nik_key = std::fs::read_to_string(&nik_path)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .filter(|k| k.len() == 32)
        .ok_or_else(|| SetupError(format!("{} must hold 64 hex digits", nik_path.display())))?;
    Ok((keys, nik_key))
}

/// On PostgreSQL: refuses a database user that could edit the journal unless allowed.
fn check_serving_user(config: &Config) -> Result<(), SetupError> {
    let Some(check) =
        ledger::roles::check_serving(&config.database_url).map_err(|e| err("checking the database user", e))?
    else {
        return Ok(());
    };
    if check.is_ok() {
        return Ok(());
    }
    if !config.allow_owner {
        return Err(SetupError(check.refusal()));
    }
    tracing::warn!(
        user = %check.user,
        problems = %check.problems.join("; "),
        "serving as a database user that can edit the journal (allow_owner): fine for a laptop demo, never for a city"
    );
    Ok(())
}

/// Serves `state` on `listener` from a thread of its own with its own actix system, until
/// the process ends (an in-process server for a test or the fuzz harness, which never
/// stop it); a server that stops says why on stderr.
pub fn serve_in_thread(state: web::Data<AppState>, listener: TcpListener, workers: usize) {
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        let served = system.block_on(async move {
            match server(state, listener, workers) {
                Ok(server) => server.await,
                Err(e) => Err(e),
            }
        });
        if let Err(e) = served {
            eprintln!("the in-process server stopped: {e}");
        }
    });
}

/// Serves on `listener` until SIGINT/SIGTERM (or the returned server handle stops it):
/// stops accepting, lets in-flight requests finish (up to 30 s), then stops the ledger's
/// writer after it has written everything queued. While it serves, expired holds are
/// voided every `settings.hold_sweep_interval` (call it inside an actix System).
///
/// With `settings.tls`, `listener` speaks HTTPS only, and SIGHUP reloads the certificate
/// (without, SIGHUP is logged and ignored).
/// With `settings.metrics_listen`, that address is bound too and serves `/metrics` alone
/// over plain HTTP; `listener` then answers 404 for `/metrics`.
pub fn server(
    state: web::Data<AppState>,
    listener: TcpListener,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let (sweep, sweep_state) = (state.settings.hold_sweep_interval, state.clone());
    let (webhook_poll, webhook_state) = (state.settings.webhook_poll, state.clone());
    let (request_timeout, max_connections) = (state.settings.request_timeout, state.settings.max_connections);
    let workers = if workers == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { workers };
    let io = |context: String| move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{context}: {e}"));
    let metrics_listener = match &state.settings.metrics_listen {
        Some(address) => Some(TcpListener::bind(address).map_err(io(format!("metrics_listen {address}")))?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let tls = match &state.settings.tls {
        Some(cert) => Some(cert.server_config().map_err(|e| std::io::Error::other(e.0))?),
        None => None,
    };
    // Registered now, before anyone is told the server is up: a SIGHUP from then on reloads
    // the certificate (or, without TLS, is logged) instead of ending the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(io("listening for SIGHUP".into()))?;
    actix_web::rt::spawn(crate::tls::reload_on_sighup(state.settings.tls.clone(), hangup));
    let listeners = crate::metrics::Listeners { metrics: metrics_addr };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(listeners))
            .wrap(middleware::from_fn(crate::limit_body))
            .wrap(middleware::from_fn(crate::metrics::split_listeners))
            .wrap(middleware::from_fn(crate::metrics::track))
            .configure(crate::configure)
    })
    .workers(workers)
    .client_request_timeout(request_timeout)
    .max_connections(max_connections)
    .backlog(4096)
    .shutdown_timeout(30);
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config)?,
        None => server.listen(listener)?,
    };
    let server = match metrics_listener {
        Some(l) => server.listen(l)?,
        None => server,
    };
    let server = server.run();
    if let Some(every) = webhook_poll {
        actix_web::rt::spawn(crate::webhooks::send_due(webhook_state, every));
    }
    if let Some(every) = sweep {
        actix_web::rt::spawn(sweep_expired_holds(sweep_state, every));
    }
    Ok(server)
}

/// The data directory's path, absolute.
pub fn data_dir(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

/// Voids expired holds now and then, so that a hold nobody captured gives its money back
/// (the ledger refuses to capture it once expired; this moves the money). Each server does
/// it; a hold voided by another is refused as closed, which is fine.
async fn sweep_expired_holds(state: web::Data<AppState>, every: Duration) {
    let mut tick = actix_web::rt::time::interval(every);
    loop {
        tick.tick().await;
        let st = state.clone();
        match web::block(move || st.ledger.expire_holds()).await {
            Ok(Ok(voided)) if !voided.is_empty() => tracing::info!(voided = voided.len(), "expired holds voided"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "voiding expired holds failed; trying again later"),
            Err(e) => tracing::warn!(error = %e, "voiding expired holds did not run; trying again later"),
        }
        let st = state.clone();
        match web::block(move || st.ledger.close_due_rides()).await {
            Ok(Ok(closed)) if !closed.is_empty() => {
                tracing::info!(cards = closed.len(), "transit rides closed at their time limit")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "closing transit rides failed; trying again later"),
            Err(e) => tracing::warn!(error = %e, "closing transit rides did not run; trying again later"),
        }
    }
}
