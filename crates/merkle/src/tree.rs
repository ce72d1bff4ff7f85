//! An append-only RFC 9162 Merkle tree whose state is a key-value store of perfect
//! subtree hashes, kept by the caller (a database table, or [`crate::MemoryTree`]).
//!
//! The store holds one hash per *perfect aligned subtree*: node `(level, index)` is the
//! Merkle Tree Hash of leaves `[index·2^level, (index+1)·2^level)`, and it exists once
//! the tree has at least `(index+1)·2^level` leaves. A node never changes after it is
//! written, so the store is append-only like the journal.
//!
//! Every function here is pure: it is told the tree size and reads nodes through a
//! `get` closure. Each operation has a `nodes_needed_for_*` twin listing every node the
//! operation will read, so a database can fetch them all in one indexed query
//! (`WHERE (level, index) IN (...)`), then answer `get` from the result. The lists are
//! O(log n) long: at most 63 nodes for a root or an append, 2·63 for a proof.
//!
//! Invariants the caller keeps, because these functions cannot see them:
//! - `size` is never above the store's current size: a proof "for" a larger size can
//!   succeed on nodes that exist and prove nothing.
//! - Appends are serialized: read the size, the needed nodes and write the new nodes in
//!   one transaction that holds the log's lock (for example `SELECT ... FOR UPDATE` on
//!   the row holding the tree size). A primary key on `(level, index)` then turns a lost
//!   race into a failed insert instead of a forked tree.

use std::fmt;

use thiserror::Error;

use crate::hash::{empty_root, largest_power_of_two_below, node_hash, Hash};

/// The largest tree size, and so the largest leaf count: `i64::MAX`, because PostgreSQL
/// and SQLite store the leaf index and node index in signed 64-bit integers.
pub const TREE_SIZE_MAX: u64 = i64::MAX as u64;

/// The coordinate of a perfect aligned subtree: the key of the node store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeCoord {
    /// Height above the leaves: 0 for a leaf hash, `l` for a subtree of `2^l` leaves.
    pub level: u8,
    /// Position among the nodes of this level: the subtree covers leaves
    /// `[index·2^level, (index+1)·2^level)`.
    pub index: u64,
}

impl NodeCoord {
    /// The coordinate of node `index` at `level`.
    pub const fn new(level: u8, index: u64) -> Self {
        Self { level, index }
    }
}

impl fmt::Display for NodeCoord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.level, self.index)
    }
}

/// One node of the store: a coordinate and the hash of that perfect subtree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    /// Where the node sits in the tree.
    pub coord: NodeCoord,
    /// Merkle Tree Hash of the leaves the node covers.
    pub hash: Hash,
}

/// Why a tree operation could not be carried out.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TreeError {
    /// The node store did not return a node the operation needs: the store is behind
    /// the size the caller gave, or it was not fetched, or it is corrupt.
    #[error("node {0} is missing from the node store")]
    MissingNode(NodeCoord),
    /// An inclusion proof was asked for a leaf at or past the end of the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The leaf asked for.
        index: u64,
        /// The tree size it was asked against.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("tree size {first} is larger than tree size {second}")]
    SizesOutOfOrder {
        /// The older tree size.
        first: u64,
        /// The newer tree size.
        second: u64,
    },
    /// The append would take the tree past [`TREE_SIZE_MAX`] leaves.
    #[error("appending {count} leaves to a tree of {size} would exceed {TREE_SIZE_MAX} leaves")]
    TreeFull {
        /// The tree size before the append.
        size: u64,
        /// The number of leaves to append.
        count: u64,
    },
}

/// A half-open range of leaves `[start, end)` whose Merkle Tree Hash is a proof element
/// or a root. `start` is a multiple of a power of two at least `end - start`, as every
/// range in the RFC 9162 recursion is, so the range splits into perfect nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LeafRange {
    start: u64,
    end: u64,
}

