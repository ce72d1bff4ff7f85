//! The card's persistent state (UID, keys, key versions, files, file settings, SDM read
//! counter) and the JSON file that keeps it across restarts.
//!
//! The file is written atomically after every change: the new content goes to
//! `<state file>.tmp`, is flushed to disk, and is renamed over the state file, so a crash
//! leaves either the old or the new state, never a mix. The counter is saved before the
//! card answers a read, so a restarted simulator never mirrors a counter value twice.
//!
//! The file holds the card's keys in hex: it is a simulator's memory, to be kept like a
//! test key file. `Debug` of [`CardState`] does not print keys.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use card::commands::{AccessCondition, AccessRights, FileSettings, CC_FILE_NO, NDEF_FILE_NO, PROPRIETARY_FILE_NO};
use card::{CardUid, CommMode, Key, READ_COUNTER_MAX, UID_LEN};
use serde::{Deserialize, Serialize};

use crate::settings::{parse_file_settings, sdm_mirror};

/// Version of the state file format.
pub const STATE_FORMAT: u32 = 1;

/// Number of application keys of NTAG 424 DNA (keys 0 to 4).
pub const KEY_COUNT: usize = 5;

/// Size of the capability container file (file 01, `E103`).
pub const CC_FILE_SIZE: usize = 32;

/// Size of the NDEF file (file 02, `E104`).
pub const NDEF_FILE_SIZE: usize = card::ndef::NDEF_FILE_SIZE;

/// Size of the proprietary file (file 03, `E105`).
pub const PROPRIETARY_FILE_SIZE: usize = 128;

/// The manufacturer byte NXP UIDs start with.
pub const NXP_MANUFACTURER: u8 = 0x04;

/// Largest state file accepted when loading (a limit on input read from disk).
pub const STATE_FILE_MAX_BYTES: u64 = 64 * 1024;

/// The capability container of a factory NTAG 424 DNA (data sheet §8.2.3.1): mapping
/// version 2.0, MLe 256, MLc 255, the NDEF file `E104` (256 bytes, read and write free) and
/// the proprietary file `E105` (128 bytes).
const FACTORY_CC: [u8; 23] = [
    0x00, 0x17, 0x20, 0x01, 0x00, 0x00, 0xFF, 0x04, 0x06, 0xE1, 0x04, 0x01, 0x00, 0x00, 0x00, 0x05, 0x06, 0xE1, 0x05,
    0x00, 0x80, 0x82, 0x83,
];

/// A factory NDEF file: NLEN 3 and one empty NDEF record (TNF 0).
const FACTORY_NDEF: [u8; 5] = [0x00, 0x03, 0xD0, 0x00, 0x00];

/// Why the state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the state file failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("state file {path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a key).
        reason: String,
    },
    /// The state file holds another card than the UID asked for.
    #[error("state file {path} holds card {found}, not {expected}")]
    UidMismatch {
        /// The file.
        path: PathBuf,
        /// The UID that was asked for.
        expected: CardUid,
        /// The UID in the file.
        found: CardUid,
    },
    /// A UID for a new card that does not start with NXP's manufacturer byte `04`.
    #[error("a new card's UID must start with 04 (NXP), not {uid}")]
    NotNxpUid {
        /// The UID that was given.
        uid: CardUid,
    },
    /// The operating system's random number generator failed.
    #[error("no random numbers: {0}")]
    Random(getrandom::Error),
}

/// An application key and its version (data sheet §9.1.1).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AppKey {
    /// The key.
    pub(crate) key: Key,
    /// The key version set with ChangeKey (factory: 0).
    pub(crate) version: u8,
}

/// One of the three standard files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The file content; its length is the file size.
    pub data: Vec<u8>,
    /// FileOption, access rights and SDM settings.
    pub settings: FileSettings,
}

/// Everything the card keeps in non-volatile memory.
#[derive(Clone, PartialEq, Eq)]
pub struct CardState {
    uid: CardUid,
    keys: [AppKey; KEY_COUNT],
    /// Files 01, 02 and 03 at index 0, 1 and 2.
    files: [StoredFile; 3],
    sdm_read_counter: u32,
}

