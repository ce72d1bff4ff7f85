//! Reading a card at a tap: its UID and its SUN message (the URL in the NDEF file, parsed
//! by [`crate::tap_url`]).
//!
//! A tap is `00 A4 04 0C 07 D2760000850101 00` (select the NDEF application),
//! `00 A4 00 0C 02 E104` (select the NDEF file) and one `00 B0 00 00 00` (ISOReadBinary of
//! the whole file). One read means the card's SDM read counter goes up by exactly one.

use card::apdu::{CommandApdu, StatusWord};
use card::commands::{iso_read_binary, select_file, select_ndef_application, NDEF_FILE_ID};
use card::{CardUid, UID_LEN};

use crate::error::ReaderError;
pub use crate::tap_url::{
    parse_ndef_file, parse_tap_url, TapParseError, TapUrl, CMAC_PARAMETER, HOST_MAX, PICC_DATA_PARAMETER, TAP_PATH,
    TAP_URL_SCHEME,
};
use crate::transmit::{expect_status, Transmit};

/// PC/SC GET DATA for the UID: `FF CA 00 00 00`, answered by the reader (PC/SC part 3).
pub const GET_UID: [u8; 5] = [0xFF, 0xCA, 0x00, 0x00, 0x00];

/// The largest ISOReadBinary: the whole 256-byte NDEF file in one command.
pub const READ_BINARY_MAX: u16 = 256;

/// Reads the UID with `FF CA 00 00 00`.
///
/// # Errors
/// [`ReaderError::Protocol`] for an error status, [`ReaderError::UidLength`] unless 7
/// bytes, or the transmission's error.
pub fn read_uid<T: Transmit + ?Sized>(channel: &mut T) -> Result<CardUid, ReaderError> {
    let command = CommandApdu::parse(&GET_UID)?;
    let response = expect_status(channel, &command, StatusWord::OK, "GET DATA (UID)")?;
    let uid: [u8; UID_LEN] =
        response.data().try_into().map_err(|_| ReaderError::UidLength { len: response.data().len() })?;
    Ok(CardUid::from_bytes(uid))
}

/// Reads the SUN message: selects the NDEF application and file, reads the whole file
/// with one ISOReadBinary and parses the URL.
///
/// # Errors
/// [`ReaderError::CardRemoved`] when the card leaves mid-read, [`ReaderError::Protocol`]
/// for an error status, [`ReaderError::Tap`] when the file holds no tap URL.
pub fn read_sun<T: Transmit + ?Sized>(channel: &mut T) -> Result<TapUrl, ReaderError> {
    expect_status(channel, &select_ndef_application(), StatusWord::OK, "ISOSelectFile (NDEF application)")?;
    expect_status(channel, &select_file(NDEF_FILE_ID), StatusWord::OK, "ISOSelectFile (NDEF file)")?;
    let read = iso_read_binary(0, READ_BINARY_MAX)?;
    let response = expect_status(channel, &read, StatusWord::OK, "ISOReadBinary (NDEF file)")?;
    Ok(parse_ndef_file(response.data())?)
}
