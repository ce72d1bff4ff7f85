//! `kartu audit verify --url`: an auditor's check of a live server through its API only.
//! It fetches every leaf, recomputes every leaf hash and the RFC 9162 tree, checks the
//! newest signed checkpoint (signature, origin, root at its size), and re-derives the books
//! from the leaves alone with the ledger's [`Replayer`] (the rule `kartu audit verify` on a
//! database uses too): gapless entry sequence and event ids, time never going back,
//! postings summing to zero per currency, every account's balance chain, and a trial
//! balance of zero — which it compares with the server's own.

use anyhow::{anyhow, bail, Context, Result};
use client::wire::LeafView;
use client::Client;
use ledger::audit::{decode_entry_leaf, decode_event_leaf, Replayer};

/// What was checked.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    leaves: u64,
    entries: i64,
    events: i64,
    checkpoint_size: u64,
    root: String,
    unsigned_tail: u64,
    accounts: usize,
    /// The checkpoint keys the log announced, oldest first.
    keys: Vec<ledger::keys::KeyPeriod>,
}

/// Leaves fetched per request.
const PAGE: u64 = 1000;

/// Verifies the server `client` speaks to (with an auditor's token).
pub fn verify(
    client: &Client,
    verifier: &merkle::Verifier,
    allow_unsigned_tail: bool,
    origin: Option<&str>,
    trusted: Option<&merkle::Checkpoint>,
) -> Result<Report> {
    let note = client.latest_checkpoint()?;
    // Which key signed it is known once the leaves before it are read (key rotations are
    // leaves); it is verified then, with the key they put in force.
    let checkpoint = merkle::unverified_text(&note)
        .and_then(merkle::Checkpoint::parse_body)
        .map_err(|e| anyhow!("the latest checkpoint is not a signed checkpoint: {e}"))?;
    let chain = ledger::keys::KeyChain::new(&verifier.to_string()).map_err(|e| anyhow!(e))?;
    if checkpoint.size() == 0 {
        chain.verifier().open(&note).map_err(|e| anyhow!("the latest checkpoint does not verify: {e}"))?;
    }
    if let Some(origin) = origin {
        if checkpoint.origin() != origin {
            bail!("the checkpoint's origin is {:?}, expected {origin:?}", checkpoint.origin());
        }
    }
    let mut walk = Walk {
        checked_root: checkpoint.size() == 0,
        checkpoint,
        note,
        chain,
        trusted,
        tree: merkle::MemoryTree::new(),
        replay: Replayer::new(),
    };
    let total = walk.checkpoint.size().max(trusted.map_or(0, |t| t.size()));
    let mut progress = crate::progress::Progress::new("verified", total);
    loop {
        progress.set(walk.tree.size());
        let page = client.leaves(walk.tree.size(), PAGE).context("the leaves page")?;
        if page.leaves.is_empty() {
            break;
        }
        for leaf in &page.leaves {
            walk.leaf(leaf)?;
        }
    }
    progress.finish(walk.tree.size());
    walk.finish(client, allow_unsigned_tail)
}

/// The leaves read so far: the tree they make and the books they replay.
struct Walk<'a> {
    /// The server's newest signed checkpoint (its signature checked when the leaves reach it).
    checkpoint: merkle::Checkpoint,
    /// Its signed note.
    note: String,
    /// The checkpoint key in force after the leaves read so far.
    chain: ledger::keys::KeyChain,
    /// The auditor's own earlier checkpoint, which the log must extend.
    trusted: Option<&'a merkle::Checkpoint>,
    tree: merkle::MemoryTree,
    replay: Replayer,
    /// Whether the tree reached the checkpoint's size with its root.
    checked_root: bool,
}

