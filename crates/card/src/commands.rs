//! Command builders for personalisation and reading (data sheet §10).
//!
//! Native commands protected by secure messaging are built through a [`Session`]: each
//! builder puts CmdHeader and CmdData in the right order and lets the session apply the
//! communication mode the data sheet prescribes for the command.

use crate::apdu::{CommandApdu, ResponseApdu, StatusWord, CLA_ISO};
use crate::diversify::{APP_MASTER_KEY_NO, SDM_FILE_READ_KEY_NO, SDM_META_READ_KEY_NO};
use crate::key::Key;
use crate::session::{CommMode, SecureMessagingError, Session};
use crate::sun::SunLayout;
use crate::types::{CardUid, UID_LEN};
use crate::ApduError;

/// ISO DF name of the NTAG 424 DNA application (the NDEF application).
pub const NDEF_APPLICATION_DF_NAME: [u8; 7] = [0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01];
/// ISO file identifier of the capability container file (file 01).
pub const CC_FILE_ID: u16 = 0xE103;
/// ISO file identifier of the NDEF file (file 02).
pub const NDEF_FILE_ID: u16 = 0xE104;
/// ISO file identifier of the proprietary file (file 03).
pub const PROPRIETARY_FILE_ID: u16 = 0xE105;
/// Native file number of the capability container file.
pub const CC_FILE_NO: u8 = 0x01;
/// Native file number of the NDEF file, the only file where SDM can be enabled.
pub const NDEF_FILE_NO: u8 = 0x02;
/// Native file number of the proprietary file.
pub const PROPRIETARY_FILE_NO: u8 = 0x03;

/// ISOSelectFile instruction.
pub const INS_SELECT_FILE: u8 = 0xA4;
/// ISOReadBinary instruction.
pub const INS_READ_BINARY: u8 = 0xB0;
/// GetVersion command code.
pub const CMD_GET_VERSION: u8 = 0x60;
/// Additional frame command code (GetVersion parts 2 and 3).
pub const CMD_ADDITIONAL_FRAME: u8 = 0xAF;
/// GetCardUID command code.
pub const CMD_GET_CARD_UID: u8 = 0x51;
/// ReadData command code.
pub const CMD_READ_DATA: u8 = 0xAD;
/// WriteData command code.
pub const CMD_WRITE_DATA: u8 = 0x8D;
/// ChangeKey command code.
pub const CMD_CHANGE_KEY: u8 = 0xC4;
/// ChangeFileSettings command code.
pub const CMD_CHANGE_FILE_SETTINGS: u8 = 0x5F;

/// Largest 24-bit offset or length of the native file commands.
pub const OFFSET_24_MAX: u32 = 0x00FF_FFFF;
/// Largest offset ISOReadBinary can address (15 bits in P1 P2).
pub const READ_BINARY_OFFSET_MAX: u16 = 0x7FFF;
/// Most data one plain WriteData can carry (255 − 7 bytes of header).
pub const WRITE_DATA_PLAIN_MAX: usize = 248;
/// Largest application key number on NTAG 424 DNA.
pub const APP_KEY_NO_MAX: u8 = 4;

