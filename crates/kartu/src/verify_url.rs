//! `kartu audit verify --url`: an auditor's check of a live server through its API only.
//! It fetches every leaf, recomputes every leaf hash and the RFC 9162 tree, checks the
//! newest signed checkpoint (signature, origin, root at its size), and re-derives the books
//! from the leaves alone: gapless entry sequence and event ids, time never going back,
//! postings summing to zero per currency, every account's balance chain, and a trial
//! balance of zero — which it compares with the server's own.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use ledger::audit::{decode_entry_leaf, decode_event_leaf};
use serde::Deserialize;

#[derive(Deserialize)]
struct Leaves {
    leaves: Vec<Leaf>,
}

#[derive(Deserialize)]
struct Leaf {
    leaf_index: i64,
    kind: String,
    leaf: String,
    leaf_hash: String,
}

#[derive(Deserialize)]
struct TrialBalance {
    currencies: Vec<TrialLine>,
    last_entry_seq: i64,
}

#[derive(Deserialize)]
struct TrialLine {
    currency: String,
    balanced: bool,
}

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
}

const PAGE: i64 = 1000;

/// A GET with a token; a transport failure says what it is (TLS and certificate errors
/// included, [`terminal::client::classify`]).
pub(crate) fn get(agent: &ureq::Agent, url: &str, token: &str) -> Result<String> {
    let mut response = agent
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| anyhow::anyhow!("GET {url}: {}", terminal::client::classify(url, &e)))?;
    let status = response.status();
    let body = response.body_mut().read_to_string().with_context(|| format!("reading {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}

/// Verifies the server at `base` through `agent` ([`terminal::client::agent`]).
pub fn verify(
    agent: &ureq::Agent,
    base: &str,
    token: &str,
    verifier: &merkle::Verifier,
    allow_unsigned_tail: bool,
    origin: Option<&str>,
    trusted: Option<&merkle::Checkpoint>,
) -> Result<Report> {
    terminal::client::check_url(base).map_err(anyhow::Error::msg)?;
    let base = base.trim_end_matches('/');
    let note = get(agent, &format!("{base}/v1/audit/checkpoints/latest"), token)?;
    let checkpoint = verifier.open(&note).map_err(|e| anyhow::anyhow!("the latest checkpoint does not verify: {e}"))?;
    if let Some(origin) = origin {
        if checkpoint.origin() != origin {
            bail!("the checkpoint's origin is {:?}, expected {origin:?}", checkpoint.origin());
        }
    }
    let mut tree = merkle::MemoryTree::new();
    let mut balances: HashMap<i64, (String, i64)> = HashMap::new();
    let (mut next_seq, mut next_event, mut last_time) = (1i64, 1i64, i64::MIN);
    let mut checked_root = checkpoint.size() == 0;
    let total = checkpoint.size().max(trusted.map_or(0, |t| t.size()));
    let mut progress = crate::progress::Progress::new("verified", total);
    loop {
        let from = tree.size();
        progress.set(from);
        let page: Leaves =
            serde_json::from_str(&get(agent, &format!("{base}/v1/audit/leaves?from={from}&limit={PAGE}"), token)?)
                .context("the leaves page is not the documented JSON")?;
        if page.leaves.is_empty() {
            break;
        }
        for leaf in page.leaves {
            let at = leaf.leaf_index;
            let fail = |reason: String| anyhow::anyhow!("leaf {at}: {reason}");
            if at != tree.size() as i64 {
                return Err(fail(format!("expected leaf {} here", tree.size())));
            }
            let bytes = hex::decode(&leaf.leaf).map_err(|_| fail("leaf is not hex".into()))?;
            let hash = merkle::leaf_hash(&bytes);
            if hex::encode(hash) != leaf.leaf_hash {
                return Err(fail("leaf_hash is not SHA-256(0x00 || leaf)".into()));
            }
            if leaf.kind == "entry" {
                let e = decode_entry_leaf(&bytes).map_err(|e| fail(format!("entry leaf does not decode: {e}")))?;
                if e.seq != next_seq {
                    return Err(fail(format!("expected entry {next_seq}, the leaf holds entry {}", e.seq)));
                }
                next_seq += 1;
                if e.time_us < last_time {
                    return Err(fail(format!("entry {}: time goes backwards", e.seq)));
                }
                last_time = e.time_us;
                let mut sums: HashMap<String, i128> = HashMap::new();
                for p in &e.postings {
                    *sums.entry(p.currency.code().to_owned()).or_default() += i128::from(p.amount_minor);
                    let (currency, before) =
                        balances.entry(p.account_id.0).or_insert_with(|| (p.currency.code().to_owned(), 0));
                    if currency != p.currency.code() {
                        return Err(fail(format!("entry {}: account {} changes currency", e.seq, p.account_id.0)));
                    }
                    let expected =
                        before.checked_add(p.amount_minor).ok_or_else(|| fail("balance overflows".into()))?;
                    if expected != p.balance_after_minor {
                        return Err(fail(format!(
                            "entry {}: account {} balance after {} but {} + {} = {}",
                            e.seq, p.account_id.0, p.balance_after_minor, before, p.amount_minor, expected
                        )));
                    }
                    *before = expected;
                }
                if let Some((c, s)) = sums.iter().find(|(_, s)| **s != 0) {
                    return Err(fail(format!("entry {}: postings in {c} sum to {s}", e.seq)));
                }
            } else {
                let e = decode_event_leaf(&bytes).map_err(|e| fail(format!("event leaf does not decode: {e}")))?;
                if e.kind != leaf.kind || e.id != next_event {
                    return Err(fail(format!(
                        "expected event {next_event} of kind {}, got {} {}",
                        leaf.kind, e.kind, e.id
                    )));
                }
                next_event += 1;
                if e.time_us < last_time {
                    return Err(fail(format!("event {}: time goes backwards", e.id)));
                }
                last_time = e.time_us;
            }
            tree.append(hash).map_err(|e| fail(e.to_string()))?;
            if tree.size() == checkpoint.size() {
                if &tree.root() != checkpoint.root() {
                    bail!(
                        "the root of the first {} leaves differs from the signed checkpoint: a leaf was changed",
                        checkpoint.size()
                    );
                }
                checked_root = true;
            }
            if let Some(t) = trusted.filter(|t| t.size() == tree.size()) {
                if &tree.root() != t.root() {
                    // The server's own checkpoint, if smaller and matching, vouches for the
                    // leaves before it: the first difference is after.
                    let from = if checkpoint.size() < t.size() && checked_root { checkpoint.size() } else { 0 };
                    let to = t.size() - 1;
                    let place = if from == to { format!("leaf {from}") } else { format!("a leaf in {from}..={to}") };
                    bail!(
                        "the log does not extend the trusted checkpoint of size {}: the root of its first {} leaves \
                         differs from the trusted root; the first difference is {place}",
                        t.size(),
                        t.size()
                    );
                }
            }
        }
    }
    progress.finish(tree.size());
    if let Some(t) = trusted.filter(|t| t.size() > tree.size()) {
        bail!("rollback: the server has {} leaves, fewer than the {} of the trusted checkpoint", tree.size(), t.size());
    }
    if !checked_root {
        bail!("the server has {} leaves, fewer than its signed checkpoint's {}", tree.size(), checkpoint.size());
    }
    let tail = tree.size() - checkpoint.size();
    if tail > 0 && !allow_unsigned_tail {
        bail!("{tail} leaves are not yet covered by a signed checkpoint (use --allow-unsigned-tail on a live server)");
    }
    let mut totals: HashMap<&str, i128> = HashMap::new();
    for (currency, b) in balances.values() {
        *totals.entry(currency).or_default() += i128::from(*b);
    }
    if let Some((c, s)) = totals.iter().find(|(_, s)| **s != 0) {
        bail!("recomputed from the leaves, the balances in {c} sum to {s}, not zero");
    }
    let trial: TrialBalance = serde_json::from_str(&get(agent, &format!("{base}/v1/audit/trial-balance"), token)?)
        .context("the trial balance is not the documented JSON")?;
    if let Some(line) = trial.currencies.iter().find(|l| !l.balanced) {
        bail!("the server's trial balance in {} is not zero", line.currency);
    }
    if trial.last_entry_seq < next_seq - 1 {
        bail!("the server reports {} entries, its leaves hold {}", trial.last_entry_seq, next_seq - 1);
    }
    Ok(Report {
        leaves: tree.size(),
        entries: next_seq - 1,
        events: next_event - 1,
        checkpoint_size: checkpoint.size(),
        root: hex::encode(tree.root_at(checkpoint.size()).map_err(|e| anyhow::anyhow!("{e}"))?),
        unsigned_tail: tail,
        accounts: balances.len(),
    })
}
