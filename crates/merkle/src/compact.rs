//! The right edge of a tree (a "compact range" from leaf 0): one hash per set bit of the
//! size. Enough to compute the root and to append, in O(log n) memory, with no node
//! store: the way a signer or a watcher extends a tree it trusts from new leaves only.

use crate::hash::{empty_root, node_hash, Hash};
use crate::tree::{TreeError, TREE_SIZE_MAX};

/// The perfect subtrees of the first `size` leaves, largest first (the nodes listed by
/// [`crate::nodes_needed_for_root`]), kept in memory.
///
/// ```
/// use merkle::{leaf_hash, root_from_leaves, CompactRange};
///
/// let leaves: Vec<_> = (0u8..7).map(|i| leaf_hash(&[i])).collect();
/// let mut edge = CompactRange::new();
/// for l in &leaves {
///     edge.append(*l)?;
/// }
/// assert_eq!(edge.root(), root_from_leaves(&leaves));
/// let again = CompactRange::from_parts(edge.size(), edge.hashes().to_vec()).expect("valid");
/// assert_eq!(again, edge);
/// # Ok::<(), merkle::TreeError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree's edge.
    pub fn new() -> Self {
        Self::default()
    }

    /// An edge from its size and hashes (largest subtree first); `None` when the count of
    /// hashes is not the number of set bits of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (size <= TREE_SIZE_MAX && hashes.len() == size.count_ones() as usize).then_some(Self { size, hashes })
    }

    /// The number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree hashes, largest first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash.
    pub fn append(&mut self, leaf_hash: Hash) -> Result<(), TreeError> {
        if self.size >= TREE_SIZE_MAX {
            return Err(TreeError::TreeFull { size: self.size, count: 1 });
        }
        // Each trailing one bit of the size is a subtree of the same height as the
        // carried hash: merge them, as a binary counter carries.
        let mut carried = leaf_hash;
        let mut bits = self.size;
        while bits & 1 == 1 {
            let left = self.hashes.pop().ok_or(TreeError::TreeFull { size: self.size, count: 1 })?;
            carried = node_hash(&left, &carried);
            bits >>= 1;
        }
        self.hashes.push(carried);
        self.size += 1;
        Ok(())
    }

    /// The root of the first [`CompactRange::size`] leaves: the subtrees folded from the
    /// right (RFC 9162 §2.1.1).
    pub fn root(&self) -> Hash {
        let mut hashes = self.hashes.iter().rev();
        let Some(last) = hashes.next() else { return empty_root() };
        hashes.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{leaf_hash, root_from_leaves};

    #[test]
    fn every_size_matches_the_recursive_definition() {
        let leaves: Vec<Hash> = (0u32..130).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut edge = CompactRange::new();
        assert_eq!(edge.root(), empty_root());
        for (n, l) in leaves.iter().enumerate() {
            edge.append(*l).expect("append");
            assert_eq!(edge.size(), n as u64 + 1);
            assert_eq!(edge.hashes().len(), (n + 1).count_ones() as usize);
            assert_eq!(edge.root(), root_from_leaves(&leaves[..=n]), "size {}", n + 1);
        }
        assert!(CompactRange::from_parts(3, vec![[0; 32]]).is_none());
    }
}
