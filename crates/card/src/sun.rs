//! Secure Dynamic Messaging (SUN) in AES mode: verification for the server, mirroring for a
//! (virtual) card. Data sheet §9.3, AN12196 §3.
//!
//! A tap gives PICCData (16 bytes) and an 8-byte SDMMAC, optionally SDMENCFileData:
//!
//! 1. PICCData = AES-128-CBC(SDMMetaReadKey, IV 0) of
//!    `PICCDataTag || UID (7) || SDMReadCtr (3, LSB first) || random padding`;
//!    PICCDataTag bit 7 = UID mirrored, bit 6 = counter mirrored, low nibble = UID length.
//! 2. SesSDMFileReadMACKey = CMAC(SDMFileReadKey, `3C C3 00 01 00 80 || UID || ctr`),
//!    SesSDMFileReadENCKey the same with `C3 3C` (data sheet §9.3.9.1).
//! 3. SDMMAC = MACt(SesSDMFileReadMACKey, the file bytes from SDMMACInputOffset to
//!    SDMMACOffset) — empty for Kartu's URL.
//! 4. SDMENCFileData = AES-128-CBC(SesSDMFileReadENCKey,
//!    IV = E(SesSDMFileReadENCKey, ctr || 00 * 13)) of the file data placeholder.
//!
//! The verifying path ([`verify_sun`]) allocates nothing unless there is file data.

use core::fmt;

use crate::crypto::{self, Block, TruncatedMac, BLOCK_LEN, MAC_LEN};
use crate::diversify::{diversify_card_key, DiversifyError, SDM_FILE_READ_KEY_NO};
use crate::key::Key;
use crate::types::{CardUid, ReadCounter, UID_LEN};

/// Length of encrypted PICCData in AES mode.
pub const PICC_DATA_LEN: usize = BLOCK_LEN;

/// Length of PICCData as mirrored in the URL (ASCII hex).
pub const PICC_DATA_HEX_LEN: usize = 2 * PICC_DATA_LEN;

/// Length of the SDMMAC as mirrored in the URL (ASCII hex).
pub const SDM_MAC_HEX_LEN: usize = 2 * MAC_LEN;

/// Largest SDMENCFileData accepted, in bytes (it must fit the 256-byte NDEF file twice
/// over, as ASCII hex).
pub const ENC_FILE_DATA_MAX: usize = 128;

/// The URL text between the encrypted file data and the MAC in Kartu's URL form
/// `...&enc=<hex>&cmac=<hex>`; part of the MAC input when file data is encrypted.
pub const MAC_PARAMETER_PREFIX: &str = "&cmac=";

/// PICCDataTag bit 7: the UID is mirrored.
pub const PICC_DATA_TAG_UID: u8 = 0x80;

/// PICCDataTag bit 6: the read counter is mirrored.
pub const PICC_DATA_TAG_COUNTER: u8 = 0x40;

/// The PICCDataTag Kartu's cards produce: UID and counter mirrored, 7-byte UID.
pub const PICC_DATA_TAG_KARTU: u8 = PICC_DATA_TAG_UID | PICC_DATA_TAG_COUNTER | UID_LEN as u8;

/// Length of the random padding a card adds inside PICCData after tag, UID and counter.
pub const PICC_DATA_PADDING_LEN: usize = PICC_DATA_LEN - 1 - UID_LEN - 3;

const SV_LABEL_MAC: [u8; 2] = [0x3C, 0xC3];
const SV_LABEL_ENC: [u8; 2] = [0xC3, 0x3C];

