//! Signed checkpoints: round trips, tampering, wrong keys, strict parsing, and random
//! input that must be refused without a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use merkle::{leaf_hash, Checkpoint, MemoryTree, NoteError, Signer, Verifier, SIGNATURES_MAX};
use proptest::prelude::*;
use ring::rand::SystemRandom;

const ORIGIN: &str = "makassar.example/kartu";

fn new_signer(name: &str) -> Signer {
    let pkcs8 = Signer::generate_pkcs8(&SystemRandom::new()).unwrap();
    Signer::from_pkcs8(name, &pkcs8).unwrap()
}

fn sample_checkpoint() -> Checkpoint {
    let mut tree = MemoryTree::new();
    for entry in 0..42u32 {
        tree.append(leaf_hash(&entry.to_be_bytes())).unwrap();
    }
    Checkpoint::new(ORIGIN, tree.size(), tree.root(), vec!["time 2026-11-27T10:00:00Z".to_owned()]).unwrap()
}

#[test]
fn signed_checkpoint_round_trip() {
    let signer = new_signer(ORIGIN);
    let checkpoint = sample_checkpoint();
    let note = checkpoint.sign(&signer);

    let body = checkpoint.to_body();
    assert_eq!(body, format!("{ORIGIN}\n42\n{}\ntime 2026-11-27T10:00:00Z\n", BASE64.encode(checkpoint.root())));
    let (note_body, signature_line) = note.split_once("\n\n").unwrap();
    assert_eq!(format!("{note_body}\n"), body);
    assert!(signature_line.starts_with(&format!("\u{2014} {ORIGIN} ")));
    assert!(signature_line.ends_with('\n'));
    let payload = BASE64.decode(signature_line.trim_end().rsplit(' ').next().unwrap()).unwrap();
    assert_eq!(payload.len(), 4 + 64);
    assert_eq!(payload[..4], signer.key_id());

    let verifier = Verifier::parse(&signer.verifier_key()).unwrap();
    assert_eq!(verifier, signer.verifier());
    assert_eq!(verifier.open(&note), Ok(checkpoint));
}

#[test]
fn verifier_key_has_the_published_shape() {
    let signer = new_signer(ORIGIN);
    let key = signer.verifier_key();
    let parts: Vec<&str> = key.splitn(3, '+').collect();
    assert_eq!(parts[0], ORIGIN);
    assert_eq!(parts[1], hex::encode(signer.key_id()));
    let encoded = BASE64.decode(parts[2]).unwrap();
    assert_eq!(encoded[0], 0x01);
    assert_eq!(encoded[1..], signer.public_key());
    // key id = SHA-256(name || "\n" || 0x01 || public key)[..4], computed here directly.
    let mut input = format!("{ORIGIN}\n").into_bytes();
    input.push(0x01);
    input.extend_from_slice(&signer.public_key());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    assert_eq!(digest.as_ref()[..4], signer.key_id());
}

#[test]
fn tampered_body_fails() {
    let signer = new_signer(ORIGIN);
    let verifier = signer.verifier();
    let note = sample_checkpoint().sign(&signer);
    let tampered = [
        note.replacen("\n42\n", "\n43\n", 1),
        note.replacen("time 2026", "time 2027", 1),
        note.replacen(ORIGIN, "makassar.example/kartv", 1),
        note.replacen("time 2026-11-27T10:00:00Z\n", "", 1),
        note.replacen("\n\n", "\nextra line\n\n", 1),
    ];
    for note in &tampered {
        assert!(matches!(verifier.open(note), Err(NoteError::InvalidSignature(_))), "accepted or misjudged {note:?}");
    }
}

