//! The machine's limit for the ledger's writes: the rows Kartu writes for the bench's card
//! payments (with a fee, audit log on), inserted with plain diesel and no Kartu code into a
//! database with Kartu's schema, in batches of the sizes the Kartu measurements use, with
//! the same durability.
//!
//! Per payment: one `journal_entries` row (the columns a payment leaves NULL are left out
//! of the statement), three `postings` (wallet, merchant, fee revenue, each with its
//! balance after), one `audit_leaves` row (the leaf bytes of docs/AUDIT.md, encoded here,
//! and their SHA-256) and the `merkle_nodes` rows the append completes at level 4 and up
//! (one per eight leaves on average; every interior node is hashed, as Kartu does); per
//! batch one `ledger_head` update, all in one transaction. Balances and the tree's right
//! edge live in memory, as in Kartu's writer.
//!
//! With the audit log off ([`RawWriter::open`]), the same payments without their leaf and
//! nodes, `leaf_index` NULL, as Kartu writes them then.
//!
//! SQLite (Kartu's pragmas: WAL, synchronous=FULL, the same cache; the WAL checkpointed by
//! another thread every 100 ms, as Kartu does): multi-row INSERTs of [`CHUNK_BIG`] and
//! [`CHUNK_SMALL`] rows and single-row ones for the rest, each a cached prepared statement,
//! in `BEGIN IMMEDIATE`. PostgreSQL: one `INSERT … SELECT FROM unnest(arrays)` per table
//! and batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Binary, Integer, Text};
use diesel::sqlite::SqliteConnection;
use ring::digest;

use crate::{City, FEE_MINOR, PAYMENT_MINOR};

/// Rows per multi-row statement on SQLite, then the smaller statement for what is left.
const CHUNK_BIG: usize = 128;
/// Rows per statement once fewer than [`CHUNK_BIG`] are left (single rows after that).
const CHUNK_SMALL: usize = 16;
/// Merkle nodes below this level are not stored (Kartu's `NODE_LEVEL_STORED_MIN`).
const NODE_LEVEL_STORED_MIN: i32 = 4;

mod schema {
    diesel::table! {
        journal_entries (seq) {
            seq -> BigInt,
            kind -> Text,
            time_us -> BigInt,
            currency -> Text,
            amount_minor -> BigInt,
            fee_minor -> BigInt,
            account_id -> BigInt,
            counterparty_id -> BigInt,
            request_hash -> Binary,
            leaf_index -> Nullable<BigInt>,
        }
    }
    diesel::table! {
        postings (entry_seq, leg) {
            entry_seq -> BigInt,
            leg -> Integer,
            account_id -> BigInt,
            amount_minor -> BigInt,
            balance_after_minor -> BigInt,
        }
    }
    diesel::table! {
        audit_leaves (leaf_index) {
            leaf_index -> BigInt,
            kind -> Text,
            leaf -> Binary,
            leaf_hash -> Binary,
        }
    }
    diesel::table! {
        merkle_nodes (level, idx) {
            level -> Integer,
            idx -> BigInt,
            hash -> Binary,
        }
    }
    diesel::table! {
        ledger_head (id) {
            id -> Integer,
            last_seq -> BigInt,
            last_time_us -> BigInt,
            tree_size -> BigInt,
        }
    }
}

use schema::{audit_leaves, journal_entries, ledger_head, merkle_nodes, postings};

#[derive(Insertable)]
#[diesel(table_name = journal_entries, treat_none_as_default_value = false)]
struct EntryRow {
    seq: i64,
    kind: &'static str,
    time_us: i64,
    currency: &'static str,
    amount_minor: i64,
    fee_minor: i64,
    account_id: i64,
    counterparty_id: i64,
    request_hash: Vec<u8>,
    /// `None` when the audit log is off.
    leaf_index: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = postings, treat_none_as_default_value = false)]
struct PostingRow {
    entry_seq: i64,
    leg: i32,
    account_id: i64,
    amount_minor: i64,
    balance_after_minor: i64,
}

#[derive(Insertable)]
#[diesel(table_name = audit_leaves, treat_none_as_default_value = false)]
struct LeafRow {
    leaf_index: i64,
    kind: &'static str,
    leaf: Vec<u8>,
    leaf_hash: Vec<u8>,
}

