//! The crate's incremental tree checked against an independent model: the recursive
//! RFC 9162 definitions of MTH, PATH and PROOF over the raw leaf list, written here with
//! ring's SHA-256 and nothing from the crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use merkle::{
    append_batch_nodes, append_nodes, consistency_proof, inclusion_proof, nodes_needed_for_append,
    nodes_needed_for_consistency, nodes_needed_for_inclusion, nodes_needed_for_root, root, root_from_leaves,
    verify_consistency, verify_inclusion, Hash, MemoryTree, NodeCoord, ProofError, TreeError,
};
use proptest::prelude::*;

/// RFC 9162 §2.1, transcribed: the model the crate is checked against.
mod reference {
    use ring::digest::{Context, SHA256};

    pub type Hash = [u8; 32];

    fn sha256(parts: &[&[u8]]) -> Hash {
        let mut context = Context::new(&SHA256);
        for part in parts {
            context.update(part);
        }
        context.finish().as_ref().try_into().unwrap()
    }

    /// The largest power of two smaller than n (n > 1).
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    pub fn leaf(data: &[u8]) -> Hash {
        sha256(&[&[0x00], data])
    }

    /// MTH(D[n]).
    pub fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => sha256(&[]),
            1 => leaf(&leaves[0]),
            n => {
                let k = split(n);
                sha256(&[&[0x01], &mth(&leaves[..k]), &mth(&leaves[k..])])
            }
        }
    }

    /// PATH(m, D[n]), §2.1.3.1.
    pub fn path(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        let (mut proof, sibling) = if m < k {
            (path(m, &leaves[..k]), mth(&leaves[k..]))
        } else {
            (path(m - k, &leaves[k..]), mth(&leaves[..k]))
        };
        proof.push(sibling);
        proof
    }

    /// PROOF(m, D[n]) = SUBPROOF(m, D[n], true), §2.1.4.1, for 0 < m <= n.
    pub fn proof(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
        subproof(m, leaves, true)
    }

    fn subproof(m: usize, leaves: &[Vec<u8>], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { Vec::new() } else { vec![mth(leaves)] };
        }
        let k = split(n);
        let (mut proof, sibling) = if m <= k {
            (subproof(m, &leaves[..k], whole), mth(&leaves[k..]))
        } else {
            (subproof(m - k, &leaves[k..], false), mth(&leaves[..k]))
        };
        proof.push(sibling);
        proof
    }
}

const MODEL_LEAVES: usize = 10_000;

fn leaf_data(index: usize) -> Vec<u8> {
    format!("kartu journal entry {index}").into_bytes()
}

/// The raw leaves and the crate's tree of all of them, built once for every test.
fn model() -> &'static (Vec<Vec<u8>>, MemoryTree) {
    static MODEL: OnceLock<(Vec<Vec<u8>>, MemoryTree)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let leaves: Vec<Vec<u8>> = (0..MODEL_LEAVES).map(leaf_data).collect();
        let mut tree = MemoryTree::new();
        for data in &leaves {
            tree.append(merkle::leaf_hash(data)).unwrap();
        }
        (leaves, tree)
    })
}

/// A node store holding only `coords`, taken from `tree`, that records every read.
struct RestrictedStore {
    nodes: HashMap<NodeCoord, Hash>,
    reads: RefCell<BTreeSet<NodeCoord>>,
}

impl RestrictedStore {
    fn new(tree: &MemoryTree, coords: &[NodeCoord]) -> Self {
        let nodes = coords.iter().map(|c| (*c, tree.node(*c).expect("listed node exists"))).collect();
        Self { nodes, reads: RefCell::new(BTreeSet::new()) }
    }

    fn get(&self, coord: NodeCoord) -> Option<Hash> {
        self.reads.borrow_mut().insert(coord);
        self.nodes.get(&coord).copied()
    }
}

