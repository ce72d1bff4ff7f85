//! Personalisation and key rotation of a Kartu card (SPEC §6).
//!
//! Key numbers on the card:
//!
//! | key | holds | derived as |
//! | --- | ----- | ---------- |
//! | 0 | application master key (authentication, ChangeKey, ChangeFileSettings, NDEF write) | AN10922(`app_master_key`, UID ‖ 00 ‖ system id) |
//! | 1 | SDM meta-read key (encrypts PICCData) | `sdm_meta_read_key`, shared by all cards |
//! | 2 | SDM file-read key (the SUN MAC) | AN10922(`sdm_file_read_master_key`, UID ‖ 02 ‖ system id) |
//! | 3, 4 | not used by Kartu; locked away from the factory value | AN10922(`app_master_key`, UID ‖ 03 / 04 ‖ system id) |
//!
//! Every key carries the key version of the master key set it comes from (factory: 0).
//! Both [`personalize`] and [`rotate_keys`] read the versions on the card first and change
//! only keys that are not yet at the new version, key 0 last: a run interrupted by a tear
//! can simply be repeated.

use card::apdu::{CommandApdu, StatusWord};
use card::commands::{
    change_file_settings, change_key, get_card_uid, parse_card_uid, select_ndef_application, write_data_in_session,
    FileSettings, APP_KEY_NO_MAX, NDEF_FILE_NO,
};
use card::diversify::{APP_MASTER_KEY_NO, SDM_FILE_READ_KEY_NO, SDM_META_READ_KEY_NO};
use card::ev2::TerminalAuth;
use card::keyfile::MasterKeySet;
use card::ndef::kartu_tap_url_file;
use card::{diversify_card_key, verify_sun, CardUid, CommMode, FileReadKey, Key, ReadCounter, Session, VerifiedSun};

use crate::error::ReaderError;
use crate::tap::{read_sun, read_uid, TapUrl};
use crate::transmit::{exchange_in_session, expect_status, Transmit};

/// GetKeyVersion command code.
pub const CMD_GET_KEY_VERSION: u8 = 0x64;

/// The key version of a factory card's keys.
pub const FACTORY_KEY_VERSION: u8 = 0;

/// Data written to the NDEF file per WriteData (below the 248-byte limit of one APDU).
pub const WRITE_CHUNK_MAX: usize = 128;

/// Number of application keys (0 to 4).
const KEY_COUNT: usize = APP_KEY_NO_MAX as usize + 1;

/// The installation's system identifier (defined in the `card` crate, which parses the
/// key file).
pub use card::SystemIdentifier;

/// One version of the master keys that can personalise a card: a key file's
/// `[cards.<version>]` table ([`MasterKeySet`], the one type for master keys) that holds
/// the application master key, which only the issuance key file has.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    set: MasterKeySet,
    app_master_key: Key,
}

impl MasterKeys {
    /// A master key set of key version `version` (1 to 255).
    ///
    /// # Errors
    /// [`ReaderError::InvalidKeyVersion`] for version 0, the factory version.
    pub fn new(
        version: u8,
        sdm_meta_read_key: Key,
        sdm_file_read_master_key: Key,
        app_master_key: Key,
    ) -> Result<Self, ReaderError> {
        let set = MasterKeySet::new(version, sdm_meta_read_key, sdm_file_read_master_key, Some(app_master_key));
        Self::try_from(&set)
    }

    /// The key version.
    #[must_use]
    pub const fn version(&self) -> u8 {
        self.set.version()
    }

    /// The SDM meta-read key, shared by all cards.
    #[must_use]
    pub const fn sdm_meta_read_key(&self) -> &Key {
        self.set.sdm_meta_read_key()
    }

    /// The master of the per-card SDM file-read keys.
    #[must_use]
    pub const fn sdm_file_read_master_key(&self) -> &Key {
        self.set.sdm_file_read_master_key()
    }

    /// The master of the per-card application master keys.
    #[must_use]
    pub const fn app_master_key(&self) -> &Key {
        &self.app_master_key
    }

    /// The five keys of the card with `uid`.
    ///
    /// # Errors
    /// [`ReaderError::Diversify`] (not for a valid [`SystemIdentifier`]).
    pub fn card_keys(&self, uid: &CardUid, system_identifier: &SystemIdentifier) -> Result<CardKeys, ReaderError> {
        let derive = |master: &Key, key_no: u8| diversify_card_key(master, uid, key_no, system_identifier.as_bytes());
        Ok(CardKeys {
            version: self.version(),
            keys: [
                derive(&self.app_master_key, APP_MASTER_KEY_NO)?,
                self.sdm_meta_read_key().clone(),
                derive(self.sdm_file_read_master_key(), SDM_FILE_READ_KEY_NO)?,
                derive(&self.app_master_key, 3)?,
                derive(&self.app_master_key, 4)?,
            ],
        })
    }

