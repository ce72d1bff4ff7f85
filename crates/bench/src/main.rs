//! `make bench`: measures Kartu on this machine and writes a report (text and CSV).
//!
//! Ledger: payments/s with 64 concurrent single-payment callers, and payments/s in bulk
//! batches of 1,000, on SQLite and on PostgreSQL.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use ledger::domain::{AccountId, AccountKind, Command, EntryKind, Leg, NewAccount, Request};
use ledger::money::{Amount, Currency, AMOUNT_MAX_MINOR};
use ledger::{Ledger, LedgerConfig};

#[derive(Parser, Debug)]
#[command(about = "Kartu benchmarks")]
struct Args {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent single-payment callers.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// PostgreSQL server to create the benchmark database on.
    #[arg(long, env = "KARTU_TEST_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Only this backend (sqlite or postgres).
    #[arg(long)]
    backend: Option<String>,
    /// Skip the concurrent single-payment measurement.
    #[arg(long)]
    skip_single: bool,
    /// Where the report goes.
    #[arg(long, default_value = "bench-report")]
    out: std::path::PathBuf,
}

const WALLETS: usize = 10_000;
const BULK_BATCH: usize = 1_000;

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    goal: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let pg = PgDb::create(&args.postgres_url)?;
    for (backend, url, single_goal) in
        [("sqlite", sqlite_url.as_str(), 100_000.0), ("postgres", pg.url.as_str(), 40_000.0)]
    {
        if args.backend.as_deref().is_some_and(|b| b != backend) {
            continue;
        }
        ledger::migrate(url).context("migrate")?;
        let ledger = Ledger::open(url, LedgerConfig::default())?;
        let city = City::new(&ledger)?;
        if !args.skip_single {
            let single = single_payments(&ledger, &city, args.callers, Duration::from_secs(args.seconds))?;
            rows.push(Row {
                name: format!("ledger.{backend}.single_payments_per_s.{}_callers", args.callers),
                value: single,
                unit: "payments/s",
                goal: Some(single_goal),
            });
        }
        let tasks = async_payments(&ledger, &city, args.callers, Duration::from_secs(args.seconds))?;
        rows.push(Row {
            name: format!("ledger.{backend}.single_payments_per_s.{}_async_tasks", args.callers),
            value: tasks,
            unit: "payments/s",
            goal: Some(single_goal),
        });
        let bulk = bulk_payments(&ledger, &city, Duration::from_secs(args.seconds))?;
        rows.push(Row {
            name: format!("ledger.{backend}.bulk_payments_per_s.batch_{BULK_BATCH}"),
            value: bulk,
            unit: "payments/s",
            goal: None,
        });
        let tb = ledger.trial_balance()?;
        if tb.iter().any(|l| l.balances_sum_minor != 0) {
            bail!("{backend}: trial balance is not zero after the benchmark: {tb:?}");
        }
        ledger.shutdown();
    }
    report(&args.out, &rows)
}

