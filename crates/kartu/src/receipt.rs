//! `kartu audit receipt`: a receipt checked from the command line, for people without a
//! browser. The server hands over the leaf's bytes; everything else is checked here: the
//! leaf hash against the one printed on the receipt, the bytes decoded (the entry number,
//! what, how much — not the server's words), the latest checkpoint's signature under the
//! city's key, and the inclusion proof up to its root (RFC 9162).

use std::path::Path;

use anyhow::{bail, Context, Result};
use client::Client;

/// What the receipt check says, when it passes.
pub struct Checked {
    /// The line to print.
    pub summary: String,
}

/// Checks the receipt of entry `seq` whose leaf hash is `leaf_hash` (hex) against the
/// server at `client`, under the key line in `public_key` (else the server's own key,
/// which proves only that the server did not change its mind).
pub fn check(client: &Client, seq: i64, leaf_hash: &str, public_key: Option<&Path>) -> Result<Checked> {
    let claimed =
        hex::decode(leaf_hash.trim()).ok().filter(|h| h.len() == 32).context("--leaf-hash is not 64 hex digits")?;
    let detail = client.receipt(seq, &hex::encode(&claimed)).context("fetching the receipt")?;
    let leaf = hex::decode(&detail.leaf).context("the server's leaf is not hex")?;
    if merkle::leaf_hash(&leaf)[..] != claimed[..] {
        bail!("leaf check failed: the server's leaf bytes do not hash to the receipt's leaf hash");
    }
    let entry =
        ledger::audit::decode_entry_leaf(&leaf).context("leaf check failed: the leaf is not a journal entry")?;
    if entry.seq != seq {
        bail!("leaf check failed: the leaf is entry {}, not {seq}", entry.seq);
    }
    let key_line = match public_key {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        None => client.public_key().context("fetching the public key")?,
    };
    let verifier = merkle::Verifier::parse(key_line.trim()).context("the public key")?;
    let note = client.latest_checkpoint().context("fetching the latest checkpoint")?;
    let checkpoint = verifier.open(&note).context("signature check failed: the latest checkpoint")?;
    let index = u64::try_from(detail.leaf_index).context("leaf index")?;
    if checkpoint.size() <= index {
        bail!(
            "entry {seq} is not in a signed checkpoint yet (leaf {index}, checkpoint {}): try again in a few seconds",
            checkpoint.size()
        );
    }
    let proof = client.inclusion_proof(index, checkpoint.size()).context("fetching the inclusion proof")?;
    let hashes = proof
        .hashes
        .iter()
        .map(|h| hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()))
        .collect::<Option<Vec<merkle::Hash>>>()
        .context("proof check failed: a hash of the proof is not 32 bytes of hex")?;
    let leaf_hash = merkle::leaf_hash(&leaf);
    merkle::verify_inclusion(&leaf_hash, index, checkpoint.size(), &hashes, checkpoint.root())
        .context("proof check failed: the inclusion proof does not lead to the signed root")?;
    let time = checkpoint.extensions().iter().find_map(|e| e.strip_prefix("time ")).unwrap_or("(no time)");
    let place = detail.place.map(|p| format!(" at {p}")).unwrap_or_default();
    Ok(Checked {
        summary: format!(
            "Verified: entry {seq} ({} of {} {}{place}) is leaf {index} of the log {} of {} leaves, signed at {time}",
            entry.kind.as_str(),
            entry.currency.format_minor(entry.amount_minor),
            entry.currency.code(),
            checkpoint.origin(),
            checkpoint.size(),
        ),
    })
}