impl LeafRange {
    /// The perfect nodes whose right fold is the range's Merkle Tree Hash, left to right:
    /// one per set bit of the range's length, largest first (RFC 9162 splits a range at
    /// the largest power of two below its length, which is its highest set bit).
    fn perfect_nodes(self) -> impl Iterator<Item = NodeCoord> {
        let mut position = self.start;
        let mut remaining = self.end - self.start;
        std::iter::from_fn(move || {
            if remaining == 0 {
                return None;
            }
            let level = 63 - remaining.leading_zeros();
            let width = 1u64 << level;
            debug_assert_eq!(position % width, 0, "range start is not aligned");
            let coord = NodeCoord::new(level as u8, position >> level);
            position += width;
            remaining -= width;
            Some(coord)
        })
    }

    /// The range's Merkle Tree Hash, folded from the perfect nodes right to left.
    fn hash(self, get: &impl Fn(NodeCoord) -> Option<Hash>) -> Result<Hash, TreeError> {
        let coords: Vec<NodeCoord> = self.perfect_nodes().collect();
        let mut folded: Option<Hash> = None;
        for coord in coords.into_iter().rev() {
            let node = get(coord).ok_or(TreeError::MissingNode(coord))?;
            folded = Some(match folded {
                None => node,
                Some(right) => node_hash(&node, &right),
            });
        }
        Ok(folded.unwrap_or_else(empty_root))
    }
}

/// The new nodes created by appending leaf number `size_before` (0-based) with hash
/// `leaf_hash`: the leaf itself at level 0 and each parent it completes, lowest first.
///
/// Reads the nodes listed by [`nodes_needed_for_append`]`(size_before, 1)`: O(log n).
pub fn append_nodes(
    size_before: u64,
    leaf_hash: Hash,
    get: impl Fn(NodeCoord) -> Option<Hash>,
) -> Result<Vec<Node>, TreeError> {
    append_batch_nodes(size_before, &[leaf_hash], get)
}

/// The new nodes created by appending `leaf_hashes` to a tree of `size` leaves, ordered
/// by level then index: exactly the nodes that a one-at-a-time append would create.
///
/// Reads only the nodes listed by [`nodes_needed_for_append`]`(size, leaf_hashes.len())`,
/// at most one per level, so a writer appending a batch in one database transaction
/// needs one read round and one write round. Work is O(count + log n) hashes.
pub fn append_batch_nodes(
    size: u64,
    leaf_hashes: &[Hash],
    get: impl Fn(NodeCoord) -> Option<Hash>,
) -> Result<Vec<Node>, TreeError> {
    let count = leaf_hashes.len() as u64;
    let end = checked_end(size, count)?;
    let mut nodes = Vec::with_capacity(leaf_hashes.len().saturating_mul(2).saturating_add(64));
    nodes.extend(
        leaf_hashes.iter().zip(size..).map(|(hash, index)| Node { coord: NodeCoord::new(0, index), hash: *hash }),
    );
    // `level_hashes` holds the new nodes of `level`: indexes [size >> level, end >> level).
    let mut level_hashes: Vec<Hash> = leaf_hashes.to_vec();
    let mut level: u8 = 0;
    loop {
        let first_new = size >> level;
        let parent_level = level + 1;
        let parents_start = size >> parent_level;
        let parents_end = end >> parent_level;
        // If no parent is completed at this level, none is completed above it either.
        if parents_start == parents_end {
            break;
        }
        let mut parents = Vec::with_capacity((parents_end - parents_start) as usize);
        for parent_index in parents_start..parents_end {
            let left_index = 2 * parent_index;
            let right_index = left_index + 1;
            // Only the first parent's left child can predate the append: it is then the
            // perfect subtree of this level on the old tree's right edge.
            let left = if left_index < first_new {
                let coord = NodeCoord::new(level, left_index);
                get(coord).ok_or(TreeError::MissingNode(coord))?
            } else {
                level_hashes[(left_index - first_new) as usize]
            };
            let right = level_hashes[(right_index - first_new) as usize];
            parents.push(node_hash(&left, &right));
        }
        nodes.extend(
            parents
                .iter()
                .zip(parents_start..)
                .map(|(hash, index)| Node { coord: NodeCoord::new(parent_level, index), hash: *hash }),
        );
        level_hashes = parents;
        level = parent_level;
    }
    Ok(nodes)
}