/// Checks inclusion of `index` in the first `size` leaves against the model, through a
/// store that holds only the listed nodes, and checks the verifier's verdicts.
fn check_inclusion(leaves: &[Vec<u8>], tree: &MemoryTree, index: u64, size: u64) {
    let prefix = &leaves[..size as usize];
    let expected = reference::path(index as usize, prefix);
    let expected_root = reference::mth(prefix);

    let needed = nodes_needed_for_inclusion(index, size).unwrap();
    assert!(needed.len() <= 2 * 63);
    let store = RestrictedStore::new(tree, &needed);
    let proof = inclusion_proof(index, size, |c| store.get(c)).unwrap();
    assert_eq!(proof, expected, "PATH({index}, D[{size}])");
    assert_eq!(store.reads.borrow().iter().copied().collect::<Vec<_>>(), needed, "reads = listed nodes");

    let leaf = reference::leaf(&leaves[index as usize]);
    assert_eq!(verify_inclusion(&leaf, index, size, &proof, &expected_root), Ok(()));
    // A flipped bit anywhere in the proof, the leaf or the root is rejected.
    for position in 0..proof.len() {
        let mut tampered = proof.clone();
        tampered[position][(index as usize + position) % 32] ^= 0x01;
        assert!(verify_inclusion(&leaf, index, size, &tampered, &expected_root).is_err());
    }
    let mut wrong_leaf = leaf;
    wrong_leaf[31] ^= 0x80;
    assert!(verify_inclusion(&wrong_leaf, index, size, &proof, &expected_root).is_err());
    let mut wrong_root = expected_root;
    wrong_root[0] ^= 0x01;
    assert_eq!(verify_inclusion(&leaf, index, size, &proof, &wrong_root), Err(ProofError::RootMismatch));
    // Another index, or another size with that size's true root, is rejected.
    for other_index in [index.wrapping_sub(1), index + 1, index ^ 2] {
        if other_index != index && other_index < size {
            assert!(verify_inclusion(&leaf, other_index, size, &proof, &expected_root).is_err());
        }
    }
    for other_size in [size - 1, size + 1, size * 2] {
        if other_size != size && other_size > index && other_size as usize <= leaves.len() {
            let other_root = reference::mth(&leaves[..other_size as usize]);
            assert!(verify_inclusion(&leaf, index, other_size, &proof, &other_root).is_err());
        }
    }
    // A proof one hash short or one hash long is rejected.
    if let Some((_, shorter)) = proof.split_last() {
        assert!(verify_inclusion(&leaf, index, size, shorter, &expected_root).is_err());
    }
    let mut longer = proof.clone();
    longer.push([7; 32]);
    assert!(verify_inclusion(&leaf, index, size, &longer, &expected_root).is_err());
}