/// Why a SUN message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SunError {
    /// A hex field has the wrong length.
    #[error("{field} must be {expected} hex characters, got {found}")]
    HexLength {
        /// Which field.
        field: &'static str,
        /// Required number of characters.
        expected: usize,
        /// Number of characters given.
        found: usize,
    },
    /// A hex field holds a character that is not a hexadecimal digit.
    #[error("{field} must be written in hexadecimal digits")]
    NotHex {
        /// Which field.
        field: &'static str,
    },
    /// Encrypted file data must be whole AES blocks, at most [`ENC_FILE_DATA_MAX`] bytes.
    #[error("encrypted file data must be 16 to 128 bytes in whole AES blocks, got {len}")]
    EncFileDataLength {
        /// Length given, in bytes.
        len: usize,
    },
    /// The decrypted PICCDataTag does not announce both a 7-byte UID and the counter:
    /// wrong SDM meta-read key, or a card not configured as Kartu's.
    #[error("PICCDataTag {tag:#04x} does not announce a 7-byte UID and the read counter")]
    UnsupportedPiccDataTag {
        /// The decrypted tag byte.
        tag: u8,
    },
    /// The MAC of the tap is not valid.
    #[error("the SUN MAC does not match")]
    MacMismatch,
    /// The per-card key could not be diversified.
    #[error("cannot derive the card's file read key: {0}")]
    Diversify(#[from] DiversifyError),
    /// A mirroring placeholder lies outside the file or the placeholders overlap.
    #[error("the SUN placeholders do not fit the file")]
    Layout,
}

/// Where the SDM file read key comes from.
pub enum FileReadKey<'a> {
    /// The same key for every card (as in AN12196's examples).
    Direct(&'a Key),
    /// Kartu's per-card key: AN10922 diversification of `master` with
    /// `UID || 02 || system_identifier` (see [`diversify_card_key`]).
    Diversified {
        /// SDM file read master key.
        master: &'a Key,
        /// The installation's system identifier (ASCII), e.g. `KARTU-MKS`.
        system_identifier: &'a [u8],
    },
    /// Any other per-card derivation.
    PerCard(&'a dyn Fn(&CardUid) -> Result<Key, DiversifyError>),
}

impl FileReadKey<'_> {
    /// The SDM file read key of the card with this UID.
    ///
    /// # Errors
    /// [`SunError::Diversify`] when the derivation fails.
    pub fn key_for(&self, uid: &CardUid) -> Result<Key, SunError> {
        match self {
            Self::Direct(key) => Ok((*key).clone()),
            Self::Diversified { master, system_identifier } => {
                Ok(diversify_card_key(master, uid, SDM_FILE_READ_KEY_NO, system_identifier)?)
            }
            Self::PerCard(derive) => Ok(derive(uid)?),
        }
    }
}

impl fmt::Debug for FileReadKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct(_) => f.write_str("FileReadKey::Direct(<redacted>)"),
            Self::Diversified { .. } => f.write_str("FileReadKey::Diversified(<redacted>)"),
            Self::PerCard(_) => f.write_str("FileReadKey::PerCard(..)"),
        }
    }
}

/// Decrypted PICCData: the card's UID and read counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiccData {
    /// The card's UID.
    pub uid: CardUid,
    /// The card's SDM read counter at this tap.
    pub counter: ReadCounter,
}

/// Decrypts PICCData with the SDM meta-read key and reads UID and counter.
///
/// # Errors
/// [`SunError::UnsupportedPiccDataTag`] unless the tag is `C7` (7-byte UID and counter
/// mirrored, RFU bits clear) — also the usual symptom of a wrong meta-read key.
pub fn decrypt_picc_data(meta_read_key: &Key, encrypted: &[u8; PICC_DATA_LEN]) -> Result<PiccData, SunError> {
    // CBC with a zero IV over a single block is ECB.
    let plain = crypto::aes_decrypt_block(meta_read_key, encrypted);
    // UID and counter mirrored, RFU bits 5-4 zero, UID length 7: exactly C7.
    let tag = plain[0];
    if tag != PICC_DATA_TAG_KARTU {
        return Err(SunError::UnsupportedPiccDataTag { tag });
    }
    let mut uid = [0; UID_LEN];
    uid.copy_from_slice(&plain[1..1 + UID_LEN]);
    let mut counter = [0; 3];
    counter.copy_from_slice(&plain[1 + UID_LEN..4 + UID_LEN]);
    Ok(PiccData { uid: CardUid::from_bytes(uid), counter: ReadCounter::from_le_bytes(counter) })
}

