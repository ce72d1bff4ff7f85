//! The checkpoint signer's memory: the last checkpoint it signed, and the tree's right edge
//! at that size recomputed from the leaves. Before it signs a larger tree it extends that
//! edge with the leaves added since (each leaf hash recomputed from the leaf bytes), so the
//! root it signs extends the one it signed before by construction; nothing stored about
//! the tree (`merkle_nodes`, `leaf_hash`, `checkpoints`) is trusted.
//!
//! The last signed note is also kept in a file outside the database (the data directory's
//! `checkpoint.latest`), so deleting checkpoints from the tables does not reset what the
//! signer trusts. When the log no longer extends it — fewer leaves (a rollback), leaves that
//! no longer hash to its root (a rewrite), its checkpoint row gone (deleted), or stored
//! nodes that disagree with the leaves — the signer refuses: it signs nothing until an
//! operator has looked (see docs/AUDIT.md).

use std::path::Path;
use std::sync::Arc;

use crate::store::{CheckpointRow, Db};
use crate::LedgerError;

/// How this process signs checkpoints.
#[derive(Clone)]
pub struct CheckpointSettings {
    /// The Ed25519 signer (the key comes from the key file, never the database).
    pub signer: Arc<merkle::Signer>,
    /// The log's origin line, e.g. `makassar.example/kartu`.
    pub origin: String,
    /// How often to check for new leaves.
    pub interval: std::time::Duration,
    /// The file outside the database that keeps the last checkpoint signed (the data
    /// directory's [`TRUSTED_CHECKPOINT_FILE`]), written atomically after
    /// each signature and trusted on start. `None`: memory only (tests, benchmarks); on
    /// start the database's newest checkpoint is trusted then.
    pub trusted_file: Option<std::path::PathBuf>,
    /// The log's first checkpoint key (verifier key line), where the chain of rotations
    /// announced in the log starts ([`crate::keys`]); `None`: the signer's own key (a log
    /// never rotated).
    pub first_key: Option<String>,
}

impl CheckpointSettings {
    /// The first key of the log's chain of keys.
    pub fn first_key_line(&self) -> String {
        self.first_key.clone().unwrap_or_else(|| self.signer.verifier_key())
    }
}

impl std::fmt::Debug for CheckpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSettings")
            .field("origin", &self.origin)
            .field("interval", &self.interval)
            .field("trusted_file", &self.trusted_file)
            .field("first_key", &self.first_key)
            .finish()
    }
}

/// The file name of the last signed checkpoint in the data directory.
pub const TRUSTED_CHECKPOINT_FILE: &str = "checkpoint.latest";

/// Leaves read per query while extending the edge.
const PAGE: i64 = 5_000;

/// What the signer trusts.
#[derive(Debug, Default)]
pub(crate) struct SignerState {
    /// The right edge at the last checkpoint signed; `None` until loaded (the first run).
    trusted: Option<Trusted>,
    /// A signed note the file does not hold yet (its write failed): written again first.
    file_behind: Option<String>,
}

#[derive(Debug)]
struct Trusted {
    edge: merkle::CompactRange,
    root: merkle::Hash,
    /// The keys announced by the leaves up to the edge's size.
    chain: crate::keys::KeyChain,
}

/// One step of the signer.
pub(crate) enum Step {
    /// Signed and stored.
    Signed(CheckpointRow),
    /// Nothing new to sign.
    Nothing,
    /// The log does not extend what the signer trusts: why.
    Refuse(String),
}