    /// Verifies a tap against these keys: PICCData decrypts with the meta-read key and the
    /// MAC matches the card's diversified file-read key.
    ///
    /// # Errors
    /// [`ReaderError::Sun`] when PICCData does not decrypt or the MAC does not match.
    pub fn verify_tap(&self, tap: &TapUrl, system_identifier: &SystemIdentifier) -> Result<VerifiedSun, ReaderError> {
        let file_read_key = FileReadKey::Diversified {
            master: self.sdm_file_read_master_key(),
            system_identifier: system_identifier.as_bytes(),
        };
        let sun = tap.tap();
        let message = verify_sun(self.sdm_meta_read_key(), &file_read_key, sun.picc_data(), sun.sdm_mac(), None, &[])?;
        Ok(message.require_valid_mac()?)
    }
}

impl TryFrom<&MasterKeySet> for MasterKeys {
    type Error = ReaderError;

    /// The master keys of one `[cards.N]` table of the issuance key file (N is 1 to 255,
    /// never the factory version).
    ///
    /// # Errors
    /// [`ReaderError::NoAppMasterKey`] for a table of the server's key file, which has no
    /// `app_master_key`.
    fn try_from(set: &MasterKeySet) -> Result<Self, ReaderError> {
        if set.version() == FACTORY_KEY_VERSION {
            return Err(ReaderError::InvalidKeyVersion { version: set.version() });
        }
        let app_master_key =
            set.app_master_key().ok_or(ReaderError::NoAppMasterKey { version: set.version() })?.clone();
        Ok(Self { set: set.clone(), app_master_key })
    }
}

/// The five keys of one card at one key version.
#[derive(Debug, Clone)]
pub struct CardKeys {
    version: u8,
    keys: [Key; KEY_COUNT],
}

impl CardKeys {
    /// A factory card's keys: sixteen zero bytes, version 0.
    #[must_use]
    pub fn factory() -> Self {
        Self {
            version: FACTORY_KEY_VERSION,
            keys: [
                Key::factory_default(),
                Key::factory_default(),
                Key::factory_default(),
                Key::factory_default(),
                Key::factory_default(),
            ],
        }
    }

    /// The key version.
    #[must_use]
    pub const fn version(&self) -> u8 {
        self.version
    }

    /// Key 0, the application master key.
    #[must_use]
    pub const fn app_master_key(&self) -> &Key {
        &self.keys[0]
    }

    /// Key `key_no` (0 to 4).
    #[must_use]
    pub fn key(&self, key_no: u8) -> Option<&Key> {
        self.keys.get(usize::from(key_no))
    }
}

/// What a personalisation or rotation left on the card, checked by a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Personalized {
    /// The card's UID.
    pub uid: CardUid,
    /// The key version now on all five keys.
    pub key_version: u8,
    /// The counter of the tap that checked the result.
    pub counter: ReadCounter,
}

/// Reads the version of key `key_no` with GetKeyVersion (`90 64 00 00 01 KeyNo 00`),
/// unauthenticated.
///
/// # Errors
/// [`ReaderError::Protocol`] for an error status, [`ReaderError::Command`] unless one byte.
pub fn read_key_version<T: Transmit + ?Sized>(channel: &mut T, key_no: u8) -> Result<u8, ReaderError> {
    let command = CommandApdu::native(CMD_GET_KEY_VERSION, vec![key_no])?;
    let response = expect_status(channel, &command, StatusWord::OPERATION_OK, "GetKeyVersion")?;
    match response.data() {
        [version] => Ok(*version),
        data => Err(card::commands::CommandError::ResponseLength { expected: 1, found: data.len() }.into()),
    }
}

