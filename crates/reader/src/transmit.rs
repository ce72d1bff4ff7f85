//! Sending APDUs: the [`Transmit`] trait that the card protocol runs over, and helpers
//! that turn error status words into [`ReaderError::Protocol`].

use card::apdu::{CommandApdu, ResponseApdu, StatusWord};
use card::{CommMode, Session};

use crate::error::ReaderError;

/// Something that carries command APDUs to a card and brings back its responses: a PC/SC
/// transaction ([`crate::PcscChannel`]), or in tests a virtual card in the same process.
pub trait Transmit {
    /// Sends one command APDU and returns the card's response, whatever its status word.
    ///
    /// # Errors
    /// [`ReaderError`] when the exchange itself fails (card removed, reader gone).
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError>;
}

impl<T: Transmit + ?Sized> Transmit for &mut T {
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError> {
        (**self).transmit(command)
    }
}

/// Sends `command` and requires the status `expected`.
///
/// # Errors
/// The transmission's error, or [`ReaderError::Protocol`] naming `name`.
pub fn expect_status<T: Transmit + ?Sized>(
    channel: &mut T,
    command: &CommandApdu,
    expected: StatusWord,
    name: &'static str,
) -> Result<ResponseApdu, ReaderError> {
    let response = channel.transmit(command)?;
    if response.status() == expected {
        Ok(response)
    } else {
        Err(ReaderError::Protocol { command: name, status: response.status() })
    }
}

/// Sends `command` and requires `9000` or `9100`.
///
/// # Errors
/// The transmission's error, or [`ReaderError::Protocol`] naming `name`.
pub fn expect_success<T: Transmit + ?Sized>(
    channel: &mut T,
    command: &CommandApdu,
    name: &'static str,
) -> Result<ResponseApdu, ReaderError> {
    let response = channel.transmit(command)?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(ReaderError::Protocol { command: name, status: response.status() })
    }
}

/// Sends a command wrapped by `session` and returns the checked, decrypted response data.
///
/// # Errors
/// [`ReaderError::Protocol`] for an error status, [`ReaderError::SecureMessaging`] for a
/// response whose MAC or padding is wrong.
pub fn exchange_in_session<T: Transmit + ?Sized>(
    channel: &mut T,
    session: &Session,
    command: &CommandApdu,
    mode: CommMode,
    name: &'static str,
) -> Result<Vec<u8>, ReaderError> {
    let response = expect_success(channel, command, name)?;
    Ok(session.unwrap_response(&response, mode)?)
}