/// Card side: PICCData = E(SDMMetaReadKey, C7 || UID || ctr || random padding).
#[must_use]
pub fn encrypt_picc_data(
    meta_read_key: &Key,
    uid: &CardUid,
    counter: ReadCounter,
    random_padding: [u8; PICC_DATA_PADDING_LEN],
) -> [u8; PICC_DATA_LEN] {
    let mut plain = [0_u8; PICC_DATA_LEN];
    plain[0] = PICC_DATA_TAG_KARTU;
    plain[1..1 + UID_LEN].copy_from_slice(uid.as_bytes());
    plain[1 + UID_LEN..4 + UID_LEN].copy_from_slice(&counter.to_le_bytes());
    plain[4 + UID_LEN..].copy_from_slice(&random_padding);
    crypto::aes_encrypt_block(meta_read_key, &plain)
}

fn session_vector(label: [u8; 2], uid: &CardUid, counter: ReadCounter) -> Block {
    let mut vector = [0_u8; BLOCK_LEN];
    vector[..2].copy_from_slice(&label);
    vector[2..6].copy_from_slice(&[0x00, 0x01, 0x00, 0x80]);
    vector[6..13].copy_from_slice(uid.as_bytes());
    vector[13..16].copy_from_slice(&counter.to_le_bytes());
    vector
}

/// SesSDMFileReadMACKey = CMAC(SDMFileReadKey, SV2).
#[must_use]
pub fn sdm_session_mac_key(file_read_key: &Key, uid: &CardUid, counter: ReadCounter) -> Key {
    Key::from_bytes(crypto::cmac(file_read_key, &session_vector(SV_LABEL_MAC, uid, counter)))
}

/// SesSDMFileReadENCKey = CMAC(SDMFileReadKey, SV1).
#[must_use]
pub fn sdm_session_enc_key(file_read_key: &Key, uid: &CardUid, counter: ReadCounter) -> Key {
    Key::from_bytes(crypto::cmac(file_read_key, &session_vector(SV_LABEL_ENC, uid, counter)))
}

/// SDMMAC = MACt(SesSDMFileReadMACKey, mac_input).
#[must_use]
pub fn sdm_mac(file_read_key: &Key, uid: &CardUid, counter: ReadCounter, mac_input: &[u8]) -> TruncatedMac {
    crypto::mac_t(&sdm_session_mac_key(file_read_key, uid, counter), &[mac_input])
}

fn file_data_iv(enc_key: &Key, counter: ReadCounter) -> Block {
    let mut input = [0_u8; BLOCK_LEN];
    input[..3].copy_from_slice(&counter.to_le_bytes());
    crypto::aes_encrypt_block(enc_key, &input)
}

fn check_file_data_len(len: usize) -> Result<(), SunError> {
    if len == 0 || len > ENC_FILE_DATA_MAX || !len.is_multiple_of(BLOCK_LEN) {
        Err(SunError::EncFileDataLength { len })
    } else {
        Ok(())
    }
}

/// Decrypts SDMENCFileData.
///
/// # Errors
/// [`SunError::EncFileDataLength`] unless whole blocks of at most 128 bytes.
pub fn decrypt_file_data(
    file_read_key: &Key,
    uid: &CardUid,
    counter: ReadCounter,
    encrypted: &[u8],
) -> Result<Vec<u8>, SunError> {
    check_file_data_len(encrypted.len())?;
    let enc_key = sdm_session_enc_key(file_read_key, uid, counter);
    let mut data = encrypted.to_vec();
    crypto::aes_cbc_decrypt(&enc_key, &file_data_iv(&enc_key, counter), &mut data)
        .map_err(|_| SunError::EncFileDataLength { len: encrypted.len() })?;
    Ok(data)
}

