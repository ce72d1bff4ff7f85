//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, compatible with
//! golang.org/x/mod/sumdb/note.
//!
//! A note is a text ending in a newline, a blank line, and signature lines
//! `— <key name> <base64(key id || signature)>\n`. The key id is the first four bytes of
//! SHA-256(key name || "\n" || 0x01 || public key); the signature is Ed25519 over the
//! text, final newline included. A verifier key is published as
//! `<name>+<8 hex key id>+<base64(0x01 || public key)>`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::rand::SecureRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use thiserror::Error;

/// The most signature lines a note may carry; the signed-note spec asks verifiers to
/// accept at least 16, and Go's implementation stops at 100.
pub const SIGNATURES_MAX: usize = 100;

/// The largest note accepted, in bytes: room for [`SIGNATURES_MAX`] signatures,
/// post-quantum ones included (about 5 kB each at most, before base64).
pub const NOTE_BYTES_MAX: usize = 1024 * 1024;

/// Signature type identifier of Ed25519 in key ids and verifier keys.
const ALGORITHM_ED25519: u8 = 0x01;
/// Every signature line starts with an em dash (U+2014) and a space.
const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";
/// Length of an Ed25519 public key.
const PUBLIC_KEY_LEN: usize = 32;

/// A key id: the first four bytes of SHA-256(name || "\n" || 0x01 || public key).
pub type KeyId = [u8; 4];

/// Why a key, a note or a checkpoint was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NoteError {
    /// A key name is empty or holds a Unicode space or a plus sign.
    #[error("invalid key name: it must be non-empty, without spaces or '+'")]
    InvalidKeyName,
    /// The PKCS#8 document is not a valid Ed25519 PKCS#8 v2 key.
    #[error("invalid Ed25519 PKCS#8 v2 private key")]
    InvalidPrivateKey,
    /// The random source failed while generating a key.
    #[error("key generation failed")]
    KeyGeneration,
    /// A verifier key string is not `<name>+<8 hex>+<base64(0x01 || key)>`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// A verifier key names another signature type than Ed25519.
    #[error("unsupported signature type {0:#04x} in verifier key")]
    UnsupportedAlgorithm(u8),
    /// A verifier key's id does not match its name and public key.
    #[error("the verifier key's id does not match its name and public key")]
    KeyIdMismatch,
    /// The note is larger than [`NOTE_BYTES_MAX`].
    #[error("the note is larger than {NOTE_BYTES_MAX} bytes")]
    NoteTooLarge,
    /// The note does not follow the signed-note format.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// The note has more than [`SIGNATURES_MAX`] signature lines.
    #[error("the note has more than {SIGNATURES_MAX} signatures")]
    TooManySignatures,
    /// A signature by the verifier's key is present but does not verify.
    #[error("a signature by key {0} does not verify")]
    InvalidSignature(String),
    /// No signature in the note is by the verifier's key.
    #[error("the note has no signature by key {0}")]
    NoSignatureFromKey(String),
    /// The note text is not a well-formed tlog checkpoint body.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
}

/// Signs notes with an Ed25519 key. Its `Debug` output shows the name and key id only.
pub struct Signer {
    name: String,
    key_id: KeyId,
    key_pair: Ed25519KeyPair,
}

impl Signer {
    /// A signer named `name` (the log's origin, by convention) for the Ed25519 key in
    /// `pkcs8`, a PKCS#8 v2 document such as [`Signer::generate_pkcs8`] returns.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| NoteError::InvalidPrivateKey)?;
        let public_key = public_key_bytes(&key_pair);
        Ok(Self { name: name.to_owned(), key_id: key_id(name, &public_key), key_pair })
    }

    /// A new Ed25519 private key as a PKCS#8 v2 document, to keep in the key file.
    pub fn generate_pkcs8(rng: &dyn SecureRandom) -> Result<Vec<u8>, NoteError> {
        let document = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| NoteError::KeyGeneration)?;
        Ok(document.as_ref().to_vec())
    }

    /// The key name written in signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id written at the start of each signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        public_key_bytes(&self.key_pair)
    }

    /// The verifier key to publish: `<name>+<8 hex key id>+<base64(0x01 || public key)>`.
    pub fn verifier_key(&self) -> String {
        self.verifier().to_string()
    }

    /// The verifier for this signer's key.
    pub fn verifier(&self) -> Verifier {
        Verifier { name: self.name.clone(), key_id: self.key_id, public_key: self.public_key() }
    }

    /// Signs `text` and returns the whole note: text, blank line, one signature line.
    ///
    /// `text` must be non-empty, end in a newline and hold no control character but
    /// newlines, as the format requires.
    pub fn sign_note(&self, text: &str) -> Result<String, NoteError> {
        if text.len() > NOTE_BYTES_MAX {
            return Err(NoteError::NoteTooLarge);
        }
        if !text.ends_with('\n') {
            return Err(NoteError::MalformedNote("the text does not end in a newline"));
        }
        if has_control_character(text) {
            return Err(NoteError::MalformedNote("control character"));
        }
        Ok(self.sign_checked_text(text))
    }

    /// Signs a text already known to be well formed.
    pub(crate) fn sign_checked_text(&self, text: &str) -> String {
        let signature = self.key_pair.sign(text.as_bytes());
        let mut payload = Vec::with_capacity(4 + signature.as_ref().len());
        payload.extend_from_slice(&self.key_id);
        payload.extend_from_slice(signature.as_ref());
        format!("{text}\n{SIGNATURE_LINE_PREFIX}{} {}\n", self.name, BASE64.encode(payload))
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.key_id))
            .finish_non_exhaustive()
    }
}