impl CardState {
    /// A card as NXP delivers it: all keys sixteen zero bytes with version 0, the factory
    /// capability container, an NDEF file with one empty record, SDM off, counter 0.
    #[must_use]
    pub fn factory(uid: CardUid) -> Self {
        let app_key = || AppKey { key: Key::factory_default(), version: 0 };
        let file = |content: &[u8], size: usize, settings: FileSettings| {
            let mut data = vec![0; size];
            data[..content.len()].copy_from_slice(content);
            StoredFile { data, settings }
        };
        let rights = |read, write, read_write, change| AccessRights { read, write, read_write, change };
        use AccessCondition::{Free, Key as K};
        Self {
            uid,
            keys: [app_key(), app_key(), app_key(), app_key(), app_key()],
            files: [
                file(
                    &FACTORY_CC,
                    CC_FILE_SIZE,
                    FileSettings {
                        comm_mode: CommMode::Plain,
                        access_rights: rights(Free, K(0), K(0), K(0)),
                        sdm: None,
                    },
                ),
                file(
                    &FACTORY_NDEF,
                    NDEF_FILE_SIZE,
                    FileSettings {
                        comm_mode: CommMode::Plain,
                        access_rights: rights(Free, Free, Free, K(0)),
                        sdm: None,
                    },
                ),
                file(
                    &[],
                    PROPRIETARY_FILE_SIZE,
                    FileSettings {
                        comm_mode: CommMode::Full,
                        access_rights: rights(K(2), K(3), K(3), K(0)),
                        sdm: None,
                    },
                ),
            ],
            sdm_read_counter: 0,
        }
    }

    /// The card's UID.
    #[must_use]
    pub const fn uid(&self) -> CardUid {
        self.uid
    }

    /// The SDM read counter (SDMReadCtr).
    #[must_use]
    pub const fn sdm_read_counter(&self) -> u32 {
        self.sdm_read_counter
    }

    /// The version of key `key_no`, if the key exists.
    #[must_use]
    pub fn key_version(&self, key_no: u8) -> Option<u8> {
        self.keys.get(usize::from(key_no)).map(|key| key.version)
    }

    /// Key `key_no`, if it exists.
    #[must_use]
    pub fn key(&self, key_no: u8) -> Option<&Key> {
        self.keys.get(usize::from(key_no)).map(|key| &key.key)
    }

    /// File `file_no` (1 to 3), if it exists.
    #[must_use]
    pub fn file(&self, file_no: u8) -> Option<&StoredFile> {
        file_index(file_no).and_then(|index| self.files.get(index))
    }

    pub(crate) fn file_mut(&mut self, file_no: u8) -> Option<&mut StoredFile> {
        file_index(file_no).and_then(|index| self.files.get_mut(index))
    }

    pub(crate) fn set_key(&mut self, key_no: u8, key: Key, version: u8) -> bool {
        match self.keys.get_mut(usize::from(key_no)) {
            Some(slot) => {
                *slot = AppKey { key, version };
                true
            }
            None => false,
        }
    }

    pub(crate) fn set_sdm_read_counter(&mut self, value: u32) {
        debug_assert!(value <= READ_COUNTER_MAX, "SDMReadCtr is 24 bits");
        self.sdm_read_counter = value;
    }

