//! Proof verification exactly as the algorithms of RFC 9162 §2.1.3.2 (inclusion) and
//! §2.1.4.2 (consistency). These take nothing from the tree code but the node hash, so an
//! auditor can trust them without trusting the prover.

use thiserror::Error;

use crate::hash::{empty_root, node_hash, Hash};

/// Why a proof was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProofError {
    /// The leaf index is at or past the end of the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The first tree is larger than the second.
    #[error("tree size {first} is larger than tree size {second}")]
    SizesOutOfOrder {
        /// The older tree size.
        first: u64,
        /// The newer tree size.
        second: u64,
    },
    /// The proof has more or fewer hashes than the sizes call for.
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    /// The proof does not lead to the given root (or roots).
    #[error("the proof does not match the root hash")]
    RootMismatch,
}

/// Checks that `leaf_hash` is leaf number `index` of the tree of `size` leaves with root
/// `root`, given the inclusion proof `proof` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // The RFC's names: fn is the node's index and sn the last index at the current level.
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut computed = *leaf_hash;
    for sibling in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            computed = node_hash(sibling, &computed);
            // The node is a right child, or the last of its level: skip the levels where
            // it is promoted without a sibling.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            computed = node_hash(&computed, sibling);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if computed != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `first` leaves with root `first_root` is a prefix of the tree
/// of `second` leaves with root `second_root`, given the consistency proof `proof`
/// (RFC 9162 §2.1.4.2).
///
/// The RFC defines proofs for `0 < first < second`. For `first == second` the proof must
/// be empty and the roots equal; for `first == 0` the proof must be empty and
/// `first_root` must be [`empty_root`] (every tree extends the empty one).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == second || first == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        let first_root_known = if first == 0 { *first_root == empty_root() } else { true };
        if !first_root_known || (first == second && first_root != second_root) {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // Step 1: an empty proof cannot link two different non-empty trees.
    let Some((head, tail)) = proof.split_first() else {
        return Err(ProofError::WrongLength);
    };
    // Step 2: when the old tree is a perfect subtree the proof omits its root; prepend it.
    let (seed, rest) = if first.is_power_of_two() { (*first_root, proof) } else { (*head, tail) };
    // Steps 3 and 4.
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Steps 5 and 6.
    let (mut first_computed, mut second_computed) = (seed, seed);
    for node in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            first_computed = node_hash(node, &first_computed);
            second_computed = node_hash(node, &second_computed);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            second_computed = node_hash(&second_computed, node);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if first_computed != *first_root || second_computed != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}
