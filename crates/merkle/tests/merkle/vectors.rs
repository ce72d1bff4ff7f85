//! Published test vectors, compared byte for byte. Nothing here is derived from this
//! crate's own output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, root_from_leaves, verify_consistency, verify_inclusion,
    Checkpoint, Hash, MemoryTree, NoteError, Signer, Verifier,
};

fn hash(hex_text: &str) -> Hash {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

// ---- RFC 6962 / RFC 9162 §2.1 Merkle tree (shared/VECTORS.md; the same vectors as
// transparency-dev/merkle testonly/constants.go) -------------------------------------

const LEAVES_HEX: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696A6B6C6D6E6F"];

const ROOTS_HEX: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

const INCLUSION_0_OF_8_HEX: [&str; 3] = [
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
];

const CONSISTENCY_6_TO_8_HEX: [&str; 3] = [
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
];

fn vector_leaf_hashes() -> Vec<Hash> {
    LEAVES_HEX.iter().map(|leaf| leaf_hash(&hex::decode(leaf).unwrap())).collect()
}

#[test]
fn every_published_root_from_zero_to_eight_leaves() {
    let leaves = vector_leaf_hashes();
    let tree = MemoryTree::from_leaf_hashes(&leaves).unwrap();
    for (size, expected) in ROOTS_HEX.iter().enumerate() {
        let expected = hash(expected);
        assert_eq!(root_from_leaves(&leaves[..size]), expected, "recursive root, n = {size}");
        assert_eq!(tree.root_at(size as u64).unwrap(), expected, "stored root, n = {size}");
        assert_eq!(root(size as u64, |c| tree.node(c)).unwrap(), expected, "n = {size}");
        let grown = MemoryTree::from_leaf_hashes(&leaves[..size]).unwrap();
        assert_eq!(grown.root(), expected, "tree of exactly {size} leaves");
    }
}

#[test]
fn published_inclusion_proof_of_leaf_zero_in_eight() {
    let leaves = vector_leaf_hashes();
    let tree = MemoryTree::from_leaf_hashes(&leaves).unwrap();
    let expected: Vec<Hash> = INCLUSION_0_OF_8_HEX.iter().map(|h| hash(h)).collect();
    assert_eq!(inclusion_proof(0, 8, |c| tree.node(c)).unwrap(), expected);
    assert_eq!(verify_inclusion(&leaves[0], 0, 8, &expected, &hash(ROOTS_HEX[8])), Ok(()));
}

#[test]
fn published_consistency_proof_from_six_to_eight() {
    let leaves = vector_leaf_hashes();
    let tree = MemoryTree::from_leaf_hashes(&leaves).unwrap();
    let expected: Vec<Hash> = CONSISTENCY_6_TO_8_HEX.iter().map(|h| hash(h)).collect();
    assert_eq!(consistency_proof(6, 8, |c| tree.node(c)).unwrap(), expected);
    let (old_root, new_root) = (hash(ROOTS_HEX[6]), hash(ROOTS_HEX[8]));
    assert_eq!(verify_consistency(6, 8, &old_root, &new_root, &expected), Ok(()));
}

// ---- golang.org/x/mod/sumdb/note: note_test.go (TestSign, TestOpen, TestNewVerifier)
// and the package documentation's example, with the PeterNeumann and EnochRoot keys ----

const PETER_SKEY_BASE64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"; // 0x01 || seed
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const GO_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str =
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str =
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

/// The PKCS#8 v2 document ring reads for an Ed25519 seed and public key (RFC 8410 with
/// the v2 public-key field, the layout of ring's own generated documents).
fn pkcs8_v2(seed: &[u8], public_key: &[u8]) -> Vec<u8> {
    let mut der = hex::decode("3053020101300506032b657004220420").unwrap();
    der.extend_from_slice(seed);
    der.extend_from_slice(&hex::decode("a123032100").unwrap());
    der.extend_from_slice(public_key);
    der
}

/// A signer for a Go `PRIVATE+KEY+` key, given its seed field and its verifier key.
fn signer_from_go_keys(name: &str, skey_base64: &str, vkey: &str) -> Signer {
    let skey = BASE64.decode(skey_base64).unwrap();
    assert_eq!(skey[0], 0x01, "Ed25519 signer key");
    let public_key = Verifier::parse(vkey).unwrap().public_key();
    Signer::from_pkcs8(name, &pkcs8_v2(&skey[1..], &public_key)).unwrap()
}

#[test]
fn go_note_example_is_reproduced_byte_for_byte() {
    let signer = signer_from_go_keys("PeterNeumann", PETER_SKEY_BASE64, PETER_VKEY);
    assert_eq!(signer.verifier_key(), PETER_VKEY);
    assert_eq!(hex::encode(signer.key_id()), "c74f20a3");
    let note = signer.sign_note(GO_TEXT).unwrap();
    assert_eq!(note, format!("{GO_TEXT}\n{PETER_SIG}"));
}

#[test]
fn go_note_example_verifies_and_unknown_signatures_are_ignored() {
    let peter = Verifier::parse(PETER_VKEY).unwrap();
    let enoch = Verifier::parse(ENOCH_VKEY).unwrap();
    assert_eq!(peter.to_string(), PETER_VKEY);
    assert_eq!(enoch.to_string(), ENOCH_VKEY);

    let signed_by_both = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(peter.verify_note(&signed_by_both), Ok(GO_TEXT));
    assert_eq!(enoch.verify_note(&signed_by_both), Ok(GO_TEXT));
    // Repeated valid signatures are accepted, as in Go's TestOpen.
    let repeated = format!("{GO_TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}");
    assert_eq!(peter.verify_note(&repeated), Ok(GO_TEXT));

    let only_enoch = format!("{GO_TEXT}\n{ENOCH_SIG}");
    assert!(matches!(peter.verify_note(&only_enoch), Err(NoteError::NoSignatureFromKey(_))));
}

#[test]
fn go_note_rejections() {
    let peter = Verifier::parse(PETER_VKEY).unwrap();
    // TestOpen: a known key's signature with four bytes spliced in must fail to verify.
    let spliced = format!("{GO_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert!(matches!(peter.verify_note(&spliced), Err(NoteError::InvalidSignature(_))));
    // TestOpen: more than 100 signatures.
    let crowded = format!("{GO_TEXT}\n{}", PETER_SIG.repeat(101));
    assert_eq!(peter.verify_note(&crowded), Err(NoteError::TooManySignatures));
    // TestOpen's malformed messages.
    let malformed = [
        GO_TEXT.to_owned(),
        format!("{GO_TEXT}\n"),
        format!("{GO_TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{GO_TEXT}\n{PETER_SIG}"),
        format!("{GO_TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="),
        format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
    ];
    for note in &malformed {
        assert!(matches!(peter.verify_note(note), Err(NoteError::MalformedNote(_))), "accepted or misjudged: {note:?}");
    }
}

#[test]
fn go_verifier_key_manglings_are_refused() {
    // TestNewVerifier: every proper substring, and every byte incremented, must fail.
    let bytes = PETER_VKEY.as_bytes();
    for start in 0..=bytes.len() {
        for end in start + 1..=bytes.len() {
            if start == 0 && end == bytes.len() {
                continue;
            }
            let part = std::str::from_utf8(&bytes[start..end]).unwrap();
            assert!(Verifier::parse(part).is_err(), "accepted {part:?}");
        }
    }
    for position in 0..bytes.len() {
        let mut mangled = bytes.to_vec();
        mangled[position] += 1;
        let mangled = String::from_utf8(mangled).unwrap();
        assert!(Verifier::parse(&mangled).is_err(), "accepted {mangled:?}");
    }
    // Wrong key length and unknown algorithm, each with a matching key id (Go's test).
    let wrong_length = "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==";
    assert!(Verifier::parse(wrong_length).is_err());
    let unknown_algorithm = "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    assert_eq!(Verifier::parse(unknown_algorithm), Err(NoteError::UnsupportedAlgorithm(0x65)));
}

// ---- c2sp.org/signed-note, "Verifier keys" example. Only the public key is published;
// the signature verifying under it is what makes the vector trustworthy. ------------

#[test]
fn c2sp_signed_note_example_verifies() {
    let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    let note = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    let verifier = Verifier::parse(vkey).unwrap();
    assert_eq!(verifier.name(), "example.com/foo");
    assert_eq!(hex::encode(verifier.key_id()), "530d903a");
    assert_eq!(verifier.verify_note(note), Ok("This is an example message.\n"));
    // Not a checkpoint: a single line of text.
    assert!(matches!(verifier.open(note), Err(NoteError::MalformedCheckpoint(_))));
}

// ---- c2sp.org/tlog-checkpoint example body (its signing key is not published) ------

#[test]
fn c2sp_tlog_checkpoint_example_body_parses() {
    let body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let checkpoint = Checkpoint::parse_body(body).unwrap();
    assert_eq!(checkpoint.origin(), "example.com/behind-the-sofa");
    assert_eq!(checkpoint.size(), 20852163);
    assert_eq!(BASE64.encode(checkpoint.root()), "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=");
    assert!(checkpoint.extensions().is_empty());
    assert_eq!(checkpoint.to_body(), body);
}

// ---- A real tlog checkpoint with a published private key: the test log built by
// trillian-tessera's posix-oneshot (@b53519f) in github.com/mhutchinson/merkle,
// testdata/build_log.sh (keys) and testdata/log/checkpoint.N (notes); the leaves are the
// words "one" .. "fifteen", appended one per run. -----------------------------------

const TESSERA_SKEY_BASE64: &str = "AeymY/SZAX0jZcJ8enZ5FY1Dz+wTML2yWSkK+9DSF3eg";
const TESSERA_VKEY: &str = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx";
const TESSERA_CHECKPOINTS: [&str; 4] = [
    "example.com/log/testdata\n8\nvhkRqagHUb0/LAW2ZljDefc26fRE2M3RH7D7LuDmNN0=\n\n— example.com/log/testdata M9e0lpc0lkPmIA2gzLvfXWinz00GGKrQRO8hxu6maAUTyTMJs6+925ir53vPUVDUrqroJ4bGXG0YMeJy9tC6ASkoTQ8=\n",
    "example.com/log/testdata\n9\n8HQCmYKw3Oc37Jcl5tEw4qlAxacqyBklU+xIWIsUN5s=\n\n— example.com/log/testdata M9e0lpoQJNHwk5wKABX02dgva8oOowxWHpAQJLbsX/+okywwgssPbuu8Yn/msB9H1Ep/TZrMzMtdJ0zjmPZCeeZ3Kwo=\n",
    "example.com/log/testdata\n12\naD3IdHGIHbJHsXGg54cWMPru0hs2eLjI9j3FX9E4fnE=\n\n— example.com/log/testdata M9e0lkKfIBR/d7p7tmUpurXGXm67O6dAB4EEHcj+Es1kwsiDFc3i0auuVKjxnvg8K77f+Ng0aws6TLvTS4wNok2skwc=\n",
    "example.com/log/testdata\n15\nztShEESP/U2eoPuUaLyhTgOgfhRUShjIrcnotnqv6h0=\n\n— example.com/log/testdata M9e0llwvabgYByGfcSW7R3qiUiOvdTgW2PGQWEAvDsOegOAsW38t3NOJQ8+2tXSyzylNMExtqemkDfZ+4BoB+oEMWwg=\n",
];
const WORDS: [&str; 15] = [
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen",
    "fourteen", "fifteen",
];

#[test]
fn tessera_checkpoints_open_and_their_roots_match_the_leaves() {
    let verifier = Verifier::parse(TESSERA_VKEY).unwrap();
    let leaves: Vec<Hash> = WORDS.iter().map(|word| leaf_hash(word.as_bytes())).collect();
    let tree = MemoryTree::from_leaf_hashes(&leaves).unwrap();
    for note in TESSERA_CHECKPOINTS {
        let checkpoint = verifier.open(note).unwrap();
        assert_eq!(checkpoint.origin(), "example.com/log/testdata");
        assert_eq!(*checkpoint.root(), tree.root_at(checkpoint.size()).unwrap(), "size {}", checkpoint.size());
    }
}

#[test]
fn tessera_checkpoints_are_reproduced_byte_for_byte() {
    let signer = signer_from_go_keys("example.com/log/testdata", TESSERA_SKEY_BASE64, TESSERA_VKEY);
    assert_eq!(signer.verifier_key(), TESSERA_VKEY);
    let leaves: Vec<Hash> = WORDS.iter().map(|word| leaf_hash(word.as_bytes())).collect();
    let tree = MemoryTree::from_leaf_hashes(&leaves).unwrap();
    for note in TESSERA_CHECKPOINTS {
        let size: u64 = note.lines().nth(1).unwrap().parse().unwrap();
        let checkpoint =
            Checkpoint::new("example.com/log/testdata", size, tree.root_at(size).unwrap(), vec![]).unwrap();
        assert_eq!(checkpoint.sign(&signer), note);
    }
}
