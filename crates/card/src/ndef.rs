//! The NDEF file holding the SUN URL, with the offsets SDM mirrors into.
//!
//! The file is `NLEN (2 bytes, big endian) || NDEF message`; the message is one short URI
//! record `D1 01 <payload length> 55 <URI identifier code> <rest of the URI>`. The URI holds
//! ASCII `0` placeholders for PICCData (32 characters) and the SDMMAC (16 characters);
//! their offsets, counted from the start of the file (NLEN included), are what
//! ChangeFileSettings takes as PICCDataOffset and SDMMACOffset.

use crate::sun::{SunLayout, PICC_DATA_HEX_LEN, SDM_MAC_HEX_LEN};

/// Size of the NDEF file (file 02) of NTAG 424 DNA.
pub const NDEF_FILE_SIZE: usize = 256;

/// Longest payload of a short NDEF record (one-byte payload length).
pub const SHORT_RECORD_PAYLOAD_MAX: usize = 255;

/// Longest host name accepted for the tap URL (DNS limit).
pub const HOST_MAX: usize = 253;

/// The text before PICCData in Kartu's URL, after the host.
pub const KARTU_PATH_AND_QUERY: &str = "/t?picc_data=";

/// The text between PICCData and the MAC in Kartu's URL.
pub const KARTU_MAC_PARAMETER: &str = "&cmac=";

/// NDEF record header: MB, ME, SR set; TNF 1 (NFC Forum well-known type).
const RECORD_HEADER_WELL_KNOWN_SHORT: u8 = 0xD1;
/// Type "U": URI record.
const RECORD_TYPE_URI: u8 = b'U';
/// NLEN (2) + record header, type length, payload length, type (4) + URI code (1).
const PREFIX_LEN: usize = 7;

/// URI identifier codes of the NFC Forum URI record type, longest prefix first where one
/// contains another.
const URI_PREFIXES: [(&str, u8); 2] = [("https://", 0x04), ("http://", 0x03)];

/// Why the URL file could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NdefError {
    /// The host is empty, too long, or holds characters a host name cannot have.
    #[error("the host must be 1 to 253 characters of letters, digits, '.', '-' or ':'")]
    InvalidHost,
    /// The URL holds a byte outside printable ASCII.
    #[error("the URL must be printable ASCII")]
    NotPrintableAscii,
    /// The record does not fit a short record or the file.
    #[error("the NDEF message of {len} bytes does not fit the {max}-byte file")]
    TooLong {
        /// Size the file would need.
        len: usize,
        /// What is available.
        max: usize,
    },
}

/// The NDEF file content and where SDM mirrors into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SunUrlFile {
    bytes: Vec<u8>,
    layout: SunLayout,
}

impl SunUrlFile {
    /// The bytes to write to the NDEF file, from offset 0 (NLEN first).
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// PICCDataOffset, SDMMACInputOffset and SDMMACOffset for ChangeFileSettings (the MAC
    /// input is empty: SDMMACInputOffset = SDMMACOffset).
    #[must_use]
    pub const fn layout(&self) -> SunLayout {
        self.layout
    }
}

/// Builds the NDEF file for a URL `<before_picc><32 × '0'><between><16 × '0'><after_mac>`,
/// e.g. `https://host/t?picc_data=` + PICCData + `&cmac=` + MAC.
///
/// # Errors
/// [`NdefError::NotPrintableAscii`], or [`NdefError::TooLong`] when the record does not
/// fit a short record in the 256-byte NDEF file.
pub fn sun_url_file(before_picc: &str, between: &str, after_mac: &str) -> Result<SunUrlFile, NdefError> {
    let printable = |text: &str| text.bytes().all(|byte| (0x21..=0x7E).contains(&byte));
    if !printable(before_picc) || !printable(between) || !printable(after_mac) {
        return Err(NdefError::NotPrintableAscii);
    }
    let (code, rest_before) = URI_PREFIXES
        .iter()
        .find_map(|(prefix, code)| before_picc.strip_prefix(prefix).map(|rest| (*code, rest)))
        .unwrap_or((0x00, before_picc));

    let uri_len = rest_before.len() + PICC_DATA_HEX_LEN + between.len() + SDM_MAC_HEX_LEN + after_mac.len();
    let payload_len = 1 + uri_len;
    let file_len = PREFIX_LEN - 1 + payload_len;
    if payload_len > SHORT_RECORD_PAYLOAD_MAX || file_len > NDEF_FILE_SIZE {
        return Err(NdefError::TooLong { len: file_len, max: NDEF_FILE_SIZE });
    }
    let too_long = || NdefError::TooLong { len: file_len, max: NDEF_FILE_SIZE };
    let message_len = u16::try_from(file_len - 2).map_err(|_| too_long())?;
    let payload_len_byte = u8::try_from(payload_len).map_err(|_| too_long())?;

    let mut bytes = Vec::with_capacity(file_len);
    bytes.extend_from_slice(&message_len.to_be_bytes());
    bytes.extend_from_slice(&[RECORD_HEADER_WELL_KNOWN_SHORT, 0x01, payload_len_byte, RECORD_TYPE_URI, code]);
    bytes.extend_from_slice(rest_before.as_bytes());
    let picc_data_offset = bytes.len();
    bytes.resize(picc_data_offset + PICC_DATA_HEX_LEN, b'0');
    bytes.extend_from_slice(between.as_bytes());
    let mac_offset = bytes.len();
    bytes.resize(mac_offset + SDM_MAC_HEX_LEN, b'0');
    bytes.extend_from_slice(after_mac.as_bytes());

    let offset = |value: usize| u32::try_from(value).map_err(|_| too_long());
    Ok(SunUrlFile {
        bytes,
        layout: SunLayout {
            picc_data_offset: offset(picc_data_offset)?,
            mac_input_offset: offset(mac_offset)?,
            mac_offset: offset(mac_offset)?,
        },
    })
}

/// Kartu's tap URL file: `https://<host>/t?picc_data=<32 zeros>&cmac=<16 zeros>`.
///
/// # Errors
/// [`NdefError::InvalidHost`] for an empty or malformed host, [`NdefError::TooLong`].
pub fn kartu_tap_url_file(host: &str) -> Result<SunUrlFile, NdefError> {
    let host_char = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b':');
    if host.is_empty() || host.len() > HOST_MAX || !host.bytes().all(host_char) {
        return Err(NdefError::InvalidHost);
    }
    let before = format!("https://{host}{KARTU_PATH_AND_QUERY}");
    sun_url_file(&before, KARTU_MAC_PARAMETER, "")
}

/// Reads the URI back from NDEF file content (NLEN first), for checks and the virtual card.
/// `None` unless the content is one short URI record.
#[must_use]
pub fn read_uri(file: &[u8]) -> Option<String> {
    let (&[nlen_high, nlen_low], message) = file.split_first_chunk::<2>()?;
    let message = message.get(..usize::from(u16::from_be_bytes([nlen_high, nlen_low])))?;
    let [RECORD_HEADER_WELL_KNOWN_SHORT, 0x01, payload_len, RECORD_TYPE_URI, payload @ ..] = message else {
        return None;
    };
    let (&code, rest) = payload.get(..usize::from(*payload_len))?.split_first()?;
    let prefix = URI_PREFIXES.iter().find(|(_, known)| *known == code).map_or("", |(prefix, _)| *prefix);
    let rest = core::str::from_utf8(rest).ok()?;
    Some(format!("{prefix}{rest}"))
}