/// Card side: encrypts file data into SDMENCFileData.
///
/// # Errors
/// [`SunError::EncFileDataLength`] unless whole blocks of at most 128 bytes.
pub fn encrypt_file_data(
    file_read_key: &Key,
    uid: &CardUid,
    counter: ReadCounter,
    plain: &[u8],
) -> Result<Vec<u8>, SunError> {
    check_file_data_len(plain.len())?;
    let enc_key = sdm_session_enc_key(file_read_key, uid, counter);
    let mut data = plain.to_vec();
    crypto::aes_cbc_encrypt(&enc_key, &file_data_iv(&enc_key, counter), &mut data)
        .map_err(|_| SunError::EncFileDataLength { len: plain.len() })?;
    Ok(data)
}

/// The result of reading a tap: who and which read, and whether the MAC holds.
///
/// An operator tool prints it as is; code that moves money first calls
/// [`SunMessage::require_valid_mac`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SunMessage {
    uid: CardUid,
    counter: ReadCounter,
    mac_valid: bool,
    file_data: Option<Vec<u8>>,
}

impl SunMessage {
    /// The UID from PICCData.
    #[must_use]
    pub const fn uid(&self) -> CardUid {
        self.uid
    }

    /// The read counter from PICCData.
    #[must_use]
    pub const fn counter(&self) -> ReadCounter {
        self.counter
    }

    /// Whether the SDMMAC is valid (compared in constant time).
    #[must_use]
    pub const fn mac_valid(&self) -> bool {
        self.mac_valid
    }

    /// Decrypted SDMENCFileData; only present when the MAC is valid.
    #[must_use]
    pub fn file_data(&self) -> Option<&[u8]> {
        self.file_data.as_deref()
    }

    /// The tap, if and only if its MAC is valid.
    ///
    /// # Errors
    /// [`SunError::MacMismatch`] when the MAC is not valid.
    pub fn require_valid_mac(self) -> Result<VerifiedSun, SunError> {
        if self.mac_valid {
            Ok(VerifiedSun { uid: self.uid, counter: self.counter, file_data: self.file_data })
        } else {
            Err(SunError::MacMismatch)
        }
    }
}

/// A tap whose MAC is valid. The counter still has to be checked against the last one
/// seen for the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSun {
    uid: CardUid,
    counter: ReadCounter,
    file_data: Option<Vec<u8>>,
}

impl VerifiedSun {
    /// The card's UID.
    #[must_use]
    pub const fn uid(&self) -> CardUid {
        self.uid
    }

    /// The card's read counter at this tap.
    #[must_use]
    pub const fn counter(&self) -> ReadCounter {
        self.counter
    }

    /// Decrypted SDMENCFileData, if the tap carried some.
    #[must_use]
    pub fn file_data(&self) -> Option<&[u8]> {
        self.file_data.as_deref()
    }
}

/// Verifies a SUN message.
///
/// - `meta_read_key` decrypts PICCData; `file_read_key` gives the card's SDM file read key.
/// - `received_mac`: the SDMMAC of the tap (the URL's `cmac`).
/// - `enc_file_data`: SDMENCFileData as binary, if the card mirrors encrypted file data.
/// - `mac_input`: the file bytes between SDMMACInputOffset and SDMMACOffset as read from
///   the card (empty for Kartu's URL).
///
/// A wrong MAC is not an error: it comes back as `mac_valid() == false`.
///
/// # Errors
/// [`SunError`] for PICCData that does not decrypt to a Kartu tag, file data of a bad
/// length, or a failed key derivation.
pub fn verify_sun(
    meta_read_key: &Key,
    file_read_key: &FileReadKey<'_>,
    picc_data: &[u8; PICC_DATA_LEN],
    received_mac: &[u8; MAC_LEN],
    enc_file_data: Option<&[u8]>,
    mac_input: &[u8],
) -> Result<SunMessage, SunError> {
    if let Some(encrypted) = enc_file_data {
        check_file_data_len(encrypted.len())?;
    }
    let PiccData { uid, counter } = decrypt_picc_data(meta_read_key, picc_data)?;
    let file_key = file_read_key.key_for(&uid)?;
    let expected = sdm_mac(&file_key, &uid, counter, mac_input);
    let mac_valid = crypto::mac_eq(&expected, received_mac);
    let file_data = match enc_file_data {
        Some(encrypted) if mac_valid => Some(decrypt_file_data(&file_key, &uid, counter, encrypted)?),
        _ => None,
    };
    Ok(SunMessage { uid, counter, mac_valid, file_data })
}

