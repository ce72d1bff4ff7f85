//! SQLite's WAL stays bounded under continuous writes with readers: a background thread
//! copies it into the database file, and past the bound the writer finishes the copy between
//! two batches, so the log starts over instead of growing with everything written since the
//! ledger opened. The test sets a small bound (4 MiB) so that a few seconds of writing cross
//! it many times.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ledger::domain::{Command, Request};
use ledger::{Backend, Ledger, LedgerConfig};

use crate::support::{idr, City, TestClock, TestDb};

/// The database file grows by this before the test looks at what the WAL did.
const WRITTEN_BYTES: u64 = 32 * 1024 * 1024;
/// The writer's bound in this test.
const BOUND_BYTES: u64 = 4 * 1024 * 1024;
/// The largest WAL the test accepts: eight times the bound, less than what is written.
/// The log cannot start over while a reader reads an older snapshot, so it grows by what
/// is written during the auditor's trial balance (a long read in a debug build): 11 to
/// 19 MiB in this test on a 2-core machine. A WAL that never started over holds
/// everything written and more (153 MiB when the writer's part was switched off).
const WAL_BYTES_MAX: u64 = 8 * BOUND_BYTES;

fn size(path: &str) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Four writer threads (two paying one at a time, two in batches of 200) and a reader
/// that asks for balances without pause and for the trial balance twice a second, until
/// `stop`. (A read holds its snapshot, and the WAL cannot start over under it: one that
/// reads for long lets the WAL grow by what is written meanwhile.)
fn load(ledger: &Ledger, city: &City, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<Result<(), String>>> {
    let mut threads = Vec::new();
    for t in 0..4usize {
        let (ledger, stop, wallets) = (ledger.clone(), stop.clone(), city.wallets.clone());
        let (merchant, fees) = (city.merchants[0], city.fees);
        let per_call = if t % 2 == 0 { 1 } else { 200 };
        threads.push(std::thread::spawn(move || {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let batch = (0..per_call).map(|k| {
                    let wallet = wallets[(i + k) % wallets.len()];
                    Request::new(Command::Payment { wallet, merchant, fee_account: fees, amount: idr(1), fee_minor: 0 })
                });
                for r in ledger.submit_many_blocking(batch.collect()).map_err(|e| e.to_string())? {
                    r.map_err(|e| format!("a payment was refused: {e}"))?;
                }
                i += per_call;
            }
            Ok(())
        }));
    }
    let (ledger, stop, wallet) = (ledger.clone(), stop.clone(), city.wallets[0]);
    threads.push(std::thread::spawn(move || {
        let mut audited = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            ledger.balance(wallet).map_err(|e| e.to_string())?;
            // An auditor's trial balance reads every posting: a long read, twice a second.
            if audited.elapsed() > Duration::from_millis(500) {
                ledger.trial_balance().map_err(|e| e.to_string())?;
                audited = Instant::now();
            }
        }
        Ok(())
    }));
    threads
}

pub fn wal_stays_bounded_under_load() -> Result<(), String> {
    let db = TestDb::fresh(Backend::Sqlite)?;
    let clock = TestClock::new();
    let config = LedgerConfig { clock: clock.clock(), wal_checkpoint_bytes: BOUND_BYTES, ..LedgerConfig::default() };
    let ledger = Ledger::open(&db.url, config).map_err(|e| e.to_string())?;
    let city = City::new(&ledger, 64, 1, 1_000_000_000_000)?;
    for w in &city.wallets {
        ledger.submit_blocking(city.topup(*w, 100_000_000)).map_err(|e| e.to_string())?;
    }
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    let wal = format!("{path}-wal");
    let start_size = size(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&ledger, &city, &stop);
    let (started, mut wal_max) = (Instant::now(), 0);
    while size(&path) < start_size + WRITTEN_BYTES && started.elapsed() < Duration::from_secs(120) {
        wal_max = wal_max.max(size(&wal));
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let ran = started.elapsed();
    for t in threads {
        t.join().map_err(|_| "a load thread panicked".to_owned())??;
    }
    let written = size(&path) - start_size;
    if written < WRITTEN_BYTES {
        return Err(format!("only {written} bytes reached the database file in 120 s: the WAL was never copied"));
    }
    if wal_max > WAL_BYTES_MAX {
        return Err(format!(
            "the WAL grew to {wal_max} bytes while {written} bytes were written (at most {WAL_BYTES_MAX})"
        ));
    }
    // The writer copies the WAL only when the log passes the bound (here every few
    // batches: each rewrites the hot index pages, so the WAL takes far more than the file
    // grows), not after every batch, as it did while a file that once passed the bound
    // stayed that large with the log in it starting over.
    let checkpoints = ledger.writer_stats().wal_checkpoints.load(Ordering::Relaxed);
    let batches = ledger.writer_stats().batches.load(Ordering::Relaxed);
    if checkpoints == 0 || checkpoints * 3 > batches {
        return Err(format!(
            "the writer checkpointed {checkpoints} times in {batches} batches while {written} bytes were written \
             (the bound is {BOUND_BYTES})"
        ));
    }
    let passes = background_hurried(&ledger, ran)?;
    let books = ledger.trial_balance().map_err(|e| e.to_string())?;
    if books.iter().any(|l| l.balances_sum_minor != 0) {
        return Err(format!("the books do not balance: {books:?}"));
    }
    eprintln!(
        "wal: at most {wal_max} bytes while {written} bytes were written in {:?}; {checkpoints} writer checkpoints \
         ({} ms) in {batches} batches; {passes} background passes",
        ran,
        ledger.writer_stats().wal_checkpoint_us.load(Ordering::Relaxed) / 1000
    );
    Ok(())
}

/// Past half the bound the background copies the WAL every 10 ms instead of every 100, so
/// the writer's own copies find only the last milliseconds of writes left: over `ran` of
/// load it made half again as many passes as a plain 100 ms schedule would (twice to four
/// times as many on a 2-core machine; a 100 ms schedule makes at most as many). Returns
/// the passes.
fn background_hurried(ledger: &Ledger, ran: Duration) -> Result<u64, String> {
    let passes = ledger.writer_stats().wal_passes.load(Ordering::Relaxed);
    let plain = ran.as_millis() as u64 / ledger::WAL_CHECKPOINT_INTERVAL.as_millis() as u64;
    if 2 * passes < 3 * plain.max(1) {
        return Err(format!(
            "the background copied the WAL {passes} times in {ran:?}: not half again as often as every \
             100 ms ({plain} passes) while the log was past half the bound"
        ));
    }
    Ok(passes)
}