impl Walk<'_> {
    /// One leaf: its index, its hash, its entry or event replayed, the tree grown by it.
    fn leaf(&mut self, leaf: &LeafView) -> Result<()> {
        let at = leaf.leaf_index;
        let fail = |reason: String| anyhow!("leaf {at}: {reason}");
        if at != self.tree.size() as i64 {
            return Err(fail(format!("expected leaf {} here", self.tree.size())));
        }
        let bytes = hex::decode(&leaf.leaf).map_err(|_| fail("leaf is not hex".into()))?;
        let hash = merkle::leaf_hash(&bytes);
        if hex::encode(hash) != leaf.leaf_hash {
            return Err(fail("leaf_hash is not SHA-256(0x00 || leaf)".into()));
        }
        if leaf.kind == "entry" {
            let e = decode_entry_leaf(&bytes).map_err(|e| fail(format!("entry leaf does not decode: {e}")))?;
            self.replay.entry(&e).map_err(|reason| fail(format!("entry {}: {reason}", e.seq)))?;
        } else {
            let e = decode_event_leaf(&bytes).map_err(|e| fail(format!("event leaf does not decode: {e}")))?;
            if e.kind != leaf.kind {
                return Err(fail(format!("the leaf is a {:?} event, listed as {:?}", e.kind, leaf.kind)));
            }
            self.replay.event(e.id, e.time_us).map_err(|reason| fail(format!("event {}: {reason}", e.id)))?;
            if e.kind == ledger::keys::ROTATION_KIND {
                self.chain.event(at, &e.kind, &e.payload, &self.tree.root()).map_err(fail)?;
            }
        }
        self.tree.append(hash).map_err(|e| fail(e.to_string()))?;
        self.roots()
    }

    /// When the tree reaches the signed or the trusted checkpoint's size, its root must be
    /// theirs.
    fn roots(&mut self) -> Result<()> {
        let checkpoint = &self.checkpoint;
        if self.tree.size() == checkpoint.size() {
            self.chain.verifier().open(&self.note).map_err(|e| {
                anyhow!("the latest checkpoint does not verify with the key in force ({}): {e}", self.chain.key_line())
            })?;
            if &self.tree.root() != checkpoint.root() {
                bail!(
                    "the root of the first {} leaves differs from the signed checkpoint: a leaf was changed",
                    checkpoint.size()
                );
            }
            self.checked_root = true;
        }
        let Some(t) = self.trusted.filter(|t| t.size() == self.tree.size()) else { return Ok(()) };
        if &self.tree.root() == t.root() {
            return Ok(());
        }
        // The server's own checkpoint, if smaller and matching, vouches for the leaves
        // before it: the first difference is after.
        let from = if checkpoint.size() < t.size() && self.checked_root { checkpoint.size() } else { 0 };
        let to = t.size() - 1;
        let place = if from == to { format!("leaf {from}") } else { format!("a leaf in {from}..={to}") };
        bail!(
            "the log does not extend the trusted checkpoint of size {}: the root of its first {} leaves differs \
             from the trusted root; the first difference is {place}",
            t.size(),
            t.size()
        )
    }

    /// After the last leaf: the sizes, the unsigned tail, the books' totals, and the
    /// server's own trial balance.
    fn finish(self, client: &Client, allow_unsigned_tail: bool) -> Result<Report> {
        let (size, signed) = (self.tree.size(), self.checkpoint.size());
        if let Some(t) = self.trusted.filter(|t| t.size() > size) {
            bail!("rollback: the server has {size} leaves, fewer than the {} of the trusted checkpoint", t.size());
        }
        if !self.checked_root {
            bail!("the server has {size} leaves, fewer than its signed checkpoint's {signed}");
        }
        let tail = size - signed;
        if tail > 0 && !allow_unsigned_tail {
            bail!(
                "{tail} leaves are not yet covered by a signed checkpoint (use --allow-unsigned-tail on a live server)"
            );
        }
        self.replay.totals_zero().map_err(|reason| anyhow!("recomputed from the leaves, {reason}"))?;
        let trial = trial_balance_covering(client, self.replay.entries())?;
        if let Some(line) = trial.currencies.iter().find(|l| !l.balanced) {
            bail!("the server's trial balance in {} is not zero", line.currency);
        }
        if trial.last_entry_seq < self.replay.entries() {
            bail!("the server reports {} entries, its leaves hold {}", trial.last_entry_seq, self.replay.entries());
        }
        Ok(Report {
            leaves: size,
            entries: self.replay.entries(),
            events: self.replay.events(),
            checkpoint_size: signed,
            root: hex::encode(self.tree.root_at(signed).map_err(|e| anyhow!("{e}"))?),
            unsigned_tail: tail,
            accounts: self.replay.accounts(),
            keys: self.chain.periods().to_vec(),
        })
    }
}

/// The server's trial balance once it covers `entries` entries: its reports may come from
/// a read replica a moment behind the leaves (read on the primary), so it is asked again
/// for up to 30 s before a shorter one counts as a finding.
fn trial_balance_covering(client: &Client, entries: i64) -> Result<client::wire::TrialBalance> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let trial = client.trial_balance().context("the trial balance")?;
        if trial.last_entry_seq >= entries || std::time::Instant::now() >= deadline {
            return Ok(trial);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
