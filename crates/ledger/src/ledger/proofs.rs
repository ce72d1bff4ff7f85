//! The audit log as read: its size and leaves, roots, RFC 9162 proofs, and signed
//! checkpoints (signed here, by whichever thread asks; see [`crate::signer`]).

use std::sync::Arc;

use super::{Ledger, PAGE_MAX};
use crate::store::{CheckpointRow, Db, LeafRow};
use crate::LedgerError;

impl Ledger {
    /// Leaves in the audit log (committed).
    pub fn tree_size(&self) -> Result<i64, LedgerError> {
        self.read(|db| db.tree_size())
    }

    /// Leaves from `from` on, at most `limit` (≤ [`PAGE_MAX`]).
    pub fn leaves(&self, from: i64, limit: i64) -> Result<Vec<LeafRow>, LedgerError> {
        self.read(|db| db.leaves(from.max(0), limit.clamp(1, PAGE_MAX)))
    }

    fn check_size(db: &mut Db, size: i64) -> Result<(), LedgerError> {
        let current = db.tree_size()?;
        if size < 0 || size > current {
            return Err(LedgerError::OutOfRange(format!("tree size {size} is not in 0..={current}")));
        }
        Ok(())
    }

    /// The Merkle root of the first `size` leaves.
    pub fn root(&self, size: i64) -> Result<merkle::Hash, LedgerError> {
        self.read(|db| {
            Self::check_size(db, size)?;
            let nodes = db.nodes(&merkle::nodes_needed_for_root(size as u64))?;
            merkle::root(size as u64, |c| nodes.get(&c).copied()).map_err(tree_error)
        })
    }

    /// RFC 9162 inclusion proof of leaf `leaf_index` in the tree of `tree_size` leaves.
    pub fn inclusion_proof(&self, leaf_index: i64, tree_size: i64) -> Result<Vec<merkle::Hash>, LedgerError> {
        self.read(|db| {
            Self::check_size(db, tree_size)?;
            if leaf_index < 0 || leaf_index >= tree_size {
                return Err(LedgerError::OutOfRange(format!("leaf {leaf_index} is not in a tree of {tree_size}")));
            }
            let (i, n) = (leaf_index as u64, tree_size as u64);
            let nodes = db.nodes(&merkle::nodes_needed_for_inclusion(i, n).map_err(tree_error)?)?;
            merkle::inclusion_proof(i, n, |c| nodes.get(&c).copied()).map_err(tree_error)
        })
    }

    /// RFC 9162 consistency proof between the trees of `first` and `second` leaves.
    pub fn consistency_proof(&self, first: i64, second: i64) -> Result<Vec<merkle::Hash>, LedgerError> {
        self.read(|db| {
            Self::check_size(db, second)?;
            if first < 0 || first > second {
                return Err(LedgerError::OutOfRange(format!("first {first} must be in 0..={second}")));
            }
            let (m, n) = (first as u64, second as u64);
            let nodes = db.nodes(&merkle::nodes_needed_for_consistency(m, n).map_err(tree_error)?)?;
            merkle::consistency_proof(m, n, |c| nodes.get(&c).copied()).map_err(tree_error)
        })
    }

    /// The newest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, LedgerError> {
        self.read(|db| db.latest_checkpoint())
    }

    /// Signs and stores a checkpoint of the current tree if it grew since the last one.
    /// Returns the new checkpoint, or `None` when there was nothing new (or no signer).
    ///
    /// It signs only a tree that extends the last checkpoint it signed (see
    /// [`crate::signer`]): otherwise it refuses from then on, logs an error once, and
    /// [`Ledger::checkpoint_refusal`] says why; this returns an error while it refuses.
    pub fn checkpoint_now(&self) -> Result<Option<CheckpointRow>, LedgerError> {
        let Some(settings) = self.inner.config.checkpoints.clone() else { return Ok(None) };
        let now_us = (self.inner.config.clock)();
        let mut state = self.inner.signer.lock().map_err(|_| LedgerError::Stopped)?;
        if let Some(reason) = self.inner.signer_refused.get() {
            return Err(LedgerError::Invariant(format!("the checkpoint signer refuses: {reason}")));
        }
        match self.sign_step(&settings, &mut state, now_us)? {
            crate::signer::Step::Signed(row) => Ok(Some(row)),
            crate::signer::Step::Nothing => Ok(None),
            crate::signer::Step::Refuse(reason) => {
                tracing::error!(
                    reason = %reason,
                    "the audit log does not extend the last signed checkpoint: signing nothing until an operator \
                     has looked"
                );
                let _ = self.inner.signer_refused.set(reason.clone());
                Err(LedgerError::Invariant(format!("the checkpoint signer refuses: {reason}")))
            }
        }
    }

    /// One step of the signer on a pooled connection; the row it signs is stored through
    /// the writer while the writer runs (on SQLite another connection's write would make
    /// the writer wait for the lock, see `Chore`), else on that connection.
    fn sign_step(
        &self,
        settings: &crate::signer::CheckpointSettings,
        state: &mut crate::signer::SignerState,
        now_us: i64,
    ) -> Result<crate::signer::Step, LedgerError> {
        let mut store = |db: &mut Db, row: &CheckpointRow| {
            let mine = row.clone();
            self.on_writer(move |w| w.insert_checkpoint(&mine)).unwrap_or_else(|| db.insert_checkpoint(row))
        };
        self.read(|db| crate::signer::step(db, settings, state, now_us, &mut store))
    }

    /// Why the checkpoint signer refuses to sign (the log does not extend the last
    /// checkpoint it signed), if it does.
    pub fn checkpoint_refusal(&self) -> Option<String> {
        self.inner.signer_refused.get().cloned()
    }
}

