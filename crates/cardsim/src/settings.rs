//! Parsing the data of ChangeFileSettings (data sheet Table 69) into the card crate's
//! [`FileSettings`], and the SDM configurations this simulator can mirror.
//!
//! The card crate only encodes settings; the simulator needs the inverse. The parser reads
//! the fields in data sheet order and then re-encodes the result with
//! [`FileSettings::encode`]: the data sheet rules live in one place (the card crate), and
//! only the canonical byte form of a valid configuration is accepted.

use card::commands::{AccessCondition, AccessRights, FileSettings, SdmSettings, APP_KEY_NO_MAX};
use card::sun::{SunLayout, PICC_DATA_HEX_LEN, SDM_MAC_HEX_LEN};
use card::CommMode;

use card::commands::{
    FILE_OPTION_SDM, SDM_OPTION_ASCII, SDM_OPTION_ENC_FILE_DATA, SDM_OPTION_READ_CTR, SDM_OPTION_READ_CTR_LIMIT,
    SDM_OPTION_UID,
};

/// FileOption bits that must be zero (RFU).
const FILE_OPTION_RFU: u8 = !(FILE_OPTION_SDM | 0x03);
/// SDMOptions bits that must be zero (RFU), data sheet Table 69.
const SDM_OPTION_RFU: u8 = 0x0E;

/// Why ChangeFileSettings data was refused (the card answers PARAMETER_ERROR or
/// LENGTH_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The data ends before a field.
    #[error("the file settings end before {field}")]
    Truncated {
        /// The missing field.
        field: &'static str,
    },
    /// Bytes follow the last field.
    #[error("{len} bytes follow the file settings")]
    TrailingBytes {
        /// How many.
        len: usize,
    },
    /// A field holds a value the data sheet does not allow.
    #[error("invalid {field}")]
    Invalid {
        /// The field.
        field: &'static str,
    },
    /// A valid configuration this simulator does not implement.
    #[error("not supported by the simulator: {0}")]
    Unsupported(&'static str),
}

impl SettingsError {
    /// Whether the card answers LENGTH_ERROR (rather than PARAMETER_ERROR).
    #[must_use]
    pub const fn is_length_error(&self) -> bool {
        matches!(self, Self::Truncated { .. } | Self::TrailingBytes { .. })
    }
}

