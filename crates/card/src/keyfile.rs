//! The key file (SPEC §6): the master keys of every key version and the checkpoint
//! signing key, as TOML.
//!
//! ```toml
//! system_identifier = "KARTU-MKS"          # ASCII, part of the diversification input
//! [cards.1]                                # key version 1 (1 to 255)
//! sdm_meta_read_key = "<32 hex>"           # shared by all cards: decrypts PICCData
//! sdm_file_read_master_key = "<32 hex>"    # diversified per card: SUN MAC
//! app_master_key = "<32 hex>"              # issuance file only: key 0, personalisation
//! [checkpoint]                             # server file only
//! ed25519_pkcs8 = "<hex>"                  # signs audit checkpoints
//! ```
//!
//! One installation has two key files, kept apart ([`KeyFile::server_part`],
//! [`KeyFile::issuance_part`]). The **server's** file holds what verifying taps and signing
//! checkpoints need: the SDM keys and the checkpoint key. The **issuance** file, on the
//! personalisation workstation, also holds every version's `app_master_key` (card key 0:
//! ChangeKey, rewriting the card's URL); whoever holds it can rewrite cards, so the
//! internet-facing server never does ([`KeyFile::holds_app_master_keys`]).
//!
//! This module turns text into a [`KeyFile`] and back ([`KeyFile::parse`],
//! [`KeyFile::generate`], [`KeyFile::to_toml`]); reading and writing the file itself is
//! the caller's (this crate does no I/O). Keys are [`Key`] values, so neither a
//! [`KeyFile`] nor an error ever prints one: errors name the field and never repeat its
//! value. The checkpoint key is kept as opaque bytes ([`CheckpointSecret`]); this crate
//! does not interpret it.
//!
//! Key versions: a card's keys carry the version of the `[cards.N]` table they come from
//! (a card stores it in one byte, and 0 is the factory version), so N is 1 to 255 and the
//! highest N is the newest. Taps are checked against every version, newest first
//! ([`KeyFile::verify_tap`]), so cards still on an older version keep working during a
//! rotation, and so are taps of a card pulled away half-way through one (its two SDM keys
//! of two versions, [`KeyFile::verify_tap_versions`]).

use core::fmt;
use core::str::FromStr;

use zeroize::Zeroizing;

use crate::diversify::{SystemIdentifier, SystemIdentifierError};
use crate::key::{Key, KeyParseError, KEY_LEN};
use crate::sun::{FileReadKey, SunError, SunMessage, SunTap};

/// Bytes of randomness [`KeyFile::generate`] turns into the three master keys.
pub const GENERATE_RANDOM_LEN: usize = 3 * KEY_LEN;

/// The key version [`KeyFile::generate`] writes.
pub const FIRST_KEY_VERSION: u8 = 1;

const SYSTEM_IDENTIFIER: &str = "system_identifier";
const CARDS: &str = "cards";
const CHECKPOINT: &str = "checkpoint";
const SDM_META_READ_KEY: &str = "sdm_meta_read_key";
const SDM_FILE_READ_MASTER_KEY: &str = "sdm_file_read_master_key";
const APP_MASTER_KEY: &str = "app_master_key";
const ED25519_PKCS8: &str = "ed25519_pkcs8";

/// Longest table or field name repeated in an error message.
const NAME_SHOWN_MAX: usize = 40;