#[test]
fn wrong_key_fails() {
    let signer = new_signer(ORIGIN);
    let note = sample_checkpoint().sign(&signer);
    // Another key under the same name: its key id differs, so the note has no signature
    // by it.
    let other = new_signer(ORIGIN).verifier();
    assert!(matches!(other.open(&note), Err(NoteError::NoSignatureFromKey(_))));
    // The right public key under another name.
    let renamed = Verifier::from_public_key("other.example/log", signer.public_key()).unwrap();
    assert!(matches!(renamed.open(&note), Err(NoteError::NoSignatureFromKey(_))));
    // A line with our name and key id but another key's signature: checked, and refused.
    let body = sample_checkpoint().to_body();
    let impostor_note = new_signer(ORIGIN).sign_note(&body).unwrap();
    let impostor_line = impostor_note.split_once("\n\n").unwrap().1;
    let mut payload = BASE64.decode(impostor_line.trim_end().rsplit(' ').next().unwrap()).unwrap();
    payload[..4].copy_from_slice(&signer.key_id());
    let forged = format!("{body}\n\u{2014} {ORIGIN} {}\n", BASE64.encode(&payload));
    assert!(matches!(signer.verifier().open(&forged), Err(NoteError::InvalidSignature(_))));
    // A valid note followed by a forged line with our name and key id is refused whole.
    let note_with_forgery = format!("{note}\u{2014} {ORIGIN} {}\n", BASE64.encode(&payload));
    assert!(matches!(signer.verifier().open(&note_with_forgery), Err(NoteError::InvalidSignature(_))));
}

#[test]
fn missing_signature_fails() {
    let signer = new_signer(ORIGIN);
    let verifier = signer.verifier();
    let body = sample_checkpoint().to_body();
    assert!(matches!(verifier.open(&body), Err(NoteError::MalformedNote(_))));
    assert!(matches!(verifier.open(&format!("{body}\n")), Err(NoteError::MalformedNote(_))));
    // Only a witness's cosignature, none by the log.
    let witness = new_signer("witness.example/w1");
    let cosigned_only = witness.sign_note(&body).unwrap();
    assert!(matches!(verifier.open(&cosigned_only), Err(NoteError::NoSignatureFromKey(_))));
}

#[test]
fn extra_signatures_by_other_keys_are_ignored() {
    let signer = new_signer(ORIGIN);
    let witness = new_signer("witness.example/w1");
    let checkpoint = sample_checkpoint();
    let note = checkpoint.sign(&signer);
    let witness_line = witness.sign_note(&checkpoint.to_body()).unwrap();
    let witness_line = witness_line.split_once("\n\n").unwrap().1;
    // Unknown-key lines of any signature length, before or after ours.
    let junk = "\u{2014} unknown.example/k AAAAAAAAAAAA\n";
    let cosigned = format!("{note}{witness_line}{junk}");
    assert_eq!(signer.verifier().open(&cosigned), Ok(checkpoint.clone()));
    assert_eq!(witness.verifier().open(&cosigned), Ok(checkpoint.clone()));
    let (body, ours) = note.split_once("\n\n").unwrap();
    let reordered = format!("{body}\n\n{junk}{witness_line}{ours}");
    assert_eq!(signer.verifier().open(&reordered), Ok(checkpoint));
}

#[test]
fn too_many_signature_lines_fail() {
    let signer = new_signer(ORIGIN);
    let note = sample_checkpoint().sign(&signer);
    let junk = "\u{2014} unknown.example/k AAAAAAAAAAAA\n";
    let at_limit = format!("{note}{}", junk.repeat(SIGNATURES_MAX - 1));
    assert!(signer.verifier().open(&at_limit).is_ok());
    let over_limit = format!("{note}{}", junk.repeat(SIGNATURES_MAX));
    assert_eq!(signer.verifier().open(&over_limit), Err(NoteError::TooManySignatures));
}

#[test]
fn garbage_fails_cleanly() {
    let verifier = new_signer(ORIGIN).verifier();
    let garbage = [
        "",
        "\n",
        "\n\n",
        "\n\n\n",
        "hello",
        "— \n\n— \n",
        "a\n\n— a\n",
        "a\n\n— a \n",
        "a\n\n— a AAAA\n",
        "a\n\n—  AAAAAAAA\n",
        "a\n\n— a+b AAAAAAAA\n",
        "a\n\n- a AAAAAAAA\n",
        "a\n\n— a AAAAAAAA\r\n",
        "a\n\n— a AAAAAAAA=\n",
        "a\r\n\n— a AAAAAAAA\n",
        "\u{0}\n\n— a AAAAAAAA\n",
    ];
    for note in garbage {
        assert!(verifier.open(note).is_err(), "accepted {note:?}");
    }
    assert!(verifier.open(&"x".repeat(merkle::NOTE_BYTES_MAX + 1)).is_err());
}

