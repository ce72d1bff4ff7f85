//! `kartu audit verify`: recompute everything from the database and report the first thing
//! that does not match — a leaf hash, a root at a signed checkpoint, a signature, a balance
//! chain, a zero sum, the gapless sequence, or a journal row that differs from its leaf —
//! and every registry row that differs from its operator-action leaves (check 8, in
//! `verify_registry`).
//!
//! The checks read the stored leaves and rebuild the Merkle tree in memory from them
//! (nothing stored about the tree is trusted), and compare the journal and registry tables
//! with the leaves, so an attacker with write access to the database must also forge a
//! signature.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::audit::{decode_entry_leaf, decode_event_leaf, entry_leaf, event_leaf};
use crate::domain::{AccountId, Entry, EventRecord};
use crate::replay::Replayer;
use crate::store::{CheckpointRow, Db};
pub use crate::verify_registry::RegistryFinding;
use crate::verify_registry::{self, Collector};
use crate::LedgerError;

/// Leaves and entries read per query.
const VERIFY_PAGE: i64 = 5_000;

/// What to allow.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Accept leaves written after the newest signed checkpoint (a live log's last second).
    /// Without it, every leaf must be covered by a checkpoint.
    pub allow_unsigned_tail: bool,
    /// The origin line checkpoints must carry, if given.
    pub origin: Option<String>,
    /// An earlier signed checkpoint the auditor kept (its signature already checked): the
    /// log must extend it — at least its size, and the first `size` leaves hash to its root.
    pub trusted: Option<merkle::Checkpoint>,
}