/// A tap as it arrives from outside (`{"picc_data": "<32 hex>", "cmac": "<16 hex>"}`),
/// parsed into binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SunTap {
    picc_data: [u8; PICC_DATA_LEN],
    sdm_mac: [u8; MAC_LEN],
    enc_file_data: Option<Vec<u8>>,
}

impl SunTap {
    /// A tap from binary parts.
    ///
    /// # Errors
    /// [`SunError::EncFileDataLength`] for file data that is not whole blocks of at most
    /// 128 bytes.
    pub fn new(
        picc_data: [u8; PICC_DATA_LEN],
        sdm_mac: [u8; MAC_LEN],
        enc_file_data: Option<Vec<u8>>,
    ) -> Result<Self, SunError> {
        if let Some(encrypted) = &enc_file_data {
            check_file_data_len(encrypted.len())?;
        }
        Ok(Self { picc_data, sdm_mac, enc_file_data })
    }

    /// A tap without file data (Kartu's URL form), which is always whole.
    #[must_use]
    pub const fn without_file_data(picc_data: [u8; PICC_DATA_LEN], sdm_mac: [u8; MAC_LEN]) -> Self {
        Self { picc_data, sdm_mac, enc_file_data: None }
    }

    /// Parses the hex fields of a tap (either case): `picc_data` 32 characters, `cmac` 16,
    /// `enc_data` (optional) a multiple of 32 up to 256.
    ///
    /// # Errors
    /// [`SunError::HexLength`], [`SunError::NotHex`], [`SunError::EncFileDataLength`].
    pub fn from_hex(picc_data: &str, cmac: &str, enc_data: Option<&str>) -> Result<Self, SunError> {
        let mut picc = [0; PICC_DATA_LEN];
        decode_hex("picc_data", picc_data, &mut picc)?;
        let mut mac = [0; MAC_LEN];
        decode_hex("cmac", cmac, &mut mac)?;
        let enc_file_data = match enc_data {
            None => None,
            Some(text) => {
                let len = text.len() / 2;
                if !text.len().is_multiple_of(2) || check_file_data_len(len).is_err() {
                    return Err(SunError::EncFileDataLength { len });
                }
                let mut data = vec![0; len];
                decode_hex("enc_data", text, &mut data)?;
                Some(data)
            }
        };
        Self::new(picc, mac, enc_file_data)
    }

    /// Encrypted PICCData.
    #[must_use]
    pub const fn picc_data(&self) -> &[u8; PICC_DATA_LEN] {
        &self.picc_data
    }

    /// The SDMMAC.
    #[must_use]
    pub const fn sdm_mac(&self) -> &[u8; MAC_LEN] {
        &self.sdm_mac
    }

    /// SDMENCFileData, if any.
    #[must_use]
    pub fn enc_file_data(&self) -> Option<&[u8]> {
        self.enc_file_data.as_deref()
    }