fn report(out: &std::path::Path, rows: &[Row]) -> Result<()> {
    let mut text = String::from("Kartu benchmark report\n\n");
    let mut csv = String::from("name,value,unit,goal\n");
    for r in rows {
        let goal = r
            .goal
            .map(|g| format!("goal {g:.0}{}", if r.value >= g { " (met)" } else { " (MISSED)" }))
            .unwrap_or_default();
        text.push_str(&format!("{:<60} {:>12.0} {:<12} {}\n", r.name, r.value, r.unit, goal));
        csv.push_str(&format!(
            "{},{:.1},{},{}\n",
            r.name,
            r.value,
            r.unit,
            r.goal.map(|g| g.to_string()).unwrap_or_default()
        ));
    }
    std::fs::write(out.join("report.txt"), &text)?;
    std::fs::write(out.join("report.csv"), &csv)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

struct City {
    wallets: Vec<AccountId>,
    merchants: Vec<AccountId>,
    fees: AccountId,
}

impl City {
    fn new(ledger: &Ledger) -> Result<City> {
        let bank = ledger.system_account(AccountKind::CityBank, Currency::IDR)?.id;
        let fees = ledger.system_account(AccountKind::FeeRevenue, Currency::IDR)?.id;
        let mk = |kind, n: usize| -> Result<Vec<AccountId>> {
            let new = (0..n)
                .map(|i| NewAccount {
                    kind,
                    currency: Currency::IDR,
                    name: format!("{} {i}", kind.as_str()),
                    balance_max_minor: Some(AMOUNT_MAX_MINOR),
                })
                .collect();
            Ok(ledger.create_accounts(new)?.into_iter().map(|a| a.id).collect())
        };
        let merchants = mk(AccountKind::Merchant, 16)?;
        let wallets = mk(AccountKind::CardWallet, WALLETS)?;
        let topups = wallets
            .iter()
            .map(|w| {
                Request::new(Command::Transfer {
                    kind: EntryKind::Topup,
                    legs: vec![
                        Leg { account: *w, amount_minor: 10_000_000_000 },
                        Leg { account: bank, amount_minor: -10_000_000_000 },
                    ],
                })
            })
            .collect();
        for r in ledger.submit_many_blocking(topups)? {
            r?;
        }
        Ok(City { wallets, merchants, fees })
    }

    fn payment(&self, i: u64) -> Request {
        let amount = Amount::from_minor(1_250_000, Currency::IDR, AMOUNT_MAX_MINOR).expect("amount");
        Request::new(Command::Payment {
            wallet: self.wallets[(i as usize * 7919) % self.wallets.len()],
            merchant: self.merchants[i as usize % self.merchants.len()],
            fee_account: self.fees,
            amount,
            fee_minor: 8_750,
        })
    }
}

fn single_payments(ledger: &Ledger, city: &City, callers: usize, duration: Duration) -> Result<f64> {
    let city = Arc::new(City { wallets: city.wallets.clone(), merchants: city.merchants.clone(), fees: city.fees });
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(callers + 1));
    let handles: Vec<_> = (0..callers)
        .map(|c| {
            let (ledger, city, done, stop, barrier) =
                (ledger.clone(), city.clone(), done.clone(), stop.clone(), barrier.clone());
            std::thread::spawn(move || -> Result<()> {
                barrier.wait();
                let mut i = c as u64;
                while !stop.load(Ordering::Relaxed) {
                    ledger.submit_blocking(city.payment(i))?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += callers as u64;
                }
                Ok(())
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("caller panicked"))??;
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// The same as [`single_payments`] with async tasks on a 2-thread runtime, the way the
/// HTTP server's handlers call the ledger.
fn async_payments(ledger: &Ledger, city: &City, callers: usize, duration: Duration) -> Result<f64> {
    let city = Arc::new(City { wallets: city.wallets.clone(), merchants: city.merchants.clone(), fees: city.fees });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let elapsed = runtime.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (ledger, city, done, stop) = (ledger.clone(), city.clone(), done.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = c as u64;
                    while !stop.load(Ordering::Relaxed) {
                        ledger.submit(city.payment(i)).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                        i += callers as u64;
                    }
                    Ok::<(), anyhow::Error>(())
                })
            })
            .collect();
        let start = Instant::now();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let n = done.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        for t in tasks {
            t.await??;
        }
        Ok::<_, anyhow::Error>((n, elapsed))
    })?;
    Ok(elapsed.0 as f64 / elapsed.1.as_secs_f64())
}

fn bulk_payments(ledger: &Ledger, city: &City, duration: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        let batch: Vec<_> = (0..BULK_BATCH as u64).map(|i| city.payment(n + i)).collect();
        for r in ledger.submit_many_blocking(batch)? {
            r?;
        }
        n += BULK_BATCH as u64;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A PostgreSQL database for one benchmark run, dropped at the end.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn create(admin: &str) -> Result<PgDb> {
        let name = format!("kartu_bench_{}", std::process::id());
        let mut c = diesel::PgConnection::establish(admin).with_context(|| format!("PostgreSQL at {admin}"))?;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
        Ok(PgDb { admin: admin.to_owned(), url: format!("{base}/{name}"), name })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = diesel::PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}
