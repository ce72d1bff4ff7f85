//! Log checkpoints in the C2SP tlog-checkpoint format (c2sp.org/tlog-checkpoint):
//! the note text is the origin line, the tree size in decimal, the base64 root hash,
//! then optional extension lines such as `time 2026-11-27T10:00:00Z`, each line ending
//! in a newline.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::hash::Hash;
use crate::note::{has_control_character, NoteError, Signer};

/// The largest checkpoint body, in bytes. A body is three short lines and a few
/// extension lines; the limit keeps a signed checkpoint far below
/// [`crate::NOTE_BYTES_MAX`].
pub const CHECKPOINT_BODY_BYTES_MAX: usize = 16 * 1024;

/// A signed tree head: which log, how many leaves, which root, and opaque extension
/// lines. Built by [`Checkpoint::new`] or [`Checkpoint::parse_body`], so a value is
/// always a well-formed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint of the tree of `size` leaves with root `root` in the log `origin`.
    ///
    /// The origin and each extension line must be non-empty and hold no control
    /// character (no newline); the whole body must fit in [`CHECKPOINT_BODY_BYTES_MAX`].
    /// Time is an extension line formatted by the caller (this crate reads no clock).
    pub fn new(origin: impl Into<String>, size: u64, root: Hash, extensions: Vec<String>) -> Result<Self, NoteError> {
        let checkpoint = Self { origin: origin.into(), size, root, extensions };
        check_line(&checkpoint.origin, "the origin is empty or holds a control character")?;
        for extension in &checkpoint.extensions {
            check_line(extension, "an extension line is empty or holds a control character")?;
        }
        if checkpoint.body_len() > CHECKPOINT_BODY_BYTES_MAX {
            return Err(NoteError::MalformedCheckpoint("the body is too large"));
        }
        Ok(checkpoint)
    }

    /// The log's origin line, e.g. `makassar.example/kartu`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree's root hash.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The extension lines, without their newlines.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text: origin, size, base64 root and extension lines, each ending in "\n".
    pub fn to_body(&self) -> String {
        let mut body = String::with_capacity(self.body_len());
        for line in [self.origin.as_str(), &self.size.to_string(), &BASE64.encode(self.root)] {
            body.push_str(line);
            body.push('\n');
        }
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        body
    }

    /// The whole signed note: body, blank line, and `signer`'s signature line.
    pub fn sign(&self, signer: &Signer) -> String {
        signer.sign_checked_text(&self.to_body())
    }

    /// Parses a checkpoint body strictly: at least three lines, each ending in a newline;
    /// a non-empty origin; the size in decimal without sign or leading zeros; the root as
    /// canonical base64 of 32 bytes; non-empty extension lines; no control characters.
    ///
    /// This reads an unsigned body; [`crate::Verifier::open`] checks the signature first.
    pub fn parse_body(text: &str) -> Result<Self, NoteError> {
        if text.len() > CHECKPOINT_BODY_BYTES_MAX {
            return Err(NoteError::MalformedCheckpoint("the body is too large"));
        }
        if has_control_character(text) {
            return Err(NoteError::MalformedCheckpoint("control character"));
        }
        let Some(text) = text.strip_suffix('\n') else {
            return Err(NoteError::MalformedCheckpoint("the body does not end in a newline"));
        };
        let mut lines = text.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(NoteError::MalformedCheckpoint("fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(NoteError::MalformedCheckpoint("the origin is empty"));
        }
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(NoteError::MalformedCheckpoint("an extension line is empty"));
        }
        Ok(Self { origin: origin.to_owned(), size: parse_size(size)?, root: parse_root(root)?, extensions })
    }

    fn body_len(&self) -> usize {
        // origin, up to 20 digits, 44 base64 characters, extension lines, and newlines.
        self.origin.len() + 20 + 44 + 3 + self.extensions.iter().map(|line| line.len() + 1).sum::<usize>()
    }
}

/// A body line: non-empty, and no control character at all (a newline would split it).
fn check_line(line: &str, problem: &'static str) -> Result<(), NoteError> {
    if line.is_empty() || line.bytes().any(|b| b < 0x20) {
        Err(NoteError::MalformedCheckpoint(problem))
    } else {
        Ok(())
    }
}

/// ASCII decimal without sign or leading zeros ("0" for the empty tree), within u64.
fn parse_size(line: &str) -> Result<u64, NoteError> {
    let digits_only = !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit());
    if !digits_only {
        return Err(NoteError::MalformedCheckpoint("the tree size is not a decimal number"));
    }
    if line.len() > 1 && line.starts_with('0') {
        return Err(NoteError::MalformedCheckpoint("the tree size has a leading zero"));
    }
    line.parse().map_err(|_| NoteError::MalformedCheckpoint("the tree size is too large"))
}

fn parse_root(line: &str) -> Result<Hash, NoteError> {
    let bytes =
        BASE64.decode(line).map_err(|_| NoteError::MalformedCheckpoint("the root hash is not canonical base64"))?;
    bytes.try_into().map_err(|_| NoteError::MalformedCheckpoint("the root hash is not 32 bytes"))
}
