//! The audit log as read: its size and leaves, roots, RFC 9162 proofs, and signed
//! checkpoints (signed here, by whichever thread asks; see [`crate::signer`]).

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
        if let Some(reason) = &state.refused {
            return Err(LedgerError::Invariant(format!("the checkpoint signer refuses: {reason}")));
        }
        match self.read(|db| crate::signer::step(db, &settings, &mut state, now_us))? {
            crate::signer::Step::Signed(row) => Ok(Some(row)),
            crate::signer::Step::Nothing => Ok(None),
            crate::signer::Step::Refuse(reason) => {
                tracing::error!(
                    reason = %reason,
                    "the audit log does not extend the last signed checkpoint: signing nothing until an operator \
                     has looked"
                );
                state.refused = Some(reason.clone());
                Err(LedgerError::Invariant(format!("the checkpoint signer refuses: {reason}")))
            }
        }
    }

    /// Why the checkpoint signer refuses to sign (the log does not extend the last
    /// checkpoint it signed), if it does.
    pub fn checkpoint_refusal(&self) -> Option<String> {
        self.inner.signer.lock().ok().and_then(|s| s.refused.clone())
    }
}

/// The tree cannot be built from what is stored (a node or leaf missing or out of place):
/// the database holds what the writer never writes.
pub(super) fn tree_error(e: merkle::TreeError) -> LedgerError {
    LedgerError::Invariant(format!("audit log: {e}"))
}
