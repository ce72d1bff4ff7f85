//! RFC 9162 §2.1.1 hashing: the only place that knows how leaves and nodes are hashed.

use ring::digest;

/// A SHA-256 output: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of a leaf hash (RFC 9162 §2.1.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash (RFC 9162 §2.1.1).
const NODE_PREFIX: u8 = 0x01;

/// Hash of one leaf: SHA-256(0x00 || leaf bytes).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(&[LEAF_PREFIX]);
    context.update(leaf);
    to_hash(context.finish())
}

/// Hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // One contiguous buffer and a one-shot digest: this is the hot path of appends and
    // verification, and avoids the incremental context's bookkeeping.
    let mut input = [0u8; 65];
    input[0] = NODE_PREFIX;
    input[1..33].copy_from_slice(left);
    input[33..].copy_from_slice(right);
    to_hash(digest::digest(&digest::SHA256, &input))
}

/// Root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    to_hash(digest::digest(&digest::SHA256, &[]))
}

/// Merkle Tree Hash of a list of leaf hashes, computed with the plain recursive
/// definition of RFC 9162 §2.1.1.
///
/// O(n) hashes and O(log n) stack: meant for tests and for verifiers that hold a small
/// list; a growing log uses [`crate::MemoryTree`] or the node-store functions instead.
pub fn root_from_leaves(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => empty_root(),
        [only] => *only,
        _ => {
            let split = largest_power_of_two_below(leaf_hashes.len() as u64) as usize;
            let (left, right) = leaf_hashes.split_at(split);
            node_hash(&root_from_leaves(left), &root_from_leaves(right))
        }
    }
}

/// The largest power of two strictly below `n`, for `n >= 2` (the split point `k` of
/// RFC 9162 §2.1.1).
pub(crate) fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n >= 2);
    // n - 1 >= 1, so its highest set bit is a power of two < n, and the largest one.
    1u64 << (63 - (n - 1).leading_zeros())
}

fn to_hash(digest: digest::Digest) -> Hash {
    let mut hash = [0u8; 32];
    // SHA-256 always yields 32 bytes.
    hash.copy_from_slice(digest.as_ref());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        let cases = [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1 << 40, 1 << 39)];
        for (n, k) in cases {
            assert_eq!(largest_power_of_two_below(n), k, "n = {n}");
        }
        assert_eq!(largest_power_of_two_below(u64::MAX), 1 << 63);
    }
}