/// Errors of the command builders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// An offset or length does not fit its field.
    #[error("{field} {value} does not fit its field")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// The rejected value.
        value: u32,
    },
    /// Changing a key other than key 0 needs the old key (the card checks `new XOR old`).
    #[error("changing key {key_no} needs its current value")]
    MissingOldKey {
        /// The key being changed.
        key_no: u8,
    },
    /// A file settings combination the card would refuse with PARAMETER_ERROR.
    #[error("invalid file settings: {0}")]
    InvalidSettings(&'static str),
    /// A response of the wrong length.
    #[error("expected {expected} bytes of response data, got {found}")]
    ResponseLength {
        /// Length the command returns.
        expected: usize,
        /// Length received.
        found: usize,
    },
    /// The card answered with an unexpected status.
    #[error("the card answered {0}")]
    Status(StatusWord),
    /// The APDU could not be built.
    #[error(transparent)]
    Apdu(#[from] ApduError),
    /// Secure messaging failed.
    #[error(transparent)]
    SecureMessaging(#[from] SecureMessagingError),
}

fn u24(field: &'static str, value: u32) -> Result<[u8; 3], CommandError> {
    if value > OFFSET_24_MAX {
        return Err(CommandError::OutOfRange { field, value });
    }
    let [b0, b1, b2, _] = value.to_le_bytes();
    Ok([b0, b1, b2])
}

/// ISOSelectFile of the NDEF application by DF name:
/// `00 A4 04 0C 07 D2760000850101 00` (AN12196 Table 11).
#[must_use]
pub fn select_ndef_application() -> CommandApdu {
    CommandApdu::new_unchecked(CLA_ISO, INS_SELECT_FILE, 0x04, 0x0C, NDEF_APPLICATION_DF_NAME.to_vec(), Some(256))
}

/// ISOSelectFile of an elementary file by file identifier, without FCI:
/// `00 A4 00 0C 02 <id>` (e.g. [`NDEF_FILE_ID`]).
#[must_use]
pub fn select_file(file_id: u16) -> CommandApdu {
    CommandApdu::new_unchecked(CLA_ISO, INS_SELECT_FILE, 0x00, 0x0C, file_id.to_be_bytes().to_vec(), None)
}

/// ISOReadBinary of the selected file: `00 B0 <offset (15 bits)> <Le>`, `le` 1..=256.
///
/// # Errors
/// [`CommandError::OutOfRange`] for an offset above `7FFF`, [`ApduError::InvalidLe`].
pub fn iso_read_binary(offset: u16, le: u16) -> Result<CommandApdu, CommandError> {
    if offset > READ_BINARY_OFFSET_MAX {
        return Err(CommandError::OutOfRange { field: "ISOReadBinary offset", value: u32::from(offset) });
    }
    let [p1, p2] = offset.to_be_bytes();
    Ok(CommandApdu::new(CLA_ISO, INS_READ_BINARY, p1, p2, Vec::new(), Some(le))?)
}

/// CmdHeader of ReadData and WriteData: `FileNo || Offset (3, LSB first) || Length (3)`.
///
/// # Errors
/// [`CommandError::OutOfRange`] when offset or length exceed 24 bits.
pub fn file_header(file_no: u8, offset: u32, length: u32) -> Result<[u8; 7], CommandError> {
    let mut header = [0; 7];
    header[0] = file_no;
    header[1..4].copy_from_slice(&u24("offset", offset)?);
    header[4..7].copy_from_slice(&u24("length", length)?);
    Ok(header)
}

/// ReadData (`90 AD`) without authentication: `90 AD 00 00 07 FileNo Offset Length 00`.
/// Length 0 reads to the end of the file.
///
/// # Errors
/// [`CommandError::OutOfRange`] when offset or length exceed 24 bits.
pub fn read_data(file_no: u8, offset: u32, length: u32) -> Result<CommandApdu, CommandError> {
    let header = file_header(file_no, offset, length)?;
    Ok(CommandApdu::native(CMD_READ_DATA, header.to_vec())?)
}

/// ReadData within a session, in the file's communication mode; unwrap the answer with
/// [`Session::unwrap_response`] in the same mode.
///
/// # Errors
/// [`CommandError::OutOfRange`], or a secure messaging error.
pub fn read_data_in_session(
    session: &mut Session,
    file_no: u8,
    offset: u32,
    length: u32,
    mode: CommMode,
) -> Result<CommandApdu, CommandError> {
    let header = file_header(file_no, offset, length)?;
    Ok(session.wrap_command(CMD_READ_DATA, &header, &[], mode)?)
}

/// WriteData (`90 8D`) without authentication (NDEF file with free write access).
///
/// # Errors
/// [`CommandError::OutOfRange`] for more than [`WRITE_DATA_PLAIN_MAX`] bytes or an offset
/// beyond 24 bits.
pub fn write_data(file_no: u8, offset: u32, data: &[u8]) -> Result<CommandApdu, CommandError> {
    let length = data_length(data, WRITE_DATA_PLAIN_MAX)?;
    let header = file_header(file_no, offset, length)?;
    let mut body = header.to_vec();
    body.extend_from_slice(data);
    Ok(CommandApdu::native(CMD_WRITE_DATA, body)?)
}

/// WriteData within a session, in the file's communication mode.
///
/// # Errors
/// [`CommandError::OutOfRange`], or [`SecureMessagingError::TooLong`] when the protected
/// command does not fit one APDU (write in smaller pieces).
pub fn write_data_in_session(
    session: &mut Session,
    file_no: u8,
    offset: u32,
    data: &[u8],
    mode: CommMode,
) -> Result<CommandApdu, CommandError> {
    let length = data_length(data, WRITE_DATA_PLAIN_MAX)?;
    let header = file_header(file_no, offset, length)?;
    Ok(session.wrap_command(CMD_WRITE_DATA, &header, data, mode)?)
}

fn data_length(data: &[u8], max: usize) -> Result<u32, CommandError> {
    let value = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if data.len() > max {
        return Err(CommandError::OutOfRange { field: "data length", value });
    }
    Ok(value)
}

/// GetVersion part 1: `90 60 00 00 00`. Answer `91AF` with [`additional_frame`] twice.
/// Sent before authentication (plain).
#[must_use]
pub fn get_version() -> CommandApdu {
    CommandApdu::native_small(CMD_GET_VERSION, Vec::new())
}

/// The additional-frame request `90 AF 00 00 00` (GetVersion parts 2 and 3).
#[must_use]
pub fn additional_frame() -> CommandApdu {
    CommandApdu::native_small(CMD_ADDITIONAL_FRAME, Vec::new())
}

/// The answer of GetVersion, from its three frames (data sheet Tables 54, 56, 58).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInfo {
    /// VendorID, HWType, HWSubType, HWMajor, HWMinor, HWStorageSize, HWProtocol.
    pub hardware: [u8; 7],
    /// VendorID, SWType, SWSubType, SWMajor, SWMinor, SWStorageSize, SWProtocol.
    pub software: [u8; 7],
    /// The UID (all zero when the card uses a random ID).
    pub uid: CardUid,
    /// Production batch number (4 bytes and the high nibble of the fifth).
    pub batch_no: [u8; 5],
    /// Calendar week of production.
    pub production_week: u8,
    /// Year of production (two digits, BCD as delivered by the card).
    pub production_year: u8,
}

impl VersionInfo {
    /// Parses the three GetVersion responses (`91AF`, `91AF`, `9100`).
    ///
    /// # Errors
    /// [`CommandError::Status`] or [`CommandError::ResponseLength`] for unexpected answers.
    pub fn parse(part1: &ResponseApdu, part2: &ResponseApdu, part3: &ResponseApdu) -> Result<Self, CommandError> {
        let hardware = version_part::<7>(part1, StatusWord::ADDITIONAL_FRAME)?;
        let software = version_part::<7>(part2, StatusWord::ADDITIONAL_FRAME)?;
        if part3.status() != StatusWord::OPERATION_OK {
            return Err(CommandError::Status(part3.status()));
        }
        // 14 bytes, or 15 with the optional FabKeyID.
        let production = match part3.data() {
            data if data.len() == 14 || data.len() == 15 => data,
            data => return Err(CommandError::ResponseLength { expected: 14, found: data.len() }),
        };
        let mut uid = [0; UID_LEN];
        uid.copy_from_slice(&production[..UID_LEN]);
        let mut batch_no = [0; 5];
        batch_no.copy_from_slice(&production[7..12]);
        batch_no[4] &= 0xF0;
        Ok(Self {
            hardware,
            software,
            uid: CardUid::from_bytes(uid),
            batch_no,
            production_week: production[12] & 0x7F,
            production_year: production[13],
        })
    }
}

fn version_part<const N: usize>(response: &ResponseApdu, status: StatusWord) -> Result<[u8; N], CommandError> {
    if response.status() != status {
        return Err(CommandError::Status(response.status()));
    }
    response.data().try_into().map_err(|_| CommandError::ResponseLength { expected: N, found: response.data().len() })
}

/// GetCardUID (`90 51`, CommMode.Full): the real UID even when the card uses a random ID.
///
/// # Errors
/// A secure messaging error (exhausted counter).
pub fn get_card_uid(session: &mut Session) -> Result<CommandApdu, CommandError> {
    Ok(session.wrap_command(CMD_GET_CARD_UID, &[], &[], CommMode::Full)?)
}

/// Checks and decrypts the answer to [`get_card_uid`].
///
/// # Errors
/// Secure messaging errors, [`CommandError::ResponseLength`] unless 7 bytes.
pub fn parse_card_uid(session: &Session, response: &ResponseApdu) -> Result<CardUid, CommandError> {
    let data = session.unwrap_response(response, CommMode::Full)?;
    let uid: [u8; UID_LEN] = data
        .as_slice()
        .try_into()
        .map_err(|_| CommandError::ResponseLength { expected: UID_LEN, found: data.len() })?;
    Ok(CardUid::from_bytes(uid))
}

/// CRC32NK of ChangeKey: IEEE 802.3 CRC-32 over the new key without the final inversion
/// (JAMCRC), least significant byte first.
#[must_use]
pub fn crc32_nk(new_key: &Key) -> [u8; 4] {
    crc::Crc::<u32>::new(&crc::CRC_32_JAMCRC).checksum(new_key.expose_secret()).to_le_bytes()
}

/// ChangeKey (`90 C4`, CommMode.Full). Key 0 (the application master key, the key the
/// session authenticated with): `NewKey || KeyVer`; the card then answers a bare `9100`
/// and the session ends ([`Session::close_after_auth_key_change`]). Keys 1 to 4:
/// `(NewKey XOR OldKey) || KeyVer || CRC32NK(NewKey)`; the answer carries a MAC
/// ([`Session::unwrap_response`] in [`CommMode::Full`]).
///
/// # Errors
/// [`CommandError::OutOfRange`] for a key number above 4, [`CommandError::MissingOldKey`]
/// for keys 1 to 4 without `old_key`, or a secure messaging error.
pub fn change_key(
    session: &mut Session,
    key_no: u8,
    new_key: &Key,
    new_key_version: u8,
    old_key: Option<&Key>,
) -> Result<CommandApdu, CommandError> {
    if key_no > APP_KEY_NO_MAX {
        return Err(CommandError::OutOfRange { field: "key number", value: u32::from(key_no) });
    }
    let mut data = zeroize::Zeroizing::new([0_u8; 21]);
    let len = if key_no == APP_MASTER_KEY_NO {
        data[..16].copy_from_slice(new_key.expose_secret());
        data[16] = new_key_version;
        17
    } else {
        let old_key = old_key.ok_or(CommandError::MissingOldKey { key_no })?;
        for ((out, new), old) in data[..16].iter_mut().zip(new_key.expose_secret()).zip(old_key.expose_secret()) {
            *out = new ^ old;
        }
        data[16] = new_key_version;
        data[17..21].copy_from_slice(&crc32_nk(new_key));
        21
    };
    Ok(session.wrap_command(CMD_CHANGE_KEY, &[key_no], &data[..len], CommMode::Full)?)
}

/// An access condition (data sheet Table 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessCondition {
    /// Authentication with this application key (0 to 4).
    Key(u8),
    /// Free access (`E`).
    Free,
    /// No access (`F`).
    Never,
}