/// Checks the consistency proof from `first` to `second` leaves against the model.
fn check_consistency(leaves: &[Vec<u8>], tree: &MemoryTree, first: u64, second: u64) {
    let expected = if first == 0 { Vec::new() } else { reference::proof(first as usize, &leaves[..second as usize]) };
    let first_root = reference::mth(&leaves[..first as usize]);
    let second_root = reference::mth(&leaves[..second as usize]);

    let needed = nodes_needed_for_consistency(first, second).unwrap();
    assert!(needed.len() <= 2 * 63);
    let store = RestrictedStore::new(tree, &needed);
    let proof = consistency_proof(first, second, |c| store.get(c)).unwrap();
    assert_eq!(proof, expected, "PROOF({first}, D[{second}])");
    assert_eq!(store.reads.borrow().iter().copied().collect::<Vec<_>>(), needed, "reads = listed nodes");

    assert_eq!(verify_consistency(first, second, &first_root, &second_root, &proof), Ok(()));
    for position in 0..proof.len() {
        let mut tampered = proof.clone();
        tampered[position][(first as usize + position) % 32] ^= 0x01;
        assert!(verify_consistency(first, second, &first_root, &second_root, &tampered).is_err());
    }
    // Every tree extends the empty one, whatever its root: only a non-empty first tree
    // ties the proof to the second root.
    if first > 0 {
        let mut wrong_root = second_root;
        wrong_root[5] ^= 0x10;
        assert!(verify_consistency(first, second, &first_root, &wrong_root, &proof).is_err());
    }
    let mut wrong_first_root = first_root;
    wrong_first_root[5] ^= 0x10;
    assert!(verify_consistency(first, second, &wrong_first_root, &second_root, &proof).is_err());
    // Other sizes, each with its true root, are rejected. (The empty proof is the true
    // proof of every (0, n) and (n, n), so it is left out.)
    for (other_first, other_second) in [(first + 1, second), (first.wrapping_sub(1), second), (first, second + 1)] {
        let fits = other_first <= other_second && other_second as usize <= leaves.len();
        if (other_first, other_second) != (first, second) && fits && !proof.is_empty() {
            let other_first_root = reference::mth(&leaves[..other_first as usize]);
            let other_second_root = reference::mth(&leaves[..other_second as usize]);
            let verdict = verify_consistency(other_first, other_second, &other_first_root, &other_second_root, &proof);
            assert!(verdict.is_err(), "PROOF({first}, {second}) accepted for ({other_first}, {other_second})");
        }
    }
}

#[test]
fn every_proof_of_every_tree_up_to_forty_leaves() {
    let (leaves, tree) = model();
    for size in 1..=40u64 {
        assert_eq!(tree.root_at(size).unwrap(), reference::mth(&leaves[..size as usize]));
        for index in 0..size {
            check_inclusion(leaves, tree, index, size);
        }
        for first in 0..=size {
            check_consistency(leaves, tree, first, size);
        }
    }
}

#[test]
fn roots_of_many_sizes_match_the_model_and_read_only_the_right_edge() {
    let (leaves, tree) = model();
    let leaf_hashes: Vec<Hash> = leaves.iter().map(|data| reference::leaf(data)).collect();
    for size in (0..=MODEL_LEAVES as u64).step_by(997).chain([1023, 1024, 1025, 4096, MODEL_LEAVES as u64]) {
        let needed = nodes_needed_for_root(size);
        assert_eq!(needed.len(), size.count_ones() as usize);
        let store = RestrictedStore::new(tree, &needed);
        let computed = root(size, |c| store.get(c)).unwrap();
        assert_eq!(computed, reference::mth(&leaves[..size as usize]), "size {size}");
        assert_eq!(computed, root_from_leaves(&leaf_hashes[..size as usize]), "size {size}");
    }
}

