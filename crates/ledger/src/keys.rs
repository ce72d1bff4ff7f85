//! Checkpoint key rotation, announced in the log itself.
//!
//! A rotation is an event leaf of kind [`ROTATION_KIND`] at some index `r`. Its payload
//! names the key in force (`previous_key`), the next one (`new_key`), and the tree it
//! follows (`after_size` = `r`, `after_root` = the root of the first `r` leaves), and
//! carries that statement as a note signed by the previous key. From then on the new key
//! signs: a checkpoint of size `n` is signed by the key announced by the last rotation
//! leaf inside it (index `< n`), or by the log's first key. So the old key's last act is
//! binding the new key to one exact history; a stolen old key can sign neither a
//! checkpoint past the rotation nor another rotation there.
//!
//! Every reader of the log follows the chain the same way, leaf by leaf, from a first key
//! it trusts: [`KeyChain`] (`kartu audit verify` on a database or through the API, `kartu
//! audit watch`, the checkpoint signer itself). docs/AUDIT.md describes the format.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The event kind of a rotation leaf.
pub const ROTATION_KIND: &str = "checkpoint_key_rotation";

/// The file in the data directory listing the checkpoint keys (verifier key lines, oldest
/// first): public, written by `kartu audit rotate-key`; its first line is where the
/// signer's chain starts. Without it the log was never rotated and the signer's own key is
/// the first.
pub const KEY_HISTORY_FILE: &str = "checkpoint.keys";

/// A rotation leaf's payload (JSON in the event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The key in force before the rotation (verifier key line).
    pub previous_key: String,
    /// The key that signs from the rotation leaf on.
    pub new_key: String,
    /// The leaves before the rotation leaf (its own index).
    pub after_size: i64,
    /// The root of those leaves, hex.
    pub after_root: String,
    /// [`statement`] signed by the previous key (a signed note).
    pub note: String,
}

/// One key's period in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPeriod {
    /// The verifier key line.
    pub key: String,
    /// The smallest tree size it signs (1 for the first key).
    pub from_tree_size: i64,
    /// The rotation leaf that announced it; `None` for the first key.
    pub rotation_leaf: Option<i64>,
}

/// The text the previous key signs.
pub fn statement(
    origin: &str,
    previous_key: &str,
    new_key: &str,
    after_size: i64,
    after_root: &merkle::Hash,
) -> String {
    let root = base64::engine::general_purpose::STANDARD.encode(after_root);
    format!(
        "{origin}\nkartu checkpoint key rotation\nprevious {previous_key}\nnew {new_key}\nafter {after_size} {root}\n"
    )
}

/// Makes the rotation payload: `old` signs that `new_key` follows the first `after_size`
/// leaves, whose root is `after_root`.
pub fn rotation(
    old: &merkle::Signer,
    new_key: &str,
    after_size: i64,
    after_root: &merkle::Hash,
) -> Result<Rotation, String> {
    let new = merkle::Verifier::parse(new_key).map_err(|e| format!("the new key: {e}"))?;
    let previous_key = old.verifier_key();
    if new.name() != old.name() {
        return Err(format!("the new key is named {:?}, the log's keys {:?}", new.name(), old.name()));
    }
    if new_key == previous_key {
        return Err("the new key is the key in force".into());
    }
    let text = statement(old.name(), &previous_key, new_key, after_size, after_root);
    let note = old.sign_note(&text).map_err(|e| format!("signing the rotation: {e}"))?;
    Ok(Rotation { previous_key, new_key: new_key.to_owned(), after_size, after_root: hex::encode(after_root), note })
}

/// The key in force while a log is read leaf by leaf, from a first key the reader trusts.
#[derive(Debug, Clone)]
pub struct KeyChain {
    current: merkle::Verifier,
    periods: Vec<KeyPeriod>,
}

impl KeyChain {
    /// A chain starting at `first_key` (a verifier key line).
    pub fn new(first_key: &str) -> Result<KeyChain, String> {
        let current = merkle::Verifier::parse(first_key.trim()).map_err(|e| format!("the first key: {e}"))?;
        let periods = vec![KeyPeriod { key: first_key.trim().to_owned(), from_tree_size: 1, rotation_leaf: None }];
        Ok(KeyChain { current, periods })
    }

    /// The key in force for the leaves read so far: it signs a checkpoint of their size.
    pub fn verifier(&self) -> &merkle::Verifier {
        &self.current
    }

    /// The key in force, as a verifier key line.
    pub fn key_line(&self) -> &str {
        &self.periods[self.periods.len() - 1].key
    }

    /// Every key so far, oldest first.
    pub fn periods(&self) -> &[KeyPeriod] {
        &self.periods
    }

    /// Reads one event leaf before it joins the tree: `leaf_index` is its index and
    /// `root_before` the root of the leaves before it. A rotation must be signed by the key
    /// in force and bound to exactly this place; then its new key is in force. Other kinds
    /// change nothing. `Err`: why the rotation is not valid.
    pub fn event(
        &mut self,
        leaf_index: i64,
        kind: &str,
        payload: &str,
        root_before: &merkle::Hash,
    ) -> Result<(), String> {
        if kind != ROTATION_KIND {
            return Ok(());
        }
        let r: Rotation = serde_json::from_str(payload).map_err(|e| format!("key rotation: the payload: {e}"))?;
        if r.previous_key != self.key_line() {
            return Err(format!("key rotation: it rotates {}, but {} is in force", r.previous_key, self.key_line()));
        }
        if r.after_size != leaf_index || r.after_root != hex::encode(root_before) {
            return Err(format!(
                "key rotation: it follows a tree of {} leaves with root {}, not the {leaf_index} leaves before it",
                r.after_size, r.after_root
            ));
        }
        let text = self.current.verify_note(&r.note).map_err(|e| format!("key rotation: the signature: {e}"))?;
        let expected = statement(self.current.name(), &r.previous_key, &r.new_key, r.after_size, root_before);
        if text != expected {
            return Err("key rotation: the signed statement is not the one its fields make".into());
        }
        let new = merkle::Verifier::parse(&r.new_key).map_err(|e| format!("key rotation: the new key: {e}"))?;
        if new.name() != self.current.name() || r.new_key == r.previous_key {
            return Err("key rotation: the new key is not another key of the same log".into());
        }
        self.current = new;
        self.periods.push(KeyPeriod {
            key: r.new_key,
            from_tree_size: leaf_index + 1,
            rotation_leaf: Some(leaf_index),
        });
        Ok(())
    }

    /// [`Self::event`] for raw leaf bytes, whatever they are stored as: event leaves are
    /// decoded, entries pass; `root_before` is asked for a rotation only.
    pub fn leaf(
        &mut self,
        leaf_index: i64,
        leaf: &[u8],
        root_before: impl FnOnce() -> merkle::Hash,
    ) -> Result<(), String> {
        if leaf.get(1) != Some(&crate::audit::LEAF_TYPE_EVENT) {
            return Ok(());
        }
        let event = crate::audit::decode_event_leaf(leaf).map_err(|e| format!("event leaf does not decode: {e}"))?;
        if event.kind != ROTATION_KIND {
            return Ok(());
        }
        self.event(leaf_index, &event.kind, &event.payload, &root_before())
    }
}

/// Reads the data directory's [`KEY_HISTORY_FILE`]: the first key, if the file exists.
pub fn first_key(data_dir: &std::path::Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(data_dir.join(KEY_HISTORY_FILE)) {
        Ok(text) => Ok(text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
