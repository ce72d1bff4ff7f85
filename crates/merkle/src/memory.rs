//! An in-memory node store: for tests, and for the auditor's verifier that recomputes the
//! whole tree from every leaf.

use crate::hash::{empty_root, Hash};
use crate::tree::{self, Node, NodeCoord, TreeError};

/// A Merkle tree whose node store is a vector per level, filled through the same pure
/// functions a database-backed store uses ([`tree::append_batch_nodes`] and friends).
///
/// Appending is incremental: about one node hash per leaf, so a million leaves cost
/// about two million SHA-256 compressions in all (leaf and node hashes), and 64 MiB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryTree {
    /// `levels[l][i]` is node `(l, i)`; level `l` holds `size >> l` nodes.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of the given leaf hashes, built with one batch append.
    pub fn from_leaf_hashes(leaf_hashes: &[Hash]) -> Result<Self, TreeError> {
        let mut tree = Self::new();
        tree.append_batch(leaf_hashes)?;
        Ok(tree)
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The stored node at `coord`, if the tree is large enough to have completed it.
    pub fn node(&self, coord: NodeCoord) -> Option<Hash> {
        let index = usize::try_from(coord.index).ok()?;
        self.levels.get(usize::from(coord.level))?.get(index).copied()
    }

    /// Appends one leaf hash; returns the leaf's index.
    pub fn append(&mut self, leaf_hash: Hash) -> Result<u64, TreeError> {
        let index = self.size();
        let nodes = tree::append_nodes(index, leaf_hash, |coord| self.node(coord))?;
        self.store(&nodes);
        Ok(index)
    }

    /// Appends leaf hashes in order; returns the index of the first (the old size).
    pub fn append_batch(&mut self, leaf_hashes: &[Hash]) -> Result<u64, TreeError> {
        let first_index = self.size();
        let nodes = tree::append_batch_nodes(first_index, leaf_hashes, |coord| self.node(coord))?;
        self.store(&nodes);
        Ok(first_index)
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        // Every right-edge node of the current size is stored.
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        tree::root(size, |coord| self.node(coord))
    }

    /// The RFC 9162 inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        tree::inclusion_proof(index, size, |coord| self.node(coord))
    }

    /// The RFC 9162 consistency proof from the first `first` leaves to the first `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, TreeError> {
        tree::consistency_proof(first, second, |coord| self.node(coord))
    }

    /// Stores new nodes, which the append functions return level by level, each level's
    /// indexes continuing where the stored ones end.
    fn store(&mut self, nodes: &[Node]) {
        for node in nodes {
            let level = usize::from(node.coord.level);
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            let hashes = &mut self.levels[level];
            assert_eq!(hashes.len() as u64, node.coord.index, "append returned a node out of order");
            hashes.push(node.hash);
        }
    }
}