impl AccessCondition {
    fn nibble(self) -> Result<u8, CommandError> {
        match self {
            Self::Key(key_no) if key_no <= APP_KEY_NO_MAX => Ok(key_no),
            Self::Key(_) => Err(CommandError::InvalidSettings("access condition key above 4")),
            Self::Free => Ok(0x0E),
            Self::Never => Ok(0x0F),
        }
    }
}

/// The four access rights of a file (data sheet Table 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessRights {
    /// Read (ReadData, ISOReadBinary).
    pub read: AccessCondition,
    /// Write (WriteData, ISOUpdateBinary).
    pub write: AccessCondition,
    /// Read and write.
    pub read_write: AccessCondition,
    /// Who may change the file's settings (ChangeFileSettings).
    pub change: AccessCondition,
}

impl AccessRights {
    /// The 2-byte encoding, LSB first: `RW << 4 | Change`, `Read << 4 | Write`.
    ///
    /// # Errors
    /// [`CommandError::InvalidSettings`] for a key number above 4.
    pub fn encode(&self) -> Result<[u8; 2], CommandError> {
        Ok([self.read_write.nibble()? << 4 | self.change.nibble()?, self.read.nibble()? << 4 | self.write.nibble()?])
    }
}

/// Secure Dynamic Messaging settings of the NDEF file (data sheet Table 69).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SdmSettings {
    /// SDMOptions bit 7: mirror the UID.
    pub mirror_uid: bool,
    /// SDMOptions bit 6: count reads (and mirror the counter).
    pub mirror_read_ctr: bool,
    /// SDMMetaRead: `Key(n)` encrypts PICCData with key n, `Free` mirrors in plain,
    /// `Never` does not mirror.
    pub meta_read: AccessCondition,
    /// SDMFileRead: `Key(n)` makes the SDMMAC (and SDMENCFileData) with key n; `Never`
    /// disables SDM for reading.
    pub file_read: AccessCondition,
    /// SDMCtrRet: who may run GetFileCounters.
    pub ctr_ret: AccessCondition,
    /// UIDOffset, for plain mirroring (`meta_read == Free`).
    pub uid_offset: Option<u32>,
    /// SDMReadCtrOffset, for plain mirroring (`meta_read == Free`).
    pub read_ctr_offset: Option<u32>,
    /// PICCDataOffset, for encrypted mirroring (`meta_read == Key(_)`).
    pub picc_data_offset: Option<u32>,
    /// SDMMACInputOffset, when `file_read == Key(_)`.
    pub mac_input_offset: Option<u32>,
    /// SDMENCOffset and SDMENCLength (a multiple of 32), to mirror encrypted file data.
    pub enc_file_data: Option<(u32, u32)>,
    /// SDMMACOffset, when `file_read == Key(_)`.
    pub mac_offset: Option<u32>,
    /// SDMReadCtrLimit, if reads are to be limited.
    pub read_ctr_limit: Option<u32>,
}