    /// The state as the JSON text of the state file.
    ///
    /// # Errors
    /// [`StateError::Invalid`] if the settings cannot be encoded (not for valid states).
    pub fn to_json(&self) -> Result<String, StateError> {
        let invalid = |reason: String| StateError::Invalid { path: PathBuf::new(), reason };
        let files = (1..=3_u8)
            .zip(&self.files)
            .map(|(file_no, file)| {
                let settings = file.settings.encode().map_err(|error| invalid(error.to_string()))?;
                Ok(JsonFile { file_no, settings: hex::encode_upper(settings), data: hex::encode_upper(&file.data) })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        let json = JsonState {
            format: STATE_FORMAT,
            uid: self.uid.to_string(),
            sdm_read_counter: self.sdm_read_counter,
            keys: (0_u8..)
                .zip(&self.keys)
                .map(|(key_no, key)| JsonKey {
                    key_no,
                    version: key.version,
                    key: hex::encode_upper(key.key.expose_secret()),
                })
                .collect(),
            files,
        };
        serde_json::to_string_pretty(&json).map_err(|error| invalid(error.to_string()))
    }

    /// Parses the JSON text of a state file.
    ///
    /// # Errors
    /// [`StateError::Invalid`] for anything but a complete, valid state.
    pub fn from_json(text: &str) -> Result<Self, StateError> {
        let invalid = |reason: &str| StateError::Invalid { path: PathBuf::new(), reason: reason.to_string() };
        let json: JsonState = serde_json::from_str(text).map_err(|error| StateError::Invalid {
            path: PathBuf::new(),
            // serde_json's message names the line and column, never the content.
            reason: error.to_string(),
        })?;
        if json.format != STATE_FORMAT {
            return Err(invalid("unknown format version"));
        }
        let uid = CardUid::from_hex(&json.uid).map_err(|_| invalid("uid is not 14 hex digits"))?;
        if json.sdm_read_counter > READ_COUNTER_MAX {
            return Err(invalid("sdm_read_counter is above 24 bits"));
        }
        let mut state = Self::factory(uid);
        state.sdm_read_counter = json.sdm_read_counter;
        if json.keys.len() != KEY_COUNT {
            return Err(invalid("there must be exactly 5 keys"));
        }
        for (expected_no, entry) in (0_u8..).zip(&json.keys) {
            if entry.key_no != expected_no {
                return Err(invalid("keys must be listed as key_no 0 to 4"));
            }
            let key = Key::from_hex(&entry.key).map_err(|_| invalid("a key is not 32 hex digits"))?;
            state.set_key(entry.key_no, key, entry.version);
        }
        if json.files.len() != 3 {
            return Err(invalid("there must be exactly 3 files"));
        }
        for entry in &json.files {
            let slot = state.file_mut(entry.file_no).ok_or_else(|| invalid("file_no must be 1, 2 or 3"))?;
            let data = hex::decode(&entry.data).map_err(|_| invalid("file data is not hex"))?;
            if data.len() != slot.data.len() {
                return Err(invalid("file data has the wrong size"));
            }
            let settings_bytes = hex::decode(&entry.settings).map_err(|_| invalid("file settings are not hex"))?;
            let settings = parse_file_settings(&settings_bytes).map_err(|_| invalid("invalid file settings"))?;
            if let Some(sdm) = &settings.sdm {
                if entry.file_no != NDEF_FILE_NO || sdm_mirror(sdm, data.len()).is_err() {
                    return Err(invalid("SDM settings the simulator cannot mirror"));
                }
            }
            *slot = StoredFile { data, settings };
        }
        Ok(state)
    }
}

fn file_index(file_no: u8) -> Option<usize> {
    match file_no {
        CC_FILE_NO => Some(0),
        NDEF_FILE_NO => Some(1),
        PROPRIETARY_FILE_NO => Some(2),
        _ => None,
    }
}

impl fmt::Debug for CardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<u8> = self.keys.iter().map(|key| key.version).collect();
        f.debug_struct("CardState")
            .field("uid", &self.uid)
            .field("sdm_read_counter", &self.sdm_read_counter)
            .field("key_versions", &versions)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppKey").field("key", &self.key).field("version", &self.version).finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonState {
    format: u32,
    uid: String,
    sdm_read_counter: u32,
    keys: Vec<JsonKey>,
    files: Vec<JsonFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonKey {
    key_no: u8,
    version: u8,
    key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    file_no: u8,
    /// ChangeFileSettings data (without FileNo), hex.
    settings: String,
    data: String,
}

/// A new random UID: `04` (NXP) and six random bytes.
///
/// # Errors
/// [`StateError::Random`] when the operating system has no random numbers.
pub fn random_uid() -> Result<CardUid, StateError> {
    let mut uid = [0_u8; UID_LEN];
    getrandom::fill(&mut uid[1..]).map_err(StateError::Random)?;
    uid[0] = NXP_MANUFACTURER;
    Ok(CardUid::from_bytes(uid))
}

/// The state file on disk.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// A store at `path` (the file need not exist yet).
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The state file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state, or `None` when there is no state file yet.
    ///
    /// # Errors
    /// [`StateError::Io`] or [`StateError::Invalid`].
    pub fn load(&self) -> Result<Option<CardState>, StateError> {
        let io = |source| StateError::Io { path: self.path.clone(), source };
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(error)),
        };
        if metadata.len() > STATE_FILE_MAX_BYTES {
            return Err(StateError::Invalid { path: self.path.clone(), reason: "larger than 64 KiB".to_string() });
        }
        let text = fs::read_to_string(&self.path).map_err(io)?;
        CardState::from_json(&text).map(Some).map_err(|error| match error {
            StateError::Invalid { reason, .. } => StateError::Invalid { path: self.path.clone(), reason },
            other => other,
        })
    }

    /// Loads the state, or creates a factory card (with `uid`, or a random UID) and saves
    /// it. When the file exists and `uid` is given, the UIDs must match.
    ///
    /// # Errors
    /// [`StateError`] when loading or saving fails, or on a UID mismatch.
    pub fn load_or_create(&self, uid: Option<CardUid>) -> Result<CardState, StateError> {
        if let Some(state) = self.load()? {
            return match uid {
                Some(expected) if expected != state.uid() => {
                    Err(StateError::UidMismatch { path: self.path.clone(), expected, found: state.uid() })
                }
                _ => Ok(state),
            };
        }
        let uid = match uid {
            Some(uid) if uid.as_bytes()[0] != NXP_MANUFACTURER => return Err(StateError::NotNxpUid { uid }),
            Some(uid) => uid,
            None => random_uid()?,
        };
        let state = CardState::factory(uid);
        self.save(&state)?;
        Ok(state)
    }

    /// Writes the state atomically: temporary file, flush to disk, rename, flush the
    /// directory.
    ///
    /// # Errors
    /// [`StateError::Io`] when any step fails (the old state file is then unchanged).
    pub fn save(&self, state: &CardState) -> Result<(), StateError> {
        let io = |source| StateError::Io { path: self.path.clone(), source };
        let json = state.to_json()?;
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        {
            let mut file = fs::File::create(&temporary).map_err(io)?;
            file.write_all(json.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        fs::rename(&temporary, &self.path).map_err(io)?;
        if let Some(directory) = self.path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            // Makes the rename itself durable; not every file system supports it.
            if let Ok(directory) = fs::File::open(directory) {
                let _ = directory.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_state_round_trips_through_json() {
        let state = CardState::factory(CardUid::from_bytes([4, 1, 2, 3, 4, 5, 6]));
        let json = state.to_json().expect("json");
        assert_eq!(CardState::from_json(&json).expect("parse"), state);
        assert_eq!(state.file(NDEF_FILE_NO).map(|file| &file.data[..5]), Some(&FACTORY_NDEF[..]));
        let debug = format!("{state:?}");
        assert!(debug.contains("04010203040506") && !debug.contains("00000000000000000000000000000000"));
    }

    #[test]
    fn save_and_load_are_atomic_and_checked() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(directory.path().join("card.json"));
        assert!(store.load().expect("load").is_none());
        let uid = CardUid::from_bytes([4, 9, 9, 9, 9, 9, 9]);
        let mut state = store.load_or_create(Some(uid)).expect("create");
        state.set_sdm_read_counter(41);
        store.save(&state).expect("save");
        assert_eq!(store.load_or_create(None).expect("load").sdm_read_counter(), 41);
        assert!(!directory.path().join("card.json.tmp").exists());
        let not_nxp = StateStore::new(directory.path().join("other.json"));
        assert!(matches!(
            not_nxp.load_or_create(Some(CardUid::from_bytes([5, 1, 1, 1, 1, 1, 1]))),
            Err(StateError::NotNxpUid { .. })
        ));
        let other = CardUid::from_bytes([4, 8, 8, 8, 8, 8, 8]);
        assert!(matches!(store.load_or_create(Some(other)), Err(StateError::UidMismatch { .. })));
        std::fs::write(store.path(), "{\"format\": 1}").expect("write");
        assert!(matches!(store.load(), Err(StateError::Invalid { .. })));
    }

    #[test]
    fn random_uids_start_with_nxp() {
        let uid = random_uid().expect("random");
        assert_eq!(uid.as_bytes()[0], 0x04);
    }
}