#[derive(Insertable)]
#[diesel(table_name = merkle_nodes, treat_none_as_default_value = false)]
struct NodeRow {
    level: i32,
    idx: i64,
    hash: Vec<u8>,
}

/// The head as the batch found it and as it leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    last_seq: i64,
    last_time_us: i64,
    tree_size: i64,
}

/// The rows of one batch.
struct Batch {
    entries: Vec<EntryRow>,
    postings: Vec<PostingRow>,
    leaves: Vec<LeafRow>,
    nodes: Vec<NodeRow>,
    old: Head,
    new: Head,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    for p in parts {
        context.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    sha256(&[&[1], left, right])
}

/// The Merkle tree's right edge: the perfect subtrees of the current size, largest first.
struct Tree {
    size: i64,
    edge: Vec<(i32, [u8; 32])>,
}

impl Tree {
    /// Appends a leaf; the stored nodes it completes go to `nodes`.
    fn append(&mut self, leaf_hash: [u8; 32], nodes: &mut Vec<NodeRow>) {
        let index = self.size;
        self.size += 1;
        let (mut level, mut hash) = (0, leaf_hash);
        while let Some(&(l, left)) = self.edge.last() {
            if l != level {
                break;
            }
            self.edge.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            if level >= NODE_LEVEL_STORED_MIN {
                nodes.push(NodeRow { level, idx: index >> level, hash: hash.to_vec() });
            }
        }
        self.edge.push((level, hash));
    }

