//! The audit log on both backends: receipts, proofs checked by an independent RFC 9162
//! verifier written here, signed checkpoints, `verify`, and tamper tests.

use std::sync::Arc;
use std::time::Duration;

use ledger::domain::{Command, Request};
use ledger::verify::{verify, VerifyError, VerifyOptions};
use ledger::{Backend, CheckpointSettings, Ledger, LedgerConfig, LedgerError};
use rand::{Rng, SeedableRng};

use crate::support::{idr, raw_sql, City, TestClock, TestDb};
use crate::{check, check_eq};

type TestResult = Result<(), String>;

const ORIGIN: &str = "test.kartu.example/log";

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A fresh signing key and its verifier.
pub fn keys() -> Result<(Arc<merkle::Signer>, merkle::Verifier), String> {
    let pkcs8 = merkle::Signer::generate_pkcs8(&ring::rand::SystemRandom::new()).map_err(s)?;
    let signer = merkle::Signer::from_pkcs8("test.kartu.example", &pkcs8).map_err(s)?;
    let verifier = merkle::Verifier::parse(&signer.verifier_key()).map_err(s)?;
    Ok((Arc::new(signer), verifier))
}

pub fn open_signed(
    db: &TestDb,
    clock: &TestClock,
    signer: &Arc<merkle::Signer>,
    interval: Duration,
) -> Result<Ledger, String> {
    let config = LedgerConfig {
        clock: clock.clock(),
        checkpoints: Some(CheckpointSettings {
            signer: signer.clone(),
            origin: ORIGIN.into(),
            interval,
            trusted_file: None,
            first_key: None,
        }),
        ..LedgerConfig::default()
    };
    Ledger::open(&db.url, config).map_err(s)
}

// ---- An independent RFC 9162 verifier (§2.1.3.2 and §2.1.4.2), on ring's SHA-256. ----

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    sha(&[&[1], l, r])
}

/// MTH by the recursive definition of RFC 9162 §2.1.1.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => sha(&[]),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn rfc_inclusion_root(index: u64, size: u64, leaf: [u8; 32], proof: &[[u8; 32]]) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        if s_n == 0 {
            return None;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    (s_n == 0).then_some(r)
}