/// Personalises a blank card (SPEC §6): authenticates with the factory key 0, reads the
/// UID with GetCardUID, sets keys 1 to 4 to the card's keys of `keys`, writes
/// `https://<host>/t?picc_data=<32 zeros>&cmac=<16 zeros>`, enables SDM
/// ([`FileSettings::kartu_ndef`]), sets key 0 last, and checks the result with one tap.
///
/// A card whose key 0 is still the factory key is blank, even if an interrupted earlier
/// run changed other keys: those are recognised by their version and not changed again.
///
/// # Errors
/// [`ReaderError::NotBlank`] for a personalised card, [`ReaderError::CardRemoved`] when the
/// card leaves (repeat the call), [`ReaderError::Protocol`] and others as they come.
pub fn personalize<T: Transmit + ?Sized>(
    channel: &mut T,
    keys: &MasterKeys,
    system_identifier: &SystemIdentifier,
    host: &str,
) -> Result<Personalized, ReaderError> {
    // Check the input before the card is touched.
    let url_file = kartu_tap_url_file(host)?;
    let settings = FileSettings::kartu_ndef(&url_file.layout());
    settings.encode()?;
    expect_status(channel, &select_ndef_application(), StatusWord::OK, "ISOSelectFile (NDEF application)")?;
    let versions = read_key_versions(channel)?;
    if versions[0] != FACTORY_KEY_VERSION {
        return Err(ReaderError::NotBlank { key_version: versions[0] });
    }
    let mut session = match authenticate(channel, CardKeys::factory().app_master_key(), APP_MASTER_KEY_NO) {
        Err(ReaderError::Protocol { status: StatusWord::AUTHENTICATION_ERROR, .. }) => {
            return Err(ReaderError::NotBlank { key_version: versions[0] });
        }
        other => other?,
    };
    let uid = authenticated_uid(channel, &mut session)?;
    let target = keys.card_keys(&uid, system_identifier)?;
    // Keys already at the target version are skipped; the others must be factory keys.
    let previous = |version: u8| (version == FACTORY_KEY_VERSION).then(CardKeys::factory);
    change_keys_1_to_4(channel, &mut session, &versions, &previous, &target)?;
    for (index, chunk) in url_file.bytes().chunks(WRITE_CHUNK_MAX).enumerate() {
        let offset = u32::try_from(index * WRITE_CHUNK_MAX).unwrap_or(u32::MAX);
        // The factory NDEF file has free write access: plain, counted in the session.
        let command = write_data_in_session(&mut session, NDEF_FILE_NO, offset, chunk, CommMode::Plain)?;
        exchange_in_session(channel, &session, &command, CommMode::Plain, "WriteData (NDEF file)")?;
    }
    let command = change_file_settings(&mut session, NDEF_FILE_NO, &settings)?;
    exchange_in_session(channel, &session, &command, CommMode::Full, "ChangeFileSettings (NDEF file)")?;
    change_key_0(channel, session, &target)?;
    check_with_a_tap(channel, keys, system_identifier, uid)
}

/// Rotates a personalised card to the keys of `new` (for example from version 1 to 2):
/// reads the UID (`FF CA`) and the key versions, authenticates with the key 0 of the
/// master set in `current` that matches the card's key 0 version, proves the UID with
/// GetCardUID, changes keys 1 to 4 from their current versions, then key 0, and checks the
/// result with one tap. The URL and SDM settings stay as they are.
///
/// `current` holds the master key sets the card may still have keys of (normally the
/// previous version); version 0 (factory) is always known.
///
/// Tear-safe: each ChangeKey is atomic on the card, and every run starts from the versions
/// the card reports, so a run cut off at any command (even one whose answer was lost after
/// the card carried it out) is finished by running it again. Key 0 goes last, as the data
/// sheet requires (changing the key of the session ends it). Between the ChangeKeys of key
/// 1 (meta-read) and key 2 (file-read) a torn card holds the SDM keys of two versions; its
/// taps still verify, as the older version (`card::keyfile::KeyFile::verify_tap_versions`).
/// A card whose keys are all at `new` already is only checked with a tap.
///
/// # Errors
/// [`ReaderError::UnknownKeyVersion`] for a key whose version is neither in `current` nor
/// `new`, [`ReaderError::KeyVersionNewer`] for a key above `new` (nothing is changed),
/// [`ReaderError::UidMismatch`], and the errors of the steps.
pub fn rotate_keys<T: Transmit + ?Sized>(
    channel: &mut T,
    current: &[&MasterKeys],
    new: &MasterKeys,
    system_identifier: &SystemIdentifier,
) -> Result<Personalized, ReaderError> {
    expect_status(channel, &select_ndef_application(), StatusWord::OK, "ISOSelectFile (NDEF application)")?;
    let uid_hint = read_uid(channel)?;
    let versions = read_key_versions(channel)?;
    if let Some((key_no, &version)) = (0_u8..).zip(&versions).find(|(_, version)| **version > new.version()) {
        return Err(ReaderError::KeyVersionNewer { key_no, version, target: new.version() });
    }
    let keys_of = |version: u8, uid: &CardUid| -> Result<Option<CardKeys>, ReaderError> {
        if version == FACTORY_KEY_VERSION {
            return Ok(Some(CardKeys::factory()));
        }
        let master = current.iter().copied().chain([new]).find(|master| master.version() == version);
        master.map(|master| master.card_keys(uid, system_identifier)).transpose()
    };
    let old = keys_of(versions[0], &uid_hint)?
        .ok_or(ReaderError::UnknownKeyVersion { key_no: APP_MASTER_KEY_NO, version: versions[0] })?;
    let mut session = authenticate(channel, old.app_master_key(), APP_MASTER_KEY_NO)?;
    let uid = authenticated_uid(channel, &mut session)?;
    if uid != uid_hint {
        return Err(ReaderError::UidMismatch { expected: uid_hint, found: uid });
    }
    let target = new.card_keys(&uid, system_identifier)?;
    // Keys 1 to 4 may be at other versions than key 0 after an interrupted run.
    let mut previous_sets = Vec::with_capacity(KEY_COUNT);
    for version in versions {
        previous_sets.push((version, keys_of(version, &uid)?));
    }
    let previous =
        |version: u8| previous_sets.iter().find(|(known, _)| *known == version).and_then(|(_, keys)| keys.clone());
    change_keys_1_to_4(channel, &mut session, &versions, &previous, &target)?;
    if versions[0] == new.version() {
        // Key 0 already rotated by an earlier run; the session just ends.
        drop(session);
    } else {
        change_key_0(channel, session, &target)?;
    }
    check_with_a_tap(channel, new, system_identifier, uid)
}

