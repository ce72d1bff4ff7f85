//! `kartu audit watch`: an auditor's witness of a live server. It remembers the last
//! checkpoint it verified (in a state file) and, at every poll, checks that the server's
//! newest signed checkpoint extends it: the signature (with the key pinned on the first
//! run), an RFC 9162 consistency proof from the server, and the new leaves fetched and
//! rehashed onto the tree's right edge kept in the state. A smaller tree (rollback), a
//! tree that does not extend the last one (fork), or a bad signature ends it with an error.
//! A checkpoint key rotation is a leaf ([`ledger::keys`]): the watcher follows it as it
//! rehashes the new leaves, and checks the new checkpoint with the key they put in force.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use client::Client;
use serde::{Deserialize, Serialize};

/// Leaves fetched per request.
const PAGE: u64 = 1000;

/// What `watch` was asked to do.
#[derive(Debug)]
pub struct Args {
    /// The server's base URL.
    pub url: String,
    /// The state file.
    pub state: PathBuf,
    /// Seconds between polls.
    pub interval: u64,
    /// The verifier key file; otherwise the state's pinned key, or the server's on the first run.
    pub public_key: Option<PathBuf>,
    /// An auditor token (the leaves need one).
    pub token: String,
    /// One poll, then exit.
    pub once: bool,
    /// The CA certificates to trust for an `https://` URL (else the system's roots).
    pub ca_file: Option<PathBuf>,
}

/// The last checkpoint verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// The checkpoint key in force at `size` (the key pinned on the first run, or the one
    /// the log's rotations put in force since).
    verifier_key: String,
    /// The key pinned on the first run (absent in state files from before rotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_key: Option<String>,
    /// The log's origin line.
    origin: String,
    /// Tree size of the last verified checkpoint.
    size: u64,
    /// Its root, hex.
    root: String,
    /// The tree's right edge at `size` (perfect subtrees, largest first), hex.
    edge: Vec<String>,
    /// The signed note itself (an auditor can keep it as a trusted checkpoint).
    note: String,
}

fn hash_of(text: &str) -> Result<merkle::Hash> {
    let bytes = hex::decode(text).map_err(|_| anyhow!("{text:?} is not hex"))?;
    bytes.try_into().map_err(|_| anyhow!("{text:?} is not a 32-byte hash"))
}

fn read_state(path: &Path) -> Result<Option<State>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("{} is not a watch state file", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Polls until an error (or once).
pub fn run(args: &Args) -> Result<()> {
    let client =
        Client::new(&args.url, args.ca_file.as_deref(), Some(Duration::from_secs(60)))?.with_token(&args.token);
    let mut state = read_state(&args.state)?;
    let key_line = match (&args.public_key, &state) {
        (Some(file), pinned) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_owned();
            if let Some(s) = pinned.as_ref() {
                let pinned_first = s.first_key.as_deref().unwrap_or(&s.verifier_key);
                if first != pinned_first {
                    bail!(
                        "BAD KEY: {} holds another key than the one pinned in the state ({pinned_first})",
                        file.display()
                    );
                }
                s.verifier_key.clone()
            } else {
                first
            }
        }
        (None, Some(s)) => s.verifier_key.clone(),
        (None, None) => {
            let line = client.public_key()?;
            eprintln!("kartu: pinning the server's checkpoint key {line}");
            line
        }
    };
    merkle::Verifier::parse(&key_line).context("the checkpoint verifier key")?;
    let first_key = state.as_ref().map_or(key_line.clone(), |s| s.first_key.clone().unwrap_or(key_line.clone()));
    loop {
        let key_line = state.as_ref().map_or(key_line.clone(), |s| s.verifier_key.clone());
        poll(&client, &key_line, &first_key, &mut state, &args.state)?;
        if args.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(args.interval.max(1)));
    }
}