/// A cursor over the command data.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], SettingsError> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(SettingsError::Truncated { field });
        };
        self.rest = rest;
        Ok(*head)
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, SettingsError> {
        let [byte] = self.take::<1>(field)?;
        Ok(byte)
    }

    /// A 3-byte offset or length, least significant byte first.
    fn u24(&mut self, field: &'static str) -> Result<u32, SettingsError> {
        let [b0, b1, b2] = self.take::<3>(field)?;
        Ok(u32::from_le_bytes([b0, b1, b2, 0]))
    }

    fn u24_when(&mut self, present: bool, field: &'static str) -> Result<Option<u32>, SettingsError> {
        if present {
            self.u24(field).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn condition(nibble: u8, field: &'static str) -> Result<AccessCondition, SettingsError> {
    match nibble {
        key_no @ 0..=APP_KEY_NO_MAX => Ok(AccessCondition::Key(key_no)),
        0x0E => Ok(AccessCondition::Free),
        0x0F => Ok(AccessCondition::Never),
        _ => Err(SettingsError::Invalid { field }),
    }
}

/// Parses ChangeFileSettings data (without FileNo): FileOption, AccessRights and, when
/// FileOption bit 6 is set, the SDM fields.
///
/// # Errors
/// [`SettingsError`] for data that is short, long, or not a valid configuration.
pub fn parse_file_settings(data: &[u8]) -> Result<FileSettings, SettingsError> {
    let mut fields = Fields { rest: data };
    let file_option = fields.byte("FileOption")?;
    if file_option & FILE_OPTION_RFU != 0 {
        return Err(SettingsError::Invalid { field: "FileOption" });
    }
    let comm_mode = match file_option & 0x03 {
        0b00 => CommMode::Plain,
        0b01 => CommMode::Mac,
        0b11 => CommMode::Full,
        _ => return Err(SettingsError::Invalid { field: "FileOption communication mode" }),
    };
    let [rw_change, read_write] = fields.take::<2>("AccessRights")?;
    let access_rights = AccessRights {
        read_write: condition(rw_change >> 4, "AccessRights RW")?,
        change: condition(rw_change & 0x0F, "AccessRights Change")?,
        read: condition(read_write >> 4, "AccessRights Read")?,
        write: condition(read_write & 0x0F, "AccessRights Write")?,
    };
    let sdm = if file_option & FILE_OPTION_SDM != 0 { Some(parse_sdm(&mut fields)?) } else { None };
    if !fields.rest.is_empty() {
        return Err(SettingsError::TrailingBytes { len: fields.rest.len() });
    }
    let settings = FileSettings { comm_mode, access_rights, sdm };
    // The card crate holds the data sheet's rules: a configuration it will not encode, or
    // one whose canonical form differs from the bytes received, is refused.
    match settings.encode() {
        Ok(canonical) if canonical == data => Ok(settings),
        _ => Err(SettingsError::Invalid { field: "SDM configuration" }),
    }
}

fn parse_sdm(fields: &mut Fields<'_>) -> Result<SdmSettings, SettingsError> {
    let options = fields.byte("SDMOptions")?;
    if options & SDM_OPTION_RFU != 0 {
        return Err(SettingsError::Invalid { field: "SDMOptions" });
    }
    if options & SDM_OPTION_ASCII == 0 {
        return Err(SettingsError::Invalid { field: "SDMOptions encoding (only ASCII exists)" });
    }
    let [rfu_ctr_ret, meta_file] = fields.take::<2>("SDMAccessRights")?;
    if rfu_ctr_ret >> 4 != 0x0F {
        return Err(SettingsError::Invalid { field: "SDMAccessRights RFU" });
    }
    let ctr_ret = condition(rfu_ctr_ret & 0x0F, "SDMCtrRet")?;
    let meta_read = condition(meta_file >> 4, "SDMMetaRead")?;
    let file_read = condition(meta_file & 0x0F, "SDMFileRead")?;
    let mirror_uid = options & SDM_OPTION_UID != 0;
    let mirror_read_ctr = options & SDM_OPTION_READ_CTR != 0;
    let plain_mirroring = meta_read == AccessCondition::Free;
    let encrypted_mirroring = matches!(meta_read, AccessCondition::Key(_));
    let sdm_read = matches!(file_read, AccessCondition::Key(_));

    let uid_offset = fields.u24_when(plain_mirroring && mirror_uid, "UIDOffset")?;
    let read_ctr_offset = fields.u24_when(plain_mirroring && mirror_read_ctr, "SDMReadCtrOffset")?;
    let picc_data_offset = fields.u24_when(encrypted_mirroring, "PICCDataOffset")?;
    let mac_input_offset = fields.u24_when(sdm_read, "SDMMACInputOffset")?;
    let enc_file_data = if options & SDM_OPTION_ENC_FILE_DATA != 0 {
        Some((fields.u24("SDMENCOffset")?, fields.u24("SDMENCLength")?))
    } else {
        None
    };
    let mac_offset = fields.u24_when(sdm_read, "SDMMACOffset")?;
    let read_ctr_limit = fields.u24_when(options & SDM_OPTION_READ_CTR_LIMIT != 0, "SDMReadCtrLimit")?;
    Ok(SdmSettings {
        mirror_uid,
        mirror_read_ctr,
        meta_read,
        file_read,
        ctr_ret,
        uid_offset,
        read_ctr_offset,
        picc_data_offset,
        mac_input_offset,
        enc_file_data,
        mac_offset,
        read_ctr_limit,
    })
}

/// What the simulator mirrors for a file with SDM: encrypted PICCData with key
/// `meta_read_key_no`, the SDMMAC with key `file_read_key_no`, at `layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdmMirror {
    /// Key number of SDMMetaReadKey.
    pub meta_read_key_no: u8,
    /// Key number of SDMFileReadKey.
    pub file_read_key_no: u8,
    /// Where PICCData and the MAC go.
    pub layout: SunLayout,
    /// SDMReadCtrLimit, if reads are limited.
    pub read_ctr_limit: Option<u32>,
}

/// The mirroring the simulator performs for `sdm` in a file of `file_size` bytes.
///
/// Supported: UID and counter encrypted into PICCData and a MAC (Kartu's configuration and
/// AN12196's first example), with or without a read counter limit. Plain UID/counter
/// mirroring and encrypted file data are valid on a real card but not simulated.
///
/// # Errors
/// [`SettingsError::Unsupported`] for other configurations, [`SettingsError::Invalid`]
/// when the placeholders do not fit the file or overlap.
pub fn sdm_mirror(sdm: &SdmSettings, file_size: usize) -> Result<SdmMirror, SettingsError> {
    let (AccessCondition::Key(meta_read_key_no), AccessCondition::Key(file_read_key_no)) =
        (sdm.meta_read, sdm.file_read)
    else {
        return Err(SettingsError::Unsupported("only encrypted PICCData with a MAC is simulated"));
    };
    if !sdm.mirror_uid || !sdm.mirror_read_ctr {
        return Err(SettingsError::Unsupported("PICCData must hold both UID and counter"));
    }
    if sdm.enc_file_data.is_some() {
        return Err(SettingsError::Unsupported("encrypted file data is not simulated"));
    }
    let (Some(picc_data_offset), Some(mac_input_offset), Some(mac_offset)) =
        (sdm.picc_data_offset, sdm.mac_input_offset, sdm.mac_offset)
    else {
        return Err(SettingsError::Invalid { field: "SDM offsets" });
    };
    let invalid = SettingsError::Invalid { field: "SDM placeholders" };
    let start = |offset: u32| usize::try_from(offset).map_err(|_| invalid);
    let (picc_start, mac_start) = (start(picc_data_offset)?, start(mac_offset)?);
    let picc_end = picc_start.checked_add(PICC_DATA_HEX_LEN).ok_or(invalid)?;
    let mac_end = mac_start.checked_add(SDM_MAC_HEX_LEN).ok_or(invalid)?;
    let overlap = picc_start < mac_end && mac_start < picc_end;
    if picc_end > file_size || mac_end > file_size || overlap {
        return Err(invalid);
    }
    Ok(SdmMirror {
        meta_read_key_no,
        file_read_key_no,
        layout: SunLayout { picc_data_offset, mac_input_offset, mac_offset },
        read_ctr_limit: sdm.read_ctr_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use card::ndef::kartu_tap_url_file;

    fn kartu() -> FileSettings {
        let file = kartu_tap_url_file("kartu.example").expect("host");
        FileSettings::kartu_ndef(&file.layout())
    }

    #[test]
    fn kartu_settings_round_trip() {
        let settings = kartu();
        let bytes = settings.encode().expect("encode");
        assert_eq!(parse_file_settings(&bytes), Ok(settings));
        let mirror = sdm_mirror(&settings.sdm.expect("sdm"), 256).expect("supported");
        assert_eq!((mirror.meta_read_key_no, mirror.file_read_key_no), (1, 2));
    }

    #[test]
    fn factory_settings_parse() {
        let ndef = parse_file_settings(&[0x00, 0xE0, 0xEE]).expect("ndef");
        assert_eq!(ndef.access_rights.read, AccessCondition::Free);
        assert_eq!(ndef.access_rights.change, AccessCondition::Key(0));
        let proprietary = parse_file_settings(&[0x03, 0x30, 0x23]).expect("proprietary");
        assert_eq!(proprietary.comm_mode, CommMode::Full);
        assert_eq!(proprietary.access_rights.read, AccessCondition::Key(2));
    }

    #[test]
    fn refuses_short_long_and_invalid_data() {
        let bytes = kartu().encode().expect("encode");
        for len in 0..bytes.len() {
            assert!(parse_file_settings(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(parse_file_settings(&long), Err(SettingsError::TrailingBytes { len: 1 }));
        assert!(parse_file_settings(&[0x02, 0xE0, 0xEE]).is_err(), "comm mode 10");
        assert!(parse_file_settings(&[0x80, 0xE0, 0xEE]).is_err(), "RFU bit");
        assert!(parse_file_settings(&[0x00, 0x50, 0xEE]).is_err(), "key 5");
    }

    #[test]
    fn placeholders_must_fit() {
        let mut sdm = kartu().sdm.expect("sdm");
        sdm.mac_offset = Some(250);
        sdm.mac_input_offset = Some(250);
        assert!(sdm_mirror(&sdm, 256).is_err());
        sdm.mac_offset = sdm.picc_data_offset;
        sdm.mac_input_offset = sdm.picc_data_offset;
        assert!(sdm_mirror(&sdm, 256).is_err());
    }
}
