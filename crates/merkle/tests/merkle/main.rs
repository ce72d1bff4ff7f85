//! The Merkle tree and checkpoint tests in one binary: published vectors, an independent
//! RFC 9162 model, and signed-note checks.

mod checkpoint_note;
mod tree_model;
mod vectors;