/// The existing nodes that appending `count` leaves to a tree of `size` leaves reads:
/// the old right-edge subtrees that the new leaves complete into a parent.
pub fn nodes_needed_for_append(size: u64, count: u64) -> Result<Vec<NodeCoord>, TreeError> {
    let end = checked_end(size, count)?;
    let mut needed = Vec::new();
    for level in 0..63u8 {
        let nodes_before = size >> level;
        let parent_completed = (size >> (level + 1)) < (end >> (level + 1));
        if nodes_before & 1 == 1 && parent_completed {
            needed.push(NodeCoord::new(level, nodes_before - 1));
        }
    }
    Ok(needed)
}

/// The Merkle Tree Hash of the first `size` leaves, folded from the perfect subtrees on
/// the right edge listed by [`nodes_needed_for_root`]. The empty tree has
/// [`empty_root`].
pub fn root(size: u64, get: impl Fn(NodeCoord) -> Option<Hash>) -> Result<Hash, TreeError> {
    LeafRange { start: 0, end: size }.hash(&get)
}

/// The nodes [`root`] reads: one perfect subtree per set bit of `size`, largest first.
pub fn nodes_needed_for_root(size: u64) -> Vec<NodeCoord> {
    LeafRange { start: 0, end: size }.perfect_nodes().collect()
}

/// The RFC 9162 §2.1.3.1 inclusion proof `PATH(index, D[size])`: the audit path from
/// the leaf up to the root, the sibling nearest the leaf first.
///
/// A sibling that is not a perfect subtree (on the right edge of the tree) is folded
/// from perfect nodes. Reads the nodes listed by [`nodes_needed_for_inclusion`].
pub fn inclusion_proof(index: u64, size: u64, get: impl Fn(NodeCoord) -> Option<Hash>) -> Result<Vec<Hash>, TreeError> {
    inclusion_ranges(index, size)?.into_iter().map(|range| range.hash(&get)).collect()
}

/// Every node [`inclusion_proof`]`(index, size, ..)` reads, sorted: at most 2·63.
pub fn nodes_needed_for_inclusion(index: u64, size: u64) -> Result<Vec<NodeCoord>, TreeError> {
    Ok(nodes_of(&inclusion_ranges(index, size)?))
}

/// The RFC 9162 §2.1.4.1 consistency proof `PROOF(first, D[second])`, hashes in RFC
/// order. Empty when `first` is 0 or equal to `second`.
///
/// A subtree that is not perfect is folded from perfect nodes. Reads the nodes listed
/// by [`nodes_needed_for_consistency`].
pub fn consistency_proof(
    first: u64,
    second: u64,
    get: impl Fn(NodeCoord) -> Option<Hash>,
) -> Result<Vec<Hash>, TreeError> {
    consistency_ranges(first, second)?.into_iter().map(|range| range.hash(&get)).collect()
}

/// Every node [`consistency_proof`]`(first, second, ..)` reads, sorted: at most 2·63.
pub fn nodes_needed_for_consistency(first: u64, second: u64) -> Result<Vec<NodeCoord>, TreeError> {
    Ok(nodes_of(&consistency_ranges(first, second)?))
}

fn checked_end(size: u64, count: u64) -> Result<u64, TreeError> {
    size.checked_add(count).filter(|end| *end <= TREE_SIZE_MAX).ok_or(TreeError::TreeFull { size, count })
}