/// Why text is not a valid key file. Messages name the field (`cards.2.app_master_key`)
/// and never contain a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The text is not TOML at all.
    #[error("the key file is not valid TOML (line {line}): {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// The TOML parser's description (without the offending text).
        message: String,
    },
    /// A required field is missing.
    #[error("{field} is missing")]
    Missing {
        /// The field's path, e.g. `cards.1.app_master_key`.
        field: String,
    },
    /// A field has the wrong TOML type (e.g. a number where a string belongs).
    #[error("{field} must be {expected}")]
    WrongType {
        /// The field's path.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A field or table the key file does not have (often a misspelled name).
    #[error("{field} is not a field of the key file")]
    UnknownField {
        /// The field's path.
        field: String,
    },
    /// A key is not 32 hex characters.
    #[error("{field}: {source}")]
    Key {
        /// The field's path.
        field: String,
        /// What is wrong with it.
        source: KeyParseError,
    },
    /// `system_identifier` is not 1 to 23 printable ASCII characters.
    #[error("system_identifier: {0}")]
    SystemIdentifier(#[from] SystemIdentifierError),
    /// A `[cards.N]` table whose N is not a key version.
    #[error("[cards.{name}]: a key version is a number from 1 to 255, written without leading zeros")]
    KeyVersion {
        /// The table's name after `cards.`.
        name: String,
    },
    /// There is no `[cards.N]` table.
    #[error("the key file has no [cards.N] table: at least one key version is needed")]
    NoKeyVersion,
    /// `checkpoint.ed25519_pkcs8` is not hex.
    #[error("checkpoint.ed25519_pkcs8 must be an even number of hex digits")]
    CheckpointHex,
}

/// The master keys of one key version (`[cards.N]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeySet {
    version: u8,
    sdm_meta_read_key: Key,
    sdm_file_read_master_key: Key,
    /// Only in the issuance key file.
    app_master_key: Option<Key>,
}

impl MasterKeySet {
    /// A key version's masters, as a key file's `[cards.N]` table holds them
    /// (`app_master_key` only in the issuance key file).
    #[must_use]
    pub const fn new(
        version: u8,
        sdm_meta_read_key: Key,
        sdm_file_read_master_key: Key,
        app_master_key: Option<Key>,
    ) -> Self {
        Self { version, sdm_meta_read_key, sdm_file_read_master_key, app_master_key }
    }

    /// The key version N of `[cards.N]` (1 to 255).
    #[must_use]
    pub const fn version(&self) -> u8 {
        self.version
    }

    /// The SDM meta-read key, shared by all cards (card key 1).
    #[must_use]
    pub const fn sdm_meta_read_key(&self) -> &Key {
        &self.sdm_meta_read_key
    }

    /// The master of the per-card SDM file-read keys (card key 2).
    #[must_use]
    pub const fn sdm_file_read_master_key(&self) -> &Key {
        &self.sdm_file_read_master_key
    }

    /// The master of the per-card application master keys (card key 0), which only the
    /// issuance key file holds.
    #[must_use]
    pub const fn app_master_key(&self) -> Option<&Key> {
        self.app_master_key.as_ref()
    }

    fn verify_tap(&self, tap: &SunTap, system_identifier: &SystemIdentifier) -> Result<SunMessage, SunError> {
        let file_read_key = FileReadKey::Diversified {
            master: &self.sdm_file_read_master_key,
            system_identifier: system_identifier.as_bytes(),
        };
        tap.verify(&self.sdm_meta_read_key, &file_read_key)
    }
}

/// The checkpoint signing key (`[checkpoint] ed25519_pkcs8`), kept as opaque bytes: the
/// ledger interprets it, this crate does not. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckpointSecret(Zeroizing<Vec<u8>>);

impl CheckpointSecret {
    /// Wraps the key bytes (an Ed25519 PKCS#8 document for the ledger).
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes. Named so that every use of the secret stands out in review.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CheckpointSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckpointSecret(<redacted>)")
    }
}

/// The key versions of the two SDM keys that checked a tap ([`KeyFile::verify_tap_versions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapVersions {
    /// The version of the meta-read key (card key 1) that decrypted PICCData.
    pub meta_read: u8,
    /// The version of the file-read key (card key 2) whose MAC holds.
    pub file_read: u8,
}

impl TapVersions {
    /// The tap's key version: the lower of the two. A card pulled away half-way through a
    /// rotation from version A to B taps as A (what the server still records for it);
    /// never as B, so a tap proves version B only when both keys are at B. Taking the
    /// lower one also means a copied tap of version A cannot pass as B by having its
    /// PICCData re-encrypted with B's meta-read key, which all cards share.
    #[must_use]
    pub fn version(&self) -> u8 {
        self.meta_read.min(self.file_read)
    }

    /// Whether both keys are of one version: a card not caught half-way in a rotation.
    #[must_use]
    pub fn consistent(&self) -> bool {
        self.meta_read == self.file_read
    }
}