    /// The root hash (RFC 9162) of a non-empty tree.
    fn root(&self) -> Option<[u8; 32]> {
        let mut subtrees = self.edge.iter().rev();
        let mut root = subtrees.next()?.1;
        for (_, left) in subtrees {
            root = node_hash(left, &root);
        }
        Some(root)
    }
}

/// What the writer keeps between batches: the head, the balances, the tree's edge.
struct Books {
    head: Head,
    balances: HashMap<i64, i64>,
    tree: Tree,
    /// Whether payments are leaves of the audit log (as `LedgerConfig::audit_log`): when
    /// not, no leaf, no node, and the entry's `leaf_index` is NULL.
    audit: bool,
}

/// The leaf bytes of a payment (docs/AUDIT.md, "journal entry"): no card, no references,
/// no idempotency key.
fn payment_leaf(seq: i64, time_us: i64, wallet: i64, merchant: i64, postings: &[PostingRow]) -> Vec<u8> {
    let mut v = Vec::with_capacity(80 + 27 * postings.len());
    v.extend_from_slice(&[1, 1]);
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&time_us.to_be_bytes());
    v.push(7);
    v.extend_from_slice(b"paymentIDR");
    v.extend_from_slice(&PAYMENT_MINOR.to_be_bytes());
    v.extend_from_slice(&FEE_MINOR.to_be_bytes());
    v.push(1);
    v.extend_from_slice(&wallet.to_be_bytes());
    v.push(1);
    v.extend_from_slice(&merchant.to_be_bytes());
    // related_seq, expires_at_us, card_id, card_read_counter, terminal_id,
    // merchant_reference, memo, idempotency_key: none.
    v.extend_from_slice(&[0; 8]);
    v.push(postings.len() as u8);
    for p in postings {
        v.extend_from_slice(&p.account_id.to_be_bytes());
        v.extend_from_slice(b"IDR");
        v.extend_from_slice(&p.amount_minor.to_be_bytes());
        v.extend_from_slice(&p.balance_after_minor.to_be_bytes());
    }
    v
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

impl Books {
    /// The rows of `size` payments, the `first`-th payment of the run first.
    fn batch(&mut self, city: &City, first: u64, size: usize) -> Batch {
        let old = self.head;
        let time_us = now_us().max(old.last_time_us);
        let mut b = Batch {
            entries: Vec::with_capacity(size),
            postings: Vec::with_capacity(3 * size),
            leaves: Vec::with_capacity(size),
            nodes: Vec::new(),
            old,
            new: old,
        };
        for i in first..first + size as u64 {
            let (wallet, merchant) = city.parties(i);
            let (wallet, merchant) = (wallet.get(), merchant.get());
            let seq = self.head.last_seq + 1;
            let legs = [(wallet, -PAYMENT_MINOR), (merchant, PAYMENT_MINOR - FEE_MINOR), (city.fees.get(), FEE_MINOR)];
            let start = b.postings.len();
            for (leg, (account_id, amount_minor)) in legs.into_iter().enumerate() {
                let balance = self.balances.entry(account_id).or_default();
                *balance += amount_minor;
                let balance_after_minor = *balance;
                b.postings.push(PostingRow {
                    entry_seq: seq,
                    leg: leg as i32,
                    account_id,
                    amount_minor,
                    balance_after_minor,
                });
            }
            // Kartu's request fingerprint: a SHA-256 of the request.
            let request = [wallet, merchant, city.fees.get(), PAYMENT_MINOR, FEE_MINOR].map(i64::to_be_bytes);
            let request_hash = sha256(&[request.as_flattened()]).to_vec();
            let leaf_index = self.audit.then_some(self.tree.size);
            if let Some(leaf_index) = leaf_index {
                let leaf = payment_leaf(seq, time_us, wallet, merchant, &b.postings[start..]);
                let leaf_hash = sha256(&[&[0], &leaf]);
                self.tree.append(leaf_hash, &mut b.nodes);
                b.leaves.push(LeafRow { leaf_index, kind: "entry", leaf, leaf_hash: leaf_hash.to_vec() });
            }
            b.entries.push(EntryRow {
                seq,
                kind: "payment",
                time_us,
                currency: "IDR",
                amount_minor: PAYMENT_MINOR,
                fee_minor: FEE_MINOR,
                account_id: wallet,
                counterparty_id: merchant,
                request_hash,
                leaf_index,
            });
            self.head.last_seq = seq;
        }
        self.head.last_time_us = time_us;
        self.head.tree_size = self.tree.size;
        b.new = self.head;
        b
    }
}

/// `rows` into `table` on SQLite: [`CHUNK_BIG`]-row statements, then [`CHUNK_SMALL`]-row
/// ones, then single rows; a fixed-size array makes each a cached prepared statement.
macro_rules! insert_chunked {
    ($c:expr, $table:expr, $rows:expr) => {{
        let mut rest = &$rows[..];
        while rest.len() >= CHUNK_BIG {
            let (chunk, tail) = rest.split_at(CHUNK_BIG);
            let chunk: &[_; CHUNK_BIG] = chunk.try_into().expect("a chunk");
            diesel::insert_into($table).values(chunk).execute($c)?;
            rest = tail;
        }
        while rest.len() >= CHUNK_SMALL {
            let (chunk, tail) = rest.split_at(CHUNK_SMALL);
            let chunk: &[_; CHUNK_SMALL] = chunk.try_into().expect("a chunk");
            diesel::insert_into($table).values(chunk).execute($c)?;
            rest = tail;
        }
        for row in rest {
            diesel::insert_into($table).values(row).execute($c)?;
        }
    }};
}

/// Moves the head from the batch's old to its new value (exactly one row must change).
macro_rules! advance_head {
    ($c:expr, $b:expr) => {{
        use ledger_head::dsl as h;
        let changed = diesel::update(h::ledger_head.filter(h::id.eq(1).and(h::last_seq.eq($b.old.last_seq))))
            .set((
                h::last_seq.eq($b.new.last_seq),
                h::last_time_us.eq($b.new.last_time_us),
                h::tree_size.eq($b.new.tree_size),
            ))
            .execute($c)?;
        if changed != 1 {
            return Err(diesel::result::Error::RollbackTransaction);
        }
    }};
}

const PG_ENTRIES: &str = "INSERT INTO journal_entries (seq, kind, time_us, currency, amount_minor, fee_minor, \
     account_id, counterparty_id, request_hash, leaf_index) SELECT * FROM unnest($1::bigint[], $2::text[], \
     $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bytea[], $10::bigint[])";
const PG_POSTINGS: &str = "INSERT INTO postings (entry_seq, leg, account_id, amount_minor, balance_after_minor) \
     SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[])";
const PG_LEAVES: &str = "INSERT INTO audit_leaves (leaf_index, kind, leaf, leaf_hash) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[])";
const PG_NODES: &str =
    "INSERT INTO merkle_nodes (level, idx, hash) SELECT * FROM unnest($1::int[], $2::bigint[], $3::bytea[])";

/// One column of `rows`, for an array bind.
fn col<'a, R, T>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// The writer's connection.
enum Sink {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

impl Sink {
    fn open(url: &str) -> Result<Sink> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let mut c = SqliteConnection::establish(path)?;
            // Kartu's store (crates/ledger/src/store/mod.rs) and writer set these.
            c.batch_execute(
                "PRAGMA busy_timeout = 10000;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA cache_size = -131072;
                 PRAGMA temp_store = MEMORY;
                 PRAGMA foreign_keys = ON;
                 PRAGMA wal_autocheckpoint = 0;",
            )?;
            c.batch_execute(&format!("PRAGMA journal_size_limit = {};", ledger::WAL_SIZE_LIMIT_BYTES))?;
            Ok(Sink::Sqlite(c))
        } else {
            // The same connection string Kartu uses (no TLS on a loopback link).
            let url = ledger::pg_connect_url(url);
            Ok(Sink::Pg(PgConnection::establish(&url).with_context(|| format!("PostgreSQL at {url}"))?))
        }
    }