/// Loads what to trust (on the first call), checks the log still extends it and signs the
/// current tree when it grew. `store` writes the signed row (through the writer, see
/// `Ledger::on_writer`, or on `db`).
pub(crate) fn step(
    db: &mut Db,
    settings: &CheckpointSettings,
    state: &mut SignerState,
    now_us: i64,
    store: &mut dyn FnMut(&mut Db, &CheckpointRow) -> Result<(), LedgerError>,
) -> Result<Step, LedgerError> {
    if let (Some(note), Some(path)) = (state.file_behind.clone(), settings.trusted_file.as_deref()) {
        write_file_atomically(path, note.as_bytes())
            .map_err(|e| LedgerError::Unavailable(format!("writing {}: {e}", path.display())))?;
        state.file_behind = None;
    }
    let size = db.tree_size()?;
    if state.trusted.is_none() {
        match load(db, settings, size)? {
            Ok(trusted) => state.trusted = Some(trusted),
            Err(reason) => return Ok(Step::Refuse(reason)),
        }
    }
    let Some(trusted) = state.trusted.as_ref() else { return Ok(Step::Nothing) };
    let trusted_size = trusted.edge.size() as i64;
    if size < trusted_size {
        return Ok(Step::Refuse(rollback(size, trusted_size)));
    }
    if let Some(reason) = missing_row(db, trusted_size, &trusted.root)? {
        return Ok(Step::Refuse(reason));
    }
    let last = db.latest_checkpoint()?.map_or(0, |c| c.tree_size);
    if size == 0 || size <= last || size == trusted_size {
        return Ok(Step::Nothing);
    }
    let (mut edge, mut chain) = (trusted.edge.clone(), trusted.chain.clone());
    if let Err(reason) = extend(db, &mut edge, &mut chain, size)? {
        return Ok(Step::Refuse(reason));
    }
    if let Some(reason) = another_key_in_force(&chain, settings) {
        return Ok(Step::Refuse(reason));
    }
    let root = edge.root();
    let nodes = db.nodes(&merkle::nodes_needed_for_root(size as u64))?;
    let stored = merkle::root(size as u64, |c| nodes.get(&c).copied()).ok();
    if stored != Some(root) {
        return Ok(Step::Refuse(format!(
            "the stored Merkle nodes do not give the root of the first {size} leaves recomputed from the \
             leaves: merkle_nodes was changed, or leaves before {trusted_size} were rewritten since this \
             signer started"
        )));
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(now_us.max(0) as u64);
    let extension = format!("time {}", humantime::format_rfc3339_seconds(time));
    let checkpoint = merkle::Checkpoint::new(&settings.origin, size as u64, root, vec![extension])
        .map_err(|e| LedgerError::Invariant(format!("checkpoint: {e}")))?;
    let row = CheckpointRow {
        tree_size: size,
        root: root.to_vec(),
        time_us: now_us,
        note: checkpoint.sign(&settings.signer),
    };
    // The row first: a file ahead of the table would look like a deleted checkpoint.
    store(db, &row)?;
    state.trusted = Some(Trusted { edge, root, chain });
    if let Some(path) = settings.trusted_file.as_deref() {
        if let Err(e) = write_file_atomically(path, row.note.as_bytes()) {
            tracing::warn!(error = %e, file = %path.display(), "cannot write the last signed checkpoint; trying again");
            state.file_behind = Some(row.note.clone());
        }
    }
    Ok(Step::Signed(row))
}

/// Why this signer may not sign: the log's rotations put another key in force.
fn another_key_in_force(chain: &crate::keys::KeyChain, settings: &CheckpointSettings) -> Option<String> {
    let own = settings.signer.verifier_key();
    (chain.key_line() != own).then(|| {
        format!(
            "the log puts the key {} in force, and this signer holds {own}: a process still runs with the key \
             before a rotation (restart it with the new key file), or `kartu audit rotate-key` did not finish",
            chain.key_line()
        )
    })
}

fn rollback(size: i64, trusted: i64) -> String {
    format!("rollback: the log holds {size} leaves, fewer than the {trusted} of the last checkpoint this signer signed")
}

/// What to trust on start: the file, else the database's newest checkpoint (first start),
/// its edge recomputed from every leaf up to its size (once, O(n)). `Err(reason)`: refuse.
fn load(db: &mut Db, settings: &CheckpointSettings, size: i64) -> Result<Result<Trusted, String>, LedgerError> {
    let file_note = match settings.trusted_file.as_deref() {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some((text, format!("the trusted checkpoint file {}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(LedgerError::Unavailable(format!("reading {}: {e}", path.display()))),
        },
        None => None,
    };
    let (note, from) = match file_note {
        Some(found) => found,
        None => match db.latest_checkpoint()? {
            Some(row) => {
                tracing::info!(
                    size = row.tree_size,
                    "no trusted checkpoint file: trusting the database's newest checkpoint once"
                );
                (row.note, format!("the database's newest checkpoint (size {})", row.tree_size))
            }
            None => {
                let chain = crate::keys::KeyChain::new(&settings.first_key_line()).map_err(LedgerError::Invariant)?;
                return Ok(Ok(Trusted { edge: merkle::CompactRange::new(), root: merkle::empty_root(), chain }));
            }
        },
    };
    let mut chain = crate::keys::KeyChain::new(&settings.first_key_line()).map_err(LedgerError::Invariant)?;
    let unverified = merkle::unverified_text(&note).and_then(merkle::Checkpoint::parse_body);
    let trusted_size = match unverified {
        Ok(c) => c.size() as i64,
        Err(e) => return Ok(Err(format!("{from} is not a signed checkpoint: {e}"))),
    };
    if size < trusted_size {
        return Ok(Err(rollback(size, trusted_size)));
    }
    let mut edge = merkle::CompactRange::new();
    if let Err(reason) = extend(db, &mut edge, &mut chain, trusted_size)? {
        return Ok(Err(reason));
    }
    // Signed by the key the log had put in force at its size.
    let checkpoint = match chain.verifier().open(&note) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("{from} does not verify with the key in force at its size: {e}"))),
    };
    if checkpoint.origin() != settings.origin {
        return Ok(Err(format!("{from} is for origin {:?}, not {:?}", checkpoint.origin(), settings.origin)));
    }
    let mut reasons = Vec::new();
    if edge.root() != *checkpoint.root() {
        reasons.push(format!(
            "rewritten: the first {trusted_size} leaves no longer hash to the root of the last checkpoint this \
             signer signed"
        ));
    }
    if let Some(reason) = missing_row(db, trusted_size, checkpoint.root())? {
        reasons.push(reason);
    }
    if !reasons.is_empty() {
        return Ok(Err(reasons.join("; ")));
    }
    Ok(Ok(Trusted { edge, root: *checkpoint.root(), chain }))
}