/// Verifies notes signed by one Ed25519 key, known by its verifier key string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: KeyId,
    public_key: [u8; 32],
}

/// One parsed signature line.
struct SignatureLine<'a> {
    name: &'a str,
    key_id: KeyId,
    signature: Vec<u8>,
}

impl Verifier {
    /// Parses a verifier key `<name>+<8 lowercase hex key id>+<base64(0x01 || public key)>`,
    /// checking the key id against the name and key.
    pub fn parse(verifier_key: &str) -> Result<Self, NoteError> {
        let (name, rest) =
            verifier_key.split_once('+').ok_or(NoteError::MalformedVerifierKey("missing '+' after the name"))?;
        check_key_name(name)?;
        // The key's base64 may itself hold '+': split at the first one only.
        let (key_id_hex, key_base64) =
            rest.split_once('+').ok_or(NoteError::MalformedVerifierKey("missing '+' after the key id"))?;
        let key_id = parse_key_id(key_id_hex)?;
        let key = BASE64
            .decode(key_base64)
            .map_err(|_| NoteError::MalformedVerifierKey("the key is not canonical base64"))?;
        let (algorithm, public_key) = key.split_first().ok_or(NoteError::MalformedVerifierKey("empty key"))?;
        if *algorithm != ALGORITHM_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm(*algorithm));
        }
        let public_key: [u8; PUBLIC_KEY_LEN] =
            public_key.try_into().map_err(|_| NoteError::MalformedVerifierKey("an Ed25519 key is 32 bytes"))?;
        if key_id != self::key_id(name, &public_key) {
            return Err(NoteError::KeyIdMismatch);
        }
        Ok(Self { name: name.to_owned(), key_id, public_key })
    }

    /// A verifier for the Ed25519 `public_key` under the key name `name`.
    pub fn from_public_key(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(Self { name: name.to_owned(), key_id: key_id(name, &public_key), public_key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// Checks a signed note and returns its text (final newline included).
    ///
    /// The whole note must be well formed: at most [`NOTE_BYTES_MAX`] bytes, no control
    /// character but newlines, the text ending in a newline, a blank line, then one to
    /// [`SIGNATURES_MAX`] signature lines, each ending in a newline. Signatures by other
    /// keys are ignored (witness cosignatures, rotated keys); every signature by this key
    /// must verify, and there must be at least one.
    pub fn verify_note<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (text, signatures) = split_note(note)?;
        let mut verified = false;
        for line in signatures {
            if line.name != self.name || line.key_id != self.key_id {
                continue;
            }
            let key = signature::UnparsedPublicKey::new(&signature::ED25519, &self.public_key);
            if key.verify(text.as_bytes(), &line.signature).is_err() {
                return Err(NoteError::InvalidSignature(self.key_label()));
            }
            verified = true;
        }
        if !verified {
            return Err(NoteError::NoSignatureFromKey(self.key_label()));
        }
        Ok(text)
    }

    /// Checks a signed checkpoint note and returns the checkpoint.
    ///
    /// The caller still compares the checkpoint's origin with the log it expects.
    pub fn open(&self, note: &str) -> Result<crate::Checkpoint, NoteError> {
        let text = self.verify_note(note)?;
        crate::Checkpoint::parse_body(text)
    }

    fn key_label(&self) -> String {
        format!("{}+{}", self.name, hex::encode(self.key_id))
    }
}

impl fmt::Display for Verifier {
    /// The verifier key string, as [`Verifier::parse`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = Vec::with_capacity(1 + PUBLIC_KEY_LEN);
        key.push(ALGORITHM_ED25519);
        key.extend_from_slice(&self.public_key);
        write!(f, "{}+{}+{}", self.name, hex::encode(self.key_id), BASE64.encode(key))
    }
}