    /// SQLite: when the log in the WAL (as the last checkpoint saw it) is above Kartu's
    /// bound (`ledger::WAL_CHECKPOINT_BYTES`), the writer finishes the WAL's checkpoint
    /// between batches, as Kartu's writer does, so the WAL starts over.
    fn bound_wal(&mut self, log: &AtomicU64) -> Result<()> {
        if let Sink::Sqlite(c) = self {
            if log.load(Ordering::Relaxed) > ledger::WAL_CHECKPOINT_BYTES {
                log.store(checkpoint(c)?, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn write(&mut self, b: &Batch) -> Result<()> {
        match self {
            Sink::Sqlite(c) => c.immediate_transaction(|c| {
                insert_chunked!(c, journal_entries::table, b.entries);
                insert_chunked!(c, postings::table, b.postings);
                insert_chunked!(c, audit_leaves::table, b.leaves);
                insert_chunked!(c, merkle_nodes::table, b.nodes);
                advance_head!(c, b);
                Ok::<_, diesel::result::Error>(())
            })?,
            Sink::Pg(c) => c.transaction(|c| {
                pg_insert(c, b)?;
                advance_head!(c, b);
                Ok::<_, diesel::result::Error>(())
            })?,
        }
        Ok(())
    }
}

/// The batch's rows on PostgreSQL: one statement per table.
fn pg_insert(c: &mut PgConnection, b: &Batch) -> QueryResult<()> {
    let e = &b.entries;
    diesel::sql_query(PG_ENTRIES)
        .bind::<Array<BigInt>, _>(col(e, |r| r.seq))
        .bind::<Array<Text>, _>(col(e, |r| r.kind))
        .bind::<Array<BigInt>, _>(col(e, |r| r.time_us))
        .bind::<Array<Text>, _>(col(e, |r| r.currency))
        .bind::<Array<BigInt>, _>(col(e, |r| r.amount_minor))
        .bind::<Array<BigInt>, _>(col(e, |r| r.fee_minor))
        .bind::<Array<BigInt>, _>(col(e, |r| r.account_id))
        .bind::<Array<BigInt>, _>(col(e, |r| r.counterparty_id))
        .bind::<Array<Binary>, _>(col(e, |r| r.request_hash.as_slice()))
        .bind::<Array<diesel::sql_types::Nullable<BigInt>>, _>(col(e, |r| r.leaf_index))
        .execute(c)?;
    let p = &b.postings;
    diesel::sql_query(PG_POSTINGS)
        .bind::<Array<BigInt>, _>(col(p, |r| r.entry_seq))
        .bind::<Array<Integer>, _>(col(p, |r| r.leg))
        .bind::<Array<BigInt>, _>(col(p, |r| r.account_id))
        .bind::<Array<BigInt>, _>(col(p, |r| r.amount_minor))
        .bind::<Array<BigInt>, _>(col(p, |r| r.balance_after_minor))
        .execute(c)?;
    let l = &b.leaves;
    if l.is_empty() {
        return Ok(());
    }
    diesel::sql_query(PG_LEAVES)
        .bind::<Array<BigInt>, _>(col(l, |r| r.leaf_index))
        .bind::<Array<Text>, _>(col(l, |r| r.kind))
        .bind::<Array<Binary>, _>(col(l, |r| r.leaf.as_slice()))
        .bind::<Array<Binary>, _>(col(l, |r| r.leaf_hash.as_slice()))
        .execute(c)?;
    let n = &b.nodes;
    if !n.is_empty() {
        diesel::sql_query(PG_NODES)
            .bind::<Array<Integer>, _>(col(n, |r| r.level))
            .bind::<Array<BigInt>, _>(col(n, |r| r.idx))
            .bind::<Array<Binary>, _>(col(n, |r| r.hash.as_slice()))
            .execute(c)?;
    }
    Ok(())
}

/// The head, balances and tree's edge of the database Kartu set up (read once, before
/// the clock starts).
fn load_books(url: &str, audit: bool) -> Result<Books> {
    macro_rules! read {
        ($c:expr) => {{
            let head: (i64, i64, i64) = ledger_head::table
                .find(1)
                .select((ledger_head::last_seq, ledger_head::last_time_us, ledger_head::tree_size))
                .get_result($c)?;
            let postings: Vec<(i64, i64)> = postings::table
                .order((postings::entry_seq, postings::leg))
                .select((postings::account_id, postings::balance_after_minor))
                .load($c)?;
            let hashes: Vec<Vec<u8>> =
                audit_leaves::table.order(audit_leaves::leaf_index).select(audit_leaves::leaf_hash).load($c)?;
            (head, postings, hashes)
        }};
    }
    let ((last_seq, last_time_us, tree_size), postings, hashes) = match Sink::open(url)? {
        Sink::Sqlite(mut c) => read!(&mut c),
        Sink::Pg(mut c) => read!(&mut c),
    };
    let mut tree = Tree { size: 0, edge: Vec::new() };
    for h in hashes {
        tree.append(h.as_slice().try_into().context("a leaf hash of 32 bytes")?, &mut Vec::new());
    }
    if tree.size != tree_size {
        bail!("baseline: the log has {} leaves, the head says {tree_size}", tree.size);
    }
    Ok(Books {
        head: Head { last_seq, last_time_us, tree_size },
        balances: postings.into_iter().collect(),
        tree,
        audit,
    })
}

/// SQLite: checkpoints the WAL from another connection (PASSIVE) on Kartu's schedule
/// (`ledger::wal_checkpoint_wait`: every 100 ms, every 10 ms past half the bound), as
/// Kartu's maintenance thread does, until dropped. The writer finishes it above Kartu's
/// bound (`Sink::bound_wal`).
struct Checkpointer {
    stop: Arc<AtomicBool>,
    /// The bytes of the log in the WAL at the last checkpoint.
    log: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(url: &str) -> Result<Checkpointer> {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(AtomicU64::new(0));
        let Some(path) = url.strip_prefix("sqlite://").map(str::to_owned) else {
            return Ok(Checkpointer { stop, log, handle: None });
        };
        let mut c = SqliteConnection::establish(&path)?;
        c.batch_execute("PRAGMA busy_timeout = 10000;")?;
        let (flag, seen) = (stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            let mut wait = ledger::WAL_CHECKPOINT_INTERVAL;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(wait);
                match checkpoint(&mut c) {
                    Ok(bytes) => {
                        seen.store(bytes, Ordering::Relaxed);
                        wait = ledger::wal_checkpoint_wait(bytes, ledger::WAL_CHECKPOINT_BYTES);
                    }
                    Err(e) => eprintln!("bench: baseline WAL checkpoint: {e}"),
                }
            }
        });
        Ok(Checkpointer { stop, log, handle: Some(handle) })
    }
}

/// A PASSIVE checkpoint; returns the bytes of the log in the WAL (frames of 24 bytes and
/// a page), 0 when another checkpoint was running.
fn checkpoint(c: &mut SqliteConnection) -> Result<u64> {
    #[derive(diesel::QueryableByName)]
    struct Log {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        log: i32,
    }
    #[derive(diesel::QueryableByName)]
    struct PageSize {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        page_size: i64,
    }
    let log: Log = diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(c)?;
    let page: PageSize = diesel::sql_query("PRAGMA page_size").get_result(c)?;
    // -1 when another connection was checkpointing (busy), as Kartu's `Db::wal_checkpoint`
    // reads it: no log figure, 0.
    Ok(u64::try_from(log.log).unwrap_or(0) * (u64::try_from(page.page_size)? + 24))
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The baseline's writer on one database: its books, its connection and the WAL's
/// checkpointer.
pub struct RawWriter {
    books: Books,
    sink: Sink,
    checkpointer: Checkpointer,
    /// Payments written so far (what picks each payment's parties).
    written: u64,
}

impl RawWriter {
    /// A writer on the database at `url` (migrated, with a city's accounts); `audit` as
    /// `LedgerConfig::audit_log`.
    pub fn open(url: &str, audit: bool) -> Result<RawWriter> {
        let books = load_books(url, audit)?;
        Ok(RawWriter { books, sink: Sink::open(url)?, checkpointer: Checkpointer::start(url)?, written: 0 })
    }

    /// Payments/s in batches of `size` for `duration`.
    pub fn run(&mut self, city: &City, size: usize, duration: Duration) -> Result<f64> {
        let start = Instant::now();
        let first = self.written;
        while start.elapsed() < duration {
            let batch = self.books.batch(city, self.written, size);
            self.sink.write(&batch)?;
            self.sink.bound_wal(&self.checkpointer.log)?;
            self.written += size as u64;
        }
        Ok((self.written - first) as f64 / start.elapsed().as_secs_f64())
    }

    /// The tree's size and root, for [`check`] (`None` for an empty log).
    pub fn tree(&self) -> Option<(i64, [u8; 32])> {
        Some((self.books.tree.size, self.books.tree.root()?))
    }
}

/// Payments/s for each batch size in `batches`, one after the other on the database at
/// `url` (migrated, with `city`'s accounts), audit log on: `duration` each. Returns the
/// new tree size and root too, for [`check`].
pub fn measure(url: &str, city: &City, batches: &[usize], duration: Duration) -> Result<(Vec<f64>, i64, [u8; 32])> {
    let mut writer = RawWriter::open(url, true)?;
    let rates = batches.iter().map(|&size| writer.run(city, size, duration)).collect::<Result<Vec<_>>>()?;
    let (size, root) = writer.tree().context("an empty log")?;
    Ok((rates, size, root))
}

/// Checks through Kartu that the baseline wrote what Kartu would have: the books balance,
/// the last entry's leaf hashes to its stored hash, and an inclusion proof built from the
/// stored leaves and nodes leads to the root the baseline computed.
pub fn check(url: &str, size: i64, root: [u8; 32]) -> Result<()> {
    let ledger = ledger::Ledger::open(url, ledger::LedgerConfig::default())?;
    let result = (|| -> Result<()> {
        if ledger.trial_balance()?.iter().any(|l| l.balances_sum_minor != 0) {
            bail!("the trial balance is not zero");
        }
        if ledger.tree_size()? != size {
            bail!("the ledger sees {} leaves, the baseline wrote {size}", ledger.tree_size()?);
        }
        let last = ledger.last_seq()?;
        for seq in [last, last / 2 + 1] {
            let entry = ledger.entry(seq)?.context("no such entry")?;
            let audit = entry.audit.context("an entry without a leaf")?;
            if merkle::leaf_hash(&ledger::audit::entry_leaf(&entry)) != audit.leaf_hash {
                bail!("entry {seq}: the leaf bytes differ from Kartu's encoding");
            }
            let proof = ledger.inclusion_proof(audit.leaf_index, size)?;
            merkle::verify_inclusion(&audit.leaf_hash, audit.leaf_index as u64, size as u64, &proof, &root)
                .map_err(|e| anyhow::anyhow!("entry {seq}: inclusion proof: {e}"))?;
        }
        Ok(())
    })();
    ledger.shutdown();
    result.context("baseline check")
}