fn rfc_consistency_ok(
    first: u64,
    second: u64,
    first_root: [u8; 32],
    second_root: [u8; 32],
    proof: &[[u8; 32]],
) -> bool {
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 || first > second || proof.is_empty() {
        return false;
    }
    let mut path: Vec<[u8; 32]> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, first_root);
    }
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (path[0], path[0]);
    for c in &path[1..] {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node(c, &f_r);
            s_r = node(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == first_root && s_r == second_root && s_n == 0
}

/// The verifier above reproduces the published RFC 9162 root and proof (VECTORS.md).
pub fn independent_verifier_vectors() -> TestResult {
    // ../shared/VECTORS.md: leaves and the inclusion proof of leaf 0 in the tree of 8.
    let leaves: Vec<[u8; 32]> =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|h| sha(&[&[0], &hex::decode(h).expect("hex")]))
            .collect();
    let root8 = hex::decode("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328").expect("hex");
    check_eq!(mth(&leaves).to_vec(), root8);
    let proof: Vec<[u8; 32]> = [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    .iter()
    .map(|h| hex::decode(h).expect("hex").try_into().expect("32"))
    .collect();
    check_eq!(rfc_inclusion_root(0, 8, leaves[0], &proof).map(|r| r.to_vec()), Some(root8.clone()));
    check!(rfc_inclusion_root(1, 8, leaves[0], &proof).map(|r| r.to_vec()) != Some(root8), "wrong index accepted");
    Ok(())
}

/// Every entry is a leaf; receipts carry the leaf index and hash; inclusion and
/// consistency proofs from the database verify with the verifier above for random sizes
/// up to 10,000; roots equal the recursive MTH; bad proof requests are clear errors.
pub fn proofs(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let (signer, verifier) = keys()?;
    let ledger = open_signed(&db, &clock, &signer, Duration::from_secs(3600))?;
    let receipt = ten_thousand_entries(&ledger)?;
    let leaves = every_leaf_hashed_here(&ledger, &receipt)?;
    proofs_verify_for_random_sizes(&ledger, &leaves)?;
    bad_proof_requests_are_clear_errors(&ledger)?;
    the_checkpoint_and_verify_agree(&db, &ledger, &verifier, &leaves)
}

/// A city of 50 wallets tops up and pays until the log holds 10,000 entries; returns the
/// last payment's receipt, which names the last leaf.
fn ten_thousand_entries(ledger: &Ledger) -> Result<ledger::domain::AuditRef, String> {
    let city = City::new(ledger, 50, 3, 0)?;
    let topups: Vec<_> = city
        .wallets
        .iter()
        .map(|w| crate::support::transfer(ledger::domain::EntryKind::Topup, *w, city.bank, 150_000_000))
        .collect();
    for r in ledger.submit_many_blocking(topups).map_err(s)? {
        r.map_err(s)?;
    }
    let payments: Vec<_> =
        (0..9_950).map(|i| city.pay(city.wallets[i % 50], city.merchants[i % 3], 1_000 + i as i64, 7)).collect();
    let results = ledger.submit_many_blocking(payments).map_err(s)?;
    let last = results.last().cloned().ok_or("no results")?.map_err(s)?;
    let receipt = last.entry.audit.ok_or("no receipt")?;
    check_eq!(ledger.tree_size().map_err(s)?, 10_000);
    check_eq!(receipt.leaf_index, 9_999);
    Ok(receipt)
}

/// All leaves, read page by page and hashed here from their bytes: each stored hash and
/// index is right, the last is the receipt's, and a stored entry carries its receipt.
fn every_leaf_hashed_here(ledger: &Ledger, receipt: &ledger::domain::AuditRef) -> Result<Vec<[u8; 32]>, String> {
    let mut leaves = Vec::new();
    let mut from = 0;
    loop {
        let page = ledger.leaves(from, 1_000).map_err(s)?;
        if page.is_empty() {
            break;
        }
        for l in &page {
            check_eq!(l.leaf_index, leaves.len() as i64);
            let h = sha(&[&[0], &l.leaf]);
            check_eq!(l.leaf_hash, h.to_vec());
            leaves.push(h);
        }
        from += page.len() as i64;
    }
    check_eq!(leaves.len(), 10_000);
    check_eq!(leaves[9_999], receipt.leaf_hash);
    // Entry 2 (the first top-up) is leaf 1: the stored entry carries the same receipt.
    check_eq!(
        ledger.entry(2).map_err(s)?.and_then(|e| e.audit).map(|a| (a.leaf_index, a.leaf_hash)),
        Some((1, leaves[1]))
    );
    Ok(leaves)
}

/// For fixed and random tree sizes: the root is the recursive MTH, inclusion proofs of
/// the first, last and a random leaf verify (and fail for another leaf), and a
/// consistency proof from a random smaller size verifies.
fn proofs_verify_for_random_sizes(ledger: &Ledger, leaves: &[[u8; 32]]) -> TestResult {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9162);
    let mut sizes: Vec<u64> = vec![1, 2, 3, 7, 8, 9, 1024, 1025, 10_000];
    sizes.extend((0..25).map(|_| rng.random_range(1..=10_000u64)));
    for &size in &sizes {
        let root = mth(&leaves[..size as usize]);
        check_eq!(ledger.root(size as i64).map_err(s)?, root);
        for index in [0, size - 1, rng.random_range(0..size)] {
            let proof = ledger.inclusion_proof(index as i64, size as i64).map_err(s)?;
            check!(
                rfc_inclusion_root(index, size, leaves[index as usize], &proof) == Some(root),
                "inclusion {index} in {size}"
            );
            // The same proof for another leaf fails.
            let other = leaves[((index + 1) % size) as usize];
            check!(size == 1 || rfc_inclusion_root(index, size, other, &proof) != Some(root), "wrong leaf accepted");
        }
        let first = rng.random_range(1..=size);
        let proof = ledger.consistency_proof(first as i64, size as i64).map_err(s)?;
        check!(
            rfc_consistency_ok(first, size, mth(&leaves[..first as usize]), root, &proof),
            "consistency {first} -> {size}"
        );
    }
    Ok(())
}