fn read_key_versions<T: Transmit + ?Sized>(channel: &mut T) -> Result<[u8; KEY_COUNT], ReaderError> {
    let mut versions = [0; KEY_COUNT];
    for (key_no, version) in (0_u8..).zip(versions.iter_mut()) {
        *version = read_key_version(channel, key_no)?;
    }
    Ok(versions)
}

/// AuthenticateEV2First with `key`, stored on the card as `key_no`.
fn authenticate<T: Transmit + ?Sized>(channel: &mut T, key: &Key, key_no: u8) -> Result<Session, ReaderError> {
    let terminal = TerminalAuth::new(key.clone(), key_no)?;
    let challenge =
        expect_status(channel, &terminal.command(), StatusWord::ADDITIONAL_FRAME, "AuthenticateEV2First (part 1)")?;
    let mut rnd_a = [0_u8; 16];
    getrandom::fill(&mut rnd_a).map_err(ReaderError::Random)?;
    let (second, waiting) = terminal.answer_challenge(&challenge, rnd_a)?;
    let proof = expect_status(channel, &second, StatusWord::OPERATION_OK, "AuthenticateEV2First (part 2)")?;
    Ok(waiting.finish(&proof)?.session)
}

/// GetCardUID (CommMode.Full): the UID the authenticated card proves.
fn authenticated_uid<T: Transmit + ?Sized>(channel: &mut T, session: &mut Session) -> Result<CardUid, ReaderError> {
    let command = get_card_uid(session)?;
    let response = channel.transmit(&command)?;
    if !response.status().is_success() {
        return Err(ReaderError::Protocol { command: "GetCardUID", status: response.status() });
    }
    Ok(parse_card_uid(session, &response)?)
}

/// Changes keys 1 to 4 that are not yet at `target`'s version; `previous(version)` gives
/// the card keys of a version found on the card.
fn change_keys_1_to_4<T: Transmit + ?Sized>(
    channel: &mut T,
    session: &mut Session,
    versions: &[u8; KEY_COUNT],
    previous: &dyn Fn(u8) -> Option<CardKeys>,
    target: &CardKeys,
) -> Result<(), ReaderError> {
    for key_no in SDM_META_READ_KEY_NO..=APP_KEY_NO_MAX {
        let version = versions[usize::from(key_no)];
        if version == target.version() {
            continue;
        }
        let old_keys = previous(version).ok_or(ReaderError::UnknownKeyVersion { key_no, version })?;
        let (Some(old), Some(new)) = (old_keys.key(key_no), target.key(key_no)) else {
            return Err(ReaderError::UnknownKeyVersion { key_no, version });
        };
        let command = change_key(session, key_no, new, target.version(), Some(old))?;
        exchange_in_session(channel, session, &command, CommMode::Full, "ChangeKey")?;
    }
    Ok(())
}

/// Changes key 0, the key of the session, which ends the session.
fn change_key_0<T: Transmit + ?Sized>(
    channel: &mut T,
    mut session: Session,
    target: &CardKeys,
) -> Result<(), ReaderError> {
    let command = change_key(&mut session, APP_MASTER_KEY_NO, target.app_master_key(), target.version(), None)?;
    let response = channel.transmit(&command)?;
    if !response.status().is_success() {
        return Err(ReaderError::Protocol { command: "ChangeKey (key 0)", status: response.status() });
    }
    Ok(session.close_after_auth_key_change(&response)?)
}

fn check_with_a_tap<T: Transmit + ?Sized>(
    channel: &mut T,
    keys: &MasterKeys,
    system_identifier: &SystemIdentifier,
    uid: CardUid,
) -> Result<Personalized, ReaderError> {
    let tap = read_sun(channel)?;
    let verified = keys.verify_tap(&tap, system_identifier)?;
    if verified.uid() != uid {
        return Err(ReaderError::UidMismatch { expected: uid, found: verified.uid() });
    }
    Ok(Personalized { uid, key_version: keys.version(), counter: verified.counter() })
}
