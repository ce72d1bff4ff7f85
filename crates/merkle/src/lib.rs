//! The Kartu audit log: an append-only RFC 9162 Merkle tree and its signed checkpoints.
//!
//! - [`leaf_hash`], [`node_hash`], [`empty_root`], [`root_from_leaves`]: the hashing of
//!   RFC 9162 §2.1.1.
//! - [`tree`]: the tree over a key-value store of perfect subtree hashes that the
//!   caller persists (a database table). Pure functions compute the nodes an append
//!   creates, roots, and RFC 9162 inclusion and consistency proofs, each with a
//!   `nodes_needed_for_*` twin so a database fetches every node in one query.
//! - [`verify_inclusion`], [`verify_consistency`]: the RFC 9162 verification algorithms.
//! - [`MemoryTree`]: the same store in memory, for tests and for auditors.
//! - [`CompactRange`]: only the right edge, in O(log n) memory: how the signer and a
//!   watcher extend a tree they trust from the new leaves alone.
//! - [`Checkpoint`], [`Signer`], [`Verifier`]: C2SP tlog-checkpoint bodies in C2SP
//!   signed notes with Ed25519 keys, readable by existing transparency-log tools.
//!
//! The crate does no I/O: no files, no database, no clock (time reaches a checkpoint
//! as an extension line made by the caller). Parsing returns errors, never panics.
//!
//! ```
//! use merkle::{leaf_hash, verify_inclusion, MemoryTree};
//!
//! let mut tree = MemoryTree::new();
//! for entry in [&b"topup"[..], b"payment", b"refund"] {
//!     tree.append(leaf_hash(entry))?;
//! }
//! let proof = tree.inclusion_proof(1, 3)?;
//! assert!(verify_inclusion(&leaf_hash(b"payment"), 1, 3, &proof, &tree.root()).is_ok());
//! # Ok::<(), merkle::TreeError>(())
//! ```

mod checkpoint;
mod compact;
mod hash;
mod memory;
mod note;
pub mod tree;
mod verify;

pub use checkpoint::{Checkpoint, CHECKPOINT_BODY_BYTES_MAX};
pub use compact::CompactRange;
pub use hash::{empty_root, leaf_hash, node_hash, root_from_leaves, Hash};
pub use memory::MemoryTree;
pub use note::{unverified_text, KeyId, NoteError, Signer, Verifier, NOTE_BYTES_MAX, SIGNATURES_MAX};
pub use tree::{
    append_batch_nodes, append_nodes, consistency_proof, inclusion_proof, nodes_needed_for_append,
    nodes_needed_for_consistency, nodes_needed_for_inclusion, nodes_needed_for_root, root, Node, NodeCoord, TreeError,
    TREE_SIZE_MAX,
};
pub use verify::{verify_consistency, verify_inclusion, ProofError};
