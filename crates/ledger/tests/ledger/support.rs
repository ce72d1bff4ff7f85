//! Test fixtures: a fresh database per test on each backend, a settable clock, and the
//! accounts most tests need.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::Connection;
use ledger::domain::{AccountId, AccountKind, Command, EntryKind, Leg, NewAccount, Request};
use ledger::money::{Amount, Currency, AMOUNT_MAX_MINOR};
use ledger::{Backend, Clock, Ledger, LedgerConfig};

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("KARTU_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// A database made for one test, dropped (PostgreSQL) or deleted (SQLite) at the end.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn fresh(backend: Backend) -> Result<TestDb, String> {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let db = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
                TestDb { url, backend, pg_name: None, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let name = format!("kartu_test_{}_{}", std::process::id(), n);
                let admin = postgres_admin_url();
                let mut c = PgConnection::establish(&admin)
                    .map_err(|e| format!("PostgreSQL at {admin} is required for the postgres tests: {e}"))?;
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).map_err(|e| e.to_string())?;
                c.batch_execute(&format!("CREATE DATABASE {name}")).map_err(|e| e.to_string())?;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin).to_owned();
                TestDb { url: format!("{base}/{name}"), backend, pg_name: Some(name), _dir: None }
            }
        };
        ledger::migrate(&db.url).map_err(|e| e.to_string())?;
        Ok(db)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut c) = PgConnection::establish(&postgres_admin_url()) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn new() -> TestClock {
        TestClock(Arc::new(AtomicI64::new(1_800_000_000_000_000)))
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance_us(&self, us: i64) {
        self.0.fetch_add(us, Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
}

pub fn open(db: &TestDb, clock: &TestClock) -> Result<Ledger, String> {
    let config = LedgerConfig { clock: clock.clock(), ..LedgerConfig::default() };
    Ledger::open(&db.url, config).map_err(|e| e.to_string())
}

pub fn idr(minor: i64) -> Amount {
    Amount::from_minor(minor, Currency::IDR, AMOUNT_MAX_MINOR).expect("test amount")
}

/// The accounts of a small city: a funded agent, wallets, merchants and the system accounts.
pub struct City {
    pub bank: AccountId,
    pub fees: AccountId,
    pub agent: AccountId,
    pub wallets: Vec<AccountId>,
    pub merchants: Vec<AccountId>,
}

impl City {
    pub fn new(ledger: &Ledger, wallets: usize, merchants: usize, agent_float_minor: i64) -> Result<City, String> {
        let e = |e: ledger::LedgerError| e.to_string();
        let bank = ledger.system_account(AccountKind::CityBank, Currency::IDR).map_err(e)?.id;
        let fees = ledger.system_account(AccountKind::FeeRevenue, Currency::IDR).map_err(e)?.id;
        let account = |kind, name: String| {
            ledger
                .create_account(NewAccount { kind, currency: Currency::IDR, name, balance_max_minor: None })
                .map(|a| a.id)
                .map_err(e)
        };
        let agent = account(AccountKind::AgentFloat, "agent".into())?;
        let wallets =
            (0..wallets).map(|i| account(AccountKind::CardWallet, format!("wallet {i}"))).collect::<Result<_, _>>()?;
        let merchants = (0..merchants)
            .map(|i| account(AccountKind::Merchant, format!("merchant {i}")))
            .collect::<Result<_, _>>()?;
        if agent_float_minor > 0 {
            ledger.submit_blocking(transfer(EntryKind::Transfer, agent, bank, agent_float_minor)).map_err(e)?;
        }
        Ok(City { bank, fees, agent, wallets, merchants })
    }

    pub fn topup(&self, wallet: AccountId, minor: i64) -> Request {
        transfer(EntryKind::Topup, wallet, self.agent, minor)
    }

    pub fn pay(&self, wallet: AccountId, merchant: AccountId, minor: i64, fee_minor: i64) -> Request {
        Request::new(Command::Payment { wallet, merchant, fee_account: self.fees, amount: idr(minor), fee_minor })
    }
}

/// Offline terms that let any record through: each test that needs a limit sets it.
pub fn open_terms(record_seq: i64, record_time_us: i64) -> ledger::domain::OfflineTerms {
    ledger::domain::OfflineTerms {
        credential_id: 1,
        record_seq,
        record_time_us,
        sync_id: 1,
        counter_floor: None,
        per_tap_minor: i64::MAX / 4,
        per_card_per_day_minor: i64::MAX / 4,
        outstanding_minor: i64::MAX / 4,
        merchant_risk_cap_minor: i64::MAX / 4,
    }
}

/// `to` +minor, `from` -minor.
pub fn transfer(kind: EntryKind, to: AccountId, from: AccountId, minor: i64) -> Request {
    Request::new(Command::Transfer {
        kind,
        legs: vec![Leg { account: to, amount_minor: minor }, Leg { account: from, amount_minor: -minor }],
    })
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
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{}:{}: {} = {:?}, expected {:?}", file!(), line!(), stringify!($a), a, b));
        }
    }};
}

/// Runs raw SQL on the test database (as an attacker or an operator with database access;
/// on SQLite with foreign keys off, as the `sqlite3` shell starts).
pub fn raw_sql(db: &TestDb, sql: &str) -> Result<(), String> {
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://");
            let mut c = diesel::sqlite::SqliteConnection::establish(path).map_err(|e| e.to_string())?;
            c.batch_execute("PRAGMA foreign_keys = OFF").map_err(|e| e.to_string())?;
            c.batch_execute(sql).map_err(|e| e.to_string())
        }
        Backend::Postgres => {
            let mut c = PgConnection::establish(&db.url).map_err(|e| e.to_string())?;
            c.batch_execute(sql).map_err(|e| e.to_string())
        }
    }
}
