//! Builds a 1,000,000-leaf `MemoryTree` and reports append throughput and the time per
//! inclusion and consistency proof, from memory and through a hash-map node store that
//! answers only the nodes `nodes_needed_for_*` lists (the shape of a database query).
//!
//! Run with `cargo run --release --example bench_proof`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use merkle::{
    consistency_proof, inclusion_proof, leaf_hash, nodes_needed_for_consistency, nodes_needed_for_inclusion,
    verify_consistency, verify_inclusion, Hash, MemoryTree, NodeCoord, TreeError,
};

const LEAVES: u64 = 1_000_000;
const PROOFS: u64 = 10_000;

/// SplitMix64: reproducible pseudo-random indexes without a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }
}

fn per_item(elapsed: Duration, count: u64) -> String {
    format!("{:.2} µs", elapsed.as_secs_f64() * 1e6 / count as f64)
}

/// Fetches the listed nodes into a map, as one `WHERE (level, index) IN (...)` would.
fn fetch(tree: &MemoryTree, coords: &[NodeCoord]) -> HashMap<NodeCoord, Hash> {
    coords.iter().filter_map(|c| tree.node(*c).map(|hash| (*c, hash))).collect()
}

fn main() -> Result<(), TreeError> {
    let (tree, leaf_hashes) = build()?;
    let mut random = SplitMix64(42);
    inclusion(&tree, &mut random)?;
    consistency(&tree, &mut random)?;
    verification(&tree, &leaf_hashes, &mut random)
}

/// Appends the leaves one at a time and in batches; the two trees must agree.
fn build() -> Result<(MemoryTree, Vec<Hash>), TreeError> {
    let leaf_hashes: Vec<Hash> = (0..LEAVES).map(|i| leaf_hash(&i.to_be_bytes())).collect();

    let started = Instant::now();
    let mut tree = MemoryTree::new();
    for hash in &leaf_hashes {
        tree.append(*hash)?;
    }
    let elapsed = started.elapsed();
    println!(
        "append one at a time: {LEAVES} leaves in {:.3} s, {:.0} leaves/s",
        elapsed.as_secs_f64(),
        LEAVES as f64 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let mut batched = MemoryTree::new();
    for batch in leaf_hashes.chunks(64) {
        batched.append_batch(batch)?;
    }
    let elapsed = started.elapsed();
    println!(
        "append in batches of 64: {:.3} s, {:.0} leaves/s",
        elapsed.as_secs_f64(),
        LEAVES as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(batched.root(), tree.root());

    let started = Instant::now();
    let hashed: Vec<Hash> = (0..LEAVES).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    println!("(leaf hashing alone: {:.3} s)", started.elapsed().as_secs_f64());
    black_box(hashed);

    Ok((tree, leaf_hashes))
}

/// Inclusion proofs from memory and through a fetched node map.
fn inclusion(tree: &MemoryTree, random: &mut SplitMix64) -> Result<(), TreeError> {
    let started = Instant::now();
    let mut longest = 0;
    for _ in 0..PROOFS {
        let index = random.below(LEAVES);
        let proof = tree.inclusion_proof(index, LEAVES)?;
        longest = longest.max(proof.len());
        black_box(proof);
    }
    println!(
        "inclusion proof, in memory: {} per proof ({longest} hashes at most)",
        per_item(started.elapsed(), PROOFS)
    );

    let started = Instant::now();
    let mut most_reads = 0;
    for _ in 0..PROOFS {
        let index = random.below(LEAVES);
        let needed = nodes_needed_for_inclusion(index, LEAVES)?;
        most_reads = most_reads.max(needed.len());
        let fetched = fetch(tree, &needed);
        let proof = inclusion_proof(index, LEAVES, |c| fetched.get(&c).copied())?;
        black_box(proof);
    }
    println!(
        "inclusion proof, through a fetched node map: {} per proof ({most_reads} nodes read at most)",
        per_item(started.elapsed(), PROOFS)
    );

    Ok(())
}

/// Consistency proofs from memory and through a fetched node map.
fn consistency(tree: &MemoryTree, random: &mut SplitMix64) -> Result<(), TreeError> {
    let started = Instant::now();
    let mut most_reads = 0;
    for _ in 0..PROOFS {
        let first = 1 + random.below(LEAVES - 1);
        let needed = nodes_needed_for_consistency(first, LEAVES)?;
        most_reads = most_reads.max(needed.len());
        let proof = tree.consistency_proof(first, LEAVES)?;
        black_box(proof);
    }
    println!(
        "consistency proof, in memory: {} per proof ({most_reads} nodes read at most)",
        per_item(started.elapsed(), PROOFS)
    );

    let started = Instant::now();
    for _ in 0..PROOFS {
        let first = 1 + random.below(LEAVES - 1);
        let needed = nodes_needed_for_consistency(first, LEAVES)?;
        let fetched = fetch(tree, &needed);
        black_box(consistency_proof(first, LEAVES, |c| fetched.get(&c).copied())?);
    }
    println!("consistency proof, through a fetched node map: {} per proof", per_item(started.elapsed(), PROOFS));

    Ok(())
}

/// Verifying one inclusion and one consistency proof, many times.
fn verification(tree: &MemoryTree, leaf_hashes: &[Hash], random: &mut SplitMix64) -> Result<(), TreeError> {
    let root = tree.root();
    let index = random.below(LEAVES);
    let proof = tree.inclusion_proof(index, LEAVES)?;
    let started = Instant::now();
    for _ in 0..PROOFS {
        black_box(verify_inclusion(&leaf_hashes[index as usize], index, LEAVES, &proof, &root).is_ok());
    }
    println!("inclusion verification: {} per proof", per_item(started.elapsed(), PROOFS));

    let first = random.below(LEAVES - 1) + 1;
    let proof = tree.consistency_proof(first, LEAVES)?;
    let first_root = tree.root_at(first)?;
    let started = Instant::now();
    for _ in 0..PROOFS {
        black_box(verify_consistency(first, LEAVES, &first_root, &root, &proof).is_ok());
    }
    println!("consistency verification: {} per proof", per_item(started.elapsed(), PROOFS));
    Ok(())
}