/// Checkpoint bodies that must be refused even when correctly signed.
#[test]
fn malformed_checkpoint_bodies_fail_even_when_signed() {
    let signer = new_signer(ORIGIN);
    let verifier = signer.verifier();
    let root = BASE64.encode([7u8; 32]);
    let bodies = [
        format!("{ORIGIN}\n42\n"),
        format!("{ORIGIN}\n"),
        format!("\n42\n{root}\n"),
        format!("{ORIGIN}\n042\n{root}\n"),
        format!("{ORIGIN}\n00\n{root}\n"),
        format!("{ORIGIN}\n+42\n{root}\n"),
        format!("{ORIGIN}\n-1\n{root}\n"),
        format!("{ORIGIN}\n4 2\n{root}\n"),
        format!("{ORIGIN}\n\n{root}\n"),
        format!("{ORIGIN}\n18446744073709551616\n{root}\n"),
        format!("{ORIGIN}\n42\n{}\n", BASE64.encode([7u8; 31])),
        format!("{ORIGIN}\n42\n{}\n", BASE64.encode([7u8; 33])),
        format!("{ORIGIN}\n42\n{}\n", hex::encode([7u8; 32])),
        format!("{ORIGIN}\n42\n{}\n", root.trim_end_matches('=')),
        // Non-canonical base64: the unused low bits of the last character are set.
        format!("{ORIGIN}\n42\n{}\n", root.replacen("c=", "d=", 1)),
        format!("{ORIGIN}\n42\n{root}\n\n"),
        format!("{ORIGIN}\n42\n{root}\n\ntime 2026-11-27T10:00:00Z\n"),
        format!("{ORIGIN}\n42\n{root} \n"),
    ];
    for body in &bodies {
        let verdict = match signer.sign_note(body) {
            Ok(note) => verifier.open(&note).map(|_| ()),
            Err(error) => Err(error),
        };
        assert!(verdict.is_err(), "accepted body {body:?}");
    }
    // The edge values that are allowed.
    let empty_tree = format!("{ORIGIN}\n0\n{}\n", BASE64.encode(merkle::empty_root()));
    assert_eq!(verifier.open(&signer.sign_note(&empty_tree).unwrap()).unwrap().size(), 0);
    let largest = format!("{ORIGIN}\n18446744073709551615\n{root}\nx\n");
    assert_eq!(verifier.open(&signer.sign_note(&largest).unwrap()).unwrap().size(), u64::MAX);
}

#[test]
fn checkpoint_new_refuses_what_it_could_not_write() {
    let root = [1u8; 32];
    assert!(Checkpoint::new("", 1, root, vec![]).is_err());
    assert!(Checkpoint::new("a\nb", 1, root, vec![]).is_err());
    assert!(Checkpoint::new("a\tb", 1, root, vec![]).is_err());
    assert!(Checkpoint::new(ORIGIN, 1, root, vec![String::new()]).is_err());
    assert!(Checkpoint::new(ORIGIN, 1, root, vec!["time\n2026".to_owned()]).is_err());
    assert!(Checkpoint::new(ORIGIN, 1, root, vec!["x".repeat(merkle::CHECKPOINT_BODY_BYTES_MAX)]).is_err());
    let checkpoint = Checkpoint::new(ORIGIN, 1, root, vec!["a b".to_owned()]).unwrap();
    assert_eq!(Checkpoint::parse_body(&checkpoint.to_body()), Ok(checkpoint));
}

#[test]
fn keys_and_names_are_checked() {
    let pkcs8 = Signer::generate_pkcs8(&SystemRandom::new()).unwrap();
    for name in ["", "a b", "a+b", "a\nb", "a\u{2003}b"] {
        assert_eq!(Signer::from_pkcs8(name, &pkcs8).err(), Some(NoteError::InvalidKeyName), "{name:?}");
    }
    assert_eq!(Signer::from_pkcs8(ORIGIN, b"not a key").err(), Some(NoteError::InvalidPrivateKey));
    assert_eq!(Signer::from_pkcs8(ORIGIN, &pkcs8[..pkcs8.len() - 1]).err(), Some(NoteError::InvalidPrivateKey));

    let signer = Signer::from_pkcs8(ORIGIN, &pkcs8).unwrap();
    let key = signer.verifier_key();
    assert!(Verifier::parse(&key.to_uppercase()).is_err());
    assert!(Verifier::parse(&format!("{key}\n")).is_err());
    assert!(Verifier::parse(&format!(" {key}")).is_err());
    let mut parts = key.splitn(3, '+');
    let (name, key_id, key_base64) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    assert!(Verifier::parse(&format!("{name}+{key_id}")).is_err());
    assert!(Verifier::parse(&format!("{name}+{key_id}+")).is_err());
    assert!(Verifier::parse(&format!("{name}+{key_id}+{}", &key_base64[..key_base64.len() - 4])).is_err());
    assert!(Verifier::parse(&format!("{name}+{key_id}+{key_base64}=")).is_err());
    assert!(Verifier::parse(&format!("{name}+{key_id}x+{key_base64}")).is_err());
    assert_eq!(Verifier::parse(&format!("{name}+{key_id}+{key_base64}")), Ok(signer.verifier()));
}