/// The tree cannot be built from what is stored (a node or leaf missing or out of place):
/// the database holds what the writer never writes.
pub(super) fn tree_error(e: merkle::TreeError) -> LedgerError {
    LedgerError::Invariant(format!("audit log: {e}"))
}

/// What [`Ledger::rotate_checkpoint_key`] did.
#[derive(Debug, Clone)]
pub struct RotationDone {
    /// The rotation leaf's index.
    pub leaf_index: i64,
    /// The last checkpoint the previous key signed (its size is the leaf's index).
    pub last_by_previous: CheckpointRow,
    /// The first checkpoint the new key signed (the rotation leaf included).
    pub first_by_new: CheckpointRow,
    /// The rotation as recorded.
    pub rotation: crate::keys::Rotation,
}

impl Ledger {
    /// Hands checkpoint signing over from this ledger's key to `new`, in the log: signs the
    /// tree as it is with the key in force, records a rotation leaf ([`crate::keys`]) in
    /// which that key binds `new` to exactly that tree, then signs the tree with the
    /// rotation leaf by `new`. Nothing else may write meanwhile (stop the servers): if
    /// another leaf lands first the rotation is refused before anything is recorded, or,
    /// when the race is lost after, the recorded leaf is not valid and this says so.
    ///
    /// Open this ledger with a checkpoint interval long enough that its background signer
    /// does not sign in between (`kartu audit rotate-key` uses a day).
    pub fn rotate_checkpoint_key(&self, new: Arc<merkle::Signer>) -> Result<RotationDone, LedgerError> {
        let Some(settings) = self.inner.config.checkpoints.clone() else {
            return Err(LedgerError::Unavailable("this ledger signs no checkpoints".into()));
        };
        self.checkpoint_now()?;
        let size = self.tree_size()?;
        let last = self.latest_checkpoint()?.filter(|c| c.tree_size == size).ok_or_else(|| {
            LedgerError::Unavailable(format!(
                "the log grew to {size} leaves while its checkpoint was signed: stop every server first"
            ))
        })?;
        let root: merkle::Hash = last.root.as_slice().try_into().map_err(|_| LedgerError::Invariant("root".into()))?;
        let rotation = crate::keys::rotation(&settings.signer, &new.verifier_key(), size, &root)
            .map_err(LedgerError::Invariant)?;
        let payload = serde_json::to_string(&rotation).map_err(|e| LedgerError::Invariant(e.to_string()))?;
        let event = crate::domain::Event {
            kind: crate::keys::ROTATION_KIND.into(),
            scope: None,
            card_id: None,
            card_read_counter: None,
            queue_key: None,
            idempotency_key: None,
            payload,
            access: None,
            transit: None,
        };
        let recorded = self.record_blocking(event)?;
        let leaf_index = recorded.event.audit.map(|a| a.leaf_index);
        if leaf_index != Some(size) {
            return Err(LedgerError::Invariant(format!(
                "the rotation leaf landed at {leaf_index:?}, not at {size}: another process wrote meanwhile; the leaf \
                 is not a valid rotation and `kartu audit verify` will name it"
            )));
        }
        let new_settings = crate::signer::CheckpointSettings { signer: new, ..settings };
        let now_us = (self.inner.config.clock)();
        let mut state = self.inner.signer.lock().map_err(|_| LedgerError::Stopped)?;
        let step = self.sign_step(&new_settings, &mut state, now_us)?;
        let first_by_new = match step {
            crate::signer::Step::Signed(row) => row,
            crate::signer::Step::Nothing => {
                return Err(LedgerError::Invariant("the new key had nothing to sign after the rotation leaf".into()))
            }
            crate::signer::Step::Refuse(reason) => {
                let _ = self.inner.signer_refused.set(reason.clone());
                return Err(LedgerError::Invariant(format!("the checkpoint signer refuses: {reason}")));
            }
        };
        Ok(RotationDone { leaf_index: size, last_by_previous: last, first_by_new, rotation })
    }

    /// The log's checkpoint keys, oldest first, from `first_key`: the rotations recorded
    /// in the events table, each checked as a verifier checks it (signed by the key in
    /// force, bound to the root before its leaf). `Err(Invariant)` names a rotation that
    /// is not valid.
    pub fn checkpoint_keys(&self, first_key: &str) -> Result<Vec<crate::keys::KeyPeriod>, LedgerError> {
        let mut chain = crate::keys::KeyChain::new(first_key).map_err(LedgerError::Invariant)?;
        let filter = crate::store::EventFilter { kind: Some(crate::keys::ROTATION_KIND.into()), ..Default::default() };
        let rotations = self.read(|db| db.events(&filter, 0, super::PAGE_MAX))?;
        for event in rotations {
            let Some(audit) = event.audit else { continue };
            let root = self.root(audit.leaf_index)?;
            chain.event(audit.leaf_index, &event.kind, &event.payload, &root).map_err(LedgerError::Invariant)?;
        }
        Ok(chain.periods().to_vec())
    }
}