/// Proofs asked of leaves or sizes the tree does not have are out-of-range errors.
fn bad_proof_requests_are_clear_errors(ledger: &Ledger) -> TestResult {
    let out_of_range = |r: Result<Vec<merkle::Hash>, LedgerError>| matches!(r, Err(LedgerError::OutOfRange(_)));
    check!(out_of_range(ledger.inclusion_proof(10, 10)), "leaf beyond the size");
    check!(out_of_range(ledger.inclusion_proof(0, 10_001)), "size beyond the tree");
    check!(out_of_range(ledger.inclusion_proof(-1, 5)), "negative leaf");
    check!(out_of_range(ledger.consistency_proof(6, 5)), "first beyond second");
    Ok(())
}

/// A signed checkpoint of the whole tree, in the C2SP format, verifies; none is made
/// without new leaves; `verify` over the database finds the same tree.
fn the_checkpoint_and_verify_agree(
    db: &TestDb,
    ledger: &Ledger,
    verifier: &merkle::Verifier,
    leaves: &[[u8; 32]],
) -> TestResult {
    let cp = ledger.checkpoint_now().map_err(s)?.ok_or("no checkpoint")?;
    check_eq!(cp.tree_size, 10_000);
    let opened = verifier.open(&cp.note).map_err(s)?;
    check_eq!((opened.size(), *opened.root(), opened.origin()), (10_000, mth(leaves), ORIGIN));
    check!(cp.note.starts_with(&format!("{ORIGIN}\n10000\n")), "note body: {}", cp.note);
    check!(cp.note.contains("\ntime 20") && cp.note.contains("\n\n\u{2014} test.kartu.example "), "note: {}", cp.note);
    check!(ledger.checkpoint_now().map_err(s)?.is_none(), "no new checkpoint without new leaves");
    let report =
        verify(&db.url, verifier, &VerifyOptions { origin: Some(ORIGIN.into()), ..Default::default() }, |_, _| {})
            .map_err(s)?;
    check_eq!((report.entries, report.leaves, report.checkpoints), (10_000, 10_000, 1));
    check_eq!(report.root, mth(leaves));
    Ok(())
}