/// File settings for ChangeFileSettings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileSettings {
    /// The file's communication mode.
    pub comm_mode: CommMode,
    /// The file's access rights.
    pub access_rights: AccessRights,
    /// SDM, if enabled (NDEF file only).
    pub sdm: Option<SdmSettings>,
}

/// SDMOptions bit 7: mirror the UID (data sheet Table 69).
pub const SDM_OPTION_UID: u8 = 0x80;
/// SDMOptions bit 6: mirror the SDM read counter.
pub const SDM_OPTION_READ_CTR: u8 = 0x40;
/// SDMOptions bit 5: a read counter limit follows.
pub const SDM_OPTION_READ_CTR_LIMIT: u8 = 0x20;
/// SDMOptions bit 4: encrypted file data is mirrored.
pub const SDM_OPTION_ENC_FILE_DATA: u8 = 0x10;
/// SDMOptions bit 0: mirror as ASCII hex.
pub const SDM_OPTION_ASCII: u8 = 0x01;
/// FileOption bit 6: Secure Dynamic Messaging enabled.
pub const FILE_OPTION_SDM: u8 = 0x40;

impl FileSettings {
    /// Kartu's NDEF file: plain communication, read free, write and change with key 0;
    /// SDM with UID and counter encrypted into PICCData by the meta-read key (key 1), the
    /// MAC by the per-card file read key (key 2) over an empty input, GetFileCounters with
    /// key 0.
    #[must_use]
    pub fn kartu_ndef(layout: &SunLayout) -> Self {
        Self {
            comm_mode: CommMode::Plain,
            access_rights: AccessRights {
                read: AccessCondition::Free,
                write: AccessCondition::Key(APP_MASTER_KEY_NO),
                read_write: AccessCondition::Key(APP_MASTER_KEY_NO),
                change: AccessCondition::Key(APP_MASTER_KEY_NO),
            },
            sdm: Some(SdmSettings {
                mirror_uid: true,
                mirror_read_ctr: true,
                meta_read: AccessCondition::Key(SDM_META_READ_KEY_NO),
                file_read: AccessCondition::Key(SDM_FILE_READ_KEY_NO),
                ctr_ret: AccessCondition::Key(APP_MASTER_KEY_NO),
                uid_offset: None,
                read_ctr_offset: None,
                picc_data_offset: Some(layout.picc_data_offset),
                mac_input_offset: Some(layout.mac_input_offset),
                enc_file_data: None,
                mac_offset: Some(layout.mac_offset),
                read_ctr_limit: None,
            }),
        }
    }