    /// The MAC input for Kartu's URL form: empty without file data; with file data the URL
    /// reads `...&enc=<hex>&cmac=<hex>` and the MAC covers `<HEX>&cmac=` (upper-case hex,
    /// as the card mirrors it; AN12196's second SUN example).
    #[must_use]
    pub fn kartu_mac_input(&self) -> Vec<u8> {
        match &self.enc_file_data {
            None => Vec::new(),
            Some(encrypted) => {
                let mut input = vec![0; 2 * encrypted.len()];
                write_upper_hex(&mut input, encrypted);
                input.extend_from_slice(MAC_PARAMETER_PREFIX.as_bytes());
                input
            }
        }
    }

    /// Verifies the tap with [`verify_sun`] and the MAC input of Kartu's URL form
    /// ([`SunTap::kartu_mac_input`]).
    ///
    /// # Errors
    /// As [`verify_sun`].
    pub fn verify(&self, meta_read_key: &Key, file_read_key: &FileReadKey<'_>) -> Result<SunMessage, SunError> {
        verify_sun(
            meta_read_key,
            file_read_key,
            &self.picc_data,
            &self.sdm_mac,
            self.enc_file_data.as_deref(),
            &self.kartu_mac_input(),
        )
    }
}

fn decode_hex(field: &'static str, text: &str, out: &mut [u8]) -> Result<(), SunError> {
    if text.len() != 2 * out.len() {
        return Err(SunError::HexLength { field, expected: 2 * out.len(), found: text.len() });
    }
    hex::decode_to_slice(text, out).map_err(|_| SunError::NotHex { field })
}

/// Writes `src` as upper-case ASCII hex into the first `2 * src.len()` bytes of `dst`.
pub(crate) fn write_upper_hex(dst: &mut [u8], src: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for (pair, byte) in dst.chunks_exact_mut(2).zip(src) {
        if let [high, low] = pair {
            *high = DIGITS[usize::from(byte >> 4)];
            *low = DIGITS[usize::from(byte & 0x0F)];
        }
    }
}

/// Where SDM mirrors into the NDEF file (offsets from the start of the file, NLEN
/// included), as configured with ChangeFileSettings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SunLayout {
    /// PICCDataOffset: start of the 32-character PICCData placeholder.
    pub picc_data_offset: u32,
    /// SDMMACInputOffset: where the MAC input starts.
    pub mac_input_offset: u32,
    /// SDMMACOffset: start of the 16-character MAC placeholder (and end of the MAC input).
    pub mac_offset: u32,
}

/// Card side: what a card in SDM mode returns for its NDEF file. Replaces the PICCData and
/// MAC placeholders of `file` (the static file content) with this read's values.
///
/// # Errors
/// [`SunError::Layout`] when the placeholders do not fit the file, overlap, or the MAC
/// input does not end at the MAC.
pub fn mirror_sun(
    file: &mut [u8],
    layout: &SunLayout,
    meta_read_key: &Key,
    file_read_key: &Key,
    picc: &PiccData,
    random_padding: [u8; PICC_DATA_PADDING_LEN],
) -> Result<(), SunError> {
    let offset = |value: u32| usize::try_from(value).map_err(|_| SunError::Layout);
    let picc_start = offset(layout.picc_data_offset)?;
    let input_start = offset(layout.mac_input_offset)?;
    let mac_start = offset(layout.mac_offset)?;
    let picc_end = picc_start.checked_add(PICC_DATA_HEX_LEN).ok_or(SunError::Layout)?;
    let mac_end = mac_start.checked_add(SDM_MAC_HEX_LEN).ok_or(SunError::Layout)?;
    let overlap = picc_start < mac_end && mac_start < picc_end;
    if picc_end > file.len() || mac_end > file.len() || input_start > mac_start || overlap {
        return Err(SunError::Layout);
    }
    let encrypted = encrypt_picc_data(meta_read_key, &picc.uid, picc.counter, random_padding);
    write_upper_hex(&mut file[picc_start..picc_end], &encrypted);
    let mac = sdm_mac(file_read_key, &picc.uid, picc.counter, &file[input_start..mac_start]);
    write_upper_hex(&mut file[mac_start..mac_end], &mac);
    Ok(())
}