/// The checkpointer signs within its interval while there are new leaves.
pub fn checkpoints_every_interval(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let (signer, verifier) = keys()?;
    let ledger = open_signed(&db, &clock, &signer, Duration::from_millis(100))?;
    let city = City::new(&ledger, 1, 1, 1_000_000)?;
    for round in 0..3 {
        ledger.submit_blocking(city.topup(city.wallets[0], 100)).map_err(s)?;
        let size = ledger.tree_size().map_err(s)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ledger.latest_checkpoint().map_err(s)?.map(|c| c.tree_size) != Some(size) {
            check!(std::time::Instant::now() < deadline, "no checkpoint of size {size} in round {round}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    ledger.shutdown();
    let report = verify(&db.url, &verifier, &VerifyOptions::default(), |_, _| {}).map_err(s)?;
    check!(report.checkpoints >= 3, "{report:?}");
    Ok(())
}

/// A clean stop signs what was written since the last checkpoint: a leaf written just
/// before it (here, with an hour-long interval, every leaf) is covered when the database
/// is verified after the stop, without waiting for the next start.
pub fn a_clean_stop_signs_the_last_leaf(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let (signer, verifier) = keys()?;
    let ledger = open_signed(&db, &clock, &signer, Duration::from_secs(3600))?;
    let city = City::new(&ledger, 1, 1, 1_000_000)?;
    ledger.submit_blocking(city.topup(city.wallets[0], 100)).map_err(s)?;
    let size = ledger.tree_size().map_err(s)?;
    check!(ledger.latest_checkpoint().map_err(s)?.is_none(), "a checkpoint before the stop");
    ledger.shutdown();
    let last = ledger.latest_checkpoint().map_err(s)?.map(|c| c.tree_size);
    check!(last == Some(size), "the last checkpoint covers {last:?} leaves, not {size}");
    let report = verify(&db.url, &verifier, &VerifyOptions::default(), |_, _| {}).map_err(s)?;
    check!(report.checkpoints == 1, "{report:?}");
    Ok(())
}

/// While the writer runs, the signer's rows are written by the writer, between batches (on
/// SQLite a row from the signer's own connection made the writer wait for the lock); once
/// the writer stopped, the signer writes the last one itself.
pub fn signed_rows_go_through_the_writer(backend: Backend) -> TestResult {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let (signer, verifier) = keys()?;
    let ledger = open_signed(&db, &clock, &signer, Duration::from_secs(3600))?;
    let city = City::new(&ledger, 1, 1, 1_000_000)?;
    let chores = || ledger.writer_stats().chores.load(std::sync::atomic::Ordering::Relaxed);
    check_eq!(chores(), 0);
    let first = ledger.checkpoint_now().map_err(s)?.ok_or("nothing signed")?;
    check_eq!(first.tree_size, ledger.tree_size().map_err(s)?);
    check_eq!(chores(), 1);
    check!(ledger.checkpoint_now().map_err(s)?.is_none(), "signed again with no new leaf");
    check_eq!(chores(), 1);
    ledger.submit_blocking(city.topup(city.wallets[0], 100)).map_err(s)?;
    let size = ledger.tree_size().map_err(s)?;
    ledger.shutdown();
    check_eq!(chores(), 1);
    let last = ledger.latest_checkpoint().map_err(s)?.map(|c| c.tree_size);
    check!(last == Some(size), "the last checkpoint covers {last:?} leaves, not {size}");
    let report = verify(&db.url, &verifier, &VerifyOptions::default(), |_, _| {}).map_err(s)?;
    check!(report.checkpoints == 2, "{report:?}");
    Ok(())
}

/// A small day of business, then a checkpoint: the base of the tamper tests.
fn business_day(backend: Backend) -> Result<(TestDb, merkle::Verifier, Arc<merkle::Signer>), String> {
    let db = TestDb::fresh(backend)?;
    let clock = TestClock::new();
    let (signer, verifier) = keys()?;
    let ledger = open_signed(&db, &clock, &signer, Duration::from_secs(3600))?;
    let city = City::new(&ledger, 2, 2, 50_000_000)?; // entry 1: agent float
    for w in &city.wallets {
        ledger.submit_blocking(city.topup(*w, 1_000_000)).map_err(s)?; // entries 2, 3
    }
    for i in 0..6 {
        // entries 4..=9
        ledger
            .submit_blocking(city.pay(city.wallets[i % 2], city.merchants[i % 2], 10_000 + i as i64, 70))
            .map_err(s)?;
    }
    let refund = Request::new(Command::Refund { payment_seq: 4, amount: idr(5_000) });
    ledger.submit_blocking(refund).map_err(s)?; // entry 10
    let hold = Request::new(Command::Hold {
        wallet: city.wallets[0],
        merchant: city.merchants[0],
        amount: idr(20_000),
        expires_at_us: clock.now() + 3_600_000_000,
    });
    let h = ledger.submit_blocking(hold).map_err(s)?.entry.seq; // entry 11
    let capture =
        Request::new(Command::Capture { hold_seq: h, amount: idr(15_000), fee_minor: 105, fee_account: city.fees });
    ledger.submit_blocking(capture).map_err(s)?; // entry 12
    ledger.checkpoint_now().map_err(s)?.ok_or("no checkpoint")?;
    ledger.shutdown();
    verify(&db.url, &verifier, &VerifyOptions::default(), |_, _| {})
        .map_err(|e| format!("untouched log fails: {e}"))?;
    Ok((db, verifier, signer))
}

/// What an attacker with database access does first.
pub fn drop_append_only_triggers(db: &TestDb) -> TestResult {
    match db.backend {
        Backend::Sqlite => {
            let mut sql = String::new();
            for t in ["accounts", "journal_entries", "postings", "audit_leaves", "merkle_nodes", "checkpoints"] {
                sql.push_str(&format!("DROP TRIGGER {t}_no_update; DROP TRIGGER {t}_no_delete;"));
            }
            raw_sql(db, &sql)
        }
        Backend::Postgres => {
            let tables = ["accounts", "journal_entries", "postings", "audit_leaves", "merkle_nodes", "checkpoints"];
            let sql: String = tables.iter().map(|t| format!("ALTER TABLE {t} DISABLE TRIGGER USER;")).collect();
            raw_sql(db, &sql)
        }
    }
}

fn expect_failure(db: &TestDb, verifier: &merkle::Verifier, entry: i64, words: &str) -> TestResult {
    match verify(&db.url, verifier, &VerifyOptions::default(), |_, _| {}) {
        Err(VerifyError::Failed { entry_seq, reason, .. }) => {
            check_eq!(entry_seq, Some(entry));
            check!(reason.contains(words), "reason {reason:?} should mention {words:?}");
            Ok(())
        }
        other => Err(format!("verify should fail naming entry {entry}, got {other:?}")),
    }
}

/// Each tamper, on a fresh copy of the same day, makes verify fail and name the entry.
pub fn tampering_is_detected(backend: Backend) -> TestResult {
    let cases: [(&str, &str, i64, &str); 7] = [
        ("change an amount", "UPDATE postings SET amount_minor = amount_minor + 100 WHERE entry_seq = 6 AND leg = 1", 6, "amount"),
        ("change a balance after", "UPDATE postings SET balance_after_minor = balance_after_minor + 100 WHERE entry_seq = 7 AND leg = 0", 7, "balance after"),
        (
            "delete an entry",
            "DELETE FROM postings WHERE entry_seq = 8; DELETE FROM journal_entries WHERE seq = 8; DELETE FROM audit_leaves WHERE leaf_index = 7",
            8,
            "missing",
        ),
        (
            "swap two entries",
            "CREATE TEMP TABLE swap AS SELECT leaf_index, leaf, leaf_hash FROM audit_leaves WHERE leaf_index IN (4, 5);
             UPDATE audit_leaves SET leaf = (SELECT leaf FROM swap WHERE swap.leaf_index = 9 - audit_leaves.leaf_index),
                                     leaf_hash = (SELECT leaf_hash FROM swap WHERE swap.leaf_index = 9 - audit_leaves.leaf_index)
              WHERE leaf_index IN (4, 5)",
            5,
            "expected entry 5",
        ),
        (
            "insert a forged entry",
            "INSERT INTO journal_entries (seq, kind, time_us, currency, amount_minor, fee_minor, account_id, counterparty_id)
                 VALUES (13, 'topup', 1900000000000000, 'IDR', 500000, 0, 4, 3);
             INSERT INTO postings (entry_seq, leg, account_id, amount_minor, balance_after_minor)
                 SELECT 13, 0, 4, 500000, balance_after_minor + 500000 FROM postings WHERE account_id = 4 ORDER BY entry_seq DESC LIMIT 1;
             INSERT INTO postings (entry_seq, leg, account_id, amount_minor, balance_after_minor)
                 SELECT 13, 1, 3, -500000, balance_after_minor - 500000 FROM postings WHERE account_id = 3 ORDER BY entry_seq DESC LIMIT 1",
            13,
            "no leaf",
        ),
        (
            // No foreign key stops it (none on the journal's hot path): the balance read
            // from the latest posting would show the money.
            "add a posting of no entry",
            "INSERT INTO postings (entry_seq, leg, account_id, amount_minor, balance_after_minor)
                 VALUES (99, 0, 4, 500000, 900000000)",
            99,
            "which the journal does not hold",
        ),
        ("replace the checkpoint signature", "", 12, "signature"),
    ];
    for (name, sql, entry, words) in cases {
        let (db, verifier, signer) = business_day(backend)?;
        drop_append_only_triggers(&db)?;
        let sql = if sql.is_empty() { forged_signature_sql(&db, &signer)? } else { sql.to_owned() };
        raw_sql(&db, &sql).map_err(|e| format!("{name}: {e}"))?;
        expect_failure(&db, &verifier, entry, words).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// Re-signs the stored checkpoint's body with another key of the same name.
fn forged_signature_sql(db: &TestDb, signer: &merkle::Signer) -> Result<String, String> {
    let ledger = Ledger::open(&db.url, LedgerConfig::default()).map_err(s)?;
    let cp = ledger.latest_checkpoint().map_err(s)?.ok_or("no checkpoint")?;
    let (other, _) = keys()?;
    let body = cp.note.split("\n\n").next().ok_or("no body")?.to_owned() + "\n";
    let forged = other.sign_note(&body).map_err(s)?;
    check!(forged != cp.note && signer.name() == other.name(), "forgery must differ");
    Ok(format!("UPDATE checkpoints SET note = '{}' WHERE tree_size = {}", forged.replace('\'', "''"), cp.tree_size))
}