    /// The command data of ChangeFileSettings (without FileNo), in data sheet order:
    /// FileOption, AccessRights, [SDMOptions, SDMAccessRights, UIDOffset,
    /// SDMReadCtrOffset, PICCDataOffset, SDMMACInputOffset, SDMENCOffset, SDMENCLength,
    /// SDMMACOffset, SDMReadCtrLimit], each offset 3 bytes LSB first.
    ///
    /// # Errors
    /// [`CommandError::InvalidSettings`] for combinations the card refuses, and
    /// [`CommandError::OutOfRange`] for offsets beyond 24 bits.
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        let mut out = Vec::with_capacity(32);
        let sdm_bit = if self.sdm.is_some() { FILE_OPTION_SDM } else { 0 };
        out.push(sdm_bit | self.comm_mode.bits());
        out.extend_from_slice(&self.access_rights.encode()?);
        if let Some(sdm) = &self.sdm {
            sdm.encode_into(&mut out)?;
        }
        Ok(out)
    }
}

impl SdmSettings {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CommandError> {
        use AccessCondition::{Free, Key, Never};
        let invalid = |reason| Err(CommandError::InvalidSettings(reason));
        let mut options = SDM_OPTION_ASCII;
        if self.mirror_uid {
            options |= SDM_OPTION_UID;
        }
        if self.mirror_read_ctr {
            options |= SDM_OPTION_READ_CTR;
        }
        if self.read_ctr_limit.is_some() {
            options |= SDM_OPTION_READ_CTR_LIMIT;
        }
        if self.enc_file_data.is_some() {
            options |= SDM_OPTION_ENC_FILE_DATA;
        }
        out.push(options);
        let meta = self.meta_read.nibble()?;
        let file = self.file_read.nibble()?;
        out.push(0xF0 | self.ctr_ret.nibble()?);
        out.push(meta << 4 | file);