/// A parsed key file: the system identifier, one [`MasterKeySet`] per key version, and
/// the optional checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    system_identifier: SystemIdentifier,
    /// The highest key version.
    newest: MasterKeySet,
    /// The other key versions, newest first.
    older: Vec<MasterKeySet>,
    checkpoint: Option<CheckpointSecret>,
}

impl KeyFile {
    /// Parses the TOML text of a key file.
    ///
    /// # Errors
    /// [`KeyFileError`], naming the field that is missing or wrong.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
            let start = error.span().map_or(0, |span| span.start);
            let line = text.get(..start).map_or(1, |before| before.matches('\n').count() + 1);
            KeyFileError::Syntax { line, message: without_quoted_values(error.message().trim()) }
        })?;
        for name in table.keys() {
            if ![SYSTEM_IDENTIFIER, CARDS, CHECKPOINT].contains(&name.as_str()) {
                return Err(KeyFileError::UnknownField { field: shown(name) });
            }
        }
        let system_identifier = match table.get(SYSTEM_IDENTIFIER) {
            None => return Err(missing(SYSTEM_IDENTIFIER)),
            Some(toml::Value::String(text)) => SystemIdentifier::parse(text)?,
            Some(_) => return Err(wrong_type(SYSTEM_IDENTIFIER, "a string")),
        };
        let cards = match table.get(CARDS) {
            None => return Err(KeyFileError::NoKeyVersion),
            Some(toml::Value::Table(cards)) => cards,
            Some(_) => return Err(wrong_type(CARDS, "a table of [cards.N] tables")),
        };
        let mut versions = Vec::with_capacity(cards.len());
        for (name, value) in cards {
            versions.push(parse_version(name, value)?);
        }
        // Names are canonical numbers, so versions are distinct.
        versions.sort_by_key(|set| core::cmp::Reverse(set.version));
        let mut versions = versions.into_iter();
        let newest = versions.next().ok_or(KeyFileError::NoKeyVersion)?;
        let older = versions.collect();
        let checkpoint = match table.get(CHECKPOINT) {
            None => None,
            Some(toml::Value::Table(checkpoint)) => Some(parse_checkpoint(checkpoint)?),
            Some(_) => return Err(wrong_type(CHECKPOINT, "a table")),
        };
        Ok(Self { system_identifier, newest, older, checkpoint })
    }

    /// A new key file with key version 1, whose three master keys are `random` (from a
    /// cryptographic random number generator: the caller's, as this crate has none), in
    /// the order `sdm_meta_read_key`, `sdm_file_read_master_key`, `app_master_key`.
    #[must_use]
    pub fn generate(system_identifier: SystemIdentifier, random: &[u8; GENERATE_RANDOM_LEN]) -> Self {
        let key = |index: usize| {
            let mut bytes = Zeroizing::new([0_u8; KEY_LEN]);
            if let Some(part) = random.get(index * KEY_LEN..(index + 1) * KEY_LEN) {
                bytes.copy_from_slice(part);
            }
            Key::from_bytes(*bytes)
        };
        let set = MasterKeySet {
            version: FIRST_KEY_VERSION,
            sdm_meta_read_key: key(0),
            sdm_file_read_master_key: key(1),
            app_master_key: Some(key(2)),
        };
        Self { system_identifier, newest: set, older: Vec::new(), checkpoint: None }
    }

    /// The same key file with `secret` as its checkpoint key.
    #[must_use]
    pub fn with_checkpoint(mut self, secret: CheckpointSecret) -> Self {
        self.checkpoint = Some(secret);
        self
    }

    /// Whether any key version holds its `app_master_key`: an issuance key file, which
    /// `kartu serve` refuses.
    #[must_use]
    pub fn holds_app_master_keys(&self) -> bool {
        self.versions().any(|set| set.app_master_key.is_some())
    }

    /// The server's part: every version's SDM keys and the checkpoint key, without any
    /// `app_master_key`.
    #[must_use]
    pub fn server_part(&self) -> Self {
        let strip = |set: &MasterKeySet| MasterKeySet { app_master_key: None, ..set.clone() };
        Self {
            system_identifier: self.system_identifier.clone(),
            newest: strip(&self.newest),
            older: self.older.iter().map(strip).collect(),
            checkpoint: self.checkpoint.clone(),
        }
    }

    /// The issuance part: every version's card keys, without the checkpoint key.
    #[must_use]
    pub fn issuance_part(&self) -> Self {
        Self { checkpoint: None, ..self.clone() }
    }

    /// The key file as TOML, as [`KeyFile::parse`] reads it (keys in upper-case hex,
    /// versions newest first). The text holds every secret: it is zeroized when dropped;
    /// write it to a file only the Kartu service may read.
    #[must_use]
    pub fn to_toml(&self) -> Zeroizing<String> {
        // Room for everything up front: a growing String would leave copies of the secrets
        // behind in freed memory.
        let checkpoint_len = self.checkpoint.as_ref().map_or(0, |secret| secret.expose_secret().len());
        let capacity = 512 + 256 * (1 + self.older.len()) + 2 * checkpoint_len;
        let mut out = Zeroizing::new(String::with_capacity(capacity));
        if self.holds_app_master_keys() {
            out.push_str("# Kartu issuance key file (SPEC §6): card key 0 of every card. Secret: keep it on\n");
            out.push_str("# the personalisation workstation, never on the server (kartu serve refuses it).\n");
        } else {
            out.push_str("# Kartu server key file (SPEC §6). Secret: readable by the Kartu service only,\n");
            out.push_str("# never stored in the database, never logged.\n");
        }
        out.push_str(SYSTEM_IDENTIFIER);
        out.push_str(" = ");
        push_toml_string(&mut out, self.system_identifier.as_str());
        out.push('\n');
        for set in self.versions() {
            out.push_str(&format!("\n[{CARDS}.{}]\n", set.version));
            push_hex_field(&mut out, SDM_META_READ_KEY, set.sdm_meta_read_key.expose_secret());
            push_hex_field(&mut out, SDM_FILE_READ_MASTER_KEY, set.sdm_file_read_master_key.expose_secret());
            if let Some(app_master_key) = &set.app_master_key {
                push_hex_field(&mut out, APP_MASTER_KEY, app_master_key.expose_secret());
            }
        }
        if let Some(checkpoint) = &self.checkpoint {
            out.push_str(&format!("\n[{CHECKPOINT}]\n"));
            push_hex_field(&mut out, ED25519_PKCS8, checkpoint.expose_secret());
        }
        out
    }

    /// The installation's system identifier.
    #[must_use]
    pub const fn system_identifier(&self) -> &SystemIdentifier {
        &self.system_identifier
    }

    /// The newest key version's master keys: the ones new cards get.
    #[must_use]
    pub const fn newest(&self) -> &MasterKeySet {
        &self.newest
    }

    /// The master keys of key version `version`, if the file has them.
    #[must_use]
    pub fn version(&self, version: u8) -> Option<&MasterKeySet> {
        self.versions().find(|set| set.version == version)
    }

    /// Every key version's master keys, newest first.
    pub fn versions(&self) -> impl Iterator<Item = &MasterKeySet> {
        core::iter::once(&self.newest).chain(&self.older)
    }

    /// The checkpoint signing key, if the file has one.
    #[must_use]
    pub const fn checkpoint(&self) -> Option<&CheckpointSecret> {
        self.checkpoint.as_ref()
    }

    /// The UID a tap's PICCData names: its decryption under the newest meta-read key that
    /// gives a Kartu tag. **No MAC is checked**: anyone can send any UID here, so the answer
    /// is a hint for a lookup made before the tap is verified (the server fetches the card
    /// in the same statement as the caller's credential), never a proof. Every version's
    /// key decrypts, whichever one matches, so the time taken says nothing of the tap.
    #[must_use]
    pub fn claimed_uid(&self, tap: &SunTap) -> Option<crate::CardUid> {
        let mut claimed = None;
        for set in self.versions() {
            let uid = crate::sun::decrypt_picc_data(&set.sdm_meta_read_key, tap.picc_data()).ok().map(|p| p.uid);
            claimed = claimed.or(uid);
        }
        claimed
    }

    /// Checks a tap against every key version, newest first, and returns the message with
    /// the key version that checked it ([`TapVersions::version`]: the lower of the two SDM
    /// keys' versions, see [`KeyFile::verify_tap_versions`]).
    ///
    /// # Errors
    /// [`SunError`] when no version's meta-read key decrypts PICCData to a Kartu tag.
    pub fn verify_tap(&self, tap: &SunTap) -> Result<(SunMessage, u8), SunError> {
        self.verify_tap_versions(tap).map(|(message, versions)| (message, versions.version()))
    }

    /// Checks a tap against the key versions and says which version of each SDM key
    /// checked it.
    ///
    /// A tap uses two keys of the card: key 1, the meta-read key, encrypts PICCData; key 2,
    /// the file-read key, makes the MAC. A rotation changes them with two ChangeKey
    /// commands, and a card pulled away between the two holds key 1 of one version and key
    /// 2 of another: its taps verify with no single `[cards.N]`. So, bounded:
    ///
    /// 1. every version's own pair, newest first (every card that is not half-rotated);
    /// 2. then every meta-read key whose decryption of PICCData is a Kartu tag (normally
    ///    one), newest first, with every other version's file-read key, newest first: at
    ///    most one decryption and one MAC per version and pair, V² for V versions (V ≤ 255;
    ///    2 or 3 in practice).
    ///
    /// The first pair whose MAC holds wins. When none does, the result is that of the
    /// newest version whose meta-read key decrypts PICCData (with `mac_valid() == false`,
    /// so the operator still sees UID and counter), or, when no version decrypts it, the
    /// newest version's error. Code that moves money goes on with
    /// [`SunMessage::require_valid_mac`] and the replay check of the counter.
    ///
    /// # Errors
    /// [`SunError`] when no version's meta-read key decrypts PICCData to a Kartu tag.
    pub fn verify_tap_versions(&self, tap: &SunTap) -> Result<(SunMessage, TapVersions), SunError> {
        let mut invalid: Option<(SunMessage, TapVersions)> = None;
        let mut first_error = None;
        let mut decrypting = Vec::new();
        for set in self.versions() {
            let versions = TapVersions { meta_read: set.version, file_read: set.version };
            match set.verify_tap(tap, &self.system_identifier) {
                Ok(message) if message.mac_valid() => return Ok((message, versions)),
                Ok(message) => {
                    decrypting.push(set);
                    invalid.get_or_insert((message, versions));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        // A half-rotated card: the meta-read key of one version, the file-read key of another.
        for meta in decrypting {
            for file in self.versions().filter(|file| file.version != meta.version) {
                let file_read_key = FileReadKey::Diversified {
                    master: &file.sdm_file_read_master_key,
                    system_identifier: self.system_identifier.as_bytes(),
                };
                if let Ok(message) = tap.verify(&meta.sdm_meta_read_key, &file_read_key) {
                    if message.mac_valid() {
                        return Ok((message, TapVersions { meta_read: meta.version, file_read: file.version }));
                    }
                }
            }
        }
        invalid.ok_or(first_error.unwrap_or(SunError::MacMismatch))
    }

    /// The tap a card personalised with the newest keys mirrors at `counter` (no file
    /// data; `padding` is PICCData's random tail): what demos, load generators and tests
    /// present in place of a card.
    ///
    /// # Errors
    /// [`crate::DiversifyError`] when the diversification input is invalid.
    pub fn make_tap(
        &self,
        uid: &crate::CardUid,
        counter: crate::ReadCounter,
        padding: [u8; 5],
    ) -> Result<SunTap, crate::DiversifyError> {
        let set = &self.newest;
        let card_key =
            crate::diversify_card_key(&set.sdm_file_read_master_key, uid, 2, self.system_identifier.as_bytes())?;
        let picc = crate::sun::encrypt_picc_data(&set.sdm_meta_read_key, uid, counter, padding);
        let mac = crate::sun::sdm_mac(&card_key, uid, counter, &[]);
        Ok(SunTap::without_file_data(picc, mac))
    }
}

impl FromStr for KeyFile {
    type Err = KeyFileError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

fn parse_version(name: &str, value: &toml::Value) -> Result<MasterKeySet, KeyFileError> {
    let version = name
        .parse::<u8>()
        .ok()
        .filter(|version| *version >= FIRST_KEY_VERSION && version.to_string() == name)
        .ok_or_else(|| KeyFileError::KeyVersion { name: shown(name) })?;
    let toml::Value::Table(table) = value else {
        return Err(wrong_type(&format!("{CARDS}.{version}"), "a table"));
    };
    let fields = [SDM_META_READ_KEY, SDM_FILE_READ_MASTER_KEY, APP_MASTER_KEY];
    if let Some(unknown) = table.keys().find(|field| !fields.contains(&field.as_str())) {
        return Err(KeyFileError::UnknownField { field: format!("{CARDS}.{version}.{}", shown(unknown)) });
    }
    let key = |field: &str| -> Result<Key, KeyFileError> {
        let path = format!("{CARDS}.{version}.{field}");
        match table.get(field) {
            None => Err(KeyFileError::Missing { field: path }),
            Some(toml::Value::String(text)) => {
                Key::from_hex(text).map_err(|source| KeyFileError::Key { field: path, source })
            }
            Some(_) => Err(KeyFileError::WrongType { field: path, expected: "a string of 32 hex characters" }),
        }
    };
    Ok(MasterKeySet {
        version,
        sdm_meta_read_key: key(SDM_META_READ_KEY)?,
        sdm_file_read_master_key: key(SDM_FILE_READ_MASTER_KEY)?,
        app_master_key: if table.contains_key(APP_MASTER_KEY) { Some(key(APP_MASTER_KEY)?) } else { None },
    })
}

fn parse_checkpoint(table: &toml::Table) -> Result<CheckpointSecret, KeyFileError> {
    if let Some(unknown) = table.keys().find(|field| field.as_str() != ED25519_PKCS8) {
        return Err(KeyFileError::UnknownField { field: format!("{CHECKPOINT}.{}", shown(unknown)) });
    }
    let path = format!("{CHECKPOINT}.{ED25519_PKCS8}");
    match table.get(ED25519_PKCS8) {
        None => Err(KeyFileError::Missing { field: path }),
        Some(toml::Value::String(text)) if !text.is_empty() => {
            hex::decode(text).map(CheckpointSecret::from_bytes).map_err(|_| KeyFileError::CheckpointHex)
        }
        Some(toml::Value::String(_)) => Err(KeyFileError::CheckpointHex),
        Some(_) => Err(KeyFileError::WrongType { field: path, expected: "a string of hex digits" }),
    }
}

fn missing(field: &str) -> KeyFileError {
    KeyFileError::Missing { field: field.to_string() }
}

fn wrong_type(field: &str, expected: &'static str) -> KeyFileError {
    KeyFileError::WrongType { field: field.to_string(), expected }
}

/// A name from the file, shortened for an error message.
fn shown(name: &str) -> String {
    if name.chars().count() <= NAME_SHOWN_MAX {
        name.to_string()
    } else {
        let mut short: String = name.chars().take(NAME_SHOWN_MAX).collect();
        short.push('…');
        short
    }
}

/// The TOML parser's message with what it quotes in backticks left out, except
/// one- or two-character tokens such as `"`: it quotes values it could not read (an
/// unquoted key of decimal digits would come back whole).
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (index, part) in message.split('`').enumerate() {
        if index % 2 == 0 {
            out.push_str(part);
        } else if part.chars().count() <= 2 {
            out.push('`');
            out.push_str(part);
            out.push('`');
        } else {
            out.push_str("`…`");
        }
    }
    out
}

/// A TOML basic string. A system identifier is printable ASCII: only `"` and `\` need
/// escaping.
fn push_toml_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        if matches!(character, '"' | '\\') {
            out.push('\\');
        }
        out.push(character);
    }
    out.push('"');
}

/// `field = "<HEX>"` and a newline, the hex written straight into `out` (no copy of the
/// secret outside the zeroized buffer).
fn push_hex_field(out: &mut String, field: &str, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.push_str(field);
    out.push_str(" = \"");
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0F)]));
    }
    out.push_str("\"\n");
}