/// What was checked, when everything holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Journal entries checked.
    pub entries: i64,
    /// Leaves in the log.
    pub leaves: i64,
    /// Signed checkpoints verified.
    pub checkpoints: i64,
    /// Accounts with postings.
    pub accounts: usize,
    /// Root of the whole log.
    pub root: [u8; 32],
    /// Leaves after the newest checkpoint (only with `allow_unsigned_tail`).
    pub unsigned_tail: i64,
    /// Registry rows compared with their operator-action leaves, and public transport's
    /// rows with theirs (all matched).
    pub registry_rows: usize,
    /// Operator-action leaves read.
    pub operator_actions: usize,
    /// The checkpoint keys the log announced, from the first key given (one when never
    /// rotated).
    pub keys: Vec<crate::keys::KeyPeriod>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The log or the journal does not hold; names where (and what the registry check
    /// found besides, from the leaves as stored).
    #[error("{}{}", describe(.entry_seq, .leaf_index, .reason), and_registry(.registry))]
    Failed {
        /// The first entry that fails, when one can be named.
        entry_seq: Option<i64>,
        /// Its leaf.
        leaf_index: Option<i64>,
        /// What is wrong.
        reason: String,
        /// Registry rows that differ from their operator-action leaves.
        registry: Vec<RegistryFinding>,
    },
    /// The log holds, but registry rows differ from their operator-action leaves: every
    /// one, table by table.
    #[error("{}", registry_text(.0))]
    Registry(Vec<RegistryFinding>),
    /// The database could not be read.
    #[error("cannot read the database: {0}")]
    Storage(#[from] LedgerError),
}

fn describe(entry: &Option<i64>, leaf: &Option<i64>, reason: &str) -> String {
    match (entry, leaf) {
        (Some(e), Some(l)) => format!("entry {e} (leaf {l}): {reason}"),
        (Some(e), None) => format!("entry {e}: {reason}"),
        (None, Some(l)) => format!("leaf {l}: {reason}"),
        (None, None) => reason.to_owned(),
    }
}

fn registry_text(findings: &[RegistryFinding]) -> String {
    let mut text = format!(
        "{} registry row(s) differ from their operator-action leaves:",
        findings
            .iter()
            .map(|f| (f.table, f.row, if f.row.is_none() { f.label.as_str() } else { "" }))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    for f in findings {
        text.push_str(&format!("\n  {f}"));
    }
    text
}

fn and_registry(findings: &[RegistryFinding]) -> String {
    if findings.is_empty() {
        String::new()
    } else {
        format!("\nand {}", registry_text(findings))
    }
}

fn fail<T>(entry_seq: Option<i64>, leaf_index: Option<i64>, reason: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError::Failed { entry_seq, leaf_index, reason: reason.into(), registry: Vec::new() })
}

/// Verifies the log and journal at `url` against the checkpoint key `verifier`.
/// `progress(done, total)` is called after each page of leaves.
pub fn verify(
    url: &str,
    verifier: &merkle::Verifier,
    options: &VerifyOptions,
    mut progress: impl FnMut(i64, i64),
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let mut db = Db::open(url)?;
    let mut reads = Db::open(url)?;
    let accounts = db.all_accounts()?.into_iter().map(|a| (a.id, a)).collect();
    let head_seq = db.last_seq()?;
    let head_size = db.tree_size()?;
    let mut audit = Auditor {
        chain: crate::keys::KeyChain::new(&verifier.to_string()).map_err(LedgerError::Invariant)?,
        options,
        replay: Replayer::with_accounts(accounts),
        tree: merkle::MemoryTree::new(),
        checkpoints: VecDeque::new(),
        checkpoints_after: 0,
        checkpoints_done: 0,
        last_checked_size: 0,
        journal: VecDeque::new(),
        events: VecDeque::new(),
    };
    // One pass: the chain's checks stop at the first failure, the registry's collection of
    // operator actions reads every leaf, so the registry is checked either way.
    let mut registry = Collector::default();
    let mut broken: Option<VerifyError> = None;
    let mut next = 0;
    loop {
        let page = db.leaves(next, VERIFY_PAGE)?;
        let Some(last) = page.last() else { break };
        next = last.leaf_index + 1;
        for leaf in &page {
            registry.leaf(leaf);
            if broken.is_none() {
                match audit.leaf(&mut reads, leaf) {
                    Ok(()) => {}
                    Err(VerifyError::Storage(e)) => return Err(VerifyError::Storage(e)),
                    Err(e) => broken = Some(e),
                }
            }
        }
        progress(next, head_size);
    }
    let chain = match broken {
        Some(e) => Err(e),
        None => audit.finish(&mut reads, head_seq, head_size, started),
    };
    let checked = verify_registry::check(&mut reads, registry)?;
    match chain {
        Ok(mut report) if checked.findings.is_empty() => {
            report.registry_rows = checked.rows;
            report.operator_actions = checked.actions;
            report.elapsed = started.elapsed();
            Ok(report)
        }
        Ok(_) => Err(VerifyError::Registry(checked.findings)),
        Err(VerifyError::Failed { entry_seq, leaf_index, reason, .. }) => {
            Err(VerifyError::Failed { entry_seq, leaf_index, reason, registry: checked.findings })
        }
        Err(e) => Err(e),
    }
}

struct Auditor<'a> {
    /// The checkpoint key in force, from the first key the caller trusts through the
    /// rotations announced by the leaves read so far.
    chain: crate::keys::KeyChain,
    options: &'a VerifyOptions,
    /// The books replayed from the leaves (balances, debts, numbering, time).
    replay: Replayer,
    tree: merkle::MemoryTree,
    /// Checkpoints not yet reached, in size order (paged in).
    checkpoints: VecDeque<CheckpointRow>,
    checkpoints_after: i64,
    checkpoints_done: i64,
    last_checked_size: i64,
    /// Journal entries read ahead, in sequence order.
    journal: VecDeque<Entry>,
    /// Events read ahead, in id order.
    events: VecDeque<EventRecord>,
}