        let plain_mirroring = self.meta_read == Free;
        let encrypted_mirroring = matches!(self.meta_read, Key(_));
        let sdm_read = matches!(self.file_read, Key(_));
        if self.file_read == Free {
            return invalid("SDMFileRead cannot be free access");
        }
        if self.meta_read == Never && self.mirror_uid {
            return invalid("UID mirroring needs SDMMetaRead");
        }
        if self.meta_read != Never && !self.mirror_uid && !self.mirror_read_ctr {
            return invalid("SDMMetaRead set while neither UID nor counter is mirrored");
        }
        if self.ctr_ret != Never && !self.mirror_read_ctr {
            return invalid("SDMCtrRet set while the read counter is disabled");
        }
        if self.read_ctr_limit.is_some() && !self.mirror_read_ctr {
            return invalid("SDMReadCtrLimit needs the read counter");
        }
        if self.enc_file_data.is_some() && !(sdm_read && self.mirror_uid && self.mirror_read_ctr) {
            return invalid("encrypted file data needs SDMFileRead, UID and counter");
        }
        push_when(out, "UIDOffset", plain_mirroring && self.mirror_uid, self.uid_offset)?;
        push_when(out, "SDMReadCtrOffset", plain_mirroring && self.mirror_read_ctr, self.read_ctr_offset)?;
        push_when(out, "PICCDataOffset", encrypted_mirroring, self.picc_data_offset)?;
        push_when(out, "SDMMACInputOffset", sdm_read, self.mac_input_offset)?;
        if let Some((offset, length)) = self.enc_file_data {
            if length == 0 || !length.is_multiple_of(32) {
                return invalid("SDMENCLength must be a positive multiple of 32");
            }
            out.extend_from_slice(&u24("SDMENCOffset", offset)?);
            out.extend_from_slice(&u24("SDMENCLength", length)?);
        }
        push_when(out, "SDMMACOffset", sdm_read, self.mac_offset)?;
        if let (Some(input), Some(mac)) = (self.mac_input_offset, self.mac_offset) {
            if input > mac {
                return invalid("SDMMACInputOffset is after SDMMACOffset");
            }
        }
        if let Some(limit) = self.read_ctr_limit {
            out.extend_from_slice(&u24("SDMReadCtrLimit", limit)?);
        }
        Ok(())
    }
}