#[test]
fn debug_does_not_print_the_private_key() {
    let pkcs8 = Signer::generate_pkcs8(&SystemRandom::new()).unwrap();
    let signer = Signer::from_pkcs8(ORIGIN, &pkcs8).unwrap();
    let shown = format!("{signer:?} {signer:#?}");
    assert!(shown.contains(ORIGIN));
    assert!(shown.contains(&hex::encode(signer.key_id())));
    // The seed sits at bytes 16..48 of ring's PKCS#8 v2 document.
    let seed = &pkcs8[16..48];
    for encoded in [hex::encode(seed), hex::encode_upper(seed), BASE64.encode(seed), format!("{seed:?}")] {
        assert!(!shown.contains(&encoded), "Debug shows the seed: {shown}");
    }
    assert!(!shown.contains(&format!("{:?}", &seed[..8])));
}

#[test]
fn sign_note_refuses_texts_it_cannot_frame() {
    let signer = new_signer(ORIGIN);
    assert!(signer.sign_note("").is_err());
    assert!(signer.sign_note("no newline").is_err());
    assert!(signer.sign_note("tab\there\n").is_err());
    assert!(signer.sign_note(&format!("{}\n", "x".repeat(merkle::NOTE_BYTES_MAX))).is_err());
}

/// A valid signed note, made once, for the mutation tests.
fn reference_note() -> &'static (Verifier, String) {
    static NOTE: std::sync::OnceLock<(Verifier, String)> = std::sync::OnceLock::new();
    NOTE.get_or_init(|| {
        let signer = new_signer(ORIGIN);
        (signer.verifier(), sample_checkpoint().sign(&signer))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_text_is_refused_without_panic(text in ".*") {
        let (verifier, _) = reference_note();
        prop_assert!(verifier.open(&text).is_err());
        let _ = Verifier::parse(&text);
        let _ = Checkpoint::parse_body(&text);
    }

    #[test]
    fn random_note_shaped_text_is_refused_without_panic(
        body in "[a-z0-9/+=.\n ]{0,80}",
        name in "[a-z./+ ]{0,12}",
        signature in "[A-Za-z0-9+/=]{0,100}",
    ) {
        let (verifier, _) = reference_note();
        let note = format!("{body}\n\n\u{2014} {name} {signature}\n");
        prop_assert!(verifier.open(&note).is_err());
        let _ = Checkpoint::parse_body(&format!("{body}\n"));
    }

    /// Any single-character change to a valid note is refused (or, if it leaves the signed
    /// text and our signature intact, yields the same checkpoint), never a panic.
    #[test]
    fn mutated_notes_never_verify_a_different_checkpoint(
        position in any::<prop::sample::Index>(),
        replacement in any::<char>(),
        delete in any::<bool>(),
    ) {
        let (verifier, note) = reference_note();
        let original = verifier.open(note).unwrap();
        let mut chars: Vec<char> = note.chars().collect();
        let at = position.index(chars.len());
        if delete { chars.remove(at); } else { chars[at] = replacement; }
        let mutated: String = chars.into_iter().collect();
        if let Ok(checkpoint) = verifier.open(&mutated) {
            prop_assert_eq!(checkpoint, original);
        }
    }

    #[test]
    fn random_bytes_as_lossy_text_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let (verifier, note) = reference_note();
        let text = String::from_utf8_lossy(&bytes);
        prop_assert!(verifier.open(&text).is_err());
        // Appended garbage after a valid note breaks the signature block's format.
        let appended = format!("{note}{text}");
        if !text.is_empty() {
            let verdict = verifier.open(&appended);
            if let Ok(checkpoint) = verdict {
                prop_assert_eq!(checkpoint, verifier.open(note).unwrap());
            }
        }
    }
}