fn nodes_of(ranges: &[LeafRange]) -> Vec<NodeCoord> {
    let mut nodes: Vec<NodeCoord> = ranges.iter().flat_map(|range| range.perfect_nodes()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// The ranges whose hashes form `PATH(index, D[size])`, in RFC order.
///
/// RFC 9162 §2.1.3.1: for k the largest power of two below n, PATH(m, D[n]) is
/// PATH(m, D[0:k]) : MTH(D[k:n]) when m < k, and PATH(m - k, D[k:n]) : MTH(D[0:k])
/// otherwise. Walking down, each step appends the sibling range; the recursion puts the
/// deepest sibling first, so the list is reversed at the end.
fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<LeafRange>, TreeError> {
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    let (mut offset, mut width, mut position) = (0u64, size, index);
    while width > 1 {
        let split = largest_power_of_two_below(width);
        if position < split {
            ranges.push(LeafRange { start: offset + split, end: offset + width });
            width = split;
        } else {
            ranges.push(LeafRange { start: offset, end: offset + split });
            offset += split;
            position -= split;
            width -= split;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The ranges whose hashes form `PROOF(first, D[second])`, in RFC order.
///
/// RFC 9162 §2.1.4.1: SUBPROOF(m, D[n], b) is [] when m = n and b, [MTH(D[n])] when
/// m = n and not b; for m < n and k the largest power of two below n it is
/// SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) when m <= k, and
/// SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) otherwise.
fn consistency_ranges(first: u64, second: u64) -> Result<Vec<LeafRange>, TreeError> {
    if first > second {
        return Err(TreeError::SizesOutOfOrder { first, second });
    }
    if first == 0 || first == second {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    let (mut offset, mut width, mut old_width) = (0u64, second, first);
    let mut old_tree_is_whole = true;
    while old_width != width {
        let split = largest_power_of_two_below(width);
        if old_width <= split {
            ranges.push(LeafRange { start: offset + split, end: offset + width });
            width = split;
        } else {
            ranges.push(LeafRange { start: offset, end: offset + split });
            offset += split;
            old_width -= split;
            width -= split;
            old_tree_is_whole = false;
        }
    }
    if !old_tree_is_whole {
        ranges.push(LeafRange { start: offset, end: offset + width });
    }
    ranges.reverse();
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_edge_of_seven_leaves_is_four_two_one() {
        assert_eq!(nodes_needed_for_root(7), vec![NodeCoord::new(2, 0), NodeCoord::new(1, 2), NodeCoord::new(0, 6)]);
        assert!(nodes_needed_for_root(0).is_empty());
    }

    #[test]
    fn append_to_three_needs_the_old_right_edge() {
        assert_eq!(nodes_needed_for_append(3, 1).ok(), Some(vec![NodeCoord::new(0, 2), NodeCoord::new(1, 0)]));
        assert_eq!(nodes_needed_for_append(3, 0).ok(), Some(vec![]));
        assert_eq!(nodes_needed_for_append(4, 1).ok(), Some(vec![]));
    }

    #[test]
    fn sizes_at_the_limit_are_errors_not_panics() {
        assert!(matches!(nodes_needed_for_append(TREE_SIZE_MAX, 1), Err(TreeError::TreeFull { .. })));
        assert!(matches!(nodes_needed_for_append(u64::MAX, u64::MAX), Err(TreeError::TreeFull { .. })));
        assert!(nodes_needed_for_append(TREE_SIZE_MAX - 1, 1).is_ok());
        assert_eq!(nodes_needed_for_root(u64::MAX).len(), 64);
        let inclusion = nodes_needed_for_inclusion(TREE_SIZE_MAX - 1, TREE_SIZE_MAX);
        assert!(inclusion.is_ok_and(|nodes| nodes.len() <= 2 * 63));
        let consistency = nodes_needed_for_consistency(TREE_SIZE_MAX / 3, TREE_SIZE_MAX);
        assert!(consistency.is_ok_and(|nodes| nodes.len() <= 2 * 63));
        assert_eq!(nodes_needed_for_inclusion(5, 5), Err(TreeError::IndexOutOfRange { index: 5, size: 5 }));
        assert_eq!(nodes_needed_for_consistency(6, 5), Err(TreeError::SizesOutOfOrder { first: 6, second: 5 }));
    }
}