#[test]
fn argument_errors_are_reported() {
    let (_, tree) = model();
    let get = |c| tree.node(c);
    assert_eq!(inclusion_proof(3, 3, get), Err(TreeError::IndexOutOfRange { index: 3, size: 3 }));
    assert_eq!(consistency_proof(4, 3, get), Err(TreeError::SizesOutOfOrder { first: 4, second: 3 }));
    // A size past the stored tree needs a node the store does not have.
    let beyond = MODEL_LEAVES as u64 + 1;
    assert!(matches!(tree.root_at(beyond), Err(TreeError::MissingNode(_))));
    assert!(matches!(inclusion_proof(0, beyond, get), Err(TreeError::MissingNode(_))));
    assert!(matches!(consistency_proof(1, beyond, get), Err(TreeError::MissingNode(_))));

    let zero = [0u8; 32];
    assert_eq!(verify_inclusion(&zero, 0, 0, &[], &zero), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
    assert_eq!(verify_consistency(2, 1, &zero, &zero, &[]), Err(ProofError::SizesOutOfOrder { first: 2, second: 1 }));
    assert_eq!(verify_consistency(1, 2, &zero, &zero, &[]), Err(ProofError::WrongLength));
    assert_eq!(verify_consistency(3, 3, &zero, &zero, &[zero]), Err(ProofError::WrongLength));
    assert_eq!(verify_consistency(3, 3, &zero, &[1; 32], &[]), Err(ProofError::RootMismatch));
    assert_eq!(verify_consistency(0, 3, &zero, &zero, &[]), Err(ProofError::RootMismatch));
    assert_eq!(verify_consistency(0, 3, &merkle::empty_root(), &zero, &[]), Ok(()));
    // Extreme sizes do not panic.
    assert!(verify_inclusion(&zero, u64::MAX - 1, u64::MAX, &[zero; 70], &zero).is_err());
    assert!(verify_consistency(u64::MAX - 1, u64::MAX, &zero, &zero, &[zero; 130]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_inclusion_proofs_match_the_model(size in 1..=MODEL_LEAVES as u64, seed in any::<u64>()) {
        let (leaves, tree) = model();
        check_inclusion(leaves, tree, seed % size, size);
    }

    #[test]
    fn random_consistency_proofs_match_the_model(second in 1..=MODEL_LEAVES as u64, seed in any::<u64>()) {
        let (leaves, tree) = model();
        check_consistency(leaves, tree, seed % (second + 1), second);
    }

    /// Appending in random batches, through a store holding only the listed nodes,
    /// creates exactly the nodes of one-at-a-time appends, and the roots of the model.
    #[test]
    fn batch_append_equals_single_appends(batches in prop::collection::vec(0usize..70, 1..12)) {
        let (leaves, single) = model();
        let leaf_hashes: Vec<Hash> = leaves.iter().map(|data| reference::leaf(data)).collect();
        let mut batched = MemoryTree::new();
        let mut size = 0u64;
        for count in batches {
            let batch = &leaf_hashes[size as usize..size as usize + count];
            let needed = nodes_needed_for_append(size, count as u64).unwrap();
            prop_assert!(needed.len() <= 63);
            let store = RestrictedStore::new(&batched, &needed);
            let nodes = append_batch_nodes(size, batch, |c| store.get(c)).unwrap();
            prop_assert_eq!(store.reads.borrow().iter().copied().collect::<Vec<_>>(), needed);
            for node in &nodes {
                prop_assert_eq!(Some(node.hash), single.node(node.coord), "node {}", node.coord);
            }
            prop_assert_eq!(batched.append_batch(batch).unwrap(), size);
            size += count as u64;
            prop_assert_eq!(batched.size(), size);
            prop_assert_eq!(batched.root(), root_from_leaves(&leaf_hashes[..size as usize]));
            prop_assert_eq!(batched.root(), reference::mth(&leaves[..size as usize]));
        }
        // Every node of the single-append tree at this size is in the batched tree.
        for level in 0..16u8 {
            for index in 0..(size >> level) {
                let coord = NodeCoord::new(level, index);
                prop_assert_eq!(batched.node(coord), single.node(coord));
            }
        }
    }
}

#[test]
fn single_append_creates_the_leaf_and_each_completed_parent() {
    let (leaves, tree) = model();
    // Leaf 7 completes (1,3), (2,1) and (3,0).
    let get = |c| tree.node(c);
    let nodes = append_nodes(7, reference::leaf(&leaves[7]), get).unwrap();
    let coords: Vec<NodeCoord> = nodes.iter().map(|n| n.coord).collect();
    assert_eq!(coords, vec![NodeCoord::new(0, 7), NodeCoord::new(1, 3), NodeCoord::new(2, 1), NodeCoord::new(3, 0)]);
    assert_eq!(nodes[3].hash, reference::mth(&leaves[..8]));
    // Leaf 8 completes nothing.
    assert_eq!(append_nodes(8, [0; 32], get).unwrap().len(), 1);
    // A store missing the needed node is reported, not guessed.
    assert_eq!(append_nodes(7, [0; 32], |_| None), Err(TreeError::MissingNode(NodeCoord::new(0, 6))));
}