/// The signed checkpoint of `size` must still be in the table, with its root.
fn missing_row(db: &mut Db, size: i64, root: &merkle::Hash) -> Result<Option<String>, LedgerError> {
    if size == 0 {
        return Ok(None);
    }
    let row = db.checkpoints(size - 1, 1)?.pop();
    Ok(match row {
        Some(r) if r.tree_size == size && r.root == root.as_slice() => None,
        Some(r) if r.tree_size == size => {
            Some(format!("the checkpoints table holds another root for size {size}, which this signer signed"))
        }
        _ => Some(format!(
            "deleted: the checkpoint of size {size} that this signer signed is gone from the checkpoints table"
        )),
    })
}

/// Extends `edge` with the leaves `[edge.size(), to)`, each hash recomputed from its bytes,
/// and `chain` with the key rotations among them.
fn extend(
    db: &mut Db,
    edge: &mut merkle::CompactRange,
    chain: &mut crate::keys::KeyChain,
    to: i64,
) -> Result<Result<(), String>, LedgerError> {
    while (edge.size() as i64) < to {
        let from = edge.size() as i64;
        let page = db.leaves(from, PAGE.min(to - from))?;
        if page.is_empty() {
            return Ok(Err(format!("leaf {from} is missing")));
        }
        for row in page {
            let expected = edge.size() as i64;
            if row.leaf_index != expected {
                return Ok(Err(format!("leaf {expected} is missing (the next stored leaf is {})", row.leaf_index)));
            }
            if expected >= to {
                break;
            }
            // The bytes decide, not the stored kind.
            if let Err(reason) = chain.leaf(expected, &row.leaf, || edge.root()) {
                return Ok(Err(format!("leaf {expected}: {reason}")));
            }
            edge.append(merkle::leaf_hash(&row.leaf)).map_err(|e| LedgerError::Invariant(format!("audit log: {e}")))?;
        }
    }
    Ok(Ok(()))
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never a
/// mix ([`files::replace_private`]).
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    files::replace_private(path, bytes).map_err(std::io::Error::other)
}