/// One poll: `key_line` is the key in force at the state's size, `first_key` the one pinned
/// on the first run.
fn poll(client: &Client, key_line: &str, first_key: &str, state: &mut Option<State>, path: &Path) -> Result<()> {
    let note = client.latest_checkpoint()?;
    let mut chain = ledger::keys::KeyChain::new(key_line).map_err(|e| anyhow!(e))?;
    let bad_signature = |chain: &ledger::keys::KeyChain, e: merkle::NoteError| {
        anyhow!(
            "BAD SIGNATURE: the server's newest checkpoint does not verify with the key in force ({}): {e}",
            chain.key_line()
        )
    };
    // Signed by the key in force at its size: known after the new leaves are read.
    let checkpoint = merkle::unverified_text(&note)
        .and_then(merkle::Checkpoint::parse_body)
        .map_err(|e| bad_signature(&chain, e))?;
    let (new_size, new_root) = (checkpoint.size(), *checkpoint.root());
    let (old_size, old_root, mut edge) = last_verified(state.as_ref(), &checkpoint)?;
    if new_size <= old_size {
        chain.verifier().open(&note).map_err(|e| bad_signature(&chain, e))?;
    }
    if new_size < old_size {
        bail!(
            "ROLLBACK: the server's newest checkpoint has {new_size} leaves, fewer than the {old_size} of the \
             checkpoint verified before (root {}): its log or its checkpoints were rolled back",
            hex::encode(old_root)
        );
    }
    if new_size == old_size {
        if new_root != old_root {
            bail!(
                "FORK: the server signed another root ({}) for the size {old_size} already verified ({})",
                hex::encode(new_root),
                hex::encode(old_root)
            );
        }
        println!("unchanged: {new_size} leaves, root {}", hex::encode(new_root));
        return Ok(());
    }
    if old_size > 0 {
        consistent(client, (old_size, &old_root), (new_size, &new_root))?;
    }
    rehash(client, &mut edge, &mut chain, new_size)?;
    chain.verifier().open(&note).map_err(|e| bad_signature(&chain, e))?;
    for k in chain.periods().iter().skip(1) {
        println!(
            "key rotation at leaf {}: {} signs from tree size {}",
            k.rotation_leaf.unwrap_or(0),
            k.key,
            k.from_tree_size
        );
    }
    if edge.root() != new_root {
        bail!(
            "FORK: the leaves {old_size}..{new_size} the server serves, rehashed onto the tree verified before, do \
             not give its checkpoint's root"
        );
    }
    let next = State {
        verifier_key: chain.key_line().to_owned(),
        first_key: Some(first_key.to_owned()),
        origin: checkpoint.origin().to_owned(),
        size: new_size,
        root: hex::encode(new_root),
        edge: edge.hashes().iter().map(hex::encode).collect(),
        note,
    };
    save(path, state, next)?;
    println!("verified: {new_size} leaves (from {old_size}), root {}", hex::encode(new_root));
    Ok(())
}

/// Writes the state file (atomically), then keeps `next` as the state.
fn save(path: &Path, state: &mut Option<State>, next: State) -> Result<()> {
    let text = serde_json::to_string_pretty(&next)?;
    ledger::signer::write_file_atomically(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    *state = Some(next);
    Ok(())
}

/// The server's consistency proof from the checkpoint verified before to the new one.
fn consistent(client: &Client, old: (u64, &merkle::Hash), new: (u64, &merkle::Hash)) -> Result<()> {
    let ((old_size, old_root), (new_size, new_root)) = (old, new);
    let proof = client.consistency_proof(old_size, new_size).context("the consistency proof")?;
    let proof = proof.hashes.iter().map(|h| hash_of(h)).collect::<Result<Vec<_>>>()?;
    merkle::verify_consistency(old_size, new_size, old_root, new_root, &proof).map_err(|e| {
        anyhow!(
            "FORK: the server's checkpoint of size {new_size} does not extend the one of size {old_size} verified \
             before: the consistency proof fails ({e})"
        )
    })
}

/// The size, root and right edge of the last checkpoint verified (an empty tree on the
/// first run); the state must be of the same log and its edge must give its root.
fn last_verified(
    state: Option<&State>,
    checkpoint: &merkle::Checkpoint,
) -> Result<(u64, merkle::Hash, merkle::CompactRange)> {
    let Some(s) = state else { return Ok((0, merkle::empty_root(), merkle::CompactRange::new())) };
    if s.origin != checkpoint.origin() {
        bail!(
            "FORK: the server's checkpoint is for origin {:?}, the watched log is {:?}",
            checkpoint.origin(),
            s.origin
        );
    }
    let hashes = s.edge.iter().map(|h| hash_of(h)).collect::<Result<Vec<_>>>()?;
    let edge = merkle::CompactRange::from_parts(s.size, hashes)
        .ok_or_else(|| anyhow!("the state file's edge does not fit its size"))?;
    let root = hash_of(&s.root)?;
    if edge.root() != root {
        bail!("the state file's edge does not give its root: the state file was changed");
    }
    Ok((s.size, root, edge))
}

/// Fetches the leaves from the edge's size to `new_size` and rehashes them onto the edge;
/// `chain` follows the key rotations among them.
fn rehash(
    client: &Client,
    edge: &mut merkle::CompactRange,
    chain: &mut ledger::keys::KeyChain,
    new_size: u64,
) -> Result<()> {
    let mut progress = crate::progress::Progress::new("rehashed", new_size);
    while edge.size() < new_size {
        let from = edge.size();
        progress.set(from);
        let limit = PAGE.min(new_size - from);
        let page = client.leaves(from, limit).context("the leaves page")?;
        if page.leaves.is_empty() {
            bail!("the server's leaves end at {from}, before its checkpoint's size {new_size}");
        }
        for leaf in page.leaves.into_iter().take(limit as usize) {
            let at = edge.size();
            if u64::try_from(leaf.leaf_index) != Ok(at) {
                bail!("leaf {at}: the server sent leaf {} instead", leaf.leaf_index);
            }
            let bytes = hex::decode(&leaf.leaf).map_err(|_| anyhow!("leaf {at} is not hex"))?;
            let hash = merkle::leaf_hash(&bytes);
            if hex::encode(hash) != leaf.leaf_hash {
                bail!("leaf {at}: its leaf_hash is not SHA-256(0x00 || leaf)");
            }
            chain.leaf(at as i64, &bytes, || edge.root()).map_err(|e| anyhow!("BAD KEY ROTATION: leaf {at}: {e}"))?;
            edge.append(hash).map_err(|e| anyhow!("leaf {at}: {e}"))?;
        }
    }
    progress.finish(edge.size());
    Ok(())
}