/// Appends a 3-byte offset that must be present exactly when `required`.
fn push_when(out: &mut Vec<u8>, field: &'static str, required: bool, value: Option<u32>) -> Result<(), CommandError> {
    match (required, value) {
        (true, Some(value)) => {
            out.extend_from_slice(&u24(field, value)?);
            Ok(())
        }
        (false, None) => Ok(()),
        (true, None) => Err(CommandError::InvalidSettings("an offset the SDM configuration needs is missing")),
        (false, Some(_)) => {
            Err(CommandError::InvalidSettings("an offset is given that the SDM configuration does not use"))
        }
    }
}

/// ChangeFileSettings (`90 5F`, CommMode.Full): `FileNo` in plain, the settings encrypted.
///
/// # Errors
/// Invalid settings, or a secure messaging error.
pub fn change_file_settings(
    session: &mut Session,
    file_no: u8,
    settings: &FileSettings,
) -> Result<CommandApdu, CommandError> {
    let data = settings.encode()?;
    Ok(session.wrap_command(CMD_CHANGE_FILE_SETTINGS, &[file_no], &data, CommMode::Full)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apdu::StatusWord;

    fn x(bytes: &[u8]) -> String {
        hex::encode_upper(bytes)
    }

    #[test]
    fn iso_commands() {
        assert_eq!(x(&select_file(NDEF_FILE_ID).to_bytes()), "00A4000C02E104");
        assert_eq!(x(&iso_read_binary(0, 256).unwrap().to_bytes()), "00B0000000");
        assert_eq!(x(&iso_read_binary(0x0102, 0x80).unwrap().to_bytes()), "00B0010280");
        assert!(iso_read_binary(0x8000, 1).is_err());
        assert!(iso_read_binary(0, 0).is_err());
    }

    #[test]
    fn native_file_commands() {
        assert_eq!(x(&read_data(NDEF_FILE_NO, 0, 0).unwrap().to_bytes()), "90AD0000070200000000000000");
        assert_eq!(x(&read_data(NDEF_FILE_NO, 0x20, 0x123456).unwrap().to_bytes()), "90AD0000070220000056341200");
        assert!(read_data(2, 0x0100_0000, 0).is_err());
        assert!(write_data(2, 0, &[0; WRITE_DATA_PLAIN_MAX + 1]).is_err());
        assert_eq!(x(&get_version().to_bytes()), "9060000000");
        assert_eq!(x(&additional_frame().to_bytes()), "90AF000000");
    }

    #[test]
    fn change_key_needs_the_old_key_for_keys_1_to_4() {
        let mut session = Session::new(Key::factory_default(), Key::factory_default(), [0; 4]);
        let new_key = Key::from_bytes([1; 16]);
        assert_eq!(change_key(&mut session, 2, &new_key, 1, None), Err(CommandError::MissingOldKey { key_no: 2 }));
        assert!(matches!(change_key(&mut session, 5, &new_key, 1, None), Err(CommandError::OutOfRange { .. })));
        assert_eq!(session.cmd_ctr(), 0);
    }

    /// Kartu's NDEF settings, byte by byte from data sheet Table 69: FileOption 40 (SDM,
    /// plain), AccessRights 00 E0 (RW 0, Change 0, Read E, Write 0), SDMOptions C1 (UID,
    /// counter, ASCII), SDMAccessRights F0 12 (RFU F, CtrRet 0, MetaRead 1, FileRead 2),
    /// then PICCDataOffset, SDMMACInputOffset, SDMMACOffset.
    #[test]
    fn kartu_ndef_settings_encoding() {
        let layout = SunLayout { picc_data_offset: 0x2A, mac_input_offset: 0x50, mac_offset: 0x50 };
        assert_eq!(x(&FileSettings::kartu_ndef(&layout).encode().unwrap()), "4000E0C1F0122A0000500000500000");
    }

    #[test]
    fn invalid_sdm_settings_are_refused() {
        let layout = SunLayout { picc_data_offset: 0x20, mac_input_offset: 0x43, mac_offset: 0x43 };
        let base = FileSettings::kartu_ndef(&layout);
        let with = |change: fn(&mut SdmSettings)| {
            let mut settings = base;
            if let Some(sdm) = settings.sdm.as_mut() {
                change(sdm);
            }
            settings.encode()
        };
        assert!(with(|sdm| sdm.picc_data_offset = None).is_err());
        assert!(with(|sdm| sdm.uid_offset = Some(1)).is_err());
        assert!(with(|sdm| sdm.file_read = AccessCondition::Free).is_err());
        assert!(with(|sdm| sdm.mac_input_offset = Some(0x44)).is_err());
        assert!(with(|sdm| sdm.enc_file_data = Some((0x10, 33))).is_err());
        assert!(with(|sdm| sdm.meta_read = AccessCondition::Key(5)).is_err());
        assert!(with(|sdm| sdm.mac_offset = Some(0x0100_0000)).is_err());
        assert!(with(|sdm| {
            sdm.mirror_read_ctr = false;
        })
        .is_err());
        // Plain mirroring of UID and counter, no MAC.
        let plain = with(|sdm| {
            sdm.meta_read = AccessCondition::Free;
            sdm.file_read = AccessCondition::Never;
            sdm.picc_data_offset = None;
            sdm.mac_input_offset = None;
            sdm.mac_offset = None;
            sdm.uid_offset = Some(0x20);
            sdm.read_ctr_offset = Some(0x2F);
        })
        .unwrap();
        assert_eq!(x(&plain), "4000E0C1F0EF2000002F0000");
        let no_sdm = FileSettings { sdm: None, ..base };
        assert_eq!(x(&no_sdm.encode().unwrap()), "0000E0");
    }

    #[test]
    fn version_info_parses_three_frames() {
        let part1 = ResponseApdu::new(vec![4, 4, 2, 0x30, 0, 0x11, 5], StatusWord::ADDITIONAL_FRAME);
        let part2 = ResponseApdu::new(vec![4, 4, 2, 1, 2, 0x11, 5], StatusWord::ADDITIONAL_FRAME);
        let mut production = vec![4, 0x95, 0x8C, 0xAA, 0x5C, 0x5E, 0x80];
        production.extend_from_slice(&[0xCF, 0x39, 0x41, 0x10, 0x4F, 0x95, 0x21]);
        let part3 = ResponseApdu::new(production, StatusWord::OPERATION_OK);
        let info = VersionInfo::parse(&part1, &part2, &part3).unwrap();
        assert_eq!(info.uid.to_string(), "04958CAA5C5E80");
        assert_eq!(info.hardware[3], 0x30);
        assert_eq!(info.batch_no, [0xCF, 0x39, 0x41, 0x10, 0x40]);
        assert_eq!(info.production_week, 0x15);
        assert_eq!(info.production_year, 0x21);
        assert_eq!(VersionInfo::parse(&part1, &part1, &part3), Ok(VersionInfo { software: info.hardware, ..info }));
        assert!(VersionInfo::parse(&part3, &part2, &part3).is_err());
    }
}
