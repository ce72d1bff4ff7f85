//! An independent verifier, written from RFC 9162 §2.1 and the C2SP tlog-checkpoint and
//! signed-note specifications with nothing but SHA-256 and Ed25519 (ring): it shares no
//! code with the server's `merkle` crate, so it checks the server rather than agreeing
//! with it by construction.

use base64::Engine;
use ring::digest::{digest, SHA256};

pub type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut all = Vec::new();
    for p in parts {
        all.extend_from_slice(p);
    }
    let d = digest(&SHA256, &all);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256(0x00 || leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    sha256(&[&[0u8], leaf])
}

/// SHA-256(0x01 || left || right).
pub fn node(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[1u8], left, right])
}

/// MTH(D[n]) of RFC 9162 §2.1.1, by its recursive definition.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes.len() {
        0 => sha256(&[]),
        1 => leaf_hashes[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node(&root(&leaf_hashes[..k]), &root(&leaf_hashes[k..]))
        }
    }
}

/// RFC 9162 §2.1.3.2: verifying an inclusion proof.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], expected_root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *expected_root
}

/// RFC 9162 §2.1.4.2: verifying a consistency proof.
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 || first > second || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_root);
    }
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (path[0], path[0]);
    for c in &path[1..] {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node(c, &f_r);
            s_r = node(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == *first_root && s_r == *second_root && s_n == 0
}

/// A checkpoint whose signature verified.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

/// Checks a signed note against a verifier key `<name>+<hex key id>+<base64(0x01 || key)>`
/// and parses its checkpoint body.
pub fn verify_checkpoint(note: &str, verifier_key: &str) -> Result<Checkpoint, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parts = verifier_key.trim().splitn(3, '+');
    let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(i), Some(k)) => (n, i, k),
        _ => return Err(format!("verifier key {verifier_key:?}")),
    };
    let key = b64.decode(key_b64).map_err(|e| format!("verifier key: {e}"))?;
    if key.len() != 33 || key[0] != 0x01 {
        return Err("verifier key is not 0x01 || Ed25519 key".into());
    }
    let key_id = &sha256(&[name.as_bytes(), b"\n", &key])[..4];
    if hex::encode(key_id) != id_hex {
        return Err(format!("key id {id_hex} is not SHA-256(name || \\n || 0x01 || key)[..4]"));
    }
    let (body, signatures) = note.split_once("\n\n").ok_or("no blank line in the note")?;
    let body = format!("{body}\n");
    let mut verified = false;
    for line in signatures.lines() {
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| format!("signature line {line:?}"))?;
        let (signer, sig) = rest.split_once(' ').ok_or("signature line")?;
        let sig = b64.decode(sig).map_err(|e| format!("signature: {e}"))?;
        if signer == name && sig.len() == 68 && &sig[..4] == key_id {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key[1..])
                .verify(body.as_bytes(), &sig[4..])
                .map_err(|_| "the checkpoint's signature does not verify".to_owned())?;
            verified = true;
        }
    }
    if !verified {
        return Err("no signature by the verifier key".into());
    }
    let mut lines = body.lines();
    let origin = lines.next().ok_or("origin")?.to_owned();
    let size = lines.next().ok_or("size")?.parse().map_err(|e| format!("size: {e}"))?;
    let root_bytes = b64.decode(lines.next().ok_or("root")?).map_err(|e| format!("root: {e}"))?;
    let root: Hash = root_bytes.try_into().map_err(|_| "root is not 32 bytes")?;
    Ok(Checkpoint { origin, size, root, extensions: lines.map(str::to_owned).collect() })
}

pub fn unhex(h: &str) -> Result<Hash, String> {
    hex::decode(h).map_err(|e| e.to_string())?.try_into().map_err(|_| format!("{h} is not 32 bytes"))
}

/// Self-test against hand-built trees, so that a wrong verifier cannot pass the server.
pub fn self_test() -> Result<(), String> {
    let leaves: Vec<Hash> = (0u8..7).map(|i| leaf_hash(&[i])).collect();
    // Seven leaves: ((0 1)(2 3))((4 5) 6).
    let n = |a: Hash, b: Hash| node(&a, &b);
    let r = n(n(n(leaves[0], leaves[1]), n(leaves[2], leaves[3])), n(n(leaves[4], leaves[5]), leaves[6]));
    check_eq!(root(&leaves), r);
    // Inclusion of leaf 4 in 7: [5, 6, (0123)].
    let proof = [leaves[5], leaves[6], n(n(leaves[0], leaves[1]), n(leaves[2], leaves[3]))];
    check!(verify_inclusion(4, 7, &leaves[4], &proof, &r), "inclusion of 4 in 7");
    check!(!verify_inclusion(5, 7, &leaves[4], &proof, &r), "wrong index");
    check!(!verify_inclusion(4, 7, &leaves[3], &proof, &r), "wrong leaf");
    // Consistency 3 → 7 (RFC 9162 §2.1.4.1 example shape): [2, (01), (4 5 6)]... computed:
    let r3 = root(&leaves[..3]);
    let proof = [leaves[2], leaves[3], n(leaves[0], leaves[1]), n(n(leaves[4], leaves[5]), leaves[6])];
    check!(verify_consistency(3, 7, &r3, &r, &proof), "consistency 3 → 7");
    check!(!verify_consistency(3, 7, &root(&leaves[..4]), &r, &proof), "wrong first root");
    // 4 → 7: the first tree is a whole subtree: [(4 5 6)].
    let proof = [n(n(leaves[4], leaves[5]), leaves[6])];
    check!(verify_consistency(4, 7, &root(&leaves[..4]), &r, &proof), "consistency 4 → 7");
    Ok(())
}