impl Auditor<'_> {
    fn leaf(&mut self, db: &mut Db, row: &crate::store::LeafRow) -> Result<(), VerifyError> {
        let index = self.tree.size() as i64;
        let at = Some(index);
        if row.leaf_index != index {
            return fail(
                Some(self.replay.next_seq()),
                at,
                format!("leaf {index} is missing (the next stored leaf is {})", row.leaf_index),
            );
        }
        let hash = merkle::leaf_hash(&row.leaf);
        if row.leaf_hash != hash {
            return fail(None, at, "the stored leaf hash is not SHA-256(0x00 || leaf)");
        }
        match row.kind.as_str() {
            "entry" => self.entry(db, row, hash)?,
            _ => self.event(db, row, hash)?,
        }
        self.tree.append(hash).map_err(|e| VerifyError::Failed {
            entry_seq: None,
            leaf_index: at,
            reason: e.to_string(),
            registry: Vec::new(),
        })?;
        self.trusted_at()?;
        self.checkpoints_at(db)
    }

    /// When the tree reaches the trusted checkpoint's size, its root must be the trusted one.
    fn trusted_at(&self) -> Result<(), VerifyError> {
        let Some(trusted) = &self.options.trusted else { return Ok(()) };
        if self.tree.size() != trusted.size() || &self.tree.root() == trusted.root() {
            return Ok(());
        }
        // Every leaf up to the last checkpoint verified so far is as signed then: the first
        // difference is after it.
        let (from, to) = (self.last_checked_size, trusted.size() as i64 - 1);
        let place = if from == to { format!("leaf {from}") } else { format!("a leaf in {from}..={to}") };
        fail(
            None,
            Some(from),
            format!(
                "the log does not extend the trusted checkpoint of size {}: the root of its first {} leaves \
                 differs from the trusted root; the first difference is {place} (leaves before {from} match the \
                 last signed checkpoint that verifies)",
                trusted.size(),
                trusted.size()
            ),
        )
    }

    fn entry(&mut self, db: &mut Db, row: &crate::store::LeafRow, hash: [u8; 32]) -> Result<(), VerifyError> {
        let at = Some(row.leaf_index);
        let leaf = match decode_entry_leaf(&row.leaf) {
            Ok(e) => e,
            Err(e) => return fail(Some(self.replay.next_seq()), at, format!("leaf does not decode: {e}")),
        };
        let seq = Some(leaf.seq);
        if let Err(reason) = self.replay.expect_entry(leaf.seq) {
            return fail(Some(self.replay.next_seq()), at, reason);
        }
        // The journal tables must say exactly what the leaf says.
        if self.journal.is_empty() {
            self.journal.extend(db.entries_from(self.replay.next_seq(), VERIFY_PAGE)?);
        }
        let Some(stored) = self.journal.pop_front() else {
            return fail(seq, at, "the journal has no such entry");
        };
        if stored.seq != leaf.seq {
            return fail(seq, at, format!("the journal has no such entry (its next entry is {})", stored.seq));
        }
        if stored.audit.map(|a| (a.leaf_index, a.leaf_hash)) != Some((row.leaf_index, hash)) {
            return fail(seq, at, "the journal entry points at another leaf");
        }
        if entry_leaf(&stored) != row.leaf {
            return fail(
                seq,
                at,
                format!("the journal tables differ from the leaf: {}", first_difference(&stored, &leaf)),
            );
        }
        self.replay.entry(&leaf).map_err(|reason| VerifyError::Failed {
            entry_seq: seq,
            leaf_index: at,
            reason,
            registry: Vec::new(),
        })
    }

    /// An event leaf: it decodes, events are numbered without gaps, and the events table
    /// says exactly what the leaf says.
    fn event(&mut self, db: &mut Db, row: &crate::store::LeafRow, hash: [u8; 32]) -> Result<(), VerifyError> {
        let at = Some(row.leaf_index);
        let near = Some(self.replay.entries());
        let leaf = match decode_event_leaf(&row.leaf) {
            Ok(e) => e,
            Err(e) => return fail(near, at, format!("event leaf does not decode: {e}")),
        };
        if leaf.kind != row.kind {
            return fail(near, at, format!("the leaf is a {:?} event, stored as {:?}", leaf.kind, row.kind));
        }
        if let Err(reason) = self.replay.event(leaf.id, leaf.time_us) {
            return fail(near, at, reason);
        }
        // A key rotation puts its key in force from this leaf on (the tree before it is
        // what it binds).
        if leaf.kind == crate::keys::ROTATION_KIND {
            let root = self.tree.root();
            if let Err(reason) = self.chain.event(row.leaf_index, &leaf.kind, &leaf.payload, &root) {
                return fail(near, at, reason);
            }
        }
        if self.events.is_empty() {
            self.events.extend(db.events(&Default::default(), leaf.id - 1, VERIFY_PAGE)?);
        }
        let Some(stored) = self.events.pop_front() else {
            return fail(near, at, format!("the events table has no event {}", leaf.id));
        };
        if stored.id != leaf.id {
            return fail(near, at, format!("the events table has no event {} (its next is {})", leaf.id, stored.id));
        }
        if stored.audit.map(|a| (a.leaf_index, a.leaf_hash)) != Some((row.leaf_index, hash)) {
            return fail(near, at, format!("event {} points at another leaf", leaf.id));
        }
        if event_leaf(&stored) != row.leaf {
            return fail(near, at, format!("the events table differs from the leaf of event {}", leaf.id));
        }
        Ok(())
    }

    /// Checks every checkpoint whose size the tree has just reached.
    fn checkpoints_at(&mut self, db: &mut Db) -> Result<(), VerifyError> {
        let size = self.tree.size() as i64;
        loop {
            if self.checkpoints.is_empty() {
                self.checkpoints.extend(db.checkpoints(self.checkpoints_after, VERIFY_PAGE)?);
                if let Some(last) = self.checkpoints.back() {
                    self.checkpoints_after = last.tree_size;
                }
            }
            match self.checkpoints.front() {
                Some(cp) if cp.tree_size == size => {
                    let cp =
                        self.checkpoints.pop_front().ok_or(LedgerError::Unavailable("checkpoint vanished".into()))?;
                    self.checkpoint(&cp)?;
                }
                _ => return Ok(()),
            }
        }
    }

    fn checkpoint(&mut self, cp: &CheckpointRow) -> Result<(), VerifyError> {
        let last_entry = Some(self.replay.entries());
        let at = Some(cp.tree_size - 1);
        let named = |reason: String| VerifyError::Failed {
            entry_seq: last_entry,
            leaf_index: at,
            reason: format!("checkpoint of size {}: {reason}", cp.tree_size),
            registry: Vec::new(),
        };
        let opened = self.chain.verifier().open(&cp.note).map_err(|e| {
            named(format!("signature does not verify with the key in force ({}): {e}", self.chain.key_line()))
        })?;
        let root = self.tree.root();
        if opened.size() != cp.tree_size as u64 {
            return Err(named(format!("the signed note is for size {}", opened.size())));
        }
        if opened.root() != &root || cp.root != root {
            return Err(named(
                "the root of the leaves differs from the signed root: a leaf at or before this point was changed"
                    .into(),
            ));
        }
        if let Some(origin) = &self.options.origin {
            if opened.origin() != origin {
                return Err(named(format!("origin {:?}, expected {origin:?}", opened.origin())));
            }
        }
        self.checkpoints_done += 1;
        self.last_checked_size = cp.tree_size;
        Ok(())
    }

    fn finish(
        mut self,
        db: &mut Db,
        head_seq: i64,
        head_size: i64,
        started: Instant,
    ) -> Result<VerifyReport, VerifyError> {
        let size = self.tree.size() as i64;
        self.nothing_left_over(db)?;
        self.head_agrees(head_seq, head_size)?;
        self.late_checkpoints(db)?;
        let unsigned_tail = size - self.last_checked_size;
        if unsigned_tail > 0 && !self.options.allow_unsigned_tail {
            return fail(
                Some(self.first_entry_after(db, self.last_checked_size)?),
                Some(self.last_checked_size),
                format!("{unsigned_tail} leaves are not covered by a signed checkpoint"),
            );
        }
        if let Err(reason) = self.replay.totals_zero() {
            return fail(None, None, reason);
        }
        self.debts_agree(db)?;
        Ok(VerifyReport {
            entries: self.replay.entries(),
            leaves: size,
            checkpoints: self.checkpoints_done,
            accounts: self.replay.accounts(),
            root: self.tree.root(),
            unsigned_tail,
            registry_rows: 0,
            operator_actions: 0,
            keys: self.chain.periods().to_vec(),
            elapsed: started.elapsed(),
        })
    }

    /// No rollback below the trusted checkpoint, and no journal entry or event without a leaf.
    fn nothing_left_over(&mut self, db: &mut Db) -> Result<(), VerifyError> {
        let size = self.tree.size() as i64;
        if let Some(trusted) = &self.options.trusted {
            if trusted.size() > size as u64 {
                return fail(
                    None,
                    Some(size),
                    format!(
                        "rollback: the log holds {size} leaves, fewer than the {} of the trusted checkpoint",
                        trusted.size()
                    ),
                );
            }
        }
        if self.journal.is_empty() {
            self.journal.extend(db.entries_from(self.replay.next_seq(), 1)?);
        }
        if let Some(extra) = self.journal.front() {
            return fail(Some(extra.seq), None, "the journal has this entry but the audit log has no leaf for it");
        }
        // The entries are 1..=last, gapless (checked leaf by leaf): any other entry number
        // on a posting names no entry.
        let last = self.replay.next_seq() - 1;
        if let Some((seq, leg, account)) = db.posting_of_no_entry(last)? {
            return fail(
                Some(seq),
                None,
                format!("the postings table has leg {leg} (account {account}) of entry {seq}, which the journal does not hold"),
            );
        }
        if self.events.is_empty() {
            self.events.extend(db.events(&Default::default(), self.replay.events(), 1)?);
        }
        if let Some(extra) = self.events.front() {
            return fail(
                None,
                None,
                format!("the events table has event {} but the audit log has no leaf for it", extra.id),
            );
        }
        Ok(())
    }

    /// The ledger head counts what the log holds.
    fn head_agrees(&self, head_seq: i64, head_size: i64) -> Result<(), VerifyError> {
        let size = self.tree.size() as i64;
        if head_seq != self.replay.entries() {
            return fail(
                Some(self.replay.next_seq()),
                None,
                format!("the ledger head says {head_seq} entries, the log holds {}", self.replay.entries()),
            );
        }
        if head_size != size {
            return fail(None, Some(size), format!("the ledger head says {head_size} leaves, the log holds {size}"));
        }
        Ok(())
    }

    /// Checkpoints stored after the pass reached their size: one of the tree's own size (a
    /// signer that ran while verify read the last leaves) is checked like the others; one
    /// that claims more leaves than the log holds is a finding (leaves were removed).
    fn late_checkpoints(&mut self, db: &mut Db) -> Result<(), VerifyError> {
        let size = self.tree.size() as i64;
        loop {
            if self.checkpoints.is_empty() {
                self.checkpoints.extend(db.checkpoints(self.checkpoints_after, 1)?);
                if let Some(last) = self.checkpoints.back() {
                    self.checkpoints_after = last.tree_size;
                }
            }
            match self.checkpoints.pop_front() {
                None => return Ok(()),
                Some(cp) if cp.tree_size == size => self.checkpoint(&cp)?,
                Some(cp) => {
                    return fail(
                        None,
                        Some(cp.tree_size - 1),
                        format!("a checkpoint claims {} leaves but the log holds {size}", cp.tree_size),
                    )
                }
            }
        }
    }

    /// What each wallet owes by the entries equals the wallet_debts table.
    fn debts_agree(&self, db: &mut Db) -> Result<(), VerifyError> {
        let stored = db.all_debts()?;
        let owed = |m: &HashMap<AccountId, i64>| -> std::collections::BTreeMap<AccountId, i64> {
            m.iter().filter(|(_, d)| **d != 0).map(|(a, d)| (*a, *d)).collect()
        };
        let (computed, stored) = (owed(self.replay.debts()), owed(&stored));
        if computed == stored {
            return Ok(());
        }
        let wallet = computed
            .iter()
            .chain(&stored)
            .map(|(a, _)| *a)
            .find(|a| computed.get(a) != stored.get(a))
            .unwrap_or(AccountId(0));
        fail(
            None,
            None,
            format!(
                "wallet {wallet} owes {} by the entries but {} by the wallet_debts table",
                computed.get(&wallet).copied().unwrap_or(0),
                stored.get(&wallet).copied().unwrap_or(0)
            ),
        )
    }

    fn first_entry_after(&self, db: &mut Db, leaf_index: i64) -> Result<i64, VerifyError> {
        let leaf = db.leaves(leaf_index, 1)?;
        Ok(leaf.first().and_then(|l| decode_entry_leaf(&l.leaf).ok()).map_or(self.replay.entries(), |e| e.seq))
    }
}

/// Names the first field where the journal row and the leaf disagree.
fn first_difference(stored: &Entry, leaf: &Entry) -> String {
    if stored.postings.len() != leaf.postings.len() {
        return format!("{} postings in the tables, {} in the leaf", stored.postings.len(), leaf.postings.len());
    }
    for (i, (a, b)) in stored.postings.iter().zip(&leaf.postings).enumerate() {
        if a.amount_minor != b.amount_minor {
            return format!("posting {i} amount is {} in the tables, {} in the leaf", a.amount_minor, b.amount_minor);
        }
        if a.balance_after_minor != b.balance_after_minor {
            return format!(
                "posting {i} balance after is {} in the tables, {} in the leaf",
                a.balance_after_minor, b.balance_after_minor
            );
        }
        if a.account_id != b.account_id || a.currency != b.currency {
            return format!("posting {i} account differs");
        }
    }
    if stored.amount_minor != leaf.amount_minor {
        return format!("amount is {} in the tables, {} in the leaf", stored.amount_minor, leaf.amount_minor);
    }
    "an entry field differs".into()
}