/// Splits a note into its text and parsed signature lines, checking the format.
/// The text of a well-formed signed note, its signatures NOT checked: for a reader that
/// must learn which key signed it (from the log it describes) before it can verify it.
pub fn unverified_text(note: &str) -> Result<&str, NoteError> {
    Ok(split_note(note)?.0)
}

fn split_note(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), NoteError> {
    if note.len() > NOTE_BYTES_MAX {
        return Err(NoteError::NoteTooLarge);
    }
    if has_control_character(note) {
        return Err(NoteError::MalformedNote("control character"));
    }
    // The text ends at the last blank line; it may hold blank lines of its own.
    let split = note.rfind("\n\n").ok_or(NoteError::MalformedNote("no blank line before the signatures"))?;
    let (text, separator_and_signatures) = note.split_at(split + 1);
    let signatures = separator_and_signatures.strip_prefix('\n').unwrap_or(separator_and_signatures);
    if signatures.is_empty() {
        return Err(NoteError::MalformedNote("no signature"));
    }
    let Some(signatures) = signatures.strip_suffix('\n') else {
        return Err(NoteError::MalformedNote("the last signature line does not end in a newline"));
    };
    let mut lines = Vec::new();
    for line in signatures.split('\n') {
        if lines.len() == SIGNATURES_MAX {
            return Err(NoteError::TooManySignatures);
        }
        lines.push(parse_signature_line(line)?);
    }
    Ok((text, lines))
}

fn parse_signature_line(line: &str) -> Result<SignatureLine<'_>, NoteError> {
    let line = line
        .strip_prefix(SIGNATURE_LINE_PREFIX)
        .ok_or(NoteError::MalformedNote("a signature line does not start with an em dash and a space"))?;
    let (name, signature_base64) =
        line.split_once(' ').ok_or(NoteError::MalformedNote("a signature line has no space after the key name"))?;
    if !is_valid_key_name(name) {
        return Err(NoteError::MalformedNote("invalid key name in a signature line"));
    }
    let payload =
        BASE64.decode(signature_base64).map_err(|_| NoteError::MalformedNote("a signature is not canonical base64"))?;
    // Four bytes of key id, then at least one byte of signature.
    match payload.split_first_chunk::<4>() {
        Some((key_id, signature)) if !signature.is_empty() => {
            Ok(SignatureLine { name, key_id: *key_id, signature: signature.to_vec() })
        }
        _ => Err(NoteError::MalformedNote("a signature is too short")),
    }
}

fn parse_key_id(key_id_hex: &str) -> Result<KeyId, NoteError> {
    let canonical =
        key_id_hex.len() == 8 && key_id_hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical {
        return Err(NoteError::MalformedVerifierKey("the key id is not 8 lowercase hex digits"));
    }
    let mut key_id = [0u8; 4];
    hex::decode_to_slice(key_id_hex, &mut key_id)
        .map_err(|_| NoteError::MalformedVerifierKey("the key id is not 8 lowercase hex digits"))?;
    Ok(key_id)
}

/// SHA-256(name || "\n" || 0x01 || public key), first four bytes.
fn key_id(name: &str, public_key: &[u8; PUBLIC_KEY_LEN]) -> KeyId {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(name.as_bytes());
    context.update(b"\n");
    context.update(&[ALGORITHM_ED25519]);
    context.update(public_key);
    let digest = context.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest.as_ref()[..4]);
    id
}

fn public_key_bytes(key_pair: &Ed25519KeyPair) -> [u8; PUBLIC_KEY_LEN] {
    let mut public_key = [0u8; PUBLIC_KEY_LEN];
    // ring's Ed25519 public keys are always 32 bytes.
    public_key.copy_from_slice(key_pair.public_key().as_ref());
    public_key
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName)
    }
}

/// signed-note: key names are non-empty and hold no Unicode space and no '+'.
fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// signed-note: no ASCII control character (below U+0020) other than newline.
pub(crate) fn has_control_character(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 && b != b'\n')
}
